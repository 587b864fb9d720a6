"""The prompts a model answers (the input of ``generate`` and ``evaluate``).

A prompts table has ``prompt`` as text or a ``[{role, content}, ...]`` message list
(:func:`realspo.conversations.chat_messages`), and optional ``prompt_id``/``id``. Without an
id, a prompt's id is the format readers' rule (:func:`realspo.formats.fields.row_id`) applied
to its HH text (:func:`hh_text`), so ``select`` finds the ids ``generate`` wrote. The model
reads a prompt as :class:`realspo.chat_format.PromptFormat` renders it (the tokenizer's chat
template or that HH text), as every other stage does.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Any

from realspo.conversations import chat_messages, prompt_text
from realspo.errors import RealspoError
from realspo.schema import hashed_prompt_id
from realspo.sources import Row, read_rows

Prompt = str | list[dict[str, str]]


@dataclass(frozen=True)
class PromptRecord:
    """One prompt to sample for: its position in the file, its id, the prompt as given."""

    index: int
    prompt_id: str
    prompt: Prompt


def _check_prompt(row: Row, value: Any) -> Prompt:
    if isinstance(value, str):
        if not value.strip():
            raise row.error("is empty; expected the prompt text", "prompt")
        return value
    if isinstance(value, list) and value:
        return chat_messages(value, row, "prompt")
    raise row.error(f"expected a string or a list of {{role, content}} messages, got "
                    f"{type(value).__name__} {value!r:.60}", "prompt")


def hh_text(prompt: Prompt) -> str:
    """The prompt as HH text: a string verbatim, checked messages rendered as the format readers
    render them (:func:`realspo.conversations.prompt_text`), so prompt ids agree between stages."""
    return prompt if isinstance(prompt, str) else prompt_text(prompt, Row({}, "messages", "prompt"), "prompt")


def _auto_id(prompt: Prompt) -> str:
    # the rule of realspo.formats.fields.row_id: a hash of the (HH-rendered) prompt text
    return hashed_prompt_id(hh_text(prompt))


def read_prompts(source: str | os.PathLike, split: str = "train") -> list[PromptRecord]:
    """Read a prompts table (JSONL/JSON/CSV/Parquet/dataset dir) into :class:`PromptRecord`.

    Each row needs ``prompt`` (non-empty text, or a non-empty list of ``{role, content}``
    messages). ``prompt_id`` (or ``id``) is used as the id when present and must be unique;
    otherwise the id is ``"p-"`` + 12 hex digits of the prompt's SHA-256, with ``#2``, ``#3``...
    appended to repeated prompts. Bad rows raise :class:`InputError` naming row and field.
    """
    rows = read_rows(str(source), split)
    if not rows:
        raise RealspoError(f"{source}: no prompts (the file has no rows)")
    records: list[PromptRecord] = []
    seen: dict[str, str] = {}
    for index, row in enumerate(rows):
        if "prompt" not in row.data:
            raise row.error("missing; expected the prompt text or a list of {role, content} "
                            f"messages (columns: {', '.join(map(str, row.data)) or 'none'})", "prompt")
        prompt = _check_prompt(row, row.data["prompt"])
        field = "prompt_id" if "prompt_id" in row.data else "id"
        given = row.data.get(field)
        given = given.strip() if isinstance(given, str) else given
        if given is None or given == "":
            base = _auto_id(prompt)
            prompt_id, n = base, 1
            while prompt_id in seen:
                n += 1
                prompt_id = f"{base}#{n}"
        elif isinstance(given, (str, int)) and not isinstance(given, bool):
            prompt_id = str(given)
            if prompt_id in seen:
                raise row.error(f"duplicate id {prompt_id!r} (first at {seen[prompt_id]})", field)
        else:
            raise row.error(f"expected a string or integer id, got {type(given).__name__}", field)
        seen[prompt_id] = row.where
        records.append(PromptRecord(index, prompt_id, prompt))
    return records
