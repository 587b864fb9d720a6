"""The report of ``realspo demo``: ``results.json``, four figures and ``report.md``.

::

    OUT/report.md                      what was run, the results table, what the numbers say
    OUT/results.json                   every number (layout: docs/explanation/demo.md)
    OUT/*.png                          four figures (realspo.demo.figures)
    OUT/seed-S/candidates.jsonl        the K candidates per prompt with their oracle rewards
    OUT/seed-S/<arm>-<loss>-<budget>/pairs.jsonl, metrics.jsonl   (budget: 50pct or 120pairs;
                                       arm: a strategy or a control, realspo.arms.controls)

The statements in "What the numbers say" are computed from the numbers by
:func:`realspo.demo.findings.findings`; a ``--quick`` run gets none ("smoke run: no verdicts").
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from realspo.arms.analysis import analyse
from realspo.arms.knobs import knob_effects
from realspo.arms.premise_check import (
    WITHHELD,
    premise_line,
    withheld,
    within_prompt_spearman,
    world_text,
)
from realspo.arms.records import DemoRun
from realspo.demo.figures import (
    FIGURES,
    plot_label_efficiency,
    plot_label_errors,
    plot_training_curves,
    plot_win_rates,
)
from realspo.demo.findings import (
    NAMES,
    OUTCOME_NAMES,
    SMOKE,
    _ci,
    _rate,
    _share,
    findings,
    on_outcome,
    primary_outcome,
    verdict,
)
from realspo.outputs import atomic_path, write_json

__all__ = ["FIGURES", "findings", "markdown", "write_report"]


def write_report(demo: DemoRun, out: Path) -> dict[str, Any]:
    """Analyse ``demo`` and write results.json, the figures and report.md into ``out``."""
    results = analyse(demo)
    results["knobs"] = knob_effects(demo)
    results["premise_check"] = within_prompt_spearman(demo.pairs, demo.plan.bootstrap_resamples)
    results["findings"] = findings(results)
    write_json(out / "results.json", results, overwrite=True)
    plot_win_rates(results, out / "win_rates.png")
    plot_label_errors(results, out / "label_error_by_similarity.png")
    plot_training_curves(demo, out / "training_curves.png")
    plot_label_efficiency(results, out / "label_efficiency.png")
    with atomic_path(out / "report.md", overwrite=True) as tmp:
        tmp.write_text(markdown(results), encoding="utf-8")
    return results


def _sft_text(info: dict[str, Any], cfg: dict[str, Any]) -> str:
    w, s = cfg["world"], cfg["sft"]
    text = (f"a Llama-style causal LM (hidden {s['hidden_size']}, {s['num_layers']} layers"
            + (f", {info['parameters'] / 1e6:.2f}M parameters" if info.get("parameters") else "")
            + f") trained for {s['steps']} steps on {w['responses_per_prompt']} mixed-quality "
            f"responses to each of {w['n_train_prompts']} world prompts (world seed {w['seed']})")
    if info.get("final_loss") is not None:
        text += f"; final SFT loss {info['final_loss']:.3f}"
    if info.get("seconds") is not None:
        text += f", built in {info['seconds'] / 60:.1f} min when first needed"
    return text


# ---------------------------------------------------------------------------------------
# Markdown


def _spo_check(results: dict[str, Any]) -> list[str]:
    check, dose = results["spo_manipulation"], results["spo_dose"]
    lines = ["", "## SPO manipulation check and dose", "",
             "Every degree variant SPO trained on (the main budget's DPO+SPO pairs, all seeds), "
             "scored by the oracle: the share whose reward is below the original's (needed: "
             f"{check['pass_share']:.0%} in every row).", "",
             "| level | role | variants | below | equal | above | mean change | below, of responses "
             "with reward > 0 (variants) |",
             "|---|---|---|---|---|---|---|---|"]
    for c in check["by_level"]:
        lines.append(f"| {c['level']} | {c['role']} | {c['n_variants']} | {_pct(c['share_below'])} | "
                     f"{_pct(c['share_equal'])} | {_pct(c['share_above'])} | "
                     f"{_rate(c['mean_change'])} | {_pct(c.get('share_below_positive'))} "
                     f"({c.get('n_positive', 0)}) |")
    status = ("not judged (smoke run)" if not results["verdicts"]
              else "passes" if check["passes"] else "FAILS ("
              + ", ".join(f"{role} {'passes' if ok else 'fails'}"
                          for role, ok in check.get("passes_by_role", {}).items())
              + "): the SPO verdict is void")
    lines += ["", f"Check: {status}. Responses graded {check['responses_graded']}, skipped "
              f"(too few key phrases) {sum(check['responses_skipped'].values())}. Dose: degree-head "
              f"accuracy {_rate(dose['head_accuracy'])} (chance {dose['head_chance']:.3f}; "
              f"{dose['head_accuracy_source']}; training-time {_rate(dose['head_accuracy_training'])}); "
              "held-out answers changed between DPO and DPO+SPO: "
              f"{_rate(dose['changed_answers'])}."]
    return lines


def _outcomes_table(results: dict[str, Any]) -> list[str]:
    """The extra outcomes (realspo.arms.arm_outcomes): per method, and the paired differences."""
    info = results.get("outcomes")
    if not info:
        return []
    pairs = ", ".join(f"{n} (seed {s})" for s, n in info["heldout_pairs"].items())
    lines = ["", "## More sensitive outcomes", "",
             f"Mean oracle reward over {info['eval_samples']} samples per held-out prompt (sample 0 "
             "is the win rate's sample), and implicit-reward accuracy: the share of held-out pairs "
             "(the SFT model's samples on the held-out prompts, ordered by the oracle, ties dropped: "
             f"{pairs}) where the oracle's better response gets the larger "
             "beta * (log pi - log pi_SFT). The SFT model scores 0.5 by construction. SFT mean "
             f"reward over the samples: {_rate(results['sft'].get('mean_reward_samples'))}.", "",
             "| arm | loss | mean reward (samples) [95% CI] | implicit-reward accuracy [95% CI] |",
             "|---|---|---|---|"]
    for s, by_loss in {**results["main"], **results["controls"]}.items():
        for loss, p in by_loss.items():
            lines.append(f"| {s} | {loss} | {_est(p.get('mean_reward_samples'))} | "
                         f"{_est(p.get('implicit_reward_accuracy'))} |")
    return lines


def _num(value: float | None, fmt: str = ".3f") -> str:
    return "n/a" if value is None or value != value else format(value, fmt)


def _comparison_tables(results: dict[str, Any]) -> list[str]:
    """One table of paired differences per outcome, the primary outcome first: interval, mde,
    per-seed differences, raw p, Holm p, BH q, power to detect the ceiling's gain, verdict."""
    judge = verdict if results["verdicts"] else (lambda c: "none (smoke run)")
    first = primary_outcome(results)
    families = results["statistics"].get("families", {})
    order = [first, *[o for o in families if o != first]] if families else ["win_rate"]
    lines = []
    for outcome in order:
        rows = [(c, e) for c in results["comparisons"] if (e := on_outcome(c, outcome)) is not None]
        if not rows:
            continue
        role = families.get(outcome, {}).get("role", "primary")
        lines += ["", f"### Paired differences (a minus b), {NAMES[outcome]} ({role}, a family "
                  f"of {len(rows)})", "",
                  "| a | b | difference [95% CI] | mde | per seed | p | Holm p | BH q | power "
                  "(ceiling's gain) | seeds for 0.8 | verdict |",
                  "|---|---|---|---|---|---|---|---|---|---|---|"]
        lines += [f"| {c['a']} | {c['b']} | {e['difference']:+.3f} [{e['ci_low']:+.3f}, "
                  f"{e['ci_high']:+.3f}] | {_num(e['mde'])} | "
                  f"{', '.join(f'{d:+.3f}' for d in e['per_seed'])} | {_num(e.get('p'))} | "
                  f"{_num(e.get('p_holm'))} | {_num(e.get('q_bh'))} | {_num(e.get('power'), '.2f')} | "
                  f"{e.get('seeds_for_power') or 'n/a'} | "
                  f"{WITHHELD if results['verdicts'] and withheld(results, c) else judge(e)} |"
                  for c, e in rows]
    return lines


