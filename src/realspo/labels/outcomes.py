"""Outcomes of pairs and the preference rows they give.

Every label source produces one *outcome* per annotation pair, ``"A"``, ``"B"``, ``"tie"`` or
``"skip"`` (``"unanswered"`` for a human task left blank, ``"unparseable"`` for a served
judge's reply that named no response): from scores already present
(:func:`pair_scores` + :func:`outcome_of`), from a judge's rewards (:func:`judge_pairs`), from
a pairwise judge's comparison (:func:`compare_pairs`), from
annotators (:mod:`realspo.labels.annotation`) or from the simulated annotator
(:mod:`realspo.labels.annotator`). :func:`labeled_rows` turns outcomes into preference rows
(:func:`realspo.schema.preference_row`), dropping ties, skips and blanks, and counts them in a
:class:`LabelReport`.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from realspo.labels.annotator import label_errors
from realspo.labels.judges import Judge
from realspo.labels.pairwise import PairwiseJudge, Verdicts
from realspo.schema import AnnotationPair, preference_row
from realspo.sources import finite_float


def outcome_of(score_a: float, score_b: float) -> str:
    """``"A"``, ``"B"`` or ``"tie"`` from two scores (higher is better)."""
    return "A" if score_a > score_b else "B" if score_b > score_a else "tie"


def pair_scores(pairs: Sequence[AnnotationPair], candidates: str | None = None) -> np.ndarray:
    """(N, 2) scores of each pair's A and B: the rows' ``score_a``/``score_b``, or else the
    ``scores`` of a multi-completion ``candidates`` file looked up by prompt_id and index."""
    groups = None
    if candidates is not None:
        from realspo.formats.registry import load_groups

        loaded, _ = load_groups(candidates)
        groups = {g.prompt_id: g for g in loaded}
    out = np.empty((len(pairs), 2))
    for n, pair in enumerate(pairs):
        for k, side in enumerate("ab"):
            if f"score_{side}" in pair.meta:
                out[n, k] = finite_float(pair.row, pair.meta[f"score_{side}"], f"score_{side}")
                continue
            if groups is None:
                raise pair.row.error("missing; pass --candidates FILE holding the responses' "
                                     "scores, or label another way", f"score_{side}")
            group = groups.get(str(pair.meta.get("prompt_id")))
            index = pair.meta.get(f"index_{side}")
            if group is None or group.scores is None or not isinstance(index, int) \
                    or not 0 <= index < len(group.scores):
                raise pair.row.error(f"no score for prompt_id {pair.meta.get('prompt_id')!r} "
                                     f"index {index!r} in {candidates}", f"index_{side}")
            out[n, k] = group.scores[index]
    return out


def judge_pairs(judge: Judge, pairs: Sequence[AnnotationPair]) -> np.ndarray:
    """(N, 2) rewards of each pair's (A, B) under ``judge``, in one call."""
    rewards = judge([p.prompt for p in pairs] * 2,
                    [p.response_a for p in pairs] + [p.response_b for p in pairs])
    return np.asarray(rewards, dtype=np.float64).reshape(2, len(pairs)).T


def compare_pairs(judge: PairwiseJudge, pairs: Sequence[AnnotationPair]) -> tuple[np.ndarray, Verdicts]:
    """A pairwise judge's verdicts on the pairs (both orders, one call) and (N, 2) scores of
    (A, B): the probabilities that each is preferred, ``(p_a, 1 - p_a)``."""
    comparison = judge.compare([p.prompt for p in pairs], [p.response_a for p in pairs],
                               [p.response_b for p in pairs])
    return np.stack([comparison.p_a, 1.0 - comparison.p_a], axis=1), comparison


