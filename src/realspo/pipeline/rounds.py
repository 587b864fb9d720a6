"""Multi-round active labeling: R rounds of generate -> select -> label -> train.

Round r (1-based) of :func:`run_rounds`:

1. **generate** K candidates per prompt of the round with the current policy ``p[r-1]``
   (``p[0]`` = ``--policy`` or ``--model``) (:func:`realspo.generation.candidates.generate_candidates`);
2. **embed** them when the strategy reads embeddings (:func:`realspo.embeddings.embed.embed_responses`;
   the current policy unless ``--embedder``), and score them when it reads implicit-reward
   margins (``p[r-1]`` against the reference ``p[r-1]`` was trained against) or rewards (the
   selection judge) (:mod:`realspo.pipeline.candidate_scores`);
3. **select** the round's budget of pairs (:func:`realspo.selection.strategies.select_pairs`);
4. **label** them with the automatic judge (:mod:`realspo.labels.outcomes`); human labels
   are not in the loop (export the pairs of a round with ``realspo label --export-tasks``);
5. **train** from ``p[r-1]`` (:func:`realspo.training.loop.train`), the reference being
   ``--model`` (``--reference initial``) or ``p[r-1]`` (``previous``). When the reference is
   not the model training starts from, its log-probs are written into the pairs
   (``ref_chosen_logps``/``ref_rejected_logps``), which ``train`` then uses as given.

Each round is built in a temporary directory and renamed to ``OUT/round-r`` when done
(:func:`realspo.outputs.atomic_dir`), so a crash loses only the round in progress and rerunning
the same command continues after the last finished round; ``OUT/rounds-config.json`` holds the
configuration, and a different one is refused. ``OUT/summary.json`` lists the finished rounds,
and ``OUT/model`` links to the latest round's policy.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import time
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from realspo.config import to_dict
from realspo.errors import ConfigError, OutputExistsError, RealspoError
from realspo.generation.prompts import PromptRecord, hh_text, read_prompts
from realspo.labels.judges import JudgeOptions, check_judge
from realspo.outputs import (
    atomic_dir,
    atomic_path,
    check_location,
    check_replaceable_dir,
    mark_output,
    output_kind,
    output_lock,
    write_json,
    write_rows,
)
from realspo.pipeline.round_stages import RoundJudges, label_pairs, reference_columns, select_round
from realspo.pipeline.rounds_config import (
    check_budgets,
    round_budgets,
    round_prompts,
    schedule_fractions,
    total_budget,
)

log = logging.getLogger(__name__)

KIND = "rounds"          # the marker kind of OUT
ROUND_KIND = "round"     # ... and of each OUT/round-r
CONFIG_FILE = "rounds-config.json"
SUMMARY_FILE = "summary.json"
ROUND_FILE = "round.json"
LATEST_LINK = "model"
# Differences in these do not change what a run computes.
NOT_COMPARED = ("overwrite", "progress")


@dataclass
class RoundsPlan:
    """What every round will do, fixed before any work: prompts, budgets, the models."""

    prompts: list[PromptRecord]
    parts: list[list[int]]       # prompt indices per round
    budgets: list[int]           # pairs per round, summing to the total
    start_policy: str            # p[0]
    fractions: list[float]       # the schedule: each round's share of the budget


def round_dir(out: Path, r: int) -> Path:
    return out / f"round-{r}"


def policy_path(out: Path, r: int, cfg: Any) -> str:
    """``p[r]``: the policy after round ``r`` (``p[0]``: ``--policy`` or ``--model``)."""
    return str(round_dir(out, r) / "model") if r else (cfg.policy or cfg.model)


def training_reference(out: Path, r: int, cfg: Any) -> str:
    """The reference of round ``r``'s training (``r = 0``: the one ``p[0]`` was trained
    against, i.e. ``--model``)."""
    if r == 0 or cfg.reference == "initial":
        return cfg.model
    return policy_path(out, r - 1, cfg)


def plan_rounds(cfg: Any) -> RoundsPlan:
    """Read the prompts and fix each round's prompts and budget; refuse what cannot work."""
    prompts = read_prompts(cfg.prompts, cfg.split)
    parts = round_prompts(len(prompts), cfg.rounds, cfg.round_prompts, cfg.seed)
    fractions = schedule_fractions(cfg.schedule, cfg.rounds)
    total = total_budget(cfg.budget, len(prompts), cfg.pairs_per_prompt)
    budgets = round_budgets(total, fractions)
    check_budgets(budgets, parts, cfg.pairs_per_prompt)
    return RoundsPlan(prompts, parts, budgets, policy_path(Path(cfg.out), 0, cfg), fractions)


