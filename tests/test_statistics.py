"""Seed-level statistics (realspo.evaluation.statistics): the hierarchical bootstrap and the mde."""

from __future__ import annotations

import numpy as np
import pytest

from realspo.evaluation.evaluate import bootstrap_interval
from realspo.evaluation.statistics import (
    MDE_FACTOR,
    hierarchical_bootstrap,
    hierarchical_means,
    minimum_detectable_effect,
)


def prompt_only_interval(samples, n_resamples=2000, seed=0):
    """Resample prompts within each seed, never the seeds (the demo's former interval)."""
    rng = np.random.default_rng(seed)
    sums = sum(v[rng.integers(0, v.size, size=(n_resamples, v.size))].sum(axis=1) for v in samples)
    return np.quantile(sums / sum(v.size for v in samples), [0.025, 0.975])


def test_between_seed_variance_alone_widens_the_interval_beyond_the_prompt_only_one():
    # every prompt of a seed has the same value: prompts carry no noise, seeds all of it
    samples = [np.full(50, 0.3), np.full(50, 0.5), np.full(50, 0.7)]
    lo, hi = prompt_only_interval(samples)
    assert hi - lo == pytest.approx(0.0)
    result = hierarchical_bootstrap(samples, 2000, seed=0)
    assert result["estimate"] == pytest.approx(0.5)
    assert result["ci_high"] - result["ci_low"] > 0.2
    assert result["ci_low"] < 0.5 < result["ci_high"]


def test_seed_level_noise_is_added_to_prompt_level_noise():
    rng = np.random.default_rng(1)
    samples = [rng.normal(mu, 1.0, 100) for mu in (-0.5, 0.0, 0.5)]
    lo, hi = prompt_only_interval(samples)
    result = hierarchical_bootstrap(samples, 2000, seed=0)
    assert result["ci_high"] - result["ci_low"] > 1.5 * (hi - lo)


def test_one_seed_reduces_to_the_prompt_bootstrap():
    wins = np.random.default_rng(3).choice([0.0, 0.5, 1.0], size=40)
    result = hierarchical_bootstrap([wins], 500, seed=7)
    lo, hi = bootstrap_interval(wins, 500, seed=7)
    assert (result["ci_low"], result["ci_high"]) == pytest.approx((lo, hi))
    assert result["estimate"] == pytest.approx(wins.mean())


def test_deterministic_under_a_seed_and_different_under_another():
    samples = [np.random.default_rng(s).random(30) for s in range(3)]
    assert hierarchical_bootstrap(samples, 300, seed=5) == hierarchical_bootstrap(samples, 300, seed=5)
    assert hierarchical_bootstrap(samples, 300, seed=5) != hierarchical_bootstrap(samples, 300, seed=6)


def test_paired_columns_are_resampled_together():
    # column 1 is twice column 0 in every row: any resample keeps the ratio at exactly 2
    samples = [np.stack([v, 2 * v], axis=1) for v in (np.arange(1.0, 11), np.arange(5.0, 25))]
    means = hierarchical_means(samples, 200, seed=0)
    assert means.shape == (200, 2)
    np.testing.assert_allclose(means[:, 1], 2 * means[:, 0])
    ratio = hierarchical_bootstrap(samples, 200, seed=0, statistic=lambda m: m[..., 0] / m[..., 1])
    assert ratio["estimate"] == pytest.approx(0.5)
    assert ratio["ci_low"] == pytest.approx(0.5) and ratio["ci_high"] == pytest.approx(0.5)


def test_non_finite_resamples_are_left_out_of_a_ratio():
    samples = [np.stack([np.ones(5), np.zeros(5)], axis=1)]
    result = hierarchical_bootstrap(samples, 50, seed=0, statistic=lambda m: m[..., 0] / m[..., 1])
    assert np.isnan(result["ci_low"]) and np.isnan(result["mde"])


def test_mde_is_2_8_standard_errors():
    assert MDE_FACTOR == pytest.approx(2.80, abs=0.005)
    assert minimum_detectable_effect(0.01) == pytest.approx(0.028, abs=1e-4)
    samples = [np.random.default_rng(s).random(40) for s in range(3)]
    result = hierarchical_bootstrap(samples, 1000, seed=0)
    assert result["mde"] == pytest.approx(MDE_FACTOR * result["se"])
    assert result["se"] > 0


def test_empty_samples_are_refused():
    with pytest.raises(ValueError):
        hierarchical_bootstrap([np.array([])])
