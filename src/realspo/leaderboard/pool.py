"""The leaderboard's inputs per round: candidates of a prompt pool sampled from a policy, the
scores the strategies beyond REAL read (implicit rewards, a reward proxy), and each arm's
ranked pairs. Used by :mod:`realspo.leaderboard.run`.

**The reward proxy** (``reward-gap``, ``reward-uncertain``). In the proving ground the oracle
*is* the reward, so handing it to ``reward-gap`` would make it the ``ceiling`` control. The
leaderboard instead fits what a user would have: a small Bradley-Terry reward model trained on
the arm's *own* preference labels, paid from its budget (:func:`proxy_arm_pairs`). Of a
selection of n labels, the first ``ceil(n / 2)`` go to random pairs of the arm's candidate
pool (one per prompt, labelled by the same simulated annotator); a linear reward
``r(y) = w . e(y)`` over the SFT model's response embeddings ``e`` is fitted to every label the
arm has paid for so far (in rounds: the earlier rounds' labels too) by ridge-penalised logistic
regression on ``e_a - e_b`` (no intercept: ``P(a > b) = sigma(r_a - r_b)``); the proxy then picks
the other ``floor(n / 2)`` pairs among the prompts not yet used, and the arm trains on all n.
So a proxy arm spends exactly the labels every other arm spends. The ridge is chosen among
:data:`PROXY_RIDGES` on the last 20% of the fitting prompts. Its accuracy against the oracle's
order is reported beside the results: the proxy is as good as half a budget makes it, no better.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import numpy as np

from realspo.arms.candidate_pool import (
    labelled_candidates,
    sample_responses_finished,
    scored_groups,
)
from realspo.arms.controls import ceiling_pairs, oracle_labels
from realspo.arms.plan import DemoPlan
from realspo.arms.records import Candidates
from realspo.generation.sampling import SamplingSettings
from realspo.proving_ground.world import World

PROXY_RIDGES = (0.01, 0.1, 1.0, 10.0, 100.0)


def pool_candidates(world: World, policy: Any, policy_tokenizer: Any, embedder: Any,
                    embed_tokenizer: Any, prompt_ids: list[int], plan: DemoPlan,
                    sample_seed: int, label_seed: int) -> Candidates:
    """K samples from ``policy`` for training prompts ``prompt_ids`` (indices into
    ``world.train_prompts``), embedded by ``embedder`` (the SFT model: one embedder for every
    round), scored by the oracle, every distinct pair labelled once by the simulated annotator.
    Group ``g`` is prompt ``train-{prompt_ids[g]}`` (empty samples dropped, as in the demo)."""
    from realspo.embeddings.embed import embed_with_causal_lm

    prompts = [world.train_prompts[i] for i in prompt_ids]
    settings = SamplingSettings(num_responses=plan.num_candidates, temperature=plan.temperature,
                                max_new_tokens=plan.max_new_tokens, seed=sample_seed)
    samples = sample_responses_finished(policy, policy_tokenizer, prompts, settings)
    groups = scored_groups(world, prompt_ids, prompts, samples)
    flat = [r for g in groups for r in g.responses]
    embeddings = embed_with_causal_lm(embedder, embed_tokenizer, flat, show_progress=False)
    return labelled_candidates(groups, embeddings, plan, label_seed)


def pair_rows(cands: Candidates) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Flattened response rows (P,) of every pair's A and B, and the pair's group (P,)."""
    starts = np.concatenate([[0], np.cumsum([len(g.responses) for g in cands.groups])[:-1]])
    trip = sorted(cands.pair_index.items(), key=lambda kv: kv[1])
    g = np.asarray([t[0][0] for t in trip], dtype=np.int64)
    a = starts[g] + np.asarray([t[0][1] for t in trip], dtype=np.int64)
    b = starts[g] + np.asarray([t[0][2] for t in trip], dtype=np.int64)
    return a, b, g


# ---------------------------------------------------------------------------------------
# The reward proxy


