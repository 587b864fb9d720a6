"""What a grid of ``realspo demo --grid`` is (:class:`GridSpec`), where its files live, and the
check that a rerun continues the same grid (:func:`open_grid`). Light to import (no torch): the
command reads it; the work is in :mod:`realspo.grid.run`.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from realspo.arms.plan import DemoPlan, check_knobs, make_plan, plan_dict
from realspo.errors import ConfigError
from realspo.outputs import check_location, mark_output, output_kind, write_json

GRID_KIND = "demo-grid"
ARMS = ("random", "easy", "ceiling", "noiseless")


@dataclass(frozen=True)
class GridSpec:
    """What a grid runs: the knobs' values and the demo preset, seeds and budget of each cell."""

    confusions: tuple[float, ...] = (0.0, 1.0, 4.0)
    couplings: tuple[float, ...] = (0.0, 0.5, 1.0)
    preset: str = "default"
    seed: int = 0
    seeds: int | None = None
    budget: str = "0.5"
    device: str = "auto"


def parse_values(text: str, flag: str) -> tuple[float, ...]:
    """``"0,1,4"`` -> ``(0.0, 1.0, 4.0)``; ConfigError for an empty list, a repeat or a non-number."""
    try:
        values = tuple(float(v) for v in text.split(",") if v.strip())
    except ValueError:
        raise ConfigError(f"{flag}: expected comma-separated numbers, got {text!r}") from None
    if not values or len(set(values)) != len(values):
        raise ConfigError(f"{flag}: expected distinct comma-separated numbers, got {text!r}")
    return values


def cell_plan(spec: GridSpec, coupling: float, confusion: float = 0.0) -> DemoPlan:
    """The demo plan of one cell: the preset's sizes, the four arms, DPO, the main budget."""
    plan = make_plan(spec.preset, seed=spec.seed, seeds=spec.seeds, budget=spec.budget,
                     device=spec.device, annotator_confusion=confusion, world_coupling=coupling)
    return replace(plan, strategies=("random", "easy"), controls=("ceiling", "noiseless"),
                   losses=("dpo",), efficiency_budgets=())


def grid_config(spec: GridSpec) -> dict[str, Any]:
    """What fixes the grid's numbers (``OUT/grid.json``); the device does not enter."""
    for value in spec.confusions:
        check_knobs(value, 0.0)
    for value in spec.couplings:
        check_knobs(0.0, value)
    plan = plan_dict(cell_plan(spec, spec.couplings[0]))
    # the device, and what the grid's cells never use (one sample per held-out prompt, the
    # default world, the SFT model's samples), do not enter: grids run before those options
    # existed stay the same grid
    for key in ("device", "annotator_confusion", "eval_samples", "candidates"):
        plan.pop(key)
    plan["world"].pop("coupling")
    plan["world"].pop("kind")
    return {"confusions": list(spec.confusions), "couplings": list(spec.couplings),
            "arms": list(ARMS), "plan": plan}


def cell_dir(out: Path, coupling: float, seed: int) -> Path:
    return out / "cells" / f"rho{coupling:g}" / f"seed{seed}"


def cell_file(out: Path, coupling: float, seed: int, confusion: float, arm: str) -> Path:
    """The file of one training run (``arm``) or of the pairs' statistics (``arm="pairs"``);
    ``noiseless`` is one file per seed and RHO."""
    name = "noiseless.json" if arm == "noiseless" else f"k{confusion:g}-{arm}.json"
    return cell_dir(out, coupling, seed) / name


def open_grid(spec: GridSpec, out: str | Path) -> Path:
    """Create ``out`` for a new grid, or check that an existing one is this grid (else refuse)."""
    out = Path(out)
    config = json.loads(json.dumps(grid_config(spec)))
    if out.exists():
        if output_kind(out) != GRID_KIND:
            raise ConfigError(f"{out} exists and is not a realspo demo grid; give a new --out "
                              "(a grid resumes only in its own directory)")
        try:
            old = json.loads((out / "grid.json").read_text(encoding="utf-8"))
        except (OSError, ValueError) as exc:
            raise ConfigError(f"{out}: cannot read grid.json ({exc})") from None
        if old != config:
            changed = sorted(k for k in {**old, **config} if old.get(k) != config.get(k))
            plan = sorted(k for k in {**old.get("plan", {}), **config["plan"]}
                          if old.get("plan", {}).get(k) != config["plan"].get(k))
            raise ConfigError(f"{out} holds a grid with another configuration (differs in: "
                              f"{', '.join(plan if changed == ['plan'] else changed)}); "
                              "rerun it with its own options or give a new --out")
        return out
    check_location(out)
    out.mkdir(parents=True)
    write_json(out / "grid.json", config)
    mark_output(out, GRID_KIND)
    return out
