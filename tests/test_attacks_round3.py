"""Hostile and careless use, round 3 (issue 21), through the real command line where it can
be: every path a command reads is an input; the names a command derives for itself are
reserved and only ever replaced when they carry realspo's marker; nothing but a regular file
or a realspo directory is replaced; one run per output for every command; no traceback and
no hang; careless formats explained. Each refusal is exit code 2, one line on stderr and the
directory tree unchanged (``_refused``).
"""

from __future__ import annotations

import errno
import json
import os
import shutil
import stat
from pathlib import Path

import numpy as np
import pytest

from realspo.cli import main
from test_attacks import MULTI, _embeddings, _pairs, _refused, _write_jsonl

PROMPTS = [{"prompt": "Name a fruit."}, {"prompt": "Name a colour."}]


@pytest.fixture
def model_copy(tiny_model_dir, tmp_path) -> Path:
    out = tmp_path / "M"
    shutil.copytree(tiny_model_dir, out)
    return out


def _select(tmp: Path, out: str, *extra: str) -> list[str]:
    data = _write_jsonl(tmp / "d.jsonl", MULTI)
    return ["select", "--data", data, "--embeddings", _embeddings(tmp / "e.npy"), "--out", out, *extra]


# --- 1. every path a command reads is an input; derived names are reserved ------------------------


def test_select_data_at_its_progress_name_is_refused_and_kept(tmp_path, capsys):
    data = tmp_path / "D.embeddings-partial"
    _write_jsonl(data / "data.jsonl", MULTI)
    for extra in ([], ["--overwrite"]):
        _refused(["select", "--data", str(data), "--embeddings", _embeddings(tmp_path / "e.npy"),
                  "--out", str(tmp_path / "D"), *extra], capsys, tmp_path,
                 "the embedding progress of --out", "is the input --data")
    assert (data / "data.jsonl").is_file()


@pytest.mark.parametrize("flag", ["--overwrite", "--resume"])
def test_a_foreign_directory_at_the_progress_name_is_never_deleted(model_copy, tmp_path, capsys, flag):
    foreign = tmp_path / "D.embeddings-partial"
    foreign.mkdir()
    (foreign / "notes.txt").write_text("mine")
    data = _write_jsonl(tmp_path / "d.jsonl", MULTI)
    _refused(["select", "--data", data, "--model", str(model_copy), "--out", str(tmp_path / "D"),
              "--no-progress", flag], capsys, tmp_path, str(foreign),
             "not a realspo embedding-progress directory")


@pytest.mark.parametrize("flag", ["--overwrite", "--resume"])
def test_generate_prompts_at_its_progress_name_are_refused_and_kept(tmp_path, capsys, flag):
    prompts = tmp_path / "X.partial.jsonl"
    prompts.write_bytes(b'{"prompt": "Name a fruit."}\n{"prompt": "Name a colour."}')  # no final newline
    _refused(["generate", "--model", "m", "--prompts", str(prompts), "--out", str(tmp_path / "X"), flag],
             capsys, tmp_path, "the progress file of --out", "is the input --prompts")


@pytest.mark.parametrize("flag", ["--overwrite", "--resume"])
def test_a_foreign_file_at_the_generate_progress_name_is_never_cut_or_deleted(
        model_copy, tmp_path, capsys, flag):
    foreign = tmp_path / "X.jsonl.partial.jsonl"
    foreign.write_bytes(b'{"my": "notes"}\n{"torn')
    prompts = _write_jsonl(tmp_path / "p.jsonl", PROMPTS)
    _refused(["generate", "--model", str(model_copy), "--prompts", prompts, "--out",
              str(tmp_path / "X.jsonl"), "--no-progress", flag], capsys, tmp_path, str(foreign),
             "not a realspo generate progress file")


def test_the_config_file_is_an_input(tmp_path, capsys):
    data = _write_jsonl(tmp_path / "d.jsonl", MULTI)
    config = tmp_path / "run.yaml"
    config.write_text(f"data: {data}\nembeddings: {_embeddings(tmp_path / 'e.npy')}\n")
    _refused(["select", "--config", str(config), "--out", str(config), "--overwrite"], capsys,
             tmp_path, "is the input --config")