def _fit_logistic(z: np.ndarray, y: np.ndarray, ridge: float, iters: int = 50) -> np.ndarray:
    """``argmin_w sum log(1 + exp(-s_i w.z_i)) + ridge/2 |w|^2`` (s = +-1) by Newton's method."""
    s = np.where(y, 1.0, -1.0)
    w = np.zeros(z.shape[1])
    for _ in range(iters):
        m = s * (z @ w)
        p = 1.0 / (1.0 + np.exp(m))             # sigma(-m): the gradient weight
        grad = -(z * (s * p)[:, None]).sum(0) + ridge * w
        h = (z * (p * (1 - p))[:, None]).T @ z + ridge * np.eye(z.shape[1])
        step = np.linalg.solve(h, grad)
        w -= step
        if np.abs(step).max() < 1e-8:
            break
    return w


@dataclass
class RewardProxy:
    """A linear Bradley-Terry reward over embeddings: ``r = embeddings @ weights``."""

    weights: np.ndarray
    info: dict[str, Any]

    def rewards(self, embeddings: np.ndarray) -> np.ndarray:
        return np.asarray(embeddings, dtype=np.float64) @ self.weights


@dataclass
class PaidLabels:
    """The labels a proxy arm has paid for, as the proxy's training data: embedding differences
    ``e_a - e_b`` (M, H), the annotator's ``a preferred`` (M,) and each pair's prompt (M,)."""

    differences: list[np.ndarray]
    preferred: list[np.ndarray]
    prompts: list[str]

    @classmethod
    def empty(cls) -> PaidLabels:
        return cls([], [], [])

    def add(self, cands: Candidates, rows: list[int]) -> None:
        """Append pairs ``rows`` of ``cands`` with the simulated annotator's labels."""
        a, b, g = pair_rows(cands)
        emb = np.asarray(cands.embeddings, dtype=np.float64)
        rows_ = np.asarray(rows, dtype=np.int64)
        self.differences.append(emb[a[rows_]] - emb[b[rows_]])
        self.preferred.append(np.asarray(cands.a_preferred, dtype=bool)[rows_])
        self.prompts += [cands.groups[int(i)].prompt_id for i in g[rows_]]

    def __len__(self) -> int:
        return len(self.prompts)


def fit_reward_proxy(differences: np.ndarray, preferred: np.ndarray, prompts: list[str]) -> RewardProxy:
    """Fit the proxy (see module docs) to labelled pairs.

    Args:
        differences: (M, H) embedding differences ``e_a - e_b`` of the labelled pairs.
        preferred: (M,) bool, the label ``a preferred to b``.
        prompts: (M,) the pairs' prompts: the ridge is chosen on the last 20% of the distinct
            prompts (in order of first appearance), fitted on the rest.

    Returns:
        The proxy, fitted on every pair with the chosen ridge, and its ``info``.
    """
    z, y = np.asarray(differences, dtype=np.float64), np.asarray(preferred, dtype=bool)
    order = list(dict.fromkeys(prompts))
    position = {p: i for i, p in enumerate(order)}
    g = np.asarray([position[p] for p in prompts], dtype=np.int64)
    held = g >= math.ceil(0.8 * len(order))      # the last 20% of the prompts
    losses = {}
    for ridge in PROXY_RIDGES:
        w = _fit_logistic(z[~held], y[~held], ridge)
        m = np.where(y[held], 1.0, -1.0) * (z[held] @ w)
        losses[ridge] = float(np.logaddexp(0, -m).mean()) if held.any() else 0.0
    ridge = min(PROXY_RIDGES, key=lambda r: (losses[r], r))
    w = _fit_logistic(z, y, ridge)
    info = {"kind": "linear Bradley-Terry reward on the SFT model's response embeddings, "
                    "fitted to the arm's own simulated labels (paid from its budget)",
            "prompts": len(order), "pairs": int(len(y)), "ridge": ridge,
            "heldout_log_loss": losses[ridge],
            "label_agreement": float(np.mean((z @ w > 0) == y)) if len(y) else None}
    return RewardProxy(w, info)


def proxy_accuracy(proxy: RewardProxy, cands: Candidates) -> dict[str, float | None]:
    """How often the proxy orders a pair of ``cands`` as the oracle does (oracle-ordered pairs),
    and as the annotator labelled it (every pair)."""
    a, b, _ = pair_rows(cands)
    r = proxy.rewards(cands.embeddings)
    diff = r[a] - r[b]
    ordered = cands.reward_a != cands.reward_b
    oracle = (diff > 0) == (cands.reward_a > cands.reward_b)
    return {"oracle_accuracy": float(oracle[ordered].mean()) if ordered.any() else None,
            "annotator_agreement": float(np.mean((diff > 0) == cands.a_preferred)) if len(diff) else None}


