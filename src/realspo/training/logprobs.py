"""Sequence log-probs of responses: prompt masked, vocabulary chunked.

Sequences come from :mod:`realspo.training.tokenization` (prompt and response tokenized apart, EOS,
truncation, :func:`~realspo.training.tokenization.collate` into a batch with a ``response_mask``), the
same for the reference pass (:mod:`realspo.training.reference`) and for training, so both score exactly
the same tokens. :func:`response_logps` runs the model for its last hidden states (in one
call, or with ``group_by_length`` in groups of similar length, :func:`grouped_hidden_states`,
so short sequences are not padded to the longest) and applies the LM head only at the
positions that predict response tokens (:func:`logps_from_hidden`), a chunk at a time, with
the log-softmax in fp32. Memory for logits is ``chunk_size x vocab`` instead of
``batch x length x vocab``, in the backward pass too (each chunk is recomputed there).
"""

from __future__ import annotations

import inspect
import math
from collections.abc import Sequence
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor
from torch.utils.checkpoint import checkpoint


def unwrap_causal_lm(model: Any) -> Any:
    """The ``*ForCausalLM`` inside DDP / accelerate / peft wrappers (same parameters)."""
    while not hasattr(model, "get_output_embeddings"):
        inner = getattr(model, "module", None) or getattr(model, "_orig_mod", None)
        if inner is None:
            break
        model = inner  # DistributedDataParallel, torch.compile, accelerate wrappers
    if hasattr(model, "get_base_model"):
        model = model.get_base_model()  # peft: the base model with the adapters injected
    return model


def _decoder(causal_lm: Any) -> Any:
    decoder = causal_lm.get_decoder() if hasattr(causal_lm, "get_decoder") else None
    if decoder is None:
        decoder = getattr(causal_lm, "model", None)
    return decoder if decoder is not None else causal_lm.base_model


def last_hidden_states(model: Any, input_ids: Tensor, attention_mask: Tensor,
                       position_ids: Tensor | None = None) -> Tensor:
    """The decoder's final hidden states (B, T, H), the input of the LM head.

    ``attention_mask``: (B, T), or a 4D mask the model takes as given with ``position_ids``
    (:mod:`realspo.training.prefix_tree`).

    The call goes through ``model`` itself (so DDP's gradient hooks, peft adapters and
    gradient checkpointing all apply); a forward hook on the decoder captures its output,
    and ``logits_to_keep=1`` keeps the model's own logits to one position.
    """
    causal_lm = unwrap_causal_lm(model)
    captured: list[Tensor] = []

    def hook(_module: Any, _inputs: Any, output: Any) -> None:
        hidden = output[0] if isinstance(output, tuple) else output.last_hidden_state
        captured.append(hidden)

    kwargs: dict[str, Any] = {"input_ids": input_ids, "attention_mask": attention_mask,
                              "use_cache": False}
    if position_ids is not None:
        kwargs["position_ids"] = position_ids
    if "logits_to_keep" in inspect.signature(causal_lm.forward).parameters:
        kwargs["logits_to_keep"] = 1
    handle = _decoder(causal_lm).register_forward_hook(hook)
    try:
        model(**kwargs)
    finally:
        handle.remove()
    return captured[-1]


def length_groups(lengths: Sequence[int], overhead: int = 32) -> list[list[int]]:
    """Split sequence indices into groups of similar length (longest first).

    Each group is run padded only to its own longest member, so the tokens computed are
    ``sum(len(g) * max(g))`` instead of ``n * max``. The split is optimal for that cost plus
    ``overhead`` token-equivalents per group (a model call's fixed cost): a dynamic program
    over the length-sorted order, O(n^2) for n sequences.
    """
    order = sorted(range(len(lengths)), key=lambda i: -lengths[i])
    sorted_lengths = [lengths[i] for i in order]
    n = len(order)
    best = [0.0] + [math.inf] * n  # best[j]: cheapest split of the j longest sequences
    cut = [0] * (n + 1)
    for j in range(1, n + 1):
        for i in range(j):  # last group: sorted positions i..j-1, padded to sorted_lengths[i]
            cost = best[i] + (j - i) * sorted_lengths[i] + overhead
            if cost < best[j]:
                best[j], cut[j] = cost, i
    groups, j = [], n
    while j > 0:
        groups.append(order[cut[j]:j])
        j = cut[j]
    return groups[::-1]


