"""Knobs that build REAL's premise into the proving ground, and their measured effect.

``--annotator-confusion K`` (K >= 0, default 0 = off). The simulated annotator first draws
its Bradley-Terry label as always (:func:`realspo.labels.annotator.simulate_labels`); then, with
probability ``s ** K``, where ``s`` is the pair's *perceptual* similarity clipped to [0, 1]
(:mod:`realspo.proving_ground.perceptual`, not the selection embedder), it ignores that label
and guesses with a fair coin. K = 0 means off (not "always guess", which ``s ** 0`` would
say); K = 1 guesses with probability ``s``; a larger K confuses only near-identical pairs
(s = 0.9: 0.90 at K = 1, 0.66 at K = 4, 0.35 at K = 10). The guess draws come from a stream of
their own (``seed + CONFUSION_SEED_OFFSET``), the same for every K: the K = 0 labels are the
labels of the pairs not guessed, so K's effect is measured on the same pairs and draws. Labels
are drawn once per candidate pair, so every arm that picks a pair sees the same label.

``--world-coupling RHO`` (in [0, 1], default 0 = off): how strongly quality shows on a
response's surface (:mod:`realspo.proving_ground.registers`); it changes the world and hence
the SFT model (its own cache entry).

:func:`knob_effects` is their measured effect for ``results.json`` (``knobs``): per seed and
pooled, Spearman(similarity, |reward gap|) for the selection similarity and the perceptual one,
the guess rate, and the label-error rate against that of K = 0 on the same pairs, overall and
by decile of perceptual similarity.
"""

from __future__ import annotations

import dataclasses
from typing import Any

import numpy as np

from realspo.arms.analysis import rank_correlation
from realspo.arms.records import Candidates, DemoRun
from realspo.labels.annotator import guess_probability, label_errors
from realspo.proving_ground.perceptual import PerceptualEmbedder
from realspo.proving_ground.world import World

CONFUSION_SEED_OFFSET = 30_000  # the guess draws, apart from the annotator's own


def confuse_labels(a_preferred: Any, similarity: Any, k: float, seed: int
                   ) -> tuple[np.ndarray, np.ndarray]:
    """(labels, guessed), both (P,) bool: each label replaced by a fair coin with probability
    :func:`guess_probability`. The draws depend on ``seed`` and P only (not on k)."""
    a_preferred = np.asarray(a_preferred, dtype=bool)
    rng = np.random.default_rng(seed + CONFUSION_SEED_OFFSET)
    u, coin = rng.random(a_preferred.shape), rng.random(a_preferred.shape) < 0.5
    guessed = u < guess_probability(similarity, k)
    return np.where(guessed, coin, a_preferred), guessed


def perceptual_similarity(cands: Candidates, world: World) -> np.ndarray:
    """(P,) perceptual similarity of every candidate pair, the embedder fitted on the world's
    SFT corpus."""
    embedder = _embedder(world)
    vectors = [[embedder.vector(r) for r in g.responses] for g in cands.groups]
    sims = np.zeros(len(cands.similarity))
    for (g, i, j), row in cands.pair_index.items():
        u, v = vectors[g][i], vectors[g][j]
        sims[row] = min(1.0, sum(x * v.get(w, 0.0) for w, x in u.items()))
    return sims


_EMBEDDERS: dict[Any, PerceptualEmbedder] = {}


def _embedder(world: World) -> PerceptualEmbedder:
    if world.config not in _EMBEDDERS:
        _EMBEDDERS[world.config] = PerceptualEmbedder(r for _, r in world.sft_corpus)
    return _EMBEDDERS[world.config]


def with_confusion(cands: Candidates, world: World, k: float, seed: int) -> Candidates:
    """``cands`` with the labels of annotator confusion ``k`` (``cands`` holds the K = 0
    labels); ``knobs`` records the perceptual similarity, the guesses and the K = 0 errors."""
    perceptual = cands.knobs.get("perceptual")
    if perceptual is None:
        perceptual = perceptual_similarity(cands, world)
    base = cands.knobs.get("base_a_preferred", cands.a_preferred)
    labels, guessed = confuse_labels(base, perceptual, k, seed)
    knobs = {"perceptual": perceptual, "guessed": guessed, "base_a_preferred": base,
             "base_error": label_errors(base, cands.reward_a, cands.reward_b)}
    return dataclasses.replace(cands, a_preferred=labels, knobs=knobs,
                               error=label_errors(labels, cands.reward_a, cands.reward_b))


