"""The text of ``realspo leaderboard``'s report: its findings and report.md, from the numbers
of :func:`realspo.leaderboard.report.analyse_leaderboard` (``results.json``)."""

from __future__ import annotations

from typing import Any

import numpy as np

from realspo.arms.premise_check import WITHHELD, premise_line
from realspo.evaluation.multiple_comparisons import RULE, direction, p_text

SMOKE = "smoke run: no verdicts (the --quick sizes cannot support any)"


def _f(x: float | None, digits: int = 3, sign: bool = False) -> str:
    if x is None or not np.isfinite(x):
        return "n/a"
    return f"{x:+.{digits}f}" if sign else f"{x:.{digits}f}"


def _ci(d: dict[str, Any], key: str = "difference", sign: bool = True) -> str:
    return f"{_f(d[key], sign=sign)} [{_f(d['ci_low'], sign=sign)}, {_f(d['ci_high'], sign=sign)}]"


def _labels(row: dict[str, Any]) -> str:
    """Every label the arm paid for (one number when the seeds agree), and those spent fitting
    its proxy."""
    total = sorted(set(row["n_labels"]))
    text = "/".join(str(n) for n in total)
    fitted = row.get("proxy_fit_labels")
    return f"{text} ({'/'.join(str(n) for n in sorted(set(fitted)))})" if fitted else text


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
  model (not the oracle, which would make `reward-gap` the `ceiling`) fitted to labels paid
  from their own budget: half of each selection (rounded up) goes to random pairs labelled by
  the same simulated annotator, the proxy is fitted to every label the arm has paid for (in
  rounds: earlier rounds' too) and picks the rest; the arm trains on all of them. Every arm's
  labels, fitting included, are the `labels` column; the proxy's fits are in the last table.
- **Controls.** `ceiling`: the oracle's largest-gap pair per prompt, annotator's labels;
  `noiseless`: random's pairs with the oracle's labels.
"""


def findings(results: dict[str, Any]) -> list[str]:
    """One line per setting: which arms beat random (Holm-adjusted p < 0.05 in the report's
    family), which did not; the positive control; rounds against one round."""
    if not results["verdicts"]:
        return [SMOKE]
    lines = [premise_line(results.get("premise_check"))] if "premise_check" in results else []
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
        judged = {a: r["vs_random"] for a, r in rows.items()
                  if "vs_random" in r and not r["vs_random"].get("withheld")}
        better = [a for a, e in judged.items() if direction(e) == "better"]
        worse = [a for a, e in judged.items() if direction(e) == "worse"]
        mdes = [r["vs_random"]["mde"] for r in rows.values() if "vs_random" in r]
        held = [a for a, r in rows.items() if r.get("vs_random", {}).get("withheld")]
        lines.append(f"{setting}: significantly better than random: {', '.join(better) or 'none'}; "
                     f"significantly worse: {', '.join(worse) or 'none'}; the rest are "
                     f"indistinguishable from random at this size (mde of a difference "
                     f"{_f(min(mdes))}-{_f(max(mdes))})"
                     + (f"; {', '.join(held)}: {WITHHELD}" if held else "") + "."
                     if mdes else f"{setting}: no comparison")
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
                  "| arm | labels (fitting a proxy) | win rate vs SFT [95%] | minus random [95%] | mde "
                  "| p | Holm p | BH q | power (ceiling's gain) | seeds for 0.8 | share of ceiling [95%] "
                  f"| label errors{last} | mean oracle gap{last} |",
                  "|---|---|---|---|---|---|---|---|---|---|---|---|---|"]
        for arm, r in rows.items():
            vs = r.get("vs_random")
            sh = r.get("share_of_ceiling")
            lines.append(f"| {arm} | {_labels(r)} | {_ci(r, 'win_rate', False)} | {_ci(vs) if vs else '-'} | "
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
    lines += ["", "## Reward proxy (reward-gap, reward-uncertain; mean over seeds)", "",
              "| arm | setting | round | labels fitted on | ridges | agreement with its labels "
              "| oracle accuracy on the candidates |", "|---|---|---|---|---|---|---|"]
    for arm, settings in results["reward_proxy"].items():
        for setting, fits in settings.items():
            lines += [f"| {arm} | {setting} | {p['round']} | {p['pairs_fitted']:g} | "
                      f"{', '.join(f'{x:g}' for x in p['ridges'])} | {_f(p['label_agreement'])} | "
                      f"{_f(p['oracle_accuracy'])} |" for p in fits]
    lines += ["", NOTES, "![label efficiency](label_efficiency.png)", "", "![win rates](win_rates.png)", "",
              "Stage timings (s): " + ", ".join(f"{k} {v:.0f}" for k, v in results["timings_seconds"].items()),
              ""]
    return "\n".join(lines)
