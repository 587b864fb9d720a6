"""The report of ``realspo demo``: ``results.json``, four figures and ``report.md``.

::

    OUT/report.md                      what was run, the results table, what the numbers say
    OUT/results.json                   every number (layout: docs/readme/demo.md)
    OUT/win_rates.png                  win rate vs SFT per strategy and loss, 95% intervals
    OUT/label_error_by_similarity.png  label-error rate of every candidate pair by similarity decile
    OUT/training_curves.png            loss, reward margin, SPO degree accuracy per step (first seed)
    OUT/label_efficiency.png           win rate against labels, random vs easy (DPO)
    OUT/seed-S/candidates.jsonl        the K candidates per prompt with their oracle rewards
    OUT/seed-S/<strategy>-<loss>-<budget>/pairs.jsonl, metrics.jsonl   (budget: 50pct or 120pairs)

The statements in "What the numbers say" are computed from the numbers by :func:`findings`.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from realspo.demo.analysis import analyse
from realspo.demo.plan import budget_label
from realspo.demo.records import DemoRun
from realspo.outputs import atomic_path, write_json

FIGURES = ("win_rates.png", "label_error_by_similarity.png", "training_curves.png",
           "label_efficiency.png")
COLORS = {"random": "#7f7f7f", "easy": "#1f77b4", "hard": "#d62728", "centroid": "#2ca02c"}


def write_report(demo: DemoRun, out: Path) -> dict[str, Any]:
    """Analyse ``demo`` and write results.json, the figures and report.md into ``out``."""
    results = analyse(demo)
    results["findings"] = findings(results)
    write_json(out / "results.json", results, overwrite=True)
    plot_win_rates(results, out / "win_rates.png")
    plot_label_errors(results, out / "label_error_by_similarity.png")
    plot_training_curves(demo, out / "training_curves.png")
    plot_label_efficiency(results, out / "label_efficiency.png")
    with atomic_path(out / "report.md", overwrite=True) as tmp:
        tmp.write_text(markdown(results), encoding="utf-8")
    return results


# ---------------------------------------------------------------------------------------
# What the numbers say


def _ci(p: dict[str, Any]) -> str:
    return f"{p['win_rate']:.3f} [{p['ci_low']:.3f}, {p['ci_high']:.3f}]"


def _diff(c: dict[str, Any]) -> str:
    return f"{c['difference']:+.3f} [{c['ci_low']:+.3f}, {c['ci_high']:+.3f}]"


def _verdict(c: dict[str, Any]) -> str:
    if c["ci_low"] > 0:
        return "better"
    if c["ci_high"] < 0:
        return "worse"
    return "no significant difference"


def findings(results: dict[str, Any]) -> list[str]:
    """Plain statements, each computed from the numbers it quotes."""
    out: list[str] = []
    main, losses = results["main"], results["config"]["losses"]
    methods = [(s, loss, p) for s, by_loss in main.items() for loss, p in by_loss.items()]
    above = [f"{s}/{loss}" for s, loss, p in methods if p["ci_low"] > 0.5]
    below = [f"{s}/{loss}" for s, loss, p in methods if p["ci_high"] < 0.5]
    best = max(methods, key=lambda m: m[2]["win_rate"])
    out.append(f"Preference training vs the SFT model: {len(above)} of {len(methods)} trained "
               f"models beat it (95% interval above 0.5){': ' + ', '.join(above) if above else ''}; "
               f"{len(below)} lost to it{': ' + ', '.join(below) if below else ''}. Best: "
               f"{best[0]}/{best[1]}, win rate {_ci(best[2])}, mean oracle reward "
               f"{best[2]['mean_reward']:.3f} (SFT {results['sft']['mean_reward']:.3f}).")
    comps = {(c["a"], c["b"]): c for c in results["comparisons"]}
    for loss in losses:
        c = comps.get((f"easy/{loss}", f"random/{loss}"))
        if c is None:
            continue
        e, r = main["easy"][loss], main["random"][loss]
        overlap = "is above" if e["ci_low"] > r["ci_high"] else (
            "is below" if e["ci_high"] < r["ci_low"] else "overlaps")
        out.append(f"REAL (easy) vs random, {loss}: win rate {_ci(e)} vs {_ci(r)}; easy's interval "
                   f"{overlap} random's. Paired difference {_diff(c)}: {_verdict(c)}.")
        others = [f"{s} {_diff(comps[(f'{s}/{loss}', f'random/{loss}')])} "
                  f"({_verdict(comps[(f'{s}/{loss}', f'random/{loss}')])})"
                  for s in main if s not in ("easy", "random") and (f"{s}/{loss}", f"random/{loss}") in comps]
        if others:
            out.append(f"Other strategies vs random, {loss}: " + "; ".join(others) + ".")
    spo = [(s, comps[(f"{s}/dpo+spo", f"{s}/dpo")]) for s in main if (f"{s}/dpo+spo", f"{s}/dpo") in comps]
    if spo:
        tally = {v: [s for s, c in spo if _verdict(c) == v]
                 for v in ("better", "worse", "no significant difference")}
        mean = sum(c["difference"] for _, c in spo) / len(spo)
        out.append(f"SPO (DPO+SPO minus DPO, same pairs): significantly better for "
                   f"{len(tally['better'])} of {len(spo)} strategies{_names(tally['better'])}, worse for "
                   f"{len(tally['worse'])}{_names(tally['worse'])}, no significant difference for "
                   f"{len(tally['no significant difference'])}; mean difference {mean:+.3f}. "
                   + "; ".join(f"{s} {_diff(c)}" for s, c in spo) + ".")
    deciles = [d for d in results["label_error_by_similarity"] if d["label_error_rate"] is not None]
    if len(deciles) >= 2:
        out.append(_premise(deciles[0], deciles[-1], results["similarity_vs_reward_gap_spearman"]))
    if "easy" in main and "random" in main:
        e, r = main["easy"][losses[0]], main["random"][losses[0]]
        out.append(f"Selected pairs ({e['budget']} budget): easy's label-error rate "
                   f"{_rate(e['label_error_rate'])} vs random's {_rate(r['label_error_rate'])}; oracle "
                   f"ties {e['oracle_tie_rate']:.0%} vs {r['oracle_tie_rate']:.0%}.")
    eff = results["label_efficiency"]
    if eff["random_best"] is not None:
        best = eff["random_best"]
        head = (f"Label efficiency (DPO): random's best win rate is {best['win_rate']:.3f} with "
                f"{best['n_labels']:.0f} labels; ")
        needed = eff["easy_labels_to_match"]
        first = eff["curves"]["easy"][0]["n_labels"]
        if needed is not None and needed <= first:
            out.append(head + f"easy already reaches it at the smallest budget tried ({first:.0f} "
                       f"labels, {eff['labels_saved']:.0%} fewer; the true crossing may be lower). "
                       "Single budgets are noisy: compare the intervals in the figure.")
        elif needed is None:
            out.append(head + "easy does not reach it at any budget tried (not reached): no labels saved.")
        else:
            saved = eff["labels_saved"]
            out.append(head + f"easy reaches it with about {needed:.0f} labels (interpolated), "
                       + (f"{saved:.0%} fewer labels." if saved >= 0 else f"{-saved:.0%} more labels.")
                       + " Single budgets are noisy: compare the intervals in the figure.")
    return out


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


def _premise(lo: dict[str, Any], hi: dict[str, Any], rho: float) -> str:
    """REAL's premise: do the least similar pairs carry fewer label errors than the most similar?
    Two-proportion z-test on the oracle-ordered pairs of the two extreme deciles."""
    n_lo, n_hi = (max(1, round(d["n_pairs"] * (1 - d["oracle_tie_rate"]))) for d in (lo, hi))
    p_lo, p_hi = lo["label_error_rate"], hi["label_error_rate"]
    se = (p_lo * (1 - p_lo) / n_lo + p_hi * (1 - p_hi) / n_hi) ** 0.5
    diff = p_lo - p_hi
    if se > 0 and abs(diff) > 1.96 * se:
        verdict = ("dissimilar pairs carry significantly fewer label errors here" if diff < 0
                   else "dissimilar pairs carry significantly MORE label errors here")
    else:
        verdict = "no significant difference, i.e. no evidence for the premise in this world"
    return (f"REAL's premise, measured over every candidate pair: label-error rate "
            f"{p_lo:.3f} in the least similar decile (mean reward gap {lo['mean_reward_gap']:.2f}, "
            f"oracle ties {lo['oracle_tie_rate']:.0%}) vs {p_hi:.3f} in the most similar (gap "
            f"{hi['mean_reward_gap']:.2f}, ties {hi['oracle_tie_rate']:.0%}), difference "
            f"{diff:+.3f} +- {1.96 * se:.3f}: {verdict}. Annotator errors follow the reward gap, "
            f"and the Spearman correlation of similarity with the reward gap is {rho:+.3f}.")


def _names(items: list[str]) -> str:
    return f" ({', '.join(items)})" if items else ""


def _rate(value: float | None) -> str:
    return "n/a" if value is None else f"{value:.3f}"


# ---------------------------------------------------------------------------------------
# Figures


def _figure(*args: Any, **kwargs: Any):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt.subplots(*args, **kwargs)


def _save(fig: Any, path: Path) -> None:
    import matplotlib.pyplot as plt

    fig.tight_layout()
    with atomic_path(path, overwrite=True) as tmp:
        fig.savefig(tmp, format="png", dpi=110, metadata={"Software": None})
    plt.close(fig)


def plot_win_rates(results: dict[str, Any], path: Path) -> None:
    main, losses = results["main"], results["config"]["losses"]
    fig, ax = _figure(figsize=(7, 4))
    width = 0.8 / len(losses)
    for k, loss in enumerate(losses):
        xs = [i + (k - (len(losses) - 1) / 2) * width for i in range(len(main))]
        ps = [main[s][loss] for s in main]
        ax.bar(xs, [p["win_rate"] for p in ps], width * 0.9, label=loss, alpha=0.85,
               yerr=[[p["win_rate"] - p["ci_low"] for p in ps], [p["ci_high"] - p["win_rate"] for p in ps]],
               capsize=4, color=["#1f77b4", "#ff7f0e"][k % 2])
        for x, p in zip(xs, ps, strict=True):
            ax.plot([x] * len(p["per_seed"]), [s["win_rate"] for s in p["per_seed"]], "k.", ms=4)
    ax.axhline(0.5, color="k", ls="--", lw=1)
    ax.set_xticks(range(len(main)), list(main))
    ax.set_ylabel("win rate vs SFT (ties = 1/2)")
    ax.set_title(f"Win rate vs the SFT model, {results['config']['budget']} labeling budget "
                 "(95% CI; dots: seeds)", fontsize=9)
    ax.legend()
    _save(fig, path)


def plot_label_errors(results: dict[str, Any], path: Path) -> None:
    deciles = results["label_error_by_similarity"]
    fig, ax = _figure(figsize=(7, 4))
    xs = [d["decile"] for d in deciles]
    ax.bar(xs, [d["label_error_rate"] or 0.0 for d in deciles], color="#1f77b4", alpha=0.8,
           label="observed label-error rate (oracle-ordered pairs)")
    ax.plot(xs, [d["expected_error_rate"] or 0.0 for d in deciles], "o-", color="#ff7f0e",
            label="expected (Bradley-Terry formula)")
    ax.plot(xs, [d["oracle_tie_rate"] for d in deciles], "s--", color="#7f7f7f",
            label="share of pairs the oracle ties")
    ax.set_xticks(xs, [f"{d['decile']}\n{d['similarity_low']:.2f}" for d in deciles], fontsize=7)
    ax.set_xlabel("similarity decile (1 = least similar; lower edge of cosine)")
    ax.set_ylabel("rate")
    top = max([d["label_error_rate"] or 0.0 for d in deciles]
              + [d["expected_error_rate"] or 0.0 for d in deciles]
              + [d["oracle_tie_rate"] for d in deciles])
    ax.set_ylim(0, max(top, 0.05) * 1.5)  # room for the legend above the bars
    ax.set_title("Label errors of every candidate pair by embedding similarity", fontsize=9)
    ax.legend(fontsize=7, loc="upper center", ncol=2)
    _save(fig, path)


def plot_training_curves(demo: DemoRun, path: Path) -> None:
    seed, main = demo.plan.seeds[0], budget_label(demo.plan.budget)
    panels = (("loss", "loss (DPO+SPO: incl. lambda x degree loss)"),
              ("rewards/margins", "reward margin (beta x log-ratio)"),
              ("spo/accuracy", "SPO degree accuracy"))
    fig, axes = _figure(1, 3, figsize=(12, 3.6))
    for run in demo.runs:
        if run.seed != seed or run.budget != main:
            continue
        records = [m for m in run.metrics if not any(k.startswith("eval/") for k in m)]
        for ax, (key, _) in zip(axes, panels, strict=True):
            pts = [(m["step"], m[key]) for m in records if key in m]
            if pts:
                ax.plot(*zip(*pts, strict=True), color=COLORS.get(run.strategy),
                        ls="-" if run.loss == "dpo" else "--", label=f"{run.strategy}/{run.loss}")
    for ax, (_, title) in zip(axes, panels, strict=True):
        ax.set_title(title, fontsize=9)
        ax.set_xlabel("step")
    axes[0].legend(fontsize=6)
    fig.suptitle(f"Training curves, seed {seed}, {main} budget", fontsize=9)
    _save(fig, path)


def plot_label_efficiency(results: dict[str, Any], path: Path) -> None:
    eff = results["label_efficiency"]
    fig, ax = _figure(figsize=(6, 4))
    for strategy, points in eff["curves"].items():
        xs = [p["n_labels"] for p in points]
        ax.plot(xs, [p["win_rate"] for p in points], "o-", color=COLORS.get(strategy), label=strategy)
        ax.fill_between(xs, [p["ci_low"] for p in points], [p["ci_high"] for p in points],
                        color=COLORS.get(strategy), alpha=0.15)
    if eff["random_best"] is not None:
        ax.axhline(eff["random_best"]["win_rate"], color=COLORS["random"], ls=":", lw=1,
                   label="random's best")
    if eff["easy_labels_to_match"] is not None:
        ax.axvline(eff["easy_labels_to_match"], color=COLORS["easy"], ls=":", lw=1,
                   label="easy reaches it")
    ax.axhline(0.5, color="k", ls="--", lw=0.8)
    ax.set_xlabel("labels (pairs annotated)")
    ax.set_ylabel("win rate vs SFT (DPO)")
    ax.set_title("Label efficiency: random vs easy (95% CI)", fontsize=9)
    ax.legend(fontsize=7)
    _save(fig, path)


# ---------------------------------------------------------------------------------------
# Markdown


def markdown(results: dict[str, Any]) -> str:
    cfg, sizes, t = results["config"], results["sizes"], results["timings_seconds"]
    seeds = ", ".join(str(s) for s in cfg["seeds"])
    lines = [
        "# realspo demo: REAL pair selection and SPO in the offline proving ground", "",
        f"Preset `{cfg['preset']}`, seeds {seeds}, device `{cfg['device']}`, "
        f"{sizes['torch_threads']} torch threads; total time {t.get('total', 0) / 60:.1f} min.", "",
        "## What was run", "",
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
        "trained model and from the SFT model with the same sampling noise; the oracle judges. Win "
        "rate = mean of 1 / 1/2 / 0 per prompt; 95% intervals by bootstrap over prompts "
        "(stratified by seed when pooled); differences are paired.", "",
        "Stage timings (seconds): " + ", ".join(f"{k} {v:.0f}" for k, v in t.items()) + ".", "",
        "## Results", "",
        f"SFT model: mean oracle reward {results['sft']['mean_reward']:.3f} "
        f"[{results['sft']['mean_reward_ci'][0]:.3f}, {results['sft']['mean_reward_ci'][1]:.3f}].", "",
        "| strategy | loss | labels | win rate vs SFT [95% CI] | mean reward | label-error rate "
        "(selected) | oracle ties | mean similarity |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for s, by_loss in results["main"].items():
        for loss, p in by_loss.items():
            lines.append(f"| {s} | {loss} | {p['n_labels']:.0f} | {_ci(p)} | {p['mean_reward']:.3f} | "
                         f"{_rate(p['label_error_rate'])} | {p['oracle_tie_rate']:.0%} | "
                         f"{p['mean_similarity']:.3f} |")
    lines += ["", "![win rates](win_rates.png)", "", "## What the numbers say", ""]
    lines += [f"- {f}" for f in results["findings"]]
    lines += ["", "### Paired differences (a minus b, win rate vs SFT)", "",
              "| a | b | difference [95% CI] | verdict |", "|---|---|---|---|"]
    lines += [f"| {c['a']} | {c['b']} | {_diff(c)} | {_verdict(c)} |" for c in results["comparisons"]]
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
              "## Label efficiency (DPO)", "", "| strategy | budget | labels | win rate [95% CI] |",
              "|---|---|---|---|"]
    for strategy, points in eff["curves"].items():
        lines += [f"| {strategy} | {p['budget']} | {p['n_labels']:.0f} | {_ci(p)} |" for p in points]
    lines += ["", "![label efficiency](label_efficiency.png)", "", "## Training curves", "",
              "![training curves](training_curves.png)", "",
              "Per-seed numbers, selected pairs and training metrics: `results.json` and "
              "`seed-*/`.", ""]
    return "\n".join(lines)
