"""Prefix sharing: sequences that start alike run their common tokens once.

A pair's chosen and rejected sequences start with the same prompt, and an SPO degree
variant repeats its prompt and, up to the first removed phrase, its original response.
Computed apart, every copy of a shared prefix costs a full forward and backward.

Here the sequences of a *group* (one pair with its variants) become one token tree: each
sequence is a path from a root, and tokens that two sequences share at the same place
(same token after the same prefix) are one node. The tree's nodes run as one packed row,
each node at its depth as position id, attending to exactly its ancestors (a 4D mask).
Causal attention means the state of a sequence's token ``t`` depends on its tokens
``0..t`` only, which are that node's ancestors: every sequence position gets the hidden
state it would get run alone (up to float rounding), and gradients reach shared nodes from
every sequence through them. :func:`shared_hidden_states` returns hidden states laid out
like :func:`realspo.training.logprobs.grouped_hidden_states`'s, so the scoring and pooling
downstream do not change.

Needs a model that takes ``position_ids`` and a 4D attention mask (``sdpa`` or ``eager``
attention) and no sliding window shorter than a packed row: :func:`sharing_unsupported`
says why not, otherwise None.
"""

from __future__ import annotations

import inspect
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor

from realspo.training.logprobs import (
    group_overhead,
    grouped_hidden_states,
    last_hidden_states,
    length_groups,
    unwrap_causal_lm,
)

MASKED_ATTENTION = ("sdpa", "eager")  # implementations that take a custom 4D mask as given


@dataclass
class TokenTree:
    """The distinct ``(prefix, token)`` nodes of some token sequences, in first-seen order."""

    tokens: list[int]  # node -> token id
    depths: list[int]  # node -> position in every sequence through it
    paths: list[list[int]]  # sequence -> its nodes, one per token


def token_tree(sequences: Sequence[Sequence[int]]) -> TokenTree:
    """The tree of ``sequences``: a node per distinct (parent node, token); a node's parent
    always comes before it, so a path's nodes increase."""
    children: dict[tuple[int, int], int] = {}
    tokens: list[int] = []
    depths: list[int] = []
    paths: list[list[int]] = []
    for sequence in sequences:
        node, path = -1, []
        for depth, token in enumerate(sequence):
            child = children.get((node, token))
            if child is None:
                child = children[(node, token)] = len(tokens)
                tokens.append(int(token))
                depths.append(depth)
            path.append(child)
            node = child
        paths.append(path)
    return TokenTree(tokens, depths, paths)


def sharing_unsupported(model: Any, longest: int | None = None) -> str | None:
    """Why prefix sharing cannot run on ``model`` (None: it can). ``longest``: the longest
    sequence it will see, checked against a sliding attention window."""
    causal_lm = unwrap_causal_lm(model)
    config = getattr(causal_lm, "config", None)
    implementation = getattr(config, "_attn_implementation", None)
    if implementation not in MASKED_ATTENTION:
        return f"attention implementation {implementation!r} (needs one of {', '.join(MASKED_ATTENTION)})"
    if "position_ids" not in inspect.signature(causal_lm.forward).parameters:
        return f"{type(causal_lm).__name__}.forward takes no position_ids"
    window = getattr(config, "sliding_window", None)
    if window and (longest is None or longest > window):
        return f"sliding attention window {window}"
    return None


def _packed_rows(input_ids: Tensor, attention_mask: Tensor, groups: Sequence[Sequence[int]]
                 ) -> tuple[list[TokenTree], list[list[int]]]:
    lengths = attention_mask.sum(dim=1).tolist()
    rows = input_ids.tolist()
    trees = [token_tree([rows[i][: int(lengths[i])] for i in group]) for group in groups]
    return trees, [list(group) for group in groups]