def _family_text(results: dict[str, Any]) -> str:
    """The statistics paragraph: p-values, the families and the rule, the mde, power."""
    st = results["statistics"]
    families = st.get("families", {})
    parts = [f"{NAMES[o]} ({f['role']}, {f['size']} comparisons)" for o, f in families.items()]
    reference = next((f["reference"] for f in families.values() if f.get("reference")), None)
    return (f"p-values: {st.get('p_value', 'n/a')}. Families, each adjusted on its own (Holm "
            f"and Benjamini-Hochberg): {'; '.join(parts) or 'none'}; each family is every "
            "comparison below (strategies and controls minus random, easy minus "
            "easy-random-prompts, DPO+SPO minus DPO). Rule: " + st.get("rule", "n/a") + ". "
            f"mde = {st['mde']}. Power: of a two-sided 5% test to detect the ceiling's observed "
            f"gain over random on the same outcome ({reference or 'no ceiling arm: not computed'}), "
            "noncentral t with seeds - 1 df (normal with one seed); seeds for 0.8 power from the "
            "SD over seeds of the per-seed differences.")


def _est(p: dict[str, Any] | None) -> str:
    return "n/a" if p is None else f"{p['estimate']:.3f} [{p['ci_low']:.3f}, {p['ci_high']:.3f}]"


