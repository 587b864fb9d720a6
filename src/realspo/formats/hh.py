"""``hh``: HH-RLHF ``{chosen, rejected}`` transcripts.

Prompt = up to and including the last ``"\\n\\nAssistant:"``, response = the rest verbatim
(``prompt + response`` = transcript). Rows whose chosen and rejected transcripts differ before
the last Assistant turn (they occur in the real HH-RLHF data) are skipped, counted
(:data:`SKIP_HH_DIVERGENT`) and reported with a warning.
"""

from __future__ import annotations

import logging
import os

from realspo.conversations import HH_ASSISTANT, split_hh_transcript
from realspo.formats.fields import chosen_is_hh_transcript, nonempty_response, row_id, string_cell
from realspo.formats.format import Format
from realspo.schema import PromptGroup
from realspo.sources import Row

log = logging.getLogger(__name__)

SKIP_HH_DIVERGENT = "chosen and rejected transcripts diverge before the last Assistant turn"


def detect(columns: set[str], head_rows: list[Row]) -> bool:
    """``chosen`` and ``rejected``, no ``prompt``, and ``chosen`` an HH transcript."""
    return {"chosen", "rejected"} <= columns and "prompt" not in columns and chosen_is_hh_transcript(head_rows)


def read(rows: list[Row], skipped: dict[str, int]) -> list[PromptGroup]:
    """One group per row: the shared prompt, responses ``[chosen, rejected]``, preference (0, 1)."""
    groups = []
    first_divergent = None
    for row in rows:
        split = []
        for name in ("chosen", "rejected"):
            text = string_cell(row, name, "an HH transcript string", "hh")
            if HH_ASSISTANT not in text:
                raise row.error("expected an HH transcript containing '\\n\\nAssistant:'", name)
            split.append(split_hh_transcript(text))
        (prompt, chosen), (other, rejected) = split
        if prompt != other:
            # Real HH-RLHF has such rows (the two transcripts branch at an earlier turn): they
            # compare two conversations, not two answers to one prompt. Skipped and counted.
            skipped[SKIP_HH_DIVERGENT] = skipped.get(SKIP_HH_DIVERGENT, 0) + 1
            first_divergent = first_divergent or (row, len(os.path.commonprefix([prompt, other])))
            continue
        responses = [nonempty_response(chosen, row, "chosen"), nonempty_response(rejected, row, "rejected")]
        groups.append(PromptGroup(row_id(row, prompt), prompt, responses, None, [(0, 1)], {"row": row.where}))
    if first_divergent is not None:
        row, at = first_divergent
        log.warning("%s: skipped %d of %d rows whose chosen and rejected transcripts diverge before "
                    "the last '\\n\\nAssistant:' turn (first: %s, at character %d)", row.source,
                    skipped[SKIP_HH_DIVERGENT], len(rows), row.where, at)
    return groups


FORMAT = Format("hh", "chosen, rejected transcripts", detect, read)
