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

**Minimum detectable effect** (``mde``): the smallest true difference a two-sided test at
alpha = 0.05 would detect with 80% power at this run's size, ``mde = (z_0.975 + z_0.8) * se
= (1.960 + 0.842) * se = 2.80 * se``, with ``se`` the hierarchical bootstrap standard error of
the difference (normal approximation).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np

Z_ALPHA = 1.959964  # two-sided alpha = 0.05
Z_POWER = 0.841621  # power 0.8
MDE_FACTOR = Z_ALPHA + Z_POWER  # 2.80


def minimum_detectable_effect(se: float) -> float:
    """``2.80 * se``: the effect a two-sided 5% test detects with 80% power (normal approx.)."""
    return MDE_FACTOR * se


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
    bootstrap interval: ``{"estimate", "ci_low", "ci_high", "se", "mde"}``.

    ``statistic`` maps column means (..., k) to a value (...), e.g. a ratio of two paired
    differences; resamples where it is not finite are left out of the interval and the se.
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
        return {"estimate": float(point), "ci_low": nan, "ci_high": nan, "se": nan, "mde": nan}
    lo, hi = np.quantile(finite, [alpha / 2, 1 - alpha / 2])
    se = float(finite.std(ddof=1)) if finite.size > 1 else 0.0
    return {"estimate": float(point), "ci_low": float(lo), "ci_high": float(hi), "se": se,
            "mde": minimum_detectable_effect(se)}
