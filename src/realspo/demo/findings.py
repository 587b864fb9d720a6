"""What the numbers of ``realspo demo`` say: plain statements computed from ``results.json``.

Rules: every difference is quoted with its hierarchical 95% interval, its minimum
detectable effect (mde) and its raw, Holm-adjusted and Benjamini-Hochberg p; "significant"
means Holm-adjusted p < 0.05 within the comparison's family (one family per outcome, see
:mod:`realspo.arms.verdicts`); each verdict is stated on the primary outcome (mean oracle
reward over the samples per held-out prompt) first and the win rate after, with its power to
detect the ceiling's gain. A ``--quick`` run (``results["verdicts"]`` false) is a smoke test
and gets no verdicts at all.
"""

from __future__ import annotations

from typing import Any

from realspo.arms.premise_check import WITHHELD, premise_line, withheld
from realspo.evaluation.multiple_comparisons import direction, p_text, power_text

SMOKE = ("smoke run: no verdicts. A --quick run has one seed, a tiny SFT model and a few "
         "training steps; its numbers only show that every stage ran.")


def _ci(p: dict[str, Any]) -> str:
    return f"{p['win_rate']:.3f} [{p['ci_low']:.3f}, {p['ci_high']:.3f}]"


def _diff(c: dict[str, Any]) -> str:
    return (f"{c['difference']:+.3f} [{c['ci_low']:+.3f}, {c['ci_high']:+.3f}], mde {c['mde']:.3f}, "
            f"{p_text(c)}")


def verdict(c: dict[str, Any]) -> str:
    """``significantly better``/``worse`` when the Holm-adjusted p is below 0.05, else
    inconclusive."""
    found = direction(c)
    return f"significantly {found}" if found else "inconclusive (Holm-adjusted p >= 0.05)"


NAMES = {"win_rate": "win rate", "mean_reward_samples": "mean reward over the samples",
         "implicit_reward_accuracy": "implicit-reward accuracy"}


def primary_outcome(results: dict[str, Any]) -> str:
    """The key of the primary outcome (``win_rate`` for results that predate it)."""
    return results.get("statistics", {}).get("primary_outcome") or "win_rate"


def on_outcome(c: dict[str, Any], outcome: str) -> dict[str, Any] | None:
    """A comparison's numbers on one outcome (the win rate's are the comparison itself)."""
    return c if outcome == "win_rate" else c.get(outcome)


def _judged(e: dict[str, Any]) -> str:
    power = power_text(e, "the ceiling's gain")
    return f"{_diff(e)}: {verdict(e)}" + (f" ({power})" if power else "")


def judged(results: dict[str, Any], c: dict[str, Any]) -> str:
    """A comparison's verdict on the primary outcome, then the win rate (secondary); for a
    comparison of REAL's selection where its premise does not hold, the numbers and p-values
    with no verdict (:func:`realspo.arms.premise_check.withheld`)."""
    first = primary_outcome(results)
    if withheld(results, c):
        e = on_outcome(c, first)
        parts = [f"{NAMES[first]} (primary) {_diff(e)}"]
        if first != "win_rate":
            parts.append(f"win rate {_diff(c)}")
        return "; ".join(parts) + f": {WITHHELD}"
    parts = [f"{NAMES[first]} (primary) {_judged(on_outcome(c, first))}"]
    if first != "win_rate":
        parts.append(f"win rate (secondary) {_judged(c)}")
    return "; ".join(parts)


def _share(s: dict[str, Any]) -> str:
    return f"{s['estimate']:+.2f} [{s['ci_low']:+.2f}, {s['ci_high']:+.2f}]"


def _rate(value: float | None) -> str:
    return "n/a" if value is None else f"{value:.3f}"


