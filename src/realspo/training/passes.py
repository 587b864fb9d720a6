"""One micro-batch in several forward/backward passes of whole pairs: same gradient, less memory.

What the backward pass keeps alive grows with the tokens of one forward pass: every layer's
inputs, attention outputs and MLP activations, about 1.3 MiB per token for SmolLM2-135M in
fp32 (measured with saved-tensor hooks: 1.4 GiB for 4 pairs of ~270 tokens). DPO-family
losses are means over pairs, so a micro-batch's gradient is the sum, over disjoint groups of
its pairs, of ``(group size / batch size)`` times the group's mean-loss gradient. Running the
groups one after the other, each forward followed by its backward, gives the same gradient
(up to float summation order) and the same metrics, with one group's activations alive at a
time instead of the whole batch's.

:func:`split_pairs` cuts a batch (from :class:`realspo.training.data.PairCollator`) into
groups of consecutive pairs of at most ``max_tokens`` tokens (a longer pair is a group of its
own); :func:`merge_results` adds the groups' :class:`~realspo.training.step.StepResult` up.

With ``--spo`` a pass holds whole pairs *with their degree variants* (:func:`split_passes`),
and the variants' tokens count against the budget like the pairs'. The degree loss is a
weighted mean over the batch's variants, ``sum(w * CE) / sum(w)``; a pass's share of it is its
variants' weighted mean times ``(their weight) / sum(w)``, so each pass scales its degree loss
by that weight share over its pairs' share (:attr:`Pass.degree_scale`) and the passes again add
up to the batch's loss. Before, ``--spo`` ran the whole micro-batch in one pass, which on
SmolLM2-135M took 2.3-3x DPO's peak memory (BENCHMARKS.md 4b). :func:`run_passes` runs it all.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor

from realspo.training.metrics import Metrics
from realspo.training.step import StepResult, forward_pass, variant_batch
from realspo.training.train_config import BatchSettings

# SmolLM2-135M LoRA, batch 4 of ~260-token pairs, peak RSS of the whole run: one pass 4.2 GB,
# 512 tokens 2.6 GB, 256 (one pair a pass there) 2.1 GB, at the same seconds per step
CPU_PASS_TOKENS = 256


def pass_budget(pass_tokens: int | None, device: torch.device) -> int:
    """``--pass-tokens``, or when unset :data:`CPU_PASS_TOKENS` on a CPU and 0 (one pass) elsewhere,
    where a pass's parallelism matters more than host memory."""
    if pass_tokens is not None:
        return pass_tokens
    return CPU_PASS_TOKENS if device.type == "cpu" else 0


def pair_groups(tokens: list[int], max_tokens: int) -> list[range]:
    """Consecutive pair ranges whose ``tokens`` (per pair) add up to at most ``max_tokens``."""
    groups: list[range] = []
    start, total = 0, 0
    for i, n in enumerate(tokens):
        if i > start and total + n > max_tokens:
            groups.append(range(start, i))
            start, total = i, 0
        total += n
    if tokens:
        groups.append(range(start, len(tokens)))
    return groups


@dataclass
class Pass:
    """Some consecutive pairs of a micro-batch, with their degree variants: one forward/backward."""

    batch: dict[str, Any]  # the pairs, in the form PairCollator builds
    variants: dict[str, Tensor] | None  # their variants (variant_batch's form, rows renumbered), or None
    count: int  # pairs
    tokens: int  # non-padding tokens of the pairs and of the variant sequences
    degree_scale: float  # (the variants' share of the batch's degree weight) / (the pairs' share)


def split_pairs(batch: dict[str, Any], max_tokens: int) -> list[dict[str, Any]]:
    """``batch`` as groups of consecutive pairs of at most ``max_tokens`` tokens each.

    A batch that fits is returned as it is (``[batch]``). Each group is a batch of the same
    form: rows ``i`` and ``n + i`` of the (2n, T) tensors for each of its pairs ``i``, cut to
    the group's longest sequence; per-pair tensors and lists sliced alike.
    """
    return [p.batch for p in split_passes(batch, max_tokens)]


def split_passes(batch: dict[str, Any], max_tokens: int, variants: dict[str, Tensor] | None = None
                 ) -> list[Pass]:
    """``batch`` and its degree ``variants`` (:func:`realspo.training.step.variant_batch`) as
    passes of consecutive pairs, each pair with its variants, of at most ``max_tokens`` tokens
    (pair and variant sequences counted apart; a pair that alone exceeds it is a pass of its own).

    A batch that fits is one pass holding ``batch`` and ``variants`` as they are. Otherwise each
    pass's batch is as :func:`split_pairs` cuts it, and its variants keep their order, labels and
    weights, with rows renumbered into the pass (an original: its pair's row there; another
    level: ``2 * count + j`` for the pass's ``j``-th variant sequence, cut to the pass's longest).
    """
    n = len(batch["index"])
    lengths = [int(x) for x in batch["attention_mask"].sum(dim=1).tolist()]
    own = [lengths[i] + lengths[n + i] for i in range(n)]
    sequence_pairs: list[int] = []
    if variants is not None and "pairs" in variants:
        sequence_pairs = [int(x) for x in variants["pairs"].tolist()]
        for j, tokens in enumerate(variants["attention_mask"].sum(dim=1).tolist()):
            own[sequence_pairs[j]] += int(tokens)
    groups = pair_groups(own, max_tokens) if max_tokens > 0 else [range(n)]
    if len(groups) <= 1:
        return [Pass(batch, variants, n, sum(own), 1.0)]
    total_weight = float(variants["weights"].sum()) if variants is not None else 0.0
    passes = []
    for group in groups:
        part = _pair_part(batch, group, n)
        mine = None if variants is None else _variant_part(variants, group, n, sequence_pairs)
        scale = 1.0
        if mine is not None:
            scale = float(mine["weights"].sum()) / total_weight * n / len(group)
        passes.append(Pass(part, mine, len(group), sum(own[i] for i in group), scale))
    return passes