def test_a_judge_directory_is_an_input(tiny_reward_model_dir, tmp_path, capsys):
    judge = tmp_path / "RM"
    shutil.copytree(tiny_reward_model_dir, judge)
    pairs = _pairs(tmp_path / "pairs.jsonl")
    _refused(["label", "--pairs", pairs, "--judge", str(judge), "--out", str(judge / "config.json"),
              "--overwrite"], capsys, tmp_path, "lies inside the input --judge")
    _refused(["label", "--pairs", pairs, "--simulate", "--oracle", str(judge), "--out",
              str(judge / "x.jsonl")], capsys, tmp_path, "lies inside the input --oracle")


@pytest.mark.parametrize("command", ["label", "select", "evaluate", "rounds"])
def test_a_model_named_by_a_scheme_is_an_input(model_copy, tmp_path, capsys, command):
    data = _write_jsonl(tmp_path / "d.jsonl", MULTI)
    argv = {"label": ["label", "--pairs", _pairs(tmp_path / "pairs.jsonl"), "--judge", f"llm:{model_copy}",
                      "--out", str(model_copy / "labels.jsonl")],
            "select": ["select", "--data", data, "--embedder", f"st:{model_copy}", "--out",
                       str(model_copy / "pairs.jsonl")],
            "evaluate": ["evaluate", "--model", "m", "--baseline", "b", "--prompts", data, "--judge",
                         f"llm:{model_copy}", "--out", str(model_copy / "eval.json")],
            "rounds": ["rounds", "--model", "m", "--prompts", data, "--judge", str(model_copy),
                       "--budget", "1", "--out", str(model_copy / "rounds")]}[command]
    _refused(argv, capsys, tmp_path, "lies inside the input", f"{model_copy}")


@pytest.mark.parametrize("kind", ["fifo", "symlink"])
def test_an_output_that_is_not_a_regular_file_is_never_replaced(tmp_path, capsys, kind):
    out = tmp_path / "o.jsonl"
    if kind == "fifo":
        os.mkfifo(out)
    else:
        (tmp_path / "elsewhere.jsonl").write_text("keep\n")
        out.symlink_to(tmp_path / "elsewhere.jsonl")
    _refused(_select(tmp_path, str(out), "--overwrite"), capsys, tmp_path,
             f"is a {'FIFO' if kind == 'fifo' else 'symlink'}")
    assert (stat.S_ISFIFO if kind == "fifo" else stat.S_ISLNK)(os.lstat(out).st_mode)


def test_dev_null_is_never_replaced(tmp_path, capsys):
    _refused(_select(tmp_path, "/dev/null", "--overwrite"), capsys, tmp_path, "/dev/null", "is a device")
    assert stat.S_ISCHR(os.stat("/dev/null").st_mode)


@pytest.mark.parametrize("target", ["/dev/null", "fifo"])
@pytest.mark.parametrize("command", ["train", "plot", "evaluate", "generate"])
def test_no_command_replaces_a_device_or_a_fifo(tiny_model_dir, tmp_path, capsys, command, target):
    if target == "fifo":
        os.mkfifo(tmp_path / "ff")
        target = str(tmp_path / "ff")
    data = _write_jsonl(tmp_path / "d.jsonl", [{"prompt": "Q?", "chosen": "A.", "rejected": "B."}])
    _write_jsonl(tmp_path / "RUN" / "metrics.jsonl", [{"step": 1, "loss": 0.5}])
    argv = {"train": ["train", "--model", tiny_model_dir, "--data", data, "--out", target],
            "plot": ["plot", str(tmp_path / "RUN"), "--out", target],
            "evaluate": ["evaluate", "--model", tiny_model_dir, "--baseline", tiny_model_dir, "--prompts",
                         data, "--judge", "proving-ground", "--out", target],
            "generate": ["generate", "--model", tiny_model_dir, "--prompts", data, "--out", target]}[command]
    _refused([*argv, "--overwrite"], capsys, tmp_path, target)
    assert not stat.S_ISREG(os.stat(target).st_mode)


def test_a_foreign_file_at_the_lock_name_is_never_taken_over(tmp_path, capsys):
    lock = tmp_path / ".o.jsonl.lock"
    lock.write_text("my notes\n")
    _refused(_select(tmp_path, str(tmp_path / "o.jsonl")), capsys, tmp_path, "not a realspo lock file")
    assert lock.read_text() == "my notes\n"


@pytest.mark.parametrize("overwrite", [[], ["--overwrite"]])
def test_demo_never_touches_a_foreign_dot_old_directory(tmp_path, capsys, overwrite):
    foreign = tmp_path / ".report.old"
    foreign.mkdir()
    (foreign / "thesis.tex").write_text("my thesis")
    _refused(["demo", "--quick", "--out", str(tmp_path / "report"), *overwrite], capsys, tmp_path,
             "reserved for the backup of report")


