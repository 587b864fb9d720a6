"""Seed-level statistics for experiments repeated over seeds (the demo's intervals).

A pipeline run over S seeds, each judged on N held-out prompts, has two sources of noise:
the evaluation prompts (within a seed) and everything a seed fixes (candidates, labels,
training order). A bootstrap over prompts alone covers only the first, and with few seeds
it can call a difference "significant" that the next seed reverses. The **hierarchical
bootstrap** resamples both levels:

1. draw S seeds with replacement from the S seeds;
2. for every drawn seed (a seed drawn twice is resampled twice, independently), draw its
   N_s prompts with replacement;
3. the statistic is the pooled mean of all drawn values (per column, for 2-D samples).

The 95% interval is the percentile interval of the resampled statistic; ``se`` is its
standard deviation. With one seed, step 1 is skipped and the result is the prompt bootstrap
of :func:`realspo.evaluation.evaluate.bootstrap_interval`, draw for draw. With S seeds the
seed level's bootstrap variance is (S - 1) / S of the usual estimate: with 3 seeds the
interval is still somewhat narrow, which is why :func:`minimum_detectable_effect` is reported
beside it.

**p-value.** The two-sided bootstrap p-value for "the statistic is 0" is
``min(1, 2 * min((n_le + 1) / (n + 1), (n_ge + 1) / (n + 1)))`` over the n finite resamples
(``n_le`` of them <= 0, ``n_ge`` >= 0): never 0, and below 0.05 exactly when 0 lies outside the
95% percentile interval (up to ties and the +1).

**Minimum detectable effect** (``mde``): the smallest true difference a two-sided test at
alpha = 0.05 would detect with 80% power at this run's size, ``mde = (t_0.975,df + t_0.8,df)
* se`` with ``df = seeds - 1`` when there are 2 or more seeds (3 seeds: 4.303 + 1.061 = 5.36),
and the normal ``(1.960 + 0.842) * se = 2.80 * se`` with one seed (the prompt bootstrap);
``se`` is the hierarchical bootstrap standard error. :func:`power` and
:func:`seeds_for_power` use the same t distribution (noncentral, noncentrality effect / se).
Families of p-values are adjusted by :mod:`realspo.evaluation.multiple_comparisons`.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np
from scipy import stats

Z_ALPHA = 1.959964  # two-sided alpha = 0.05
Z_POWER = 0.841621  # power 0.8
MDE_FACTOR = Z_ALPHA + Z_POWER  # 2.80, the one-seed (normal) factor
ALPHA = 0.05
TARGET_POWER = 0.8
MAX_SEEDS = 1000  # seeds_for_power gives up beyond this


def mde_factor(seeds: int) -> float:
    """``t_{0.975,df} + t_{0.8,df}`` with ``df = seeds - 1`` for 2 or more seeds, else 2.80.

    Args:
        seeds: number of seeds the standard error was estimated over.

    Returns:
        The factor that turns a standard error into the minimum detectable effect.
    """
    if seeds < 2:
        return MDE_FACTOR
    df = seeds - 1
    return float(stats.t.ppf(1 - ALPHA / 2, df) + stats.t.ppf(TARGET_POWER, df))


def minimum_detectable_effect(se: float, seeds: int = 1) -> float:
    """The effect a two-sided 5% test detects with 80% power: ``mde_factor(seeds) * se``.

    Args:
        se: standard error of the difference.
        seeds: number of seeds (1: normal approximation, 2.80 x se).

    Returns:
        The minimum detectable effect.
    """
    return mde_factor(seeds) * se


def power(effect: float, se: float, seeds: int = 1) -> float:
    """Power of a two-sided 5% test to detect a true ``effect`` measured with ``se``.

    ``P(|T| > t_crit)`` for a noncentral t with ``df = seeds - 1`` and noncentrality
    ``effect / se``; the normal approximation with one seed.

    Args:
        effect: the reference effect (its sign does not matter).
        se: standard error of the difference.
        seeds: number of seeds.

    Returns:
        The power in [0, 1], NaN when ``se`` or ``effect`` is not finite or ``se`` <= 0.
    """
    if not (np.isfinite(effect) and np.isfinite(se)) or se <= 0:
        return float("nan")
    shift = abs(effect) / se
    if seeds < 2:
        crit = stats.norm.ppf(1 - ALPHA / 2)
        return float(stats.norm.sf(crit - shift) + stats.norm.cdf(-crit - shift))
    df = seeds - 1
    crit = stats.t.ppf(1 - ALPHA / 2, df)
    return float(stats.nct.sf(crit, df, shift) + stats.nct.cdf(-crit, df, shift))


def seeds_for_power(effect: float, sd_seed: float, target: float = TARGET_POWER) -> int | None:
    """The fewest seeds n (>= 2) whose power to detect ``effect`` reaches ``target``, with
    ``se_n = sd_seed / sqrt(n)`` and a t test on n - 1 degrees of freedom.

    Args:
        effect: the reference effect.
        sd_seed: standard deviation over seeds of the per-seed difference.
        target: the power wanted (0.8).

    Returns:
        The number of seeds, or None when it cannot be computed (no finite, positive sd or
        effect) or exceeds ``MAX_SEEDS``.
    """
    if not (np.isfinite(effect) and np.isfinite(sd_seed)) or sd_seed <= 0 or effect == 0:
        return None
    for n in range(2, MAX_SEEDS + 1):
        if power(effect, sd_seed / np.sqrt(n), n) >= target:
            return n
    return None


def bootstrap_p_value(resampled: np.ndarray) -> float:
    """Two-sided bootstrap p-value for "the statistic is 0" from its resamples.

    Args:
        resampled: the resampled statistic (non-finite values are left out).

    Returns:
        ``min(1, 2 * min((n_le + 1) / (n + 1), (n_ge + 1) / (n + 1)))``; NaN without finite
        resamples.
    """
    values = np.asarray(resampled, dtype=np.float64)
    values = values[np.isfinite(values)]
    if values.size == 0:
        return float("nan")
    n = values.size
    low, high = (np.sum(values <= 0) + 1) / (n + 1), (np.sum(values >= 0) + 1) / (n + 1)
    return float(min(1.0, 2 * min(low, high)))


def hierarchical_means(samples: list[Any], n_resamples: int = 2000, seed: int = 0) -> np.ndarray:
    """Resampled pooled means, (n_resamples,) for 1-D samples or (n_resamples, k) for samples
    of shape (N_s, k) (columns resampled together: paired values stay paired).

    ``samples`` holds one array per seed. Seeds are drawn with replacement, then prompts
    (rows) within each drawn seed; the pooled mean is the sum of the drawn rows over their
    count. One seed: only the prompts are resampled.
    """
    values = [np.asarray(s, dtype=np.float64) for s in samples]
    if not values or any(v.shape[0] == 0 for v in values):
        raise ValueError("no values to bootstrap")
    if n_resamples < 1:
        raise ValueError(f"need n_resamples >= 1, got {n_resamples}")
    flat = values[0].ndim == 1
    values = [v.reshape(v.shape[0], -1) for v in values]
    rng = np.random.default_rng(seed)
    n_seeds = len(values)
    drawn = (np.zeros((n_resamples, 1), dtype=np.int64) if n_seeds == 1
             else rng.integers(0, n_seeds, size=(n_resamples, n_seeds)))
    sums = np.zeros((n_resamples, values[0].shape[1]))
    counts = np.zeros(n_resamples)
    for j in range(drawn.shape[1]):
        for s, v in enumerate(values):
            rows = np.flatnonzero(drawn[:, j] == s)
            if rows.size == 0:
                continue
            n = v.shape[0]
            chunk = max(1, 4_000_000 // n)  # bounded memory, as bootstrap_interval
            for lo in range(0, rows.size, chunk):
                part = rows[lo:lo + chunk]
                sums[part] += v[rng.integers(0, n, size=(part.size, n))].sum(axis=1)
            counts[rows] += n
    means = sums / counts[:, None]
    return means[:, 0] if flat and means.shape[1] == 1 else means


def hierarchical_bootstrap(samples: list[Any], n_resamples: int = 2000, seed: int = 0,
                           alpha: float = 0.05,
                           statistic: Callable[[np.ndarray], np.ndarray] | None = None
                           ) -> dict[str, float]:
    """The pooled mean (or ``statistic`` of the pooled column means) with its hierarchical
    bootstrap interval: ``{"estimate", "ci_low", "ci_high", "se", "mde", "p"}``.

    ``statistic`` maps column means (..., k) to a value (...), e.g. a ratio of two paired
    differences; resamples where it is not finite are left out of the interval, the se and
    the p-value. ``mde`` uses ``len(samples)`` seeds (:func:`mde_factor`); ``p`` is
    :func:`bootstrap_p_value` for "the statistic is 0".

    Args:
        samples: one array per seed, (N_s,) or (N_s, k).
        n_resamples: bootstrap resamples.
        seed: random seed of the resampling.
        alpha: 1 - the interval's coverage.
        statistic: maps column means to the statistic (needed with several columns).

    Returns:
        The estimate, interval, se, mde and p-value.
    """
    if not 0 < alpha < 1:
        raise ValueError(f"need 0 < alpha < 1, got {alpha}")
    pooled = np.concatenate([np.asarray(s, dtype=np.float64).reshape(len(s), -1) for s in samples])
    means = hierarchical_means(samples, n_resamples, seed)
    with np.errstate(divide="ignore", invalid="ignore"):
        if statistic is None:
            if pooled.shape[1] != 1:
                raise ValueError("samples with several columns need a statistic")
            point, resampled = pooled.mean(), means
        else:
            point, resampled = statistic(pooled.mean(axis=0)), statistic(means)
    resampled = np.asarray(resampled, dtype=np.float64)
    finite = resampled[np.isfinite(resampled)]
    if finite.size == 0:
        nan = float("nan")
        return {"estimate": float(point), "ci_low": nan, "ci_high": nan, "se": nan, "mde": nan,
                "p": nan}
    lo, hi = np.quantile(finite, [alpha / 2, 1 - alpha / 2])
    se = float(finite.std(ddof=1)) if finite.size > 1 else 0.0
    return {"estimate": float(point), "ci_low": float(lo), "ci_high": float(hi), "se": se,
            "mde": minimum_detectable_effect(se, len(samples)), "p": bootstrap_p_value(finite)}


def mde_text(seeds: int) -> str:
    """How the run's mde is computed, for the statistics line of a report.

    Args:
        seeds: number of seeds of the run.

    Returns:
        One sentence naming the factor and its degrees of freedom.
    """
    if seeds >= 2:
        return (f"(t_0.975,{seeds - 1} + t_0.8,{seeds - 1}) x bootstrap se = {mde_factor(seeds):.2f}"
                f" x se with {seeds} seeds (df = seeds - 1; 80% power, two-sided alpha 0.05)")
    return (f"(z_0.975 + z_0.8) x bootstrap se = {mde_factor(1):.2f} x se with one seed "
            "(the prompt bootstrap; 80% power, two-sided alpha 0.05)")
