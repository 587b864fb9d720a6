"""One arm on the proving ground: its pairs as training rows, their label summary, training
from the SFT model, and evaluation of the trained model against the oracle."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from realspo.arms.arm_outcomes import evaluate_model
from realspo.arms.plan import DemoPlan
from realspo.arms.records import Candidates
from realspo.labels.annotator import label_errors
from realspo.proving_ground.world import World
from realspo.schema import preference_row


def training_rows(cands: Candidates, rows: list[int], labels: np.ndarray | None = None
                  ) -> list[dict[str, Any]]:
    """TRL rows of the given pairs, oriented by the simulated label (not by the oracle), or by
    ``labels`` (P,) where given (the ``noiseless`` control)."""
    labels = cands.a_preferred if labels is None else labels
    by_row = {v: k for k, v in cands.pair_index.items()}
    out = []
    for r in rows:
        g, i, j = by_row[r]
        group = cands.groups[g]
        c, x = (i, j) if labels[r] else (j, i)
        out.append(preference_row(
            group.prompt, group.responses[c], group.responses[x], prompt_id=group.prompt_id,
            similarity=round(float(cands.similarity[r]), 6), oracle_chosen=group.scores[c],
            oracle_rejected=group.scores[x],
            label_error=None if group.scores[c] == group.scores[x]
            else group.scores[c] < group.scores[x],
            chosen_finished=group.is_finished(c), rejected_finished=group.is_finished(x)))
    return out


def label_summary(cands: Candidates, rows: list[int], labels: np.ndarray | None = None
                  ) -> dict[str, Any]:
    """Label-error rate of the pairs (among those the oracle orders), oracle ties, similarity;
    ``labels`` (P,) replace the annotator's where given."""
    err = cands.error[rows] if labels is None else label_errors(
        labels[rows], cands.reward_a[rows], cands.reward_b[rows])
    ordered = ~np.isnan(err)
    gap = np.abs(cands.reward_a[rows] - cands.reward_b[rows])
    return {"n_labels": len(rows), "n_ordered": int(ordered.sum()),
            "n_errors": int(err[ordered].sum()),
            "label_error_rate": float(err[ordered].mean()) if ordered.any() else None,
            "oracle_tie_rate": float(1 - ordered.mean()) if rows else None,
            "mean_similarity": float(cands.similarity[rows].mean()) if rows else None,
            "mean_reward_gap": float(gap.mean()) if rows else None}


def train_run(plan: DemoPlan, sft_dir: Path, data: Path, out: Path, loss: str, seed: int,
              scratch: Path) -> None:
    """DPO (sigmoid loss), with SPO's degree loss for ``dpo+spo``; SFT model as init and reference."""
    from realspo.training.loop import train
    from realspo.training.train_config import TrainConfig

    cfg = TrainConfig(data=str(data), model=str(sft_dir), out=str(out), loss="sigmoid",
                      beta=plan.beta, spo=loss == "dpo+spo", spo_weight=plan.spo_weight,
                      spo_levels=plan.spo_levels, lr=plan.lr, max_steps=plan.steps,
                      batch_size=plan.batch_size, max_length=plan.max_length, seed=seed,
                      logging_steps=max(1, plan.steps // 20), cache_dir=str(scratch / "reference"),
                      # the plain path (one pass, unfused AdamW, no prefix sharing), pinned so
                      # that the committed reports (docs/demo, docs/grid, docs/leaderboard)
                      # reproduce bit for bit
                      pass_tokens=0, prefix_sharing="off",
                      overwrite=True)
    cfg.validate()
    train(cfg)


def evaluate_run(model_dir: Path, plan: DemoPlan, world: World, seed: int) -> np.ndarray:
    """Oracle rewards (T,) of one sample per held-out prompt, evaluation noise of ``seed``."""
    return evaluate_responses(model_dir, plan, world, seed)[1]


def evaluate_responses(model_dir: Path, plan: DemoPlan, world: World, seed: int
                       ) -> tuple[list[str], np.ndarray]:
    """:func:`evaluate_run` with the (T,) held-out samples themselves (sample 0 of
    :func:`realspo.arms.arm_outcomes.evaluate_model`)."""
    result = evaluate_model(model_dir, plan, world, seed, extra=False)
    return result.responses, result.rewards


