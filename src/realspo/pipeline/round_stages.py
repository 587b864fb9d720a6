"""The select and label stages of one round of :mod:`realspo.pipeline.rounds`, and the
reference log-probs its training reads: thin compositions of the stage functions
(:mod:`realspo.selection`, :mod:`realspo.labels`, :mod:`realspo.training.reference`)."""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass, replace
from typing import Any, cast

import numpy as np

from realspo.labels.judges import Judge, JudgeOptions, find_judge, make_judge, make_pairwise_judge
from realspo.labels.outcomes import (
    LabelReport,
    compare_pairs,
    judge_pairs,
    labeled_rows,
    outcome_of,
)
from realspo.labels.pairwise import PairwiseJudge
from realspo.pipeline.rounds_config import reads_embeddings
from realspo.schema import AnnotationPair, PromptGroup, preference_row
from realspo.selection.pickers import similarity_key
from realspo.selection.rows import build_rows, response_keys
from realspo.selection.strategies import get_strategy, select_pairs

log = logging.getLogger(__name__)


class RoundJudges:
    """The run's judges, each made once, on first use: the labeling judge and the reward judge
    that scores candidates for ``reward-*`` strategies (the same object when they coincide)."""

    def __init__(self, cfg: Any, options: JudgeOptions) -> None:
        self.cfg, self.options = cfg, options
        self._made: dict[str, Judge | PairwiseJudge] = {}

    def _get(self, name: str, options: JudgeOptions) -> Judge | PairwiseJudge:
        if name not in self._made:
            log.info("loading judge %s", name)
            self._made[name] = (make_pairwise_judge(name, options) if find_judge(name).pairwise
                                else make_judge(name, options))
        return self._made[name]

    @property
    def label_entry(self) -> Any:
        return find_judge(self.cfg.judge)

    def labeler(self) -> Judge | PairwiseJudge:
        return self._get(self.cfg.judge, self.options)

    def scorer(self) -> Judge:
        name = self.cfg.scoring_judge()
        assert not find_judge(name).pairwise  # RoundsConfig.validate refused it
        return cast(Judge, self._get(name, self.options if name == self.cfg.judge
                                     else replace(self.options, template=None)))


@dataclass
class Selected:
    """One round's selection: the annotation rows and a few numbers for the summary."""

    rows: list[dict[str, Any]]
    stats: dict[str, Any]


def select_round(cfg: Any, groups: list[PromptGroup], strategy_name: str, budget: int, r: int,
                 judges: RoundJudges, *, policy: str, margin_reference: str,
                 timings: dict[str, float]) -> Selected:
    """Embed and score the candidates as ``strategy_name`` needs, and select ``budget`` pairs
    (fewer, with a warning, if fewer prompts have two distinct responses)."""
    from realspo.errors import RealspoError
    from realspo.selection.budget import count_eligible

    strategy = get_strategy(strategy_name)
    sizes, keys = [len(g.responses) for g in groups], response_keys(groups)
    eligible = count_eligible(sizes, keys)
    if eligible == 0:
        raise RealspoError(f"round {r}: no prompt got two distinct responses; nothing to select "
                           "(raise --temperature or --max-new-tokens)")
    n = min(budget, eligible * cfg.pairs_per_prompt)
    if n < budget:
        log.warning("round %d: budget %d, but only %d prompts have two distinct responses; "
                    "selecting %d pairs", r, budget, eligible, n)
    tick = time.perf_counter()
    embedded = reads_embeddings(strategy)
    if embedded:
        from realspo.embeddings.embed import embed_responses

        emb = embed_responses(groups, cfg.embedder or policy, batch_size=cfg.score_batch_size,
                              max_length=cfg.max_length, device=cfg.device, dtype=cfg.dtype,
                              trust_remote_code=cfg.trust_remote_code, allow_pickle=cfg.allow_pickle,
                              show_progress=cfg.progress)
    else:
        emb = np.ones((len(keys), 1), dtype=np.float32)
    timings["embed_s"] = time.perf_counter() - tick
    tick = time.perf_counter()
    scores: dict[str, np.ndarray] = {}
    if strategy.uses("implicit_rewards") and policy != margin_reference:
        from realspo.pipeline.candidate_scores import candidate_scores

        scores = candidate_scores(groups, policy=policy, reference=margin_reference, beta=cfg.beta,
                                  cache_dir=cfg.cache_dir, device=cfg.device, dtype=cfg.dtype,
                                  batch_size=cfg.score_batch_size, progress=cfg.progress,
                                  trust_remote_code=cfg.trust_remote_code,
                                  allow_pickle=cfg.allow_pickle)
    if "rewards" in strategy.needs:
        scorer = judges.scorer()
        scores["rewards"] = np.asarray(scorer([g.prompt for g in groups for _ in g.responses],
                                              [t for g in groups for t in g.responses]), dtype=np.float64)
    timings["score_s"] = time.perf_counter() - tick
    tick = time.perf_counter()
    selection = select_pairs(emb, sizes, strategy_name, n, seed=cfg.seed + r - 1,
                             response_keys=keys, design_ridge=cfg.design_ridge,
                             pairs_per_prompt=cfg.pairs_per_prompt, **scores)
    rows, _, _ = build_rows(groups, selection, strategy_name)
    if not embedded:
        rows = [{**row, "similarity": None} for row in rows]
    timings["select_s"] = time.perf_counter() - tick
    stats: dict[str, Any] = {"eligible_prompts": eligible, "pairs": len(rows),
                             "margins": "implicit_rewards" in scores}
    if selection.key is not None and len(selection.key) and (embedded or strategy.key is not similarity_key):
        stats["key_mean"] = float(np.mean(selection.key))  # what it ranked by: |margin|, gap, ...
    if embedded and len(selection.similarity):
        stats["similarity_mean"] = float(np.mean(selection.similarity))
    return Selected(rows, stats)


