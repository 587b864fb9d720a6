"""The label-efficiency curve of ``realspo demo`` in the paper's terms: how many labels REAL's
``easy`` pairs need to reach what ``random`` pairs reach with the full budget, and the share of
labels saved (REAL, arXiv 2409.17169, reports "up to 65%" fewer labels), with intervals.

For each of ``random`` and ``easy`` (DPO) and each budget of the run, the pooled value of two
outcomes over the seeds and held-out prompts:

- ``mean_reward_samples`` (primary): the oracle reward averaged over the S samples a model
  draws per held-out prompt (:mod:`realspo.arms.arm_outcomes`);
- ``win_rate`` (secondary): against the SFT model's sample on the same prompt.

The **target** is random's value at the largest budget (M labels). The **labels easy needs**
are where easy's piecewise-linear curve first reaches the target (:func:`crossing_point`); the
**share saved** is ``1 - needed / M``. Both get an interval from one hierarchical bootstrap: a
resample draws seeds with replacement, then prompt indices within each drawn seed, the *same*
indices for every run of that seed (the runs of a seed share held-out prompts and sampling
noise), recomputes every curve, the target and the crossing from those means, and the interval
is the percentile interval over resamples. A resample in which easy never reaches the target
counts as "more than the full budget" (needed = infinity, share saved = -infinity): an interval
end that falls there is reported as None, beside the share of resamples not reached.
"""

from __future__ import annotations

import math
from collections import defaultdict
from typing import Any

import numpy as np

from realspo.arms.records import DemoRun, RunRecord
from realspo.evaluation.evaluate import win_indicators
from realspo.evaluation.statistics import hierarchical_means

STRATEGIES = ("random", "easy")
OUTCOMES = ("mean_reward_samples", "win_rate")   # the primary outcome first
PAPER_CLAIM = "up to 65% fewer labels for the same performance (REAL, arXiv 2409.17169)"
BOOTSTRAP_SEED = 9


def crossing_point(points: list[tuple[float, float]], target: float) -> float | None:
    """The smallest x at which the piecewise-linear curve through ``points`` (x ascending)
    reaches ``target``; the first x if it starts there, None if it never does."""
    points = sorted(points)
    if not points:
        return None
    if points[0][1] >= target:
        return points[0][0]
    for (x0, y0), (x1, y1) in zip(points, points[1:], strict=False):
        if y0 < target <= y1:
            return x0 + (target - y0) / (y1 - y0) * (x1 - x0)
    return None


def label_efficiency(demo: DemoRun, pooled: dict[tuple[str, str, str], dict[str, Any]]
                     ) -> dict[str, Any]:
    """``results.json``'s ``label_efficiency``: win rate against labels for random and easy
    (DPO), the labels easy needs to reach random's best win rate (``random_best``,
    ``easy_labels_to_match``, ``labels_saved``: the first report's summary, kept), and the
    paper's terms (:func:`paper_terms`: ``target``, ``outcomes``, ``primary_outcome`` ...).

    Args:
        demo: the finished run.
        pooled: (strategy, loss, budget) -> the pooled numbers of
            :func:`realspo.arms.analysis.analyse` (``n_labels``, ``win_rate``, interval).

    Returns:
        The JSON-ready dictionary.
    """
    curves: dict[str, list[dict[str, Any]]] = {}
    for (strategy, loss, budget), p in pooled.items():
        if loss == "dpo" and strategy in STRATEGIES:
            curves.setdefault(strategy, []).append(
                {"budget": budget, "n_labels": p["n_labels"], "win_rate": p["win_rate"],
                 "ci_low": p["ci_low"], "ci_high": p["ci_high"]})
    for points in curves.values():
        points.sort(key=lambda p: p["n_labels"])
    result: dict[str, Any] = {"curves": curves, "random_best": None, "easy_labels_to_match": None,
                              "labels_saved": None}
    if curves.get("random") and curves.get("easy"):
        best = max(curves["random"], key=lambda p: (p["win_rate"], -p["n_labels"]))
        result["random_best"] = best
        needed = crossing_point([(p["n_labels"], p["win_rate"]) for p in curves["easy"]],
                                best["win_rate"])
        result["easy_labels_to_match"] = needed
        if needed is not None:
            result["labels_saved"] = 1.0 - needed / best["n_labels"]
    return {**result, **paper_terms(demo)}


def _runs(demo: DemoRun) -> tuple[list[str], list[int], dict[tuple[str, str, int], RunRecord]]:
    """The budgets both strategies ran (DPO), the seeds that ran all of them, and the runs."""
    by: dict[tuple[str, str, int], RunRecord] = {}
    budgets: dict[str, set[str]] = defaultdict(set)
    for r in demo.runs:
        if r.loss == "dpo" and r.strategy in STRATEGIES:
            by[r.strategy, r.budget, r.seed] = r
            budgets[r.strategy].add(r.budget)
    common = sorted(set.intersection(*(budgets[s] for s in STRATEGIES)) if all(
        budgets[s] for s in STRATEGIES) else set())
    seeds = sorted(s for s in {k[2] for k in by}
                   if all((st, b, s) in by for st in STRATEGIES for b in common))
    return common, seeds, by


