"""Which annotator labels which pair: each pair by exactly ``overlap`` annotators, balanced."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from realspo.errors import ConfigError


def assign_pairs(pair_ids: Sequence[str], annotators: Sequence[str], overlap: int,
                 seed: int = 0, gold_ids: Sequence[str] = ()) -> dict[str, list[str]]:
    """Each annotator's queue: every pair given to exactly ``overlap`` distinct annotators.

    Pairs are dealt round-robin in a seeded random order, so queue lengths differ by at most
    one and every set of ``overlap`` consecutive annotators shares pairs (agreement can be
    measured between every neighbour). Gold pairs go to every annotator. Each queue is then
    shuffled (seeded), gold pairs mixed in, so position says nothing about a pair.

    Args:
        pair_ids: the pairs to label.
        annotators: the annotators' names (distinct).
        overlap: how many annotators label each pair, 1 to ``len(annotators)``.
        seed: seed of the dealing and of each queue's order.
        gold_ids: pairs with a known answer, given to everyone.

    Returns:
        annotator -> pair ids in the order they are shown.
    """
    if not 1 <= overlap <= len(annotators):
        raise ConfigError(f"--overlap {overlap}: must be between 1 and the number of "
                          f"annotators ({len(annotators)})")
    rng = np.random.default_rng(seed)
    queues: dict[str, list[str]] = {name: [] for name in annotators}
    dealt = [pair_ids[i] for i in rng.permutation(len(pair_ids))]
    for i, pair_id in enumerate(dealt):
        for j in range(overlap):
            queues[annotators[(i * overlap + j) % len(annotators)]].append(pair_id)
    for name in annotators:
        queue = queues[name] + list(gold_ids)
        queues[name] = [queue[i] for i in rng.permutation(len(queue))]
    return queues