def findings(results: dict[str, Any]) -> list[str]:
    """Plain statements, each computed from the numbers it quotes (none for a smoke run)."""
    if not results.get("verdicts", True):
        return [SMOKE]
    out: list[str] = [premise_line(results.get("premise_check")), _training(results)]
    comps = {(c["a"], c["b"]): c for c in results["comparisons"]}
    out += _controls(results, comps)
    main, losses = results["main"], results["config"]["losses"]
    for loss in losses:
        c = comps.get((f"easy/{loss}", f"random/{loss}"))
        if c is None:
            continue
        out.append(f"REAL (easy) vs random, {loss}: {judged(results, c)}; win rates "
                   f"{_ci(main['easy'][loss])} vs {_ci(main['random'][loss])}.")
        others = [f"{s}: {judged(results, comps[f'{s}/{loss}', f'random/{loss}'])}"
                  for s in main if s not in ("easy", "random") and (f"{s}/{loss}", f"random/{loss}") in comps]
        if others:
            out.append(f"Other strategies vs random, {loss}: " + "; ".join(others) + ".")
    out += _outcomes(results)
    out += _spo(results, comps)
    deciles = [d for d in results["label_error_by_similarity"] if d["label_error_rate"] is not None]
    if len(deciles) >= 2 and results.get("premise"):
        out.append(_premise(deciles[0], deciles[-1], results["premise"],
                            results["similarity_vs_reward_gap_spearman"]))
    if "easy" in main and "random" in main:
        e, r = main["easy"][losses[0]], main["random"][losses[0]]
        out.append(f"Selected pairs ({e['budget']} budget): easy's label-error rate "
                   f"{_rate(e['label_error_rate'])} vs random's {_rate(r['label_error_rate'])}; oracle "
                   f"ties {e['oracle_tie_rate']:.0%} vs {r['oracle_tie_rate']:.0%}.")
    efficiency = _efficiency(results["label_efficiency"])
    if efficiency and withheld(results, {"kind": "strategy", "a": "easy"}):
        efficiency += f" Label savings are REAL's: {WITHHELD}."
    return out + ([efficiency] if efficiency else [])


def _training(results: dict[str, Any]) -> str:
    methods = [(s, loss, p) for s, by_loss in results["main"].items() for loss, p in by_loss.items()]
    above = [f"{s}/{loss}" for s, loss, p in methods if p["ci_low"] > 0.5]
    below = [f"{s}/{loss}" for s, loss, p in methods if p["ci_high"] < 0.5]
    best = max(methods, key=lambda m: m[2]["win_rate"])
    return (f"Preference training vs the SFT model: {len(above)} of {len(methods)} trained "
            f"models beat it (95% interval above 0.5){': ' + ', '.join(above) if above else ''}; "
            f"{len(below)} lost to it{': ' + ', '.join(below) if below else ''}. Best: "
            f"{best[0]}/{best[1]}, win rate {_ci(best[2])} (mde vs 0.5: {best[2]['mde']:.3f}), "
            f"mean oracle reward {best[2]['mean_reward']:.3f} (SFT {results['sft']['mean_reward']:.3f}).")


def _controls(results: dict[str, Any], comps: dict[tuple[str, str], dict[str, Any]]) -> list[str]:
    out = []
    ceiling = comps.get(("ceiling/dpo", "random/dpo"))
    if ceiling is not None:
        first = on_outcome(ceiling, primary_outcome(results))
        head = (f"Positive control: ceiling (the oracle's largest-gap pairs) minus random, DPO, "
                f"{NAMES[primary_outcome(results)]} (primary): {_diff(first)}"
                + (f" ({power})" if (power := power_text(first, "its own gain")) else ""))
        found = direction(first)
        if found == "better":
            out.append(head + ": significantly better, so this run can show a selection effect "
                       "of about that size." + _secondary(results, ceiling))
        else:
            how = ("the ceiling is significantly worse than random" if found == "worse"
                   else "its Holm-adjusted p is 0.05 or more")
            out.append(head + f": the positive control fails ({how}). Even the best pairs the "
                       "oracle could pick did not beat random at this size, so a strategy's null "
                       "says nothing, and a strategy that beats random where the ceiling does not "
                       "is more likely noise than an effect." + _secondary(results, ceiling))
    noiseless = comps.get(("noiseless/dpo", "random/dpo"))
    if noiseless is not None:
        out.append(f"Labels: noiseless (random pairs, perfect labels) minus random, DPO: "
                   f"{judged(results, noiseless)}.")
    prompts = comps.get(("easy/dpo", "easy-random-prompts/dpo"))
    pairs = comps.get(("easy-random-prompts/dpo", "random/dpo"))
    if prompts is not None and pairs is not None:
        out.append(f"Pair vs prompt choice (DPO): easy's pair on random prompts minus random, "
                   f"{judged(results, pairs)}: the effect of choosing the least similar pair "
                   f"within a prompt. Easy minus easy-random-prompts, {judged(results, prompts)}: "
                   "the effect of easy's choice of prompts.")
    shares = results.get("share_of_ceiling") or {}
    if shares:
        out.append("Share of the ceiling's gain over random, (s - random) / (ceiling - random), "
                   "DPO: " + "; ".join(f"{n} {_share(s)}" for n, s in shares.items())
                   + ". Intervals are wide when the ceiling's own gain is small.")
    return out


def _secondary(results: dict[str, Any], c: dict[str, Any]) -> str:
    """`` Win rate (secondary): ...`` when the win rate is not the primary outcome."""
    return "" if primary_outcome(results) == "win_rate" else f" Win rate (secondary): {_judged(c)}."


