"""Greedy D-optimal pair selection (``--strategy design``).

Han, Goyal and Ma (arXiv 2606.19607, "Which Pairs to Compare for LLM Post-Training?") bound
DPO's optimality gap through the information matrix of the labelled pairs,
``sum_i w_i z_i z_i^T``: ``z_i = e_a - e_b`` the difference of the pair's two response
embeddings, ``w_i = sigma(m_i) (1 - sigma(m_i))`` the logistic variance at the current
implicit-reward margin ``m_i`` (``w_i = 1`` without a policy). Choosing pairs is then an
optimal-design problem; we maximise

    F(S) = log det(lambda I + sum_{i in S} w_i z_i z_i^T)

greedily over the dataset's candidate pairs, at most ``pairs_per_prompt`` per prompt, until
the budget is spent. The greedy order is the output order (a smaller budget is a prefix).

Adding pair ``i`` raises ``F`` by ``log(1 + w_i z_i^T A^{-1} z_i)`` (matrix determinant
lemma), ``A`` the current matrix. ``F`` is submodular, so a pair's gain only shrinks as pairs
are added, and **lazy greedy** is exact greedy: keep each prompt's last computed best gain as
an upper bound in a max-heap, re-evaluate only the prompts at the top, and take a pair once
its fresh gain is at least every other bound. ``A^{-1}`` is kept explicitly and updated by
Sherman-Morrison, ``A^{-1} <- A^{-1} - w u u^T / (1 + w z^T u)``, ``u = A^{-1} z``. A prompt's
gains come from one product: with ``S = Y A^{-1} Y^T`` over its K (projected) embeddings
``Y``, ``z_ij^T A^{-1} z_ij = S_ii + S_jj - 2 S_ij``.

**Random projection** (the speed choice): embeddings wider than :data:`PROJECTION_DIM` are
projected by a seeded Gaussian matrix ``R`` (D x d, entries N(0, 1/d)) before the greedy, so
the matrix is d x d (d = 128) instead of D x D, and each re-evaluation costs ``K d^2``. The
projection preserves the Gram matrix of the differences approximately (Johnson-Lindenstrauss);
``benchmarks/bench_design.py`` measures the log det (in the full space) of the projected greedy's
pairs against the exact greedy's, and ``BENCHMARKS.md`` records it. Embeddings of at most d
dimensions are used as they are (exact).
"""

from __future__ import annotations

import heapq
import math

import numpy as np
import torch

from realspo.errors import ConfigError
from realspo.selection.budget import parse_budget

PROJECTION_DIM = 128
# Prompts re-evaluated together at the top of the heap: one batched product instead of many
# small ones (any batch size gives the same picks; 32 was fastest in benchmarks/bench_design.py).
LAZY_BATCH = 32


def logistic_variance(margins: np.ndarray) -> np.ndarray:
    """``sigma(m) (1 - sigma(m))``, the Fisher weight of a Bradley-Terry pair at margin m."""
    p = 1.0 / (1.0 + np.exp(-np.asarray(margins, dtype=np.float64)))
    return p * (1.0 - p)


class DesignCandidates:
    """Collects, chunk by chunk, what the greedy needs: each prompt's (projected) embeddings
    ``Y`` (G, K, d) float32, its valid pairs (G, K, K) and their weights (G, K, K) float32.
    Prompts with fewer than K responses are padded with invalid pairs."""

    def __init__(self, n_groups: int, max_k: int, dim: int, ridge: float, pairs_per_prompt: int,
                 seed: int, projection_dim: int = PROJECTION_DIM) -> None:
        if not (isinstance(ridge, (int, float)) and math.isfinite(ridge) and ridge > 0):
            raise ConfigError(f"--design-ridge must be > 0, got {ridge!r}")
        if isinstance(pairs_per_prompt, bool) or not isinstance(pairs_per_prompt, int) or pairs_per_prompt < 1:
            raise ConfigError(f"--pairs-per-prompt must be >= 1, got {pairs_per_prompt!r}")
        self.ridge, self.per_prompt = float(ridge), pairs_per_prompt
        self.projection = None
        if dim > projection_dim:
            gen = np.random.default_rng([seed, 0xD0E])  # its own stream: the uniforms stay as they are
            self.projection = (gen.standard_normal((dim, projection_dim)) / math.sqrt(projection_dim)
                               ).astype(np.float32)
        d = projection_dim if self.projection is not None else dim
        self.y = np.zeros((n_groups, max_k, d), dtype=np.float32)
        self.valid = np.zeros((n_groups, max_k, max_k), dtype=bool)
        self.weight = np.ones((n_groups, max_k, max_k), dtype=np.float32)

    def add(self, groups: np.ndarray, block: np.ndarray, valid: torch.Tensor,
            implicit_rewards: torch.Tensor | None) -> None:
        """``block`` (C, K, D) embeddings of ``groups``; ``valid`` (C, K, K); ``implicit_rewards``
        (C, K) or None (uniform weights)."""
        k = block.shape[1]
        y = np.asarray(block, dtype=np.float32)
        if self.projection is not None:
            y = np.matmul(y, self.projection)
        self.y[groups, :k] = y
        self.valid[groups, :k, :k] = valid.numpy()
        if implicit_rewards is not None:
            rho = implicit_rewards.double().numpy()
            self.weight[groups, :k, :k] = logistic_variance(rho[:, :, None] - rho[:, None, :])


