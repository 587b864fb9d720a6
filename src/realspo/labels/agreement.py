"""How much annotators agree, with 95% intervals that resample prompts.

* ``krippendorff_alpha``: Krippendorff's alpha, nominal, over the answers A, B and tie (a skip
  is a missing value), from the `krippendorff` package;
* ``cohen_kappa``: Cohen's kappa for every two annotators over the pairs both answered
  (scikit-learn's ``cohen_kappa_score``);
* ``gold_accuracy``: each annotator's share of right answers on the gold pairs;
* ``agreement_with_aggregate``: each annotator's share of answers equal to the aggregate label
  (pairs the aggregate leaves contested aside).

Pairs of one prompt are not independent (one prompt's responses are alike), so every
interval comes from :func:`prompt_bootstrap`: draw the prompts with replacement, take all
their pairs, recompute; the 2.5th and 97.5th percentiles of the resampled values.
"""

from __future__ import annotations

import itertools
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np

from realspo.labels.aggregate import VOTES, Aggregate, votes_by_pair
from realspo.labels.answers import AnswerRow

N_RESAMPLES = 1000


def prompt_bootstrap(clusters: Sequence[str], statistic: Callable[[np.ndarray], float],
                     n_resamples: int = N_RESAMPLES, seed: int = 0) -> dict[str, Any]:
    """A statistic of items with its prompt-resampled 95% interval.

    Args:
        clusters: the prompt of each item (items of one prompt are drawn together).
        statistic: maps an index array (items, repeats allowed) to a number (NaN: undefined).
        n_resamples: bootstrap draws.
        seed: seed of the draws.

    Returns:
        ``{"estimate", "ci_low", "ci_high", "se", "n"}`` (NaN where undefined; ``n`` items).
    """
    clusters = np.asarray([str(c) for c in clusters])
    names, which = np.unique(clusters, return_inverse=True)
    members = [np.flatnonzero(which == k) for k in range(len(names))]
    estimate = float(statistic(np.arange(len(clusters)))) if len(clusters) else float("nan")
    rng = np.random.default_rng(seed)
    values = []
    for _ in range(n_resamples if len(names) > 1 else 0):
        drawn = rng.integers(0, len(names), size=len(names))
        values.append(statistic(np.concatenate([members[k] for k in drawn])))
    finite = np.asarray([v for v in values if np.isfinite(v)], dtype=np.float64)
    nan = float("nan")
    if finite.size < 2 or not np.isfinite(estimate):
        return {"estimate": estimate, "ci_low": nan, "ci_high": nan, "se": nan, "n": len(clusters)}
    low, high = np.quantile(finite, [0.025, 0.975])
    return {"estimate": estimate, "ci_low": float(low), "ci_high": float(high),
            "se": float(finite.std(ddof=1)), "n": len(clusters)}


def vote_counts(votes: dict[str, dict[str, str]], pair_ids: Sequence[str]) -> np.ndarray:
    """(P, 3) counts of A, B and tie votes per pair."""
    return np.asarray([[list(votes.get(p, {}).values()).count(v) for v in VOTES]
                       for p in pair_ids], dtype=np.float64)


def krippendorff_alpha(counts: np.ndarray) -> float:
    """Nominal alpha from (P, 3) vote counts; NaN when it is undefined (fewer than two votes on
    any pair, or a single value throughout)."""
    counts = counts[counts.sum(axis=1) >= 2]
    if len(counts) == 0 or np.count_nonzero(counts.sum(axis=0)) < 2:
        return float("nan")
    import krippendorff

    return float(krippendorff.alpha(value_counts=counts, level_of_measurement="nominal"))


def _kappa(first: Sequence[str], second: Sequence[str]) -> float:
    from sklearn.metrics import cohen_kappa_score

    if len(first) < 2 or len(set(first) | set(second)) < 2:
        return float("nan")
    with np.errstate(divide="ignore", invalid="ignore"):
        return float(cohen_kappa_score(first, second, labels=list(VOTES)))


