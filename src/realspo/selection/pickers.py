"""The per-prompt building blocks of :mod:`realspo.selection.strategies`: cosine matrices,
the keys a strategy reads per pair, the pickers that choose a prompt's pair from a key, and the
rankers that order the dataset's picked pairs. The formulas and papers are in the registry's
module docstring; each function here is one of them.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:
    import torch

KMEANS_MAX_ITER = 100
# Squared distances this close (float32 cosines carry ~1e-7 error) are ties.
TIE_TOLERANCE = 1e-6


def cosine_matrices(x: torch.Tensor) -> torch.Tensor:
    """(C, K, D) embeddings -> (C, K, K) cosines; a zero vector has cosine 0 with all."""
    import torch
    if x.device.type == "cpu" and not x.requires_grad:
        # numpy's batched matmul is ~1.5x faster than torch.bmm for these (K x D)(D x K)
        # blocks on CPU (measured: 512 x 8 x 2048, 1 thread: 4.0 ms vs 5.9 ms).
        xn = x.numpy()
        gram = torch.from_numpy(np.matmul(xn, xn.transpose(0, 2, 1)))
    else:
        gram = torch.bmm(x, x.transpose(1, 2))
    diag = gram.diagonal(dim1=1, dim2=2)
    norms = diag.clamp_min(1e-30).sqrt()
    sim = gram / (norms[:, :, None] * norms[:, None, :])
    # Exact symmetry and unit diagonal, so that mathematically tied k-means distances
    # (e.g. both members of a two-point cluster) are tied in floating point too.
    sim = 0.5 * (sim + sim.transpose(1, 2))
    sim.diagonal(dim1=1, dim2=2).copy_((diag > 0).to(sim.dtype))
    return sim


def _kernel_kmeans2(sim: torch.Tensor, init_a: torch.Tensor, init_b: torch.Tensor):
    """Batched Lloyd k-means, k=2, on normalised vectors known only through their (C, K, K)
    cosine matrix: a centre is a weight vector w over the K points (c = sum_i w_i x_i), so
    |x_j - c|^2 = s_jj - 2 (S w)_j + w^T S w. Returns labels (C, K) and distances (C, K, 2)."""
    import torch
    c, k, _ = sim.shape
    rows = torch.arange(c)
    w = torch.zeros(c, 2, k, dtype=sim.dtype)
    w[rows, 0, init_a] = 1.0
    w[rows, 1, init_b] = 1.0
    self_sim = sim.diagonal(dim1=1, dim2=2)  # (C, K)
    labels = None
    for _ in range(KMEANS_MAX_ITER):
        sw = torch.bmm(sim, w.transpose(1, 2))  # (C, K, 2): x_j . c
        cc = (w * sw.transpose(1, 2)).sum(-1)  # (C, 2): |c|^2
        dist = self_sim[:, :, None] - 2.0 * sw + cc[:, None, :]
        new_labels = dist.argmin(-1)  # ties -> cluster 0 (first minimum)
        if labels is not None and torch.equal(new_labels, labels):
            break
        labels = new_labels
        onehot = torch.stack([labels == 0, labels == 1], dim=1).to(sim.dtype)  # (C, 2, K)
        counts = onehot.sum(-1, keepdim=True)
        # An empty cluster keeps its centre.
        w = torch.where(counts > 0, onehot / counts.clamp_min(1.0), w)
    return labels, dist


def pick_easy(sim: torch.Tensor, valid: torch.Tensor, u: torch.Tensor) -> torch.Tensor:
    """REAL's recommendation: the least similar valid pair, ``argmin_{i<j} s_ij``."""
    c, k, _ = sim.shape
    return sim.reshape(c, k * k).masked_fill(~valid.reshape(c, k * k), math.inf).argmin(-1)


def pick_hard(sim: torch.Tensor, valid: torch.Tensor, u: torch.Tensor) -> torch.Tensor:
    """The most similar valid pair, ``argmax_{i<j} s_ij``."""
    c, k, _ = sim.shape
    return sim.reshape(c, k * k).masked_fill(~valid.reshape(c, k * k), -math.inf).argmax(-1)


