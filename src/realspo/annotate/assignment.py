"""Each annotator's queue: the pairs ``labels/assignment.py`` deals them, in an order of
their own, with the gold pairs mixed in."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from realspo.labels.assignment import assign_pairs


def annotator_queues(pair_ids: Sequence[str], annotators: Sequence[str], overlap: int,
                     seed: int = 0, gold_ids: Sequence[str] = ()) -> dict[str, list[str]]:
    """Each annotator's queue: every pair given to exactly ``overlap`` distinct annotators.

    The dealing is :func:`realspo.labels.assignment.assign_pairs` (balanced: queue lengths
    differ by at most one); gold pairs go to everyone; each queue is then shuffled (seeded), so
    position says nothing about a pair.

    Args:
        pair_ids: the pairs to label.
        annotators: the annotators' names (distinct).
        overlap: how many annotators label each pair, 1 to ``len(annotators)``.
        seed: seed of the dealing and of each queue's order.
        gold_ids: pairs with a known answer, given to everyone.

    Returns:
        annotator -> pair ids in the order they are shown.
    """
    dealt = assign_pairs(len(pair_ids), len(annotators), overlap, seed)
    rng = np.random.default_rng([seed, 2])
    queues = {}
    for name, indices in zip(annotators, dealt, strict=True):
        queue = [pair_ids[i] for i in indices] + list(gold_ids)
        queues[name] = [queue[i] for i in rng.permutation(len(queue))]
    return queues