def pair_gains(y: np.ndarray, valid: np.ndarray, weight: np.ndarray, a_inv: np.ndarray) -> np.ndarray:
    """``log(1 + w_ij z_ij^T A^{-1} z_ij)`` for every pair of B prompts: ``y`` (B, K, d),
    ``valid``/``weight`` (B, K, K), ``a_inv`` (d, d) -> (B, K, K), ``-inf`` at invalid pairs."""
    y = y.astype(np.float64)
    s = np.matmul(np.matmul(y, a_inv), y.transpose(0, 2, 1))  # (B, K, K)
    diag = np.diagonal(s, axis1=1, axis2=2)
    q = np.maximum(diag[:, :, None] + diag[:, None, :] - 2.0 * s, 0.0)
    return np.where(valid, np.log1p(weight * q), -np.inf)


def greedy_design(y: np.ndarray, valid: np.ndarray, weight: np.ndarray, n_pairs: int, ridge: float,
                  per_prompt: int = 1) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Lazy greedy maximisation of ``log det(ridge I + sum w z z^T)``: ``n_pairs`` pairs (fewer if
    the candidates run out), at most ``per_prompt`` from a prompt.

    ``y`` (G, K, d) embeddings, ``valid``/``weight`` (G, K, K). Returns ``(group, a, b, gain)``
    in greedy order, ``gain`` the log det increase each pair brought. Ties go to the lower
    group index, then the lower flattened pair index (as :func:`exact_greedy_design`).
    """
    g_count, k = valid.shape[0], valid.shape[1]
    valid = valid.copy()
    a_inv = np.eye(y.shape[2]) / ridge
    left = np.full(g_count, per_prompt, dtype=np.int64)
    start = pair_gains(y, valid, weight, a_inv).reshape(g_count, -1).max(-1) if g_count else np.zeros(0)
    heap = [(-float(v), int(g)) for g, v in enumerate(start) if v > -math.inf]
    heapq.heapify(heap)
    out_g, out_a, out_b, out_gain = [], [], [], []
    while heap and len(out_g) < n_pairs:
        top = [heapq.heappop(heap) for _ in range(min(LAZY_BATCH, len(heap)))]
        idx = np.asarray([g for _, g in top])
        gains = pair_gains(y[idx], valid[idx], weight[idx], a_inv).reshape(len(idx), -1)
        best_pair = gains.argmax(-1)  # first maximum: the lower flattened index
        fresh = gains[np.arange(len(idx)), best_pair]
        bound = -heap[0][0] if heap else -math.inf
        order = sorted(range(len(idx)), key=lambda t: (-fresh[t], idx[t]))
        win = order[0]
        nxt = heap[0] if heap else None
        if fresh[win] < bound or (nxt is not None and fresh[win] == bound and nxt[1] < idx[win]):
            for t in range(len(idx)):  # fresh values are still upper bounds: back they go
                if fresh[t] > -math.inf:
                    heapq.heappush(heap, (-float(fresh[t]), int(idx[t])))
            continue
        g, p = int(idx[win]), int(best_pair[win])
        a, b = divmod(p, k)
        z = y[g, a].astype(np.float64) - y[g, b]
        w = float(weight[g, a, b])
        u = a_inv @ z
        a_inv -= np.outer(u, u) * (w / (1.0 + w * float(z @ u)))
        out_g.append(g), out_a.append(a), out_b.append(b), out_gain.append(float(fresh[win]))
        valid[g, a, b] = False
        left[g] -= 1
        for t in range(len(idx)):
            if t != win and fresh[t] > -math.inf:
                heapq.heappush(heap, (-float(fresh[t]), int(idx[t])))
        if left[g] > 0 and valid[g].any():
            heapq.heappush(heap, (-float(fresh[win]), g))  # the chosen gain still bounds the rest
    return (np.asarray(out_g, dtype=np.int64), np.asarray(out_a, dtype=np.int64),
            np.asarray(out_b, dtype=np.int64), np.asarray(out_gain, dtype=np.float64))


def exact_greedy_design(y: np.ndarray, valid: np.ndarray, weight: np.ndarray, n_pairs: int,
                        ridge: float, per_prompt: int = 1
                        ) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Plain (non-lazy) greedy, every gain recomputed at every step: the reference for tests
    and benchmarks. Same arguments and result as :func:`greedy_design`."""
    g_count, k = valid.shape[0], valid.shape[1]
    valid = valid.copy()
    a_inv = np.eye(y.shape[2]) / ridge
    left = np.full(g_count, per_prompt, dtype=np.int64)
    out: list[tuple[int, int, int, float]] = []
    while len(out) < n_pairs:
        gains = pair_gains(y, valid & (left > 0)[:, None, None], weight, a_inv).ravel()
        best = int(gains.argmax()) if gains.size else 0
        if not gains.size or gains[best] == -math.inf:
            break
        g, p = divmod(best, k * k)
        a, b = divmod(p, k)
        z = y[g, a].astype(np.float64) - y[g, b]
        w = float(weight[g, a, b])
        u = a_inv @ z
        a_inv -= np.outer(u, u) * (w / (1.0 + w * float(z @ u)))
        out.append((g, a, b, float(gains[best])))
        valid[g, a, b] = False
        left[g] -= 1
    cols = list(zip(*out, strict=True)) if out else [(), (), (), ()]
    return (np.asarray(cols[0], dtype=np.int64), np.asarray(cols[1], dtype=np.int64),
            np.asarray(cols[2], dtype=np.int64), np.asarray(cols[3], dtype=np.float64))


