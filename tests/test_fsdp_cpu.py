"""Sharded training on CPU: `accelerate launch` with FSDP2 over gloo, two processes, exports the
same model as one process trained with the same global batch (full fine-tune, and LoRA merged
with the SPO head)."""

from __future__ import annotations

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
          "--mixed_precision", "no", "--dynamo_backend", "no", "--use_fsdp", "--fsdp_version", "2"]
# AdamW's first steps move every weight by about --lr; the two runs differ only in the order
# floats are summed, which AdamW's normalised step can amplify for near-zero gradients.
TOLERANCE = 1e-4


def _fsdp2_unavailable() -> str | None:
    if not torch.distributed.is_available() or not torch.distributed.is_gloo_available():
        return "torch.distributed with gloo is not available"
    try:
        from torch.distributed.fsdp import fully_shard  # noqa: F401
    except ImportError:
        return "this torch has no FSDP2 (torch.distributed.fsdp.fully_shard)"
    return None


pytestmark = [pytest.mark.usefixtures("one_thread"),
              pytest.mark.skipif(_fsdp2_unavailable() is not None, reason=_fsdp2_unavailable() or "")]


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


@pytest.mark.slow
@pytest.mark.parametrize("extra", [[], ["--lora-r", "4", "--spo", "--spo-levels", "2"]],
                         ids=["full", "lora-merged-spo"])
def test_two_process_fsdp_export_equals_the_one_process_export(tiny_model_dir, tmp_path, extra):
    data = tmp_path / "pairs.jsonl"
    data.write_text("".join(json.dumps(r) + "\n" for r in PAIRS))
    one, sharded = tmp_path / "one", tmp_path / "fsdp"
    assert main(_args(tiny_model_dir, data, one, tmp_path / "cache", 4, extra)) == 0

    env = {**os.environ, "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false"}
    command = [sys.executable, "-m", "accelerate.commands.launch", *LAUNCH, "-m", "realspo.cli",
               *_args(tiny_model_dir, data, sharded, tmp_path / "cache", 2, extra)]
    done = subprocess.run(command, env=env, capture_output=True, text=True, timeout=240)
    assert done.returncode == 0, done.stderr[-3000:]
    assert "gathered the trained weights from 2 FSDP shards" in done.stderr  # really sharded

    base = _weights(Path(tiny_model_dir) / "model.safetensors")
    trained = _weights(one / "model.safetensors")
    assert _max_difference(trained, base) > 10 * TOLERANCE  # the runs did train
    # every weight (LoRA: merged into its base weight) as the one-process run has it, the
    # embedding (tied to the LM head) included
    assert _max_difference(_weights(sharded / "model.safetensors"), trained) < TOLERANCE
    if "--spo" in extra:
        head = _weights(one / "spo_head.safetensors")
        assert _max_difference(_weights(sharded / "spo_head.safetensors"), head) < TOLERANCE
    losses = [[r["loss"] for r in map(json.loads, (run / "metrics.jsonl").read_text().splitlines())]
              for run in (one, sharded)]
    assert losses[0] == pytest.approx(losses[1], abs=1e-4)


def test_fsdp1_on_cpu_is_refused_before_any_work(monkeypatch, tmp_path):
    from realspo.errors import ConfigError
    from realspo.training.config import TrainConfig
    from realspo.training.sharding import make_accelerator

    monkeypatch.setenv("WORLD_SIZE", "2")
    monkeypatch.setenv("ACCELERATE_USE_FSDP", "true")
    monkeypatch.setenv("FSDP_VERSION", "1")
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    cfg = TrainConfig(data="pairs.jsonl", model="m", out=str(tmp_path / "out"))
    with pytest.raises(ConfigError, match="--fsdp_version 2"):
        make_accelerator(cfg, tmp_path / "out")
