"""Preference pairs for training: reading, validation, tokenisation and batching.

Input rows are TRL preference rows, ``{prompt, chosen, rejected}``, each a string or a
conversational ``[{role, content}]`` list (rendered to text by :mod:`realspo.formats.registry`).
Optional ``ref_chosen_logps`` / ``ref_rejected_logps`` columns carry precomputed reference
log-probs; optional ``chosen_finished`` / ``rejected_finished`` (False: the response was cut at
the generation limit, so it gets no EOS). Every pair is tokenized once
(:func:`realspo.training.tokenization.tokenize_pair`: rendered per ``--chat-template``, a shared
prompt, truncated per ``--truncation``, never a zero-token response); a batch puts the
chosen sequences first and the rejected ones after them::

    input_ids, attention_mask, response_mask   (2B, T)   rows 0..B-1 chosen, B..2B-1 rejected
    ref_chosen, ref_rejected                    (B,)      fp32 (absent for reference-free losses)
    index                                       (B,)      position of each pair in the dataset
    prompts, chosen, rejected                   list[str] the texts (for SPO's degree variants)
    finished                                    list[(bool, bool)] chosen/rejected ended on their own
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch.utils.data import Dataset, Sampler

from realspo.chat_format import prompt_format
from realspo.errors import InputError
from realspo.formats.registry import parse_rows
from realspo.schema import preference_row, read_preference_rows, reference_logps
from realspo.training.tokenization import TokenizedPair, collate, finished_flags, tokenize_pair


@dataclass
class PreferencePair:
    """One training pair as text, with its reference log-probs once known."""

    prompt: str
    chosen: str
    rejected: str
    where: str  # "file:line 3", for error messages
    ref_chosen: float | None = None
    ref_rejected: float | None = None
    finished: tuple[bool, bool] = (True, True)  # (chosen, rejected) ended on their own

    def as_row(self) -> dict[str, Any]:
        """The pair as a preference row (with its reference log-probs once known)."""
        known = self.ref_chosen is not None and self.ref_rejected is not None
        reference = {"ref_chosen_logps": self.ref_chosen, "ref_rejected_logps": self.ref_rejected} \
            if known else {}
        cut = {} if all(self.finished) else {"chosen_finished": self.finished[0],
                                              "rejected_finished": self.finished[1]}
        return preference_row(self.prompt, self.chosen, self.rejected, **cut, **reference)


def read_pairs(source: str | Path, split: str = "train") -> list[PreferencePair]:
    """Preference rows (:func:`realspo.schema.read_preference_rows`) as training pairs, with
    conversational rows rendered to text by the ``trl`` format reader.

    A missing ``prompt``/``chosen``/``rejected``, an empty response, or a malformed reference
    column raises :class:`InputError` naming the file, the row and the field.
    """
    rows = read_preference_rows(source, split)
    groups, _ = parse_rows(rows, "trl")  # renders conversations, rejects empty responses
    pairs = []
    for row, group in zip(rows, groups, strict=True):
        reference = reference_logps(row) or (None, None)
        pairs.append(PreferencePair(group.prompt, group.responses[0], group.responses[1],
                                    f"{row.source}:{row.where}", *reference,
                                    finished=finished_flags(row.data)))
    return pairs


def split_eval(pairs: list[PreferencePair], fraction: float, seed: int
               ) -> tuple[list[PreferencePair], list[PreferencePair]]:
    """``(train, eval)``: a seeded random ``fraction`` of the pairs held out (at least one)."""
    if fraction <= 0:
        return pairs, []
    n_eval = max(1, round(len(pairs) * fraction))
    if n_eval >= len(pairs):
        raise InputError("--eval-fraction", f"{fraction} of {len(pairs)} pairs leaves none to train on")
    order = np.random.default_rng(seed).permutation(len(pairs))
    held = set(order[:n_eval].tolist())
    return ([p for i, p in enumerate(pairs) if i not in held],
            [p for i, p in enumerate(pairs) if i in held])


class PairDataset(Dataset):
    """Tokenized pairs; ``truncated`` counts the pairs cut to fit ``max_length``, ``merged``
    those where a token merged across the prompt/response boundary (it counts as response)."""

    def __init__(self, pairs: list[PreferencePair], tokenizer: Any, max_length: int,
                 truncation: str, chat_template: str = "auto") -> None:
        self.pairs = pairs
        self.tokens: list[TokenizedPair] = []
        fmt = prompt_format(tokenizer, chat_template)
        for pair in pairs:
            try:
                self.tokens.append(tokenize_pair(fmt, pair.prompt, pair.chosen, pair.rejected,
                                                 max_length, truncation, finished=pair.finished))
            except ValueError as exc:
                raise InputError(pair.where, str(exc), field="prompt") from None
        self.truncated = sum(t.truncated for t in self.tokens)
        self.merged = sum(t.merged for t in self.tokens)

    def __len__(self) -> int:
        return len(self.pairs)

    def __getitem__(self, index: int) -> dict[str, Any]:
        return {"index": index, "pair": self.pairs[index], "tokens": self.tokens[index]}

    def lengths(self) -> list[int]:
        """Tokens of each pair's longer sequence (prompt + response), what its batch pads to."""
        return [len(t.prompt_ids) + max(len(t.chosen_ids), len(t.rejected_ids)) for t in self.tokens]


