"""REAL pair selection: one pair of responses per prompt, chosen from their embeddings.

REAL (Zhang et al., arXiv 2409.17169) sends annotators the pairs whose response embeddings
are *least similar*: dissimilar pairs are less ambiguous, so labels are more accurate. The
similarity of responses ``i`` and ``j`` is the cosine of their embeddings,
``s_ij = e_i . e_j / (|e_i| |e_j|)``. Strategies, per prompt with K >= 2 responses:

* ``easy``: the least similar pair, ``argmin_{i<j} s_ij`` (the REAL recommendation);
* ``hard``: the most similar pair, ``argmax_{i<j} s_ij``;
* ``centroid``: k-means with k=2 over the K (normalised) embeddings, then in each cluster
  the response nearest its centre. Lloyd iterations start from the ``easy`` pair as the
  two centres, an empty cluster keeps its centre, and ties go to the lower index. If a
  cluster ends empty or its two picks are identical texts, the prompt falls back to its
  ``easy`` pair;
* ``random``: a seeded, uniformly random pair among the prompt's valid pairs.

With K = 2 every strategy yields the prompt's one pair; the strategies then differ only in
how the budget ranks pairs *across the dataset*: ``easy`` and ``centroid`` keep the lowest
similarities, ``hard`` the highest, ``random`` a seeded random subset. Output is always in
rank order (so a smaller budget returns a prefix of a larger one), ties by group order.

Each strategy is one :class:`Strategy` entry of the registry :data:`STRATEGIES`: its per-prompt
picker and its ranking across the dataset. Adding a strategy is one entry (and its picker) here;
the CLI's ``--strategy`` choices and help come from the registry.

A pair of identical texts (equal ``response_keys``) is never a candidate; a prompt with
fewer than two distinct responses is skipped and counted.

Everything is vectorised: prompts are bucketed by K, and each bucket is processed in chunks
of C prompts: one ``bmm`` gives the (C, K, K) cosine matrices, and every strategy (k-means
included, as kernel k-means on those matrices) works on them alone. Only one chunk of
embeddings is ever copied, so memory-mapped arrays far larger than RAM work.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import numpy as np

from realspo.errors import ConfigError
from realspo.selection.budget import parse_budget, resolve_budget

if TYPE_CHECKING:  # torch is imported in the functions that compute, so that `realspo select
    import torch  # --help` lists the registry without loading it (see cli.py)

SKIP_FEW_DISTINCT = "fewer than two distinct responses"
# Embedding floats copied per chunk (~64 MB of float32): big enough to amortise overheads.
CHUNK_ELEMENTS = 1 << 24
KMEANS_MAX_ITER = 100
# Squared distances this close (float32 cosines carry ~1e-7 error) are ties.
TIE_TOLERANCE = 1e-6


@dataclass
class Selection:
    """Selected pairs, one per kept prompt, in rank order (P pairs).

    ``group_index`` (P,) which group each pair comes from; ``index_a`` < ``index_b`` (P,)
    response indices within that group; ``similarity`` (P,) their cosine;
    ``all_similarities`` (M,) the cosines of every valid candidate pair of the dataset
    (for summaries; grouped by K, then group order); ``skipped`` reason -> prompt count.
    """

    group_index: np.ndarray
    index_a: np.ndarray
    index_b: np.ndarray
    similarity: np.ndarray
    all_similarities: np.ndarray
    skipped: dict[str, int] = field(default_factory=dict)

    def __len__(self) -> int:
        return len(self.group_index)


def _as_tensor(chunk: np.ndarray) -> torch.Tensor:
    import torch

    if chunk.dtype != np.float32:
        chunk = chunk.astype(np.float32)
    with warnings.catch_warnings():
        # Read-only (memory-mapped) arrays: we never write through the tensor.
        warnings.simplefilter("ignore", UserWarning)
        return torch.from_numpy(chunk)


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
class Strategy:
    """One selection strategy: how it picks a prompt's pair, and how it ranks the dataset's.

    ``pick_per_prompt(sim, valid, u)``: ``sim`` (C, K, K) cosines of a chunk of C prompts,
    ``valid`` (C, K, K) bool candidate pairs (i < j, distinct texts), ``u`` (C,) one uniform
    in [0, 1) per prompt -> (C,) flattened pair index ``i * K + j``.
    ``rank_across_dataset(pair_sim, rng)``: ``pair_sim`` (E,) the picked pairs' cosines, in
    group order -> (E,) the order in which a budget keeps them.
    """

    name: str
    description: str  # one line, shown in ``--strategy`` help
    pick_per_prompt: Callable[[torch.Tensor, torch.Tensor, torch.Tensor], torch.Tensor]
    rank_across_dataset: Callable[[np.ndarray, np.random.Generator], np.ndarray]


# The registry: adding a strategy is one entry here (CLI choices and help come from it).
STRATEGIES: dict[str, Strategy] = {s.name: s for s in (
    Strategy("easy", "least similar pair (REAL)", pick_easy, rank_ascending),
    Strategy("hard", "most similar pair", pick_hard, rank_descending),
    Strategy("random", "seeded random pair", pick_random, rank_random),
    Strategy("centroid", "k-means (k=2) representatives", pick_centroid, rank_ascending),
)}


def strategy_names() -> tuple[str, ...]:
    """Names of the registered strategies, in registry order."""
    return tuple(STRATEGIES)


def strategy_help() -> str:
    """``name: description`` of every strategy, for ``--strategy`` help."""
    return "; ".join(f"{s.name}: {s.description}" for s in STRATEGIES.values())


def get_strategy(name: str) -> Strategy:
    """The registered strategy ``name``; an unknown name raises :class:`ConfigError` listing
    the known ones."""
    try:
        return STRATEGIES[name]
    except (KeyError, TypeError):
        raise ConfigError(f"--strategy: unknown strategy {name!r}; expected one of "
                          f"{', '.join(STRATEGIES)}") from None


def select_pairs(
    embeddings: np.ndarray,
    group_sizes: Sequence[int],
    strategy: str,
    budget: int | float | str | None = None,
    *,
    seed: int = 0,
    response_keys: np.ndarray | None = None,
) -> Selection:
    """Select one pair per prompt with ``strategy`` (a name in :data:`STRATEGIES`) and keep
    the ``budget`` best across the dataset.

    ``embeddings`` (N, D), rows in flattened order (group order, then response order);
    ``group_sizes`` (G,) responses per group, summing to N; ``response_keys`` (N,) ints,
    equal for identical texts (None: all responses distinct). ``budget``: None (every
    eligible prompt), a count, or a fraction of the eligible prompts (see
    :func:`realspo.selection.budget.resolve_budget`). Deterministic for a given ``seed``
    (used by ``random`` only).
    """
    import torch

    chosen = get_strategy(strategy)
    sizes = np.asarray(group_sizes, dtype=np.int64)
    if embeddings.ndim != 2:
        raise ConfigError(f"embeddings: expected a 2-D array (responses, dim), got shape {embeddings.shape}")
    n_rows = int(sizes.sum())
    if embeddings.shape[0] != n_rows:
        raise ConfigError(
            f"embeddings: {embeddings.shape[0]} rows, but the data has {n_rows} responses"
        )
    keys = None if response_keys is None else np.asarray(response_keys, dtype=np.int64)
    if keys is not None and keys.shape != (n_rows,):
        raise ConfigError(f"response_keys: expected shape ({n_rows},), got {keys.shape}")
    if budget is not None:
        parse_budget(budget)  # fail on a malformed budget before any work
    n_groups, dim = len(sizes), embeddings.shape[1]
    starts = np.concatenate([[0], np.cumsum(sizes)[:-1]]).astype(np.int64)
    # Pair choice per group, drawn once in group order so it does not depend on chunking.
    rng = np.random.default_rng(seed)
    uniforms = rng.random(n_groups)

    pair_a = np.zeros(n_groups, dtype=np.int64)
    pair_b = np.zeros(n_groups, dtype=np.int64)
    pair_sim = np.zeros(n_groups, dtype=np.float64)
    eligible = np.zeros(n_groups, dtype=bool)
    all_sims: list[np.ndarray] = []

    for k in np.unique(sizes[sizes >= 2]):
        k = int(k)
        members = np.flatnonzero(sizes == k)
        chunk = max(1, CHUNK_ELEMENTS // (k * max(dim, 1)))
        upper = torch.ones(k, k, dtype=torch.bool).triu(1)
        for lo in range(0, len(members), chunk):
            groups = members[lo : lo + chunk]
            first, last = starts[groups[0]], starts[groups[-1]] + k
            if last - first == len(groups) * k:  # contiguous: a view, no gather
                block = np.asarray(embeddings[first:last]).reshape(len(groups), k, dim)
                row_index = None
            else:
                row_index = starts[groups][:, None] + np.arange(k)
                block = np.asarray(embeddings[row_index.ravel()]).reshape(len(groups), k, dim)
            sim = cosine_matrices(_as_tensor(block))
            if not bool(torch.isfinite(sim).all()):
                bad = int(np.flatnonzero(~np.isfinite(block).all(-1).ravel())[0])
                raise ConfigError(f"embeddings: row {int(starts[groups[bad // k]]) + bad % k} is not finite")
            valid = upper.expand(len(groups), k, k)
            if keys is not None:
                rows = row_index if row_index is not None else starts[groups][:, None] + np.arange(k)
                kk = torch.from_numpy(keys[rows])
                valid = valid & (kk[:, :, None] != kk[:, None, :])
            ok = valid.flatten(1).any(-1)
            all_sims.append(sim[valid].numpy())
            u = torch.from_numpy(uniforms[groups])
            pair = chosen.pick_per_prompt(sim, valid, u)
            chosen_sim = sim.reshape(len(groups), k * k).gather(1, pair[:, None]).squeeze(1)
            pair_a[groups] = (pair // k).numpy()
            pair_b[groups] = (pair % k).numpy()
            pair_sim[groups] = chosen_sim.double().numpy()
            eligible[groups] = ok.numpy()

    candidates = np.flatnonzero(eligible)
    n_keep = resolve_budget(budget, len(candidates))
    order = chosen.rank_across_dataset(pair_sim[candidates], rng)
    kept = candidates[order[:n_keep]]
    n_skipped = n_groups - len(candidates)
    return Selection(
        group_index=kept,
        index_a=pair_a[kept],
        index_b=pair_b[kept],
        similarity=pair_sim[kept],
        all_similarities=np.concatenate(all_sims) if all_sims else np.zeros(0, dtype=np.float32),
        skipped={SKIP_FEW_DISTINCT: n_skipped} if n_skipped else {},
    )
