"""The numbers of ``realspo demo``: win rates with intervals, comparisons, label errors by
similarity, and the label-efficiency curve. Pure functions of a finished
:class:`realspo.arms.records.DemoRun`; :mod:`realspo.demo.report` draws and writes them.

Intervals. A model's *win rate* over the SFT model is the mean over held-out prompts of 1
(higher oracle reward), 1/2 (equal) or 0. Per seed, its 95% interval is a percentile bootstrap
over prompts (:func:`realspo.evaluation.evaluate.bootstrap_interval`). Pooled over seeds, every
interval is a hierarchical bootstrap (:mod:`realspo.evaluation.statistics`): seeds are
resampled, then prompts within each drawn seed, so the interval covers both what a seed fixes
(candidates, labels, training order) and the evaluation prompts. A *difference* between two
methods is paired: both were judged on the same prompts with the same sampling noise, so the
per-prompt differences of their win indicators are resampled together. Each pooled number and
difference carries its ``se``, ``mde`` (:func:`realspo.evaluation.statistics.mde_factor`
x se: t-based with df = seeds - 1, 2.80 with one seed) and two-sided bootstrap p-value. A
*share of the ceiling* is ``(s - random) / (ceiling - random)`` of the win rates, its interval
from the same resamples (paired columns, ratio per resample).

Verdicts (:func:`realspo.arms.verdicts.judge_comparisons`). The comparisons form one family per outcome: the
primary outcome is the mean oracle reward over the S samples per held-out prompt (the win
rate when a run has no such samples); the win rate and the implicit-reward accuracy are
secondary, each adjusted within its own family. Holm-adjusted p < 0.05 is "significant"
(:mod:`realspo.evaluation.multiple_comparisons`); each comparison carries its power to detect
the ceiling's observed gain on that outcome.
"""

from __future__ import annotations

from collections import defaultdict
from typing import Any

import numpy as np

from realspo.arms.arm_outcomes import paired_outcomes, pooled_outcomes
from realspo.arms.efficiency import label_efficiency
from realspo.arms.manipulation import spo_dose, spo_manipulation
from realspo.arms.plan import budget_label, plan_dict
from realspo.arms.records import DemoRun, RunRecord
from realspo.arms.verdicts import judge_comparisons
from realspo.evaluation.evaluate import bootstrap_interval, win_indicators
from realspo.evaluation.multiple_comparisons import RULE
from realspo.evaluation.statistics import hierarchical_bootstrap, mde_text
from realspo.labels.annotator import expected_error_rate


def interval(samples: list[np.ndarray], n_resamples: int, seed: int) -> dict[str, float]:
    """The pooled mean of one array per seed with its hierarchical bootstrap interval, se and
    mde (:func:`realspo.evaluation.statistics.hierarchical_bootstrap`)."""
    return hierarchical_bootstrap(samples, n_resamples, seed=seed)


def rank_correlation(x: np.ndarray, y: np.ndarray) -> float:
    """Spearman's rho: the Pearson correlation of average ranks (ties share their mean rank)."""
    def ranks(v: np.ndarray) -> np.ndarray:
        order = np.argsort(v, kind="stable")
        _, first, counts = np.unique(v[order], return_index=True, return_counts=True)
        r = np.empty(len(v))
        r[order] = np.repeat(first + (counts - 1) / 2.0, counts)
        return r

    x, y = np.asarray(x, dtype=np.float64), np.asarray(y, dtype=np.float64)
    if len(x) < 3:
        return float("nan")
    rx, ry = ranks(x), ranks(y)
    if rx.std() == 0 or ry.std() == 0:
        return float("nan")
    return float(np.corrcoef(rx, ry)[0, 1])


# ---------------------------------------------------------------------------------------


def _wins(demo: DemoRun, run: RunRecord) -> np.ndarray:
    return win_indicators(run.rewards, demo.baseline[run.seed])