def log_det(z: np.ndarray, weight: np.ndarray, ridge: float) -> float:
    """``log det(ridge I + sum_i w_i z_i z_i^T)`` for ``z`` (P, D), ``weight`` (P,), by the
    smaller of the two Gram forms (Sylvester: ``D log ridge + log det(I_P + Z^T W Z / ridge)``)."""
    z = np.asarray(z, dtype=np.float64)
    p, d = z.shape
    zw = z * np.sqrt(np.asarray(weight, dtype=np.float64))[:, None]
    if p < d:
        gram = np.eye(p) + zw @ zw.T / ridge
        return d * math.log(ridge) + float(np.linalg.slogdet(gram)[1])
    return float(np.linalg.slogdet(ridge * np.eye(d) + zw.T @ zw)[1])


def design_capacity(valid: np.ndarray, per_prompt: int) -> int:
    """How many pairs the design can choose: per prompt, its valid pairs up to ``per_prompt``."""
    return int(np.minimum(valid.reshape(len(valid), -1).sum(-1), per_prompt).sum())


def select_design(candidates: DesignCandidates, budget: int | float | str | None, eligible: int
                  ) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Run the greedy for ``budget`` pairs: None takes every prompt's ``pairs_per_prompt``
    pairs (as many as it has), a count is pairs, a fraction is of ``eligible`` prompts times
    ``pairs_per_prompt``. Returns ``(group, a, b, gain)`` in greedy order."""
    capacity = design_capacity(candidates.valid, candidates.per_prompt)
    if budget is None:
        n = capacity
    else:
        value = parse_budget(budget)
        n = value if isinstance(value, int) else max(1, math.floor(value * eligible * candidates.per_prompt + 0.5))
        if n > capacity:
            raise ConfigError(f"--budget {budget} asks for {n} pairs, but the design can choose only "
                              f"{capacity} ({candidates.per_prompt} per prompt at most)")
    return greedy_design(candidates.y, candidates.valid, candidates.weight, n, candidates.ridge,
                         candidates.per_prompt)
