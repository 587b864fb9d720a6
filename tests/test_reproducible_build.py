"""The proving ground's SFT model is the same, bit for bit, whatever the thread settings.

The demo's committed numbers can only be reproduced from a fresh clone if the model it
builds first is the same file everywhere on this machine kind: built in two processes with
different ``OMP_NUM_THREADS``, the quick preset's weights must hash the same.
"""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

pytestmark = pytest.mark.slow

BUILD = """
import hashlib, pathlib, sys
from realspo.arms.plan import PRESETS
from realspo.proving_ground.sft import get_sft_model
preset = PRESETS["quick"]
path = get_sft_model(preset["world"], preset["sft"], cache_dir=sys.argv[1], progress=False)
print(hashlib.sha256((pathlib.Path(path) / "model.safetensors").read_bytes()).hexdigest())
"""


def _build(cache: str, threads: str) -> str:
    env = dict(os.environ, OMP_NUM_THREADS=threads, MKL_NUM_THREADS=threads)
    done = subprocess.run([sys.executable, "-c", BUILD, cache], env=env, capture_output=True,
                          text=True, check=True, timeout=600)
    return done.stdout.strip().splitlines()[-1]


def test_the_quick_sft_model_is_identical_across_thread_settings(tmp_path):
    one = _build(str(tmp_path / "one-thread"), "1")
    two = _build(str(tmp_path / "two-threads"), "2")
    assert len(one) == 64 and one == two
