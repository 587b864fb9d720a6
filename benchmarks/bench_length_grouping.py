"""Benchmark 6: length-grouped batches, ``realspo train --group-by-length`` vs the plain shuffle.

The same model, settings and kind of pairs as benchmark 3 (``bench_training.py``), with more
pairs so that the sampler has room to group them (``transformers``' length-grouped order cuts
each epoch into mega-batches of up to 50 batches; with fewer pairs the mega-batches shrink
to a quarter of the epoch). Both runs train one epoch on every pair, so the tokens are the same
and the tokens/s ratio is the inverse ratio of the epoch times. Also reported: how many tokens
the padded batches hold (``2 x pairs x longest sequence`` per batch), a deterministic measure
of the padding the order causes, independent of the machine's load.

All runs happen in this process, alternating, ``--repeats`` times; the ratio reported is the
median over repeats of (grouped tokens/s / plain tokens/s) of the same repeat.

    .venv/bin/python benchmarks/bench_length_grouping.py [--pairs 128] [--repeats 3] [--no-write]
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_training import add_workload_args, make_workload, run_realspo, workload_sizes  # noqa: E402
from common import markdown_table, quiet_training_run, section, write_section  # noqa: E402

CONFIGS = {"shuffled (default)": {}, "--group-by-length": {"group_by_length": True}}
SHARED_CACHE = "ref-cache"  # one reference pass for all runs (setup is not timed here)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(allow_abbrev=False, description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    add_workload_args(p, pairs=128)
    return p.parse_args(argv)


def padded_tokens(work: Path, args: argparse.Namespace, options: dict) -> tuple[int, int]:
    """(tokens in the padded batches, real tokens) of one epoch in the order ``options`` give."""
    from realspo.models import load_tokenizer
    from realspo.training.data import EpochShuffleSampler, PairDataset, read_pairs

    data = PairDataset(read_pairs(str(work / "pairs.jsonl")), load_tokenizer(str(work / "model")),
                       args.max_length, "keep_end")
    lengths = data.lengths()
    sampler = EpochShuffleSampler(len(data), args.seed, batch_size=args.batch_size,
                                  lengths=lengths if options.get("group_by_length") else None)
    order = list(sampler)
    batches = [order[k:k + args.batch_size] for k in range(0, len(order), args.batch_size)]
    padded = sum(2 * len(b) * max(lengths[i] for i in b) for b in batches)
    real = sum(len(t.prompt_ids) * 2 + len(t.chosen_ids) + len(t.rejected_ids) for t in data.tokens)
    return padded, real


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    info = quiet_training_run(args.threads)
    runs: dict[str, list[dict]] = {name: [] for name in CONFIGS}
    with tempfile.TemporaryDirectory(prefix="bench-grouping-") as tmp:
        work = Path(tmp)
        facts = make_workload(work, args)
        padding = {name: padded_tokens(work, args, options) for name, options in CONFIGS.items()}
        for _ in range(max(1, args.repeats)):
            for name, options in CONFIGS.items():
                result = run_realspo(work, args, {**options, "cache_dir": str(work / SHARED_CACHE)})
                runs[name].append(result)
                print(f"  {name}: {result['tokens_per_s']:.0f} tokens/s", flush=True)
    base_name, grouped_name = CONFIGS
    base = runs[base_name]
    ratios = {name: float(np.median([r["tokens_per_s"] / b["tokens_per_s"]
                                     for r, b in zip(runs[name], base, strict=True)])) for name in CONFIGS}
    rows = [[name, f"{np.median([r['tokens_per_s'] for r in runs[name]]):.0f}",
             f"{min(r['tokens_per_s'] for r in runs[name]):.0f}-{max(r['tokens_per_s'] for r in runs[name]):.0f}",
             f"{padding[name][0] / padding[name][1]:.2f}",
             f"**{ratios[name]:.2f}x**" if name == grouped_name else f"{ratios[name]:.2f}x"]
            for name in CONFIGS]
    table = markdown_table(["order", "tokens/s (median)", "range", "padded batch tokens / real tokens",
                            "tokens/s vs shuffled"], rows)
    ratio = ratios[grouped_name]
    print(table)
    print(f"--group-by-length: {ratio:.2f}x the tokens/s of the shuffled order")
    if args.write:
        sizes = workload_sizes(args, facts)
        sizes["repeats"] = f"{args.repeats} per order, alternating; the ratio is the median of per-repeat ratios"
        notes = [
            "Tokens/s counts the non-padding tokens of the pairs each step ran, over the steps after the "
            "first, from the end of one optimizer step to the end of the next (as in benchmark 3).",
            "Padded batch tokens: each batch as 2 x its pairs x its longest sequence, the size of a plainly "
            "padded batch. realspo's step already groups the 2 x batch sequences by length inside a "
            "batch, so part of the padding the plain order causes was already avoided; the ratio measures "
            "what grouping at the sampler adds on top.",
            "Where the ratio is near 1x while the padding column falls, the step's own grouping had "
            "already removed the padding that cost time; grouping at the sampler then mainly evens out "
            "the memory a step needs (and puts the longest batch first, so an out-of-memory shows at once).",
            "Grouping changes which pairs share a step (still shuffled per epoch, in groups of up to 50 "
            "batches); it is off by default, as in `transformers.Trainer` (`group_by_length`).",
            "The machine is shared by several engineers (2 cores): absolute times are noisy; the runs "
            "alternate and the ratio is taken within each repeat.",
        ]
        verdict = (f"none set (an idea of the performance issue, measured): `--group-by-length` runs at "
                   f"**{ratio:.2f}x** the tokens/s of the shuffled order")
        write_section("length_grouping", section("6. Length-grouped batches", sizes=sizes, table=table,
                                                 verdict=verdict, notes=notes, info=info))
    return 0


if __name__ == "__main__":
    sys.exit(main())
