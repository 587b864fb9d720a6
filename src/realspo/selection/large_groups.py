"""One prompt with very many responses, selected in blocks of rows.

The per-prompt pick of :mod:`realspo.selection.strategies` reads (C, K, K) matrices: one
prompt with 20,000 responses would need 400 M cosines (1.6 GB, and several times that for the
masks and keys). A group with more than :data:`BLOCK_THRESHOLD` responses is instead read in
blocks of B rows, (1, B, K) at a time with B * K <= :data:`BLOCK_ELEMENTS`, so memory grows
linearly with K: the least or most extreme valid pair is the best of the blocks' bests (the
first one in row order on a tie, as ``argmin`` over the whole matrix would give), a random
pair is found by counting valid pairs block by block. The all-pairs similarities reported in
the summary are a strided sample of at most about :data:`SAMPLE_PER_GROUP` per such group.
Strategies that need the whole matrix at once (``centroid``'s k-means, ``design``) refuse such
a group with one line.
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from typing import TYPE_CHECKING, Any

import numpy as np

from realspo.errors import ConfigError
from realspo.selection.pickers import Chunk, pick_easy, pick_hard, pick_random

if TYPE_CHECKING:
    import torch

BLOCK_THRESHOLD = 1024     # K above which a group's K x K matrices are never built whole
BLOCK_ELEMENTS = 1 << 20   # B * K per block: 4 MB of float32 cosines
SAMPLE_PER_GROUP = 1 << 15  # all-pairs similarities kept for the summary, per large group


def row_blocks(k: int) -> Iterator[slice]:
    """Consecutive row slices covering ``range(k)``, each of at most ``BLOCK_ELEMENTS // k`` rows."""
    step = max(1, BLOCK_ELEMENTS // k)
    for lo in range(0, k, step):
        yield slice(lo, min(k, lo + step))


def block_cosines(x: np.ndarray, norms: np.ndarray, rows: slice) -> torch.Tensor:
    """(1, B, K) cosines of rows ``rows`` of ``x`` (K, D) with all K, symmetrised and with the
    unit diagonal as :func:`realspo.selection.pickers.cosine_matrices` makes them."""
    import torch

    denominator = norms[rows, None] * norms[None, :]
    forward = (x[rows] @ x.T) / denominator
    backward = (x @ x[rows].T).T / denominator
    sim = 0.5 * (forward + backward)
    index = np.arange(rows.start, rows.stop)
    sim[index - rows.start, index] = (norms[index] > 0).astype(sim.dtype)
    return torch.from_numpy(np.ascontiguousarray(sim, dtype=np.float32))[None]


def block_valid(keys: np.ndarray | None, rows: slice, k: int) -> torch.Tensor:
    """(1, B, K) candidate pairs of the block: ``i < j``, distinct texts."""
    import torch

    i = torch.arange(rows.start, rows.stop)[:, None]
    valid = i < torch.arange(k)[None, :]
    if keys is not None:
        kk = torch.from_numpy(keys)
        valid = valid & (kk[rows][:, None] != kk[None, :])
    return valid[None]


def pick_large_group(strategy: Any, x: np.ndarray, keys: np.ndarray | None, u: float,
                     scores: dict[str, torch.Tensor | None]) -> tuple[int, int, float, float, bool, np.ndarray]:
    """``strategy``'s pair of one group of K responses, ``x`` (K, D), read in row blocks.

    Args:
        strategy: the registry entry (its ``key`` and ``pick_per_prompt``).
        x: the group's embeddings.
        keys: (K,) text keys (equal for identical texts), or None.
        u: the group's uniform in [0, 1) (``random``).
        scores: ``implicit_rewards`` / ``rewards`` as (1, K) tensors, or None.

    Returns:
        ``(a, b, similarity, key, eligible, sample)``: the pair, its cosine and key, whether
        the group has a valid pair at all, and a sample of its pairs' cosines.
    """
    import torch

    if strategy.joint or strategy.pick_per_prompt not in (pick_easy, pick_hard, pick_random):
        raise ConfigError(f"--strategy {strategy.name} compares all pairs of a prompt at once; a "
                          f"prompt with {len(x)} responses is more than it can take (at most "
                          f"{BLOCK_THRESHOLD}); use easy, hard, random or a margin/reward strategy")
    x = np.asarray(x, dtype=np.float32)
    k = len(x)
    norms = np.sqrt(np.einsum("ij,ij->i", x, x)).clip(min=1e-30)
    stride = max(1, math.ceil(k * (k - 1) / 2 / SAMPLE_PER_GROUP))
    samples: list[np.ndarray] = []
    counts: list[int] = []
    best: tuple[float, int, int] | None = None
    minimise = strategy.pick_per_prompt is pick_easy
    for rows in row_blocks(k):
        sim, valid = block_cosines(x, norms, rows), block_valid(keys, rows, k)
        samples.append(sim[valid].numpy()[::stride])
        counts.append(int(valid.sum()))
        if strategy.pick_per_prompt is pick_random or not counts[-1]:
            continue
        key = strategy.key(Chunk(sim, valid, torch.tensor([u]), rows=rows, **scores))[0]
        fill = math.inf if minimise else -math.inf
        masked = key.masked_fill(~valid[0], fill).flatten()
        at = int(masked.argmin() if minimise else masked.argmax())
        value = float(masked[at])
        if best is None or (value < best[0] if minimise else value > best[0]):
            best = (value, rows.start + at // k, at % k)
    total = sum(counts)
    sample = np.concatenate(samples) if samples else np.zeros(0, dtype=np.float32)
    if total == 0:
        return 0, 0, 0.0, 0.0, False, sample
    if strategy.pick_per_prompt is pick_random:
        a, b = _random_pair(keys, k, min(int(u * total), total - 1), counts)
        value = float("nan")
    else:
        assert best is not None
        value, a, b = best
    similarity = float(block_cosines(x, norms, slice(a, a + 1))[0, 0, b])
    if math.isnan(value):
        value = similarity  # random ranks by nothing; keep the similarity as its key
    return a, b, similarity, value, True, sample


def pick_large_groups(strategy: Any, picks: Any, embeddings: np.ndarray, groups: np.ndarray,
                      sizes: np.ndarray, starts: np.ndarray, keys: np.ndarray | None,
                      uniforms: np.ndarray, extra: dict[str, np.ndarray | None]) -> None:
    """Fill ``picks`` (the per-prompt arrays of :func:`realspo.selection.strategies.select_pairs`)
    for ``groups``, each read in row blocks by :func:`pick_large_group`.

    Args:
        strategy: the registry entry.
        picks: ``pair_a``, ``pair_b``, ``similarity``, ``key``, ``eligible`` (G,) arrays and the
            ``all_similarities`` list, filled in place.
        embeddings: (N, D), flattened order.
        groups: the indices of the large groups.
        sizes: (G,) responses per group.
        starts: (G,) each group's first row.
        keys: (N,) text keys, or None.
        uniforms: (G,) one uniform per group.
        extra: ``implicit_rewards`` / ``rewards`` (N,), or None.
    """
    import torch

    for g in groups:
        rows = starts[g] + np.arange(sizes[g])
        scores = {name: None if v is None or not strategy.uses(name) else torch.from_numpy(v[rows])[None]
                  for name, v in extra.items()}
        a, b, picks.similarity[g], picks.key[g], picks.eligible[g], sample = pick_large_group(
            strategy, np.asarray(embeddings[rows]), None if keys is None else keys[rows],
            float(uniforms[g]), scores)
        picks.pair_a[g], picks.pair_b[g] = a, b
        picks.all_similarities.append(sample)


def _random_pair(keys: np.ndarray | None, k: int, rank: int, counts: list[int]) -> tuple[int, int]:
    """The ``rank``-th valid pair (0-based, flattened order), from the per-block counts."""
    for rows, count in zip(row_blocks(k), counts, strict=True):
        if rank < count:
            flat = block_valid(keys, rows, k)[0].flatten()
            at = int((flat.long().cumsum(0) == rank + 1).long().argmax())
            return rows.start + at // k, at % k
        rank -= count
    raise AssertionError("rank beyond the valid pairs")
