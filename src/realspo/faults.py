"""The one fault-injection hook of realspo, for the robustness tests.

The kill-and-resume tests (``tests/test_resume.py``) must SIGKILL a run *midway*, so the loops
that save progress (embedding, generation, training) call :func:`after_batch` once per batch.
It does nothing unless the environment variable ``REALSPO_TEST_SLOW_BATCH_S`` holds a number of
seconds to sleep, which slows a tiny test run down enough to be killed between two batches.
"""

from __future__ import annotations

import os
import time

SLOW_BATCH_ENV = "REALSPO_TEST_SLOW_BATCH_S"


def after_batch() -> None:
    """Sleep ``$REALSPO_TEST_SLOW_BATCH_S`` seconds if it is set (tests only); else return."""
    delay = os.environ.get(SLOW_BATCH_ENV)
    if delay:
        time.sleep(float(delay))