def _pool(demo: DemoRun, runs: list[RunRecord]) -> dict[str, Any]:
    """Pooled and per-seed numbers of one method (its runs over the seeds)."""
    plan = demo.plan
    runs = sorted(runs, key=lambda r: r.seed)
    wins = [_wins(demo, r) for r in runs]
    win = interval(wins, plan.bootstrap_resamples, seed=0)
    reward = interval([r.rewards for r in runs], plan.bootstrap_resamples, seed=1)
    per_seed = []
    for r, w in zip(runs, wins, strict=True):
        s_lo, s_hi = bootstrap_interval(w, plan.bootstrap_resamples, seed=r.seed)
        per_seed.append({"seed": r.seed, "win_rate": float(w.mean()), "ci_low": s_lo,
                         "ci_high": s_hi, "mean_reward": float(r.rewards.mean()),
                         **r.labels, "seconds": round(r.seconds, 1)})
    ordered = sum(r.labels["n_ordered"] for r in runs)
    errors = sum(r.labels["n_errors"] for r in runs)
    return {
        "budget": runs[0].budget, "win_rate": win["estimate"], "ci_low": win["ci_low"],
        "ci_high": win["ci_high"], "se": win["se"], "mde": win["mde"],
        "mean_reward": reward["estimate"], "mean_reward_ci": [reward["ci_low"], reward["ci_high"]],
        "n_labels": float(np.mean([r.labels["n_labels"] for r in runs])),
        "label_error_rate": errors / ordered if ordered else None,
        "oracle_tie_rate": float(np.mean([r.labels["oracle_tie_rate"] for r in runs])),
        "mean_similarity": float(np.mean([r.labels["mean_similarity"] for r in runs])),
        "mean_reward_gap": float(np.mean([r.labels["mean_reward_gap"] for r in runs])),
        "per_seed": per_seed,
        **pooled_outcomes(runs, demo.heldout, plan.beta, plan.bootstrap_resamples),
    }


def _group(demo: DemoRun) -> dict[tuple[str, str, str], list[RunRecord]]:
    groups: dict[tuple[str, str, str], list[RunRecord]] = defaultdict(list)
    for run in demo.runs:
        groups[run.strategy, run.loss, run.budget].append(run)
    return groups


def paired_difference(demo: DemoRun, a: list[RunRecord], b: list[RunRecord]) -> dict[str, float]:
    """Win rate of ``a`` minus that of ``b`` (both vs SFT) with a paired, hierarchical
    interval, its se and mde."""
    by_seed = {r.seed: r for r in b}
    diffs = [_wins(demo, r) - _wins(demo, by_seed[r.seed]) for r in sorted(a, key=lambda r: r.seed)]
    d = interval(diffs, demo.plan.bootstrap_resamples, seed=2)
    return {"difference": d["estimate"], "ci_low": d["ci_low"], "ci_high": d["ci_high"],
            "se": d["se"], "mde": d["mde"], "p": d["p"],
            "per_seed": [float(x.mean()) for x in diffs]}


def share_of_ceiling(demo: DemoRun, runs: list[RunRecord], random: list[RunRecord],
                     ceiling: list[RunRecord]) -> dict[str, float]:
    """``(s - random) / (ceiling - random)`` of the win rates, with a hierarchical interval:
    the two paired differences are resampled together and divided per resample."""
    rnd, ceil = {r.seed: r for r in random}, {r.seed: r for r in ceiling}
    columns = [np.stack([_wins(demo, r) - _wins(demo, rnd[r.seed]),
                         _wins(demo, ceil[r.seed]) - _wins(demo, rnd[r.seed])], axis=1)
               for r in sorted(runs, key=lambda r: r.seed)]
    result = hierarchical_bootstrap(columns, demo.plan.bootstrap_resamples, seed=3,
                                    statistic=lambda m: m[..., 0] / m[..., 1])
    return without_mde(result)


def without_mde(result: dict[str, float]) -> dict[str, float]:
    """A ratio's bootstrap summary without the mde: a minimum detectable effect (and a test of
    0) is about a difference, not a share of another difference."""
    return {k: v for k, v in result.items() if k not in ("mde", "p")}


