"""Tokenizing preference pairs and responses for scoring: joint boundaries, EOS, truncation.

Used alike by the reference pass (:mod:`realspo.training.reference`), training and evaluation, so all of
them score exactly the same tokens (:mod:`realspo.training.logprobs` computes the log-probs):

1. :func:`tokenize_pair` / :func:`tokenize_response` render the prompt and response with the one
   prompt renderer (:class:`realspo.chat_format.PromptFormat`: the chat template or HH text, per
   ``chat_template``), tokenize the prompt alone and prompt + response jointly, and take the
   longest common prefix as the prompt (TRL's rule: a token that merges across the boundary
   counts as response, and the pair is marked ``merged``); a finished response ends in EOS or
   the template's end-of-turn (never two), a cut one (``finished=False``) in neither. The
   sequence is truncated to ``max_length`` by a documented mode, never leaving zero response
   tokens;
2. :func:`collate` right-pads sequences into a batch with a ``response_mask``.

Truncation modes (``max_length`` counts prompt + response tokens):

* ``keep_end`` (default): drop prompt tokens from the left (the most recent context stays);
  if the response alone does not fit, keep one prompt token and cut the response's end.
* ``keep_start``: keep the whole prompt and cut the response's end; a prompt that leaves no
  room for a response token is an error.

In a pair, chosen and rejected share one prompt (the common prefix of both joint tokenizations),
truncated for the longer response, so both are scored under the same context (the quantity DPO
compares).
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from realspo.chat_format import prompt_format
from realspo.errors import InputError
from realspo.models import CHARS_PER_TOKEN
from realspo.schema import is_finished_value

if TYPE_CHECKING:
    from torch import Tensor

log = logging.getLogger(__name__)

TRUNCATION_MODES = ("keep_end", "keep_start")


@dataclass
class TokenizedPair:
    """A preference pair as token ids: the shared prompt, then each response (EOS included).

    The chosen sequence is ``prompt_ids + chosen_ids`` with the response starting at
    ``len(prompt_ids)``; likewise rejected. ``truncated`` is True if anything was cut;
    ``merged`` if a token merged across the prompt/response boundary (see the module docs).
    """

    prompt_ids: list[int]
    chosen_ids: list[int]
    rejected_ids: list[int]
    truncated: bool
    merged: bool = False

    def sequences(self) -> list[tuple[list[int], int]]:
        """``[(chosen ids, response start), (rejected ids, response start)]`` for :func:`collate`."""
        start = len(self.prompt_ids)
        return [(self.prompt_ids + self.chosen_ids, start),
                (self.prompt_ids + self.rejected_ids, start)]


def _fit(prompt_len: int, response_len: int, max_length: int, truncation: str) -> tuple[int, int]:
    """How many prompt tokens (from the end) and response tokens (from the start) to keep."""
    if truncation not in TRUNCATION_MODES:
        raise ValueError(f"unknown truncation '{truncation}'; expected one of {TRUNCATION_MODES}")
    if max_length < 2:
        raise ValueError(f"max_length must be at least 2 (a prompt token and a response token), got {max_length}")
    if prompt_len + response_len <= max_length:
        return prompt_len, response_len
    if truncation == "keep_end":
        keep_prompt = max(1, max_length - response_len)
        return keep_prompt, max_length - keep_prompt
    if prompt_len >= max_length:
        raise ValueError(
            f"the prompt has {prompt_len} tokens and leaves no room for the response within "
            f"max_length={max_length}; raise --max-length or use --truncation keep_end"
        )
    return prompt_len, max_length - prompt_len


def tokenize_response(
    tokenizer: Any, prompt: str, response: str, max_length: int, truncation: str = "keep_end",
    *, chat_template: str = "auto", finished: bool = True,
) -> tuple[list[int], int, bool]:
    """``(input_ids, response_start, truncated)`` for one prompt + response.

    ``tokenizer``: a tokenizer (rendered per ``chat_template``) or a ready :class:`PromptFormat`.
    ``input_ids[response_start:]`` are the response tokens (at least one). Raises
    ``ValueError`` if no response token can be kept (see the module's truncation modes).
    """
    encoded = prompt_format(tokenizer, chat_template).encode(prompt, [response], [finished])
    prompt_ids, response_ids = encoded.prompt_ids, encoded.response_ids[0]
    keep_p, keep_r = _fit(len(prompt_ids), len(response_ids), max_length, truncation)
    truncated = keep_p < len(prompt_ids) or keep_r < len(response_ids)
    kept_prompt = prompt_ids[len(prompt_ids) - keep_p:]
    return kept_prompt + response_ids[:keep_r], keep_p, truncated


def tokenize_pair(
    tokenizer: Any, prompt: str, chosen: str, rejected: str, max_length: int,
    truncation: str = "keep_end", *, chat_template: str = "auto",
    finished: tuple[bool, bool] = (True, True),
) -> TokenizedPair:
    """Tokenize a pair with one shared prompt, truncated for the longer response.

    ``finished``: whether chosen and rejected ended on their own (False: cut, no EOS).
    Raises ``ValueError`` if no response token can be kept.
    """
    # An absurdly long text is cut (as characters) before it is tokenized: tokens past
    # max_length are dropped below anyway, and tokenizing megabytes first costs minutes.
    # A response cut here has lost its end, so it gets no EOS.
    limit = max_length * CHARS_PER_TOKEN
    if len(chosen) > limit:
        chosen, finished = chosen[:limit], (False, finished[1])
    if len(rejected) > limit:
        rejected, finished = rejected[:limit], (finished[0], False)
    if truncation == "keep_end" and isinstance(prompt, str) and len(prompt) > limit:
        prompt = prompt[-limit:]
    encoded = prompt_format(tokenizer, chat_template).encode(prompt, [chosen, rejected], finished)
    prompt_ids = encoded.prompt_ids
    chosen_ids, rejected_ids = encoded.response_ids
    keep_p, _ = _fit(len(prompt_ids), max(len(chosen_ids), len(rejected_ids)), max_length, truncation)
    room = max_length - keep_p
    truncated = keep_p < len(prompt_ids) or max(len(chosen_ids), len(rejected_ids)) > room
    return TokenizedPair(prompt_ids[len(prompt_ids) - keep_p:], chosen_ids[:room],
                         rejected_ids[:room], truncated, any(encoded.merged))


def finished_flags(row: dict[str, Any]) -> tuple[bool, bool]:
    """A preference row's ``(chosen_finished, rejected_finished)``; absent means finished."""
    return is_finished_value(row.get("chosen_finished")), is_finished_value(row.get("rejected_finished"))


def tokenize_pairs(
    tokenizer: Any, rows: Sequence[dict[str, Any]], max_length: int,
    truncation: str = "keep_end", source: str = "pairs", chat_template: str = "auto",
) -> list[TokenizedPair]:
    """Tokenize preference rows (``prompt``, ``chosen``, ``rejected`` strings; optional
    ``chosen_finished``/``rejected_finished``, see :func:`finished_flags`).

    A missing or non-string field, an empty response, or a prompt that leaves no room raises
    :class:`InputError` naming ``source``, the row (1-based) and the field.
    """
    fmt = prompt_format(tokenizer, chat_template)
    pairs = []
    limit = max_length * CHARS_PER_TOKEN
    clipped = sum(isinstance(row.get(f), str) and len(row[f]) > limit
                  for row in rows for f in ("prompt", "chosen", "rejected"))
    if clipped:
        log.warning("%s: %d texts were longer than %d characters (%d tokens x %d) and were cut to "
                    "that before tokenizing", source, clipped, limit, max_length, CHARS_PER_TOKEN)
    for i, row in enumerate(rows):
        where = f"row {i + 1}"
        for field in ("prompt", "chosen", "rejected"):
            if not isinstance(row.get(field), str):
                raise InputError(source, f"expected a string, got {type(row.get(field)).__name__}",
                                 where=where, field=field)
        for field in ("chosen", "rejected"):
            if not row[field].strip():
                raise InputError(source, "empty response", where=where, field=field)
        try:
            pairs.append(tokenize_pair(fmt, row["prompt"], row["chosen"], row["rejected"],
                                       max_length, truncation, finished=finished_flags(row)))
        except ValueError as exc:
            raise InputError(source, str(exc), where=where, field="prompt") from None
    return pairs


def collate(sequences: Sequence[tuple[list[int], int]], pad_id: int) -> dict[str, Tensor]:
    """Right-pad ``(ids, response_start)`` sequences into a batch.

    Returns ``input_ids`` (B, T) long, ``attention_mask`` (B, T) long, and ``response_mask``
    (B, T) bool, True at the response tokens (the ones scored).
    """
    import torch  # here: `realspo train --help` reads TRUNCATION_MODES without loading torch

    width = max(len(ids) for ids, _ in sequences)
    batch = len(sequences)
    input_ids = torch.full((batch, width), pad_id, dtype=torch.long)
    attention_mask = torch.zeros((batch, width), dtype=torch.long)
    response_mask = torch.zeros((batch, width), dtype=torch.bool)
    for i, (ids, start) in enumerate(sequences):
        input_ids[i, : len(ids)] = torch.tensor(ids, dtype=torch.long)
        attention_mask[i, : len(ids)] = 1
        response_mask[i, start: len(ids)] = True
    return {"input_ids": input_ids, "attention_mask": attention_mask, "response_mask": response_mask}