def _outcome_columns(demo: DemoRun, run: RunRecord) -> dict[str, np.ndarray | None]:
    """(T,) per held-out prompt: mean reward over the S samples (None without samples), win."""
    samples = None if run.sample_rewards is None else np.asarray(run.sample_rewards).mean(axis=1)
    return {"mean_reward_samples": samples,
            "win_rate": win_indicators(run.rewards, demo.baseline[run.seed])}


def _crossing_summary(x_random: np.ndarray, x_easy: np.ndarray, random: np.ndarray,
                      easy: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Per row (point or resample): the target (random at its largest budget) and the labels
    easy needs (inf: not reached). ``random``/``easy``: (R, budgets) curve values."""
    target = random[:, -1]
    needed = np.array([crossing_point(list(zip(x_easy, row, strict=True)), t)
                       for row, t in zip(easy, target, strict=True)], dtype=object)
    return target, np.array([math.inf if n is None else n for n in needed], dtype=np.float64)


def _finite(x: float) -> float | None:
    return float(x) if np.isfinite(x) else None


def _percentiles(values: np.ndarray) -> tuple[float | None, float | None]:
    """The 95% percentile interval of resampled values that may be +-inf (not reached), by
    sample values (no interpolation across an infinite end); None where the end is infinite."""
    lo, hi = np.quantile(values, [0.025, 0.975], method="inverted_cdf")
    return _finite(lo), _finite(hi)


def paper_terms(demo: DemoRun) -> dict[str, Any]:
    """The curves with intervals, the target, the labels easy needs and the share saved, for
    each outcome (module docs).

    Args:
        demo: the finished run (random and easy DPO runs at two budgets or more; the primary
            outcome needs the runs' ``sample_rewards``).

    Returns:
        ``{"primary_outcome", "paper_claim", "resamples", "seeds", "outcomes": {outcome:
        {"curves": {strategy: [{budget, n_labels, estimate, ci_low, ci_high}]}, "target":
        {value, ci_low, ci_high, n_labels}, "labels_needed": {estimate, ci_low, ci_high,
        not_reached_share}, "share_saved": {estimate, ci_low, ci_high}}}}``; ``outcomes`` is
        empty when the run has fewer than two common budgets.
    """
    budgets, seeds, by = _runs(demo)
    n_resamples = demo.plan.bootstrap_resamples
    out: dict[str, Any] = {"primary_outcome": OUTCOMES[0], "paper_claim": PAPER_CLAIM,
                           "resamples": n_resamples, "seeds": seeds, "outcomes": {}}
    if len(budgets) < 2 or not seeds:
        return out
    labels = {(s, b): float(np.mean([by[s, b, seed].labels["n_labels"] for seed in seeds]))
              for s in STRATEGIES for b in budgets}
    budgets = sorted(budgets, key=lambda b: labels["random", b])
    columns = [(s, b) for s in STRATEGIES for b in budgets]
    per_seed = {seed: {c: _outcome_columns(demo, by[c[0], c[1], seed]) for c in columns}
                for seed in seeds}
    x_random = np.array([labels["random", b] for b in budgets])
    x_easy = np.array([labels["easy", b] for b in budgets])
    for outcome in OUTCOMES:
        if any(per_seed[seed][c][outcome] is None for seed in seeds for c in columns):
            continue
        samples = [np.stack([per_seed[seed][c][outcome] for c in columns], axis=1) for seed in seeds]
        point = np.concatenate(samples).mean(axis=0)[None, :]
        means = hierarchical_means(samples, n_resamples, seed=BOOTSTRAP_SEED)
        means = means.reshape(n_resamples, len(columns))
        k = len(budgets)
        target, needed = _crossing_summary(x_random, x_easy, point[:, :k], point[:, k:])
        r_target, r_needed = _crossing_summary(x_random, x_easy, means[:, :k], means[:, k:])
        full = x_random[-1]
        curves = {s: [{"budget": b, "n_labels": labels[s, b], "estimate": float(point[0, j]),
                       "ci_low": float(np.quantile(means[:, j], 0.025)),
                       "ci_high": float(np.quantile(means[:, j], 0.975))}
                      for j, (s_, b) in enumerate(columns) if s_ == s] for s in STRATEGIES}
        need_lo, need_hi = _percentiles(r_needed)
        # the share saved falls as the labels needed rise: its interval is theirs, mapped
        save_lo = None if need_hi is None else 1.0 - need_hi / full
        save_hi = None if need_lo is None else 1.0 - need_lo / full
        out["outcomes"][outcome] = {
            "curves": curves,
            "target": {"value": float(target[0]), "ci_low": float(np.quantile(r_target, 0.025)),
                       "ci_high": float(np.quantile(r_target, 0.975)), "n_labels": float(full)},
            "labels_needed": {"estimate": _finite(needed[0]), "ci_low": need_lo, "ci_high": need_hi,
                              "not_reached_share": float(np.mean(np.isinf(r_needed))),
                              "at_smallest_budget": bool(needed[0] == x_easy[0])},
            "share_saved": {"estimate": _finite(1.0 - needed[0] / full), "ci_low": save_lo,
                            "ci_high": save_hi}}
    return out
