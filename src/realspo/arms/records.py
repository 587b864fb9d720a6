"""What a run of ``realspo demo`` produced, as data: one seed's candidates and labeled pairs,
one trained model's record, and the whole run (the input of :mod:`realspo.arms.analysis` and
:mod:`realspo.demo.report`). Filled in by :mod:`realspo.demo.run`.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from realspo.arms.plan import DemoPlan
from realspo.schema import PromptGroup


@dataclass
class Candidates:
    """One seed's candidates and every pair among them (P pairs over G prompts)."""

    groups: list[PromptGroup]      # responses (distinct-text pairs only are compared); scores = oracle
    embeddings: np.ndarray         # (N, H) unit rows, flattened order
    keys: np.ndarray               # (N,) equal for identical texts
    pair_index: dict[tuple[int, int, int], int]  # (group, i, j), i < j -> row of the arrays below
    similarity: np.ndarray         # (P,) cosine of the two responses
    reward_a: np.ndarray           # (P,) oracle reward of response i
    reward_b: np.ndarray           # (P,) oracle reward of response j
    a_preferred: np.ndarray        # (P,) bool, the simulated annotator's label
    error: np.ndarray              # (P,) 1.0 wrong, 0.0 right, NaN where the oracle ties
    # (P,) arrays of realspo.arms.knobs: perceptual similarity, guessed, the K = 0 labels' errors
    knobs: dict[str, np.ndarray] = field(default_factory=dict)


@dataclass
class RunRecord:
    """One trained model of one seed: what it was trained on and how it did."""

    seed: int
    strategy: str
    loss: str
    budget: str
    labels: dict[str, Any]
    rewards: np.ndarray            # (T,) oracle rewards of its held-out samples
    metrics: list[dict[str, Any]] = field(default_factory=list)
    seconds: float = 0.0
    responses: list[str] = field(default_factory=list)  # (T,) its held-out samples
    spo_heldout: dict[str, Any] | None = None  # degree-head accuracy on held-out variants
    sample_rewards: np.ndarray | None = None   # (T, S) oracle rewards of S samples per prompt
    heldout_logps: np.ndarray | None = None    # (R,) log-probs of the seed's held-out responses


@dataclass
class DemoRun:
    """Everything the report needs."""

    plan: DemoPlan
    sft_dir: Path
    baseline: dict[int, np.ndarray]          # seed -> (T,) SFT rewards
    runs: list[RunRecord]
    pairs: dict[int, Candidates]             # seed -> candidates and every pair
    timings: dict[str, float]
    sizes: dict[str, Any]
    # SPO's degree variants of the training responses, scored by the oracle (one dict per
    # variant: seed, role, level, reward, original): realspo.arms.manipulation
    spo_variants: list[dict[str, Any]] = field(default_factory=list)
    # the SFT model's (T, S) sample rewards and the held-out oracle-ordered pairs
    # (realspo.arms.arm_outcomes.HeldoutPairs) per seed
    baseline_samples: dict[int, np.ndarray] = field(default_factory=dict)
    heldout: dict[int, Any] = field(default_factory=dict)