def label_pairs(judges: RoundJudges, pairs: list[AnnotationPair]
                ) -> tuple[list[dict[str, Any]], LabelReport, dict[str, Any]]:
    """Label ``pairs`` with the run's judge: the preference rows, the report, and label stats
    (counts, and the mean score gap chosen - rejected)."""
    entry, judge = judges.label_entry, judges.labeler()
    comparison = None
    if entry.pairwise:
        scores, comparison = compare_pairs(cast(PairwiseJudge, judge), pairs)
        outcomes = list(comparison.outcomes)
    else:
        scores = judge_pairs(cast(Judge, judge), pairs)
        outcomes = [outcome_of(a, b) for a, b in scores]
    rows, report = labeled_rows(pairs, outcomes, entry.label_source, scores)
    if comparison is not None:
        report.judge_bias = comparison.bias_summary()
    gaps = [row["chosen_score"] - row["rejected_score"] for row in rows]
    stats = {"pairs": report.pairs, "labeled": report.labeled, "tied": report.tied,
             "skipped": report.skipped, "label_source": entry.label_source,
             "mean_score_gap": float(np.mean(gaps)) if gaps else None,
             "judge_bias": report.judge_bias}
    return rows, report, stats


def reference_columns(cfg: Any, rows: list[dict[str, Any]], reference: str) -> list[dict[str, Any]]:
    """``rows`` with ``ref_chosen_logps``/``ref_rejected_logps`` from ``reference``, scored as
    ``train`` scores its own reference (same tokenization, fp32 weights; cached in train's
    ``--cache-dir``)."""
    import torch

    from realspo.models import pick_device
    from realspo.training.reference import load_or_compute_reference
    from realspo.training.train_config import default_cache_dir

    chosen, rejected, status = load_or_compute_reference(
        reference, rows, cfg.cache_dir or default_cache_dir(), max_length=cfg.max_length,
        truncation=cfg.truncation, batch_size=cfg.score_batch_size, show_progress=cfg.progress,
        dtype=torch.float32, device=pick_device(cfg.device), trust_remote_code=cfg.trust_remote_code,
        chat_template=cfg.chat_template)
    log.info("reference log-probs of %s: %s", reference, status)
    return [preference_row(**{**row, "ref_chosen_logps": float(c), "ref_rejected_logps": float(rj)})
            for row, c, rj in zip(rows, chosen.tolist(), rejected.tolist(), strict=True)]
