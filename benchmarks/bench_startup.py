"""Benchmark 7: CLI startup, ``realspo --help`` and ``realspo train --help`` vs ``import torch``.

Help should come in a fraction of the time importing torch takes: listing the commands imports
no command module, and a command's options are built from its config dataclass and the
registries without loading torch or transformers (``tests/test_cli_startup.py`` checks that).
Each command runs in a fresh interpreter, as a user's shell starts it (``realspo``'s console
script is ``from realspo.cli import main; sys.exit(main())``, run here with this checkout's
``src`` first on ``PYTHONPATH``). The three commands alternate, ``--repeats`` times; the table
shows the median wall-clock time of each and its ratio to ``import torch``.

    .venv/bin/python benchmarks/bench_startup.py [--repeats 5] [--threads 1] [--src DIR] [--no-write]
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import REPO, machine, markdown_table, section, write_section  # noqa: E402

ENTRY = "import sys; from realspo.cli import main; sys.exit(main())"
COMMANDS = {
    "realspo --help": ["-c", ENTRY, "--help"],
    "realspo train --help": ["-c", ENTRY, "train", "--help"],
    'python -c "import torch"': ["-c", "import torch"],
}
REFERENCE = 'python -c "import torch"'
TARGET = 0.5  # help in under half the time of importing torch


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(allow_abbrev=False, description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("--repeats", type=int, default=5, help="timed runs of each command, alternating")
    p.add_argument("--threads", type=int, default=1,
                   help="OMP_NUM_THREADS of the timed processes (torch's threads once imported)")
    p.add_argument("--src", default=str(REPO / "src"),
                   help="the realspo source directory to time (another checkout's, to compare)")
    p.add_argument("--no-write", action="store_true", help="print results, leave BENCHMARKS.md alone")
    return p.parse_args(argv)


def time_command(args: list[str], env: dict[str, str]) -> float:
    """Wall-clock seconds of ``python ARGS`` in a fresh process (its output discarded)."""
    start = time.perf_counter()
    subprocess.run([sys.executable, *args], env=env, check=True, stdout=subprocess.DEVNULL,
                   stderr=subprocess.DEVNULL)
    return time.perf_counter() - start


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    info = machine()
    env = {**os.environ, "PYTHONPATH": args.src + os.pathsep + os.environ.get("PYTHONPATH", ""),
           "OMP_NUM_THREADS": str(args.threads)}
    for command in COMMANDS.values():  # one untimed run each: the files are in the page cache
        time_command(command, env)
    seconds: dict[str, list[float]] = {name: [] for name in COMMANDS}
    for _ in range(max(1, args.repeats)):
        for name, command in COMMANDS.items():
            seconds[name].append(time_command(command, env))
    median = {name: statistics.median(s) for name, s in seconds.items()}
    ratio = {name: median[name] / median[REFERENCE] for name in COMMANDS}
    for name in COMMANDS:
        print(f"{name}: median {median[name]:.3f} s, {ratio[name]:.2f}x import torch", flush=True)
    rows = [[f"`{name}`", f"{median[name]:.3f}", f"{min(seconds[name]):.3f}-{max(seconds[name]):.3f}",
             f"**{ratio[name]:.2f}x**" if name != REFERENCE else "1.00x"] for name in COMMANDS]
    table = markdown_table(["command", "seconds (median)", "range", "vs import torch"], rows)
    worst = max(ratio[name] for name in COMMANDS if name != REFERENCE)
    verdict = (f"help in under {TARGET:g}x the time of `import torch`: "
               f"{'met' if worst < TARGET else 'NOT met'} (slowest help {worst:.2f}x)")
    body = section(
        "7. CLI startup",
        sizes={"repeats": f"{args.repeats} per command, alternating, after one untimed run each",
               "source": os.path.relpath(args.src, REPO)},
        table=table, verdict=verdict, info=info,
        notes=[f"Each command is a fresh `python` process with OMP_NUM_THREADS={args.threads}; the "
               "time includes the interpreter's own start (about 0.02 s).",
               "`realspo CMD --help` imports only CMD's module; torch and transformers load when "
               "a command runs (`tests/test_cli_startup.py` checks every `CMD --help`).",
               "The machine is shared by several engineers (2 cores): absolute times are noisy; "
               "the commands alternate, so the ratios are fairer."],
    )
    print(body)
    if not args.no_write:
        print(f"wrote {write_section('startup', body)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
