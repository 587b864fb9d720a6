"""Several answers per pair -> one label: majority, Dawid-Skene, GLAD or unanimity.

A pair's *votes* are its answers A, B or tie (a skip is no vote). :func:`aggregate_votes`
gives every pair an outcome (:mod:`realspo.labels.outcomes`): the aggregate label, or
``"contested"`` when the votes do not settle it (a split majority, a disagreement under
``unanimous``, or an agreement below ``min_agreement``), ``"skip"`` when every answer was a
skip and ``"unanswered"`` when nobody answered. The model-based methods come from
`crowd-kit <https://github.com/Toloka/crowd-kit>`_: Dawid & Skene (1979) learn a confusion
matrix per annotator by EM; GLAD (Whitehill et al. 2009) learns an ability per annotator and
a difficulty per pair. Their posterior probability of the chosen label is its ``confidence``.
"""

from __future__ import annotations

import warnings
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass

from realspo.errors import ConfigError
from realspo.labels.answers import AnswerRow

METHODS = ("majority", "dawid-skene", "glad", "unanimous")
VOTES = ("A", "B", "tie")


@dataclass(frozen=True)
class Aggregate:
    """One pair's aggregate: its outcome, how many voted, the share of votes that agree with
    the label (None without one) and the model's posterior of it (model-based methods)."""

    outcome: str
    n_annotators: int
    agreement: float | None = None
    confidence: float | None = None


def votes_by_pair(rows: Sequence[AnswerRow]) -> dict[str, dict[str, str]]:
    """``{pair_id: {annotator: vote}}`` over the A/B/tie answers."""
    votes: dict[str, dict[str, str]] = {}
    for r in rows:
        if r.answer in VOTES:
            votes.setdefault(r.pair_id, {})[r.annotator] = r.answer
    return votes


def _crowdkit_probabilities(votes: dict[str, dict[str, str]], method: str, seed: int
                            ) -> dict[str, dict[str, float]]:
    """Posterior label probabilities per pair from crowd-kit's ``method``."""
    import pandas as pd
    from crowdkit.aggregation import GLAD, DawidSkene, MajorityVote

    frame = pd.DataFrame([{"task": p, "worker": w, "label": v}
                          for p, by in votes.items() for w, v in by.items()])
    if method == "majority":
        model = MajorityVote()
    elif method == "dawid-skene":
        model = DawidSkene(n_iter=100)
    else:
        import numpy as np

        np.random.seed(seed)  # GLAD's initialisation draws from numpy's global generator
        model = GLAD(n_iter=100, silent=True)
    with warnings.catch_warnings():  # crowd-kit's own pandas deprecations, nothing of ours
        warnings.simplefilter("ignore")
        probas = model.fit(frame).probas_
    return {str(task): {str(label): float(p) for label, p in row.items()}
            for task, row in probas.iterrows()}


def aggregate_votes(rows: Sequence[AnswerRow], pair_ids: Sequence[str], method: str = "majority",
                    min_agreement: float | None = None, seed: int = 0) -> list[Aggregate]:
    """One :class:`Aggregate` per pair of ``pair_ids`` (in that order).

    Args:
        rows: the answers (gold pairs' answers may be among them; only ``pair_ids`` count).
        pair_ids: the pairs to label.
        method: majority, dawid-skene, glad or unanimous.
        min_agreement: leave out (as ``"contested"``) pairs whose agreement is below this.
        seed: seed of GLAD's initialisation.

    Returns:
        The aggregates, in ``pair_ids`` order.
    """
    if method not in METHODS:
        raise ConfigError(f"--aggregate {method}: expected one of {', '.join(METHODS)}")
    if min_agreement is not None and not 0 <= min_agreement <= 1:
        raise ConfigError(f"--min-agreement {min_agreement}: expected a number in [0, 1]")
    wanted = set(pair_ids)
    votes = {p: v for p, v in votes_by_pair(rows).items() if p in wanted}
    answered = {r.pair_id for r in rows}
    several = any(len(v) > 1 for v in votes.values())
    model_based = method in ("dawid-skene", "glad")
    probabilities = (_crowdkit_probabilities(votes, method, seed)
                     if votes and method != "unanimous" and (several or model_based) else {})
    out = []
    for pair_id in pair_ids:
        by = votes.get(pair_id)
        if not by:
            out.append(Aggregate("skip" if pair_id in answered else "unanswered", 0))
            continue
        counts = Counter(by.values())
        if pair_id in probabilities:
            probs = probabilities[pair_id]
            best = max(probs.values())
            top = [label for label, p in probs.items() if p >= best - 1e-9]
            outcome = top[0] if len(top) == 1 else "contested"
            confidence = best if model_based and outcome != "contested" else None
        else:  # one vote, or unanimous
            outcome = next(iter(counts)) if len(counts) == 1 else "contested"
            confidence = None
        n = sum(counts.values())
        agreement = counts[outcome] / n if outcome != "contested" else max(counts.values()) / n
        if min_agreement is not None and agreement < min_agreement:
            outcome = "contested"
        out.append(Aggregate(outcome, n, agreement, confidence))
    return out
