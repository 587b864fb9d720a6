"""A clean exit for processes started by ``torchrun`` / ``accelerate launch``."""

from __future__ import annotations

import atexit
import time

import torch.distributed as dist

SETTLE_S = 0.2  # how long the GIL is left free at exit for gloo's worker threads

_registered = False


def destroy_process_group_at_exit() -> None:
    """At exit, destroy the default process group and let its worker threads finish.

    gloo's worker threads free a finished collective's tensors after the caller has already
    woken, and need the GIL to do so. In a process that exits right after its last collective
    they can reach that point only once the interpreter is finalizing, and then the process
    aborts ("terminate called without an active exception", pytorch/pytorch#190489), turning a
    finished run into a failed one. Exit handlers run while the interpreter is still alive, so
    sleeping there (which releases the GIL) lets them finish. Registered once per process, for
    gloo only: NCCL has no such threads, and destroying an NCCL group while a failed peer left
    a collective pending can hang the process that should report the failure.
    """
    global _registered
    if _registered or not dist.is_available() or not dist.is_initialized():
        return
    if dist.get_backend() != "gloo":
        return
    atexit.register(_destroy)
    _registered = True


def _destroy() -> None:
    if dist.is_initialized():
        dist.destroy_process_group()
    time.sleep(SETTLE_S)
