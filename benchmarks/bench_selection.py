"""Benchmark 2: REAL pair selection, realspo's vectorised strategies vs a per-prompt loop.

realspo: :func:`realspo.selection.strategies.select_pairs` over all prompts (embeddings already in memory).

Reference (the approach of the REAL authors' code): a Python loop over prompts; per prompt a
double loop over response pairs, each cosine computed on its own (``torch`` cosine of two
rows, as the authors did), the min / max kept, and scikit-learn ``KMeans(n_clusters=2)`` per
prompt for ``centroid`` (initialised here from the easy pair with ``n_init=1`` so that both sides
return the same pairs; the authors used k-means++ with ``random_state=0``, about the same cost).
The loop is timed on a subset of prompts and compared per prompt.

Also times the same selection end to end through the CLI (``realspo select --data X.jsonl
--embeddings X.npy``; JSON parsing, embedding file loading and output writing included).

    .venv/bin/python benchmarks/bench_selection.py [--prompts 20000] [--threads 1] [--no-cli]
"""

from __future__ import annotations

import argparse
import gc
import itertools
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from common import (
    Timing,
    fmt_bytes,
    machine,
    markdown_table,
    max_rss_bytes,
    section,
    set_threads,
    time_call,
    write_section,
)

from realspo.selection.strategies import STRATEGIES as REGISTRY

# REAL's strategies (embeddings only); those beyond REAL have their own benchmarks (bench_design.py).
STRATEGIES = tuple(s.name for s in REGISTRY.values() if not s.needs and not s.joint)
TARGET_SECONDS = 5.0  # per strategy over 100,000 prompts
TARGET_PER_PROMPT = 50.0  # x faster per prompt than the loop
FULL_PROMPTS = 100_000


