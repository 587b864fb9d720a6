"""`realspo train --report-to`: the metrics.jsonl records, logged through accelerate's trackers."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from realspo.cli import main
from realspo.training.run_dir import read_metrics

PAIRS = [
    {"prompt": "Human: How do I boil an egg? Assistant:",
     "chosen": "Put the egg in boiling water for nine minutes.",
     "rejected": "I am sorry, but I cannot help with that request."},
    {"prompt": "Human: How do I bake bread? Assistant:",
     "chosen": "Mix flour, water, yeast and salt, then knead the dough.",
     "rejected": "The mitochondria is the powerhouse of the cell."},
] * 3

pytestmark = pytest.mark.usefixtures("one_thread")


def train_args(tiny_model_dir: str, tmp_path: Path, *flags: str) -> list[str]:
    data = tmp_path / "pairs.jsonl"
    data.write_text("".join(json.dumps(r) + "\n" for r in PAIRS))
    return ["train", "--data", str(data), "--model", tiny_model_dir, "--out", str(tmp_path / "run"),
            "--cache-dir", str(tmp_path / "cache"), "--batch-size", "2", "--max-length", "48",
            "--logging-steps", "1", "--lr", "1e-3", "--max-steps", "2", *flags]


def read_scalars(log_dir: Path) -> dict[str, dict[int, float]]:
    """tag -> {step: value} of every TensorBoard event file under ``log_dir``."""
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    scalars: dict[str, dict[int, float]] = {}
    for events in sorted(log_dir.rglob("events.out.tfevents.*")):
        acc = EventAccumulator(str(events))
        acc.Reload()
        for tag in acc.Tags()["scalars"]:
            scalars.setdefault(tag, {}).update({e.step: e.value for e in acc.Scalars(tag)})
    return scalars


def test_tensorboard_gets_every_metrics_record_under_trl_names(tiny_model_dir, tmp_path):
    pytest.importorskip("tensorboard")
    args = train_args(tiny_model_dir, tmp_path, "--report-to", "tensorboard", "--eval-fraction", "0.34")
    assert main(args) == 0
    out = tmp_path / "run"
    assert list((out / "runs" / "realspo").glob("events.out.tfevents.*"))
    scalars = read_scalars(out / "runs")
    records = read_metrics(out / "metrics.jsonl")
    train = [r for r in records if "loss" in r]
    assert [r["step"] for r in train] == [0, 1, 2]
    for name in ("rewards/margins", "rewards/accuracies", "logps/chosen", "loss", "learning_rate"):
        assert scalars[name] == pytest.approx({r["step"]: r[name] for r in train}, rel=1e-6), name
    (evaluation,) = [r for r in records if "eval/loss" in r]
    assert scalars["eval/rewards/margins"] == pytest.approx({2: evaluation["eval/rewards/margins"]},
                                                            rel=1e-6)


def test_no_tracker_by_default_and_no_runs_directory(tiny_model_dir, tmp_path):
    assert main(train_args(tiny_model_dir, tmp_path)) == 0
    assert not (tmp_path / "run" / "runs").exists()


def test_a_tracker_that_is_not_installed_stops_the_run_at_its_start(tiny_model_dir, tmp_path,
                                                                    monkeypatch, capsys):
    import realspo.training.trackers as trackers

    monkeypatch.setattr(trackers, "find_spec", lambda name: None)
    assert main(train_args(tiny_model_dir, tmp_path, "--report-to", "tensorboard")) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "--report-to tensorboard" in err[0] and "not installed" in err[0]
    assert not (tmp_path / "run").exists()


@pytest.mark.parametrize("flags, message", [
    (["--report-to", "mlflow"], "unknown tracker 'mlflow'"),
    (["--report-to", "none", "tensorboard"], "cannot go with a tracker"),
])
def test_a_wrong_report_to_exits_2_with_one_line(flags, message, tiny_model_dir, tmp_path, capsys):
    assert main(train_args(tiny_model_dir, tmp_path, *flags)) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and message in err[0]
