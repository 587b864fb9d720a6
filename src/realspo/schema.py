"""The canonical data model every stage reads and writes.

Input (any supported format, see :mod:`realspo.formats.registry`) becomes a list of
:class:`PromptGroup`::

    PromptGroup
      prompt_id    str         stable id: the row's own id column if it has one
                               (``id``, ``prompt_id``, ``post_id``), else a hash of the prompt
                               text ("p-" + 12 hex chars), with "#2", "#3", ... appended to
                               repeats, so the same file always yields the same ids
      prompt       str         the prompt as plain text; conversational prompts are rendered as
                               "\\n\\nHuman: ...\\n\\nAssistant: ..." turns ending in
                               "\\n\\nAssistant:" (HH-RLHF's convention); system turns as
                               "System: ..." at the start
      responses    list[str]   the candidate responses, in input order (>= 1, non-empty text)
      scores       list[float] | None   one finite score per response, higher is better
      preferences  list[(int, int)]     known labels as (chosen index, rejected index)
      meta         dict        anything else worth carrying (source row, domain, ...)

Response ``j`` of group ``g`` has the id ``f"{prompt_id}/{j}"``. *Flattened order*, the order
of embedding rows in ``--embeddings`` files, is group order, then response order.

Selected pairs are written in one of two tables (see :mod:`realspo.selection.rows`):

* **preference rows** (TRL format) when the input carries labels: ``prompt``, ``chosen``,
  ``rejected`` plus ``prompt_id``, ``chosen_index``, ``rejected_index``, ``chosen_score``,
  ``rejected_score``, ``similarity``, ``strategy``;
* **annotation rows** when it carries none: ``pair_id``, ``prompt``, ``response_a``,
  ``response_b``, ``similarity``, ``prompt_id``, ``index_a``, ``index_b``, ``strategy``.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any


@dataclass
class PromptGroup:
    """A prompt with its candidate responses, optional scores and known preferences."""

    prompt_id: str
    prompt: str
    responses: list[str]
    scores: list[float] | None = None
    preferences: list[tuple[int, int]] = field(default_factory=list)
    meta: dict[str, Any] = field(default_factory=dict)

    @property
    def has_labels(self) -> bool:
        return self.scores is not None or bool(self.preferences)

    def response_ids(self) -> list[str]:
        return [f"{self.prompt_id}/{j}" for j in range(len(self.responses))]


def num_responses(groups: list[PromptGroup]) -> int:
    """Total responses across groups: the row count of a matching embeddings file."""
    return sum(len(g.responses) for g in groups)


def flat_responses(groups: list[PromptGroup]) -> list[str]:
    """All responses in flattened order (group order, then response order)."""
    return [r for g in groups for r in g.responses]