def group_overhead(device: torch.device) -> int:
    """Token-equivalents one extra model call costs: kernel launches make it larger on GPUs."""
    return 32 if device.type == "cpu" else 512


def grouped_hidden_states(model: Any, input_ids: Tensor, attention_mask: Tensor,
                          overhead: int | None = None) -> Tensor:
    """:func:`last_hidden_states` of a right-padded batch, run in groups of similar length.

    ``input_ids``, ``attention_mask`` (B, T), right-padded (as :func:`collate` builds them).
    Returns (B, T, H). Causal attention never lets a token see the padding after it, so every
    real position gets the same state as in one padded call (within float rounding); only
    the work on padding is skipped. Padding positions are not meaningful (zeros past a
    group's longest member). A batch that is not right-padded is run as one call.
    """
    lengths = attention_mask.sum(dim=1)
    right_padded = bool((attention_mask[:, :-1] >= attention_mask[:, 1:]).all())
    lengths_list = [max(int(n), 1) for n in lengths.tolist()]
    if overhead is None:
        overhead = group_overhead(input_ids.device)
    groups = length_groups(lengths_list, overhead) if right_padded else [list(range(len(lengths_list)))]
    width = input_ids.shape[1]
    if len(groups) == 1:
        used = max(lengths_list) if right_padded else width
        hidden = last_hidden_states(model, input_ids[:, :used], attention_mask[:, :used])
        return F.pad(hidden, (0, 0, 0, width - used)) if used < width else hidden
    pieces, order = [], []
    for group in groups:
        used = lengths_list[group[0]]  # the group's longest
        rows = torch.tensor(group, device=input_ids.device)
        hidden = last_hidden_states(model, input_ids[rows, :used], attention_mask[rows, :used])
        pieces.append(F.pad(hidden, (0, 0, 0, width - used)))
        order.extend(group)
    inverse = torch.empty(len(order), dtype=torch.long, device=input_ids.device)
    inverse[torch.tensor(order, device=input_ids.device)] = torch.arange(len(order), device=input_ids.device)
    return torch.cat(pieces)[inverse]


def _target_logps(hidden: Tensor, targets: Tensor, head: torch.nn.Module, softcap: float | None) -> Tensor:
    """log p(target) for (N, H) hidden states: the LM head, then log-softmax in fp32. (N,)"""
    logits = head(hidden).float()
    if softcap:
        logits = softcap * torch.tanh(logits / softcap)
    return logits.gather(-1, targets[:, None]).squeeze(-1) - torch.logsumexp(logits, dim=-1)


class _LinearHeadLogps(torch.autograd.Function):
    """:func:`_target_logps` for a plain linear LM head, with a hand-written backward.

    Same values as autograd through ``checkpoint(_target_logps)``; the backward recomputes the
    (N, V) logits once and turns them into the gradient in place (softmax, times the incoming
    gradient, minus it at the targets), where autograd would allocate a softmax, a zero-filled
    gather gradient and their sum: about half the memory traffic and peak memory of the head.
    The matrix products run in the forward's dtype (bf16 under autocast), the softmax in fp32.
    """

    @staticmethod
    def forward(ctx: Any, hidden: Tensor, weight: Tensor, bias: Tensor | None, targets: Tensor,
                softcap: float | None) -> Tensor:
        raw = F.linear(hidden, weight, bias)
        ctx.compute_dtype, ctx.softcap = raw.dtype, softcap
        logits = raw.float()
        if softcap:
            logits = torch.tanh(logits / softcap) * softcap
        lse = torch.logsumexp(logits, dim=-1)
        ctx.save_for_backward(hidden, weight, bias, targets, lse)
        return logits.gather(-1, targets[:, None]).squeeze(-1) - lse

    @staticmethod
    def backward(ctx: Any, grad: Tensor) -> tuple[Tensor | None, ...]:
        hidden, weight, bias, targets, lse = ctx.saved_tensors
        dtype, softcap = ctx.compute_dtype, ctx.softcap
        with torch.autocast(hidden.device.type, enabled=False):
            h, w = hidden.to(dtype), weight.to(dtype)
            z = F.linear(h, w, None if bias is None else bias.to(dtype)).float()  # (N, V)
            tanh = None
            if softcap:
                tanh = z.div_(softcap).tanh_()
                z = tanh * softcap
            # d/dz sum_i g_i * log p_i(t_i) = g_i * (onehot(t_i) - softmax(z_i))
            g = z.sub_(lse[:, None]).exp_().mul_(-grad[:, None].float())
            g.index_put_((torch.arange(g.shape[0], device=g.device), targets), grad.float(), accumulate=True)
            if tanh is not None:
                g.mul_(tanh.pow_(2).neg_().add_(1))  # d(c * tanh(x / c)) / dx = 1 - tanh^2
            g = g.to(dtype)
            grad_hidden = (g @ w).to(hidden.dtype) if ctx.needs_input_grad[0] else None
            grad_weight = (g.t() @ h).to(weight.dtype) if ctx.needs_input_grad[1] else None
            grad_bias = g.sum(0).to(bias.dtype) if bias is not None and ctx.needs_input_grad[2] else None
        return grad_hidden, grad_weight, grad_bias, None, None


