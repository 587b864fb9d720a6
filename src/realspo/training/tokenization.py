"""Tokenizing preference pairs and responses for scoring: prompt and response apart, EOS, truncation.

Used alike by the reference pass (:mod:`realspo.training.reference`), training and evaluation, so all of
them score exactly the same tokens (:mod:`realspo.training.logprobs` computes the log-probs):

1. :func:`tokenize_pair` / :func:`tokenize_response` tokenize the prompt and the response
   *separately* and concatenate the ids (so the prompt/response boundary never merges into
   one token), append EOS to the response, and truncate to ``max_length`` by a documented
   mode, never leaving zero response tokens;
2. :func:`collate` right-pads sequences into a batch with a ``response_mask``.

Truncation modes (``max_length`` counts prompt + response tokens):

* ``keep_end`` (default): drop prompt tokens from the left (the most recent context stays);
  if the response alone does not fit, keep one prompt token and cut the response's end.
* ``keep_start``: keep the whole prompt and cut the response's end; a prompt that leaves no
  room for a response token is an error.

In a pair, chosen and rejected share one prompt, truncated for the longer response, so both
are scored under the same context (the quantity DPO compares).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor

from realspo.errors import InputError

TRUNCATION_MODES = ("keep_end", "keep_start")


@dataclass
class TokenizedPair:
    """A preference pair as token ids: the shared prompt, then each response (EOS included).

    The chosen sequence is ``prompt_ids + chosen_ids`` with the response starting at
    ``len(prompt_ids)``; likewise rejected. ``truncated`` is True if anything was cut.
    """

    prompt_ids: list[int]
    chosen_ids: list[int]
    rejected_ids: list[int]
    truncated: bool

    def sequences(self) -> list[tuple[list[int], int]]:
        """``[(chosen ids, response start), (rejected ids, response start)]`` for :func:`collate`."""
        start = len(self.prompt_ids)
        return [(self.prompt_ids + self.chosen_ids, start),
                (self.prompt_ids + self.rejected_ids, start)]


def _prompt_tokens(tokenizer: Any, prompt: str) -> list[int]:
    """The prompt with the tokenizer's own start convention (BOS for Llama, none for GPT-2).

    A trailing EOS some tokenizers append is removed. An empty result gets BOS (or EOS):
    the first response token needs a position that predicts it.
    """
    ids = list(tokenizer(prompt, add_special_tokens=True)["input_ids"])
    eos = tokenizer.eos_token_id
    if ids and eos is not None and ids[-1] == eos and len(ids) > 1:
        ids = ids[:-1]
    if not ids:
        start = tokenizer.bos_token_id if tokenizer.bos_token_id is not None else eos
        if start is None:
            raise ValueError("empty prompt and the tokenizer has no BOS or EOS token to start with")
        ids = [start]
    return ids


def _response_tokens(tokenizer: Any, response: str) -> list[int]:
    """Response ids without special tokens, followed by EOS (the model learns to stop)."""
    ids = list(tokenizer(response, add_special_tokens=False)["input_ids"])
    if tokenizer.eos_token_id is not None:
        ids.append(tokenizer.eos_token_id)
    if not ids:
        raise ValueError("empty response (and the tokenizer has no EOS token to score)")
    return ids


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
    tokenizer: Any, prompt: str, response: str, max_length: int, truncation: str = "keep_end"
) -> tuple[list[int], int, bool]:
    """``(input_ids, response_start, truncated)`` for one prompt + response.

    ``input_ids[response_start:]`` are the response tokens (at least one). Raises
    ``ValueError`` if no response token can be kept (see the module's truncation modes).
    """
    prompt_ids, response_ids = _prompt_tokens(tokenizer, prompt), _response_tokens(tokenizer, response)
    keep_p, keep_r = _fit(len(prompt_ids), len(response_ids), max_length, truncation)
    truncated = keep_p < len(prompt_ids) or keep_r < len(response_ids)
    kept_prompt = prompt_ids[len(prompt_ids) - keep_p:]
    return kept_prompt + response_ids[:keep_r], keep_p, truncated


def tokenize_pair(
    tokenizer: Any, prompt: str, chosen: str, rejected: str, max_length: int,
    truncation: str = "keep_end",
) -> TokenizedPair:
    """Tokenize a pair with one shared prompt, truncated for the longer response.

    Raises ``ValueError`` if no response token can be kept.
    """
    prompt_ids = _prompt_tokens(tokenizer, prompt)
    chosen_ids, rejected_ids = _response_tokens(tokenizer, chosen), _response_tokens(tokenizer, rejected)
    keep_p, _ = _fit(len(prompt_ids), max(len(chosen_ids), len(rejected_ids)), max_length, truncation)
    room = max_length - keep_p
    truncated = keep_p < len(prompt_ids) or max(len(chosen_ids), len(rejected_ids)) > room
    return TokenizedPair(prompt_ids[len(prompt_ids) - keep_p:], chosen_ids[:room],
                         rejected_ids[:room], truncated)


def tokenize_pairs(
    tokenizer: Any, rows: Sequence[dict[str, Any]], max_length: int,
    truncation: str = "keep_end", source: str = "pairs",
) -> list[TokenizedPair]:
    """Tokenize preference rows (``prompt``, ``chosen``, ``rejected`` strings).

    A missing or non-string field, an empty response, or a prompt that leaves no room raises
    :class:`InputError` naming ``source``, the row (1-based) and the field.
    """
    pairs = []
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
            pairs.append(tokenize_pair(tokenizer, row["prompt"], row["chosen"], row["rejected"],
                                       max_length, truncation))
        except ValueError as exc:
            raise InputError(source, str(exc), where=where, field="prompt") from None
    return pairs


def collate(sequences: Sequence[tuple[list[int], int]], pad_id: int) -> dict[str, Tensor]:
    """Right-pad ``(ids, response_start)`` sequences into a batch.

    Returns ``input_ids`` (B, T) long, ``attention_mask`` (B, T) long, and ``response_mask``
    (B, T) bool, True at the response tokens (the ones scored).
    """
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
