"""``realspo leaderboard``: every selection strategy of the registry, and the demo's controls
``ceiling`` and ``noiseless``, at equal label budgets in the proving ground, in one round and
in R rounds of active labeling. The report: :mod:`realspo.leaderboard.report`.

Per seed (the world, its oracle, the SFT model and the simulated annotator are the demo's)::

    baseline      the SFT model's held-out samples (the win rates' opponent)
    candidates    K samples from the SFT model for the N training prompts (the demo's)
    for each arm:
      one round   select B pairs, label, train from the SFT model, evaluate
      R rounds    round r: candidates from the current policy for the prompts no earlier round
                  labelled, select this round's share B_r, label, train from the previous
                  round's policy, evaluate (B = B_1 + ... + B_R, near-equal shares)

**Equal budgets, equal compute.** Every arm labels the same B pairs in both settings (one pair
per prompt), the reward-proxy arms included: ``reward-gap`` and ``reward-uncertain`` pay for
their proxy's labels out of that budget (half of each selection on random pairs to fit it, the
other half picked by it; :func:`realspo.leaderboard.pool.proxy_arm_pairs`), and train on all
of them. A run trains ``steps * labels / B`` optimizer steps (at least 1): the same epochs
over its labels everywhere, so the R rounds together take the one-round run's steps, and round 1
*is* a one-round run at budget B_1 (same candidates, same selection, same steps): the label-
efficiency curve reads it as such.

**Reference.** Training a round starts from the previous round's policy, which is also that
round's DPO reference (``realspo train`` uses its initial model as reference), as in iterative
DPO. The implicit reward the ``margin`` strategies (and ``design``'s weights) read in round r is
``beta (log pi_{r-1} - log pi_{r-2})``: the current policy against the reference it was trained
with (``pi_0`` = SFT). In round 1 (and in the one-round setting) policy and reference are both
the SFT model, every margin is exactly 0, and ``margin`` and ``margin-large`` fall to the
registry's tie order: the first valid pair of each prompt (candidates are i.i.d. samples, so a
random pair), prompts in data order; both then pick the same pairs. ``design`` uses uniform
weights there (no policy given).

Evaluation, seeds and label draws follow :mod:`realspo.demo.run`: a seed fixes candidates,
labels, training order and evaluation noise; every arm of a seed is judged on the same
held-out prompts with the same sampling noise (paired comparisons).
"""

from __future__ import annotations

import logging
import shutil
import tempfile
import time
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np

from realspo.arms.plan import DemoPlan
from realspo.arms.premise_check import per_prompt_spearman
from realspo.arms.records import Candidates
from realspo.arms.timings import timed
from realspo.arms.train_and_evaluate import (
    evaluate_responses,
    evaluate_run,
    label_summary,
    train_run,
    training_rows,
)
from realspo.leaderboard.plan import (
    CONTROL_ARMS,
    ArmRecord,
    LeaderboardPlan,
    LeaderboardRun,
    save_run,
)
from realspo.leaderboard.pool import (
    PaidLabels,
    arm_pairs,
    pool_candidates,
    proxy_accuracy,
    proxy_arm_pairs,
)
from realspo.outputs import atomic_dir, check_writable, write_rows
from realspo.selection.strategies import get_strategy

log = logging.getLogger(__name__)

ROUND_SEED_OFFSET = 1_000    # round r >= 2 samples and labels with seed + r * this