# ---------------------------------------------------------------------------------------
# Arms


def arm_pairs(arm: str, cands: Candidates, n: int, seed: int, scores: dict[str, np.ndarray | None],
              exclude: set[int] | frozenset[int] = frozenset()
              ) -> tuple[list[int], np.ndarray | None]:
    """The ``n`` pairs (rows of ``cands``' pair arrays, rank order) arm ``arm`` labels, and
    their labels (None: the simulated annotator's). ``arm``: a registry strategy, or a control
    of :data:`CONTROL_ARMS`. ``scores``: ``implicit_rewards`` and ``rewards`` (N,) or None.
    ``exclude``: groups (prompts) not to pick from (those already labelled)."""
    from realspo.selection.strategies import get_strategy, select_pairs

    if arm == "ceiling":
        group = pair_rows(cands)[2]
        return [r for r in ceiling_pairs(cands) if int(group[r]) not in exclude][:n], None
    source = "random" if arm == "noiseless" else arm
    strategy = get_strategy(source)
    sizes = [len(g.responses) for g in cands.groups]
    keep = [i for i in range(len(sizes)) if i not in exclude]
    starts = np.concatenate([[0], np.cumsum(sizes)[:-1]]).astype(np.int64)
    flat = np.concatenate([np.arange(starts[i], starts[i] + sizes[i]) for i in keep]) if keep \
        else np.zeros(0, dtype=np.int64)
    given = {k: (None if v is None else np.asarray(v)[flat]) for k, v in scores.items()
             if strategy.uses(k)}
    if not keep or n <= 0:
        return [], (oracle_labels(cands) if arm == "noiseless" else None)
    sel = select_pairs(cands.embeddings[flat], [sizes[i] for i in keep], source, n, seed=seed,
                       response_keys=np.asarray(cands.keys)[flat], **given)
    rows = [cands.pair_index[keep[g], a, b] for g, a, b in
            zip(sel.group_index.tolist(), sel.index_a.tolist(), sel.index_b.tolist(), strict=True)]
    return rows, (oracle_labels(cands) if arm == "noiseless" else None)


def proxy_arm_pairs(arm: str, cands: Candidates, n: int, seed: int, paid: PaidLabels,
                    scores: dict[str, np.ndarray | None]
                    ) -> tuple[list[int], RewardProxy, dict[str, Any]]:
    """A reward-proxy arm's ``n`` pairs of ``cands``, every one paid from its budget: the first
    ``ceil(n / 2)`` random (one per prompt), then the proxy fitted to everything in ``paid``
    (updated in place: earlier rounds' labels, these random ones, then the proxy's picks) picks
    the rest among the other prompts.

    Args:
        arm: ``reward-gap`` or ``reward-uncertain`` (a strategy that reads ``rewards``).
        cands: this round's candidates.
        n: the labels of this selection (the arm's budget or its round's share).
        seed: the random pairs' and the strategy's seed.
        paid: the labels the arm paid for before (empty in one round and in round 1).
        scores: the other inputs the strategy reads (``implicit_rewards``), as for
            :func:`arm_pairs`; ``rewards`` is set from the fitted proxy.

    Returns:
        The rows (random ones first), the fitted proxy, and what was spent:
        ``{"fit_labels": ceil(n / 2) spent here on random pairs, "proxy_labels": the labels the
        proxy was fitted on, in all}``.
    """
    fit_rows, _ = arm_pairs("random", cands, (n + 1) // 2, seed, {})
    paid.add(cands, fit_rows)
    proxy = fit_reward_proxy(np.concatenate(paid.differences), np.concatenate(paid.preferred),
                             paid.prompts)
    group = pair_rows(cands)[2]
    used = {int(group[r]) for r in fit_rows}
    rest, _ = arm_pairs(arm, cands, n - len(fit_rows), seed,
                        {**scores, "rewards": proxy.rewards(cands.embeddings)}, exclude=used)
    paid.add(cands, rest)
    return fit_rows + rest, proxy, {"fit_labels": len(fit_rows), "proxy_labels": proxy.info["pairs"]}
