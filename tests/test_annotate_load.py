"""``realspo annotate`` never loses an acknowledged label: a real server process, several
annotators posting at once, a SIGKILL in the middle and a restart (the benchmark's driver,
``benchmarks/bench_annotate.py``, at a smaller size)."""

from __future__ import annotations

import importlib
import sys
from pathlib import Path

import pytest

BENCH_DIR = Path(__file__).resolve().parent.parent / "benchmarks"


def _bench():
    if str(BENCH_DIR) not in sys.path:
        sys.path.insert(0, str(BENCH_DIR))
    return importlib.import_module("bench_annotate")


@pytest.mark.slow
def test_a_sigkill_mid_load_loses_and_duplicates_nothing(tmp_path):
    result = _bench().run_load(tmp_path, annotators=5, labels=200, overlap=2)
    assert 0 < result.acknowledged_before_kill < 200  # the kill came in the middle
    assert result.lost == 0
    assert result.duplicated == 0
    # every task was labeled exactly once, acknowledged or (cut by the kill) at least saved
    assert len(result.journal_labels) == 200
    assert len(result.acknowledged) + result.replies_lost >= 200
