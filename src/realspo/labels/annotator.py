"""The simulated annotator: Bradley-Terry with a temperature and a flip rate, and its error rate.

A label is an *error* when it disagrees with the oracle's ordering of the pair; pairs the
oracle ties have no right answer and are left out of error rates.
"""

from __future__ import annotations

from typing import Any

import numpy as np


def bt_preference_prob(r_a: Any, r_b: Any, tau: float, flip: float = 0.0) -> np.ndarray:
    """P(annotator prefers A) under Bradley-Terry with temperature ``tau`` and flip rate ``f``.

    ``p = sigmoid((r_a - r_b) / tau)``, then a fraction ``f`` of answers is flipped:
    ``P = (1 - f) p + f (1 - p)``. ``tau = 0`` is the noiseless limit (p = 1, 0 or 1/2 on an
    oracle tie). ``r_a``, ``r_b``: oracle rewards, scalars or arrays of one shape (N,).
    """
    if tau < 0 or not 0 <= flip <= 1:
        raise ValueError(f"need tau >= 0 and 0 <= flip <= 1, got tau={tau}, flip={flip}")
    diff = np.asarray(r_a, dtype=np.float64) - np.asarray(r_b, dtype=np.float64)
    if tau == 0:
        p = np.where(diff > 0, 1.0, np.where(diff < 0, 0.0, 0.5))
    else:
        p = 0.5 * (1.0 + np.tanh(diff / (2.0 * tau)))  # = sigmoid(diff / tau), overflow-free
    return (1.0 - flip) * p + flip * (1.0 - p)


def simulate_labels(r_a: Any, r_b: Any, tau: float, flip: float = 0.0, seed: int = 0) -> np.ndarray:
    """Seeded draws of the simulated annotator: (N,) bool, True where A is preferred."""
    p = np.atleast_1d(bt_preference_prob(r_a, r_b, tau, flip))
    return np.random.default_rng(seed).random(p.shape) < p


def guess_probability(similarity: Any, k: float) -> np.ndarray:
    """P(the annotator guesses) per pair under annotator confusion ``k``: ``clip(s, 0, 1) ** k``,
    and 0 everywhere for k = 0 (off, not "always guess", which ``s ** 0`` would say)."""
    s = np.clip(np.asarray(similarity, dtype=np.float64), 0.0, 1.0)
    return np.zeros_like(s) if k == 0 else s ** k


def simulate_annotators(r_a: Any, r_b: Any, annotators: int, tau: float, flip: float = 0.0,
                        seed: int = 0, similarity: Any = None, confusion: float = 0.0
                        ) -> np.ndarray:
    """Labels of ``annotators`` independent simulated annotators: (annotators, N) bool, True
    where A is preferred.

    Each draws its Bradley-Terry labels from a stream of its own (annotator 0 from ``seed``,
    so one annotator is :func:`simulate_labels`; annotator j > 0 from ``[seed, j]``). With
    ``confusion`` K > 0 each then guesses with a fair coin with probability
    :func:`guess_probability` of the pair's ``similarity`` (how alike the pair looks to the
    annotator), independently of the others.

    Args:
        r_a: oracle rewards of the A responses, (N,).
        r_b: oracle rewards of the B responses, (N,).
        annotators: how many annotators.
        tau: Bradley-Terry temperature.
        flip: flip rate.
        seed: seed of the draws.
        similarity: (N,) similarity in [0, 1]; needed when ``confusion`` > 0.
        confusion: annotator confusion K (0 = off).

    Returns:
        (annotators, N) bool array.
    """
    p = np.atleast_1d(bt_preference_prob(r_a, r_b, tau, flip))
    guess = guess_probability(similarity if similarity is not None else np.zeros_like(p), confusion)
    out = np.empty((annotators, p.size), dtype=bool)
    for j in range(annotators):
        rng = np.random.default_rng(seed if j == 0 else [seed, j])
        labels = rng.random(p.shape) < p
        if confusion:
            guessed, coin = rng.random(p.shape) < guess, rng.random(p.shape) < 0.5
            labels = np.where(guessed, coin, labels)
        out[j] = labels
    return out


def perceptual_pair_similarity(texts_a: list[str], texts_b: list[str]) -> np.ndarray:
    """(N,) how alike each pair looks to the proving ground's simulated annotator: the TF-IDF
    similarity of :mod:`realspo.proving_ground.perceptual`, fitted on the default world's SFT
    corpus (not the selection embedder, so the premise is not built in by definition)."""
    from realspo.proving_ground.perceptual import PerceptualEmbedder
    from realspo.proving_ground.world import build_world

    embedder = PerceptualEmbedder(r for _, r in build_world().sft_corpus)
    return np.asarray([embedder.similarity(a, b) for a, b in zip(texts_a, texts_b, strict=True)])


def label_errors(a_preferred: Any, r_a: Any, r_b: Any) -> np.ndarray:
    """Per pair: 1.0 if the label disagrees with the oracle's ordering, 0.0 if it agrees,
    NaN where the oracle ties (no right answer). All arguments (N,)."""
    a_preferred = np.asarray(a_preferred, dtype=bool)
    diff = np.asarray(r_a, dtype=np.float64) - np.asarray(r_b, dtype=np.float64)
    wrong = np.where(diff > 0, ~a_preferred, a_preferred).astype(np.float64)
    return np.where(diff == 0, np.nan, wrong)


def expected_error_rate(r_a: Any, r_b: Any, tau: float, flip: float = 0.0) -> float:
    """The simulated annotator's expected label-error rate over the pairs the oracle orders.

    For one pair with ``d = |r_a - r_b| > 0`` the wrong answer has probability
    ``e = (1 - f) sigmoid(-d / tau) + f (1 - sigmoid(-d / tau))``; the rate is the mean of
    ``e`` over pairs with ``d > 0`` (NaN if there are none).
    """
    d = np.abs(np.asarray(r_a, dtype=np.float64) - np.asarray(r_b, dtype=np.float64))
    d = d[d > 0]
    if d.size == 0:
        return float("nan")
    return float(np.mean(bt_preference_prob(0.0, d, tau, flip)))  # P(prefer the worse one)
