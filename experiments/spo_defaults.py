"""Choose SPO's default lambda (``--spo-weight``) and D (``--spo-levels``) by experiment.

In the offline proving ground (:mod:`realspo.proving_ground`), with the demo's training recipe
(:mod:`realspo.demo.run`, preset ``default``: sigmoid DPO, beta 0.1, lr 5e-4, 30 steps of 16 pairs,
the SFT model as init and reference), per seed:

1. **Pairs.** K = 4 samples per training prompt from the SFT model (temperature 1, <= 64 new
   tokens); per prompt the oracle's best and worst distinct responses form one pair (prompts
   whose candidates all tie are dropped), oriented by the simulated annotator
   (``labels.simulate_labels``, Bradley-Terry with tau = 1, as in the demo), so some labels
   are wrong, as in real data. The same pairs feed every run of the seed.
2. **Runs.** Plain DPO, then DPO + SPO for every ``lambda`` x ``D`` of the grid; everything
   else fixed (SPO labels ``separate``, pooling ``last``, ``sample_levels`` as ``realspo
   train``'s default unless ``--spo-sample-levels`` says otherwise).
3. **Evaluation.** The SFT model and every trained model answer the held-out prompts with the
   same sampling noise (paired); the oracle scores them. Win rate vs SFT (ties 1/2), the
   paired difference to plain DPO of the same seed (per-prompt wins and rewards), and the
   head-to-head win rate vs plain DPO, each with a 95% percentile-bootstrap interval over
   prompts (seeds pooled by concatenating their prompts), and the share of held-out prompts
   whose reward differs from plain DPO's (how far SPO moved the policy at all). Training
   metrics (mean of the last 5 logged steps) come from ``metrics.jsonl``; the step time is
   the wall time between the first and last optimizer steps (no setup, no export).

Run (3 seeds x 13 runs: 7 to 9 minutes on 2 shared CPU cores)::

    OMP_NUM_THREADS=1 .venv/bin/python experiments/spo_defaults.py --out docs/experiments/spo-defaults

and the longer-training check of docs/experiments/spo-defaults.md (about 7 minutes)::

    OMP_NUM_THREADS=1 .venv/bin/python experiments/spo_defaults.py --steps 90 --seeds 2 \
        --weights 0.1,0.3,1.0 --levels 3,4 --out docs/experiments/spo-defaults-90-steps

Writes ``OUT/results.json`` (every number), ``OUT/runs.jsonl`` (one row per run, with its
per-prompt rewards), ``OUT/table.md`` (the summary table), ``OUT/seed-S/pairs.jsonl``.
"""

from __future__ import annotations

import argparse
import os

os.environ.setdefault("OMP_NUM_THREADS", "1")  # before torch: tiny models gain nothing from threads
os.environ.setdefault("HF_HUB_OFFLINE", "1")

import logging  # noqa: E402
import platform  # noqa: E402
import shutil  # noqa: E402
import tempfile  # noqa: E402
import time  # noqa: E402
from dataclasses import asdict, replace  # noqa: E402
from pathlib import Path  # noqa: E402
from typing import Any  # noqa: E402

import numpy as np  # noqa: E402
import torch  # noqa: E402

from realspo.arms.candidate_pool import sample_responses  # noqa: E402
from realspo.arms.plan import DemoPlan, make_plan  # noqa: E402
from realspo.arms.train_and_evaluate import evaluate_run  # noqa: E402
from realspo.evaluation.evaluate import bootstrap_interval, win_indicators, win_rate  # noqa: E402
from realspo.generation.sampling import SamplingSettings, load_generator_model  # noqa: E402
from realspo.labels.annotator import label_errors, simulate_labels  # noqa: E402
from realspo.outputs import atomic_dir, check_writable, write_json, write_rows  # noqa: E402
from realspo.proving_ground import World, build_world, get_sft_model  # noqa: E402
from realspo.spo.variants import SPOConfig, precompute_variants, variant_stats  # noqa: E402
from realspo.training.loop import TrainConfig, train  # noqa: E402
from realspo.training.run_dir import read_metrics  # noqa: E402

log = logging.getLogger("spo_defaults")
TAIL = 5  # training metrics are averaged over the last TAIL logged steps (one step = 16 pairs)
RESAMPLES = 2000