def _tree_batch(trees: Sequence[TokenTree], implementation: str, dtype: torch.dtype,
                device: torch.device) -> tuple[Tensor, Tensor, Tensor]:
    """``input_ids``, ``position_ids`` (G, L) and the 4D mask (G, 1, L, L) of packed trees."""
    width = max(len(t.tokens) for t in trees)
    ids = torch.zeros(len(trees), width, dtype=torch.long)
    positions = torch.zeros(len(trees), width, dtype=torch.long)
    allowed = torch.eye(width, dtype=torch.bool).repeat(len(trees), 1, 1)  # padding sees itself
    for g, tree in enumerate(trees):
        n = len(tree.tokens)
        ids[g, :n] = torch.tensor(tree.tokens)
        positions[g, :n] = torch.tensor(tree.depths)
        for path in tree.paths:
            nodes = torch.tensor(path)
            causal = torch.ones(len(path), len(path), dtype=torch.bool).tril_()
            allowed[g][nodes[:, None], nodes[None, :]] |= causal
    if implementation == "eager":  # added to the scores
        mask = torch.zeros(allowed.shape, dtype=dtype).masked_fill_(~allowed, torch.finfo(dtype).min)
    else:
        mask = allowed
    return ids.to(device), positions.to(device), mask[:, None].to(device)


def shared_hidden_states(model: Any, input_ids: Tensor, attention_mask: Tensor,
                         groups: Sequence[Sequence[int]], overhead: int | None = None) -> Tensor:
    """Final hidden states (B, T, H) of a right-padded batch (``input_ids``, ``attention_mask``
    (B, T)), each of ``groups`` (lists of row indices, every row in exactly one) run as one
    token tree (a batch that is not right-padded runs in length groups instead); trees of
    similar size share a model call (:func:`length_groups`). Positions past a row's length hold
    an arbitrary real state, as in :func:`grouped_hidden_states`."""
    states, index = shared_states(model, input_ids, attention_mask, groups, overhead)
    return states.index_select(0, index.reshape(-1)).reshape(*input_ids.shape, states.shape[-1])


def shared_states(model: Any, input_ids: Tensor, attention_mask: Tensor, groups: Sequence[Sequence[int]],
                  overhead: int | None = None) -> tuple[Tensor, Tensor]:
    """:func:`shared_hidden_states` before it is laid out: the distinct states (N, H) the model
    computed and ``index`` (B, T), the row of ``states`` holding each position's state, so a
    reader can gather only the positions it needs (the degree head: one per variant)."""
    if not bool((attention_mask[:, :-1] >= attention_mask[:, 1:]).all()):  # not right-padded
        hidden = grouped_hidden_states(model, input_ids, attention_mask, overhead)
        index = torch.arange(hidden.shape[0] * hidden.shape[1], device=hidden.device)
        return hidden.reshape(-1, hidden.shape[-1]), index.reshape(input_ids.shape)
    causal_lm = unwrap_causal_lm(model)
    implementation = causal_lm.config._attn_implementation
    dtype = causal_lm.get_input_embeddings().weight.dtype
    device = input_ids.device
    trees, members = _packed_rows(input_ids, attention_mask, groups)
    if overhead is None:
        overhead = group_overhead(device)
    source = torch.zeros(input_ids.shape, dtype=torch.long)  # (B, T) -> index into the packed states
    pieces, offset = [], 0
    for calls in length_groups([len(t.tokens) for t in trees], overhead):
        batch = [trees[g] for g in calls]
        ids, positions, mask = _tree_batch(batch, implementation, dtype, device)
        hidden = last_hidden_states(model, ids, mask, position_ids=positions)  # (G, L, H)
        for k, g in enumerate(calls):
            for row, path in zip(members[g], trees[g].paths, strict=True):
                source[row, : len(path)] = torch.tensor(path) + offset + k * hidden.shape[1]
        pieces.append(hidden.reshape(-1, hidden.shape[-1]))
        offset += hidden.shape[0] * hidden.shape[1]
    flat = torch.cat(pieces) if len(pieces) > 1 else pieces[0]
    return flat, source.to(device)


def pair_groups(n_pairs: int, variant_pairs: Sequence[int] = ()) -> list[list[int]]:
    """The groups of a ``[chosen (n); rejected (n); variants]`` batch: pair ``i``'s rows ``i``
    and ``n + i``, then the rows ``2n + j`` of the variants ``j`` of pair ``variant_pairs[j]``."""
    groups = [[i, n_pairs + i] for i in range(n_pairs)]
    for j, pair in enumerate(variant_pairs):
        groups[int(pair)].append(2 * n_pairs + j)
    return groups


def tree_tokens(attention_mask: Tensor, input_ids: Tensor, groups: Sequence[Sequence[int]]) -> int:
    """How many tokens the groups' trees run (against ``attention_mask.sum()`` run apart)."""
    trees, _ = _packed_rows(input_ids, attention_mask, groups)
    return sum(len(t.tokens) for t in trees)

