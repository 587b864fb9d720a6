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
from realspo.training.outputs import read_metrics

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
