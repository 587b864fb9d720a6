"""The numbers, figures and report of ``realspo leaderboard`` (:mod:`realspo.leaderboard.run`)::

    report.md             the tables and findings
    results.json          every number (keys below)
    label_efficiency.png  win rate against labels: one line per arm through its R rounds'
                          cumulative labels (round 1 is also the one-round run at B_1),
                          the one-round run at the full budget as an open marker
    win_rates.png         win rate vs SFT per arm, both settings, 95% intervals

Statistics are the demo's (:mod:`realspo.evaluation.statistics`): a model's win rate over the
SFT model pools its seeds with a hierarchical bootstrap (seeds, then prompts within a seed);
a difference to ``random`` is paired (same prompts, same sampling noise) and carries its se,
mde (t-based with seeds - 1 df, 2.80 x se with one seed) and bootstrap p. The family is every
comparison the report judges (each arm minus random in both settings, each arm's rounds minus
one round), adjusted by Holm and Benjamini-Hochberg; "significant" means Holm p < 0.05
(:mod:`realspo.evaluation.multiple_comparisons`); each carries its power to detect the
setting's ``ceiling - random`` (the one-round setting's for rounds minus one round); the share of the ceiling is ``(arm - random) / (ceiling - random)`` of the win
rates, divided per resample. ``results.json``: ``config``, ``budgets``, ``statistics``,
``verdicts``, ``reward_proxy`` (per proxy arm, setting and round: labels fitted on, ridge,
accuracy), ``settings`` (setting -> arm -> win rate, interval, ``n_labels`` (every label the
arm paid for, per seed), ``proxy_fit_labels`` (those spent fitting its reward proxy, proxy
arms only), ``vs_random``, ``share_of_ceiling``), ``rounds_vs_one_round``, ``label_efficiency``, ``runs``,
``timings_seconds``.
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import asdict
from pathlib import Path
from typing import Any

import numpy as np

from realspo.arms.analysis import without_mde
from realspo.arms.plan import plan_dict
from realspo.arms.premise_check import pooled_spearman
from realspo.evaluation.evaluate import win_indicators
from realspo.evaluation.multiple_comparisons import (
    RULE,
    add_power,
    adjust_family,
    direction,
)
from realspo.evaluation.statistics import hierarchical_bootstrap, mde_text
from realspo.leaderboard.markdown import render
from realspo.leaderboard.plan import SETTINGS, ArmRecord, LeaderboardRun
from realspo.outputs import atomic_path, write_json

FIGURES = ("label_efficiency.png", "win_rates.png")


def _final(lb: LeaderboardRun) -> dict[tuple[str, str], list[ArmRecord]]:
    """(setting, arm) -> the records that spent the whole budget (one per seed)."""
    last = {"one-round": 1, "rounds": lb.plan.rounds}
    out: dict[tuple[str, str], list[ArmRecord]] = defaultdict(list)
    for r in lb.records:
        if r.round == last[r.setting]:
            out[r.setting, r.arm].append(r)
    return {k: sorted(v, key=lambda r: r.seed) for k, v in out.items()}


def _wins(lb: LeaderboardRun, r: ArmRecord) -> np.ndarray:
    return win_indicators(r.rewards, lb.baseline[r.seed])


def proxy_fit_labels(lb: LeaderboardRun, run: ArmRecord) -> int | None:
    """The labels ``run``'s arm spent on random pairs to fit its reward proxy, up to and
    including ``run`` (None: the arm has no proxy). They are part of ``cumulative_labels``."""
    spent = [r.extra["fit_labels"] for r in lb.records
             if (r.seed, r.arm, r.setting) == (run.seed, run.arm, run.setting)
             and r.round <= run.round and "fit_labels" in r.extra]
    return sum(spent) if spent else None


def win_summary(lb: LeaderboardRun, runs: list[ArmRecord]) -> dict[str, Any]:
    """Pooled win rate vs SFT of one arm's runs (one per seed), with its hierarchical interval,
    and the labels each paid for (a proxy arm's fitting labels included)."""
    w = hierarchical_bootstrap([_wins(lb, r) for r in runs], lb.plan.demo.bootstrap_resamples, seed=0)
    ordered = sum(r.labels["n_ordered"] for r in runs)
    fitted = [proxy_fit_labels(lb, r) for r in runs]
    return {"win_rate": w["estimate"], "ci_low": w["ci_low"], "ci_high": w["ci_high"],
            "se": w["se"], "mde": w["mde"],
            "n_labels": [r.cumulative_labels for r in runs],
            "proxy_fit_labels": None if None in fitted else fitted,
            "label_error_rate": sum(r.labels["n_errors"] for r in runs) / ordered if ordered else None,
            "mean_reward_gap": float(np.mean([r.labels["mean_reward_gap"] or 0.0 for r in runs])),
            "per_seed": [float(_wins(lb, r).mean()) for r in runs]}


def paired(lb: LeaderboardRun, a: list[ArmRecord], b: list[ArmRecord], seed: int = 2) -> dict[str, Any]:
    """Win rate of ``a`` minus ``b`` (paired per seed and prompt), hierarchical interval, mde."""
    other = {r.seed: r for r in b}
    diffs = [_wins(lb, r) - _wins(lb, other[r.seed]) for r in a]
    d = hierarchical_bootstrap(diffs, lb.plan.demo.bootstrap_resamples, seed=seed)
    return {"difference": d["estimate"], "ci_low": d["ci_low"], "ci_high": d["ci_high"],
            "se": d["se"], "mde": d["mde"], "p": d["p"], "per_seed": [float(x.mean()) for x in diffs]}


def judge(settings: dict[str, dict[str, Any]], rounds_vs_one: dict[str, dict[str, Any]],
          seeds: int) -> dict[str, Any]:
    """Adjust the family of every judged comparison, mark ``significant`` (Holm p < 0.05) and
    add power to detect the setting's ceiling gain (in place); returns the family's description.

    Args:
        settings: setting -> arm -> row (``vs_random`` where the arm has one).
        rounds_vs_one: arm -> rounds minus one round.
        seeds: number of seeds.

    Returns:
        ``{"size", "comparisons", "reference"}``.
    """
    named = [(f"{setting}: {arm} - random", setting, r["vs_random"])
             for setting, rows in settings.items() for arm, r in rows.items() if "vs_random" in r]
    named += [(f"{arm}: rounds - one round", "one-round", d) for arm, d in rounds_vs_one.items()]
    adjust_family([e for _, _, e in named], "win_rate")
    for _, setting, e in named:
        ceiling = settings.get(setting, {}).get("ceiling", {}).get("vs_random")
        add_power(e, ceiling["difference"] if ceiling else None, seeds)
        e["significant"] = direction(e) is not None
    return {"size": len(named), "comparisons": [n for n, _, _ in named],
            "reference": "the setting's ceiling - random (one-round's for rounds - one round)"}


def share(lb: LeaderboardRun, runs: list[ArmRecord], random: list[ArmRecord],
          ceiling: list[ArmRecord]) -> dict[str, float]:
    """``(arm - random) / (ceiling - random)`` with its hierarchical interval."""
    rnd, ceil = {r.seed: r for r in random}, {r.seed: r for r in ceiling}
    cols = [np.stack([_wins(lb, r) - _wins(lb, rnd[r.seed]),
                      _wins(lb, ceil[r.seed]) - _wins(lb, rnd[r.seed])], axis=1) for r in runs]
    return without_mde(hierarchical_bootstrap(cols, lb.plan.demo.bootstrap_resamples, seed=3,
                                              statistic=lambda m: m[..., 0] / m[..., 1]))


def label_efficiency(lb: LeaderboardRun) -> dict[str, dict[str, list[dict[str, Any]]]]:
    """arm -> {"rounds": [cumulative labels, win rate, interval] per round, "one_round": the
    round-1 run (a one-round run at B_1) and the one-round run at B}."""
    by: dict[tuple[str, str, int], list[ArmRecord]] = defaultdict(list)
    for r in lb.records:
        by[r.arm, r.setting, r.round].append(r)
    out: dict[str, dict[str, list[dict[str, Any]]]] = {}

    def point(runs: list[ArmRecord]) -> dict[str, Any]:
        s = win_summary(lb, sorted(runs, key=lambda r: r.seed))
        return {"labels": float(np.mean(s["n_labels"])), "win_rate": s["win_rate"],
                "ci_low": s["ci_low"], "ci_high": s["ci_high"]}

    for arm in lb.plan.arms:
        rounds = [point(by[arm, "rounds", r]) for r in range(1, lb.plan.rounds + 1) if by[arm, "rounds", r]]
        one = [rounds[0]] if rounds and lb.plan.rounds > 1 else []
        if by[arm, "one-round", 1]:
            one.append(point(by[arm, "one-round", 1]))
        out[arm] = {"rounds": rounds, "one_round": one}
    return out


PROXY_LABELS = ("paid from the arm's budget: half of each selection (rounded up) on random pairs "
                "to fit the proxy, the rest picked by it; the proxy refits on every label the arm "
                "has paid for; the arm trains on all of them")


def reward_proxy_summary(lb: LeaderboardRun) -> dict[str, dict[str, list[dict[str, Any]]]]:
    """arm -> setting -> per round: the labels the proxy was fitted on, the ridges chosen and
    its accuracy against the oracle on that round's candidates, averaged over seeds."""
    by: dict[tuple[str, str, int], list[dict[str, Any]]] = defaultdict(list)
    for r in lb.records:
        if "proxy" in r.extra:
            by[r.arm, r.setting, r.round].append(r.extra["proxy"])
    out: dict[str, dict[str, list[dict[str, Any]]]] = defaultdict(dict)
    for (arm, setting, round_), fits in sorted(by.items()):
        accuracy = [f["oracle_accuracy"] for f in fits if f["oracle_accuracy"] is not None]
        agreement = [f["label_agreement"] for f in fits if f["label_agreement"] is not None]
        out[arm].setdefault(setting, []).append({
            "round": round_, "pairs_fitted": float(np.mean([f["pairs"] for f in fits])),
            "ridges": [f["ridge"] for f in fits],
            "label_agreement": float(np.mean(agreement)) if agreement else None,
            "oracle_accuracy": float(np.mean(accuracy)) if accuracy else None})
    return dict(out)


def analyse_leaderboard(lb: LeaderboardRun) -> dict[str, Any]:
    """Every number of the report, JSON-ready."""
    plan, final = lb.plan, _final(lb)
    settings: dict[str, dict[str, Any]] = {}
    for setting in SETTINGS:
        rows = {}
        for arm in plan.arms:
            if (setting, arm) not in final:
                continue
            row = win_summary(lb, final[setting, arm])
            if arm != "random" and (setting, "random") in final:
                row["vs_random"] = paired(lb, final[setting, arm], final[setting, "random"])
                if arm != "ceiling" and (setting, "ceiling") in final:
                    row["share_of_ceiling"] = share(lb, final[setting, arm], final[setting, "random"],
                                                    final[setting, "ceiling"])
            rows[arm] = row
        settings[setting] = rows
    rounds_vs_one = {arm: paired(lb, final["rounds", arm], final["one-round", arm], seed=4)
                     for arm in plan.arms if ("rounds", arm) in final and ("one-round", arm) in final}
    family = judge(settings, rounds_vs_one, len(plan.demo.seeds))
    check = pooled_spearman(lb.premise, plan.demo.bootstrap_resamples) if lb.premise else None
    for rows in settings.values():  # REAL's verdict only where its premise holds
        if "vs_random" in rows.get("easy", {}) and not (check and check["holds"]):
            rows["easy"]["vs_random"]["significant"] = False
            rows["easy"]["vs_random"]["withheld"] = True
    demo = plan_dict(plan.demo)
    return {
        "premise_check": check,
        "config": {"preset": plan.preset, "rounds": plan.rounds, "arms": list(plan.arms),
                   "reward_proxy_labels": PROXY_LABELS, "demo": demo},
        "budgets": {"total_labels": plan.total_labels, "round_labels": plan.round_budgets(),
                    "steps_one_round": plan.steps_for(plan.total_labels),
                    "steps_per_round": [plan.steps_for(b) for b in plan.round_budgets()]},
        "statistics": {"interval": "hierarchical percentile bootstrap, 95%: resample seeds, then "
                                   "prompts within each drawn seed",
                       "resamples": plan.demo.bootstrap_resamples, "seeds": len(plan.demo.seeds),
                       "mde": mde_text(len(plan.demo.seeds)), "rule": RULE, "family": family,
                       "outcome": "win rate vs SFT (the leaderboard draws one sample per "
                                  "held-out prompt)"},
        "verdicts": plan.preset != "quick",
        "sft_mean_reward": {str(s): float(b.mean()) for s, b in lb.baseline.items()},
        "reward_proxy": reward_proxy_summary(lb),
        "settings": settings,
        "rounds_vs_one_round": rounds_vs_one,
        "label_efficiency": label_efficiency(lb),
        "runs": [{k: v for k, v in asdict(r).items() if k != "rewards"}
                 | {"win_rate": float(_wins(lb, r).mean()), "mean_reward": float(r.rewards.mean())}
                 for r in lb.records],
        "timings_seconds": {k: round(v, 1) for k, v in lb.timings.items()},
    }


# ---------------------------------------------------------------------------------------


def _figures(results: dict[str, Any], out: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    def save(fig: Any, path: Path) -> None:
        fig.tight_layout()
        with atomic_path(path, overwrite=True) as tmp:
            fig.savefig(tmp, format="png", dpi=110, metadata={"Software": None})
        plt.close(fig)

    arms = list(results["label_efficiency"])
    cmap = plt.get_cmap("tab20")
    fig, ax = plt.subplots(figsize=(8, 5))
    for i, arm in enumerate(arms):
        curves = results["label_efficiency"][arm]
        color = cmap(i % 20)
        pts = curves["rounds"]
        ax.plot([p["labels"] for p in pts], [p["win_rate"] for p in pts], "o-", color=color, label=arm)
        one = curves["one_round"]
        ax.plot([p["labels"] for p in one], [p["win_rate"] for p in one], "--", color=color, alpha=0.6)
        if one:
            ax.plot([one[-1]["labels"]], [one[-1]["win_rate"]], "s", mfc="none", color=color, ms=8)
    ax.axhline(0.5, color="black", lw=0.8)
    ax.set_xlabel("labels (cumulative)")
    ax.set_ylabel("win rate vs SFT")
    ax.set_title("solid: rounds (points after each round); dashed/open square: one round")
    ax.legend(fontsize=7, ncol=2)
    save(fig, out / "label_efficiency.png")

    fig, ax = plt.subplots(figsize=(8, 5))
    for k, (setting, rows) in enumerate(results["settings"].items()):
        names = list(rows)
        y = np.arange(len(names)) + (0.2 if k else -0.2)
        wr = np.array([rows[a]["win_rate"] for a in names])
        lo = wr - np.array([rows[a]["ci_low"] for a in names])
        hi = np.array([rows[a]["ci_high"] for a in names]) - wr
        ax.errorbar(wr, y, xerr=[lo, hi], fmt="o", capsize=3, label=setting)
        ax.set_yticks(np.arange(len(names)), names)
    ax.axvline(0.5, color="black", lw=0.8)
    ax.set_xlabel("win rate vs SFT (95% hierarchical interval)")
    ax.legend()
    save(fig, out / "win_rates.png")


def write_leaderboard_report(lb: LeaderboardRun, out: Path) -> dict[str, Any]:
    """results.json, report.md and the figures into ``out``."""
    results = analyse_leaderboard(lb)
    write_json(out / "results.json", results, overwrite=True)
    _figures(results, out)
    with atomic_path(out / "report.md", overwrite=True) as tmp:
        tmp.write_text(render(results), encoding="utf-8")
    return results


def rebuild_report(out: str | Path) -> dict[str, Any]:
    """Rewrite the report of the finished run in ``out`` from its ``runs.json`` (no rerun)."""
    from realspo.leaderboard.plan import load_run

    return write_leaderboard_report(load_run(out), Path(out))