def _share(hits: np.ndarray) -> Callable[[np.ndarray], float]:
    return lambda idx: float(hits[idx].mean()) if len(idx) else float("nan")


def agreement_report(rows: Sequence[AnswerRow], pair_ids: Sequence[str],
                     prompt_of: dict[str, str], aggregates: Sequence[Aggregate],
                     gold: dict[str, str], seed: int = 0) -> dict[str, Any]:
    """The ``agreement`` block of the label report.

    Args:
        rows: every answer (gold pairs' included).
        pair_ids: the pairs being labeled (not the gold ones), in order.
        prompt_of: pair id -> prompt id (the bootstrap's clusters; gold pairs included).
        aggregates: the aggregate of each of ``pair_ids``.
        gold: gold pair id -> its known answer.
        seed: seed of the bootstrap.

    Returns:
        ``{"krippendorff_alpha", "cohen_kappa": [...], "gold_accuracy": {...},
        "agreement_with_aggregate": {...}}``, each statistic with its interval.
    """
    votes = votes_by_pair(rows)
    multi = [p for p in pair_ids if len(votes.get(p, {})) >= 2]
    counts = vote_counts(votes, multi)
    report: dict[str, Any] = {
        "krippendorff_alpha": prompt_bootstrap([prompt_of[p] for p in multi],
                                               lambda idx: krippendorff_alpha(counts[idx]),
                                               seed=seed)}
    annotators = sorted({r.annotator for r in rows})
    kappas = []
    for a, b in itertools.combinations(annotators, 2):
        shared = [p for p in pair_ids if a in votes.get(p, {}) and b in votes.get(p, {})]
        if len(shared) < 2:
            continue
        first = np.asarray([votes[p][a] for p in shared])
        second = np.asarray([votes[p][b] for p in shared])
        kappas.append({"annotators": [a, b], **prompt_bootstrap(
            [prompt_of[p] for p in shared], lambda idx, f=first, s=second: _kappa(f[idx], s[idx]),
            seed=seed)})
    report["cohen_kappa"] = kappas
    outcome = {p: g.outcome for p, g in zip(pair_ids, aggregates, strict=True)}
    gold_accuracy, with_aggregate = {}, {}
    for who in annotators:
        mine = [r for r in rows if r.annotator == who and r.answer in VOTES]
        on_gold = [r for r in mine if r.pair_id in gold]
        if on_gold:
            hits = np.asarray([r.answer == gold[r.pair_id] for r in on_gold], dtype=np.float64)
            gold_accuracy[who] = prompt_bootstrap([prompt_of[r.pair_id] for r in on_gold],
                                                  _share(hits), seed=seed)
        judged = [r for r in mine if outcome.get(r.pair_id) in VOTES]
        if judged:
            hits = np.asarray([r.answer == outcome[r.pair_id] for r in judged], dtype=np.float64)
            with_aggregate[who] = prompt_bootstrap([prompt_of[r.pair_id] for r in judged],
                                                   _share(hits), seed=seed)
    report["gold_accuracy"] = gold_accuracy
    report["agreement_with_aggregate"] = with_aggregate
    return report


def agreement_table(report: dict[str, Any]) -> list[str]:
    """The agreement block as a few printed lines."""

    def show(stat: dict[str, Any]) -> str:
        if not np.isfinite(stat["estimate"]):
            return "n/a"
        if not np.isfinite(stat["ci_low"]):
            return f"{stat['estimate']:.3f} (n {stat['n']})"
        return f"{stat['estimate']:.3f} [{stat['ci_low']:.3f}, {stat['ci_high']:.3f}] (n {stat['n']})"

    lines = [f"Krippendorff's alpha (nominal)  {show(report['krippendorff_alpha'])}"]
    lines += [f"Cohen's kappa {k['annotators'][0]} / {k['annotators'][1]}  {show(k)}"
              for k in report["cohen_kappa"]]
    lines += [f"gold accuracy {who}  {show(s)}" for who, s in report["gold_accuracy"].items()]
    lines += [f"agreement with the aggregate {who}  {show(s)}"
              for who, s in report["agreement_with_aggregate"].items()]
    return lines
