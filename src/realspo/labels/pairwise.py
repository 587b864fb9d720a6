"""Pairwise judging: both orders, their average, the tie rule and the position-bias rate.

A pairwise judge (``JudgeEntry.pairwise`` in :mod:`realspo.labels.judges`; the LLM judge of
:mod:`realspo.labels.llm_judge`) is asked about each pair (A, B) twice, A shown first and B
shown first, because a judge that reads both may favour a position. :class:`Comparison`
holds the two answers and what follows from them.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Protocol

import numpy as np


@dataclass(frozen=True)
class Comparison:
    """A pairwise judge's verdicts on N pairs (A, B), each asked in both orders.

    ``p_orders`` (N, 2): P(A preferred) asked with A shown first, and with B shown first
    (already flipped to be about A). ``p_a`` is their mean. A pair's outcome is the winner
    both orders agree on, and a tie when they disagree (a probability of exactly 1/2 names
    no winner); the *position-bias rate* is the share of pairs whose two orders disagree.
    """

    p_orders: np.ndarray

    @property
    def p_a(self) -> np.ndarray:
        """(N,) P(A preferred), the mean over the two orders."""
        return self.p_orders.mean(axis=1)

    @property
    def disagree(self) -> np.ndarray:
        """(N,) True where the two orders pick different winners."""
        winners = np.sign(self.p_orders - 0.5)
        return winners[:, 0] != winners[:, 1]

    @property
    def outcomes(self) -> list[str]:
        """``"A"``, ``"B"`` or ``"tie"`` per pair."""
        return ["tie" if split else "A" if p > 0.5 else "B" if p < 0.5 else "tie"
                for split, p in zip(self.disagree.tolist(), self.p_a.tolist(), strict=True)]

    @property
    def position_bias_rate(self) -> float:
        """Share of pairs whose two orders disagree (nan for no pairs)."""
        return float(self.disagree.mean()) if len(self.p_orders) else float("nan")

    def bias_summary(self) -> str:
        """``position-bias rate 0.250 (1 of 4 pairs judged differently in the two orders)``."""
        return (f"position-bias rate {self.position_bias_rate:.3f} ({int(self.disagree.sum())} "
                f"of {len(self.p_orders)} pairs judged differently in the two orders)")


class PairwiseJudge(Protocol):
    """Compares two responses to each prompt: P(A preferred), asked in both orders."""

    def compare(self, prompts: Sequence[str], responses_a: Sequence[str],
                responses_b: Sequence[str]) -> Comparison: ...


def compare_both_orders(p_first: Callable[[list[str]], np.ndarray],
                        render: Callable[[str, str, str], str], prompts: Sequence[str],
                        responses_a: Sequence[str], responses_b: Sequence[str]) -> Comparison:
    """Ask ``p_first`` (texts -> (M,) P(the response shown first is better)) about each pair
    in both orders, in one call: ``render(prompt, a, b)`` for the first N texts,
    ``render(prompt, b, a)`` for the next N. The second order's answer is flipped to be
    about A: ``p_orders = [p(A first), 1 - p(B first)]``."""
    rows = list(zip(prompts, responses_a, responses_b, strict=True))
    texts = [render(p, a, b) for p, a, b in rows] + [render(p, b, a) for p, a, b in rows]
    probs = np.asarray(p_first(texts), dtype=np.float64).reshape(2, len(rows))
    return Comparison(np.stack([probs[0], 1.0 - probs[1]], axis=1))
