"""DeepSpeed ZeRO on CPU: `accelerate launch --use_deepspeed` (stages 2 and 3), two processes over
gloo, exports the same model as one process trained with the same global batch (full fine-tune,
and LoRA merged with the SPO head). Skipped where deepspeed is not importable (CI does not
install it); the set-up is the one of tests/test_fsdp_cpu.py."""

from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from realspo.cli import main

PAIRS = [
    {"prompt": "Human: How do I boil an egg? Assistant:",
     "chosen": "Put the egg in boiling water for nine minutes.",
     "rejected": "I am sorry, but I cannot help with that request."},
    {"prompt": "Human: How do I bake bread? Assistant:",
     "chosen": "Mix flour, water, yeast and salt, then knead the dough.",
     "rejected": "The mitochondria is the powerhouse of the cell."},
] * 4
# Global batch 4 either way: one process x 4 pairs, or two processes x 2 pairs.
LAUNCH = ["--num_processes", "2", "--num_machines", "1", "--main_process_port", "0",
          "--mixed_precision", "no", "--dynamo_backend", "no", "--use_deepspeed"]
# as in test_fsdp_cpu: the runs differ only in the order floats are summed
TOLERANCE = 1e-4
EXTRAS = {"full": [], "lora-merged-spo": ["--lora-r", "4", "--spo", "--spo-levels", "2"]}


def _deepspeed_unavailable() -> str | None:
    if not torch.distributed.is_available() or not torch.distributed.is_gloo_available():
        return "torch.distributed with gloo is not available"
    if importlib.util.find_spec("deepspeed") is None:
        return "deepspeed is not installed"
    return None


pytestmark = [pytest.mark.usefixtures("one_thread"),
              pytest.mark.skipif(_deepspeed_unavailable() is not None, reason=_deepspeed_unavailable() or "")]


def _args(model: str, data: Path, out: Path, cache: Path, batch_size: int, extra: list[str]) -> list[str]:
    return ["train", "--data", str(data), "--model", model, "--out", str(out), "--cache-dir", str(cache),
            "--batch-size", str(batch_size), "--max-length", "48", "--logging-steps", "1",
            "--lr", "1e-3", "--max-steps", "4", *extra]


def _weights(path: Path) -> dict[str, torch.Tensor]:
    from safetensors.torch import load_file

    return load_file(str(path))


def _max_difference(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> float:
    assert sorted(a) == sorted(b)
    return max((a[k] - b[k]).abs().max().item() for k in a)


@pytest.fixture(scope="module")
def one_process(tiny_model_dir, tmp_path_factory):
    """The data, and the one-process run of each set-up (shared by both ZeRO stages)."""
    root = tmp_path_factory.mktemp("deepspeed")
    data = root / "pairs.jsonl"
    data.write_text("".join(json.dumps(r) + "\n" for r in PAIRS))
    for name, extra in EXTRAS.items():
        assert main(_args(tiny_model_dir, data, root / name, root / "cache", 4, extra)) == 0
    return root


@pytest.mark.slow
@pytest.mark.parametrize("extra", list(EXTRAS))
@pytest.mark.parametrize("stage", ["2", "3"])
def test_two_process_zero_export_equals_the_one_process_export(tiny_model_dir, one_process, tmp_path,
                                                               stage, extra):
    one, zero = one_process / extra, tmp_path / f"zero{stage}"
    env = {**os.environ, "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false"}
    # the first run JIT-builds DeepSpeed's shared-memory comm op (about a minute)
    command = [sys.executable, "-m", "accelerate.commands.launch", *LAUNCH, "--zero_stage", stage,
               "-m", "realspo.cli",
               *_args(tiny_model_dir, one_process / "pairs.jsonl", zero, one_process / "cache", 2,
                      EXTRAS[extra])]
    done = subprocess.run(command, env=env, capture_output=True, text=True, timeout=400)
    assert done.returncode == 0, done.stderr[-3000:]
    assert "gathered the trained weights from 2 DEEPSPEED shards" in done.stderr  # really DeepSpeed

    base = _weights(Path(tiny_model_dir) / "model.safetensors")
    trained = _weights(one / "model.safetensors")
    assert _max_difference(trained, base) > 10 * TOLERANCE  # the runs did train
    assert _max_difference(_weights(zero / "model.safetensors"), trained) < TOLERANCE
    if "--spo" in EXTRAS[extra]:
        head = _weights(one / "spo_head.safetensors")
        assert _max_difference(_weights(zero / "spo_head.safetensors"), head) < TOLERANCE
    losses = [[r["loss"] for r in map(json.loads, (run / "metrics.jsonl").read_text().splitlines())]
              for run in (one, zero)]
    assert losses[0] == pytest.approx(losses[1], abs=1e-4)
