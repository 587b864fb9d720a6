"""``realspo select``: choose which response pairs to label (or train on), following REAL.

Argument parsing and the printed summary; the pipeline (load -> embed -> score -> select ->
write) is :func:`realspo.pipeline.select.select_from_config`, its options
:class:`realspo.pipeline.select_config.SelectConfig`.
"""

from __future__ import annotations

import argparse
from typing import TYPE_CHECKING

import numpy as np

from realspo.config import add_options, resolve
from realspo.pipeline.select_config import SelectConfig
from realspo.selection.strategies import SKIP_FEW_DISTINCT

if TYPE_CHECKING:
    from realspo.pipeline.select import SelectResult

EPILOG = """\
examples:
  realspo select --data hh.jsonl --model ./my-sft-model --strategy easy --budget 0.5 --out pairs.jsonl
  realspo select --data pool.jsonl --embedder st:/models/all-MiniLM-L6-v2 --budget 200 --out pairs.parquet
  realspo select --data pool.jsonl --embeddings emb.npy --strategy centroid --out pairs.jsonl
  realspo select --data pool.jsonl --model ./sft --policy ./round1 --strategy margin --budget 200 --out pairs.jsonl
  realspo select --data pool.jsonl --embeddings emb.npy --reward-model ./rm --strategy reward-gap --out pairs.jsonl
  realspo select --data pool.jsonl --embeddings emb.npy --strategy design --budget 0.1 --out pairs.jsonl
"""


# What the non-REAL strategies rank by, for the summary (REAL's strategies: the similarity).
RANKED_BY = {"margin": "|margin|", "margin-large": "|margin|", "design": "gain",
             "reward-gap": "reward gap", "reward-uncertain": "|p - 1/2|"}


def _quantile_line(label: str, values: np.ndarray) -> str:
    if values.size == 0:
        return f"{label:<10}" + "       -" * 5
    qs = np.quantile(values.astype(np.float64), [0.0, 0.25, 0.5, 0.75, 1.0])
    return f"{label:<10}" + "".join(f"{q:8.4f}" for q in qs)


def format_summary(result: SelectResult, cfg: SelectConfig) -> str:
    """The short report printed after a run: counts, drops, similarity quantiles."""
    sel = result.selection
    skipped = sel.skipped.get(SKIP_FEW_DISTINCT, 0)
    budget = "all prompts" if cfg.budget is None else f"budget {cfg.budget}"
    lines = [
        f"format: {result.format} ({'auto-detected' if cfg.format == 'auto' else 'given'})",
        *(f"input rows skipped: {n} ({reason})" for reason, n in result.rows_skipped.items()),
        f"prompts read: {result.prompts}; skipped {skipped} ({SKIP_FEW_DISTINCT})",
        *([f"responses left out: {result.unfinished_dropped} (cut at the generation limit, "
           "--drop-unfinished)"] if cfg.drop_unfinished else []),
        f"pairs selected: {len(sel)} of {result.eligible} eligible prompts "
        f"(strategy {cfg.strategy}, {budget})",
    ]
    for reason, n in result.dropped.items():
        lines.append(f"pairs dropped: {n} ({reason})")
    lines.append(f"pairs written: {len(result.rows)} {result.kind} rows -> {result.out}")
    lines.append("similarity" + "".join(f"{h:>8}" for h in ("min", "25%", "50%", "75%", "max")))
    lines.append(_quantile_line("selected", sel.similarity))
    lines.append(_quantile_line("all pairs", sel.all_similarities))
    if sel.key is not None and cfg.strategy in RANKED_BY:
        lines.append(_quantile_line(RANKED_BY[cfg.strategy], sel.key))
    return "\n".join(lines)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.epilog = EPILOG
    add_options(parser, SelectConfig)


def run(args: argparse.Namespace) -> int:
    from realspo.pipeline.select import is_main_process, select_from_config

    cfg = resolve(SelectConfig, args)
    result = select_from_config(cfg)
    if is_main_process():
        print(format_summary(result, cfg))
    return 0