# --- 3. one run per output, for every command -------------------------------------------------------


@pytest.mark.parametrize("command", ["generate", "select", "label", "demo", "evaluate", "leaderboard"])
def test_every_command_takes_the_output_lock_before_any_work(tmp_path, capsys, command):
    from realspo.outputs import output_lock

    data = _write_jsonl(tmp_path / "d.jsonl", MULTI)
    out = tmp_path / ("o" if command in ("demo", "leaderboard") else "o.jsonl")
    argv = {"generate": ["generate", "--model", "no-model-here", "--prompts", data, "--out", str(out)],
            "select": _select(tmp_path, str(out)),
            "label": ["label", "--pairs", _pairs(tmp_path / "p.jsonl", scores=True), "--from-scores",
                      "--out", str(out)],
            "demo": ["demo", "--quick", "--out", str(out)],
            "evaluate": ["evaluate", "--model", "m", "--baseline", "b", "--prompts", data, "--judge",
                         "proving-ground", "--out", str(out)],
            "leaderboard": ["leaderboard", "--quick", "--out", str(out)]}[command]
    with output_lock(out):  # another run holds it (this process: alive)
        _refused(argv, capsys, tmp_path, "is being written by another run")


def test_a_train_refused_at_model_load_leaves_no_parent_directory(tmp_path, capsys):
    model = tmp_path / "M"
    model.mkdir()
    (model / "config.json").write_text('{"model_type": "llama"}')
    data = _write_jsonl(tmp_path / "p.jsonl", [{"prompt": "Q?", "chosen": "A.", "rejected": "B."}])
    code = main(["train", "--model", str(model), "--data", data, "--out", str(tmp_path / "a" / "b" / "run")])
    assert code == 2 and len(capsys.readouterr().err.strip().splitlines()) == 1
    assert not (tmp_path / "a").exists()


# --- 4. no traceback, no hang -------------------------------------------------------------------------


@pytest.mark.parametrize("argv", [["select", "--data", "d.jsonl", "--embeddings", "e.npy", "--out", ""],
                                  ["train", "--model", "m", "--data", "d.jsonl", "--out", ""]])
def test_an_empty_out_is_one_line(tmp_path, capsys, argv):
    _refused(argv, capsys, tmp_path, "--out", "empty path")


@pytest.mark.skipif(__import__("torch").cuda.is_available(), reason="a CUDA machine has cuda")
@pytest.mark.parametrize("device", ["cuda", "cuda:3", "tpu", "mps"])
@pytest.mark.parametrize("command", ["select", "generate", "label"])
def test_a_device_torch_does_not_have_is_one_line(model_copy, tiny_reward_model_dir, tmp_path, capsys,
                                                  command, device):
    data = _write_jsonl(tmp_path / "d.jsonl", MULTI)
    argv = {"select": ["select", "--data", data, "--model", str(model_copy), "--out", str(tmp_path / "o.jsonl")],
            "generate": ["generate", "--model", str(model_copy), "--prompts", data, "--out",
                         str(tmp_path / "o.jsonl")],
            "label": ["label", "--pairs", _pairs(tmp_path / "p.jsonl"), "--reward-model",
                      tiny_reward_model_dir, "--out", str(tmp_path / "o.jsonl")]}[command]
    _refused([*argv, "--device", device, "--no-progress"] if command != "label" else [*argv, "--device", device],
             capsys, tmp_path, f"--device {device}")


@pytest.mark.parametrize("template, fragment", [
    ("{{ raise_exception('no system role here') }}", "no system role here"),
    ("{% for i in range(100000) %}{% for j in range(100000) %}{% endfor %}{% endfor %}", "ran longer than"),
    ("{% set l = [1] * 100000 %}{% for a in l %}{% for b in l %}{% endfor %}{% endfor %}", "ran longer than"),
    ("{{ 'x' * 10000000000 }}", "builds a value longer than"),
    ("{{ 'x' | center(10000000000) }}", "asks for a size of"),
    ("{{ 10 ** 100000000 }}", "integer power too large"),
    ("{% macro f(n) %}{{ f(n + 1) }}{% endmacro %}{{ f(0) }}", "recurses too deeply"),
    ("{{ messages[0].content | upper", "TemplateSyntaxError"),
])
def test_a_hostile_chat_template_is_one_line(model_copy, tmp_path, capsys, monkeypatch, template, fragment):
    import realspo.template_sandbox as sandbox

    monkeypatch.setattr(sandbox, "MAX_SECONDS", 1.0)
    (model_copy / "chat_template.jinja").write_text(template)
    prompts = _write_jsonl(tmp_path / "p.jsonl", PROMPTS)
    _refused(["generate", "--model", str(model_copy), "--prompts", prompts, "--out", str(tmp_path / "o.jsonl"),
              "--chat-template", "on", "--no-progress"], capsys, tmp_path, "its chat template", fragment,
             late=True)  # (found once the model is loaded)