# ---------------------------------------------------------------------------------------
# Measured effect


def candidate_effects(cands: Candidates) -> dict[str, Any]:
    """One seed's numbers: Spearman(similarity, |gap|) (selection and perceptual), guess rate,
    label-error rate with and without the confusion (same pairs)."""
    gap = np.abs(cands.reward_a - cands.reward_b)
    k = cands.knobs
    return {
        "pairs": len(gap),
        "spearman_similarity_reward_gap": rank_correlation(cands.similarity, gap),
        "spearman_perceptual_reward_gap": rank_correlation(k["perceptual"], gap),
        "mean_perceptual_similarity": float(k["perceptual"].mean()) if len(gap) else None,
        "guess_rate": float(k["guessed"].mean()) if len(gap) else None,
        "label_error_rate": _mean(cands.error),
        "label_error_rate_k0": _mean(k["base_error"]),
    }


def knob_log_line(cands: Candidates) -> str:
    """The knobs' effect on one seed's candidate pairs, for the run's log."""
    e = candidate_effects(cands)

    def f(key: str, fmt: str = ".3f") -> str:
        return "n/a" if e[key] is None or np.isnan(e[key]) else format(e[key], fmt)

    return (f"knobs: Spearman(similarity, |reward gap|) {f('spearman_similarity_reward_gap', '+.3f')} "
            f"(perceptual {f('spearman_perceptual_reward_gap', '+.3f')}); the annotator guessed on "
            f"{f('guess_rate')} of the pairs; label-error rate {f('label_error_rate')} "
            f"({f('label_error_rate_k0')} without confusion)")


def knob_effects(demo: DemoRun, bins: int = 10) -> dict[str, Any]:
    """The ``knobs`` section of ``results.json`` (module docstring)."""
    plan, pairs = demo.plan, [c for c in demo.pairs.values() if c.knobs]
    out: dict[str, Any] = {"annotator_confusion": plan.annotator_confusion,
                           "world_coupling": plan.world.coupling,
                           "per_seed": {str(s): candidate_effects(c)
                                        for s, c in demo.pairs.items() if c.knobs}}
    if not pairs:
        return out
    sim = np.concatenate([c.similarity for c in pairs])
    per = np.concatenate([c.knobs["perceptual"] for c in pairs])
    gap = np.concatenate([np.abs(c.reward_a - c.reward_b) for c in pairs])
    guessed = np.concatenate([c.knobs["guessed"] for c in pairs])
    err = np.concatenate([c.error for c in pairs])
    base = np.concatenate([c.knobs["base_error"] for c in pairs])
    out.update(spearman_similarity_reward_gap=rank_correlation(sim, gap),
               spearman_perceptual_reward_gap=rank_correlation(per, gap),
               spearman_similarity_perceptual=rank_correlation(sim, per),
               guess_rate=float(guessed.mean()), label_error_rate=_mean(err),
               label_error_rate_k0=_mean(base))
    # equal-count bins by rank (many pairs share no word: s = 0 would leave quantile bins empty)
    which = np.empty(len(per), dtype=np.int64)
    which[np.argsort(per, kind="stable")] = np.arange(len(per)) * bins // len(per)
    out["by_perceptual_decile"] = [
        {"decile": d + 1, "similarity_low": float(per[which == d].min()) if (which == d).any() else None,
         "similarity_high": float(per[which == d].max()) if (which == d).any() else None,
         "n_pairs": int((which == d).sum()),
         "guess_rate": float(guessed[which == d].mean()) if (which == d).any() else None,
         "label_error_rate": _mean(err[which == d]), "label_error_rate_k0": _mean(base[which == d]),
         "mean_reward_gap": float(gap[which == d].mean()) if (which == d).any() else None}
        for d in range(bins)]
    return out


def _mean(errors: np.ndarray) -> float | None:
    """Mean of the non-NaN entries (label errors of oracle-ordered pairs), None if none."""
    ordered = errors[~np.isnan(errors)]
    return float(ordered.mean()) if ordered.size else None
