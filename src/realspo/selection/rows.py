"""Selected pairs -> output rows: TRL preference rows or annotation-ready rows.

The table layouts are defined once, in :mod:`realspo.schema` (:data:`~realspo.schema.PREFERENCE_COLUMNS`,
:data:`~realspo.schema.ANNOTATION_COLUMNS`), and rows are built by its builders. When the dataset carries any
label (scores or known preferences), every selected pair is oriented by its label and
written as a preference row (``prompt``, ``chosen``, ``rejected`` + metadata); pairs whose
label is a tie, or that have no label, are dropped and counted. Without labels the pairs are
written for annotators (``pair_id``, ``prompt``, ``response_a``, ``response_b`` + metadata),
``response_a`` being the lower response index.

A group that knows which responses were cut at the generation limit (``PromptGroup.finished``)
passes the flags on (``chosen_finished``/``rejected_finished``, ``finished_a``/``finished_b``);
:func:`without_unfinished` leaves cut responses out before selection (``--drop-unfinished``).

Orientation looks at explicit preferences first (a recorded ``(chosen, rejected)`` for the
two responses), then at scores (the higher score is chosen). REAL's public code made the lower
index "chosen" regardless of labels; this module never does.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from realspo.schema import PromptGroup, annotation_row, pair_id, preference_row
from realspo.selection.strategies import Selection

PREFERENCE = "preference"
ANNOTATION = "annotation"
DROP_TIE = "tied scores"
DROP_UNLABELED = "no label for the pair"
DROP_CONFLICT = "conflicting preferences"


def response_keys(groups: list[PromptGroup]) -> np.ndarray:
    """(N,) int64 per response in flattened order, equal for identical texts (compared after
    stripping surrounding whitespace), so that :func:`~realspo.selection.strategies.select_pairs` never
    offers a pair of the same text."""
    ids: dict[str, int] = {}
    return np.fromiter(
        (ids.setdefault(r.strip(), len(ids)) for g in groups for r in g.responses),
        dtype=np.int64,
    )


def pair_label(group: PromptGroup, i: int, j: int) -> tuple[tuple[int, int] | None, str | None]:
    """``((chosen, rejected), None)`` for responses ``i`` and ``j`` of ``group``, or
    ``(None, reason)`` when the label cannot orient them (tie, none, or a conflict)."""
    prefs = set(group.preferences)
    forward, backward = (i, j) in prefs, (j, i) in prefs
    if forward and backward:
        return None, DROP_CONFLICT
    if forward:
        return (i, j), None
    if backward:
        return (j, i), None
    if group.scores is None:
        return None, DROP_UNLABELED
    si, sj = group.scores[i], group.scores[j]
    if si > sj:
        return (i, j), None
    if sj > si:
        return (j, i), None
    return None, DROP_TIE


def orient_pair(group: PromptGroup, i: int, j: int) -> tuple[int, int] | None:
    """``(chosen, rejected)`` by explicit preference, else by score; None for a tie or no label."""
    return pair_label(group, i, j)[0]


def output_kind(groups: list[PromptGroup]) -> str:
    """``"preference"`` when any group carries labels, else ``"annotation"``."""
    return PREFERENCE if any(g.has_labels for g in groups) else ANNOTATION


def _score(group: PromptGroup, index: int) -> float | None:
    return None if group.scores is None else float(group.scores[index])


def _finished_columns(group: PromptGroup, names: tuple[str, str], a: int, b: int) -> dict[str, bool]:
    if group.finished is None:
        return {}
    return {names[0]: group.is_finished(a), names[1]: group.is_finished(b)}


def without_unfinished(groups: list[PromptGroup], embeddings: np.ndarray | None
                       ) -> tuple[list[PromptGroup], np.ndarray | None, list[tuple[int, list[int]]], int]:
    """Groups without their cut responses (and the matching embedding rows).

    Returns ``(groups, embeddings, origin, dropped)``: ``origin[g]`` is ``(original group index,
    original response index of each kept response)`` for :func:`restore_indices`; a group left
    with no response is left out; ``dropped`` counts the responses removed.
    """
    kept_groups, origin, rows, start, dropped = [], [], [], 0, 0
    for g, group in enumerate(groups):
        keep = [j for j in range(len(group.responses)) if group.is_finished(j)]
        dropped += len(group.responses) - len(keep)
        if keep:
            kept_groups.append(PromptGroup(
                group.prompt_id, group.prompt, [group.responses[j] for j in keep],
                None if group.scores is None else [group.scores[j] for j in keep],
                [(keep.index(c), keep.index(r)) for c, r in group.preferences if c in keep and r in keep],
                group.meta, [True] * len(keep) if group.finished is not None else None))
            origin.append((g, keep))
            rows.extend(start + j for j in keep)
        start += len(group.responses)
    return kept_groups, None if embeddings is None else embeddings[rows], origin, dropped


def restore_indices(selection: Selection, origin: list[tuple[int, list[int]]]) -> Selection:
    """A selection over :func:`without_unfinished`'s groups, in the original groups' indices."""
    from dataclasses import replace

    groups = selection.group_index.tolist()
    return replace(
        selection, group_index=np.asarray([origin[g][0] for g in groups], dtype=np.int64),
        index_a=np.asarray([origin[g][1][a] for g, a in zip(groups, selection.index_a.tolist(), strict=True)],
                           dtype=np.int64),
        index_b=np.asarray([origin[g][1][b] for g, b in zip(groups, selection.index_b.tolist(), strict=True)],
                           dtype=np.int64))


def build_rows(
    groups: list[PromptGroup], selection: Selection, strategy: str
) -> tuple[list[dict[str, Any]], dict[str, int], str]:
    """Rows for the selected pairs, in selection (rank) order.

    Args:
        groups: the prompt groups the selection was made over.
        selection: the pairs :func:`realspo.selection.strategies.select_pairs` chose.
        strategy: the strategy's name, written in each row.

    Returns:
        ``(rows, dropped, kind)``: the rows, TRL preference rows for labelled input (each pair
        oriented by its label) or annotation rows otherwise; ``dropped``, a reason (``tied
        scores``, ``no label for the pair``, ``conflicting preferences``) -> the number of
        pairs dropped for it; and ``kind``, ``"preference"`` or ``"annotation"`` (see
        :func:`output_kind`).
    """
    kind = output_kind(groups)
    rows: list[dict[str, Any]] = []
    dropped: dict[str, int] = {}
    for g, a, b, sim in zip(
        selection.group_index.tolist(), selection.index_a.tolist(),
        selection.index_b.tolist(), selection.similarity.tolist(), strict=True,
    ):
        group = groups[g]
        if kind == ANNOTATION:
            rows.append(annotation_row(
                pair_id(group.prompt_id, a, b), group.prompt, group.responses[a], group.responses[b],
                similarity=float(sim), prompt_id=group.prompt_id, index_a=a, index_b=b,
                strategy=strategy, **_finished_columns(group, ("finished_a", "finished_b"), a, b)))
            continue
        oriented, reason = pair_label(group, a, b)
        if oriented is None:
            dropped[reason] = dropped.get(reason, 0) + 1  # type: ignore[index]
            continue
        chosen, rejected = oriented
        rows.append(preference_row(
            group.prompt, group.responses[chosen], group.responses[rejected],
            prompt_id=group.prompt_id, chosen_index=chosen, rejected_index=rejected,
            chosen_score=_score(group, chosen), rejected_score=_score(group, rejected),
            similarity=float(sim), strategy=strategy,
            **_finished_columns(group, ("chosen_finished", "rejected_finished"), chosen, rejected)))
    return rows, dropped, kind
