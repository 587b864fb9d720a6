"""Reading cells of raw rows, shared by the format readers: required and optional cells,
response texts, prompt ids and pair scores. Every error names the row and the field.
"""

from __future__ import annotations

from typing import Any

from realspo.conversations import HH_ASSISTANT, Turns, response_from_turns, turns_of
from realspo.schema import PromptGroup, hashed_prompt_id
from realspo.sources import Row, finite_float

ID_COLUMNS = ("prompt_id", "id", "post_id")  # a row's id: the first of these present


def optional_cell(row: Row, name: str) -> Any:
    """An optional cell; None or blank (an empty CSV cell) means absent."""
    value = row.data.get(name)
    return None if value is None or isinstance(value, str) and not value.strip() else value


def required_cell(row: Row, name: str, expected: str, fmt: str) -> Any:
    """A cell the ``fmt`` format needs; missing is an InputError saying what was ``expected``."""
    value = row.data.get(name)
    if value is None:
        raise row.error(f"missing (the {fmt} format needs {expected})", name)
    return value


def string_cell(row: Row, name: str, expected: str, fmt: str) -> str:
    """A required cell that must be a string."""
    value = required_cell(row, name, expected, fmt)
    if not isinstance(value, str):
        raise row.error(f"expected {expected}, got {type(value).__name__} {value!r:.40}", name)
    return value


def text_or_turns(row: Row, name: str, fmt: str) -> str | Turns:
    """A required cell holding a string (kept verbatim) or a ``[{role, content}]`` list (as turns)."""
    value = required_cell(row, name, "a string or a list of {role, content} messages", fmt)
    if isinstance(value, str):
        return value
    if isinstance(value, list):
        return turns_of(value, row, name)
    raise row.error(
        f"expected a string or a list of {{role, content}} messages, got {type(value).__name__} {value!r:.40}", name
    )


def nonempty_response(text: str, row: Row, field: str) -> str:
    """``text``, unless it is blank (an InputError: a response needs text)."""
    if not text.strip():
        raise row.error("empty response text", field)
    return text


def response_cell(value: Any, row: Row, field: str) -> str:
    """One response cell: a string or a message list (rendered)."""
    if isinstance(value, str):
        return nonempty_response(value, row, field)
    if isinstance(value, list):
        return nonempty_response(response_from_turns(turns_of(value, row, field)), row, field)
    raise row.error(f"expected a response string or message list, got {type(value).__name__} {value!r:.40}", field)


def row_id(row: Row, prompt: str, columns: tuple[str, ...] = ID_COLUMNS) -> str:
    """The row's id (the first of ``columns`` present), else ``"p-"`` + 12 hex digits of the
    prompt's SHA-256 (the rule ``generate`` uses too)."""
    for column in columns:
        value = row.data.get(column)
        if value is None:
            continue
        if isinstance(value, bool) or not isinstance(value, (str, int)):
            raise row.error(f"expected a string or integer id, got {type(value).__name__}", column)
        if str(value).strip():
            return str(value).strip()
    return hashed_prompt_id(prompt)


def make_ids_unique(groups: list[PromptGroup]) -> None:
    """Suffix repeated ids with "#2", "#3", ... in input order (deterministic)."""
    used: set[str] = set()
    counts: dict[str, int] = {}
    for group in groups:
        base = group.prompt_id
        new = base
        while new in used:
            counts[base] = counts.get(base, 1) + 1
            new = f"{base}#{counts[base]}"
        used.add(new)
        group.prompt_id = new


def pair_scores(row: Row) -> list[float] | None:
    """Optional ``score_chosen``/``score_rejected`` columns (both or neither)."""
    present = [optional_cell(row, n) is not None for n in ("score_chosen", "score_rejected")]
    if not any(present):
        return None
    if not all(present):
        missing = "score_rejected" if present[0] else "score_chosen"
        raise row.error("missing (score_chosen and score_rejected come together)", missing)
    return [finite_float(row, row.data[n], n) for n in ("score_chosen", "score_rejected")]


def chosen_is_hh_transcript(head_rows: list[Row]) -> bool:
    """Whether the first non-empty ``chosen`` cell of ``head_rows`` is an HH transcript (a
    string containing ``"\\n\\nAssistant:"``); tells hh from trl rows without a prompt."""
    first = next(r.data["chosen"] for r in head_rows if r.data.get("chosen") is not None)
    return isinstance(first, str) and HH_ASSISTANT in first
