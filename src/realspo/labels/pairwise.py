"""Pairwise judging: both orders, their average, the tie rule and the position-bias rate.

A pairwise judge (``JudgeEntry.pairwise`` in :mod:`realspo.labels.judges`; the LLM judge of
:mod:`realspo.labels.llm_judge`) is asked about each pair (A, B) twice, A shown first and B
shown first, because a judge that reads both may favour a position. :class:`Comparison`
holds the two answers and what follows from them. A served judge whose reply names neither
response gives ``nan`` for that order: the pair is *unparseable*, counted apart, never a tie.

A *pointwise* judge (``--judge-mode pointwise``) grades each response alone (MT-Bench's
single-answer grading, Zheng et al. 2023): :class:`GradedComparison` holds the two grades and
prefers the higher one, a tie within ``--tie-margin``. No order is shown, so there is no
position bias by construction.
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
        """(N,) P(A preferred), the mean over the two orders (nan where unparseable)."""
        return self.p_orders.mean(axis=1)

    @property
    def unparseable(self) -> np.ndarray:
        """(N,) True where an order's reply named neither response."""
        return np.isnan(self.p_orders).any(axis=1)

    @property
    def disagree(self) -> np.ndarray:
        """(N,) True where the two orders pick different winners (False if unparseable)."""
        winners = np.sign(np.nan_to_num(self.p_orders, nan=0.5) - 0.5)
        return (winners[:, 0] != winners[:, 1]) & ~self.unparseable

    @property
    def outcomes(self) -> list[str]:
        """``"A"``, ``"B"``, ``"tie"`` or ``"unparseable"`` per pair."""
        return ["unparseable" if bad else "tie" if split else "A" if p > 0.5 else "B" if p < 0.5
                else "tie" for bad, split, p in zip(self.unparseable.tolist(),
                                                     self.disagree.tolist(), self.p_a.tolist(),
                                                     strict=True)]

    @property
    def position_bias_rate(self) -> float:
        """Share of parseable pairs whose two orders disagree (nan for none)."""
        judged = int((~self.unparseable).sum())
        return float(self.disagree.sum() / judged) if judged else float("nan")

    def bias_summary(self) -> str:
        """``position-bias rate 0.250 (1 of 4 pairs judged differently in the two orders)``."""
        bad = int(self.unparseable.sum())
        return (f"position-bias rate {self.position_bias_rate:.3f} ({int(self.disagree.sum())} "
                f"of {len(self.p_orders) - bad} pairs judged differently in the two orders)"
                + (f"; {bad} unparseable" if bad else ""))


@dataclass(frozen=True)
class GradedComparison:
    """A pointwise judge's grades of N pairs (A, B): each response graded alone.

    ``grades`` (N, 2): the grade of A and of B in [0, 1] (e.g. P("Yes") against P("No"); nan
    where the reply was unparseable). The pair prefers the higher grade, a tie when
    ``|g_A - g_B| <= tie_margin``. ``p_a = (1 + g_A - g_B) / 2`` plays the part of the
    pairwise P(A preferred); ``p_orders`` repeats it (one reading, no order).
    """

    grades: np.ndarray
    tie_margin: float = 0.0

    @property
    def p_a(self) -> np.ndarray:
        """(N,) ``(1 + g_A - g_B) / 2``."""
        return 0.5 + (self.grades[:, 0] - self.grades[:, 1]) / 2

    @property
    def p_orders(self) -> np.ndarray:
        """(N, 2): ``p_a`` twice."""
        return np.stack([self.p_a, self.p_a], axis=1)

    @property
    def unparseable(self) -> np.ndarray:
        """(N,) True where a grade is missing."""
        return np.isnan(self.grades).any(axis=1)

    @property
    def disagree(self) -> np.ndarray:
        """(N,) all False: nothing is asked in two orders."""
        return np.zeros(len(self.grades), dtype=bool)

    @property
    def outcomes(self) -> list[str]:
        """``"A"``, ``"B"``, ``"tie"`` or ``"unparseable"`` per pair."""
        gap = self.grades[:, 0] - self.grades[:, 1]
        return ["unparseable" if np.isnan(d) else "tie" if abs(d) <= self.tie_margin
                else "A" if d > 0 else "B" for d in gap.tolist()]

    @property
    def position_bias_rate(self) -> float:
        """0.0: pointwise grading shows no order (nan for no pairs)."""
        return 0.0 if len(self.grades) else float("nan")

    def bias_summary(self) -> str:
        """``pointwise grades, no position bias by construction (1 of 4 within --tie-margin 0.05)``."""
        ties = sum(o == "tie" for o in self.outcomes)
        bad = int(self.unparseable.sum())
        return (f"pointwise grades, no position bias by construction ({ties} of "
                f"{len(self.grades)} pairs within --tie-margin {self.tie_margin:g})"
                + (f"; {bad} unparseable" if bad else ""))


Verdicts = Comparison | GradedComparison


class PairwiseJudge(Protocol):
    """Compares two responses to each prompt: P(A preferred), asked in both orders, or the
    two responses graded alone (pointwise)."""

    def compare(self, prompts: Sequence[str], responses_a: Sequence[str],
                responses_b: Sequence[str]) -> Verdicts: ...


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


def grade_pairs(p_yes: Callable[[list[str]], np.ndarray], render: Callable[[str, str], str],
                prompts: Sequence[str], responses_a: Sequence[str], responses_b: Sequence[str],
                tie_margin: float) -> GradedComparison:
    """Grade every response alone in one call: ``p_yes`` (texts -> (M,) grades) on
    ``render(prompt, a)`` for the first N texts and ``render(prompt, b)`` for the next N."""
    rows = list(zip(prompts, responses_a, responses_b, strict=True))
    texts = [render(p, a) for p, a, _ in rows] + [render(p, b) for p, _, b in rows]
    grades = np.asarray(p_yes(texts), dtype=np.float64).reshape(2, len(rows))
    return GradedComparison(grades.T.copy(), tie_margin)