def _pct(value: float | None) -> str:
    return "n/a" if value is None else f"{value:.0%}"


def markdown(results: dict[str, Any]) -> str:
    cfg, sizes, t = results["config"], results["sizes"], results["timings_seconds"]
    seeds = ", ".join(str(s) for s in cfg["seeds"])
    lines = [
        "# realspo demo: REAL pair selection and SPO in the offline proving ground", "",
        f"Preset `{cfg['preset']}`, seeds {seeds}, device `{cfg['device']}`, "
        f"{sizes['torch_threads']} torch threads; total time {t.get('total', 0) / 60:.1f} min.", "",
        *([f"**{SMOKE}**", ""] if not results["verdicts"] else []),
        f"**{premise_line(results.get('premise_check'))}**", "",
        "## What was run", "",
        f"- World: {world_text(cfg)}",
        f"- SFT model: `{Path(results['sft_model']).name}` in the proving-ground cache, "
        f"{_sft_text(sizes.get('sft_model') or {}, cfg)}.",
        f"- Candidates: {cfg['num_candidates']} samples per training prompt for "
        f"{sizes['train_prompts']} prompts (temperature {cfg['temperature']}, at most "
        f"{cfg['max_new_tokens']} new tokens); distinct candidate pairs: "
        + ", ".join(f"{n} (seed {s})" for s, n in sizes["candidate_pairs"].items()) + ".",
        "- Embeddings: the SFT model's final hidden layer, mean-pooled over the response, "
        "L2-normalised (REAL).",
        f"- Labels: a simulated Bradley-Terry annotator over the oracle reward, P(A preferred) = "
        f"sigmoid((r_A - r_B) / tau) with tau = {cfg['tau']}, flip rate {cfg['flip']}. A label "
        "is an error when it disagrees with the oracle's ordering; pairs the oracle ties have no "
        "right answer and are counted apart.",
        f"- Selection: {', '.join(cfg['strategies'])}; one pair per prompt, main budget "
        f"{cfg['budget']} of the prompts; label-efficiency budgets "
        f"{', '.join(f'{100 * b:g}%' for b in cfg['efficiency_budgets'])} (random and easy, DPO).",
        f"- Training: DPO (sigmoid, beta {cfg['beta']}) and DPO+SPO (lambda {cfg['spo_weight']}, "
        f"D = {cfg['spo_levels']}), {cfg['steps']} steps of {cfg['batch_size']} pairs, lr "
        f"{cfg['lr']}, from the SFT model (also the reference). Every run gets the same number of "
        "steps, so budgets differ only in data.",
        f"- Evaluation: one sample per held-out prompt ({sizes['test_prompts']} prompts) from the "
        "trained model and from the SFT model with the same sampling noise (for the mean reward, "
        f"{cfg.get('eval_samples', 1)} samples per prompt, the first being that one); the oracle "
        "judges. The primary outcome is the mean oracle reward over the samples per held-out "
        "prompt; the win rate (mean of 1 / 1/2 / 0 per prompt) is secondary. 95% intervals by a "
        f"hierarchical bootstrap ({results['statistics']['resamples']} resamples: seeds, then "
        "prompts within each drawn seed); differences are paired; mde = minimum detectable "
        f"effect. {_family_text(results)}",
        f"- Controls (DPO, main budget): {', '.join(cfg['controls']) or 'none'}: the oracle's "
        "largest-gap pair per prompt labelled by the same annotator; random pairs with perfect "
        "labels; easy's pair on randomly chosen prompts.", "",
        "Stage timings (seconds): " + ", ".join(f"{k} {v:.0f}" for k, v in t.items()) + ".", "",
        "## Results", "",
        f"SFT model: mean oracle reward {results['sft']['mean_reward']:.3f} "
        f"[{results['sft']['mean_reward_ci'][0]:.3f}, {results['sft']['mean_reward_ci'][1]:.3f}].", "",
        "| strategy | loss | labels | win rate vs SFT [95% CI] | mean reward | label-error rate "
        "(selected) | oracle ties | mean similarity |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for s, by_loss in {**results["main"], **results["controls"]}.items():
        for loss, p in by_loss.items():
            lines.append(f"| {s} | {loss} | {p['n_labels']:.0f} | {_ci(p)} | {p['mean_reward']:.3f} | "
                         f"{_rate(p['label_error_rate'])} | {p['oracle_tie_rate']:.0%} | "
                         f"{p['mean_similarity']:.3f} |")
    lines += ["", "![win rates](win_rates.png)", "", "## What the numbers say", ""]
    lines += [f"- {f}" for f in results["findings"]]
    lines += _comparison_tables(results)
    if results["share_of_ceiling"]:
        lines += ["", "### Share of the ceiling's gain over random (DPO)", "",
                  "(s - random) / (ceiling - random) of the win rates, hierarchical 95% interval: "
                  "1 = as good as the oracle's largest-gap pairs, 0 = no better than random.", "",
                  "| arm | share [95% CI] |", "|---|---|"]
        lines += [f"| {n} | {_share(v)} |" for n, v in results["share_of_ceiling"].items()]
    lines += _outcomes_table(results)
    lines += _spo_check(results)
    lines += ["", "## Label errors by pair similarity", "",
              f"Every candidate pair of every seed, {results['all_pairs_label_error_rate']:.3f} "
              "label-error rate overall. Deciles of cosine similarity (1 = least similar):", "",
              "| decile | cosine | pairs | oracle ties | label-error rate | expected | mean reward gap |",
              "|---|---|---|---|---|---|---|"]
    for d in results["label_error_by_similarity"]:
        lines.append(f"| {d['decile']} | {d['similarity_low']:.3f} to {d['similarity_high']:.3f} | "
                     f"{d['n_pairs']} | {d['oracle_tie_rate']:.0%} | {_rate(d['label_error_rate'])} | "
                     f"{_rate(d['expected_error_rate'])} | {d['mean_reward_gap'] or 0:.2f} |")
    eff = results["label_efficiency"]
    lines += ["", "![label errors by similarity](label_error_by_similarity.png)", "",
              "## Label efficiency (DPO)", ""]
    lines += _efficiency_table(eff)
    lines += ["", "![label efficiency](label_efficiency.png)", "", "## Training curves", "",
              "![training curves](training_curves.png)", "",
              "Per-seed numbers, selected pairs and training metrics: `results.json` and "
              "`seed-*/`.", ""]
    return "\n".join(lines)


def _efficiency_table(eff: dict[str, Any]) -> list[str]:
    """random and easy per budget on both outcomes (realspo.arms.efficiency), with intervals;
    the win rates alone when the run has fewer than two budgets."""
    outcomes = eff.get("outcomes") or {}
    if not outcomes:
        lines = ["| strategy | budget | labels | win rate [95% CI] |", "|---|---|---|---|"]
        for strategy, points in eff["curves"].items():
            lines += [f"| {strategy} | {p['budget']} | {p['n_labels']:.0f} | {_ci(p)} |" for p in points]
        return lines
    names = list(outcomes)
    lines = ["| strategy | budget | labels | " + " | ".join(f"{OUTCOME_NAMES.get(n, n)} [95%]" for n in names)
             + " |", "|---" * (3 + len(names)) + "|"]
    first = outcomes[names[0]]["curves"]
    for strategy, points in first.items():
        for j, p in enumerate(points):
            cells = [outcomes[n]["curves"][strategy][j] for n in names]
            lines.append(f"| {strategy} | {p['budget']} | {p['n_labels']:.0f} | "
                         + " | ".join(f"{c['estimate']:.3f} [{c['ci_low']:.3f}, {c['ci_high']:.3f}]"
                                      for c in cells) + " |")
    lines += ["", "Labels easy needs to reach random's value at the full budget, and the share "
              "saved (hierarchical bootstrap: seeds, then prompts shared by every run of a seed; "
              "'more than' = not reached in the interval's end; 'at most' = reached at the smallest budget "
              "tried, so the true crossing may be lower):", "",
              "| outcome | random at the full budget [95%] | labels easy needs [95%] | not reached "
              "(share of resamples) | labels saved [95%] |", "|---|---|---|---|---|"]
    for n in names:
        t, need, saved = (outcomes[n][k] for k in ("target", "labels_needed", "share_saved"))
        full = t["n_labels"]
        at_most = "at most " if need.get("at_smallest_budget") else ""  # reached at the first budget
        hi = _count(need["ci_high"]) if need["ci_high"] is not None else f"more than {full:.0f}"
        lines.append(f"| {OUTCOME_NAMES.get(n, n)} | {t['value']:.3f} [{t['ci_low']:.3f}, "
                     f"{t['ci_high']:.3f}] ({full:.0f} labels) | {at_most}{_count(need['estimate'])} "
                     f"[{_count(need['ci_low'])}, {hi}] | {need['not_reached_share']:.0%} | "
                     f"{_percent(saved['estimate'])} [{_percent(saved['ci_low'])}, {_percent(saved['ci_high'])}] |")
    return lines


def _count(x: float | None) -> str:
    return "-" if x is None else f"{x:.0f}"


def _percent(x: float | None) -> str:
    return "-" if x is None else f"{x:.0%}"
