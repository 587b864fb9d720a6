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
"""

from __future__ import annotations

from typing import Any

import torch

from realspo.training.metrics import Metrics
from realspo.training.step import StepResult

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


def split_pairs(batch: dict[str, Any], max_tokens: int) -> list[dict[str, Any]]:
    """``batch`` as groups of consecutive pairs of at most ``max_tokens`` tokens each.

    A batch that fits is returned as it is (``[batch]``). Each group is a batch of the same
    form: rows ``i`` and ``n + i`` of the (2n, T) tensors for each of its pairs ``i``, cut to
    the group's longest sequence; per-pair tensors and lists sliced alike.
    """
    n = len(batch["index"])
    lengths = batch["attention_mask"].sum(dim=1).tolist()
    groups = pair_groups([int(lengths[i] + lengths[n + i]) for i in range(n)], max_tokens)
    if len(groups) <= 1:
        return [batch]
    parts = []
    for group in groups:
        pair_rows = torch.arange(group.start, group.stop)
        rows = torch.cat([pair_rows, pair_rows + n])
        width = int(batch["attention_mask"][rows].sum(dim=1).max())
        part: dict[str, Any] = {}
        for key, value in batch.items():
            if isinstance(value, torch.Tensor) and value.dim() == 2 and value.shape[0] == 2 * n:
                part[key] = value[rows.to(value.device), :width]
            else:  # per pair: (n,) tensors and lists
                part[key] = value[group.start: group.stop]
        parts.append(part)
    return parts


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