def build_pairs(world: World, plan: DemoPlan, seed: int) -> tuple[list[dict[str, Any]], dict[str, Any]]:
    """One best-vs-worst pair per training prompt, oriented by the simulated annotator."""
    model, tokenizer = load_generator_model(str(get_sft_model(plan.world, plan.sft)), device=plan.device)
    prompts = world.train_prompts[: plan.n_train_prompts]
    settings = SamplingSettings(num_responses=plan.num_candidates, temperature=plan.temperature,
                                max_new_tokens=plan.max_new_tokens, seed=seed)
    samples = sample_responses(model, tokenizer, prompts, settings)
    del model
    best, worst, r_best, r_worst, kept_prompts = [], [], [], [], []
    for prompt, responses in zip(prompts, samples, strict=True):
        texts = list(dict.fromkeys(r for r in responses if r))  # distinct, non-empty
        if len(texts) < 2:
            continue
        scores = world.oracle.score_batch([prompt] * len(texts), texts)
        hi, lo = int(np.argmax(scores)), int(np.argmin(scores))
        if scores[hi] == scores[lo]:
            continue  # the oracle ties every candidate: no pair to learn from
        kept_prompts.append(prompt)
        best.append(texts[hi])
        worst.append(texts[lo])
        r_best.append(scores[hi])
        r_worst.append(scores[lo])
    a_best = simulate_labels(np.asarray(r_best), np.asarray(r_worst), plan.tau, plan.flip, seed=seed)
    errors = label_errors(a_best, r_best, r_worst)
    rows = [{"prompt": p, "chosen": b if ok else w, "rejected": w if ok else b,
             "oracle_chosen": rb if ok else rw, "oracle_rejected": rw if ok else rb}
            for p, b, w, rb, rw, ok in zip(kept_prompts, best, worst, r_best, r_worst, a_best, strict=True)]
    summary = {"prompts": len(prompts), "pairs": len(rows), "label_error_rate": float(errors.mean()),
               "mean_reward_gap": float(np.mean(np.subtract(r_best, r_worst)))}
    return rows, summary


def tail_mean(metrics: list[dict[str, Any]], key: str) -> float | None:
    values = [m[key] for m in metrics if key in m and m.get("step", 0) > 0][-TAIL:]
    return float(np.mean(values)) if values else None


def train_and_evaluate(plan: DemoPlan, world: World, sft_dir: Path, data: Path, scratch: Path,
                       seed: int, weight: float | None, levels: int | None,
                       sample_levels: int | None) -> dict[str, Any]:
    """One training run (``weight`` None = plain DPO) and its held-out oracle rewards."""
    out = scratch / "model"
    cfg = TrainConfig(data=str(data), model=str(sft_dir), out=str(out), loss="sigmoid", beta=plan.beta,
                      spo=weight is not None, spo_weight=weight if weight is not None else 0.1,
                      spo_levels=levels if levels is not None else 4, spo_sample_levels=sample_levels,
                      lr=plan.lr, max_steps=plan.steps, batch_size=plan.batch_size,
                      max_length=plan.max_length, seed=seed, logging_steps=1,
                      cache_dir=str(scratch / "reference"), overwrite=True)
    cfg.validate()
    stamps: list[float] = []  # wall clock after each micro-batch: step time without setup/export
    t0 = time.perf_counter()
    train(cfg, on_batch=lambda step, indices: stamps.append(time.perf_counter()))
    train_s = time.perf_counter() - t0
    metrics = read_metrics(out / "metrics.jsonl")
    t0 = time.perf_counter()
    rewards = evaluate_run(out, plan, world, seed)
    eval_s = time.perf_counter() - t0
    shutil.rmtree(out)
    return {"seed": seed, "method": "dpo" if weight is None else "dpo+spo", "weight": weight,
            "levels": levels, "train_seconds": train_s, "eval_seconds": eval_s,
            "seconds_per_step": (stamps[-1] - stamps[0]) / max(1, len(stamps) - 1),
            "final": {k: tail_mean(metrics, k) for k in ("loss", "rewards/accuracies",
                                                         "rewards/margins", "spo/loss", "spo/accuracy")},
            "rewards": rewards.tolist()}


def interval(values: np.ndarray) -> list[float]:
    return list(bootstrap_interval(values, RESAMPLES, seed=0))


