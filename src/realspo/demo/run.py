"""``realspo demo``: the whole pipeline in the offline proving ground, measured and reported.

What runs, in process (every stage is the library's own function)::

    SFT model            proving_ground.sft.get_sft_model        built once, cached by its config
    for each seed:
      candidates         generation.iter_samples                 K samples per training prompt
      embeddings         embeddings.embed_with_causal_lm         the SFT model's final hidden layer
      every pair         labels.simulate_labels                  one simulated label per candidate pair
      selection          selection.select_pairs                  random, easy, hard, centroid
                         demo.controls                           ceiling, noiseless, easy-random-prompts
      training           training.train                          DPO (sigmoid), DPO + SPO, from the SFT model
      evaluation         generation + the oracle                 vs the SFT model, same sampling noise;
                         demo.outcomes                           S samples per prompt, implicit-reward accuracy
      SPO check          demo.manipulation                       oracle rewards of SPO's degree variants

The world, its oracle and the SFT model are shared by all seeds; a seed fixes the candidates,
the ``random`` strategy, the simulated annotator's draws, the training order and the
evaluation samples. Every candidate pair gets its simulated label once, so a pair chosen by two
strategies carries the same label in both. Trained models live in a scratch directory and are
deleted once evaluated; ``OUT`` keeps the numbers, figures, selected pairs and training metrics
(see :mod:`realspo.demo.report`). ``OUT`` appears atomically, when everything has finished.

What to run is a :class:`realspo.demo.plan.DemoPlan`; what came out is collected in a
:class:`realspo.demo.records.DemoRun`, which :mod:`realspo.demo.analysis` turns into numbers.
"""

from __future__ import annotations

import logging
import shutil
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import numpy as np
import torch

from realspo.demo.controls import control_selection
from realspo.demo.knobs import knob_log_line, with_confusion
from realspo.demo.manipulation import HELDOUT_PAIRS, heldout_head_accuracy, score_variants
from realspo.demo.outcomes import build_heldout_pairs, evaluate_model
from realspo.demo.plan import DemoPlan, planned_runs, run_name
from realspo.demo.records import Candidates, DemoRun, RunRecord
from realspo.demo.report import write_report
from realspo.generation.prompts import PromptRecord
from realspo.generation.sampling import SamplingSettings, iter_samples, load_generator_model
from realspo.labels.annotator import label_errors, simulate_labels
from realspo.outputs import atomic_dir, check_writable, write_rows
from realspo.proving_ground.sft import get_sft_model
from realspo.proving_ground.world import World, build_world
from realspo.schema import PromptGroup, preference_row
from realspo.selection.budget import resolve_budget
from realspo.selection.strategies import select_pairs

log = logging.getLogger(__name__)


# ---------------------------------------------------------------------------------------
# Stages


@contextmanager
def timed(timings: dict[str, float], stage: str) -> Iterator[None]:
    """Add the wall time of the block to ``timings[stage]``."""
    start = time.perf_counter()
    try:
        yield
    finally:
        timings[stage] = timings.get(stage, 0.0) + time.perf_counter() - start


def sample_responses(model: Any, tokenizer: Any, prompts: list[str], settings: SamplingSettings,
                     batch_size: int = 32) -> list[list[str]]:
    """K samples per prompt (``settings.num_responses``); sample ``j`` of prompt ``i`` draws its
    noise from ``(settings.seed, i, j)`` only (see :mod:`realspo.generation.sampling`)."""
    return [s for s, _ in sample_responses_finished(model, tokenizer, prompts, settings, batch_size)]


def sample_responses_finished(model: Any, tokenizer: Any, prompts: list[str],
                              settings: SamplingSettings, batch_size: int = 32
                              ) -> list[tuple[list[str], list[bool]]]:
    """:func:`sample_responses` with, per sample, whether it ended at EOS (False: cut)."""
    records = [PromptRecord(i, f"p{i}", p) for i, p in enumerate(prompts)]
    return [(s, f) for _, batch, flags in iter_samples(model, tokenizer, records, settings,
                                                       batch_size, progress=False)
            for s, f in zip(batch, flags, strict=True)]


def build_candidates(world: World, model: Any, tokenizer: Any, plan: DemoPlan, seed: int,
                     timings: dict[str, float]) -> Candidates:
    """Sample, embed, and label every candidate pair of one seed."""
    from realspo.embeddings.embed import embed_with_causal_lm

    prompts = world.train_prompts[: plan.n_train_prompts]
    settings = SamplingSettings(num_responses=plan.num_candidates, temperature=plan.temperature,
                                max_new_tokens=plan.max_new_tokens, seed=seed)
    with timed(timings, "candidates"):
        samples = sample_responses_finished(model, tokenizer, prompts, settings)
    groups = scored_groups(world, range(len(prompts)), prompts, samples)
    with timed(timings, "embeddings"):
        flat = [r for g in groups for r in g.responses]
        embeddings = embed_with_causal_lm(model, tokenizer, flat, show_progress=False)
    cands = labelled_candidates(groups, embeddings, plan, seed)
    return with_confusion(cands, world, plan.annotator_confusion, seed)  # K = 0: labels unchanged


