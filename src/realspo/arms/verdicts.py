"""Verdicts of ``realspo demo``: which outcome is primary, the families of comparisons, and
power next to each comparison.

The comparisons (strategies and controls minus random, easy minus easy-random-prompts,
DPO+SPO minus DPO) form one family per outcome. The primary outcome is the mean oracle reward
over the S samples per held-out prompt, about 2.5x more sensitive than the win rate for the
ceiling; the win rate and the implicit-reward accuracy are secondary, each adjusted within its
own family (:mod:`realspo.evaluation.multiple_comparisons`).
"""

from __future__ import annotations

from typing import Any

from realspo.evaluation.multiple_comparisons import add_power, adjust_family

SECONDARY = {"win_rate": "win rate vs SFT",
             "implicit_reward_accuracy": "implicit-reward accuracy on held-out pairs"}
PRIMARY = "mean_reward_samples"


def _entry(c: dict[str, Any], outcome: str) -> dict[str, Any] | None:
    """The comparison's numbers on ``outcome`` (the win rate's sit on the comparison itself)."""
    return c if outcome == "win_rate" else c.get(outcome)


def judge_comparisons(comparisons: list[dict[str, Any]], seeds: int) -> dict[str, Any]:
    """Adjust every outcome's family of p-values and add power to each comparison (in place).

    The primary outcome is the mean reward over the S samples when every comparison has it,
    else the win rate. Each outcome is its own family (the primary's is the verdicts'); the
    reference effect of power is the ceiling's observed gain over random on that outcome.

    Args:
        comparisons: the report's paired differences (:func:`realspo.arms.analysis.analyse`'s ``comparisons``).
        seeds: number of seeds of the run.

    Returns:
        The families: ``{outcome: {"role", "size", "comparisons", "reference"}}``.
    """
    primary = PRIMARY if comparisons and all(PRIMARY in c for c in comparisons) else "win_rate"
    ceiling = next((c for c in comparisons if (c["a"], c["b"]) == ("ceiling/dpo", "random/dpo")),
                   None)
    families: dict[str, Any] = {}
    for outcome in (primary, *[o for o in (PRIMARY, *SECONDARY) if o != primary]):
        entries = [e for c in comparisons if (e := _entry(c, outcome)) is not None]
        if not entries:
            continue
        adjust_family(entries, outcome)
        reference = _entry(ceiling, outcome) if ceiling is not None else None
        effect = reference["difference"] if reference is not None else None
        for e in entries:
            add_power(e, effect, seeds)
        families[outcome] = {"role": "primary" if outcome == primary else "secondary",
                             "size": len(entries),
                             "comparisons": [f"{c['a']} - {c['b']}" for c in comparisons
                                             if _entry(c, outcome) is not None],
                             "reference": "ceiling/dpo - random/dpo" if effect is not None else None}
    return families

