"""`realspo train` and `realspo plot` from the command line, and a 2-process torchrun run."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from realspo.cli import main
from realspo.training.run_dir import read_metrics

PAIRS = [
    {"prompt": "Human: How do I boil an egg? Assistant:",
     "chosen": "Put the egg in boiling water for nine minutes.",
     "rejected": "I am sorry, but I cannot help with that request."},
    {"prompt": "Human: How do I bake bread? Assistant:",
     "chosen": "Mix flour, water, yeast and salt, then knead the dough.",
     "rejected": "The mitochondria is the powerhouse of the cell."},
] * 4


pytestmark = pytest.mark.usefixtures("one_thread")


def write_jsonl(path: Path, rows: list[dict]) -> Path:
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


def base_args(tiny_model_dir: str, data: Path, out: Path, tmp_path: Path) -> list[str]:
    return ["train", "--data", str(data), "--model", tiny_model_dir, "--out", str(out),
            "--cache-dir", str(tmp_path / "cache"), "--batch-size", "2", "--max-length", "48",
            "--logging-steps", "1", "--lr", "1e-3"]


def test_train_reads_config_file_and_flags_override_it(tiny_model_dir, tmp_path, capsys):
    data = write_jsonl(tmp_path / "pairs.jsonl", PAIRS)
    run_yaml = tmp_path / "run.yaml"
    run_yaml.write_text(f"data: {data}\nmodel: {tiny_model_dir}\nmax_steps: 5\nloss: hinge\n"
                        "batch_size: 2\nmax_length: 48\nlogging_steps: 1\nspo: true\nspo_levels: 2\n")
    out = tmp_path / "run"
    code = main(["train", "--config", str(run_yaml), "--out", str(out), "--max-steps", "2",
                 "--cache-dir", str(tmp_path / "cache")])
    assert code == 0
    assert capsys.readouterr().out.strip() == str(out)
    saved = (out / "config.yaml").read_text()
    assert "max_steps: 2\n" in saved and "loss: hinge\n" in saved and "spo: true\n" in saved
    records = read_metrics(out / "metrics.jsonl")
    assert [r["step"] for r in records] == [0, 1, 2]
    assert records[0]["loss"] == pytest.approx(1.0 + 0.1 * records[0]["spo/loss"], abs=1e-4)
    assert (out / "spo_head.safetensors").exists() and (out / "model.safetensors").exists()


def test_plot_writes_a_png_of_the_curves(tmp_path, capsys):
    run = tmp_path / "run"
    run.mkdir()
    write_jsonl(run / "metrics.jsonl", [
        {"step": s, "loss": 0.7 - 0.1 * s, "rewards/accuracies": 0.5 + 0.1 * s,
         "rewards/margins": 0.2 * s, "rewards/chosen": 0.1 * s, "rewards/rejected": -0.1 * s,
         "spo/loss": 1.4 - 0.1 * s, "spo/accuracy": 0.25 + 0.1 * s} for s in range(4)
    ] + [{"step": 3, "eval/loss": 0.5, "eval/rewards/accuracies": 0.75}])
    assert main(["plot", str(run)]) == 0
    png = run / "curves.png"
    assert capsys.readouterr().out.strip() == str(png)
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    import matplotlib.image

    height, width = matplotlib.image.imread(str(png)).shape[:2]
    assert width > 800 and height > 400  # 3 x 2 panels
    assert main(["plot", str(run)]) == 2  # exists, no --overwrite
    assert "already exists" in capsys.readouterr().err


def one_line_error(capsys) -> str:
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1, err
    return err


def test_pair_without_rejected_exits_2_naming_row_and_field(tiny_model_dir, tmp_path, capsys):
    data = write_jsonl(tmp_path / "bad.jsonl", [PAIRS[0], {"prompt": "p", "chosen": "c"}])
    code = main(base_args(tiny_model_dir, data, tmp_path / "out", tmp_path))
    assert code == 2
    assert "bad.jsonl:line 2: field 'rejected': missing" in one_line_error(capsys)
    assert not (tmp_path / "out").exists()


def test_empty_response_exits_2_naming_row_and_field(tiny_model_dir, tmp_path, capsys):
    data = write_jsonl(tmp_path / "bad.jsonl", [{**PAIRS[0], "rejected": ""}])
    assert main(base_args(tiny_model_dir, data, tmp_path / "out", tmp_path)) == 2
    assert "bad.jsonl:line 1: field 'rejected': empty response" in one_line_error(capsys)


def test_existing_out_exits_2_and_is_left_alone(tiny_model_dir, tmp_path, capsys):
    data = write_jsonl(tmp_path / "pairs.jsonl", PAIRS)
    out = tmp_path / "out"
    out.mkdir()
    (out / "metrics.jsonl").write_text('{"step": 0}\n')
    assert main(base_args(tiny_model_dir, data, out, tmp_path)) == 2
    assert "already exists; pass --resume" in one_line_error(capsys)
    assert (out / "metrics.jsonl").read_text() == '{"step": 0}\n'


@pytest.mark.slow
def test_two_process_torchrun_run_finishes_with_the_same_outputs(tiny_model_dir, tmp_path):
    data = write_jsonl(tmp_path / "pairs.jsonl", PAIRS * 2)
    out = tmp_path / "ddp"
    env = {**os.environ, "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1",
           "TOKENIZERS_PARALLELISM": "false"}
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
               "-m", "realspo.cli", *base_args(tiny_model_dir, data, out, tmp_path),
               "--max-steps", "3", "--save-steps", "2", "--spo", "--spo-levels", "2",
               "--eval-fraction", "0.25"]
    done = subprocess.run(command, env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    assert done.stdout.strip() == str(out)  # printed once, by rank 0
    records = read_metrics(out / "metrics.jsonl")
    assert [r["step"] for r in records if "loss" in r] == [0, 1, 2, 3]  # one writer
    assert [r["step"] for r in records if "eval/loss" in r] == [3]
    from transformers import AutoModelForCausalLM

    assert AutoModelForCausalLM.from_pretrained(out).config.num_hidden_layers == 2
    assert (out / "spo_head.safetensors").exists() and (out / "config.yaml").exists()
    checkpoint = out / "checkpoints" / "step-000002"
    assert json.loads((checkpoint / "trainer_state.json").read_text())["num_processes"] == 2
    # written by the main process alone: every process's RNG state, no pickle
    assert sorted(p.name for p in checkpoint.iterdir()) == [
        "model.safetensors", "optimizer.json", "optimizer.safetensors",
        "rng_state_0.json", "rng_state_0.safetensors", "rng_state_1.json", "rng_state_1.safetensors",
        "scheduler.json", "trainer_state.json"]

    # Resumed from step 2 by two processes (each restoring its own RNG state), step 3 is
    # trained again and gives the same weights.
    from safetensors.torch import load_file

    first = load_file(str(out / "model.safetensors"))
    done = subprocess.run([*command, "--resume"], env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    again = load_file(str(out / "model.safetensors"))
    assert all(torch.equal(first[k], again[k]) for k in first)
    assert [r["step"] for r in read_metrics(out / "metrics.jsonl") if "loss" in r] == [0, 1, 2, 3]


# --- one run per output, and --overwrite replaces only a training run ---------------------------


def test_a_second_run_on_a_locked_out_exits_2_naming_the_pid(tiny_model_dir, tmp_path, capsys):
    data = write_jsonl(tmp_path / "pairs.jsonl", PAIRS)
    out = tmp_path / "run"
    holder = subprocess.Popen(
        [sys.executable, "-c", "import sys, time\nfrom realspo.outputs import output_lock\n"
         "with output_lock(sys.argv[1]):\n    print('held', flush=True)\n    time.sleep(120)\n",
         str(out)], stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "held"
        assert main(base_args(tiny_model_dir, data, out, tmp_path)) == 2
        err = one_line_error(capsys)
    finally:
        holder.kill()
        holder.wait()
        holder.stdout.close()
    assert f"is being written by another run (PID {holder.pid}" in err
    assert not out.exists()


def test_a_stale_lock_of_a_dead_process_is_taken_over(tiny_model_dir, tmp_path, capsys):
    data = write_jsonl(tmp_path / "pairs.jsonl", PAIRS)
    out = tmp_path / "run"
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"],
                          capture_output=True, text=True, check=True).stdout.strip()
    (tmp_path / ".run.lock").write_text(dead + "\n")
    assert main([*base_args(tiny_model_dir, data, out, tmp_path), "--max-steps", "1"]) == 0
    assert f"stale lock of PID {dead}" in capsys.readouterr().err
    assert (out / "model.safetensors").exists() and not (tmp_path / ".run.lock").exists()


def test_a_new_run_directory_is_marked_as_a_training_run(tiny_model_dir, tmp_path):
    from realspo.outputs import output_kind

    data = write_jsonl(tmp_path / "pairs.jsonl", PAIRS)
    out = tmp_path / "run"
    assert main([*base_args(tiny_model_dir, data, out, tmp_path), "--max-steps", "1"]) == 0
    assert output_kind(out) == "train-run"
    # ... so --overwrite replaces it
    assert main([*base_args(tiny_model_dir, data, out, tmp_path), "--max-steps", "1", "--overwrite"]) == 0


def _tree(path: Path) -> dict:
    return {str(p.relative_to(path)): p.read_bytes() if p.is_file() else None
            for p in sorted(path.rglob("*"))}


@pytest.mark.parametrize("kind", ["model", "data", "notes", "unmarked old run", "other realspo output"])
def test_overwrite_refuses_what_is_not_a_training_run_and_deletes_nothing(
        kind, tiny_model_dir, tmp_path, capsys):
    import shutil

    from realspo.outputs import mark_output

    data = write_jsonl(tmp_path / "pairs.jsonl", PAIRS)
    out = tmp_path / "target"
    if kind == "model":
        shutil.copytree(tiny_model_dir, out)
    elif kind == "data":
        out.mkdir()
        write_jsonl(out / "other-pairs.jsonl", PAIRS)
    elif kind == "notes":
        out.mkdir()
        (out / "thesis.tex").write_text("years of work")
    elif kind == "unmarked old run":  # as realspo wrote runs before it marked them
        (out / "checkpoints" / "step-000002").mkdir(parents=True)
        (out / "checkpoints" / "step-000002" / "trainer_state.json").write_text('{"step": 2}')
        (out / "metrics.jsonl").write_text('{"step": 0}\n')
        (out / "config.yaml").write_text("seed: 0\n")
    else:
        out.mkdir()
        mark_output(out, "demo-report")
        (out / "report.md").write_text("# results")
    before = _tree(out)
    assert main([*base_args(tiny_model_dir, data, out, tmp_path), "--overwrite"]) == 2
    err = one_line_error(capsys)
    assert f"--out {out}: is " in err and "refusing to replace it" in err
    if kind == "unmarked old run":
        assert "delete such a run by hand" in err
    assert _tree(out) == before


# --- plot on a malformed metrics.jsonl ----------------------------------------------------------


@pytest.mark.parametrize(("line", "expected"), [
    ('{"step": 1, "loss": 0.6', "line 2: not valid JSON"),
    ("[1, 2]", "line 2: a JSON list, expected an object"),
    ('{"step": 1, "loss": "0.6"}', "line 2: field 'loss': expected a number or null, got '0.6'"),
    ('{"step": 1, "eval/rewards/margins": true}', "line 2: field 'eval/rewards/margins': expected a number"),
    ('{"step": "one", "loss": 0.6}', "line 2: field 'step': expected a number, got 'one'"),
    ('{"loss": 0.6}', "line 2: field 'step': expected a number, got None"),
])
def test_plot_of_a_malformed_metrics_file_exits_2_naming_file_and_line(line, expected, tmp_path, capsys):
    run = tmp_path / "run"
    run.mkdir()
    (run / "metrics.jsonl").write_text(f'{{"step": 0, "loss": 0.7}}\n{line}\n{{"step": 2, "loss": 0.5}}\n')
    assert main(["plot", str(run)]) == 2
    assert f"{run / 'metrics.jsonl'}:{expected}" in one_line_error(capsys)
    assert not (run / "curves.png").exists()


def test_plot_skips_a_torn_last_record_with_a_warning(tmp_path, capsys):
    run = tmp_path / "run"
    run.mkdir()
    (run / "metrics.jsonl").write_text('{"step": 0, "loss": 0.7}\n{"step": 1, "loss": null}\n'
                                       '{"step": 2, "lo')  # killed mid-write: no newline
    assert main(["plot", str(run)]) == 0
    err = capsys.readouterr().err
    assert "metrics.jsonl:line 3: skipping a torn last record" in err
    assert (run / "curves.png").read_bytes()[:4] == b"\x89PNG"
