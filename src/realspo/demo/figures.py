"""The figures of ``realspo demo`` (written by :func:`realspo.demo.report.write_report`)::

    win_rates.png                  win rate vs SFT per strategy, control and loss, 95% intervals
    label_error_by_similarity.png  label-error rate of every candidate pair by similarity decile
    training_curves.png            loss, reward margin, SPO degree accuracy per step (first seed)
    label_efficiency.png           random vs easy (DPO) against labels, 95% bands: the mean
                                   oracle reward over the samples (primary) and the win rate,
                                   random's value at the full budget, where easy reaches it
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from realspo.arms.plan import budget_label
from realspo.arms.plotting import new_figure, save_figure
from realspo.arms.records import DemoRun

FIGURES = ("win_rates.png", "label_error_by_similarity.png", "training_curves.png",
           "label_efficiency.png")
COLORS = {"random": "#7f7f7f", "easy": "#1f77b4", "hard": "#d62728", "centroid": "#2ca02c"}


def plot_win_rates(results: dict[str, Any], path: Path) -> None:
    losses = results["config"]["losses"]
    main = {**results["main"], **results.get("controls", {})}  # controls: DPO only
    fig, ax = new_figure(figsize=(9, 4))
    width = 0.8 / len(losses)
    for k, loss in enumerate(losses):
        at = [(i, main[s][loss]) for i, s in enumerate(main) if loss in main[s]]
        xs = [i + (k - (len(losses) - 1) / 2) * width for i, _ in at]
        ps = [p for _, p in at]
        ax.bar(xs, [p["win_rate"] for p in ps], width * 0.9, label=loss, alpha=0.85,
               yerr=[[p["win_rate"] - p["ci_low"] for p in ps], [p["ci_high"] - p["win_rate"] for p in ps]],
               capsize=4, color=["#1f77b4", "#ff7f0e"][k % 2])
        for x, p in zip(xs, ps, strict=True):
            ax.plot([x] * len(p["per_seed"]), [s["win_rate"] for s in p["per_seed"]], "k.", ms=4)
    ax.axhline(0.5, color="k", ls="--", lw=1)
    ax.set_xticks(range(len(main)), list(main), fontsize=7)
    ax.set_ylabel("win rate vs SFT (ties = 1/2)")
    ax.set_title(f"Win rate vs the SFT model, {results['config']['budget']} labeling budget "
                 "(hierarchical 95% CI; dots: seeds)", fontsize=9)
    ax.legend()
    save_figure(fig, path)


def plot_label_errors(results: dict[str, Any], path: Path) -> None:
    deciles = results["label_error_by_similarity"]
    fig, ax = new_figure(figsize=(7, 4))
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
    save_figure(fig, path)


def plot_training_curves(demo: DemoRun, path: Path) -> None:
    seed, main = demo.plan.seeds[0], budget_label(demo.plan.budget)
    panels = (("loss", "loss (DPO+SPO: incl. lambda x degree loss)"),
              ("rewards/margins", "reward margin (beta x log-ratio)"),
              ("spo/accuracy", "SPO degree accuracy"))
    fig, axes = new_figure(1, 3, figsize=(12, 3.6))
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
    save_figure(fig, path)


def plot_label_efficiency(results: dict[str, Any], path: Path) -> None:
    """One panel per outcome of ``results["label_efficiency"]["outcomes"]`` (the primary
    first): both curves with their interval bands, the target and easy's crossing."""
    eff = results["label_efficiency"]
    outcomes = eff.get("outcomes") or {}
    titles = {"mean_reward_samples": "mean oracle reward over the samples (primary)",
              "win_rate": "win rate vs SFT"}
    if not outcomes:   # fewer than two budgets: the win-rate points only
        outcomes = {"win_rate": {"curves": {s: [{**p, "estimate": p["win_rate"]} for p in points]
                                            for s, points in eff["curves"].items()}}}
    fig, axes = new_figure(ncols=len(outcomes), figsize=(5.5 * len(outcomes), 4), squeeze=False)
    for ax, (name, o) in zip(axes[0], outcomes.items(), strict=True):
        for strategy, points in o["curves"].items():
            xs = [p["n_labels"] for p in points]
            ax.plot(xs, [p["estimate"] for p in points], "o-", color=COLORS.get(strategy), label=strategy)
            ax.fill_between(xs, [p["ci_low"] for p in points], [p["ci_high"] for p in points],
                            color=COLORS.get(strategy), alpha=0.15)
        if "target" in o:
            t, need = o["target"], o["labels_needed"]
            ax.axhline(t["value"], color=COLORS["random"], ls=":", lw=1,
                       label=f"random at the full budget ({t['n_labels']:.0f} labels)")
            if need["estimate"] is not None:
                ax.axvline(need["estimate"], color=COLORS["easy"], ls=":", lw=1,
                           label=f"easy reaches it: {need['estimate']:.0f} labels")
            ax.set_title(f"{titles.get(name, name)}; easy not reaching it in "
                         f"{need['not_reached_share']:.0%} of resamples", fontsize=8)
        else:
            ax.set_title(titles.get(name, name), fontsize=8)
        if name == "win_rate":
            ax.axhline(0.5, color="k", ls="--", lw=0.8)
        ax.set_xlabel("labels (pairs annotated)")
        ax.set_ylabel(titles.get(name, name).split(" (")[0])
        ax.legend(fontsize=7)
    fig.suptitle("Label efficiency (DPO): random vs easy, 95% hierarchical intervals", fontsize=9)
    save_figure(fig, path)