def test_the_guarded_template_renders_exactly_as_transformers_does(model_copy):
    from transformers import AutoTokenizer
    from transformers.utils import chat_template_utils

    from realspo.template_sandbox import install

    smol = Path.home() / ".cache" / "realspo" / "test-models" / "gguf"
    templates = [(model_copy / "chat_template.jinja", (
        "{% for m in messages %}{{ '<|' + m['role'] + '|>' + m['content'] | trim }}{% if not loop.last %}"
        "\n{% endif %}{% endfor %}{% if add_generation_prompt %}<|assistant|>{% endif %}"))]
    templates += [(p / "chat_template.jinja", p.joinpath("chat_template.jinja").read_text())
                  for p in sorted(smol.glob("SmolLM2-135M-Instruct*")) if (p / "chat_template.jinja").is_file()]
    messages = [{"role": "system", "content": "Be brief. {{ not a tag }}"}, {"role": "user", "content": "Hi"},
                {"role": "assistant", "content": "Hello. "}, {"role": "user", "content": "=1+1?"}]
    install()
    guarded = chat_template_utils._compile_jinja_template
    for path, text in templates:
        tok = AutoTokenizer.from_pretrained(model_copy)
        tok.chat_template = text
        for generation in (False, True):
            ours = tok.apply_chat_template(messages, tokenize=False, add_generation_prompt=generation)
            try:
                chat_template_utils._compile_jinja_template = guarded.original
                theirs = tok.apply_chat_template(messages, tokenize=False, add_generation_prompt=generation)
            finally:
                chat_template_utils._compile_jinja_template = guarded
            assert ours == theirs and ours, path


@pytest.mark.parametrize("config, fragment", [
    ({"vocab_size": 2_000_000_000, "hidden_size": 65536}, "vocab_size"),
    ({"hidden_size": 65536 * 4}, "hidden_size"),
    ({"vocab_size": 100_000, "hidden_size": 4096}, "embedding weights"),
    ({"vocab_size": 397}, "no dimension of any weight tensor"),
    ({"num_hidden_layers": -1}, "num_hidden_layers"),
])
def test_a_model_config_larger_than_its_weights_is_one_line(model_copy, tmp_path, capsys, config, fragment):
    path = model_copy / "config.json"
    path.write_text(json.dumps({**json.loads(path.read_text()), **config}))
    data = _write_jsonl(tmp_path / "d.jsonl", MULTI)
    _refused(["select", "--data", data, "--model", str(model_copy), "--out", str(tmp_path / "o.jsonl"),
              "--no-progress"], capsys, tmp_path, str(path), fragment)


@pytest.mark.parametrize("change, fragment", [
    ({"last_epoch": "x"}, "last_epoch: expected an integer"),
    ({"_step_count": 1e300}, "_step_count: expected an integer"),
    ({"base_lrs": [1e30]}, "base_lrs[0]: expected a finite number near"),
    ({"base_lrs": [0.1, 0.1]}, "base_lrs: expected a list of 1"),
])
def test_a_tampered_scheduler_state_is_refused_before_use(tmp_path, change, fragment):
    from realspo.errors import InputError
    from realspo.training.checkpoints import restore_checkpoint, save_checkpoint
    from test_checkpoints import _OneProcess, _parts

    path = save_checkpoint(_OneProcess(), _parts(), tmp_path, 1, {"step": 1, "num_processes": 1}, keep=0)
    tree = json.loads((path / "scheduler.json").read_text())
    (path / "scheduler.json").write_text(json.dumps({**tree, **change}))
    with pytest.raises(InputError, match="scheduler.json: not a valid realspo checkpoint file") as caught:
        restore_checkpoint(_OneProcess(), _parts(), path)
    assert fragment in str(caught.value)