def judge_options(cfg: Any) -> JudgeOptions:
    return JudgeOptions(device=cfg.device, dtype=cfg.dtype, batch_size=cfg.score_batch_size,
                        max_length=cfg.max_length, trust_remote_code=cfg.trust_remote_code,
                        allow_pickle=cfg.allow_pickle, template=cfg.judge_template,
                        progress=cfg.progress, chat_template=cfg.chat_template)


def check_inputs(cfg: Any, plan: RoundsPlan) -> None:
    """Cheap checks before anything is written or loaded: judges, the starting policy."""
    texts = [hh_text(p.prompt) for p in plan.prompts]
    options = judge_options(cfg)
    check_judge(cfg.judge, options, texts)
    if cfg.selection_judge:
        check_judge(cfg.selection_judge, replace(options, template=None), texts)
    if cfg.policy is not None:
        from realspo.pipeline.candidate_scores import check_scorers

        check_scorers(cfg.policy, cfg.model, None, trust_remote_code=cfg.trust_remote_code)


def saved_config(cfg: Any) -> dict[str, Any]:
    return {k: v for k, v in to_dict(cfg).items() if k not in NOT_COMPARED}


def finished_rounds(out: Path) -> int:
    """How many rounds ``out`` holds, finished (round-1 .. round-n, each with its marker)."""
    n = 0
    while output_kind(round_dir(out, n + 1)) == ROUND_KIND and \
            (round_dir(out, n + 1) / ROUND_FILE).is_file():
        n += 1
    return n