def run_leaderboard(plan: LeaderboardPlan, out: str | Path, overwrite: bool = False) -> LeaderboardRun:
    """Run ``plan`` and write its report into ``out`` (atomically; refused if it exists)."""
    from realspo.generation.sampling import load_generator_model
    from realspo.leaderboard.report import write_leaderboard_report
    from realspo.proving_ground.sft import get_sft_model
    from realspo.proving_ground.world import build_world

    out = check_writable(out, overwrite)
    demo = plan.demo
    started = time.perf_counter()
    world = build_world(demo.world)
    lb = LeaderboardRun(plan, get_sft_model(demo.world, demo.sft))
    n_train = demo.n_train_prompts
    log.info("leaderboard (%s): seeds %s, %d arms, %d labels (rounds: %s), %d training prompts",
             plan.preset, list(demo.seeds), len(plan.arms), plan.total_labels,
             plan.round_budgets(), n_train)
    with atomic_dir(out, overwrite, kind="leaderboard-report") as tmp, \
            tempfile.TemporaryDirectory(prefix="realspo-leaderboard-") as scratch:
        sft = load_generator_model(str(lb.sft_dir), device=demo.device)
        for seed in demo.seeds:
            with timed(lb.timings, "evaluation"):
                lb.baseline[seed] = evaluate_run(lb.sft_dir, demo, world, seed)
            with timed(lb.timings, "candidates"):
                first = pool_candidates(world, *sft, *sft, list(range(n_train)), demo, seed, seed)
            lb.premise[seed] = per_prompt_spearman(first).tolist()
            for arm in plan.arms:
                run_arm(lb, world, sft, first, arm, seed, tmp / f"seed-{seed}" / arm,
                        Path(scratch) / arm, started)
        lb.timings["total"] = time.perf_counter() - started
        save_run(lb, tmp)
        with timed(lb.timings, "report"):
            write_leaderboard_report(lb, tmp)
    log.info("[%.0fs] wrote %s", time.perf_counter() - started, out)
    return lb


def uses_proxy(arm: str) -> bool:
    """Whether ``arm`` reads the reward proxy (and so pays for its labels)."""
    return arm not in CONTROL_ARMS and get_strategy(arm).uses("rewards")


def _scores(arm: str, cands: Candidates, policy: Path | None,
            reference: Path | None, plan: LeaderboardPlan) -> dict[str, np.ndarray | None]:
    """The arrays the arm reads besides the proxy: implicit rewards (zero when policy is the
    reference)."""
    scores: dict[str, np.ndarray | None] = {"implicit_rewards": None}
    if arm in CONTROL_ARMS:
        return scores
    strategy = get_strategy(arm)
    n = len(cands.embeddings)
    if strategy.uses("implicit_rewards"):
        if policy is None or reference is None:
            scores["implicit_rewards"] = np.zeros(n) if "implicit_rewards" in strategy.needs else None
        else:
            scores["implicit_rewards"] = implicit_rewards_of(cands, policy, reference, plan.demo)
    return scores


def implicit_rewards_of(cands: Candidates, policy: Path, reference: Path, demo: DemoPlan) -> np.ndarray:
    """``beta (log pi - log pi_ref)`` (N,) of every candidate, scored as training scores them."""
    from realspo.generation.sampling import load_generator_model
    from realspo.pipeline.candidate_scores import candidate_logps, implicit_rewards

    logps = []
    for path in (policy, reference):
        model, tokenizer = load_generator_model(str(path), device=demo.device)
        logps.append(candidate_logps(model, tokenizer, cands.groups, max_length=demo.max_length))
        del model
    return implicit_rewards(logps[0], logps[1], demo.beta)


def _train_and_record(lb: LeaderboardRun, world: Any, cands: Candidates, rows: list[int],
                      labels: np.ndarray | None, init: Path, model_out: Path, run_dir: Path,
                      scratch: Path, *, seed: int, arm: str, setting: str, round_: int,
                      cumulative: int, extra: dict[str, Any]) -> ArmRecord:
    plan = lb.plan
    steps = plan.steps_for(len(rows))
    write_rows(run_dir / "pairs.jsonl", training_rows(cands, rows, labels))
    t0 = time.perf_counter()
    with timed(lb.timings, "training"):
        train_run(replace(plan.demo, steps=steps), init, run_dir / "pairs.jsonl", model_out, "dpo",
                  seed, scratch)
    with timed(lb.timings, "evaluation"):
        _, rewards = evaluate_responses(model_out, plan.demo, world, seed)
    shutil.copy(model_out / "metrics.jsonl", run_dir / "metrics.jsonl")
    record = ArmRecord(seed, arm, setting, round_, len(rows), cumulative, steps,
                       label_summary(cands, rows, labels), rewards, time.perf_counter() - t0, extra)
    lb.records.append(record)
    return record


