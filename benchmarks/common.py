"""A small harness shared by the benchmarks: timing, peak memory, machine, BENCHMARKS.md.

Every benchmark runs realspo's path and the reference path in the same process, on the same
data, model, batch size and device, prints their ratio, and rewrites its own section of
``BENCHMARKS.md`` (between ``<!-- bench:NAME -->`` and ``<!-- /bench:NAME -->``), leaving the
other sections alone.
"""

from __future__ import annotations

import datetime
import os
import platform
import re
import resource
import shlex
import statistics
import sys
import time
import tracemalloc
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
BENCHMARKS_MD = REPO / "BENCHMARKS.md"
MD_HEADER = """# Benchmarks

Produced by the scripts in `benchmarks/` (all of them: `.venv/bin/python benchmarks/run_all.py`,
or `make bench`). Each section is rewritten by its own script; everything between a section's
markers is generated. Each benchmark runs realspo and the reference approach in the same
process, on the same data, model, batch size and device, and reports their ratio.
"""


@dataclass
class Timing:
    """Wall-clock seconds of ``repeats`` timed calls (after ``warmup`` untimed ones)."""

    seconds: list[float] = field(default_factory=list)

    @property
    def median(self) -> float:
        return statistics.median(self.seconds)

    @property
    def spread(self) -> str:
        """min-max of the repeats, for the table: shows how noisy the machine was."""
        return f"{min(self.seconds):.3g}-{max(self.seconds):.3g}"


def time_call(fn: Callable[[], Any], *, warmup: int = 1, repeats: int = 3) -> tuple[Timing, Any]:
    """Median-of-``repeats`` timing of ``fn()`` with ``time.perf_counter``; returns the last result."""
    result = None
    for _ in range(warmup):
        result = fn()
    timing = Timing()
    for _ in range(max(1, repeats)):
        start = time.perf_counter()
        result = fn()
        timing.seconds.append(time.perf_counter() - start)
    return timing, result


def numpy_peak_bytes(fn: Callable[[], Any]) -> tuple[int, Any]:
    """Peak bytes allocated through Python/numpy allocators during ``fn()`` (tracemalloc).

    Torch's CPU allocator is not traced; use :func:`max_rss_bytes` for whole-process peaks.
    """
    tracemalloc.start()
    try:
        result = fn()
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    return peak, result


def max_rss_bytes(children: bool = False) -> int:
    """Peak resident memory of this process (or of its finished children) so far."""
    who = resource.RUSAGE_CHILDREN if children else resource.RUSAGE_SELF
    kib = resource.getrusage(who).ru_maxrss  # KiB on Linux
    return int(kib) * 1024


def cuda_peak_bytes(fn: Callable[[], Any]) -> tuple[int, Any]:
    """Peak CUDA memory allocated by torch during ``fn()`` (0 without a GPU)."""
    import torch

    if not torch.cuda.is_available():
        return 0, fn()
    torch.cuda.synchronize()
    torch.cuda.reset_peak_memory_stats()
    result = fn()
    torch.cuda.synchronize()
    return int(torch.cuda.max_memory_allocated()), result


def set_threads(threads: int | None) -> int:
    """Set torch's intra-op threads (None: leave torch's default); returns the count in use."""
    import torch

    if threads is not None:
        torch.set_num_threads(threads)
    return torch.get_num_threads()


def quiet_training_run(threads: int | None) -> dict[str, str]:
    """Set up this process for in-process ``realspo train`` runs: ``threads`` torch threads,
    warnings and progress bars off, offline; returns :func:`machine` (taken once, at the start)."""
    import logging

    set_threads(threads)
    logging.disable(logging.WARNING)
    for name, value in (("TQDM_DISABLE", "1"), ("HF_HUB_OFFLINE", "1"), ("TOKENIZERS_PARALLELISM", "false")):
        os.environ.setdefault(name, value)
    return machine()


def _cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def _ram_gib() -> float:
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemTotal:"):
                return int(line.split()[1]) / 2**20
    except OSError:
        pass
    return float("nan")


def machine() -> dict[str, str]:
    """What the numbers were measured on (CPU, cores, RAM, versions, load at the start)."""
    import numpy
    import torch

    info = {
        "cpu": _cpu_model(),
        "cores": f"{len(os.sched_getaffinity(0))} usable of {os.cpu_count()}",
        "ram": f"{_ram_gib():.1f} GiB",
        "torch threads": str(torch.get_num_threads()),
        "python": platform.python_version(),
        "torch": torch.__version__,
        "numpy": numpy.__version__,
        "load average (1 min) at start": f"{os.getloadavg()[0]:.1f}",
    }
    if torch.cuda.is_available():
        info["gpu"] = torch.cuda.get_device_name(0)
    else:
        info["gpu"] = "none"
    return info


def command_line() -> str:
    """The command that ran this benchmark, relative to the repository root."""
    script = Path(sys.argv[0]).resolve()
    try:
        shown = str(script.relative_to(REPO))
    except ValueError:
        shown = str(script)
    return " ".join([".venv/bin/python", shown, *map(shlex.quote, sys.argv[1:])])


def fmt_bytes(n: float) -> str:
    for unit in ("B", "KiB", "MiB", "GiB"):
        if abs(n) < 1024 or unit == "GiB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return f"{n:.1f} GiB"


def markdown_table(headers: Sequence[str], rows: Sequence[Sequence[Any]]) -> str:
    lines = ["| " + " | ".join(map(str, headers)) + " |",
             "|" + "|".join("---" for _ in headers) + "|"]
    lines += ["| " + " | ".join(map(str, row)) + " |" for row in rows]
    return "\n".join(lines)


def section(title: str, *, sizes: dict[str, Any], table: str, verdict: str,
            notes: Sequence[str] = (), info: dict[str, str] | None = None) -> str:
    """The Markdown of one benchmark's section (without its markers)."""
    info = info or machine()
    parts = [
        f"## {title}",
        "",
        f"- Command: `{command_line()}`",
        f"- Date: {datetime.date.today().isoformat()}",
        "- Machine: " + "; ".join(f"{k}: {v}" for k, v in info.items()),
        "- Sizes: " + "; ".join(f"{k}: {v}" for k, v in sizes.items()),
        "",
        table,
        "",
        f"**Target:** {verdict}",
    ]
    if notes:
        parts += ["", *[f"- {n}" for n in notes]]
    return "\n".join(parts)


def write_section(name: str, body: str, path: Path = BENCHMARKS_MD) -> Path:
    """Replace (or append) the text between ``<!-- bench:NAME -->`` and ``<!-- /bench:NAME -->``."""
    from realspo.outputs import atomic_path

    start, end = f"<!-- bench:{name} -->", f"<!-- /bench:{name} -->"
    block = f"{start}\n{body.rstrip()}\n{end}"
    text = path.read_text() if path.exists() else MD_HEADER
    pattern = re.compile(re.escape(start) + r".*?" + re.escape(end), re.DOTALL)
    if pattern.search(text):
        text = pattern.sub(lambda _: block, text, count=1)
    else:
        text = text.rstrip() + "\n\n" + block + "\n"
    with atomic_path(path, overwrite=True) as tmp:
        tmp.write_text(text)
    return path
