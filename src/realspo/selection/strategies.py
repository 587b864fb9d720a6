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

Beyond REAL, strategies that choose pairs by what a model already believes (implicit-reward
margins, reward-model scores) or by the information a pair adds to the whole labelled set
(D-optimal design). They read per-response scores computed outside this layer
(:mod:`realspo.pipeline.candidate_scores`) and passed in as arrays:

* ``margin`` (Yang et al., arXiv 2406.17312): with ``rho_i = beta (log pi(y_i|x) -
  log pi_ref(y_i|x))`` (``implicit_rewards``), the implicit-reward margin of a pair is
  ``m_ij = rho_i - rho_j``; per prompt the pair with the smallest ``|m_ij|``, across the
  dataset ascending ``|m|``. ``margin-large``: the largest ``|m|`` first (a control);
* ``reward-gap``: with reward-model scores ``r_i`` (``rewards``), per prompt the pair with the
  largest ``|r_i - r_j|`` (its highest- and lowest-reward responses), largest gap first;
* ``reward-uncertain``: per prompt the pair whose predicted preference
  ``sigma(r_i - r_j)`` is nearest 0.5, i.e. ``argmin |sigma(r_i - r_j) - 1/2|``, most
  uncertain first;
* ``design`` (Han, Goyal, Ma, arXiv 2606.19607): greedy D-optimal design over the whole
  dataset, see :mod:`realspo.selection.design`.

With K = 2 every strategy yields the prompt's one pair; the strategies then differ only in
how the budget ranks pairs *across the dataset*: ``easy`` and ``centroid`` keep the lowest
similarities, ``hard`` the highest, ``random`` a seeded random subset. Output is always in
rank order (so a smaller budget returns a prefix of a larger one), ties by group order.

Each strategy is one :class:`Strategy` entry of the registry :data:`STRATEGIES`: the inputs it
needs, the per-pair key it reads, its per-prompt picker and its ranking across the dataset
(or, for ``design``, one joint choice over the dataset). Adding a strategy is one entry (and its picker) here;
the CLI's ``--strategy`` choices and help come from the registry.

A pair of identical texts (equal ``response_keys``) is never a candidate; a prompt with
fewer than two distinct responses is skipped and counted.