def scored_groups(world: World, prompt_ids: Any, prompts: list[str],
                  samples: list[tuple[list[str], list[bool]]]) -> list[PromptGroup]:
    """One group per training prompt (``train-{id}``) with its non-empty samples, their
    finished flags and oracle rewards; a prompt whose samples are all empty is left out (an
    empty sample has nothing to embed or label)."""
    groups = []
    for i, prompt, (responses, finished) in zip(prompt_ids, prompts, samples, strict=True):
        kept = [(r, f) for r, f in zip(responses, finished, strict=True) if r]
        if kept:
            texts = [r for r, _ in kept]
            groups.append(PromptGroup(f"train-{i}", prompt, texts,
                                      scores=world.oracle.score_batch([prompt] * len(kept), texts),
                                      finished=[f for _, f in kept]))
    return groups


def labelled_candidates(groups: list[PromptGroup], embeddings: np.ndarray, plan: DemoPlan,
                        label_seed: int) -> Candidates:
    """Every distinct-text pair within each group, with its cosine similarity, oracle rewards
    and one simulated label (seeded by ``label_seed``)."""
    from realspo.selection.rows import response_keys

    keys = response_keys(groups)
    index: dict[tuple[int, int, int], int] = {}
    sims, ra, rb = [], [], []
    start = 0
    for g, group in enumerate(groups):
        k = len(group.responses)
        for i in range(k):
            for j in range(i + 1, k):
                if keys[start + i] == keys[start + j]:
                    continue  # identical texts: never a candidate pair
                index[g, i, j] = len(sims)
                sims.append(float(embeddings[start + i] @ embeddings[start + j]))
                ra.append(group.scores[i])
                rb.append(group.scores[j])
        start += k
    reward_a, reward_b = np.asarray(ra, dtype=np.float64), np.asarray(rb, dtype=np.float64)
    a_preferred = simulate_labels(reward_a, reward_b, plan.tau, plan.flip, seed=label_seed)
    return Candidates(groups, embeddings, keys, index, np.asarray(sims), reward_a, reward_b,
                      a_preferred, label_errors(a_preferred, reward_a, reward_b))


