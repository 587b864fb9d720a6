"""The canonical data model every stage reads and writes: prompt groups and the two row tables.

Input (any supported format, see :mod:`realspo.formats.registry`) becomes a list of
:class:`PromptGroup`::

    PromptGroup
      prompt_id    str         stable id: the row's own id column if it has one
                               (``id``, ``prompt_id``, ``post_id``), else :func:`hashed_prompt_id`
                               of the prompt text ("p-" + 12 hex chars), with "#2", "#3", ...
                               appended to repeats, so the same file always yields the same ids
      prompt       str         the prompt as plain text; conversational prompts are rendered as
                               "\\n\\nHuman: ...\\n\\nAssistant: ..." turns ending in
                               "\\n\\nAssistant:" (HH-RLHF's convention); system turns as
                               "System: ..." at the start
      responses    list[str]   the candidate responses, in input order (>= 1, non-empty text)
      scores       list[float] | None   one finite score per response, higher is better
      preferences  list[(int, int)]     known labels as (chosen index, rejected index)
      meta         dict        anything else worth carrying (source row, domain, ...)
      finished     list[bool] | None    per response: False if it was cut at the generation
                               limit (no EOS); None: all finished

Response ``j`` of group ``g`` has the id ``f"{prompt_id}/{j}"``. *Flattened order*, the order
of embedding rows in ``--embeddings`` files, is group order, then response order.

Pairs travel between stages in one of two tables, whose columns (in their order, with their
meaning) are :data:`PREFERENCE_COLUMNS` and :data:`ANNOTATION_COLUMNS`:

* **preference rows** (TRL format): ``prompt``, ``chosen``, ``rejected`` plus metadata; written
  by ``select`` (labeled input), ``label`` and the demo, read by ``train`` and ``evaluate``;
* **annotation rows**: ``pair_id``, ``prompt``, ``response_a``, ``response_b`` plus metadata;
  written by ``select`` (unlabeled input), read by ``label``.

Rows are built only by :func:`preference_row` / :func:`annotation_row` and read only by
:func:`read_preference_rows` / :func:`read_annotation_rows`, whose errors name the file, the
row, the field and what was expected.
"""

from __future__ import annotations

import hashlib
import math
import os
from dataclasses import dataclass, field
from typing import Any

from realspo.errors import InputError
from realspo.sources import Row, read_rows


@dataclass
class PromptGroup:
    """A prompt with its candidate responses, optional scores and known preferences."""

    prompt_id: str
    prompt: str
    responses: list[str]
    scores: list[float] | None = None
    preferences: list[tuple[int, int]] = field(default_factory=list)
    meta: dict[str, Any] = field(default_factory=dict)
    finished: list[bool] | None = None

    def is_finished(self, index: int) -> bool:
        """Whether response ``index`` ended on its own (not cut at the generation limit)."""
        return self.finished is None or bool(self.finished[index])

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


# --- ids ----------------------------------------------------------------------------------


def hashed_prompt_id(prompt: str) -> str:
    """The id of a prompt that has none of its own: ``"p-"`` + 12 hex digits of its SHA-256."""
    return "p-" + hashlib.sha256(prompt.encode("utf-8")).hexdigest()[:12]


def pair_id(prompt_id: str, index_a: int, index_b: int) -> str:
    """The id of the pair of responses ``index_a`` and ``index_b`` of a prompt: ``"q7:0-3"``."""
    return f"{prompt_id}:{index_a}-{index_b}"


# --- the two tables -----------------------------------------------------------------------


@dataclass(frozen=True)
class Column:
    """One column of a row table: its name and what it holds."""

    name: str
    meaning: str


PREFERENCE_COLUMNS: tuple[Column, ...] = (
    Column("prompt", "the prompt (a string, or a TRL list of {role, content} messages)"),
    Column("chosen", "the preferred response (string or message list, non-empty)"),
    Column("rejected", "the other response (string or message list, non-empty)"),
    Column("pair_id", "the annotation row's pair id (rows written by `label`)"),
    Column("prompt_id", "the prompt group's id"),
    Column("chosen_index", "index of the chosen response in its prompt group"),
    Column("rejected_index", "index of the rejected response in its prompt group"),
    Column("chosen_score", "score of the chosen response (None without scores)"),
    Column("rejected_score", "score of the rejected response (None without scores)"),
    Column("similarity", "cosine similarity of the two responses' embeddings"),
    Column("strategy", "the selection strategy that chose the pair"),
    Column("label_source", "where the label came from: scores, reward-model, human, simulated"),
    Column("oracle_chosen", "oracle reward of the chosen response"),
    Column("oracle_rejected", "oracle reward of the rejected response"),
    Column("label_error", "True if the label disagrees with the oracle, None on an oracle tie"),
    Column("n_annotators", "people (or simulated annotators) who answered the pair A, B or tie"),
    Column("agreement", "share of those answers that agree with the aggregate label"),
    Column("confidence", "posterior probability of the aggregate label (dawid-skene, glad)"),
    Column("ref_chosen_logps", "precomputed summed reference log-prob of chosen (<= 0)"),
    Column("ref_rejected_logps", "precomputed summed reference log-prob of rejected (<= 0)"),
    Column("chosen_finished", "False if chosen was cut at the generation limit (gets no EOS); "
                              "absent: finished"),
    Column("rejected_finished", "False if rejected was cut at the generation limit; absent: finished"),
)
"""Preference-row columns in their order; ``prompt``, ``chosen``, ``rejected`` are required."""