def test_a_checkpoint_beyond_the_run_is_refused(tiny_model_dir, tmp_path, capsys, one_thread):
    from realspo.config import resolve
    from realspo.training.loop import train
    from realspo.training.train_config import TrainConfig

    data = _write_jsonl(tmp_path / "p.jsonl", [{"prompt": f"Q{i}?", "chosen": "A.", "rejected": "B."}
                                               for i in range(4)])
    out = tmp_path / "run"
    opts = {"model": tiny_model_dir, "data": data, "out": str(out), "max_steps": 3, "save_steps": 1,
            "batch_size": 1}
    assert train(resolve(TrainConfig, opts), stop_after=1) is None
    (state_file,) = out.glob("checkpoints/step-*/trainer_state.json")
    state_file.write_text(json.dumps({**json.loads(state_file.read_text()), "step": 10**12}))
    code = main(["train", "--model", tiny_model_dir, "--data", data, "--out", str(out), "--max-steps", "3",
                 "--save-steps", "1", "--batch-size", "1", "--resume"])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and "beyond this run's 3 steps" in err[-1]


def test_plot_of_another_tools_metrics_is_one_line(tmp_path, capsys):
    run = tmp_path / "RUN"
    _write_jsonl(run / "metrics.jsonl", [{"step": 1, "accuracy_top5": 0.3}, {"step": 2, "wall": 9}])
    _refused(["plot", str(run)], capsys, tmp_path, "metrics.jsonl", "none of its 2 records")


def test_leaderboard_names_a_repeated_arm(tmp_path, capsys):
    _refused(["leaderboard", "--quick", "--arms", "random", "random", "--out", str(tmp_path / "lb")],
             capsys, tmp_path, "--arms: random given more than once")


def test_a_prompt_longer_than_the_context_is_cut_before_tokenizing(model_copy, tmp_path, capsys, one_thread):
    huge = "Tell me about the weather in Paris today. " * 25_000  # ~1 MB, one line
    prompts = _write_jsonl(tmp_path / "p.jsonl", [{"prompt": huge}, {"prompt": "Name a fruit."}])
    out = tmp_path / "c.jsonl"
    assert main(["generate", "--model", str(model_copy), "--prompts", prompts, "--out", str(out),
                 "--num-responses", "2", "--max-new-tokens", "4", "--no-progress"]) == 0
    assert "1 of 2 prompts were longer than the model's context leaves room for (508 tokens" \
        in capsys.readouterr().err
    assert len(out.read_text().splitlines()) == 2


# --- 5. careless formats ------------------------------------------------------------------------------


def test_a_pairs_csv_reads_back_with_its_numbers(tmp_path, capsys):
    from realspo.schema import read_annotation_rows, read_preference_rows

    unscored = _write_jsonl(tmp_path / "unscored.jsonl", [{k: v for k, v in g.items() if k != "scores"}
                                                          for g in MULTI])
    for suffix in (".csv", ".jsonl"):
        assert main(["select", "--data", unscored, "--embeddings", _embeddings(tmp_path / "e.npy"),
                     "--out", str(tmp_path / f"pairs{suffix}")]) == 0
    as_csv = [(p.pair_id, p.meta) for p in read_annotation_rows(tmp_path / "pairs.csv")]
    as_jsonl = [(p.pair_id, p.meta) for p in read_annotation_rows(tmp_path / "pairs.jsonl")]
    assert as_csv == as_jsonl and isinstance(as_csv[0][1]["similarity"], float)
    data = _write_jsonl(tmp_path / "scored.jsonl", MULTI)
    for suffix in (".csv", ".jsonl"):
        assert main(["select", "--data", data, "--embeddings", _embeddings(tmp_path / "e.npy"), "--out",
                     str(tmp_path / f"prefs{suffix}")]) == 0
    csv_rows = [r.data for r in read_preference_rows(tmp_path / "prefs.csv")]
    assert csv_rows == [r.data for r in read_preference_rows(tmp_path / "prefs.jsonl")]
    assert type(csv_rows[0]["chosen_index"]) is int and type(csv_rows[0]["chosen_score"]) is float


def test_a_number_column_with_text_names_the_cell(tmp_path):
    from realspo.errors import InputError
    from realspo.schema import read_preference_rows

    path = tmp_path / "p.csv"
    path.write_text("prompt,chosen,rejected,chosen_index\nQ?,A.,B.,three\n")
    with pytest.raises(InputError, match="field 'chosen_index': expected a number, got 'three'"):
        read_preference_rows(path)