def _spo(results: dict[str, Any], comps: dict[tuple[str, str], dict[str, Any]]) -> list[str]:
    spo = [(s, comps[f"{s}/dpo+spo", f"{s}/dpo"]) for s in results["main"]
           if (f"{s}/dpo+spo", f"{s}/dpo") in comps]
    if not spo:
        return []
    check, dose = results["spo_manipulation"], results["spo_dose"]
    out = []
    if check["share_below"] is None:
        out.append("SPO manipulation check: no graded variants to score.")
    elif check["passes"]:
        out.append(f"SPO manipulation check passes: in every level and role at least "
                   f"{check['pass_share']:.0%} of the degree variants score below their original "
                   f"(lowest {check['lowest_share_below']:.0%}, all {check['share_below']:.0%}).")
    else:
        out.append(f"SPO manipulation check FAILS: removing key content lowered the oracle reward "
                   f"for only {check['share_below']:.0%} of the degree variants (lowest cell "
                   f"{check['lowest_share_below']:.0%}; needed {check['pass_share']:.0%} in every "
                   "level and role). SPO taught an ordering the oracle does not reward, so the SPO "
                   "verdict below is void." + _failing_part(check))
    if dose["head_accuracy"] is not None:
        out.append(f"SPO dose: degree-head accuracy {dose['head_accuracy']:.2f} (chance "
                   f"{dose['head_chance']:.2f}; {dose['head_accuracy_source']}; training-time "
                   f"{_rate(dose['head_accuracy_training'])}); held-out answers "
                   f"that changed between DPO and DPO+SPO on the same pairs: "
                   f"{_rate(dose['changed_answers'])}.")
    first = primary_outcome(results)
    spo = [(s, c) for s, c in spo if on_outcome(c, first) is not None]
    if not spo:
        return out
    better = [s for s, c in spo if direction(on_outcome(c, first)) == "better"]
    worse = [s for s, c in spo if direction(on_outcome(c, first)) == "worse"]
    parts = ([f"significantly better for {len(better)} of {len(spo)} strategies{_names(better)}"]
             if better else []) + ([f"significantly worse for {len(worse)}{_names(worse)}"] if worse else [])
    tally = (", ".join(parts) + ", inconclusive for the rest" if parts
             else f"no Holm-adjusted p below 0.05 (inconclusive for all {len(spo)} strategies)")
    mean = sum(on_outcome(c, first)["difference"] for _, c in spo) / len(spo)
    void = "" if check["passes"] else " (void: the manipulation check failed)"
    out.append(f"SPO (DPO+SPO minus DPO, same pairs){void}, {NAMES[first]} (primary): {tally}; "
               f"mean difference {mean:+.3f}. "
               + "; ".join(f"{s} {_judged(on_outcome(c, first))}" for s, c in spo) + ".")
    if first != "win_rate":
        out.append(f"SPO on the win rate (secondary){void}: "
                   + "; ".join(f"{s} {_judged(c)}" for s, c in spo) + ".")
    for key, name in OUTCOMES.items():
        if key != first and all(key in c for _, c in spo):
            samples = results.get("outcomes", {}).get("eval_samples")
            out.append(f"SPO on the {name.format(s=samples)} (secondary){void}: "
                       + "; ".join(f"{s} {_judged(c[key])}" for s, c in spo) + ".")
    return out


OUTCOMES = {"mean_reward_samples": "mean oracle reward over {s} samples per held-out prompt",
            "implicit_reward_accuracy": "implicit-reward accuracy on held-out oracle-ordered pairs"}


def _outcomes(results: dict[str, Any]) -> list[str]:
    """One statement per secondary extra outcome (realspo.arms.arm_outcomes): the strategies'
    and controls' paired differences to random (DPO), each with its interval, mde and verdict
    (the primary outcome's are in the verdict lines)."""
    out = []
    samples = results.get("outcomes", {}).get("eval_samples")
    for key, name in OUTCOMES.items():
        if key == primary_outcome(results):
            continue
        parts = [f"{c['a'].split('/')[0]} {_judged(c[key])}"
                 for c in results["comparisons"]
                 if key in c and c["kind"] in ("strategy", "control") and c["b"] == "random/dpo"]
        if parts:
            out.append(f"Secondary outcome, {name.format(s=samples)}, minus random (DPO): "
                       + "; ".join(parts) + ".")
    return out


def _failing_part(check: dict[str, Any]) -> str:
    """Which roles fail, and why: the share of responses with nothing the oracle rewards."""
    if "passes_by_role" not in check:
        return ""
    parts = []
    for role, ok in check["passes_by_role"].items():
        cells = [c for c in check["by_level"] if c["role"] == role and c["share_below"] is not None]
        if not cells:
            continue
        below = ", ".join(f"level {c['level']} {c['share_below']:.0%}" for c in cells)
        positive = ", ".join(f"{_pct(c['share_below_positive'])}" for c in cells)
        parts.append(f"{role}: {'passes' if ok else 'fails'} ({below}; "
                     f"{_pct(check['positive_share'][role])} of these responses have a positive "
                     f"reward, and among their variants the share below is {positive} by level)")
    return (" By role, " + "; ".join(parts) + ". A response scoring 0 or less mostly holds no correct, "
            "asked fact, or wrong claims that outweigh one; removing its content then keeps or "
            "raises its reward (removing a wrong claim raises it by 1): the check can pass only "
            "where the responses SPO trains on are mostly good.") if parts else ""