def summarise(runs: list[dict[str, Any]], sft: dict[int, np.ndarray]) -> list[dict[str, Any]]:
    """One row per setting, seeds pooled: win rate vs SFT, paired differences to plain DPO."""
    dpo = {r["seed"]: np.asarray(r["rewards"]) for r in runs if r["method"] == "dpo"}
    settings = list(dict.fromkeys((r["weight"], r["levels"]) for r in runs))
    rows = []
    for weight, levels in settings:
        mine = [r for r in runs if (r["weight"], r["levels"]) == (weight, levels)]
        rewards = [np.asarray(r["rewards"]) for r in mine]
        base = [sft[r["seed"]] for r in mine]
        ref = [dpo[r["seed"]] for r in mine]
        wins = np.concatenate([win_indicators(a, b) for a, b in zip(rewards, base, strict=True)])
        vs_dpo = np.concatenate([win_indicators(a, b) for a, b in zip(rewards, ref, strict=True)])
        d_wins = wins - np.concatenate([win_indicators(a, b) for a, b in zip(ref, base, strict=True)])
        d_reward = np.concatenate([a - b for a, b in zip(rewards, ref, strict=True)])
        row = {"method": mine[0]["method"], "weight": weight, "levels": levels, "seeds": len(mine),
               "spo_chance": 1 / (2 * levels) if levels else None,  # separate labels: 2D classes
               "win_rate": float(wins.mean()), "win_rate_ci": interval(wins),
               "per_seed_win_rate": [win_rate(a, b) for a, b in zip(rewards, base, strict=True)],
               "mean_reward": float(np.mean(np.concatenate(rewards))),
               "per_seed_mean_reward": [float(a.mean()) for a in rewards]}
        if weight is not None:
            row.update(win_rate_minus_dpo=float(d_wins.mean()), win_rate_minus_dpo_ci=interval(d_wins),
                       mean_reward_minus_dpo=float(d_reward.mean()),
                       mean_reward_minus_dpo_ci=interval(d_reward),
                       head_to_head_vs_dpo=float(vs_dpo.mean()), head_to_head_vs_dpo_ci=interval(vs_dpo),
                       # how far SPO moved the policy: held-out prompts whose reward differs from DPO's
                       changed_vs_dpo=float(np.mean([np.mean(a != b) for a, b in zip(rewards, ref, strict=True)])))
        for key in ("rewards/accuracies", "spo/accuracy", "spo/loss"):
            values = [r["final"][key] for r in mine if r["final"][key] is not None]
            row[key] = float(np.mean(values)) if values else None
        row["seconds_per_step"] = float(np.mean([r["seconds_per_step"] for r in mine]))
        rows.append(row)
    return rows


def fmt_ci(value: float, ci: list[float], digits: int = 3) -> str:
    return f"{value:+.{digits}f} [{ci[0]:+.{digits}f}, {ci[1]:+.{digits}f}]"


