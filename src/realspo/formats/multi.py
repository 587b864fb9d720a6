"""``multi``: a prompt's whole candidate set, ``{prompt, responses, scores?}`` or
``{prompt, completions: [{response, score?}]}`` (the output of ``realspo generate``).

``prompt`` is a string (verbatim) or a ``[{role, content}]`` list (rendered as HH text); a
response is a string or a message list. Scores are optional but all-or-none (a completion's
``score``, else its ``overall_score``). An optional ``finished`` list (one bool per response,
or a completion's ``finished``) marks responses cut at the generation limit (False); without
it every response counts as finished. No preferences: selection and labelling make them. A
repeated explicit id is an error (a multi row is a prompt's whole candidate set).
"""

from __future__ import annotations

from typing import Any

from realspo.conversations import prompt_from_turns
from realspo.formats.fields import (
    ID_COLUMNS,
    optional_cell,
    required_cell,
    response_cell,
    row_id,
    text_or_turns,
)
from realspo.formats.format import Format
from realspo.schema import PromptGroup
from realspo.sources import Row, finite_float


def detect(columns: set[str], head_rows: list[Row]) -> bool:
    """``prompt`` and ``responses`` or ``completions``."""
    return "prompt" in columns and bool({"responses", "completions"} & columns)


def _candidates(row: Row) -> tuple[list[str], list[Any] | None, list[str]]:
    """Responses, raw scores (or None) and each score's field name, from either multi shape."""
    if row.data.get("responses") is not None:
        items = row.data["responses"]
        if not isinstance(items, list):
            raise row.error(f"expected a list of responses, got {type(items).__name__}", "responses")
        responses = [response_cell(v, row, f"responses[{j}]") for j, v in enumerate(items)]
        raw = optional_cell(row, "scores")
        if raw is not None and not isinstance(raw, list):
            raise row.error(f"expected a list of numbers, got {type(raw).__name__}", "scores")
        if raw is not None and len(raw) != len(responses):
            raise row.error(f"expected {len(responses)} scores (one per response), got {len(raw)}", "scores")
        return responses, raw, [f"scores[{j}]" for j in range(len(responses))]
    items = required_cell(row, "completions", "'responses' or 'completions'", "multi")
    if not isinstance(items, list):
        raise row.error(f"expected a list of {{response, score}} objects, got {type(items).__name__}", "completions")
    responses, raw = [], []
    for j, item in enumerate(items):
        if not isinstance(item, dict):
            raise row.error(f"expected a {{response, score}} object, got {type(item).__name__}", f"completions[{j}]")
        responses.append(response_cell(item.get("response"), row, f"completions[{j}].response"))
        score = item.get("score")
        raw.append(item.get("overall_score") if score is None or score == "" else score)
    fields = [f"completions[{j}].score" for j in range(len(responses))]
    if all(s is None for s in raw):
        return responses, None, fields
    missing = next((j for j, s in enumerate(raw) if s is None), None)
    if missing is not None:
        raise row.error("missing score (give every completion a score, or none)", fields[missing])
    return responses, raw, fields


def _finished(row: Row, n: int) -> list[bool] | None:
    """The optional per-response ``finished`` flags (None: all finished)."""
    if row.data.get("responses") is not None:
        flags, field = optional_cell(row, "finished"), "finished"
    else:
        items = row.data.get("completions") or []
        flags = [i.get("finished") for i in items if isinstance(i, dict)]
        flags, field = (None if all(f is None for f in flags) else flags), "completions[].finished"
    if flags is None:
        return None
    if not isinstance(flags, list) or len(flags) != n or not all(
            f is None or isinstance(f, bool) for f in flags):
        raise row.error(f"expected {n} true/false values (one per response)", field)
    return [f is not False for f in flags]


def read(rows: list[Row], skipped: dict[str, int]) -> list[PromptGroup]:
    """One group per row: the prompt, its responses and their scores (or None), no preferences."""
    groups = []
    given_ids: dict[str, str] = {}  # explicit id -> where it was first seen
    for row in rows:
        given = text_or_turns(row, "prompt", "multi")
        prompt = given if isinstance(given, str) else prompt_from_turns(given)
        responses, raw, fields = _candidates(row)
        if not responses:
            raise row.error("expected at least one response", "responses" if "responses" in row.data else "completions")
        scores = None if raw is None else [finite_float(row, s, f) for s, f in zip(raw, fields, strict=True)]
        prompt_id = row_id(row, prompt)
        column = next((c for c in ID_COLUMNS if optional_cell(row, c) is not None), None)
        if column is not None:
            # A multi row is a prompt's whole candidate set: two rows with one explicit id are
            # ambiguous (which scores does `label --candidates` look up?), so refuse them.
            if prompt_id in given_ids:
                raise row.error(f"duplicate id {prompt_id!r} (first at {given_ids[prompt_id]}); "
                                "each prompt's candidates belong in one row", column)
            given_ids[prompt_id] = row.where
        groups.append(PromptGroup(prompt_id, prompt, responses, scores, [], {"row": row.where},
                                  _finished(row, len(responses))))
    return groups


FORMAT = Format("multi", "prompt with responses or completions", detect, read)