def _pct(value: float | None) -> str:
    return "n/a" if value is None else f"{value:.0%}"


def _premise(lo: dict[str, Any], hi: dict[str, Any], premise: dict[str, Any], rho: float) -> str:
    """REAL's premise: do the least similar pairs carry fewer label errors than the most similar?
    The difference of the two extreme deciles' rates, with its hierarchical interval."""
    p = premise.get("p", float("nan"))
    if p < 0.05 and premise["difference"] < 0:
        answer = "dissimilar pairs carry significantly fewer label errors here"
    elif p < 0.05 and premise["difference"] > 0:
        answer = "dissimilar pairs carry significantly MORE label errors here"
    else:
        answer = "p >= 0.05, i.e. no evidence for the premise in this world"
    return (f"REAL's premise, measured over every candidate pair: label-error rate "
            f"{lo['label_error_rate']:.3f} in the least similar decile (mean reward gap "
            f"{lo['mean_reward_gap']:.2f}, oracle ties {lo['oracle_tie_rate']:.0%}) vs "
            f"{hi['label_error_rate']:.3f} in the most similar (gap {hi['mean_reward_gap']:.2f}, "
            f"ties {hi['oracle_tie_rate']:.0%}), difference {_premise_diff(premise)} (prompts "
            f"resampled within seeds; one test, no family): {answer}. Annotator "
            f"errors follow the reward gap, and the Spearman correlation of similarity with the "
            f"reward gap is {rho:+.3f}.")


OUTCOME_NAMES = {"mean_reward_samples": "mean oracle reward over the samples per prompt",
                 "win_rate": "win rate vs SFT"}


def _efficiency(eff: dict[str, Any]) -> str | None:
    """The paper's terms on the primary outcome (the win rate when the run has no samples):
    the labels easy needs to reach random's value at the full budget and the share saved,
    with their intervals, beside the paper's claim (:mod:`realspo.arms.efficiency`)."""
    outcomes = eff.get("outcomes") or {}
    name = eff.get("primary_outcome") if eff.get("primary_outcome") in outcomes else next(iter(outcomes), None)
    if name is None:
        return None
    o = outcomes[name]
    target, need, saved = o["target"], o["labels_needed"], o["share_saved"]
    full = target["n_labels"]
    head = (f"Label efficiency (DPO, {OUTCOME_NAMES.get(name, name)}"
            + ("" if name == eff.get("primary_outcome") else "; the primary outcome was not recorded")
            + f"): random reaches {target['value']:.3f} [{target['ci_low']:.3f}, "
            f"{target['ci_high']:.3f}] at the full budget ({full:.0f} labels); ")
    missed = f"not reached in {need['not_reached_share']:.0%} of resamples"
    if need["estimate"] is None:
        body = f"easy does not reach it at any budget tried ({missed}"
        if need["ci_low"] is not None:
            body += f"; labels needed [{need['ci_low']:.0f}, more than {full:.0f}]"
        body += "): no labels saved"
    else:
        hi = f"{need['ci_high']:.0f}" if need["ci_high"] is not None else f"more than {full:.0f}"
        lo_saved = f"{saved['ci_low']:.0%}" if saved["ci_low"] is not None else "none (not reached)"
        hi_saved = f"{saved['ci_high']:.0%}" if saved["ci_high"] is not None else "none (not reached)"
        body = (f"easy needs {need['estimate']:.0f} [{need['ci_low']:.0f}, {hi}] labels to reach "
                f"random's value at the full budget ({full:.0f} labels): saves "
                f"{saved['estimate']:.0%} [{lo_saved}, {hi_saved}] ({missed})")
        if need.get("at_smallest_budget"):
            body += "; easy already reaches it at the smallest budget tried, so the true crossing may be lower"
    return head + body + f". The paper claims {eff.get('paper_claim', 'up to 65% fewer labels')}."


def _premise_diff(c: dict[str, Any]) -> str:
    p = c.get("p")
    return (f"{c['difference']:+.3f} [{c['ci_low']:+.3f}, {c['ci_high']:+.3f}], "
            f"p {'n/a' if p is None else f'{p:.3f}'}")


def _names(items: list[str]) -> str:
    return f" ({', '.join(items)})" if items else ""