def selected_pairs(cands: Candidates, strategy: str, seed: int) -> list[int]:
    """Rows of ``cands``' pair arrays, in the strategy's rank order (every eligible prompt)."""
    sizes = [len(g.responses) for g in cands.groups]
    sel = select_pairs(cands.embeddings, sizes, strategy, None, seed=seed, response_keys=cands.keys)
    return [cands.pair_index[g, a, b] for g, a, b in
            zip(sel.group_index.tolist(), sel.index_a.tolist(), sel.index_b.tolist(), strict=True)]


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
    from realspo.training.config import TrainConfig
    from realspo.training.loop import train

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
    :func:`realspo.demo.outcomes.evaluate_model`)."""
    result = evaluate_model(model_dir, plan, world, seed, extra=False)
    return result.responses, result.rewards


# ---------------------------------------------------------------------------------------
# The run


def run_demo(plan: DemoPlan, out: str | Path, overwrite: bool = False) -> DemoRun:
    """Run ``plan`` and write its report into ``out`` (atomically; refused if it exists)."""
    out = check_writable(out, overwrite)
    timings: dict[str, float] = {}
    started = time.perf_counter()
    world = build_world(plan.world)
    log.info("demo (%s): seeds %s, %d training prompts x %d candidates, %d held-out prompts, "
             "%d training runs per seed; annotator confusion K=%g, world coupling RHO=%g",
             plan.preset, list(plan.seeds), plan.n_train_prompts, plan.num_candidates,
             plan.n_test_prompts, len(planned_runs(plan)), plan.annotator_confusion,
             plan.world.coupling)
    with timed(timings, "sft_model"):
        sft_dir = get_sft_model(plan.world, plan.sft)
    log.info("[%.0fs] SFT model ready: %s", timings["sft_model"], sft_dir)
    with atomic_dir(out, overwrite, kind="demo-report") as tmp, \
            tempfile.TemporaryDirectory(prefix="realspo-demo-") as scratch:
        demo = DemoRun(plan, sft_dir, {}, [], {}, timings, {})
        model, tokenizer = load_generator_model(str(sft_dir), device=plan.device)
        for seed in plan.seeds:
            cands = build_candidates(world, model, tokenizer, plan, seed, timings)
            demo.pairs[seed] = cands
            write_rows(tmp / f"seed-{seed}" / "candidates.jsonl",
                       [{"prompt_id": g.prompt_id, "prompt": g.prompt, "responses": g.responses,
                         "finished": [g.is_finished(j) for j in range(len(g.responses))],
                         "oracle_rewards": g.scores} for g in cands.groups])
            log.info("[%.0fs] seed %d: candidates for %d prompts, %d distinct pairs, label-error "
                     "rate over all pairs %.3f", time.perf_counter() - started, seed,
                     len(cands.groups), len(cands.similarity), np.nanmean(cands.error))
            log.info("seed %d: %s", seed, knob_log_line(cands))
            with timed(timings, "evaluation"):
                base = evaluate_model(sft_dir, plan, world, seed)
                demo.heldout[seed] = build_heldout_pairs(base, sft_dir, plan, world)
            demo.baseline[seed], demo.baseline_samples[seed] = base.rewards, base.sample_rewards
            run_seed(demo, world, cands, seed, tmp / f"seed-{seed}", Path(scratch), started)
        del model
        demo.sizes.update(sft_model=sft_info(sft_dir), train_prompts=plan.n_train_prompts,
                          test_prompts=plan.n_test_prompts,
                          candidates_per_prompt=plan.num_candidates,
                          candidate_pairs={s: len(c.similarity) for s, c in demo.pairs.items()},
                          training_runs=len(demo.runs), torch_threads=torch.get_num_threads())
        timings["total"] = time.perf_counter() - started
        with timed(timings, "report"):
            write_report(demo, tmp)
    log.info("[%.0fs] wrote %s; stage timings (s): %s", time.perf_counter() - started, out,
             ", ".join(f"{k} {v:.0f}" for k, v in timings.items()))
    return demo


def run_seed(demo: DemoRun, world: World, cands: Candidates, seed: int, out: Path,
             scratch: Path, started: float) -> None:
    """Every training run of one seed: select, train, evaluate; appends to ``demo.runs``."""
    from realspo.evaluation.evaluate import win_rate
    from realspo.training.outputs import read_metrics

    plan, timings = demo.plan, demo.timings
    ranked = {s: selected_pairs(cands, s, seed)
              for s in dict.fromkeys((*plan.strategies, *(("random", "easy") if plan.controls else ())))}
    labels: dict[str, np.ndarray | None] = {}
    for control in plan.controls:
        ranked[control], labels[control] = control_selection(control, cands, ranked, seed)
    eligible = len(ranked["random"]) if "random" in ranked else None
    planned = planned_runs(plan)
    spo_pairs: dict[int, bool] = {}  # rows trained with SPO -> whether A was chosen
    for number, (strategy, loss, spec) in enumerate(planned, start=1):
        n = resolve_budget(spec, eligible or len(ranked[strategy]))
        chosen = ranked[strategy][:n]
        run_dir = out / run_name(strategy, loss, spec)
        rows = training_rows(cands, chosen, labels.get(strategy))
        write_rows(run_dir / "pairs.jsonl", rows)
        if loss == "dpo+spo":
            spo_pairs.update((r, bool(cands.a_preferred[r])) for r in chosen)
        t0 = time.perf_counter()
        with timed(timings, "training"):
            train_run(plan, demo.sft_dir, run_dir / "pairs.jsonl", scratch / "model", loss, seed,
                      scratch)
        with timed(timings, "evaluation"):
            result = evaluate_model(scratch / "model", plan, world, seed, heldout=demo.heldout[seed])
        responses, rewards = result.responses, result.rewards
        shutil.copy(scratch / "model" / "metrics.jsonl", run_dir / "metrics.jsonl")
        record = RunRecord(seed, strategy, loss, spec,
                           label_summary(cands, chosen, labels.get(strategy)), rewards,
                           read_metrics(run_dir / "metrics.jsonl"), time.perf_counter() - t0,
                           responses, sample_rewards=result.sample_rewards,
                           heldout_logps=result.heldout_logps)
        if loss == "dpo+spo":  # the head on variants of pairs it never saw
            with timed(timings, "spo_manipulation_check"):
                record.spo_heldout = heldout_head_accuracy(
                    scratch / "model", training_rows(cands, ranked[strategy][n:n + HELDOUT_PAIRS]), plan)
        shutil.rmtree(scratch / "model")  # trained models are not kept
        demo.runs.append(record)
        log.info("[%.0fs] seed %d run %d/%d %s %s, %d labels: win rate vs SFT %.3f, mean reward "
                 "%.3f (SFT %.3f), %.0fs", time.perf_counter() - started, seed, number,
                 len(planned), strategy, loss, n, win_rate(rewards, demo.baseline[seed]),
                 rewards.mean(), demo.baseline[seed].mean(), record.seconds)
    with timed(timings, "spo_manipulation_check"):
        demo.spo_variants += score_variants(world, cands, spo_pairs, plan, seed)


def sft_info(sft_dir: Path) -> dict[str, Any]:
    """Parameters, final training loss and build time of the SFT model (its build_info.json)."""
    import json

    try:
        info = json.loads((sft_dir / "build_info.json").read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}
    return {k: info.get(k) for k in ("parameters", "final_loss", "seconds", "corpus_pairs")}