ANNOTATION_COLUMNS: tuple[Column, ...] = (
    Column("pair_id", "unique id of the pair, see :func:`pair_id` (read: defaults to row-{i})"),
    Column("prompt", "the prompt text"),
    Column("response_a", "the response with the lower index (non-empty text)"),
    Column("response_b", "the response with the higher index (non-empty text)"),
    Column("similarity", "cosine similarity of the two responses' embeddings"),
    Column("prompt_id", "the prompt group's id"),
    Column("index_a", "index of response_a in its prompt group"),
    Column("index_b", "index of response_b in its prompt group"),
    Column("strategy", "the selection strategy that chose the pair"),
    Column("score_a", "score of response_a, if known (used by `label --from-scores`)"),
    Column("score_b", "score of response_b, if known"),
    Column("finished_a", "False if response_a was cut at the generation limit; absent: finished"),
    Column("finished_b", "False if response_b was cut at the generation limit; absent: finished"),
)
"""Annotation-row columns in their order; ``prompt``, ``response_a``, ``response_b`` are required."""

# The columns of both tables that hold numbers or flags: a CSV file brings every cell back
# as text, so :func:`typed_cells` turns these back into what was written (an empty cell: None).
COLUMN_TYPES: dict[str, type] = {
    **dict.fromkeys(("chosen_index", "rejected_index", "index_a", "index_b"), int),
    **dict.fromkeys(("chosen_score", "rejected_score", "similarity", "oracle_chosen",
                     "oracle_rejected", "ref_chosen_logps", "ref_rejected_logps", "score_a",
                     "score_b"), float),
    **dict.fromkeys(("label_error", "chosen_finished", "rejected_finished"), bool),
}


def typed_cells(row: Row) -> None:
    """Convert, in place, the text cells of the :data:`COLUMN_TYPES` columns of ``row`` (a CSV
    row) to their types; a blank cell becomes None; anything else is an error naming the cell.

    Args:
        row: one row as read; cells that are not text are left as they are.
    """
    for name, kind in COLUMN_TYPES.items():
        value = row.data.get(name)
        if not isinstance(value, str):
            continue
        text = value.strip()
        try:
            if not text:
                converted: Any = None
            elif kind is bool:
                converted = {"true": True, "1": True, "yes": True, "false": False, "0": False,
                             "no": False}[text.lower()]
            else:
                converted = kind(text)
        except (ValueError, KeyError):
            raise row.error(f"expected {'true or false' if kind is bool else 'a number'}, got "
                            f"{value!r:.40}", name) from None
        row.data[name] = converted


PREFERENCE_TEXTS = ("prompt", "chosen", "rejected")
ANNOTATION_TEXTS = ("prompt", "response_a", "response_b")
REFERENCE_LOGPS = ("ref_chosen_logps", "ref_rejected_logps")


def _in_column_order(table: str, columns: tuple[Column, ...], values: dict[str, Any]) -> dict[str, Any]:
    names = [c.name for c in columns]
    unknown = sorted(set(values) - set(names))
    if unknown:
        raise TypeError(f"not a {table} column: {', '.join(unknown)} (columns: {', '.join(names)})")
    return {name: values[name] for name in names if name in values}


def preference_row(prompt: Any, chosen: Any, rejected: Any, **columns: Any) -> dict[str, Any]:
    """A preference row: the three texts plus the given metadata :data:`PREFERENCE_COLUMNS`,
    in the table's column order (a column given as None is written as null; one not given
    is not written)."""
    return _in_column_order("preference", PREFERENCE_COLUMNS,
                            {"prompt": prompt, "chosen": chosen, "rejected": rejected, **columns})


def annotation_row(pair_id: str, prompt: str, response_a: str, response_b: str,
                   **columns: Any) -> dict[str, Any]:
    """An annotation row: id, prompt and both responses plus the given metadata
    :data:`ANNOTATION_COLUMNS`, in the table's column order."""
    return _in_column_order("annotation", ANNOTATION_COLUMNS,
                            {"pair_id": pair_id, "prompt": prompt, "response_a": response_a,
                             "response_b": response_b, **columns})


