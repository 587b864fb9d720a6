"""The demo's statistics beyond one interval: the premise's prompt clusters and the verdict
families (realspo.arms.analysis.premise_difference, realspo.arms.verdicts)."""

from __future__ import annotations

from types import SimpleNamespace

import numpy as np
import pytest

from realspo.arms import analysis
from realspo.arms.records import Candidates
from realspo.arms.verdicts import judge_comparisons
from realspo.evaluation.statistics import power


def _candidates(n_prompts: int, per_prompt: int, rng: np.random.Generator,
                clustered: bool) -> Candidates:
    """``per_prompt`` pairs per prompt; with ``clustered``, a prompt's pairs share one error
    and nearly one similarity (as a prompt's responses do), so they fall in the same decile."""
    index, sim, err = {}, [], []
    for g in range(n_prompts):
        shared, level = float(rng.random() < 0.4), rng.random()
        for i in range(per_prompt):
            index[g, i, i + 1] = len(sim)
            sim.append(level + 0.01 * rng.random() if clustered else rng.random())
            err.append(shared if clustered else float(rng.random() < 0.4))
    n = len(sim)
    return Candidates(groups=[], embeddings=np.zeros((n, 1)), keys=np.arange(n), pair_index=index,
                      similarity=np.array(sim), reward_a=np.zeros(n), reward_b=np.ones(n),
                      a_preferred=np.ones(n, dtype=bool), error=np.array(err))


def _demo(pairs: dict[int, Candidates]) -> SimpleNamespace:
    return SimpleNamespace(pairs=pairs, plan=SimpleNamespace(bootstrap_resamples=1000))


def test_the_premise_interval_resamples_prompts_not_pairs(monkeypatch):
    rng = np.random.default_rng(0)
    demo = _demo({0: _candidates(40, 10, rng, clustered=True)})
    seen = []
    real = analysis.hierarchical_bootstrap
    monkeypatch.setattr(analysis, "hierarchical_bootstrap",
                        lambda columns, *a, **k: seen.append(columns) or real(columns, *a, **k))
    result = analysis.premise_difference(demo)
    (columns,) = seen
    c = demo.pairs[0]
    lo_edge, hi_edge = np.quantile(c.similarity, [0.1, 0.9])
    extreme = (c.similarity < lo_edge) | (c.similarity >= hi_edge)
    prompts = {g for (g, _, _), row in c.pair_index.items() if extreme[row]}
    assert columns[0].shape == (len(prompts), 4)  # one row per prompt, not per pair
    assert columns[0][:, [1, 3]].sum() == extreme.sum()  # every extreme pair counted once
    # the rates are unchanged by the grouping
    assert result["least_similar_rate"] == pytest.approx(c.error[c.similarity < lo_edge].mean())
    assert 0 < result["p"] <= 1


def test_clustered_errors_widen_the_premise_interval_beyond_the_pair_bootstrap():
    rng = np.random.default_rng(1)
    demo = _demo({0: _candidates(60, 20, rng, clustered=True)})
    result = analysis.premise_difference(demo)
    c = demo.pairs[0]
    lo_edge, hi_edge = np.quantile(c.similarity, [0.1, 0.9])
    low, high = c.error[c.similarity < lo_edge], c.error[c.similarity >= hi_edge]
    # the pair-level (independent) standard error of a difference of two rates
    naive = np.sqrt(low.var() / low.size + high.var() / high.size)
    assert result["se"] > 1.5 * naive


def _comparison(a: str, b: str, win: float, reward: float) -> dict:
    def entry(d: float, p: float) -> dict:
        return {"difference": d, "ci_low": d - 0.05, "ci_high": d + 0.05, "se": 0.02, "mde": 0.1,
                "p": p, "per_seed": [d - 0.02, d, d + 0.02]}
    return {"kind": "strategy", "a": a, "b": b, **entry(win, 0.01),
            "mean_reward_samples": entry(reward, 0.02), "implicit_reward_accuracy": entry(0.0, 0.9)}


def test_each_outcome_is_its_own_family_and_power_refers_to_the_ceilings_gain():
    comps = [_comparison("ceiling/dpo", "random/dpo", 0.07, 0.2),
             _comparison("easy/dpo", "random/dpo", 0.01, 0.03)]
    families = judge_comparisons(comps, seeds=3)
    assert list(families) == ["mean_reward_samples", "win_rate", "implicit_reward_accuracy"]
    assert families["mean_reward_samples"]["role"] == "primary"
    assert families["win_rate"]["role"] == "secondary"
    easy = comps[1]
    assert easy["mean_reward_samples"]["p_holm"] == pytest.approx(0.04)  # 2 x 0.02
    assert easy["p_holm"] == pytest.approx(0.02)
    assert easy["mean_reward_samples"]["power"] == pytest.approx(power(0.2, 0.02, 3))
    assert easy["reference_effect"] == pytest.approx(0.07)


def test_without_samples_the_win_rate_is_primary_and_without_a_ceiling_no_power():
    comps = [_comparison("easy/dpo", "random/dpo", 0.01, 0.03)]
    for c in comps:
        del c["mean_reward_samples"]
    families = judge_comparisons(comps, seeds=1)
    assert families["win_rate"]["role"] == "primary" and families["win_rate"]["reference"] is None
    assert comps[0]["power"] is None and comps[0]["seeds_for_power"] is None
