"""Numerics end to end: reduced-precision training with extreme log-ratios stays finite, and a
genuine non-finite loss stops ``realspo train`` with a clear message, keeping the last good
checkpoint usable.

The losses alone are checked against extreme margins in fp32/bf16/fp16 in ``test_losses.py``;
``test_training.py`` checks the library-level stop. Here both go through the real trainer and
CLI: bf16 autocast (mixed precision) on CPU, fp16 where a GPU exists.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
import torch

from realspo.cli import main
from realspo.training.run_dir import read_metrics

WORDS = ["apples", "rivers", "engines", "sonnets", "glaciers", "violins"]


pytestmark = pytest.mark.usefixtures("one_thread")


def _pairs(path: Path, ref_chosen: float | None = None, ref_rejected: float | None = None) -> str:
    """Six TRL pairs; with ``ref_*`` given, precomputed reference log-probs in every row."""
    rows = []
    for w in WORDS:
        row = {"prompt": f"Human: Tell me about {w}. Assistant:", "chosen": f" {w.capitalize()} are fine.",
               "rejected": " I cannot help with that."}
        if ref_chosen is not None:
            row.update(ref_chosen_logps=ref_chosen, ref_rejected_logps=ref_rejected)
        rows.append(row)
    path.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    return str(path)


def _train_argv(data: str, model: str, out: Path, *extra: str) -> list[str]:
    return ["train", "--data", data, "--model", model, "--out", str(out), "--batch-size", "3",
            "--max-length", "48", "--logging-steps", "1", "--lr", "1e-3", "--warmup-ratio", "0",
            "--cache-dir", str(out.parent / "cache"), *extra]


DTYPES = [pytest.param("bfloat16", id="bf16-autocast")] + [
    pytest.param("float16", id="fp16-autocast", marks=pytest.mark.skipif(
        not torch.cuda.is_available(), reason="fp16 mixed precision needs a GPU"))]


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("loss", ["sigmoid", "ipo", "robust"])
@pytest.mark.parametrize("direction", [1, -1], ids=["chosen-far-ahead", "chosen-far-behind"])
def test_extreme_log_ratios_in_mixed_precision_keep_every_logged_value_finite(
        dtype, loss, direction, tiny_model_dir, tmp_path, capsys):
    # |log pi - log pi_ref| ~ 2e4 nats on one side of every pair: beta * d ~ +-2e4 overflows
    # exp() in any precision, and fp16/bf16 hold at most ~6.5e4 / ~3e38 with 3 digits.
    far = -2.0e4
    data = _pairs(tmp_path / "pairs.jsonl", *((far, -1.0) if direction > 0 else (-1.0, far)))
    argv = _train_argv(data, tiny_model_dir, tmp_path / "run", "--dtype", dtype, "--loss", loss,
                       "--beta", "1.0", "--label-smoothing", "0.1" if loss == "robust" else "0",
                       "--max-steps", "2")
    assert main(argv) == 0, capsys.readouterr().err
    records = read_metrics(tmp_path / "run" / "metrics.jsonl")
    assert [r["step"] for r in records] == [0, 1, 2]
    for record in records:
        for key in ("loss", "rewards/chosen", "rewards/rejected", "rewards/margins", "grad_norm"):
            if key in record:
                assert record[key] is not None and math.isfinite(record[key]), (key, record)
    first = records[0]
    assert first["rewards/accuracies"] == (1.0 if direction > 0 else 0.0)
    if loss == "sigmoid":  # -log sigmoid(beta d): ~0 far ahead, ~|beta d| = 2e4 far behind
        assert first["loss"] == (pytest.approx(0.0, abs=1e-3) if direction > 0
                                 else pytest.approx(2.0e4, rel=0.01))
    assert (tmp_path / "run" / "model.safetensors").exists()


def test_a_bf16_run_and_an_fp32_run_can_share_a_process(tiny_model_dir, tmp_path):
    # accelerate's state is process-wide; the trainer resets it so --dtype may change per run
    data = _pairs(tmp_path / "pairs.jsonl")
    for n, dtype in enumerate(("bfloat16", "float32", "bfloat16")):
        out = tmp_path / f"run-{n}"
        assert main(_train_argv(data, tiny_model_dir, out, "--dtype", dtype, "--max-steps", "1")) == 0


def test_non_finite_loss_exits_2_naming_the_step_and_the_run_resumes_from_the_kept_checkpoint(
        tiny_model_dir, tmp_path, capsys, monkeypatch):
    import realspo.training.step as step_module

    data = _pairs(tmp_path / "pairs.jsonl")
    out = tmp_path / "run"
    argv = _train_argv(data, tiny_model_dir, out, "--max-steps", "4", "--save-steps", "2")
    real, calls = step_module.preference_loss, []

    def nan_at_third_micro_batch(*args, **kwargs):
        result = real(*args, **kwargs)
        calls.append(1)
        if len(calls) == 3:
            result.loss = result.loss * float("nan")
        return result

    monkeypatch.setattr(step_module, "preference_loss", nan_at_third_micro_batch)
    assert main(argv) == 2
    err = capsys.readouterr().err.strip().splitlines()  # progress bars, then the error
    errors = [line for line in err if "error:" in line]
    assert errors == err[-1:] and errors[0].startswith("realspo train: error: non-finite loss")
    assert "at step 3" in errors[0] and str(out / "checkpoints" / "step-000002") in errors[0]
    assert not (out / "model.safetensors").exists()

    monkeypatch.setattr(step_module, "preference_loss", real)  # e.g. after lowering --lr
    assert main([*argv, "--resume"]) == 0
    assert [r["step"] for r in read_metrics(out / "metrics.jsonl")] == [0, 1, 2, 3, 4]
    assert (out / "model.safetensors").exists()
