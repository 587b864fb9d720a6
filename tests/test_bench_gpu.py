"""benchmarks/gpu.py runs its whole code path in --smoke mode (a tiny model, on CPU when there
is no GPU), so the one GPU command is known to work before a GPU machine is lent."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

SCRIPT = Path(__file__).resolve().parent.parent / "benchmarks" / "gpu.py"


@pytest.mark.slow
def test_gpu_script_smoke_mode_runs_every_benchmark(tmp_path):
    out = tmp_path / "gpu.json"
    benchmarks_md = SCRIPT.parent.parent / "BENCHMARKS.md"
    before = benchmarks_md.read_text()
    env = {**os.environ, "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false"}
    done = subprocess.run([sys.executable, str(SCRIPT), "--smoke", "--json", str(out)], env=env,
                          capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    results = json.loads(out.read_text())
    assert set(results) >= {"ceiling_tflops", "train LoRA r=16", "train full fine-tune", "spo", "spo all levels",
                            "embedding", "generation"}
    assert all(v > 0 for v in results["ceiling_tflops"].values())
    for name in ("train LoRA r=16", "train full fine-tune"):
        assert results[name]["tokens_per_s"] > 0 and 0 < results[name]["mfu"] < 1
    for name in ("spo", "spo all levels"):  # SPO at its defaults and with every level, against DPO
        assert results[name]["overhead"] > 0 and results[name]["step_s"] > 0
        # peak memory is torch.cuda.max_memory_allocated: measured on CUDA, None on a CPU
        cuda = results["train LoRA r=16"]["peak_bytes"] is not None
        assert (results[name]["memory"] > 0) if cuda else (results[name]["memory"] is None)
    assert "| SPO (LoRA, all levels) over DPO |" in done.stdout
    assert 0 < results["embedding"]["mfu"] < 1
    assert results["generation"]["realspo"] > 0 and results["generation"]["model.generate"] > 0
    assert "| generation: realspo / model.generate |" in done.stdout
    assert benchmarks_md.read_text() == before  # smoke mode writes nothing
