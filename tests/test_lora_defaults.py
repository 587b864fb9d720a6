"""``train --lr`` unset: 1e-6 for full fine-tuning, 1e-4 with LoRA (said at start); a given --lr wins."""

from __future__ import annotations

import json
import logging

import pytest
import yaml

from realspo.cli import build_parser, main
from realspo.config import resolve
from realspo.training.train_config import FULL_LR, LORA_LR, TrainConfig


def _resolved(*flags: str) -> TrainConfig:
    args = build_parser().parse_args(["train", "--data", "d.jsonl", "--model", "m", "--out", "o", *flags])
    del args._run, args.verbose
    return resolve(TrainConfig, args)


def test_full_fine_tuning_default_lr_is_unchanged(caplog):
    with caplog.at_level(logging.INFO):
        assert _resolved().lr == FULL_LR == 1e-6
    assert "LoRA default" not in caplog.text


def test_lora_without_lr_gets_the_lora_default_and_says_so(caplog):
    with caplog.at_level(logging.INFO):
        assert _resolved("--lora-r", "8").lr == LORA_LR == 1e-4
    assert "lr 1e-4 (LoRA default; --lr to change)" in caplog.text


@pytest.mark.parametrize("flags", [["--lr", "3e-5"], ["--lr", "3e-5", "--lora-r", "8"]])
def test_an_explicit_lr_wins(flags, caplog):
    with caplog.at_level(logging.INFO):
        assert _resolved(*flags).lr == 3e-5
    assert "LoRA default" not in caplog.text


def test_lr_from_the_config_file_wins_over_the_lora_default(tmp_path):
    run_yaml = tmp_path / "run.yaml"
    run_yaml.write_text("lr: 2.0e-5\nlora_r: 4\n")
    assert _resolved("--config", str(run_yaml)).lr == 2e-5


def test_lora_run_prints_its_lr_at_start_and_saves_it(tiny_model_dir, tmp_path, capsys, one_thread):
    data = tmp_path / "pairs.jsonl"
    data.write_text("".join(json.dumps({"prompt": "Q?", "chosen": f"good {i}.", "rejected": f"bad {i}."})
                            + "\n" for i in range(2)))
    out = tmp_path / "run"
    assert main(["train", "--data", str(data), "--model", tiny_model_dir, "--out", str(out),
                 "--cache-dir", str(tmp_path / "cache"), "--lora-r", "2", "--max-steps", "1",
                 "--batch-size", "2", "--max-length", "32"]) == 0
    assert "lr 1e-4 (LoRA default; --lr to change)" in capsys.readouterr().err
    assert yaml.safe_load((out / "config.yaml").read_text())["lr"] == 1e-4