def select(arm: str, cands: Candidates, n: int, seed: int, scores: dict[str, np.ndarray | None],
           paid: PaidLabels) -> tuple[list[int], np.ndarray | None, dict[str, Any]]:
    """The arm's ``n`` pairs of ``cands``, their labels (None: the annotator's), and what the
    record keeps of the selection (a proxy arm: its labels spent on fitting, the proxy's fit and
    accuracy). ``paid``: a proxy arm's earlier labels, updated in place."""
    if not uses_proxy(arm):
        rows, labels = arm_pairs(arm, cands, n, seed, scores)
        return rows, labels, {}
    rows, proxy, spent = proxy_arm_pairs(arm, cands, n, seed, paid, scores)
    return rows, None, {**spent, "proxy": {**proxy.info, **proxy_accuracy(proxy, cands)}}


def run_arm(lb: LeaderboardRun, world: Any, sft: tuple[Any, Any], first: Candidates, arm: str,
            seed: int, out: Path, scratch: Path, started: float) -> None:
    """One arm of one seed: the one-round run, then the R rounds."""
    from realspo.evaluation.evaluate import win_rate
    from realspo.generation.sampling import load_generator_model

    plan = lb.plan
    n_train, total = plan.demo.n_train_prompts, plan.total_labels
    with timed(lb.timings, "selection"):
        scores = _scores(arm, first, None, None, plan)
        rows, labels, extra = select(arm, first, total, seed, scores, PaidLabels.empty())
    rec = _train_and_record(lb, world, first, rows, labels, lb.sft_dir, scratch / "one-round",
                            out / "one-round", scratch, seed=seed, arm=arm, setting="one-round",
                            round_=1, cumulative=len(rows), extra=extra)
    shutil.rmtree(scratch / "one-round")
    log.info("[%.0fs] seed %d %s one round, %d labels: win rate %.3f", time.perf_counter() - started,
             seed, arm, rec.n_labels, win_rate(rec.rewards, lb.baseline[seed]))
    labelled: set[int] = set()
    models = [lb.sft_dir]   # pi_0 = SFT, pi_1, ... (the two newest kept)
    cumulative = 0
    paid = PaidLabels.empty()   # a proxy arm's labels of earlier rounds: its proxy refits on all
    for r, budget in enumerate(plan.round_budgets(), start=1):
        with timed(lb.timings, "candidates"):
            if r == 1:
                cands = first
            else:
                pool = [i for i in range(n_train) if i not in labelled]
                policy = load_generator_model(str(models[-1]), device=plan.demo.device)
                cands = pool_candidates(world, *policy, *sft, pool, plan.demo,
                                        seed + r * ROUND_SEED_OFFSET, seed + r * ROUND_SEED_OFFSET)
                del policy
        with timed(lb.timings, "selection"):
            scores = _scores(arm, cands, models[-1] if r > 1 else None,
                             models[-2] if r > 1 else None, plan)
            rows, labels, chosen = select(arm, cands, min(budget, len(cands.groups)), seed, scores, paid)
        cumulative += len(rows)
        by_row = {v: k for k, v in cands.pair_index.items()}
        labelled.update(int(cands.groups[by_row[row][0]].prompt_id.split("-")[1]) for row in rows)
        extra = {"pool_prompts": len(cands.groups), **chosen}
        if scores["implicit_rewards"] is not None:
            extra["implicit_reward_sd"] = float(np.std(scores["implicit_rewards"]))
        model_out = scratch / f"round-{r}"
        rec = _train_and_record(lb, world, cands, rows, labels, models[-1], model_out,
                                out / f"round-{r}", scratch, seed=seed, arm=arm, setting="rounds",
                                round_=r, cumulative=cumulative, extra=extra)
        models.append(model_out)
        if len(models) > 2 and models[-3] != lb.sft_dir:
            shutil.rmtree(models[-3])
        log.info("[%.0fs] seed %d %s round %d/%d, %d labels (%d in all, %d steps): win rate %.3f",
                 time.perf_counter() - started, seed, arm, r, plan.rounds, rec.n_labels, cumulative,
                 rec.steps, win_rate(rec.rewards, lb.baseline[seed]))
    for path in models[1:]:
        shutil.rmtree(path, ignore_errors=True)
