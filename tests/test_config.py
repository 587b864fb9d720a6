"""The configuration mechanism against careless and hostile YAML files and option values.

Each case runs the real CLI in process and must exit with code 2 and one short stderr line
naming the file and what was wrong, before any work starts.
"""

from __future__ import annotations

import json
import time
from pathlib import Path

import pytest

from realspo.cli import MAX_ERROR_CHARS, main, one_line
from realspo.config import MAX_YAML_ALIASES, load_yaml

TRL = {"prompt": "Capital of France?", "chosen": "Paris.", "rejected": "Berlin."}

ALIAS_BOMB = "a: &a [x, x, x, x, x, x, x, x, x]\n" + "".join(
    f"{chr(98 + i)}: &{chr(98 + i)} [" + ", ".join([f"*{chr(97 + i)}"] * 9) + "]\n" for i in range(8)
) + "beta: *i\n"  # 9 ** 9 elements once expanded, in 600 bytes


def _train_argv(tmp_path: Path, model: str, config: Path) -> list[str]:
    data = tmp_path / "d.jsonl"
    data.write_text(json.dumps(TRL) + "\n", encoding="utf-8")
    return ["train", "--model", model, "--data", str(data), "--out", str(tmp_path / "run"),
            "--config", str(config)]


@pytest.mark.parametrize(
    ("yaml_text", "fragments"),
    [
        ("lr: 1.0e-5\nlr: 1.0e-3\n", ["duplicate key 'lr'", "line 2"]),
        ("weight_decay: .nan\n", ["'weight_decay' must be a finite number"]),
        ("max_grad_norm: .nan\n", ["'max_grad_norm' must be a finite number"]),
        ("lr: 1.0e+999\n", ["'lr' must be a finite number"]),
        (ALIAS_BOMB, [f"more than {MAX_YAML_ALIASES} aliases"]),
        ("lr: [" * 5000 + "]" * 5000 + "\n", ["invalid YAML"]),
        ("x" * 1000 + ": 1\n", ["unknown option", "..."]),
    ],
    ids=["duplicate-key", "nan-weight-decay", "nan-max-grad-norm", "overflowing-float",
         "alias-bomb", "deeply-nested", "long-unknown-key"],
)
def test_bad_config_file_is_one_short_line_exit_2(tmp_path, tiny_model_dir, capsys, yaml_text,
                                                  fragments):
    config = tmp_path / "run.yaml"
    config.write_text(yaml_text, encoding="utf-8")
    started = time.monotonic()
    code = main(_train_argv(tmp_path, tiny_model_dir, config))
    elapsed = time.monotonic() - started
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2
    assert len(err) == 1, err
    assert len(err[0]) <= MAX_ERROR_CHARS + len("realspo train: error: ")
    assert str(config) in err[0]
    for fragment in fragments:
        assert fragment in err[0], err[0]
    assert not (tmp_path / "run").exists()
    assert elapsed < 60  # generous: the alias bomb once ran 38 s before failing


def test_unknown_option_suggests_the_near_miss(tmp_path, tiny_model_dir, capsys):
    config = tmp_path / "run.yaml"
    config.write_text("betta: 0.2\n", encoding="utf-8")
    assert main(_train_argv(tmp_path, tiny_model_dir, config)) == 2
    assert "did you mean 'beta'" in capsys.readouterr().err


def test_alias_within_bound_still_loads(tmp_path):
    config = tmp_path / "ok.yaml"
    config.write_text("base: &b 0.1\nbeta: *b\n", encoding="utf-8")
    assert load_yaml(config) == {"base": 0.1, "beta": 0.1}


def test_one_line_folds_newlines_and_cuts_long_messages():
    assert one_line("a\nb  c") == "a b c"
    long = one_line("x" * 10_000)
    assert len(long) == MAX_ERROR_CHARS and long.endswith("...")


def test_config_that_is_a_directory_is_refused(tmp_path, tiny_model_dir, capsys):
    config = tmp_path / "conf.yaml"
    config.mkdir()
    assert main(_train_argv(tmp_path, tiny_model_dir, config)) == 2
    assert "not a regular file" in capsys.readouterr().err


@pytest.mark.parametrize("text", ['{"prompt": "a", "prompt": "b", "chosen": "x", "rejected": "y"}'])
def test_duplicate_keys_in_a_json_row_are_refused(tmp_path, tiny_model_dir, capsys, text):
    data = tmp_path / "d.jsonl"
    data.write_text(text + "\n", encoding="utf-8")
    code = main(["train", "--model", tiny_model_dir, "--data", str(data),
                 "--out", str(tmp_path / "run")])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and len(err) == 1
    assert str(data) in err[0] and "line 1" in err[0] and "duplicate key 'prompt'" in err[0]
    assert not (tmp_path / "run").exists()