def similarity_deciles(demo: DemoRun, bins: int = 10) -> list[dict[str, Any]]:
    """Label errors of every candidate pair (all seeds) by decile of the pair's cosine similarity.

    Observed: the simulated labels against the oracle's ordering (pairs the oracle ties have no
    right answer and are counted apart). Expected: the annotator's formula on the same pairs.
    """
    plan = demo.plan
    sim = np.concatenate([c.similarity for c in demo.pairs.values()])
    ra = np.concatenate([c.reward_a for c in demo.pairs.values()])
    rb = np.concatenate([c.reward_b for c in demo.pairs.values()])
    err = np.concatenate([c.error for c in demo.pairs.values()])
    edges = np.quantile(sim, np.linspace(0, 1, bins + 1))
    which = np.clip(np.searchsorted(edges, sim, side="right") - 1, 0, bins - 1)
    out = []
    for d in range(bins):
        m = which == d
        ordered = m & ~np.isnan(err)
        out.append({
            "decile": d + 1, "similarity_low": float(edges[d]), "similarity_high": float(edges[d + 1]),
            "n_pairs": int(m.sum()), "oracle_tie_rate": float(1 - ordered.sum() / max(m.sum(), 1)),
            "label_error_rate": float(err[ordered].mean()) if ordered.any() else None,
            "expected_error_rate": expected_error_rate(ra[m], rb[m], plan.tau, plan.flip)
            if ordered.any() else None,
            "mean_reward_gap": float(np.abs(ra[m] - rb[m]).mean()) if m.any() else None,
        })
    return out


def prompt_of_pairs(candidates: Any) -> np.ndarray:
    """(P,) the prompt (group) of every candidate pair, from ``pair_index``."""
    prompt = np.full(len(candidates.similarity), -1, dtype=np.int64)
    for (group, _, _), row in candidates.pair_index.items():
        prompt[row] = group
    return prompt


def premise_difference(demo: DemoRun, bins: int = 10) -> dict[str, float] | None:
    """REAL's premise as one difference: label-error rate of the least similar decile minus
    that of the most similar (oracle-ordered candidate pairs, deciles over all seeds), with a
    hierarchical interval (seeds, then prompts within a seed: the pairs of one prompt share
    its responses, so a prompt's sums are resampled as one row; each rate is recomputed per
    resample)."""
    sim = np.concatenate([c.similarity for c in demo.pairs.values()])
    if sim.size < 2:
        return None
    edges = np.quantile(sim, np.linspace(0, 1, bins + 1))  # as similarity_deciles
    lo_edge, hi_edge = edges[1], edges[bins - 1]
    columns = []
    for c in demo.pairs.values():
        ordered = ~np.isnan(c.error)
        low, high = ordered & (c.similarity < lo_edge), ordered & (c.similarity >= hi_edge)
        err = np.nan_to_num(c.error)
        keep = low | high
        rows = np.stack([err * low, low, err * high, high], axis=1)[keep].astype(np.float64)
        _, prompt = np.unique(prompt_of_pairs(c)[keep], return_inverse=True)
        sums = np.zeros((int(prompt.max()) + 1 if prompt.size else 0, 4))
        np.add.at(sums, prompt, rows)
        columns.append(sums)
    if any(col.shape[0] == 0 for col in columns):
        return None
    result = hierarchical_bootstrap(columns, demo.plan.bootstrap_resamples, seed=4,
                                    statistic=lambda m: m[..., 0] / m[..., 1] - m[..., 2] / m[..., 3])
    pooled = np.concatenate(columns).sum(axis=0)
    return {"difference": result["estimate"], "ci_low": result["ci_low"],
            "ci_high": result["ci_high"], "se": result["se"], "mde": result["mde"],
            "p": result["p"], "least_similar_rate": float(pooled[0] / pooled[1]) if pooled[1] else None,
            "most_similar_rate": float(pooled[2] / pooled[3]) if pooled[3] else None}


def _comparisons(demo: DemoRun, groups: dict[tuple[str, str, str], list[RunRecord]]
                 ) -> list[dict[str, Any]]:
    """Every paired difference of the report: strategies and controls minus random, easy minus
    easy-random-prompts, DPO+SPO minus DPO."""
    plan, main = demo.plan, budget_label(demo.plan.budget)
    todo: list[tuple[str, str, str, str]] = []  # (kind, a, b, loss)
    if "random" in plan.strategies:
        todo += [("strategy", s, "random", loss) for loss in plan.losses
                 for s in plan.strategies if s != "random"]
        todo += [("control", c, "random", "dpo") for c in plan.controls]
    if "easy" in plan.strategies and "easy-random-prompts" in plan.controls:
        todo.append(("control", "easy", "easy-random-prompts", "dpo"))
    if "dpo" in plan.losses and "dpo+spo" in plan.losses:
        todo += [("spo", s, s, "") for s in plan.strategies]
    out = []
    for kind, a, b, loss in todo:
        la, lb = ("dpo+spo", "dpo") if kind == "spo" else (loss, loss)
        out.append({"kind": kind, "a": f"{a}/{la}", "b": f"{b}/{lb}", **paired_difference(
            demo, groups[a, la, main], groups[b, lb, main]), **paired_outcomes(
            groups[a, la, main], groups[b, lb, main], demo.heldout, plan.beta,
            plan.bootstrap_resamples)})
    return out


