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
``verdicts``, ``reward_proxy``, ``settings`` (setting -> arm -> win rate, interval, labels,
``vs_random``, ``share_of_ceiling``), ``rounds_vs_one_round``, ``label_efficiency``, ``runs``,
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
from realspo.evaluation.evaluate import win_indicators
from realspo.evaluation.multiple_comparisons import (
    RULE,
    add_power,
    adjust_family,
    direction,
    p_text,
)
from realspo.evaluation.statistics import hierarchical_bootstrap, mde_text
from realspo.leaderboard.plan import SETTINGS, ArmRecord, LeaderboardRun
from realspo.outputs import atomic_path, write_json

FIGURES = ("label_efficiency.png", "win_rates.png")
SMOKE = "smoke run: no verdicts (the --quick sizes cannot support any)"


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


def win_summary(lb: LeaderboardRun, runs: list[ArmRecord]) -> dict[str, Any]:
    """Pooled win rate vs SFT of one arm's runs (one per seed), with its hierarchical interval."""
    w = hierarchical_bootstrap([_wins(lb, r) for r in runs], lb.plan.demo.bootstrap_resamples, seed=0)
    ordered = sum(r.labels["n_ordered"] for r in runs)
    return {"win_rate": w["estimate"], "ci_low": w["ci_low"], "ci_high": w["ci_high"],
            "se": w["se"], "mde": w["mde"],
            "n_labels": [r.cumulative_labels for r in runs],
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
    demo = plan_dict(plan.demo)
    return {
        "config": {"preset": plan.preset, "rounds": plan.rounds, "arms": list(plan.arms),
                   "reward_prompts": plan.reward_prompts, "demo": demo},
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
        "reward_proxy": {str(s): v for s, v in lb.proxy.items()},
        "settings": settings,
        "rounds_vs_one_round": rounds_vs_one,
        "label_efficiency": label_efficiency(lb),
        "runs": [{k: v for k, v in asdict(r).items() if k != "rewards"}
                 | {"win_rate": float(_wins(lb, r).mean()), "mean_reward": float(r.rewards.mean())}
                 for r in lb.records],
        "timings_seconds": {k: round(v, 1) for k, v in lb.timings.items()},
    }


# ---------------------------------------------------------------------------------------


def _f(x: float | None, digits: int = 3, sign: bool = False) -> str:
    if x is None or not np.isfinite(x):
        return "n/a"
    return f"{x:+.{digits}f}" if sign else f"{x:.{digits}f}"


def _ci(d: dict[str, Any], key: str = "difference", sign: bool = True) -> str:
    return f"{_f(d[key], sign=sign)} [{_f(d['ci_low'], sign=sign)}, {_f(d['ci_high'], sign=sign)}]"


def _tests(d: dict[str, Any] | None) -> str:
    """``p | Holm p | BH q | power | seeds for 0.8`` cells of one comparison."""
    if not d:
        return "- | - | - | - | -"
    return (f"{_f(d.get('p'))} | {_f(d.get('p_holm'))} | {_f(d.get('q_bh'))} | "
            f"{_f(d.get('power'), 2)} | {d.get('seeds_for_power') or 'n/a'}")


def _family_line(stats: dict[str, Any]) -> str:
    family = stats.get("family") or {}
    return (f"Outcome: {stats.get('outcome', 'win rate vs SFT')}. The family: every comparison "
            f"below ({family.get('size', 0)}: each arm minus random in both settings, each arm's "
            f"rounds minus one round), adjusted by Holm and Benjamini-Hochberg; "
            f"{stats.get('rule', RULE)}. Power: to detect {family.get('reference', 'n/a')} "
            "(noncentral t, seeds - 1 df; normal with one seed); seeds for 0.8 from the SD over "
            "seeds of the per-seed differences.")


NOTES = """## How to read it

- **Equal budgets, equal compute.** Every arm labels the same pairs count, one pair per prompt.
  A run trains `steps x labels / B` optimizer steps, so the rounds together take the one-round
  run's steps, and round 1 *is* a one-round run at budget B_1 (the curve's first point).
- **Rounds.** Round r samples K candidates from the current policy for the prompts no earlier
  round labelled, selects this round's share, labels it with the simulated annotator and trains
  from the previous round's policy, which is also the round's DPO reference (iterative DPO).
- **Margins.** `margin`, `margin-large` (and `design`'s weights from round 2) read
  `beta (log pi_{r-1} - log pi_{r-2})`, the current policy against the reference it was trained
  with. In one round and in round 1 the policy is the reference: every margin is 0, both
  strategies fall to the registry's tie order (each prompt's first valid pair, prompts in data
  order) and pick the same pairs.
- **Reward proxy.** `reward-gap` and `reward-uncertain` read a linear Bradley-Terry reward
  model fitted to simulated labels of spare prompts (not the oracle, which would make
  `reward-gap` the `ceiling`); its accuracy is in the last table.
- **Controls.** `ceiling`: the oracle's largest-gap pair per prompt, annotator's labels;
  `noiseless`: random's pairs with the oracle's labels.
"""


def findings(results: dict[str, Any]) -> list[str]:
    """One line per setting: which arms beat random (Holm-adjusted p < 0.05 in the report's
    family), which did not; the positive control; rounds against one round."""
    if not results["verdicts"]:
        return [SMOKE]
    lines = []
    for setting, rows in results["settings"].items():
        c = rows.get("ceiling", {}).get("vs_random")
        if c:
            ok = direction(c) == "better"
            lines.append(f"{setting}: the positive control `ceiling` minus random {_ci(c)} "
                         f"(mde {_f(c['mde'])}, {p_text(c)}): " + ("the run can show a selection effect of "
                                                      "about this size" if ok else
                                                      "not significant after Holm, so this run "
                                                      "cannot show "
                                                      "a selection effect even at the ceiling"))
    rounds = results["rounds_vs_one_round"]
    better = [a for a, d in rounds.items() if direction(d) == "better"]
    worse = [a for a, d in rounds.items() if direction(d) == "worse"]
    lines.append(f"rounds minus one round (same arm, labels, steps): better for "
                 f"{', '.join(better) or 'none'}, worse for {', '.join(worse) or 'none'}.")
    for setting, rows in results["settings"].items():
        better = [a for a, r in rows.items() if "vs_random" in r and direction(r["vs_random"]) == "better"]
        worse = [a for a, r in rows.items() if "vs_random" in r and direction(r["vs_random"]) == "worse"]
        mdes = [r["vs_random"]["mde"] for r in rows.values() if "vs_random" in r]
        lines.append(f"{setting}: significantly better than random: {', '.join(better) or 'none'}; "
                     f"significantly worse: {', '.join(worse) or 'none'}; the rest are "
                     f"indistinguishable from random at this size (mde of a difference "
                     f"{_f(min(mdes))}-{_f(max(mdes))})." if mdes else f"{setting}: no comparison")
    return lines


def render(results: dict[str, Any]) -> str:
    b = results["budgets"]
    lines = ["# Strategy leaderboard (proving ground)", "",
             f"Preset `{results['config']['preset']}`, seeds {results['config']['demo']['seeds']}; "
             f"every arm labels {b['total_labels']} pairs: in one round ({b['steps_one_round']} steps) "
             f"or in {results['config']['rounds']} rounds of {b['round_labels']} "
             f"({b['steps_per_round']} steps). Win rate = against the SFT model on "
             f"{results['config']['demo']['n_test_prompts']} held-out prompts; intervals: "
             f"{results['statistics']['interval']}; mde = {results['statistics']['mde']}. "
             + _family_line(results["statistics"]), "",
             "## Findings", ""] + [f"- {line}" for line in findings(results)] + [""]
    for setting, rows in results["settings"].items():
        last = " (last round's pairs)" if setting == "rounds" else ""
        lines += [f"## {setting}", "",
                  "| arm | win rate vs SFT [95%] | minus random [95%] | mde | p | Holm p | BH q "
                  "| power (ceiling's gain) | seeds for 0.8 | share of ceiling [95%] "
                  f"| label errors{last} | mean oracle gap{last} |",
                  "|---|---|---|---|---|---|---|---|---|---|---|---|"]
        for arm, r in rows.items():
            vs = r.get("vs_random")
            sh = r.get("share_of_ceiling")
            lines.append(f"| {arm} | {_ci(r, 'win_rate', False)} | {_ci(vs) if vs else '-'} | "
                         f"{_f(vs['mde']) if vs else '-'} | {_tests(vs)} | "
                         f"{_ci(sh, 'estimate') if sh else '-'} | "
                         f"{_f(r['label_error_rate'])} | {_f(r['mean_reward_gap'], 2)} |")
        lines.append("")
    lines += ["## Label efficiency (win rate vs SFT after each round; one round at the full budget)", "",
              "| arm | " + " | ".join(f"round {i + 1}: {sum(b['round_labels'][:i + 1])} labels"
                                     for i in range(len(b["round_labels"])))
              + f" | one round: {b['total_labels']} labels |",
              "|---" * (len(b["round_labels"]) + 2) + "|"]
    for arm, curve in results["label_efficiency"].items():
        one = curve["one_round"][-1] if curve["one_round"] else None
        lines.append(f"| {arm} | " + " | ".join(_ci(p, "win_rate", False) for p in curve["rounds"])
                     + f" | {_ci(one, 'win_rate', False) if one else '-'} |")
    lines.append("")
    lines += ["## Rounds minus one round (same arm, same labels, same steps)", "",
              "| arm | difference [95%] | mde | p | Holm p | BH q | power (ceiling's gain) "
              "| seeds for 0.8 |", "|---|---|---|---|---|---|---|---|"]
    lines += [f"| {arm} | {_ci(d)} | {_f(d['mde'])} | {_tests(d)} |"
              for arm, d in results["rounds_vs_one_round"].items()]
    lines += ["", "## Reward proxy (reward-gap, reward-uncertain)", "",
              "| seed | pairs fitted | ridge | agreement with its labels | oracle accuracy on the "
              "candidates |", "|---|---|---|---|---|"]
    for seed, p in results["reward_proxy"].items():
        lines.append(f"| {seed} | {p['pairs']} | {p['ridge']:g} | {_f(p['label_agreement'])} | "
                     f"{_f(p['on_candidates']['oracle_accuracy'])} |")
    lines += ["", NOTES, "![label efficiency](label_efficiency.png)", "", "![win rates](win_rates.png)", "",
              "Stage timings (s): " + ", ".join(f"{k} {v:.0f}" for k, v in results["timings_seconds"].items()),
              ""]
    return "\n".join(lines)


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
