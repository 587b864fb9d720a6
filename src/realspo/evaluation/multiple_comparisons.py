"""Many comparisons in one report: adjusted p-values, verdicts and power per comparison.

A report that makes m comparisons at alpha = 0.05 calls about 0.05 m of them "significant"
when nothing differs. Every report of the proving ground therefore names its *family* (the
comparisons it states verdicts on, per outcome) and adjusts the raw bootstrap p-values
(:func:`realspo.evaluation.statistics.bootstrap_p_value`) within it:

* **Holm** (1979), controls the family-wise error rate: sort the m p-values ascending,
  ``p_holm(i) = max_{j <= i} min(1, (m - j + 1) p(j))``.
* **Benjamini-Hochberg** q-values (false discovery rate), ``scipy.stats.false_discovery_control``.

"Significantly better/worse" means Holm-adjusted p < 0.05, in the direction of the estimate.
Each comparison also carries its power to detect a stated reference effect and the seeds
needed for 0.8 power at it (:func:`realspo.evaluation.statistics.power`,
:func:`realspo.evaluation.statistics.seeds_for_power`).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
from scipy import stats

from realspo.evaluation.statistics import ALPHA, power, seeds_for_power

# no word "significant" here: a smoke run's report states the rule but makes no verdicts
RULE = ("a difference is called better or worse only when its Holm-adjusted p < 0.05 within "
        "its family (two-sided bootstrap p-values; Benjamini-Hochberg q-values beside them)")


def holm(p_values: Sequence[float]) -> np.ndarray:
    """Holm's step-down adjusted p-values, in the input order.

    Args:
        p_values: the family's raw p-values (NaN entries are left out of the family and stay NaN).

    Returns:
        The adjusted p-values, each in [0, 1].
    """
    p = np.asarray(p_values, dtype=np.float64)
    out = np.full(p.shape, np.nan)
    keep = np.flatnonzero(np.isfinite(p))
    m = keep.size
    if m == 0:
        return out
    order = keep[np.argsort(p[keep], kind="stable")]
    scaled = np.minimum(1.0, (m - np.arange(m)) * p[order])
    out[order] = np.maximum.accumulate(scaled)
    return out


def benjamini_hochberg(p_values: Sequence[float]) -> np.ndarray:
    """Benjamini-Hochberg q-values, in the input order (NaN entries stay NaN).

    Args:
        p_values: the family's raw p-values.

    Returns:
        The q-values (``scipy.stats.false_discovery_control``, method ``"bh"``).
    """
    p = np.asarray(p_values, dtype=np.float64)
    out = np.full(p.shape, np.nan)
    keep = np.isfinite(p)
    if keep.any():
        out[keep] = stats.false_discovery_control(p[keep], method="bh")
    return out


def adjust_family(entries: list[dict[str, Any]], family: str) -> None:
    """Add ``p_holm``, ``q_bh``, ``family`` and ``family_size`` to every entry (in place).

    Args:
        entries: comparisons, each with a raw ``p`` (the family is all of them).
        family: the family's name, as the report states it.
    """
    raw = [float(e["p"]) for e in entries]
    size = int(np.isfinite(raw).sum())
    for e, h, q in zip(entries, holm(raw), benjamini_hochberg(raw), strict=True):
        e.update(p_holm=float(h), q_bh=float(q), family=family, family_size=size)


def direction(entry: dict[str, Any]) -> str | None:
    """``"better"`` or ``"worse"`` when the entry's Holm-adjusted p is below 0.05, else None.

    Args:
        entry: a comparison with ``p_holm`` and ``difference`` (or ``estimate``).

    Returns:
        The direction of a significant difference, or None.
    """
    p = entry.get("p_holm")
    if p is None or not np.isfinite(p) or p >= ALPHA:
        return None
    value = entry.get("difference", entry.get("estimate"))
    return "better" if value > 0 else "worse" if value < 0 else None


def add_power(entry: dict[str, Any], reference_effect: float | None, seeds: int) -> None:
    """Add ``power``, ``reference_effect`` and ``seeds_for_power`` to a comparison (in place).

    Power is that of the comparison's own se (t with seeds - 1 df); the seeds needed for 0.8
    power come from the SD over seeds of its per-seed differences (``per_seed``), None with
    fewer than 2 seeds or without a reference effect.

    Args:
        entry: a comparison with ``se`` and, for the seeds needed, ``per_seed``.
        reference_effect: the effect the power refers to (None: no reference).
        seeds: number of seeds of the run.
    """
    if reference_effect is None or not np.isfinite(reference_effect):
        entry.update(power=None, reference_effect=None, seeds_for_power=None)
        return
    per_seed = np.asarray(entry.get("per_seed") or [], dtype=np.float64)
    sd = float(per_seed.std(ddof=1)) if per_seed.size >= 2 else float("nan")
    p = power(reference_effect, entry["se"], seeds)
    entry.update(power=p if np.isfinite(p) else None, reference_effect=float(reference_effect),
                 seeds_for_power=seeds_for_power(reference_effect, sd))


def p_text(entry: dict[str, Any]) -> str:
    """``p 0.012, Holm 0.048, BH q 0.024`` for a report (n/a where missing)."""
    def f(key: str) -> str:
        v = entry.get(key)
        return "n/a" if v is None or not np.isfinite(v) else f"{v:.3f}"
    return f"p {f('p')}, Holm {f('p_holm')}, BH q {f('q_bh')}"


def power_text(entry: dict[str, Any], what: str = "the reference effect") -> str:
    """``power 0.83 to detect the ceiling's gain, +0.071; 0.8 needs 5 seeds`` (or empty)."""
    if entry.get("power") is None:
        return ""
    needed = entry.get("seeds_for_power")
    tail = f"; 0.8 needs {needed} seeds" if needed is not None else ""
    return f"power {entry['power']:.2f} to detect {what}, {entry['reference_effect']:+.3f}{tail}"