def is_finished_value(value: Any) -> bool:
    """A ``*_finished`` cell: False (or ``"false"``/``"0"`` from a CSV) means cut; anything
    else, a missing cell included, means finished."""
    if isinstance(value, str):
        return value.strip().lower() not in ("false", "0", "no")
    return True if value is None else bool(value)


# --- reading them back --------------------------------------------------------------------


def _read_nonempty(source: str | os.PathLike, split: str) -> list[Row]:
    rows = read_rows(str(source), split)
    if not rows:
        raise InputError(str(source), "the dataset is empty (no rows)")
    return rows


def reference_logps(row: Row) -> tuple[float, float] | None:
    """The row's ``ref_chosen_logps``/``ref_rejected_logps`` (both or neither; finite, <= 0)."""
    present = [row.data.get(name) is not None for name in REFERENCE_LOGPS]
    if not any(present):
        return None
    if not all(present):
        raise row.error("missing (ref_chosen_logps and ref_rejected_logps come together)",
                        REFERENCE_LOGPS[present.index(False)])
    values = []
    for name in REFERENCE_LOGPS:
        value = row.data[name]
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
            raise row.error(f"expected a finite number (a summed log-prob), got {value!r:.40}", name)
        if value > 0:
            raise row.error(f"expected a log-prob <= 0, got {value}", name)
        values.append(float(value))
    return values[0], values[1]


def read_preference_rows(source: str | os.PathLike, split: str = "train", *,
                         conversational: bool = True) -> list[Row]:
    """Read and validate preference rows (:data:`PREFERENCE_COLUMNS`) from a file, dataset
    directory or hub id.

    Checks: at least one row; ``prompt``, ``chosen``, ``rejected`` present, each a string or
    (with ``conversational``) a ``[{role, content}]`` list, string responses non-empty; the
    reference log-prob columns as :func:`reference_logps` says. Message lists are checked
    and rendered by the ``trl`` format reader. Errors are :class:`InputError` naming the
    file, the row and the field.
    """
    rows = _read_nonempty(source, split)
    for row in rows:
        typed_cells(row)
        for name in PREFERENCE_TEXTS:
            value = row.data.get(name)
            if value is None:
                raise row.error("missing (a preference row has prompt, chosen, rejected)", name)
            if not isinstance(value, str) and not (conversational and isinstance(value, list)):
                expected = "a string or a list of {role, content} messages" if conversational \
                    else "a string (a preference row: prompt, chosen, rejected)"
                raise row.error(f"expected {expected}, got {type(value).__name__} {value!r:.40}", name)
            if name != "prompt" and isinstance(value, str) and not value.strip():
                raise row.error("empty response text", name)
    for row in rows:
        reference_logps(row)
    return rows


@dataclass
class AnnotationPair:
    """One annotation row as read back: its texts, its row (for errors) and its metadata
    (the other :data:`ANNOTATION_COLUMNS` that are present and not blank)."""

    pair_id: str
    prompt: str
    response_a: str
    response_b: str
    row: Row
    meta: dict[str, Any] = field(default_factory=dict)


def read_annotation_rows(source: str | os.PathLike) -> list[AnnotationPair]:
    """Read and validate annotation rows (:data:`ANNOTATION_COLUMNS`).

    ``prompt`` must be a string and ``response_a``/``response_b`` non-empty strings; ``pair_id``
    defaults to ``row-{i}`` and must be unique. CSV cells arrive as text: the number columns
    are converted back (:func:`typed_cells`).
    """
    rows = _read_nonempty(source, "train")
    metadata = [c.name for c in ANNOTATION_COLUMNS if c.name not in ("pair_id", *ANNOTATION_TEXTS)]
    pairs, seen = [], {}
    for i, row in enumerate(rows):
        texts = []
        for name in ANNOTATION_TEXTS:
            value = row.data.get(name)
            if not isinstance(value, str) or (name != "prompt" and not value.strip()):
                got = "missing" if value is None else f"{type(value).__name__} {value!r:.40}"
                raise row.error(f"expected a non-empty string (an annotation row from `realspo "
                                f"select`), got {got}", name)
            texts.append(value)
        given = row.data.get("pair_id")
        pid = f"row-{i}" if given is None or given == "" else str(given)
        if pid in seen:
            raise row.error(f"duplicate pair id {pid!r} (first at {seen[pid]})", "pair_id")
        seen[pid] = row.where
        typed_cells(row)
        meta = {k: row.data[k] for k in metadata if row.data.get(k) not in (None, "")}
        for k in ("finished_a", "finished_b"):
            if k in meta:
                meta[k] = is_finished_value(meta[k])
        pairs.append(AnnotationPair(pid, *texts, row=row, meta=meta))
    return pairs
