"""Does REAL's premise hold in this run's candidates? The within-prompt rank correlation of
similarity with the reward gap, and the rule that withholds a verdict on REAL when it is weak.

REAL picks, *within each prompt*, the pair whose responses are least alike, betting that such
pairs differ most in quality (and are labelled most reliably). So the number that matters is
how similarity ranks against ``|reward gap|`` among one prompt's pairs, not across prompts
(a prompt with long answers can have both lower similarities and larger gaps than another
without REAL gaining anything). Per prompt with at least three candidate pairs whose
similarities and gaps are not all equal, Spearman's rho of (similarity, |oracle reward gap|);
the run's number is the mean over those prompts, pooled over seeds, with a hierarchical
bootstrap interval (seeds, then prompts). A strongly negative value means the premise holds:
dissimilar pairs are the pairs with large gaps.

The report draws no conclusion about REAL (``easy`` against ``random`` and the other
strategies) when the estimate is weaker than :data:`PREMISE_THRESHOLD` (-0.4): there the
method's premise is absent, and a null or a loss says nothing about the method where its premise
holds. It says so in place of the verdict.
"""

from __future__ import annotations

from collections import defaultdict
from typing import Any

import numpy as np

from realspo.arms.analysis import rank_correlation
from realspo.arms.records import Candidates
from realspo.evaluation.statistics import hierarchical_bootstrap

PREMISE_THRESHOLD = -0.4


def per_prompt_spearman(cands: Candidates) -> np.ndarray:
    """Spearman(similarity, |reward gap|) within each prompt that has a defined value."""
    rows: dict[int, list[int]] = defaultdict(list)
    for (g, _, _), row in cands.pair_index.items():
        rows[g].append(row)
    gap = np.abs(cands.reward_a - cands.reward_b)
    rhos = [rank_correlation(cands.similarity[r], gap[r]) for r in rows.values() if len(r) >= 3]
    return np.asarray([r for r in rhos if not np.isnan(r)], dtype=np.float64)


def within_prompt_spearman(pairs: dict[int, Candidates], resamples: int = 2000
                           ) -> dict[str, Any] | None:
    """The run's within-prompt Spearman (module docstring): estimate, 95% interval, the
    prompts it rests on, per seed, and whether the premise holds (estimate <= -0.4)."""
    return pooled_spearman({seed: per_prompt_spearman(c) for seed, c in pairs.items()}, resamples)


def pooled_spearman(per_seed: dict[int, Any], resamples: int = 2000) -> dict[str, Any] | None:
    """:func:`within_prompt_spearman` from each seed's per-prompt values (what
    :func:`per_prompt_spearman` returns; a leaderboard saves them in its ``runs.json``)."""
    per_seed = {seed: np.asarray(v, dtype=np.float64) for seed, v in sorted(per_seed.items())}
    samples = [v for v in per_seed.values() if v.size]
    if not samples:
        return None
    b = hierarchical_bootstrap(samples, resamples, seed=5)
    return {"estimate": b["estimate"], "ci_low": b["ci_low"], "ci_high": b["ci_high"],
            "prompts": int(sum(v.size for v in samples)),
            "per_seed": {str(s): float(v.mean()) if v.size else None for s, v in per_seed.items()},
            "threshold": PREMISE_THRESHOLD, "holds": bool(b["estimate"] <= PREMISE_THRESHOLD)}


def premise_line(check: dict[str, Any] | None) -> str:
    """One sentence for the report: the measured value and what the report does with it."""
    if check is None:
        return ("REAL's premise could not be measured (no prompt with three or more candidate "
                "pairs): no conclusion about REAL is drawn.")
    value = (f"within-prompt Spearman(similarity, |reward gap|) {check['estimate']:+.3f} "
             f"[{check['ci_low']:+.3f}, {check['ci_high']:+.3f}] over {check['prompts']} prompts")
    if check["holds"]:
        return (f"REAL's premise holds in these candidates: {value}, at or below "
                f"{PREMISE_THRESHOLD:+.1f} (dissimilar pairs are the pairs with large reward gaps).")
    return (f"REAL's premise does not hold in these candidates: {value}, weaker than "
            f"{PREMISE_THRESHOLD:+.1f}. The report draws no conclusion about REAL's selection "
            f"here: a null or a loss in a world without the premise says nothing about REAL "
            f"where it holds.")


WORLDS = {
    "default": "`default`: quality lives in hidden facts; a wrong answer reads like a right one.",
    "premise": "`premise` (a positive control for REAL): every response opens with a ladder of "
               "0 to 4 hedge sentences, more the worse its content, which the oracle ignores.",
    "omissions": "`omissions` (a positive control for SPO): only questions asking for two or "
                 "more facts; answers state true asked facts, all or some, so removing key "
                 "content lowers the reward.",
}


def world_text(config: dict[str, Any]) -> str:
    """The report's line on the world and where the candidates came from (``config``: the
    plan as in results.json)."""
    world = config["world"]
    source = ("the world's own writer (fresh draws from the SFT corpus's distribution; the SFT "
              "model's samples lose the ladder's coupling)" if config.get("candidates") == "world"
              else "samples of the SFT model")
    extra = f", register coupling RHO = {world['coupling']:g}" if world.get("coupling") else ""
    return (f"{WORLDS[world.get('kind', 'default')]} Candidates: {source}; annotator confusion "
            f"K = {config.get('annotator_confusion', 0):g}{extra}.")


def withheld(results: dict[str, Any], comparison: dict[str, Any]) -> bool:
    """True when ``comparison`` judges REAL's selection (a strategy against random, or easy's
    pairs against anything) in a run whose premise check did not hold (or was not made)."""
    check = results.get("premise_check")
    if check is not None and check.get("holds"):
        return False
    return comparison.get("kind") == "strategy" or comparison["a"].startswith("easy")


WITHHELD = "no conclusion (REAL's premise does not hold here)"