def make_embeddings(n_prompts: int, k: int, dim: int, seed: int = 0) -> np.ndarray:
    """(n_prompts * k, dim) float32 random unit rows, generated in chunks (bounded temporaries)."""
    rng = np.random.default_rng(seed)
    out = np.empty((n_prompts * k, dim), dtype=np.float32)
    step = max(1, (1 << 24) // dim)
    for lo in range(0, len(out), step):
        block = out[lo:lo + step]
        rng.standard_normal(block.shape, dtype=np.float32, out=block)
        block /= np.linalg.norm(block, axis=1, keepdims=True)
    return out


def _cosine(a: np.ndarray, b: np.ndarray) -> float:
    """One pair's cosine, computed on its own as the authors' loop did."""
    return float(torch.nn.functional.cosine_similarity(torch.tensor(a)[None], torch.tensor(b)[None]))


def loop_select_prompt(rows: np.ndarray, strategy: str, u: float) -> tuple[tuple[int, int], float]:
    """The reference for one prompt: (K, D) rows -> ((i, j) with i < j, cosine)."""
    from sklearn.cluster import KMeans

    k = len(rows)
    pairs = list(itertools.combinations(range(k), 2))
    if strategy == "random-pick-only":  # no similarities at all (not realspo's output)
        return pairs[min(int(u * len(pairs)), len(pairs) - 1)], float("nan")
    # Every pair's cosine, for every strategy: realspo's Selection reports them all.
    sims = {p: _cosine(rows[p[0]], rows[p[1]]) for p in pairs}
    if strategy == "random":  # the r-th pair for a uniform u, as realspo draws it
        pair = pairs[min(int(u * len(pairs)), len(pairs) - 1)]
        return pair, sims[pair]
    easy = min(pairs, key=sims.__getitem__)
    if strategy == "easy":
        return easy, sims[easy]
    if strategy == "hard":
        hard = max(pairs, key=sims.__getitem__)
        return hard, sims[hard]
    x = rows.astype(np.float64)
    km = KMeans(n_clusters=2, init=x[list(easy)], n_init=1, max_iter=100).fit(x)
    picks = []
    for c in range(2):
        members = np.flatnonzero(km.labels_ == c)
        if len(members) == 0:
            return easy, sims[easy]
        d = ((x[members] - km.cluster_centers_[c]) ** 2).sum(1)
        picks.append(int(members[np.flatnonzero(d <= d.min() + 1e-6)[0]]))  # ties -> lower index
    pair = (min(picks), max(picks))
    return (pair, sims[pair]) if pair in sims else (easy, sims[easy])


def loop_select(emb: np.ndarray, k: int, n_prompts: int, strategy: str, seed: int = 0):
    """The reference over the first ``n_prompts`` prompts of K responses each, then ranked
    across them as realspo ranks. Returns {group: (i, j)} and the ranked group order."""
    uniforms = np.random.default_rng(seed).random(n_prompts)
    chosen, sims = {}, np.empty(n_prompts)
    for g in range(n_prompts):
        chosen[g], sims[g] = loop_select_prompt(emb[g * k:(g + 1) * k], strategy, uniforms[g])
    order = np.argsort(-sims if strategy == "hard" else sims, kind="stable")
    return chosen, order


def as_pairs(sel, limit: int | None = None) -> dict[int, tuple[int, int]]:
    """{group: (index_a, index_b)} of a :class:`realspo.selection.strategies.Selection` (groups < limit)."""
    return {int(g): (int(a), int(b)) for g, a, b in zip(sel.group_index, sel.index_a, sel.index_b, strict=True)
            if limit is None or g < limit}


def write_cli_inputs(emb: np.ndarray, k: int, directory: Path) -> tuple[Path, Path]:
    """A multi-completion JSONL file (one row per prompt, K short scored responses) and the
    matching ``.npy`` embeddings file."""
    data, npy = directory / "pool.jsonl", directory / "pool.npy"
    rng = np.random.default_rng(1)
    with open(data, "w") as fh:
        for g in range(len(emb) // k):
            scores = rng.integers(1, 11, size=k).tolist()
            row = {"prompt": f"Question {g}: how should I answer this?",
                   "completions": [{"response": f"Answer {j} to question {g}.", "score": s}
                                   for j, s in enumerate(scores)]}
            fh.write(json.dumps(row) + "\n")
    np.save(npy, emb)
    return data, npy


def _realspo_command() -> list[str]:
    script = Path(sys.executable).parent / "realspo"
    return [str(script)] if script.exists() else [sys.executable, "-m", "realspo.cli"]


def run_cli(data: Path, npy: Path, out: Path, strategy: str, threads: int) -> tuple[float, str]:
    """Wall seconds of one ``realspo select`` process and its printed summary."""
    env = dict(os.environ, OMP_NUM_THREADS=str(threads), HF_HUB_OFFLINE="1")
    cmd = [*_realspo_command(), "select", "--data", str(data), "--embeddings", str(npy),
           "--strategy", strategy, "--out", str(out), "--overwrite"]
    start = time.perf_counter()
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True)
    seconds = time.perf_counter() - start
    if proc.returncode != 0:
        raise RuntimeError(f"realspo select failed ({proc.returncode}): {proc.stderr[-2000:]}")
    return seconds, proc.stdout


def stage_times(data: str, npy: str, out: str, strategy: str) -> dict[str, float]:
    """Seconds per stage of ``realspo.pipeline.select.select_from_config`` (the CLI's code path), by wrapping each stage."""
    import realspo.embeddings.embed as embeddings
    import realspo.pipeline.select as command

    seconds: dict[str, float] = {}

    def timed(name, fn):
        def wrapper(*a, **kw):
            start = time.perf_counter()
            try:
                return fn(*a, **kw)
            finally:
                seconds[name] = seconds.get(name, 0.0) + time.perf_counter() - start
        return wrapper

    for name in ("load_groups", "response_keys", "count_eligible", "select_pairs", "build_rows",
                 "write_rows"):
        setattr(command, name, timed(name, getattr(command, name)))
    embeddings.load_embeddings = timed("load_embeddings", embeddings.load_embeddings)
    cfg = command.SelectConfig(data=data, out=out, embeddings=npy, strategy=strategy, overwrite=True)
    start = time.perf_counter()
    command.select_from_config(cfg)
    seconds["total (in process)"] = time.perf_counter() - start
    return seconds


def time_cli(data: Path, npy: Path, out: Path, n: int, k: int, strategy: str, threads: int) -> list[str]:
    """Time ``realspo select --embeddings`` as a process, then its stages in another; report lines."""
    cli_seconds, summary = run_cli(data, npy, out, strategy, threads)
    cli_rss = max_rss_bytes(children=True)
    child = subprocess.run([sys.executable, __file__, "--threads", str(threads), "--stages-child",
                            str(data), str(npy), str(out), strategy],
                           capture_output=True, text=True, env=dict(os.environ, HF_HUB_OFFLINE="1"))
    stages = json.loads(child.stdout.strip().splitlines()[-1]) if child.returncode == 0 else {}
    stage_text = ", ".join(f"{name} {s:.2f} s" for name, s in stages.items()) or "(failed)"
    print(f"realspo select --embeddings ({strategy}, {n} prompts): {cli_seconds:.1f} s wall, peak RSS "
          f"{fmt_bytes(cli_rss)}; stages: {stage_text}")
    print(summary.strip().splitlines()[2] if summary else "")
    return [
        f"End to end through the CLI: `realspo select --data pool.jsonl --embeddings pool.npy "
        f"--strategy {strategy} --out pairs.jsonl` on {n} prompts x {k} short scored responses "
        f"(multi-completion JSONL, {fmt_bytes(data.stat().st_size)}; .npy "
        f"{fmt_bytes(npy.stat().st_size)}, just written, so likely in the OS page cache): "
        f"**{cli_seconds:.1f} s** wall for the process (interpreter start and imports included), "
        f"peak RSS {fmt_bytes(cli_rss)}.",
        f"CLI stages, timed in a second fresh process: {stage_text}.",
    ]


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(allow_abbrev=False, description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("--prompts", type=int, default=20_000,
                   help=f"prompts (the issue's size is {FULL_PROMPTS}: 6.5 GB of embeddings)")
    p.add_argument("--k", type=int, default=8, help="responses per prompt")
    p.add_argument("--dim", type=int, default=2048, help="embedding dimension")
    p.add_argument("--loop-prompts", type=int, default=500, help="prompts the reference loop runs on")
    p.add_argument("--repeats", type=int, default=3, help="timed runs per side and strategy (median reported)")
    p.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's)")
    p.add_argument("--cli", action=argparse.BooleanOptionalAction, default=True,
                   help="also time `realspo select --embeddings` end to end")
    p.add_argument("--cli-strategy", default="easy", choices=STRATEGIES)
    p.add_argument("--workdir", default=None,
                   help="directory for the CLI's temporary input files (default: the system's)")
    p.add_argument("--write", action=argparse.BooleanOptionalAction, default=True,
                   help="update the selection section of BENCHMARKS.md")
    p.add_argument("--stages-child", nargs=4, metavar=("DATA", "NPY", "OUT", "STRATEGY"),
                   help=argparse.SUPPRESS)  # internal: time the CLI's stages in a fresh process
    return p.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    threads = set_threads(args.threads)
    if args.stages_child:
        print(json.dumps(stage_times(*args.stages_child)))
        return 0
    from realspo.selection.strategies import select_pairs

    info = machine()
    n, k, dim = args.prompts, args.k, args.dim
    n_loop = min(args.loop_prompts, n)
    start = time.perf_counter()
    emb = make_embeddings(n, k, dim)
    sizes = np.full(n, k)
    base_rss = max_rss_bytes()
    print(f"{n} prompts x {k} responses x {dim} float32 = {fmt_bytes(emb.nbytes)} generated in "
          f"{time.perf_counter() - start:.1f} s; torch threads {threads}", flush=True)

    rows, equal, results = [], {}, {}
    for strategy in STRATEGIES:
        sel = select_pairs(emb, sizes, strategy)  # warm-up
        loop_select(emb, k, min(5, n_loop), strategy)  # warm-up (imports, first calls)
        timing, loop_timing, ratios = Timing(), Timing(), []
        for _ in range(max(1, args.repeats)):  # interleaved: drifting load hits both sides alike
            one, sel = time_call(lambda s=strategy: select_pairs(emb, sizes, s), warmup=0, repeats=1)
            other, (loop_pairs, _) = time_call(lambda s=strategy: loop_select(emb, k, n_loop, s),
                                               warmup=0, repeats=1)
            timing.seconds += one.seconds
            loop_timing.seconds += other.seconds
            ratios.append((other.median / n_loop) / (one.median / n))
        extra_rss = max(0, max_rss_bytes() - base_rss)
        equal[strategy] = as_pairs(sel, n_loop) == loop_pairs
        ours_pp, loop_pp = timing.median / n, loop_timing.median / n_loop
        ratio = float(np.median(ratios))
        full = timing.median * FULL_PROMPTS / n
        results[strategy] = (full, ratio, ours_pp)
        rows.append([strategy, f"{timing.median:.2f}", timing.spread,
                     f"{full:.2f}" + ("" if n == FULL_PROMPTS else " (scaled)"),
                     f"{ours_pp * 1e6:.2f}", f"{loop_pp * 1e6:.0f}",
                     f"{ratio:.0f}x ({min(ratios):.0f}-{max(ratios):.0f})",
                     "yes" if equal[strategy] else "NO", fmt_bytes(extra_rss)])
        print(f"  {strategy}: realspo {timing.median:.2f} s ({ours_pp * 1e6:.2f} us/prompt), loop "
              f"{loop_pp * 1e6:.0f} us/prompt -> {ratio:.0f}x; same pairs: {equal[strategy]}",
              flush=True)
    pick_timing, _ = time_call(lambda: loop_select(emb, k, n_loop, "random-pick-only"), warmup=1,
                               repeats=args.repeats)
    pick_pp = pick_timing.median / n_loop
    print(f"  (loop random pick without any cosine: {pick_pp * 1e6:.1f} us/prompt)")
    table = markdown_table(
        ["strategy", f"realspo s ({n} prompts)", "range s", f"realspo s per {FULL_PROMPTS}",
         "realspo us/prompt", f"loop us/prompt ({n_loop} prompts)", "per-prompt speed-up (range)",
         f"same pairs on the {n_loop}", "peak RSS over input"], rows)
    print(table)

    cli_lines: list[str] = []
    if args.cli:
        with tempfile.TemporaryDirectory(prefix="bench-select-", dir=args.workdir) as tmp:
            start = time.perf_counter()
            data, npy = write_cli_inputs(emb, k, Path(tmp))
            print(f"CLI inputs written in {time.perf_counter() - start:.1f} s ({fmt_bytes(data.stat().st_size)}"
                  f" JSONL, {fmt_bytes(npy.stat().st_size)} .npy)", flush=True)
            del emb  # the CLI processes load their own copy; do not hold two on a shared machine
            gc.collect()
            cli_lines = time_cli(data, npy, Path(tmp) / "pairs.jsonl", n, k, args.cli_strategy, threads)

    if args.write:
        slowest = max(results, key=lambda s: results[s][0])
        fastest_ratio = min(r for _, r, _ in results.values())
        time_ok = all(full < TARGET_SECONDS for full, _, _ in results.values())
        ratio_ok = fastest_ratio >= TARGET_PER_PROMPT
        scaled = "" if n == FULL_PROMPTS else f" (scaled linearly from {n} prompts)"
        verdict = (f"each strategy < {TARGET_SECONDS:.0f} s per {FULL_PROMPTS} prompts: "
                   f"**{'met' if time_ok else 'not met'}** (slowest: {slowest}, "
                   f"{results[slowest][0]:.2f} s{scaled}); >= {TARGET_PER_PROMPT:.0f}x per prompt "
                   f"vs the loop: **{'met' if ratio_ok else 'not met'}** (lowest: {fastest_ratio:.0f}x)")
        sizes_md = {
            "embeddings": f"{n} prompts x {k} responses, dim {dim}, float32 random unit vectors "
                          f"({fmt_bytes(n * k * dim * 4)}) in memory, no duplicate texts",
            "reference loop": f"first {n_loop} prompts",
            "repeats": f"{args.repeats} per side after a warm-up, realspo and loop alternating; "
                       "medians reported; speed-up = median of the per-repeat ratios",
        }
        notes = [
            "Times are the selection step over every prompt, budget unset (one pair per "
            "prompt, ranked across the dataset); the loop also ranks its prompts.",
            "The loop computes each cosine on its own with torch, as the authors' code did "
            "(`cosine_similarity` of two single-row tensors), and fits scikit-learn KMeans per "
            "prompt for centroid. For every strategy the loop computes every pair's cosine, "
            "because realspo's `Selection` reports them all (`all_similarities`, printed in the "
            "CLI summary). A loop that only picks a random pair and computes no cosine at all "
            f"takes {pick_pp * 1e6:.1f} us/prompt, against realspo's "
            f"{results['random'][2] * 1e6:.1f} us/prompt for random with every cosine.",
            "'same pairs': realspo's pair for each of the loop's prompts equals the loop's.",
            "'peak RSS over input': the process's peak resident memory above what it held "
            "after generating the embeddings (a high-water mark, so it only grows down the table).",
            *cli_lines,
            "The machine is shared by several engineers (2 cores): absolute times are noisy.",
        ]
        write_section("selection", section("2. Selection math (REAL strategies)", sizes=sizes_md,
                                           table=table, verdict=verdict, notes=notes, info=info))
    return 0 if all(equal[s] for s in ("easy", "hard", "centroid")) else 1


if __name__ == "__main__":
    sys.exit(main())
