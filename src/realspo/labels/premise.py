"""REAL's premise, measured on your labels: are similar pairs labeled less consistently?

REAL (arXiv 2409.17169) selects pairs by the similarity of their responses' embeddings, on
the premise that the more alike two responses are, the harder (and noisier) they are to
rank. With two or more annotators per pair their disagreement *is* the test. A pair's
**disagreement** is the chance that two of its annotators, drawn without replacement, gave
different answers (A, B or tie): ``1 - sum_c n_c (n_c - 1) / (n (n - 1))`` for ``n`` votes of
which ``n_c`` are ``c`` (0 or 1 with two annotators). The ``premise`` block holds:

* ``spearman``: the rank correlation of the pairs' ``similarity`` with their disagreement;
* ``deciles``: equal-count bins of similarity, ``{similarity_low, similarity_high, n,
  disagreement}`` (the mean disagreement in the bin);
* ``top_minus_bottom_fifth``: mean disagreement of the most similar fifth minus that of the
  least similar fifth, with ``mde`` = (z_0.975 + z_0.8) x its standard error, the smallest
  true difference this set would detect at 5% with 80% power (normal approximation);
* ``verdict``: one line for the user.

Every interval resamples prompts (:func:`realspo.labels.agreement.prompt_bootstrap`).
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from realspo.labels.aggregate import VOTES, votes_by_pair
from realspo.labels.agreement import prompt_bootstrap
from realspo.labels.answers import AnswerRow

BINS = 10


def disagreement(votes: Sequence[str]) -> float:
    """The chance that two of the votes, drawn without replacement, differ (NaN below two)."""
    n = len(votes)
    if n < 2:
        return float("nan")
    same = sum(c * (c - 1) for c in (list(votes).count(v) for v in VOTES))
    return 1.0 - same / (n * (n - 1))


def _spearman(x: np.ndarray, y: np.ndarray) -> float:
    from scipy.stats import spearmanr

    if len(x) < 3 or np.ptp(x) == 0 or np.ptp(y) == 0:
        return float("nan")
    return float(spearmanr(x, y).statistic)


def _fifths(x: np.ndarray, y: np.ndarray) -> float:
    """Mean y of the top fifth of x minus that of the bottom fifth (by rank)."""
    if len(x) < 5:
        return float("nan")
    order = np.argsort(x, kind="stable")
    k = len(x) // 5
    return float(y[order[-k:]].mean() - y[order[:k]].mean())


def decile_table(similarity: np.ndarray, values: np.ndarray, bins: int = BINS) -> list[dict]:
    """Equal-count bins by similarity rank with the mean value in each."""
    which = np.empty(len(similarity), dtype=np.int64)
    which[np.argsort(similarity, kind="stable")] = np.arange(len(similarity)) * bins // max(1, len(similarity))
    out = []
    for d in range(bins):
        inside = which == d
        if inside.any():
            out.append({"decile": d + 1, "similarity_low": float(similarity[inside].min()),
                        "similarity_high": float(similarity[inside].max()),
                        "n": int(inside.sum()), "disagreement": float(values[inside].mean())})
    return out


def _mde(se: float) -> float:
    from scipy.stats import norm

    return float((norm.ppf(0.975) + norm.ppf(0.8)) * se)


def verdict(difference: dict[str, Any]) -> str:
    """The one-line reading of the top-minus-bottom-fifth difference."""
    est, low, high = (100 * difference[k] for k in ("estimate", "ci_low", "ci_high"))
    if not np.isfinite(low):
        return "too few pairs with two or more answers to tell"
    if difference.get("se") == 0 and est == 0:
        return "the annotators' disagreement did not vary; nothing to relate to similarity"
    if low > 0:
        return f"similar pairs were disputed {est:.0f} points more often [{low:.0f}, {high:.0f}]"
    if high < 0:
        return f"similar pairs were disputed {-est:.0f} points less often [{low:.0f}, {high:.0f}]"
    return (f"no link detected ({est:+.0f} points [{low:.0f}, {high:.0f}]); this set could detect "
            f"{100 * difference['mde']:.0f} points")


def premise_report(rows: Sequence[AnswerRow], pair_ids: Sequence[str],
                   similarity: dict[str, float], prompt_of: dict[str, str],
                   seed: int = 0) -> dict[str, Any] | None:
    """The ``premise`` block, or None when no pair has a similarity and two or more votes.

    Args:
        rows: every answer.
        pair_ids: the pairs being labeled.
        similarity: pair id -> the pair's ``similarity`` (pairs without one are left out).
        prompt_of: pair id -> prompt id (the bootstrap's clusters).
        seed: seed of the bootstrap.

    Returns:
        ``{"pairs", "spearman", "deciles", "top_minus_bottom_fifth", "verdict"}``.
    """
    votes = votes_by_pair(rows)
    used = [p for p in pair_ids if p in similarity and len(votes.get(p, {})) >= 2]
    if not used:
        return None
    x = np.asarray([similarity[p] for p in used], dtype=np.float64)
    y = np.asarray([disagreement(list(votes[p].values())) for p in used])
    clusters = [prompt_of[p] for p in used]
    fifths = prompt_bootstrap(clusters, lambda idx: _fifths(x[idx], y[idx]), seed=seed)
    fifths["mde"] = _mde(fifths["se"]) if np.isfinite(fifths["se"]) else float("nan")
    return {"pairs": len(used), "mean_disagreement": float(y.mean()),
            "spearman": prompt_bootstrap(clusters, lambda idx: _spearman(x[idx], y[idx]), seed=seed),
            "deciles": decile_table(x, y), "top_minus_bottom_fifth": fifths,
            "verdict": verdict(fifths)}


def plot_premise(premise: dict[str, Any], path: str | os.PathLike) -> Path:
    """A PNG of disagreement by similarity decile (written atomically).

    Args:
        premise: the block :func:`premise_report` returns.
        path: the PNG to write.

    Returns:
        The path written.
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from realspo.outputs import atomic_path

    deciles = premise["deciles"]
    fig, ax = plt.subplots(figsize=(6, 3.5), dpi=100)
    ax.bar([d["decile"] for d in deciles], [d["disagreement"] for d in deciles], color="#4c72b0")
    ax.set_xlabel("similarity decile (1 = least similar pairs)")
    ax.set_ylabel("disagreement")
    ax.set_xticks([d["decile"] for d in deciles])
    ax.set_title(premise["verdict"], fontsize=8)
    fig.tight_layout()
    with atomic_path(path, overwrite=True) as tmp:
        fig.savefig(tmp, format="png")
    plt.close(fig)
    return Path(path)
