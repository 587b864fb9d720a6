"""The demo's control arms: what a selection strategy is measured against, besides ``random``.

These are demo arms, not library strategies (they read the oracle, which a real pipeline
does not have). Each trains with DPO at the main budget, like the strategies::

    ceiling               the oracle's largest-reward-gap pair of each prompt, labelled by the
                          same simulated annotator (the best a pair selector could pick;
                          with a budget below the prompts, the largest gaps across prompts)
    noiseless             random's pairs with perfect labels (the oracle's order): how much
                          label errors cost; an oracle tie keeps the annotator's coin flip
    easy-random-prompts   easy's pair (least similar) of randomly chosen prompts, same budget:
                          separates easy's choice of pair within a prompt from its choice of
                          prompts (easy ranks prompts by similarity too)

A positive control that does not beat ``random`` says the world or the training cannot show
a selection effect of that size, whatever the strategies do.
"""

from __future__ import annotations

import numpy as np

from realspo.arms.plan import CONTROLS
from realspo.arms.records import Candidates

__all__ = ["CONTROLS", "ceiling_pairs", "control_selection", "oracle_labels", "random_prompts"]
CONTROL_SEED_OFFSET = 20_000  # easy-random-prompts' prompt draw, apart from random's


def ceiling_pairs(cands: Candidates) -> list[int]:
    """Per prompt the candidate pair with the largest oracle reward gap (the first on ties),
    prompts ranked by that gap, largest first (rows of ``cands``' pair arrays)."""
    gap = np.abs(cands.reward_a - cands.reward_b)
    best: dict[int, int] = {}
    for (g, _, _), row in cands.pair_index.items():  # (group, i, j) in ascending order
        if g not in best or gap[row] > gap[best[g]]:
            best[g] = row
    return sorted(best.values(), key=lambda r: (-gap[r], r))


def oracle_labels(cands: Candidates) -> np.ndarray:
    """Perfect labels (P,): A preferred where the oracle ranks it higher; on an oracle tie the
    annotator's own label (there is no right answer)."""
    return np.where(cands.reward_a == cands.reward_b, cands.a_preferred,
                    cands.reward_a > cands.reward_b)


def random_prompts(ranked: list[int], seed: int) -> list[int]:
    """The rows of ``ranked`` (one pair per prompt) in a seeded random order: the first ``n``
    are ``n`` uniformly chosen prompts."""
    order = np.random.default_rng(seed + CONTROL_SEED_OFFSET).permutation(len(ranked))
    return [ranked[i] for i in order]


def control_selection(name: str, cands: Candidates, ranked: dict[str, list[int]], seed: int
                      ) -> tuple[list[int], np.ndarray | None]:
    """Rows of control ``name`` in rank order, and its labels (None: the annotator's).
    ``ranked``: the strategies' ranked rows, with at least ``random`` and ``easy``."""
    if name == "ceiling":
        return ceiling_pairs(cands), None
    if name == "noiseless":
        return ranked["random"], oracle_labels(cands)
    if name == "easy-random-prompts":
        return random_prompts(ranked["easy"], seed), None
    raise ValueError(f"unknown control {name!r}; expected one of {', '.join(CONTROLS)}")
