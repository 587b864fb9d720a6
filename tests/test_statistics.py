"""Seed-level statistics (realspo.evaluation.statistics): the hierarchical bootstrap and the mde."""

from __future__ import annotations

import numpy as np
import pytest

from realspo.evaluation.evaluate import bootstrap_interval
from realspo.evaluation.statistics import (
    MDE_FACTOR,
    bootstrap_p_value,
    hierarchical_bootstrap,
    hierarchical_means,
    mde_factor,
    minimum_detectable_effect,
    power,
    seeds_for_power,
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


def test_mde_is_2_8_standard_errors_with_one_seed():
    assert MDE_FACTOR == pytest.approx(2.80, abs=0.005)
    assert minimum_detectable_effect(0.01) == pytest.approx(0.028, abs=1e-4)
    result = hierarchical_bootstrap([np.random.default_rng(0).random(40)], 1000, seed=0)
    assert result["mde"] == pytest.approx(MDE_FACTOR * result["se"])
    assert result["se"] > 0


def test_mde_uses_t_quantiles_with_seeds_minus_one_degrees_of_freedom():
    # t_{0.975,2} = 4.303, t_{0.8,2} = 1.061 (tables)
    assert mde_factor(3) == pytest.approx(4.303 + 1.061, abs=0.002)
    assert mde_factor(2) == pytest.approx(12.706 + 1.376, abs=0.002)
    assert mde_factor(1) == MDE_FACTOR
    assert mde_factor(3) > mde_factor(10) > mde_factor(1000) > MDE_FACTOR - 1e-9
    samples = [np.random.default_rng(s).random(40) for s in range(3)]
    result = hierarchical_bootstrap(samples, 1000, seed=0)
    assert result["mde"] == pytest.approx(mde_factor(3) * result["se"])


def test_a_clearly_shifted_sample_gets_a_small_p_and_a_centred_one_a_large_p():
    rng = np.random.default_rng(2)
    shifted = hierarchical_bootstrap([rng.normal(0.5, 1.0, 200) for _ in range(3)], 2000, seed=0)
    assert shifted["p"] == pytest.approx(2 / 2001)  # no resample <= 0: (0 + 1) / (n + 1), twice
    centred = [rng.normal(0.0, 1.0, 200) for _ in range(3)]
    centred = [c - c.mean() for c in centred]
    assert hierarchical_bootstrap(centred, 2000, seed=0)["p"] > 0.5


def test_the_p_value_is_never_zero_and_counts_both_tails():
    assert bootstrap_p_value(np.ones(99)) == pytest.approx(2 / 100)
    assert bootstrap_p_value(-np.ones(99)) == pytest.approx(2 / 100)
    # 10 of 99 resamples <= 0: 2 * 11 / 100
    assert bootstrap_p_value(np.r_[-np.ones(10), np.ones(89)]) == pytest.approx(0.22)
    assert bootstrap_p_value(np.zeros(9)) == 1.0
    assert np.isnan(bootstrap_p_value(np.array([np.nan])))


@pytest.mark.parametrize("shift", [0.0, 0.05, 0.1, 0.15, 0.2, 0.3])
def test_the_p_value_agrees_with_the_interval(shift):
    rng = np.random.default_rng(int(shift * 100))
    samples = [rng.normal(shift, 1.0, 150) for _ in range(4)]
    r = hierarchical_bootstrap(samples, 4000, seed=1)
    outside = r["ci_low"] > 0 or r["ci_high"] < 0
    assert (r["p"] < 0.05) == outside


def test_power_is_alpha_at_no_effect_and_grows_with_the_effect():
    assert power(0.0, 0.01, 1) == pytest.approx(0.05, abs=1e-6)
    assert power(0.0, 0.01, 3) == pytest.approx(0.05, abs=1e-6)
    # normal: effect = 2.80 se gives 0.80 (plus the far tail, ~0)
    assert power(2.8016 * 0.01, 0.01, 1) == pytest.approx(0.80, abs=0.002)
    # t with 2 df: effect = mde(3 seeds) gives roughly 0.8 (the mde formula is approximate)
    assert 0.6 < power(mde_factor(3) * 0.01, 0.01, 3) < 0.85
    assert power(0.03, 0.01, 3) < power(0.03, 0.01, 10) < power(0.03, 0.01, 1)
    assert power(-0.03, 0.01, 3) == power(0.03, 0.01, 3)
    assert np.isnan(power(0.03, 0.0, 3))


def test_seeds_for_power_is_the_smallest_n_reaching_0_8():
    n = seeds_for_power(0.06, 0.048)
    assert power(0.06, 0.048 / np.sqrt(n), n) >= 0.8
    assert power(0.06, 0.048 / np.sqrt(n - 1), n - 1) < 0.8
    assert 7 <= n <= 9  # one-sample t: about (z_a + z_b)^2 (sd / effect)^2 + 2 = 7
    assert seeds_for_power(0.06, 0.0) is None and seeds_for_power(0.0, 0.05) is None


def test_empty_samples_are_refused():
    with pytest.raises(ValueError):
        hierarchical_bootstrap([np.array([])])