def _refuse_changed(out: Path, cfg: Any) -> None:
    """ConfigError (exit 2) when ``out`` was run with another configuration than ``cfg``."""
    try:
        saved = json.loads((out / CONFIG_FILE).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        raise OutputExistsError(str(out), f"has no readable {CONFIG_FILE}; pass --overwrite") from None
    config = saved_config(cfg)
    changed = sorted(k for k in set(saved) | set(config) if saved.get(k) != config.get(k))
    if changed:
        detail = ", ".join(f"{k}: {saved.get(k)!r} -> {config.get(k)!r}" for k in changed[:3])
        raise ConfigError(f"--out {out} holds rounds run with other options ({detail}); rerun "
                          "with the same options to continue, or pass --overwrite to start over")


def check_out(cfg: Any) -> None:
    """Before any model is read: an existing ``OUT`` must be a ``rounds`` output (only such a
    directory is continued, or replaced with ``--overwrite``) run with the same options."""
    out = Path(cfg.out)
    if not (out.exists() or out.is_symlink()):
        check_location(out)
        return
    if output_kind(out) != KIND or out.is_symlink():
        if not cfg.overwrite:
            raise OutputExistsError(str(out))  # already exists; pass --overwrite ...
        check_replaceable_dir(out, KIND)  # ... which replaces only a rounds output
    if not cfg.overwrite:
        _refuse_changed(out, cfg)


def prepare_out(cfg: Any) -> int:
    """Make ``OUT`` ready (under its lock) and return how many rounds are already finished
    there: a new ``OUT`` is created, marked and given the configuration; an existing one is
    continued (a round a kill interrupted is cleared) or, with ``--overwrite``, cleared."""
    out = Path(cfg.out)
    check_out(cfg)
    if out.exists() and not cfg.overwrite:
        for stale in out.glob(".round-*.tmp"):  # atomic_dir's temporary of an interrupted round
            shutil.rmtree(stale, ignore_errors=True)
        return finished_rounds(out)
    if out.exists():
        shutil.rmtree(out)
    out.mkdir(parents=True)
    mark_output(out, KIND)
    write_json(out / CONFIG_FILE, saved_config(cfg))
    return 0


def run_rounds(cfg: Any) -> Path:
    """Run (or continue) the rounds of ``cfg`` (a validated ``RoundsConfig``); returns the
    latest policy's directory."""
    plan = plan_rounds(cfg)
    check_out(cfg)
    check_inputs(cfg, plan)
    out = Path(cfg.out)
    with output_lock(out):
        created = not out.exists() or cfg.overwrite
        done = prepare_out(cfg)
        try:
            _run_remaining(cfg, plan, done)
        except BaseException:
            if created and finished_rounds(out) == 0 and output_kind(out) == KIND:
                shutil.rmtree(out)  # a refused or failed first round leaves no half-made OUT
            raise
    return Path(policy_path(out, cfg.rounds, cfg))


def _run_remaining(cfg: Any, plan: RoundsPlan, done: int) -> None:
    """Rounds ``done + 1 .. R`` of ``cfg`` in its prepared, locked ``OUT``."""
    out = Path(cfg.out)
    if done:
        log.info("%s: rounds 1-%d already finished; continuing with round %d", out, done, done + 1)
    judges = RoundJudges(cfg, judge_options(cfg))
    for r in range(done + 1, cfg.rounds + 1):
        run_round(cfg, plan, judges, r)
        write_summary(cfg, plan)
    if done == cfg.rounds:
        log.info("%s: all %d rounds were already finished", out, cfg.rounds)
        write_summary(cfg, plan)


def run_round(cfg: Any, plan: RoundsPlan, judges: RoundJudges, r: int) -> None:
    """Round ``r``, built in a temporary directory and renamed to ``OUT/round-r`` at the end."""
    from realspo.formats.registry import load_groups
    from realspo.generation.candidates import generate_candidates
    from realspo.generation.sampling import SamplingSettings
    from realspo.schema import read_annotation_rows
    from realspo.training.loop import train
    from realspo.training.run_dir import read_metrics

    out = Path(cfg.out)
    policy, reference = policy_path(out, r - 1, cfg), training_reference(out, r, cfg)
    strategy = cfg.round_strategy(r)
    prompts = [plan.prompts[i] for i in plan.parts[r - 1]]
    timings: dict[str, float] = {}
    started = time.perf_counter()
    log.info("round %d/%d: %d prompts, budget %d pairs, strategy %s, policy %s, reference %s",
             r, cfg.rounds, len(prompts), plan.budgets[r - 1], strategy, policy, reference)
    with atomic_dir(round_dir(out, r), kind=ROUND_KIND) as tmp:
        tick = time.perf_counter()
        settings = SamplingSettings(num_responses=cfg.num_responses, temperature=cfg.temperature,
                                    top_p=cfg.top_p, max_new_tokens=cfg.max_new_tokens,
                                    seed=cfg.seed + r - 1, chat_template=cfg.chat_template)
        generate_candidates(policy, prompts, tmp / "candidates.jsonl", settings,
                            batch_size=cfg.generate_batch_size, device=cfg.device, dtype=cfg.dtype,
                            trust_remote_code=cfg.trust_remote_code, progress=cfg.progress,
                            allow_pickle=cfg.allow_pickle)
        timings["generate_s"] = time.perf_counter() - tick
        groups, _ = load_groups(str(tmp / "candidates.jsonl"), "multi")
        selected = select_round(cfg, groups, strategy, plan.budgets[r - 1], r, judges,
                                policy=policy, margin_reference=training_reference(out, r - 1, cfg),
                                timings=timings)
        write_rows(tmp / "pairs.jsonl", selected.rows)
        tick = time.perf_counter()
        pairs = read_annotation_rows(tmp / "pairs.jsonl")
        rows, report, label_stats = label_pairs(judges, pairs)
        if not rows:
            raise RealspoError(f"round {r}: no selected pair got a preference ({report.summary()})")
        write_rows(tmp / "labels.jsonl", rows)
        timings["label_s"] = time.perf_counter() - tick
        log.info("round %d/%d: %s", r, cfg.rounds, report.summary())
        tick = time.perf_counter()
        data = tmp / "labels.jsonl"
        train_cfg = cfg.train_config(data=str(data), model=policy, out=str(tmp / "model"))
        if train_cfg.uses_reference and reference != policy:
            data = tmp / "train-pairs.jsonl"  # the labels plus the reference's log-probs
            write_rows(data, reference_columns(cfg, rows, reference))
            train_cfg = replace(train_cfg, data=str(data))
        timings["reference_s"] = time.perf_counter() - tick
        tick = time.perf_counter()
        train(train_cfg)
        timings["train_s"] = time.perf_counter() - tick
        metrics = [m for m in read_metrics(tmp / "model" / "metrics.jsonl") if "loss" in m]
        timings["total_s"] = time.perf_counter() - started
        record = {
            "round": r, "prompts": len(prompts), "candidates": sum(len(g.responses) for g in groups),
            "strategy": strategy, "budget": plan.budgets[r - 1],
            # labels used: pairs the judge was asked about (a tie costs a label too);
            # preferences: the pairs it ordered, which the round trains on
            "labels_used": len(pairs), "preferences": len(rows), "label_stats": label_stats,
            "selection": selected.stats,
            "policy": policy, "reference": reference if train_cfg.uses_reference else None,
            "model": str(round_dir(out, r) / "model"),
            "train": {**{k: v for k, v in (metrics[-1] if metrics else {}).items()
                         if k in FINAL_METRICS}, "steps": metrics[-1]["step"] if metrics else 0},
            "timings_s": {k: round(v, 3) for k, v in timings.items()},
        }
        write_json(tmp / ROUND_FILE, record)
    link_latest(out, r)
    log.info("round %d/%d done in %.1f s: %d labels, %d preferences, final loss %s; model %s", r,
             cfg.rounds, timings["total_s"], len(pairs), len(rows), record["train"].get("loss"),
             record["model"])


FINAL_METRICS = ("loss", "rewards/accuracies", "rewards/margins", "rewards/chosen",
                 "rewards/rejected", "logps/chosen", "logps/rejected", "spo/loss")


def link_latest(out: Path, r: int) -> None:
    """Point ``OUT/model`` at round ``r``'s policy (a relative link, replaced atomically)."""
    link = out / LATEST_LINK
    tmp = out / f".{LATEST_LINK}.{os.getpid()}.tmp"
    try:
        tmp.unlink(missing_ok=True)
        os.symlink(os.path.join(f"round-{r}", "model"), tmp, target_is_directory=True)
        os.replace(tmp, link)
    except OSError as exc:  # a file system without links: summary.json still says where
        log.warning("could not link %s to round %d's model (%s)", link, r, exc)
        tmp.unlink(missing_ok=True)


def write_summary(cfg: Any, plan: RoundsPlan) -> dict[str, Any]:
    """``OUT/summary.json`` from the finished rounds' ``round.json`` files; and
    ``OUT/rounds.jsonl``, one line per round."""
    out = Path(cfg.out)
    done = finished_rounds(out)
    rounds = [json.loads((round_dir(out, r) / ROUND_FILE).read_text(encoding="utf-8"))
              for r in range(1, done + 1)]
    summary = {
        "rounds_finished": done, "rounds": cfg.rounds, "budget_total": sum(plan.budgets),
        "budgets": plan.budgets, "schedule": cfg.schedule,
        "schedule_fractions": [round(f, 6) for f in plan.fractions], "strategy": cfg.strategy,
        "judge": cfg.judge, "reference": cfg.reference, "start_policy": plan.start_policy,
        "labels_used": sum(r["labels_used"] for r in rounds),
        "preferences": sum(r["preferences"] for r in rounds),
        "latest_model": str(round_dir(out, done) / "model") if done else None,
        "final_model": str(round_dir(out, cfg.rounds) / "model") if done == cfg.rounds else None,
        "per_round": rounds,
    }
    write_json(out / SUMMARY_FILE, summary, overwrite=True)
    with atomic_path(out / "rounds.jsonl", overwrite=True) as tmp:
        tmp.write_text("".join(json.dumps(r) + "\n" for r in rounds), encoding="utf-8")
    return summary