def _sft_outcomes(demo: DemoRun) -> dict[str, Any]:
    """The SFT model's mean reward over the S samples per held-out prompt."""
    if not demo.baseline_samples or any(v is None for v in demo.baseline_samples.values()):
        return {}
    means = [demo.baseline_samples[s].mean(axis=1) for s in sorted(demo.baseline_samples)]
    r = interval(means, demo.plan.bootstrap_resamples, seed=1)
    return {"mean_reward_samples": r["estimate"],
            "mean_reward_samples_ci": [r["ci_low"], r["ci_high"]]}


def analyse(demo: DemoRun) -> dict[str, Any]:
    """Every number of the report, JSON-ready (see docs/explanation/demo.md for the layout)."""
    plan = demo.plan
    main = budget_label(plan.budget)
    groups = _group(demo)
    pooled = {key: _pool(demo, runs) for key, runs in groups.items()}
    sft = interval(list(demo.baseline.values()), plan.bootstrap_resamples, seed=1)
    shares = {}
    if "ceiling" in plan.controls and "random" in plan.strategies and "dpo" in plan.losses:
        for name in (*plan.strategies, *plan.controls):
            if name not in ("random", "ceiling"):
                shares[name] = share_of_ceiling(demo, groups[name, "dpo", main],
                                                groups["random", "dpo", main],
                                                groups["ceiling", "dpo", main])
    all_sim = np.concatenate([c.similarity for c in demo.pairs.values()])
    all_gap = np.concatenate([np.abs(c.reward_a - c.reward_b) for c in demo.pairs.values()])
    comparisons = _comparisons(demo, groups)
    families = judge_comparisons(comparisons, len(plan.seeds))
    return {
        "config": plan_dict(plan), "sizes": demo.sizes,
        "timings_seconds": {k: round(v, 1) for k, v in demo.timings.items()},
        "sft_model": str(demo.sft_dir),
        "verdicts": plan.preset != "quick",  # a --quick run is a smoke test: no verdicts
        "statistics": {
            "interval": "hierarchical percentile bootstrap, 95%: resample seeds, then prompts "
                        "within each drawn seed", "resamples": plan.bootstrap_resamples,
            "seeds": len(plan.seeds), "mde": mde_text(len(plan.seeds)),
            "p_value": "two-sided bootstrap p for a difference of 0: min(1, 2 min((n<=0 + 1) / "
                       "(n + 1), (n>=0 + 1) / (n + 1)))",
            "rule": RULE, "families": families,
            "primary_outcome": next((o for o, f in families.items() if f["role"] == "primary"),
                                    None)},
        "sft": {"mean_reward": sft["estimate"], "mean_reward_ci": [sft["ci_low"], sft["ci_high"]],
                "per_seed": {str(s): float(b.mean()) for s, b in demo.baseline.items()},
                **_sft_outcomes(demo)},
        "outcomes": {"eval_samples": plan.eval_samples,
                     "heldout_pairs": {str(s): len(h.better) for s, h in demo.heldout.items()},
                     "heldout_responses": {str(s): len(h.responses) for s, h in demo.heldout.items()},
                     "implicit_reward": "beta * (log pi - log pi_sft) of the summed response "
                                        "log-probs; a pair is right when the oracle's better "
                                        "response gets the larger reward (ties 1/2)"},
        "main": {s: {loss: pooled[s, loss, main] for loss in plan.losses} for s in plan.strategies},
        "controls": {c: {"dpo": pooled[c, "dpo", main]} for c in plan.controls},
        "share_of_ceiling": shares,
        "comparisons": comparisons,
        "spo_manipulation": spo_manipulation(demo.spo_variants, plan.spo_levels),
        "spo_dose": spo_dose(demo),
        "label_efficiency": label_efficiency(demo, pooled),
        "label_error_by_similarity": similarity_deciles(demo),
        "premise": premise_difference(demo),
        "similarity_vs_reward_gap_spearman": rank_correlation(all_sim, all_gap),
        "all_pairs_label_error_rate": float(np.nanmean(np.concatenate(
            [c.error for c in demo.pairs.values()]))),
    }