def pick_random(sim: torch.Tensor, valid: torch.Tensor, u: torch.Tensor) -> torch.Tensor:
    """A uniformly random valid pair: the ``floor(u * n_valid)``-th one, in flattened order."""
    c, k, _ = sim.shape
    flat_valid = valid.reshape(c, k * k)
    n_valid = flat_valid.sum(-1)
    r = (u * n_valid).long().clamp_max(n_valid - 1)  # the r-th valid pair, 0-based
    rank = flat_valid.long().cumsum(-1) - 1
    return (flat_valid & (rank == r[:, None])).long().argmax(-1)


def pick_centroid(sim: torch.Tensor, valid: torch.Tensor, u: torch.Tensor) -> torch.Tensor:
    """k-means (k=2) from the easy pair, then each cluster's response nearest its centre; the
    easy pair where a cluster ends empty or the two picks are not a valid pair."""
    import torch
    c, k, _ = sim.shape
    easy = pick_easy(sim, valid, u)
    a, b = easy // k, easy % k
    labels, dist = _kernel_kmeans2(sim.double(), a, b)
    picks = []
    for cluster in (0, 1):
        member = labels == cluster
        d = dist[:, :, cluster].masked_fill(~member, math.inf)
        # Nearest member; distances within TIE_TOLERANCE count as ties -> lowest index.
        near = member & (d <= d.min(-1, keepdim=True).values + TIE_TOLERANCE)
        picks.append((near.long().argmax(-1), member.any(-1)))
    (p0, has0), (p1, has1) = picks
    i, j = torch.minimum(p0, p1), torch.maximum(p0, p1)
    pair = i * k + j
    ok = has0 & has1 & (i != j) & valid.reshape(c, k * k).gather(1, pair[:, None]).squeeze(1)
    return torch.where(ok, pair, easy)


def rank_ascending(pair_sim: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Lowest similarity first; a stable sort, so ties keep group order."""
    return np.argsort(pair_sim, kind="stable")


def rank_descending(pair_sim: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Highest similarity first; a stable sort, so ties keep group order."""
    return np.argsort(-pair_sim, kind="stable")


def rank_random(pair_sim: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """A seeded random order (the selection's generator, after the per-prompt uniforms)."""
    return rng.permutation(len(pair_sim))


@dataclass(frozen=True)
class Chunk:
    """What a strategy sees of a chunk of C prompts with K responses each.

    ``sim`` (C, K, K) cosines; ``valid`` (C, K, K) bool candidate pairs (i < j, distinct
    texts); ``u`` (C,) one uniform in [0, 1) per prompt; ``implicit_rewards`` (C, K)
    ``beta log pi/pi_ref`` per response and ``rewards`` (C, K) reward-model scores, each None
    unless the strategy needs them.
    """

    sim: torch.Tensor
    valid: torch.Tensor
    u: torch.Tensor
    implicit_rewards: torch.Tensor | None = None
    rewards: torch.Tensor | None = None
    rows: slice | None = None  # a block of rows i (large groups): sim and valid are (C, B, K)


def _pairwise_difference(values: torch.Tensor, chunk: Chunk) -> torch.Tensor:
    """``v_i - v_j`` over the chunk's pairs: (C, K, K), or (C, B, K) for a block of rows."""
    v = values.double()
    rows = v if chunk.rows is None else v[:, chunk.rows]
    return rows[:, :, None] - v[:, None, :]


def similarity_key(chunk: Chunk) -> torch.Tensor:
    """REAL's key: the cosine ``s_ij``."""
    return chunk.sim


def abs_margin_key(chunk: Chunk) -> torch.Tensor:
    """``|m_ij| = |rho_i - rho_j|`` (Yang et al., arXiv 2406.17312), rho the implicit rewards."""
    return _pairwise_difference(chunk.implicit_rewards, chunk).abs()  # type: ignore[arg-type]


def reward_gap_key(chunk: Chunk) -> torch.Tensor:
    """``|r_i - r_j|``: its argmax is the prompt's (highest, lowest) reward pair."""
    return _pairwise_difference(chunk.rewards, chunk).abs()  # type: ignore[arg-type]


def reward_uncertainty_key(chunk: Chunk) -> torch.Tensor:
    """``|sigma(r_i - r_j) - 1/2|``: 0 where the reward model cannot tell the pair apart."""
    import torch
    return (torch.sigmoid(_pairwise_difference(chunk.rewards, chunk)) - 0.5).abs()  # type: ignore[arg-type]
