"""``trl``: TRL preference rows ``{prompt, chosen, rejected}``, strings or ``[{role, content}]`` lists.

Conversations render as HH text; string prompts stay verbatim (they may already carry a chat
template). Responses given as full conversations that start with the prompt's messages lose
those messages. Without ``prompt``, the prompt is the shared leading messages, the shared HH
prompt, or the shared text up to a whitespace boundary (``_implicit_prompt``). Optional
``score_chosen``/``score_rejected`` become the pair's scores.
"""

from __future__ import annotations

import os

from realspo.conversations import (
    HH_ASSISTANT,
    Turns,
    prompt_from_turns,
    response_from_turns,
    split_hh_transcript,
)
from realspo.formats.fields import (
    chosen_is_hh_transcript,
    nonempty_response,
    pair_scores,
    row_id,
    text_or_turns,
)
from realspo.formats.format import Format
from realspo.schema import PromptGroup
from realspo.sources import Row


def detect(columns: set[str], head_rows: list[Row]) -> bool:
    """``chosen``, ``rejected`` and ``prompt``; or no ``prompt`` and ``chosen`` not an HH
    transcript (implicit prompt)."""
    return {"chosen", "rejected"} <= columns and ("prompt" in columns or not chosen_is_hh_transcript(head_rows))


def _strip_prompt_turns(turns: Turns, prompt_turns: Turns) -> Turns:
    n = len(prompt_turns)
    return turns[n:] if 0 < n < len(turns) and turns[:n] == prompt_turns else turns


def _implicit_prompt(chosen: str | Turns, rejected: str | Turns, row: Row) -> tuple[str, list[str]]:
    """Prompt and responses of a row with only chosen/rejected (see the module docstring)."""
    if isinstance(chosen, list) or isinstance(rejected, list):
        if not (isinstance(chosen, list) and isinstance(rejected, list)):
            raise row.error("chosen and rejected must both be strings or both message lists", "rejected")
        n = 0
        while n < min(len(chosen), len(rejected)) - 1 and chosen[n] == rejected[n]:  # keep >= 1 each
            n += 1
        prompt, responses = prompt_from_turns(chosen[:n]), [response_from_turns(chosen[n:]), response_from_turns(rejected[n:])]
    elif HH_ASSISTANT in chosen and HH_ASSISTANT in rejected and (
        split_hh_transcript(chosen)[0] == split_hh_transcript(rejected)[0]
    ):
        (prompt, c), (_, r) = split_hh_transcript(chosen), split_hh_transcript(rejected)
        responses = [c, r]
    else:
        prefix = os.path.commonprefix([chosen, rejected])
        cut = max((i for i, ch in enumerate(prefix) if ch.isspace()), default=0)
        while cut > 0 and prefix[cut - 1].isspace():  # responses start with the whitespace, as in HH
            cut -= 1
        prompt, responses = chosen[:cut], [chosen[cut:], rejected[cut:]]
    if not prompt.strip():
        raise row.error("no 'prompt' column, and chosen and rejected share no leading text to use", "chosen")
    return prompt, responses


def read(rows: list[Row], skipped: dict[str, int]) -> list[PromptGroup]:
    """One group per row: the prompt, responses ``[chosen, rejected]``, preference (0, 1)."""
    groups = []
    for row in rows:
        chosen, rejected = text_or_turns(row, "chosen", "trl"), text_or_turns(row, "rejected", "trl")
        if row.data.get("prompt") is not None:
            given = text_or_turns(row, "prompt", "trl")
            prompt = given if isinstance(given, str) else prompt_from_turns(given)
            prompt_turns = [("Human", given)] if isinstance(given, str) else given
            responses = [
                value if isinstance(value, str) else response_from_turns(_strip_prompt_turns(value, prompt_turns))
                for value in (chosen, rejected)
            ]
        else:
            prompt, responses = _implicit_prompt(chosen, rejected, row)
        for name, text in zip(("chosen", "rejected"), responses, strict=True):
            nonempty_response(text, row, name)
        groups.append(
            PromptGroup(row_id(row, prompt), prompt, responses, pair_scores(row), [(0, 1)], {"row": row.where})
        )
    return groups


FORMAT = Format("trl", "[prompt,] chosen, rejected", detect, read)
