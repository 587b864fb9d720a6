"""The table and heatmap of ``realspo demo --grid`` (:mod:`realspo.grid.run`), from its files.

Per cell (K, RHO), over the seeds whose four arms are all done:

* ``easy - random``, ``ceiling - random``, ``noiseless - random``: paired differences of the
  win rates over the SFT model, with hierarchical-bootstrap 95% intervals and ``mde``
  (t-based with seeds - 1 df; :func:`realspo.arms.analysis.paired_difference`, as in the
  demo's report). The grid's cells record one sample per held-out prompt, so its outcome is
  the win rate;
* ``easy``'s raw bootstrap p, Holm p and Benjamini-Hochberg q over the grid's family (every
  cell's ``easy - random``; :mod:`realspo.evaluation.multiple_comparisons`), its power to
  detect the cell's own ``ceiling - random`` and the seeds 0.8 power would need;
* ``share``: ``(easy - random) / (ceiling - random)`` with its interval
  (:func:`realspo.arms.analysis.share_of_ceiling`);
* the candidate pairs' Spearman(similarity, |reward gap|) (selection and perceptual similarity),
  the annotator's guess rate and label-error rate (all pairs, and on the same pairs without
  confusion), each the mean over seeds; the label-error rates of the pairs random and easy
  trained on (pooled over seeds).

Written into ``OUT``: ``grid.md`` (the table), ``grid.csv``, ``grid-results.json`` and
``grid_heatmap.png`` (the share per cell; a ``*`` marks a cell whose ``easy - random`` has a
Holm-adjusted p below 0.05 in the grid's family).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np

from realspo.arms.analysis import paired_difference, share_of_ceiling
from realspo.arms.plan import budget_label
from realspo.arms.records import DemoRun, RunRecord
from realspo.evaluation.multiple_comparisons import RULE, add_power, adjust_family
from realspo.evaluation.statistics import mde_text
from realspo.grid.spec import ARMS, GridSpec, cell_dir, cell_file, cell_plan, grid_config
from realspo.outputs import atomic_path, write_json, write_rows

COLUMNS = ("K", "RHO", "seeds", "easy_minus_random", "easy_ci_low", "easy_ci_high", "easy_mde",
           "easy_p", "easy_p_holm", "easy_q_bh", "easy_power", "easy_seeds_for_power",
           "ceiling_minus_random", "ceiling_ci_low", "ceiling_ci_high", "ceiling_mde",
           "noiseless_minus_random", "noiseless_ci_low", "noiseless_ci_high", "share",
           "share_ci_low", "share_ci_high", "spearman_similarity_gap", "spearman_perceptual_gap",
           "guess_rate", "label_error_all", "label_error_all_k0", "label_error_random",
           "label_error_easy", "label_error_ceiling")


def _read(path: Path) -> dict[str, Any] | None:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None


def cell_summary(spec: GridSpec, out: Path, confusion: float, coupling: float) -> dict[str, Any]:
    """One row of the table (None for numbers that no finished seed supports)."""
    plan = cell_plan(spec, coupling, confusion)
    main = budget_label(plan.budget)
    demo = DemoRun(plan, Path(), {}, [], {}, {}, {})
    pairs = []
    for seed in plan.seeds:
        files = {arm: _read(cell_file(out, coupling, seed, confusion, arm)) for arm in (*ARMS, "pairs")}
        baseline = _read(cell_dir(out, coupling, seed) / "baseline.json")
        if baseline is None or any(v is None for v in files.values()):
            continue
        demo.baseline[seed] = np.asarray(baseline["rewards"])
        demo.runs += [RunRecord(seed, arm, "dpo", main, files[arm]["labels"],
                                np.asarray(files[arm]["rewards"])) for arm in ARMS]
        pairs.append(files["pairs"])
    row: dict[str, Any] = {c: None for c in COLUMNS}
    row.update(K=confusion, RHO=coupling, seeds=len(demo.baseline))
    if not demo.baseline:
        return row
    arm = {a: [r for r in demo.runs if r.strategy == a] for a in ARMS}
    diffs = {}
    for name in ("easy", "ceiling", "noiseless"):
        d = diffs[name] = paired_difference(demo, arm[name], arm["random"])
        row[f"{name}_minus_random"] = d["difference"]
        row[f"{name}_ci_low"], row[f"{name}_ci_high"] = d["ci_low"], d["ci_high"]
        if name != "noiseless":
            row[f"{name}_mde"] = d["mde"]
    add_power(diffs["easy"], diffs["ceiling"]["difference"], len(demo.baseline))
    row.update(easy_p=diffs["easy"]["p"], easy_power=diffs["easy"]["power"],
               easy_seeds_for_power=diffs["easy"]["seeds_for_power"])
    share = share_of_ceiling(demo, arm["easy"], arm["random"], arm["ceiling"])
    row.update(share=share["estimate"], share_ci_low=share["ci_low"], share_ci_high=share["ci_high"])
    for col, key in (("spearman_similarity_gap", "spearman_similarity_reward_gap"),
                     ("spearman_perceptual_gap", "spearman_perceptual_reward_gap"),
                     ("guess_rate", "guess_rate"), ("label_error_all", "label_error_rate"),
                     ("label_error_all_k0", "label_error_rate_k0")):
        values = [p[key] for p in pairs if p.get(key) is not None]
        row[col] = float(np.mean(values)) if values else None
    for name in ("random", "easy", "ceiling"):
        ordered = sum(r.labels["n_ordered"] for r in arm[name])
        row[f"label_error_{name}"] = sum(r.labels["n_errors"] for r in arm[name]) / ordered \
            if ordered else None
    return row


def _f(value: Any, digits: int = 3, sign: bool = False) -> str:
    if value is None or (isinstance(value, float) and not np.isfinite(value)):
        return "-"
    return f"{value:+.{digits}f}" if sign else f"{value:.{digits}f}"


def _significant(row: dict[str, Any]) -> bool:
    """The cell's easy - random has a Holm-adjusted p below 0.05 in the grid's family."""
    p = row.get("easy_p_holm")
    return p is not None and np.isfinite(p) and p < 0.05


def adjust_grid(rows: list[dict[str, Any]]) -> None:
    """Holm p and BH q of every cell's ``easy - random`` over the grid's family (in place)."""
    entries = [{"p": r["easy_p"] if r.get("easy_p") is not None else float("nan")} for r in rows]
    adjust_family(entries, "easy_minus_random")
    for r, e in zip(rows, entries, strict=True):
        finite = np.isfinite(e["p_holm"])
        r["easy_p_holm"] = e["p_holm"] if finite else None
        r["easy_q_bh"] = e["q_bh"] if finite else None


def _ci(row: dict[str, Any], name: str) -> str:
    lo, hi = row[f"{name}_ci_low"], row[f"{name}_ci_high"]
    mark = " *" if name == "easy" and _significant(row) else ""
    return f"{_f(row[name if name == 'share' else f'{name}_minus_random'], sign=True)} " \
           f"[{_f(lo, sign=True)}, {_f(hi, sign=True)}]{mark}"


def markdown(rows: list[dict[str, Any]], config: dict[str, Any]) -> str:
    """The table as markdown (``*``: easy - random's Holm-adjusted p < 0.05)."""
    plan = config["plan"]
    family = sum(r.get("easy_p") is not None for r in rows)
    seeds = max([r["seeds"] for r in rows] + [1])
    lines = [
        "# REAL's premise, built in: easy vs random over annotator confusion K and world coupling RHO",
        "",
        f"Preset `{plan['preset']}`, seeds {plan['seeds']}, main budget {plan['budget']}, DPO "
        f"({plan['steps']} steps), {plan['n_train_prompts']} training prompts x "
        f"{plan['num_candidates']} candidates, {plan['n_test_prompts']} held-out prompts. "
        "Differences are of win rates over the SFT model (the grid records one sample per "
        "held-out prompt, so the win rate is its outcome), paired, with hierarchical-bootstrap "
        "95% intervals (seeds, then prompts). The family: every cell's easy - random, "
        f"{family} comparisons, adjusted by Holm and Benjamini-Hochberg; {RULE}; `*` marks "
        f"easy - random with Holm p < 0.05. mde = {mde_text(seeds)}. Power: to detect the "
        "cell's own ceiling - random (noncentral t, seeds - 1 df); seeds: needed for 0.8 "
        "power at that effect from the SD over seeds. share = "
        "(easy - random) / (ceiling - random). Spearman: similarity vs |reward gap| over all "
        "candidate pairs (selection = SFT hidden states; perceptual = the annotator's TF-IDF). "
        "Label errors: all candidate pairs (with K; without confusion), and the pairs each arm "
        "trained on.",
        "",
        "| K | RHO | seeds | easy - random | mde | p | Holm p | BH q | power | seeds for 0.8 "
        "| ceiling - random | mde | noiseless - random "
        "| share | Spearman sel. | Spearman perc. | guess rate | label err. all (K=0) "
        "| label err. random | easy | ceiling |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        lines.append(
            f"| {r['K']:g} | {r['RHO']:g} | {r['seeds']} | {_ci(r, 'easy')} | {_f(r['easy_mde'])} "
            f"| {_f(r['easy_p'])} | {_f(r['easy_p_holm'])} | {_f(r['easy_q_bh'])} "
            f"| {_f(r['easy_power'], 2)} | {r['easy_seeds_for_power'] or '-'} "
            f"| {_ci(r, 'ceiling')} | {_f(r['ceiling_mde'])} | {_ci(r, 'noiseless')} "
            f"| {_ci(r, 'share')} | {_f(r['spearman_similarity_gap'], sign=True)} "
            f"| {_f(r['spearman_perceptual_gap'], sign=True)} | {_f(r['guess_rate'])} "
            f"| {_f(r['label_error_all'])} ({_f(r['label_error_all_k0'])}) "
            f"| {_f(r['label_error_random'])} | {_f(r['label_error_easy'])} "
            f"| {_f(r['label_error_ceiling'])} |")
    return "\n".join(lines) + "\n"


def plot_heatmap(rows: list[dict[str, Any]], spec: GridSpec, path: Path) -> None:
    """(easy - random) / (ceiling - random) per cell, RHO down, K across; ``*``: the easy -
    random Holm-adjusted p is below 0.05."""
    from realspo.arms.plotting import new_figure, save_figure

    ks, rhos = list(spec.confusions), list(spec.couplings)
    grid = np.full((len(rhos), len(ks)), np.nan)
    fig, ax = new_figure(figsize=(1.9 * len(ks) + 2.2, 1.4 * len(rhos) + 1.6))
    for r in rows:
        i, j = rhos.index(r["RHO"]), ks.index(r["K"])
        if r["share"] is not None and np.isfinite(r["share"]):
            grid[i, j] = r["share"]
    limit = max(1.0, float(np.nanmax(np.abs(grid)))) if np.isfinite(grid).any() else 1.0
    image = ax.imshow(np.clip(grid, -limit, limit), cmap="RdBu", vmin=-limit, vmax=limit,
                      aspect="auto")
    for r in rows:
        i, j = rhos.index(r["RHO"]), ks.index(r["K"])
        star = "*" if _significant(r) else ""
        text = (f"{_f(r['share'], 2, sign=True)}{star}\neasy-rnd {_f(r['easy_minus_random'], 3, True)}"
                f"\nceil-rnd {_f(r['ceiling_minus_random'], 3, True)}\nseeds: {r['seeds']}")
        dark = np.isfinite(grid[i, j]) and abs(grid[i, j]) > 0.6 * limit
        ax.text(j, i, text, ha="center", va="center", fontsize=7.5,
                color="white" if dark else "black", fontweight="bold" if star else "normal")
    ax.set_xticks(range(len(ks)), [f"K={k:g}" for k in ks])
    ax.set_yticks(range(len(rhos)), [f"RHO={r:g}" for r in rhos])
    ax.set_xlabel("annotator confusion K (guess with probability s^K)")
    ax.set_ylabel("world coupling RHO")
    ax.set_title("(easy - random) / (ceiling - random)\n* : easy - random Holm p < 0.05",
                 fontsize=9)
    fig.colorbar(image, ax=ax, label="share of the ceiling's gain")
    save_figure(fig, path)


def write_grid_report(spec: GridSpec, out: Path) -> dict[str, Any]:
    """Write grid.md, grid.csv, grid-results.json and grid_heatmap.png; returns the results."""
    rows = [cell_summary(spec, out, k, rho) for rho in spec.couplings for k in spec.confusions]
    adjust_grid(rows)
    config = grid_config(spec)
    results = {"config": config, "columns": list(COLUMNS), "cells": rows}
    write_json(out / "grid-results.json", results, overwrite=True)
    write_rows(out / "grid.csv", rows, overwrite=True)
    with atomic_path(out / "grid.md", overwrite=True) as tmp:
        tmp.write_text(markdown(rows, config), encoding="utf-8")
    plot_heatmap(rows, spec, out / "grid_heatmap.png")
    return results