Everything is vectorised: prompts are bucketed by K, and each bucket is processed in chunks
of C prompts: one ``bmm`` gives the (C, K, K) cosine matrices, and every strategy (k-means
included, as kernel k-means on those matrices) works on them alone. Only one chunk of
embeddings is ever copied, so memory-mapped arrays far larger than RAM work.
"""

from __future__ import annotations

import warnings
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:
    import torch

from realspo.errors import ConfigError
from realspo.selection.budget import parse_budget, resolve_budget
from realspo.selection.design import DesignCandidates, select_design
from realspo.selection.large_groups import BLOCK_THRESHOLD, pick_large_groups
from realspo.selection.pickers import (
    Chunk,
    abs_margin_key,
    cosine_matrices,
    pick_centroid,
    pick_easy,
    pick_hard,
    pick_random,
    rank_ascending,
    rank_descending,
    rank_random,
    reward_gap_key,
    reward_uncertainty_key,
    similarity_key,
)

SKIP_FEW_DISTINCT = "fewer than two distinct responses"
# Embedding floats copied per chunk (~64 MB of float32): big enough to amortise overheads.
CHUNK_ELEMENTS = 1 << 24


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
    # The quantity the strategy ranked by (P,): the similarity for REAL's strategies, |m|,
    # the reward gap, |sigma(r_a - r_b) - 1/2|, or design's log-det gain.
    key: np.ndarray | None = None

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


Picker = Callable[["torch.Tensor", "torch.Tensor", "torch.Tensor"], "torch.Tensor"]
Ranker = Callable[[np.ndarray, np.random.Generator], np.ndarray]


@dataclass(frozen=True)
class Strategy:
    """One selection strategy: what it needs, how it picks a prompt's pair, how it ranks.

    ``needs``: inputs beyond the embeddings, among ``"implicit_rewards"`` (``--policy``) and
    ``"rewards"`` (``--reward-model``). ``key(chunk)``: (C, K, K) the per-pair quantity the
    strategy reads. ``pick_per_prompt(key, valid, u)``: ``key`` and ``valid`` (C, K, K),
    ``u`` (C,) one uniform per prompt -> (C,) flattened pair index ``i * K + j``.
    ``rank_across_dataset(pair_key, rng)``: ``pair_key`` (E,) the picked pairs' keys, in group
    order -> (E,) the order in which a budget keeps them. A ``joint`` strategy (``design``)
    instead chooses all pairs at once (:func:`realspo.selection.design.select_design`).
    """

    name: str
    description: str  # one line, shown in ``--strategy`` help
    pick_per_prompt: Picker | None
    rank_across_dataset: Ranker | None
    key: Callable[[Chunk], torch.Tensor] = similarity_key
    needs: tuple[str, ...] = ()
    joint: bool = False
    optional: tuple[str, ...] = ()  # inputs it uses when given (design: implicit_rewards)

    def uses(self, what: str) -> bool:
        """Whether the strategy reads input ``what`` (needed or optional)."""
        return what in self.needs or what in self.optional


# The registry: adding a strategy is one entry here (CLI choices and help come from it).
STRATEGIES: dict[str, Strategy] = {s.name: s for s in (
    Strategy("easy", "least similar pair (REAL)", pick_easy, rank_ascending),
    Strategy("hard", "most similar pair", pick_hard, rank_descending),
    Strategy("random", "seeded random pair", pick_random, rank_random),
    Strategy("centroid", "k-means (k=2) representatives", pick_centroid, rank_ascending),
    Strategy("margin", "smallest implicit-reward margin |m| first (needs --policy)",
             pick_easy, rank_ascending, abs_margin_key, ("implicit_rewards",)),
    Strategy("margin-large", "largest implicit-reward margin |m| first (a control; needs --policy)",
             pick_hard, rank_descending, abs_margin_key, ("implicit_rewards",)),
    Strategy("design", "greedy D-optimal design over embedding differences (weighted by "
             "margins with --policy)", None, None, joint=True, optional=("implicit_rewards",)),
    Strategy("reward-gap", "highest vs lowest reward response, largest gap first "
             "(needs --reward-model)", pick_hard, rank_descending, reward_gap_key, ("rewards",)),
    Strategy("reward-uncertain", "preference sigma(r_a - r_b) nearest 0.5 first "
             "(needs --reward-model)", pick_easy, rank_ascending, reward_uncertainty_key,
             ("rewards",)),
)}

# What each need is called on the command line.
NEED_OPTIONS = {"implicit_rewards": "--policy", "rewards": "--reward-model"}


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


def _per_response(name: str, values: np.ndarray | None, n_rows: int) -> np.ndarray | None:
    if values is None:
        return None
    values = np.asarray(values, dtype=np.float64)
    if values.shape != (n_rows,):
        raise ConfigError(f"{name}: expected shape ({n_rows},), got {values.shape}")
    if not np.isfinite(values).all():
        raise ConfigError(f"{name}: response {int(np.flatnonzero(~np.isfinite(values))[0])} is not finite")
    return values


def select_pairs(
    embeddings: np.ndarray,
    group_sizes: Sequence[int],
    strategy: str,
    budget: int | float | str | None = None,
    *,
    seed: int = 0,
    response_keys: np.ndarray | None = None,
    implicit_rewards: np.ndarray | None = None,
    rewards: np.ndarray | None = None,
    design_ridge: float = 1.0,
    pairs_per_prompt: int = 1,
) -> Selection:
    """Pick one pair per prompt by ``strategy``; return the ``budget`` best (a :class:`Selection`).

    Args:
        embeddings: (N, D) response embeddings in flattened order (group, then response).
        group_sizes: (G,) responses per group, summing to N.
        strategy: a name in :data:`STRATEGIES` (``easy`` is REAL's least similar pair).
        budget: None (every eligible prompt), a count, or a fraction of the eligible prompts.
        seed: seeds ``random`` and ``design``'s projection; equal seeds, equal selections.
        response_keys: (N,) ints, equal for identical texts (None: all responses distinct).
        implicit_rewards: (N,) ``beta (log pi - log pi_ref)`` (``margin*``, ``design``'s weights).
        rewards: (N,) reward-model scores (``reward-*``).
        design_ridge: ``design``'s ridge lambda > 0.
        pairs_per_prompt: ``design``: at most N pairs per prompt (a budget then counts pairs).
    """
    chosen, sizes, keys, extra = _checked_inputs(embeddings, group_sizes, strategy, budget, response_keys,
                                                 implicit_rewards, rewards, pairs_per_prompt)
    n_groups = len(sizes)
    starts = np.concatenate([[0], np.cumsum(sizes)[:-1]]).astype(np.int64)
    # Pair choice per group, drawn once in group order so it does not depend on chunking.
    rng = np.random.default_rng(seed)
    uniforms = rng.random(n_groups)
    design = DesignCandidates(embeddings, sizes, starts, design_ridge, pairs_per_prompt,
                              seed) if chosen.joint else None
    picks = _PerPrompt.empty(n_groups)
    for groups, block, rows, sim, valid in _similarity_chunks(embeddings, sizes, starts, keys):
        picks.all_similarities.append(sim[valid].numpy())
        picks.eligible[groups] = valid.flatten(1).any(-1).numpy()
        scores = _chunk_scores(chosen, extra, rows)
        if design is not None:
            design.add(groups, block, sim, valid, scores["implicit_rewards"])
        else:
            _pick_in_chunk(chosen, picks, groups, sim, valid, uniforms, scores)
    pick_large_groups(chosen, picks, embeddings, np.flatnonzero(sizes > BLOCK_THRESHOLD), sizes, starts,
                      keys, uniforms, extra)  # memory linear in K: never a whole K x K matrix
    return _rank_and_keep(chosen, picks, design, budget, rng, embeddings, starts)


def _checked_inputs(embeddings: np.ndarray, group_sizes: Sequence[int], strategy: str,
                    budget: int | float | str | None, response_keys: np.ndarray | None,
                    implicit_rewards: np.ndarray | None, rewards: np.ndarray | None,
                    pairs_per_prompt: int
                    ) -> tuple[Strategy, np.ndarray, np.ndarray | None, dict[str, np.ndarray | None]]:
    """The arguments of :func:`select_pairs`, checked before any work: the strategy, the group
    sizes (G,), the response keys (N,) or None, and the per-response scores by input name."""
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
    extra = {"implicit_rewards": _per_response("implicit_rewards", implicit_rewards, n_rows),
             "rewards": _per_response("rewards", rewards, n_rows)}
    for need in chosen.needs:
        if extra[need] is None:
            raise ConfigError(f"--strategy {strategy} needs {NEED_OPTIONS[need]} ({need} per response)")
    if not chosen.joint and pairs_per_prompt != 1:
        raise ConfigError(f"--pairs-per-prompt applies only to --strategy design, not {strategy}")
    if budget is not None:
        parse_budget(budget)  # fail on a malformed budget before any work
    return chosen, sizes, keys, extra


def _similarity_chunks(embeddings: np.ndarray, sizes: np.ndarray, starts: np.ndarray,
                       keys: np.ndarray | None) -> Iterator[tuple]:
    """The groups with K >= 2 responses, bucketed by K and a chunk of C groups at a time (at
    most :data:`CHUNK_ELEMENTS` embedding floats copied): yields the chunk's group indices (C,),
    embeddings (C, K, D), flattened row indices (C, K), cosine matrices (C, K, K) and candidate
    pairs (C, K, K) bool: ``i < j`` and distinct texts."""
    import torch

    dim = embeddings.shape[1]
    for k in np.unique(sizes[(sizes >= 2) & (sizes <= BLOCK_THRESHOLD)]):  # (larger: in row blocks)
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
            rows = row_index if row_index is not None else starts[groups][:, None] + np.arange(k)
            if keys is not None:
                kk = torch.from_numpy(keys[rows])
                valid = valid & (kk[:, :, None] != kk[:, None, :])
            yield groups, block, rows, sim, valid


def _chunk_scores(chosen: Strategy, extra: dict[str, np.ndarray | None], rows: np.ndarray
                  ) -> dict[str, torch.Tensor | None]:
    """The per-response scores the strategy reads, for the chunk's rows (C, K); None otherwise."""
    import torch

    return {name: None if v is None or not chosen.uses(name) else torch.from_numpy(v[rows])
            for name, v in extra.items()}


@dataclass
class _PerPrompt:
    """Each prompt's pick, filled chunk by chunk: the pair ``(pair_a, pair_b)``, its cosine and
    key, and whether the prompt has two distinct responses; and every candidate pair's cosine."""

    pair_a: np.ndarray
    pair_b: np.ndarray
    similarity: np.ndarray
    key: np.ndarray
    eligible: np.ndarray
    all_similarities: list[np.ndarray]

    @classmethod
    def empty(cls, n_groups: int) -> _PerPrompt:
        return cls(np.zeros(n_groups, dtype=np.int64), np.zeros(n_groups, dtype=np.int64),
                   np.zeros(n_groups, dtype=np.float64), np.zeros(n_groups, dtype=np.float64),
                   np.zeros(n_groups, dtype=bool), [])


def _pick_in_chunk(chosen: Strategy, picks: _PerPrompt, groups: np.ndarray, sim: torch.Tensor,
                   valid: torch.Tensor, uniforms: np.ndarray, scores: dict[str, torch.Tensor | None]) -> None:
    """The strategy's pair for each prompt of the chunk, written into ``picks``."""
    import torch

    k = sim.shape[-1]
    context = Chunk(sim, valid, torch.from_numpy(uniforms[groups]), **scores)
    key = chosen.key(context)
    pair = chosen.pick_per_prompt(key, valid, context.u)  # type: ignore[misc]
    chosen_sim = sim.reshape(len(groups), k * k).gather(1, pair[:, None]).squeeze(1)
    picks.pair_a[groups] = (pair // k).numpy()
    picks.pair_b[groups] = (pair % k).numpy()
    picks.similarity[groups] = chosen_sim.double().numpy()
    picks.key[groups] = key.reshape(len(groups), k * k).gather(1, pair[:, None]).squeeze(1).double().numpy()


def _rank_and_keep(chosen: Strategy, picks: _PerPrompt, design: DesignCandidates | None,
                   budget: int | float | str | None, rng: np.random.Generator,
                   embeddings: np.ndarray, starts: np.ndarray) -> Selection:
    """Rank the eligible prompts' pairs across the dataset and keep the budget (``design``: its
    joint greedy choice instead)."""
    candidates = np.flatnonzero(picks.eligible)
    n_skipped = len(picks.eligible) - len(candidates)
    skipped = {SKIP_FEW_DISTINCT: n_skipped} if n_skipped else {}
    all_similarities = (np.concatenate(picks.all_similarities) if picks.all_similarities
                        else np.zeros(0, dtype=np.float32))
    if design is not None:
        kept, index_a, index_b, gains = select_design(design, budget, len(candidates))
        return Selection(kept, index_a, index_b, _pair_cosines(embeddings, starts, kept, index_a, index_b),
                         all_similarities, skipped, gains)
    n_keep = resolve_budget(budget, len(candidates))
    order = chosen.rank_across_dataset(picks.key[candidates], rng)  # type: ignore[misc]
    kept = candidates[order[:n_keep]]
    return Selection(group_index=kept, index_a=picks.pair_a[kept], index_b=picks.pair_b[kept],
                     similarity=picks.similarity[kept], all_similarities=all_similarities,
                     skipped=skipped, key=picks.key[kept])


def _pair_cosines(embeddings: np.ndarray, starts: np.ndarray, groups: np.ndarray,
                  a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Cosines of the selected pairs (float64), computed in float32 as :func:`cosine_matrices` does."""
    if len(groups) == 0:
        return np.zeros(0)
    ea = np.asarray(embeddings[starts[groups] + a], dtype=np.float32)
    eb = np.asarray(embeddings[starts[groups] + b], dtype=np.float32)
    na, nb = np.sqrt((ea * ea).sum(-1)), np.sqrt((eb * eb).sum(-1))
    return ((ea * eb).sum(-1) / np.maximum(na * nb, 1e-30)).astype(np.float64)