def _pair_part(batch: dict[str, Any], group: range, n: int) -> dict[str, Any]:
    """Pairs ``group`` of ``batch`` (``n`` pairs), cut to their longest sequence."""
    pair_rows = torch.arange(group.start, group.stop)
    rows = torch.cat([pair_rows, pair_rows + n])
    width = int(batch["attention_mask"][rows].sum(dim=1).max())
    part: dict[str, Any] = {}
    for key, value in batch.items():
        if isinstance(value, torch.Tensor) and value.dim() == 2 and value.shape[0] == 2 * n:
            part[key] = value[rows.to(value.device), :width]
        else:  # per pair: (n,) tensors and lists
            part[key] = value[group.start: group.stop]
    return part


def _variant_part(variants: dict[str, Tensor], group: range, n: int, sequence_pairs: list[int]
                  ) -> dict[str, Tensor] | None:
    """The variants of pairs ``group`` (of ``n``), rows renumbered into the pass; None if none."""
    count = len(group)
    taken = [j for j, pair in enumerate(sequence_pairs) if pair in group]
    new_row = {2 * n + j: 2 * count + k for k, j in enumerate(taken)}
    keep, rows = [], []
    for v, row in enumerate(int(r) for r in variants["rows"].tolist()):
        if row < 2 * n:  # an original: row i (chosen) or n + i (rejected) of pair i
            pair, rejected = row % n, row >= n
            if pair in group:
                keep.append(v)
                rows.append(pair - group.start + (count if rejected else 0))
        elif row in new_row:
            keep.append(v)
            rows.append(new_row[row])
    if not keep:
        return None
    device = variants["rows"].device
    index = torch.tensor(keep, dtype=torch.long, device=device)
    part = {key: variants[key][index] for key in ("labels", "weights")}
    part["rows"] = torch.tensor(rows, dtype=torch.long, device=device)
    if taken:
        sequences = torch.tensor(taken, dtype=torch.long, device=device)
        width = int(variants["attention_mask"][sequences].sum(dim=1).max())
        for key in ("input_ids", "attention_mask", "response_mask"):
            part[key] = variants[key][sequences, :width]
        part["pairs"] = variants["pairs"][sequences] - group.start
    return part


def run_passes(model: Any, batch: dict[str, Any], settings: BatchSettings, tokenizer: Any, spo_step: int,
               max_tokens: int, backward: Callable[[Tensor], None],
               check: Callable[[Tensor], None] | None = None) -> StepResult:
    """One micro-batch's forward and backward in passes of at most ``max_tokens`` tokens
    (:func:`split_passes`; 0: one pass), each pass's loss scaled by its pairs' share of the batch.

    The degree variants are planned once for the whole batch (the same levels as one pass would
    draw); each pass's degree loss is scaled (:attr:`Pass.degree_scale`) so that the passes'
    losses add up to the batch's: the same gradient, loss and metric sums up to float summation
    order. With ``--spo`` in several passes, a pair's own ``loss`` row carries its pass's degree
    term (the rows still sum to the batch's).

    Args:
        model: a prepared :class:`realspo.training.step.PolicyWithHead`.
        batch: the micro-batch (:class:`realspo.training.data.PairCollator`).
        settings: the run's batch settings.
        tokenizer: tokenizes the degree variants.
        spo_step: seeds the degree levels drawn.
        max_tokens: ``--pass-tokens``.
        backward: back-propagates a pass's scaled loss (``accelerator.backward``).
        check: called with each pass's loss before its backward (e.g. a finiteness check).

    Returns:
        The micro-batch's :class:`StepResult` (:func:`merge_results`).
    """
    n = len(batch["index"])
    variants = variant_batch(batch, settings, tokenizer, spo_step) if settings.spo else None
    passes = split_passes(batch, max_tokens, variants)
    results = []
    for part in passes:
        result = forward_pass(model, part.batch, settings, part.variants, degree_scale=part.degree_scale)
        if check is not None:
            check(result.loss)
        backward(result.loss if len(passes) == 1 else result.loss * (part.count / n))
        results.append(result)
    return merge_results(results)


def merge_results(results: list[StepResult]) -> StepResult:
    """The micro-batch's result from its groups': the loss a one-pass step would report
    (pair-weighted mean, detached: the gradients are already accumulated), metric sums added,
    per-pair rows concatenated in batch order."""
    if len(results) == 1:
        return results[0]
    n = sum(r.count for r in results)
    loss = sum(r.loss.detach() * (r.count / n) for r in results)
    first = results[0]
    sums = Metrics(first.sums.names, torch.stack([r.sums.values for r in results]).sum(0))
    per_pair = Metrics(first.per_pair.names, torch.cat([r.per_pair.values for r in results]))
    return StepResult(torch.as_tensor(loss), sums, n, sum(r.tokens for r in results), per_pair)