def _is_plain_linear(head: torch.nn.Module) -> bool:
    """A ``torch.nn.Linear`` with its own forward and plain (not sharded/distributed) tensors."""
    return (isinstance(head, torch.nn.Linear) and type(head).forward is torch.nn.Linear.forward
            and type(head.weight) in (torch.nn.Parameter, torch.Tensor))


def response_logps(
    model: Any, input_ids: Tensor, attention_mask: Tensor, response_mask: Tensor, *,
    chunk_size: int = 1024, return_hidden: bool = False, group_by_length: bool = False,
) -> tuple[Tensor, Tensor, Tensor | None]:
    """Summed log-probs of the response tokens of each sequence.

    ``input_ids``, ``attention_mask``, ``response_mask``: (B, T) from :func:`collate`.
    Returns ``(sum_logps (B,) fp32, n_tokens (B,) fp32, last_hidden (B, T, H) or None)``.
    With ``group_by_length`` the body runs in length groups (:func:`grouped_hidden_states`;
    the returned hidden states then hold zeros at some padding positions). The scoring is
    :func:`logps_from_hidden`.
    """
    if group_by_length:
        hidden = grouped_hidden_states(model, input_ids, attention_mask)
    else:
        hidden = last_hidden_states(model, input_ids, attention_mask)
    sums, n_tokens = logps_from_hidden(model, hidden, input_ids, response_mask, chunk_size=chunk_size)
    return sums, n_tokens, (hidden if return_hidden else None)


def logps_from_hidden(
    model: Any, hidden: Tensor, input_ids: Tensor, response_mask: Tensor, *, chunk_size: int = 1024,
) -> tuple[Tensor, Tensor]:
    """Summed response log-probs (B,) fp32 and response token counts (B,) from final hidden
    states ``hidden`` (B, T, H) of ``input_ids`` (B, T).

    A response token at position ``t`` is predicted by the hidden state at ``t - 1``; only
    those positions go through the LM head, ``chunk_size`` at a time. When gradients are
    enabled each chunk's fp32 logits are freed after the forward and recomputed in the
    backward (:class:`_LinearHeadLogps` for a plain linear head, checkpointing otherwise).
    Supported heads: a plain linear LM head (tied or not), and
    Gemma-style ``final_logit_softcapping`` from the model config; other logit post-processing
    (e.g. a logit scale) is not applied.
    """
    causal_lm = unwrap_causal_lm(model)
    head = causal_lm.get_output_embeddings()
    softcap = getattr(causal_lm.config, "final_logit_softcapping", None)
    scored = response_mask[:, 1:].to(hidden.device)  # token t+1 is scored from position t
    rows = scored.nonzero(as_tuple=True)[0]
    states = hidden[:, :-1][scored]  # (N, H)
    targets = input_ids[:, 1:].to(hidden.device)[scored]  # (N,)
    pieces = []
    with_grad = torch.is_grad_enabled() and (states.requires_grad or any(
        p.requires_grad for p in head.parameters()))
    for lo in range(0, states.shape[0], chunk_size):
        args = (states[lo: lo + chunk_size], targets[lo: lo + chunk_size], head, softcap)
        if with_grad and _is_plain_linear(head):
            pieces.append(_LinearHeadLogps.apply(args[0], head.weight, head.bias, args[1], softcap))
        elif with_grad:
            pieces.append(checkpoint(_target_logps, *args, use_reentrant=False))
        else:
            pieces.append(_target_logps(*args))
    token_logps = torch.cat(pieces) if pieces else states.new_zeros(0, dtype=torch.float32)
    sums = torch.zeros(input_ids.shape[0], device=hidden.device, dtype=torch.float32)
    sums = sums.index_add(0, rows, token_logps)
    return sums, scored.sum(dim=1).float()