class PairCollator:
    """Builds the batch described in the module docstring (a picklable collate_fn)."""

    def __init__(self, pad_id: int, with_reference: bool) -> None:
        self.pad_id, self.with_reference = pad_id, with_reference

    def __call__(self, examples: list[dict[str, Any]]) -> dict[str, Any]:
        tokens = [e["tokens"] for e in examples]
        pairs: list[PreferencePair] = [e["pair"] for e in examples]
        sequences = [t.sequences()[0] for t in tokens] + [t.sequences()[1] for t in tokens]
        batch: dict[str, Any] = collate(sequences, self.pad_id)
        batch["index"] = torch.tensor([e["index"] for e in examples], dtype=torch.long)
        if self.with_reference:
            batch["ref_chosen"] = torch.tensor([p.ref_chosen for p in pairs], dtype=torch.float32)
            batch["ref_rejected"] = torch.tensor([p.ref_rejected for p in pairs], dtype=torch.float32)
        batch["prompts"] = [p.prompt for p in pairs]
        batch["chosen"] = [p.chosen for p in pairs]
        batch["rejected"] = [p.rejected for p in pairs]
        batch["finished"] = [p.finished for p in pairs]
        return batch


class EpochShuffleSampler(Sampler[int]):
    """A fresh permutation per epoch drawn from ``(seed, epoch)`` only.

    The order of epoch ``e`` does not depend on how many epochs ran before in this process,
    so a resumed run replays exactly the order of the interrupted one. Given ``lengths``, the
    permutation is length-grouped (``transformers``' ``get_length_grouped_indices``): shuffled,
    cut into mega-batches of up to 50 batches, each sorted by length, so that each run of
    ``batch_size`` consecutive indices holds pairs of similar length (the longest batch first).
    """

    def __init__(self, size: int, seed: int, lengths: list[int] | None = None,
                 batch_size: int = 1) -> None:
        if lengths is not None and len(lengths) != size:
            raise ValueError(f"{len(lengths)} lengths for {size} examples")
        self.size, self.seed, self.epoch = size, seed, 0
        self.lengths, self.batch_size = lengths, batch_size

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __iter__(self):
        generator = torch.Generator().manual_seed(self.seed * 100_003 + self.epoch)
        if self.lengths is not None and self.size > 1:
            from transformers.trainer_pt_utils import get_length_grouped_indices

            return iter(get_length_grouped_indices(self.lengths, self.batch_size, generator=generator))
        return iter(torch.randperm(self.size, generator=generator).tolist())

    def __len__(self) -> int:
        return self.size
