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

**Projection** (the speed choice): with D x D matrices (D = 2048) every pick costs O(D^2),
too slow for 10^4-10^5 picks. Embeddings wider than :data:`PROJECTION_DIM` (d = 64) are
projected onto the top d principal directions of within-prompt response differences
(:func:`principal_basis`, a seeded randomized SVD), so the greedy works with d x d matrices.
What a difference has outside that subspace, ``|r|^2``, is not dropped: the remaining D - d
directions are modelled as isotropic (see :func:`greedy_design`). A seeded Gaussian
projection to 128 dims was tried first and reached only 0.94 of the exact greedy's log det
on the benchmark data; the principal subspace with the residual term reaches 0.997 at 64.
In this projected mode the greedy also takes a prompt whose fresh gain is within
:data:`PROJECTED_TOLERANCE` of the best bound (epsilon-lazy) and recomputes every bound
exactly every :data:`REFRESH_EVERY` picks. ``benchmarks/bench_design.py`` measures the log
det (in the full D dims) of the pairs picked against the exact greedy's, and ``BENCHMARKS.md``
records it. Embeddings of at most d dimensions are used as they are: the greedy is then exact.
"""

from __future__ import annotations

import heapq
import math
from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:
    import torch

from realspo.errors import ConfigError
from realspo.selection.budget import parse_budget

PROJECTION_DIM = 64
# With the projection the greedy is approximate anyway; there it takes a prompt whose fresh gain
# is within 2% of the best remaining bound (epsilon-lazy greedy, each pick >= 0.98 x the best
# gain): 5x fewer re-evaluations, log det within 1e-4 of the tolerance-free greedy's over
# 10,000 steps (benchmarks/bench_design.py records the ratio to the exact greedy). 0 = exact.
PROJECTED_TOLERANCE = 0.02
# In the projected mode every prompt's bound is recomputed exactly (vectorised, REFRESH_CHUNK
# prompts per product) after this many picks: between refreshes the bounds loosen alike, and
# re-evaluating them one by one costs far more (benchmarks/bench_design.py).
REFRESH_EVERY = 512
REFRESH_CHUNK = 8192
SUBSPACE_SAMPLE = 1024  # prompts whose response differences estimate the principal subspace
# Prompts re-evaluated together at the top of the heap: one batched product instead of many
# small ones (any batch size gives the same picks; 8-16 were fastest in benchmarks/bench_design.py).
LAZY_BATCH = 16


def logistic_variance(margins: np.ndarray) -> np.ndarray:
    """``sigma(m) (1 - sigma(m))``, the Fisher weight of a Bradley-Terry pair at margin m."""
    p = 1.0 / (1.0 + np.exp(-np.asarray(margins, dtype=np.float64)))
    return p * (1.0 - p)


def principal_basis(embeddings: np.ndarray, starts: np.ndarray, sizes: np.ndarray, dim: int,
                    seed: int, sample: int = SUBSPACE_SAMPLE) -> np.ndarray:
    """(D, dim) orthonormal basis of the top principal directions of within-prompt response
    differences (``e_j - e_{j+1}``) of up to ``sample`` seeded random prompts: a randomized SVD
    (Halko et al. 2011; 16 extra columns, 2 power iterations)."""
    gen = np.random.default_rng([seed, 0xD0E])  # its own stream: the uniforms stay as they are
    multi = np.flatnonzero(sizes >= 2)
    picked = np.sort(gen.choice(multi, min(sample, len(multi)), replace=False))
    rows = [np.diff(np.asarray(embeddings[starts[g]:starts[g] + sizes[g]], dtype=np.float32), axis=0)
            for g in picked]
    x = np.concatenate(rows).astype(np.float64)
    width = min(dim + 16, x.shape[1])
    q = np.linalg.qr(x @ gen.standard_normal((x.shape[1], width)))[0]
    for _ in range(2):
        q = np.linalg.qr(x @ np.linalg.qr(x.T @ q)[0])[0]
    _, _, vt = np.linalg.svd(q.T @ x, full_matrices=False)
    return vt[:dim].T.astype(np.float32)


class DesignCandidates:
    """Collects, chunk by chunk, what the greedy needs: each prompt's embeddings ``Y`` (G, K, d)
    float64 (projected onto :func:`principal_basis` when D > d), its valid pairs (G, K, K), their
    weights (G, K, K) and, when projected, their squared norms outside the subspace (G, K, K).
    Prompts with fewer than K responses are padded with invalid pairs."""

    def __init__(self, embeddings: np.ndarray, sizes: np.ndarray, starts: np.ndarray, ridge: float,
                 pairs_per_prompt: int, seed: int, projection_dim: int = PROJECTION_DIM) -> None:
        if not (isinstance(ridge, (int, float)) and math.isfinite(ridge) and ridge > 0):
            raise ConfigError(f"--design-ridge must be > 0, got {ridge!r}")
        if isinstance(pairs_per_prompt, bool) or not isinstance(pairs_per_prompt, int) or pairs_per_prompt < 1:
            raise ConfigError(f"--pairs-per-prompt must be >= 1, got {pairs_per_prompt!r}")
        self.ridge, self.per_prompt = float(ridge), pairs_per_prompt
        n_groups, max_k, dim = len(sizes), int(sizes.max(initial=0)), embeddings.shape[1]
        self.basis = None
        self.residual = None
        self.residual_dim = 0
        if dim > projection_dim and (sizes >= 2).any():
            self.basis = principal_basis(embeddings, starts, sizes, projection_dim, seed)
            self.residual = np.zeros((n_groups, max_k, max_k), dtype=np.float32)
            self.residual_dim = dim - projection_dim
        d = projection_dim if self.basis is not None else dim
        self.y = np.zeros((n_groups, max_k, d), dtype=np.float64)  # float64: no cast per evaluation
        self.valid = np.zeros((n_groups, max_k, max_k), dtype=bool)
        self.weight = np.ones((n_groups, max_k, max_k), dtype=np.float32)

    def add(self, groups: np.ndarray, block: np.ndarray, sim: torch.Tensor, valid: torch.Tensor,
            implicit_rewards: torch.Tensor | None) -> None:
        """``block`` (C, K, D) embeddings of ``groups``, ``sim`` (C, K, K) their cosines; ``valid``
        (C, K, K); ``implicit_rewards`` (C, K) or None (uniform weights)."""
        c, k, dim = block.shape
        x = np.asarray(block, dtype=np.float32)
        if self.basis is not None and self.residual is not None:
            y = (x.reshape(c * k, dim) @ self.basis).reshape(c, k, -1)
            # |x_i - x_j|^2 from the cosines the selection computed anyway: n_i n_j s_ij is the Gram
            norms = np.sqrt(np.einsum("ckd,ckd->ck", x, x))
            gram = sim.numpy() * norms[:, :, None] * norms[:, None, :]
            self.residual[groups, :k, :k] = np.maximum(
                _squared_differences(gram) - _squared_differences(np.matmul(y, y.transpose(0, 2, 1))), 0.0)
        else:
            y = x
        self.y[groups, :k] = y
        self.valid[groups, :k, :k] = valid.numpy()
        if implicit_rewards is not None:
            rho = implicit_rewards.double().numpy()
            self.weight[groups, :k, :k] = logistic_variance(rho[:, :, None] - rho[:, None, :])


def _squared_differences(gram: np.ndarray) -> np.ndarray:
    """``|x_i - x_j|^2 = G_ii + G_jj - 2 G_ij`` from Gram matrices (C, K, K)."""
    diag = np.diagonal(gram, axis1=1, axis2=2)
    return diag[:, :, None] + diag[:, None, :] - 2.0 * gram


def subspace_quadratic(y: np.ndarray, a_inv: np.ndarray) -> np.ndarray:
    """``q_ij = z_ij^T A^{-1} z_ij`` (B, K, K) for every pair of B prompts, ``z_ij = y_i - y_j``:
    from ``S = Y A^{-1} Y^T``, ``q_ij = S_ii + S_jj - 2 S_ij`` (``y`` (B, K, d), ``a_inv`` (d, d))."""
    b, k, d = y.shape
    y = y.astype(np.float64, copy=False)
    ya = (y.reshape(b * k, d) @ a_inv).reshape(b, k, d)
    s = np.matmul(ya, y.transpose(0, 2, 1))
    diag = np.diagonal(s, axis1=1, axis2=2)
    return np.maximum(diag[:, :, None] + diag[:, None, :] - 2.0 * s, 0.0)


def greedy_design(y: np.ndarray, valid: np.ndarray, weight: np.ndarray, n_pairs: int, ridge: float,
                  per_prompt: int = 1, residual: np.ndarray | None = None, residual_dim: int = 0,
                  tolerance: float = 0.0) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Lazy greedy maximisation of ``log det(ridge I + sum w z z^T)``: ``n_pairs`` pairs (fewer if
    the candidates run out), at most ``per_prompt`` from a prompt.

    ``y`` (G, K, d) embeddings, ``valid``/``weight`` (G, K, K). Returns ``(group, a, b, gain)``
    in greedy order, ``gain`` the log det increase each pair brought. Ties go to the lower
    group index, then the lower flattened pair index (as :func:`exact_greedy_design`).

    ``residual`` (G, K, K): when ``y`` is a projection onto a d-dim subspace, each pair's squared
    norm outside it, ``|r|^2 = |z|^2 - |z_s|^2``; the ``residual_dim`` remaining directions
    are modelled as isotropic, ``A_r = lambda_r I`` with ``lambda_r = ridge + sum_S w |r|^2 /
    residual_dim`` (their trace spread evenly), so a pair's gain is ``log(1 + w (z_s^T A_s^{-1}
    z_s + |r|^2 / lambda_r))``. ``lambda_r`` only grows, so gains still only shrink and lazy
    evaluation stays valid. Without it the greedy is exact in ``y``'s space.
    """
    g_count, k = valid.shape[0], valid.shape[1]
    valid = valid.copy()
    a_inv = np.eye(y.shape[2]) / ridge
    residual_trace = 0.0  # sum over the chosen pairs of w |r|^2

    def precision() -> float:  # 1 / lambda_r
        return 1.0 / (ridge + residual_trace / max(residual_dim, 1))

    def evaluate(idx: np.ndarray | slice) -> tuple[np.ndarray, np.ndarray]:
        """Fresh gains (B, K*K) of prompts ``idx``, and each prompt's max of w q_s (B,)."""
        q = subspace_quadratic(y[idx], a_inv)
        w = weight[idx]
        ok = valid[idx]
        total = q if residual is None else q + residual[idx] * precision()
        gains = np.where(ok, np.log1p(w * total), -np.inf).reshape(len(q), -1)
        return gains, np.where(ok, w * q, 0.0).reshape(len(q), -1).max(-1)

    left = np.full(g_count, per_prompt, dtype=np.int64)
    # Each prompt's max of w |r|^2 over its pairs (static; it only falls as pairs are taken).
    r_max = (np.where(valid, weight * residual, 0.0).reshape(g_count, -1).max(-1)
             if residual is not None and g_count else np.zeros(g_count))
    q_max = np.zeros(g_count)
    refreshed = True
    heap: list[tuple[float, int]] = []
    if g_count:
        start, q_max = evaluate(slice(None))
        heap = [(-float(v), g) for g, v in enumerate(start.max(-1).tolist()) if v > -math.inf]
    heapq.heapify(heap)
    out_g, out_a, out_b, out_gain = [], [], [], []
    while heap and len(out_g) < n_pairs:
        top: list[int] = []
        p_now = precision()
        if residual is not None and len(out_g) % REFRESH_EVERY == 0 and not refreshed:
            # lambda_r grows with every pick and every stale bound loosens alike: tighten them
            # all at once (vectorised), or thousands of prompts would be popped one by one.
            live = np.fromiter((g for _, g in heap), dtype=np.int64, count=len(heap))
            keys = np.empty(len(live))
            for lo in range(0, len(live), REFRESH_CHUNK):  # exact gains of every live prompt
                part = live[lo:lo + REFRESH_CHUNK]
                gains, q_max[part] = evaluate(part)
                keys[lo:lo + REFRESH_CHUNK] = gains.max(-1)
            heap = list(zip((-keys).tolist(), live.tolist(), strict=True))
            heapq.heapify(heap)
            refreshed = True
        while heap and len(top) < LAZY_BATCH:
            neg, g = heapq.heappop(heap)
            if residual is not None and heap:
                # Cheap tighter bound: the subspace part as last evaluated, the residual part
                # at today's lambda_r. Below the next bound (less the tolerance): back in the
                # heap, unevaluated.
                refined = min(-neg, math.log1p(q_max[g] + r_max[g] * p_now))
                if refined < (1.0 - tolerance) * -heap[0][0]:
                    heapq.heappush(heap, (-refined, g))
                    continue
            top.append(g)
        idx = np.asarray(top)
        gains, q_top = evaluate(idx)
        q_max[idx] = q_top
        best_pair = gains.argmax(-1)  # first maximum: the lower flattened index
        fresh = gains[np.arange(len(idx)), best_pair]
        bound = -heap[0][0] if heap else -math.inf
        win = min(range(len(idx)), key=lambda t: (-fresh[t], idx[t]))
        nxt = heap[0] if heap else None
        if fresh[win] < bound * (1.0 - tolerance) or (
                tolerance == 0 and nxt is not None and fresh[win] == bound and nxt[1] < idx[win]):
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
        refreshed = False
        if residual is not None:
            residual_trace += w * float(residual[g, a, b])
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
    """Plain (non-lazy) greedy, every pair's gain kept current at every step: the reference for
    tests and benchmarks. Same arguments and result as :func:`greedy_design`.

    Each pair's ``q_ij = z_ij^T A^{-1} z_ij`` starts at ``|z_ij|^2 / ridge`` and, when pair
    ``z`` with weight ``w`` joins, drops by ``c (z_ij . u)^2`` (``u = A^{-1} z``,
    ``c = w / (1 + w z . u)``, Sherman-Morrison), with ``z_ij . u = (Y u)_i - (Y u)_j``: one
    (G K D) product per step, so it runs in the full dimension on thousands of prompts.
    """
    g_count, k, dim = y.shape
    y = y.astype(np.float64)
    valid = valid.copy()
    a_inv = np.eye(dim) / ridge
    sq = (y * y).sum(-1)
    q = np.maximum(sq[:, :, None] + sq[:, None, :] - 2.0 * np.matmul(y, y.transpose(0, 2, 1)), 0.0) / ridge
    left = np.full(g_count, per_prompt, dtype=np.int64)
    out: list[tuple[int, int, int, float]] = []
    while len(out) < n_pairs:
        gains = np.where(valid & (left > 0)[:, None, None], np.log1p(weight * q), -np.inf).ravel()
        best = int(gains.argmax()) if gains.size else 0
        if not gains.size or gains[best] == -math.inf:
            break
        g, p = divmod(best, k * k)
        a, b = divmod(p, k)
        z = y[g, a] - y[g, b]
        w = float(weight[g, a, b])
        u = a_inv @ z
        c = w / (1.0 + w * float(z @ u))
        a_inv -= c * np.outer(u, u)
        yu = y @ u  # (G, K)
        q -= c * (yu[:, :, None] - yu[:, None, :]) ** 2
        np.maximum(q, 0.0, out=q)
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
                         candidates.per_prompt, candidates.residual, candidates.residual_dim,
                         tolerance=PROJECTED_TOLERANCE if candidates.residual is not None else 0.0)