@dataclass
class LabelReport:
    """Counts of one labeling run, and the label-error rate when an oracle was given."""

    pairs: int
    labeled: int
    tied: int
    skipped: int
    unanswered: int = 0
    unparseable: int = 0  # a served judge's replies that named no response
    contested: int = 0  # several annotators who did not settle the pair (see labels.aggregate)
    oracle_compared: int = 0  # labeled pairs the oracle orders (not an oracle tie)
    label_errors: int = 0
    label_error_rate: float | None = None
    judge_bias: str | None = None  # a pairwise judge's position-bias summary

    def summary(self) -> str:
        text = (f"labeled {self.labeled} of {self.pairs} pairs (tied {self.tied}, skipped "
                f"{self.skipped}" + (f", unanswered {self.unanswered}" if self.unanswered else "")
                + (f", unparseable {self.unparseable}" if self.unparseable else "")
                + (f", contested {self.contested}" if self.contested else "") + ")")
        if self.judge_bias is not None:
            text += f"; judge {self.judge_bias}"
        if self.label_error_rate is not None:
            text += (f"; label-error rate vs the oracle {self.label_error_rate:.3f} "
                     f"({self.label_errors} of {self.oracle_compared})")
        return text


def _finished(pair: AnnotationPair, chosen: int, rejected: int) -> dict[str, bool]:
    """``chosen_finished``/``rejected_finished`` from the pair's ``finished_a``/``finished_b``
    (carried only when the pair has them: absent means finished)."""
    flags = [pair.meta.get("finished_a"), pair.meta.get("finished_b")]
    if flags == [None, None]:
        return {}
    done = [f is not False for f in flags]
    return {"chosen_finished": done[chosen], "rejected_finished": done[rejected]}


def labeled_rows(pairs: Sequence[AnnotationPair], outcomes: Sequence[str], label_source: str,
                 scores: np.ndarray | None = None,
                 oracle: np.ndarray | None = None,
                 columns: Sequence[dict[str, Any]] | None = None
                 ) -> tuple[list[dict[str, Any]], LabelReport]:
    """Preference rows for the pairs labeled A or B, and the counts.

    ``scores``/``oracle``: optional (N, 2) rewards of (A, B) from the label source / an oracle;
    they become ``chosen_score``/``rejected_score`` and ``oracle_chosen``/``oracle_rejected``
    (+ ``label_error``: True, False, or None on an oracle tie). ``columns``: per pair, more
    preference columns (``n_annotators``, ``agreement``, ``confidence`` of aggregated answers).
    """
    rows, counts = [], {"tie": 0, "skip": 0, "unanswered": 0, "unparseable": 0, "contested": 0}
    errors = compared = 0
    for n, (pair, outcome) in enumerate(zip(pairs, outcomes, strict=True)):
        if outcome not in ("A", "B"):
            counts[outcome] += 1
            continue
        c, r = (0, 1) if outcome == "A" else (1, 0)
        texts = (pair.response_a, pair.response_b)
        index = (pair.meta.get("index_a"), pair.meta.get("index_b"))
        judged: dict[str, Any] = {}
        if oracle is not None:
            error = label_errors(outcome == "A", oracle[n, 0], oracle[n, 1])
            wrong = None if np.isnan(error) else bool(error)
            judged = {"oracle_chosen": float(oracle[n, c]), "oracle_rejected": float(oracle[n, r]),
                      "label_error": wrong}
            compared += wrong is not None
            errors += bool(wrong)
        rows.append(preference_row(
            pair.prompt, texts[c], texts[r], pair_id=pair.pair_id,
            prompt_id=pair.meta.get("prompt_id"), chosen_index=index[c], rejected_index=index[r],
            chosen_score=None if scores is None else float(scores[n, c]),
            rejected_score=None if scores is None else float(scores[n, r]),
            similarity=pair.meta.get("similarity"), strategy=pair.meta.get("strategy"),
            label_source=label_source, **judged, **_finished(pair, c, r),
            **(columns[n] if columns is not None else {})))
    report = LabelReport(len(pairs), len(rows), counts["tie"], counts["skip"], counts["unanswered"],
                         counts["unparseable"], counts["contested"], compared, errors,
                         errors / compared if compared else None)
    return rows, report