def test_a_refused_rounds_run_leaves_no_directory(pickle_only_model_dir, tiny_reward_model_dir, tmp_path,
                                                  capsys):
    prompts = _write_jsonl(tmp_path / "p.jsonl", PROMPTS * 3)
    out = tmp_path / "rounds"
    argv = ["rounds", "--prompts", prompts, "--judge", tiny_reward_model_dir, "--budget", "1", "--rounds", "1",
            "--out", str(out), "--no-progress", "--max-new-tokens", "4", "--num-responses", "2"]
    code = main([*argv, "--model", pickle_only_model_dir])
    assert code == 2 and "pickle" in capsys.readouterr().err
    assert not out.exists() and not any(p.name.startswith(".rounds") for p in tmp_path.iterdir())


def test_a_full_disk_while_writing_names_the_file(tmp_path, capsys, monkeypatch):
    import realspo.outputs as outputs

    def full(value):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(outputs, "_json_safe", full)
    out = tmp_path / "o.jsonl"
    line = _refused(_select(tmp_path, str(out)), capsys, tmp_path, str(out), "No space left on device")
    assert "Traceback" not in line


def test_one_prompt_with_thousands_of_responses_selects_in_linear_memory():
    import tracemalloc

    from realspo.selection.strategies import select_pairs

    k = 4000  # its K x K cosines alone: 64 MB of float32
    emb = np.random.default_rng(0).normal(size=(k, 32)).astype(np.float32)
    tracemalloc.start()
    try:
        selection = select_pairs(emb, [k], "easy")
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert peak < 32 << 20, peak  # half of the whole matrix alone
    a, b = int(selection.index_a[0]), int(selection.index_b[0])
    unit = emb / np.linalg.norm(emb, axis=1, keepdims=True)
    sims = unit[a] @ unit.T
    assert a < b and abs(selection.similarity[0] - sims[b]) < 1e-5
    assert sims[b] <= (unit[a + 1:] @ unit[a]).min() + 1e-5  # no pair of row a is less similar


@pytest.mark.parametrize("strategy", ["easy", "hard", "random", "margin", "reward-gap", "reward-uncertain"])
def test_blocked_selection_picks_what_the_whole_matrix_picks(monkeypatch, strategy):
    import realspo.selection.large_groups as large
    import realspo.selection.strategies as strategies

    rng = np.random.default_rng(1)
    emb = rng.normal(size=(605, 16)).astype(np.float32)
    scores = {"margin": {"implicit_rewards": rng.normal(size=605)},
              "reward-gap": {"rewards": rng.normal(size=605)},
              "reward-uncertain": {"rewards": rng.normal(size=605)}}.get(strategy, {})
    whole = strategies.select_pairs(emb, [300, 300, 5], strategy, seed=3, **scores)
    monkeypatch.setattr(strategies, "BLOCK_THRESHOLD", 64)
    monkeypatch.setattr(large, "BLOCK_ELEMENTS", 64 * 300)
    blocked = strategies.select_pairs(emb, [300, 300, 5], strategy, seed=3, **scores)
    assert (whole.index_a == blocked.index_a).all() and (whole.index_b == blocked.index_b).all()
    assert np.allclose(whole.similarity, blocked.similarity, atol=1e-6)
    assert np.allclose(whole.key, blocked.key, atol=1e-6)


def test_a_strategy_that_needs_the_whole_matrix_refuses_a_huge_prompt(monkeypatch):
    import realspo.selection.strategies as strategies
    from realspo.errors import ConfigError

    monkeypatch.setattr(strategies, "BLOCK_THRESHOLD", 8)
    emb = np.random.default_rng(0).normal(size=(20, 4)).astype(np.float32)
    with pytest.raises(ConfigError, match="--strategy centroid compares all pairs of a prompt at once"):
        strategies.select_pairs(emb, [20], "centroid")



def test_a_full_disk_while_appending_progress_names_the_file(tmp_path, monkeypatch):
    from realspo.errors import RealspoError
    from realspo.generation.candidates import _append

    class Full:
        def __init__(self, *args, **kwargs):
            pass

        def __enter__(self):
            return self

        def __exit__(self, *exc):
            return False

        def write(self, text):
            raise OSError(errno.ENOSPC, "No space left on device")

    sidecar = tmp_path / "c.jsonl.partial.jsonl"
    monkeypatch.setattr(Path, "open", lambda self, *a, **k: Full())
    with pytest.raises(RealspoError, match=f"{sidecar}: cannot be written \\(No space left on device\\)") as caught:
        _append(sidecar, [{"prompt_id": "p"}])
    assert isinstance(caught.value, OSError) and caught.value.errno == errno.ENOSPC
