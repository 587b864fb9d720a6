"""``realspo demo``: the whole pipeline in the offline proving ground, measured and reported.

What runs, in process (every stage is the library's own function)::

    SFT model            proving_ground.sft.get_sft_model        built once, cached by its config
    for each seed:
      candidates         generation.iter_samples                 K samples per training prompt
      embeddings         embeddings.embed_with_causal_lm         the SFT model's final hidden layer
      every pair         labels.simulate_labels                  one simulated label per candidate pair
      selection          selection.select_pairs                  random, easy, hard, centroid
                         arms.controls                           ceiling, noiseless, easy-random-prompts
      training           training.train                          DPO (sigmoid), DPO + SPO, from the SFT model
      evaluation         generation + the oracle                 vs the SFT model, same sampling noise;
                         arms.arm_outcomes                       S samples per prompt, implicit-reward accuracy
      SPO check          arms.manipulation                       oracle rewards of SPO's degree variants

The world, its oracle and the SFT model are shared by all seeds; a seed fixes the candidates,
the ``random`` strategy, the simulated annotator's draws, the training order and the
evaluation samples. Every candidate pair gets its simulated label once, so a pair chosen by two
strategies carries the same label in both. Trained models live in a scratch directory and are
deleted once evaluated; ``OUT`` keeps the numbers, figures, selected pairs and training metrics
(see :mod:`realspo.demo.report`). ``OUT`` appears atomically, when everything has finished.

What to run is a :class:`realspo.arms.plan.DemoPlan`; what came out is collected in a
:class:`realspo.arms.records.DemoRun`, which :mod:`realspo.arms.analysis` turns into numbers.
"""

from __future__ import annotations

import logging
import shutil
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch

from realspo.arms.arm_outcomes import build_heldout_pairs, evaluate_model
from realspo.arms.candidate_pool import build_candidates, selected_pairs
from realspo.arms.controls import control_selection
from realspo.arms.knobs import knob_log_line
from realspo.arms.manipulation import HELDOUT_PAIRS, heldout_head_accuracy, score_variants
from realspo.arms.plan import DemoPlan, planned_runs, run_name
from realspo.arms.records import Candidates, DemoRun, RunRecord
from realspo.arms.timings import timed
from realspo.arms.train_and_evaluate import label_summary, train_run, training_rows
from realspo.demo.report import write_report
from realspo.generation.sampling import load_generator_model
from realspo.outputs import atomic_dir, check_writable, write_rows
from realspo.proving_ground.sft import get_sft_model
from realspo.proving_ground.world import World, build_world
from realspo.selection.budget import resolve_budget

log = logging.getLogger(__name__)


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
    from realspo.training.run_dir import read_metrics

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
