"""Labels from people (or simulated annotators): answers -> outcomes, columns and a report.

:func:`label_by_answers` aggregates the answers of one export (:mod:`realspo.labels.aggregate`),
and builds the report ``label`` writes beside its output (``<out>.report.json``): what was
read (``answers``), how it was aggregated (``aggregate``), how much the annotators agree
(``agreement``, :mod:`realspo.labels.agreement`) and, when the pairs carry a ``similarity``,
REAL's premise on these labels (``premise``, :mod:`realspo.labels.premise`).
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from realspo.errors import RealspoError
from realspo.labels.aggregate import aggregate_votes, votes_by_pair
from realspo.labels.agreement import agreement_report, agreement_table
from realspo.labels.answers import AnswerRow, Answers
from realspo.labels.premise import premise_report
from realspo.schema import AnnotationPair, hashed_prompt_id


@dataclass
class PeopleLabels:
    """Outcomes in pair order, the extra columns of each pair's row, and the report."""

    outcomes: list[str]
    columns: list[dict[str, Any]]
    report: dict[str, Any]

    def printed(self) -> list[str]:
        """A short table for the terminal: agreement and the premise's verdict."""
        lines = agreement_table(self.report["agreement"])
        premise = self.report.get("premise")
        if premise is not None:
            rho = premise["spearman"]
            shown = ("n/a" if not np.isfinite(rho["ci_low"]) else
                     f"{rho['estimate']:+.3f} [{rho['ci_low']:+.3f}, {rho['ci_high']:+.3f}]")
            lines.append(f"premise: Spearman(similarity, disagreement) {shown} over "
                         f"{premise['pairs']} pairs; {premise['verdict']}")
        return lines


def require_people_extra() -> None:
    """Refuse in one line when the packages for several annotators per pair are missing."""
    import importlib.util

    missing = [name for name in ("crowdkit", "krippendorff", "sklearn", "scipy")
               if importlib.util.find_spec(name) is None]
    if missing:
        raise RealspoError(f"several annotators per pair need {', '.join(missing)}: "
                           "pip install 'realspo[people]'")


def simulated_answers(a_preferred: np.ndarray, pairs: Sequence[AnnotationPair]) -> list[AnswerRow]:
    """AnswerRows of simulated annotators ``sim-1`` ... from their (annotators, N) labels."""
    return [AnswerRow(pair.pair_id, "A" if bool(a_preferred[j, n]) else "B", f"sim-{j + 1}")
            for j in range(a_preferred.shape[0]) for n, pair in enumerate(pairs)]


def _prompt_of(pairs: Sequence[AnnotationPair], rows: Sequence[AnswerRow]) -> dict[str, str]:
    """Pair id -> prompt id (a gold pair, not in ``pairs``, is its own prompt)."""
    out = {p.pair_id: str(p.meta.get("prompt_id") or hashed_prompt_id(p.prompt)) for p in pairs}
    for r in rows:
        out.setdefault(r.pair_id, r.pair_id)
    return out


def label_by_answers(pairs: Sequence[AnnotationPair], answers: Answers, method: str = "majority",
                     min_agreement: float | None = None, seed: int = 0) -> PeopleLabels:
    """Aggregate the answers to one outcome per pair and report agreement and the premise.

    Args:
        pairs: the annotation pairs (the export's pairs, gold ones not among them).
        answers: what :func:`realspo.labels.answers.read_answers` read.
        method: majority, dawid-skene, glad or unanimous.
        min_agreement: leave out pairs whose agreement is below this (counted as contested).
        seed: seed of the bootstrap and of GLAD.

    Returns:
        :class:`PeopleLabels`.
    """
    rows = answers.rows
    ids = [p.pair_id for p in pairs]
    if any(len(v) > 1 for v in votes_by_pair(rows).values()):
        require_people_extra()
    aggregates = aggregate_votes(rows, ids, method, min_agreement, seed)
    per_annotator = Counter(r.annotator for r in rows)
    silent = [who for who in answers.annotators if not any(
        r.annotator == who and r.pair_id not in answers.key.gold for r in rows)]
    if silent and len(ids):
        raise RealspoError(f"annotator {silent[0]!r} answered no pair but the gold ones; "
                           "leave their file out or have them label")
    prompt_of = _prompt_of(pairs, rows)
    by_count = Counter(g.n_annotators for g in aggregates)
    report: dict[str, Any] = {
        "answers": {"annotators": len(per_annotator), "answers": len(rows),
                    "per_annotator": dict(per_annotator),
                    "pairs_by_annotator_count": {str(k): by_count[k] for k in sorted(by_count)},
                    **answers.counts, "export_id": answers.key.export_id},
        "aggregate": {"method": method, "min_agreement": min_agreement,
                      "outcomes": dict(Counter(g.outcome for g in aggregates))},
        "agreement": agreement_report(rows, ids, prompt_of, aggregates, answers.key.gold, seed),
    }
    similarity = {p.pair_id: float(p.meta["similarity"]) for p in pairs
                  if isinstance(p.meta.get("similarity"), (int, float))}
    premise = premise_report(rows, ids, similarity, prompt_of, seed)
    if premise is not None:
        report["premise"] = premise
    columns = [{"n_annotators": g.n_annotators, "agreement": g.agreement,
                **({"confidence": g.confidence} if g.confidence is not None else {})}
               for g in aggregates]
    return PeopleLabels([g.outcome for g in aggregates], columns, report)
