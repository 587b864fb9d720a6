"""Sharded training on CPU, two processes over gloo through `accelerate launch`: FSDP2, and
DeepSpeed ZeRO stages 2 and 3. Each exports the same model as one process trained with the
same global batch (full fine-tune, and LoRA merged with the SPO head). The DeepSpeed tests are
skipped where deepspeed is not importable (CI does not install it)."""

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
          "--mixed_precision", "no", "--dynamo_backend", "no"]
FSDP = ["--use_fsdp", "--fsdp_version", "2"]
# AdamW's first steps move every weight by about --lr; the two runs differ only in the order
# floats are summed, which AdamW's normalised step can amplify for near-zero gradients.
TOLERANCE = 1e-4
EXTRAS = {"full": [], "lora-merged-spo": ["--lora-r", "4", "--spo", "--spo-levels", "2"]}


def _unavailable(needs_deepspeed: bool) -> str | None:
    if not torch.distributed.is_available() or not torch.distributed.is_gloo_available():
        return "torch.distributed with gloo is not available"
    if needs_deepspeed:
        return None if importlib.util.find_spec("deepspeed") else "deepspeed is not installed"
    try:
        from torch.distributed.fsdp import fully_shard  # noqa: F401
    except ImportError:
        return "this torch has no FSDP2 (torch.distributed.fsdp.fully_shard)"
    return None


needs_fsdp2 = pytest.mark.skipif(_unavailable(False) is not None, reason=_unavailable(False) or "")
needs_deepspeed = pytest.mark.skipif(_unavailable(True) is not None, reason=_unavailable(True) or "")
pytestmark = pytest.mark.usefixtures("one_thread")


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
    """The data, and the one-process run of each set-up (shared by every sharded run)."""
    root = tmp_path_factory.mktemp("one-process")
    data = root / "pairs.jsonl"
    data.write_text("".join(json.dumps(r) + "\n" for r in PAIRS))
    for name, extra in EXTRAS.items():
        assert main(_args(tiny_model_dir, data, root / name, root / "cache", 4, extra)) == 0
    return root


def _launch_and_compare(tiny_model_dir: str, one_process: Path, out: Path, launch: list[str], extra: str,
                        kind: str, timeout: int) -> None:
    """Train with two processes (``launch``), then check the export and losses against the
    one-process run of ``extra``."""
    one = one_process / extra
    env = {**os.environ, "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false"}
    command = [sys.executable, "-m", "accelerate.commands.launch", *LAUNCH, *launch, "-m", "realspo.cli",
               *_args(tiny_model_dir, one_process / "pairs.jsonl", out, one_process / "cache", 2,
                      EXTRAS[extra])]
    done = subprocess.run(command, env=env, capture_output=True, text=True, timeout=timeout)
    assert done.returncode == 0, done.stderr[-3000:]
    assert f"gathered the trained weights from 2 {kind} shards" in done.stderr  # really sharded

    base = _weights(Path(tiny_model_dir) / "model.safetensors")
    trained = _weights(one / "model.safetensors")
    assert _max_difference(trained, base) > 10 * TOLERANCE  # the runs did train
    # every weight (LoRA: merged into its base weight) as the one-process run has it, the
    # embedding (tied to the LM head) included
    assert _max_difference(_weights(out / "model.safetensors"), trained) < TOLERANCE
    if "--spo" in EXTRAS[extra]:
        head = _weights(one / "spo_head.safetensors")
        assert _max_difference(_weights(out / "spo_head.safetensors"), head) < TOLERANCE
    losses = [[r["loss"] for r in map(json.loads, (run / "metrics.jsonl").read_text().splitlines())]
              for run in (one, out)]
    assert losses[0] == pytest.approx(losses[1], abs=1e-4)


@needs_fsdp2
@pytest.mark.slow
@pytest.mark.parametrize("extra", list(EXTRAS))
def test_two_process_fsdp_export_equals_the_one_process_export(tiny_model_dir, one_process, tmp_path, extra):
    _launch_and_compare(tiny_model_dir, one_process, tmp_path / "fsdp", FSDP, extra, "FSDP", timeout=240)


@needs_deepspeed
@pytest.mark.slow
@pytest.mark.parametrize("extra", list(EXTRAS))
@pytest.mark.parametrize("stage", ["2", "3"])
def test_two_process_zero_export_equals_the_one_process_export(tiny_model_dir, one_process, tmp_path,
                                                               stage, extra):
    # the first run JIT-builds DeepSpeed's shared-memory comm op (about a minute)
    _launch_and_compare(tiny_model_dir, one_process, tmp_path / f"zero{stage}",
                        ["--use_deepspeed", "--zero_stage", stage], extra, "DEEPSPEED", timeout=400)


@needs_fsdp2
def test_fsdp1_on_cpu_is_refused_before_any_work(monkeypatch, tmp_path):
    from realspo.errors import ConfigError
    from realspo.training.sharding import make_accelerator
    from realspo.training.train_config import TrainConfig

    monkeypatch.setenv("WORLD_SIZE", "2")
    monkeypatch.setenv("ACCELERATE_USE_FSDP", "true")
    monkeypatch.setenv("FSDP_VERSION", "1")
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    cfg = TrainConfig(data="pairs.jsonl", model="m", out=str(tmp_path / "out"))
    with pytest.raises(ConfigError, match="--fsdp_version 2"):
        make_accelerator(cfg, tmp_path / "out")