def table(rows: list[dict[str, Any]], sft_reward: float) -> str:
    """The summary table (Markdown)."""
    lines = ["| method | lambda | D | win rate vs SFT [95% CI] | mean reward | win rate - DPO [95% CI] "
             "| reward - DPO [95% CI] | head-to-head vs DPO [95% CI] | changed vs DPO | "
             "rewards/accuracies | spo/accuracy (chance) | s/step |", "|" + "---|" * 12]
    for r in rows:
        spo = r["weight"] is not None
        lines.append(" | ".join([
            f"| {r['method']}", f"{r['weight']:g}" if spo else "-", str(r["levels"]) if spo else "-",
            f"{r['win_rate']:.3f} [{r['win_rate_ci'][0]:.3f}, {r['win_rate_ci'][1]:.3f}]",
            f"{r['mean_reward']:.3f}",
            fmt_ci(r["win_rate_minus_dpo"], r["win_rate_minus_dpo_ci"]) if spo else "-",
            fmt_ci(r["mean_reward_minus_dpo"], r["mean_reward_minus_dpo_ci"]) if spo else "-",
            f"{r['head_to_head_vs_dpo']:.3f} [{r['head_to_head_vs_dpo_ci'][0]:.3f}, "
            f"{r['head_to_head_vs_dpo_ci'][1]:.3f}]" if spo else "-",
            f"{100 * r['changed_vs_dpo']:.1f}%" if spo else "-",
            f"{r['rewards/accuracies']:.3f}",
            f"{r['spo/accuracy']:.3f} ({r['spo_chance']:.3f})" if r["spo/accuracy"] is not None else "-",
            f"{r['seconds_per_step']:.2f} |"]))
    lines.append(f"\nSFT model's mean oracle reward: {sft_reward:.3f}.")
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", required=True, help="results directory (refused if it exists)")
    parser.add_argument("--overwrite", action="store_true", help="replace an existing --out")
    parser.add_argument("--seeds", type=int, default=3, help="seeds 0..N-1")
    parser.add_argument("--weights", default="0.03,0.1,0.3,1.0", help="lambda values, comma-separated")
    parser.add_argument("--levels", default="3,4,6", help="D values, comma-separated")
    parser.add_argument("--spo-sample-levels", type=int, default=TrainConfig.spo_sample_levels,
                        help="levels per response per step (default: realspo train's)")
    parser.add_argument("--train-prompts", type=int, default=400, help="training prompts (one pair each)")
    parser.add_argument("--test-prompts", type=int, default=200, help="held-out evaluation prompts")
    parser.add_argument("--steps", type=int, default=None, help="optimizer steps (default: the demo's)")
    parser.add_argument("--threads", type=int, default=1, help="torch threads")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s")
    for name in ("realspo", "accelerate", "transformers"):
        logging.getLogger(name).setLevel(logging.WARNING)
    torch.set_num_threads(args.threads)
    out = check_writable(args.out, args.overwrite)
    weights = [float(w) for w in args.weights.split(",")]
    levels = [int(d) for d in args.levels.split(",")]
    plan = replace(make_plan("default", seeds=args.seeds, device="cpu"),
                   n_train_prompts=args.train_prompts, n_test_prompts=args.test_prompts)
    if args.steps:
        plan = replace(plan, steps=args.steps)
    started = time.perf_counter()
    world = build_world(plan.world)
    sft_dir = get_sft_model(plan.world, plan.sft)
    runs: list[dict[str, Any]] = []
    sft: dict[int, np.ndarray] = {}
    data_summary = {}
    with atomic_dir(out, args.overwrite, kind="spo-defaults-experiment") as tmp, tempfile.TemporaryDirectory(prefix="spo-defaults-") as s:
        scratch = Path(s)
        for seed in plan.seeds:
            pairs, data_summary[seed] = build_pairs(world, plan, seed)
            data = write_rows(tmp / f"seed-{seed}" / "pairs.jsonl", pairs)
            texts = [p[k] for p in pairs for k in ("chosen", "rejected")]
            data_summary[seed]["graded_share"] = {  # responses the degree loss uses, per D
                d: variant_stats(precompute_variants(texts, SPOConfig(levels=d)))["graded"]
                / len(set(texts)) for d in levels}
            sft[seed] = evaluate_run(sft_dir, plan, world, seed)
            log.info("[%.0fs] seed %d: %s; SFT mean reward %.3f", time.perf_counter() - started, seed,
                     data_summary[seed], sft[seed].mean())
            grid = [(None, None)] + [(w, d) for d in levels for w in weights]
            for weight, d in grid:
                run = train_and_evaluate(plan, world, sft_dir, data, scratch, seed, weight, d,
                                         args.spo_sample_levels)
                runs.append(run)
                log.info("[%.0fs] seed %d %s lambda=%s D=%s: win rate vs SFT %.3f, mean reward %.3f, "
                         "final %s, %.2f s/step, eval %.0fs", time.perf_counter() - started, seed,
                         run["method"], weight, d, win_rate(run["rewards"], sft[seed]),
                         np.mean(run["rewards"]), {k: v and round(v, 3) for k, v in run["final"].items()},
                         run["seconds_per_step"], run["eval_seconds"])
        rows = summarise(runs, sft)
        sft_reward = float(np.mean(np.concatenate(list(sft.values()))))
        write_rows(tmp / "runs.jsonl", runs)
        (tmp / "table.md").write_text(table(rows, sft_reward), encoding="utf-8")
        write_json(tmp / "results.json", {
            "summary": rows, "sft_mean_reward": sft_reward,
            "sft_per_seed_mean_reward": {s: float(r.mean()) for s, r in sft.items()},
            "sft_rewards": {s: r.tolist() for s, r in sft.items()},
            "data": data_summary, "plan": asdict(plan), "grid": {"weights": weights, "levels": levels},
            "spo_sample_levels": args.spo_sample_levels, "torch_threads": torch.get_num_threads(),
            "machine": {"platform": platform.platform(), "processor": platform.processor(),
                        "cpu_count": os.cpu_count(), "torch": torch.__version__},
            "wall_seconds": time.perf_counter() - started})
    log.info("[%.0fs] wrote %s\n%s", time.perf_counter() - started, out, table(rows, sft_reward))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
