"""``realspo demo --grid``: REAL's `easy` against `random` over a grid of the premise's knobs.

The grid crosses annotator confusion K (``--grid-confusions``) with world coupling RHO
(``--grid-couplings``) (:mod:`realspo.arms.knobs`) and, in every cell and for every seed,
trains four arms with DPO at the main budget: ``random``, ``easy`` (REAL), ``ceiling`` (the
oracle's largest-gap pairs) and ``noiseless`` (random's pairs, perfect labels)
(:mod:`realspo.arms.controls`). Everything else is the demo's (preset, seeds, budget), and each
training run is the demo's own (:mod:`realspo.arms.train_and_evaluate`): the K = 0, RHO = 0 cell is the
default demo's ``random``, ``easy``, ``ceiling`` and ``noiseless`` runs.

Order of work, per seed and RHO: the world and its SFT model (built once per RHO, cached), the
candidates and the SFT model's held-out samples (once), then per K the annotator's labels
(the same guess draws for every K) and the arms. ``noiseless`` does not depend on K (its labels
are the oracle's; an oracle tie keeps the K = 0 label) and is trained once per seed and RHO.

Progress. Each finished training run is a file ``OUT/cells/rho<RHO>/seed<S>/k<K>-<arm>.json``
(its held-out oracle rewards and label statistics), written atomically; so are the SFT
model's rewards (``baseline.json``) and the candidate pairs' statistics (``k<K>-pairs.json``).
A rerun with the same ``--out`` skips every file that exists, so an interrupted grid resumes
where it stopped; a rerun whose configuration differs from ``OUT/grid.json`` is refused. The
table and the heatmap (:mod:`realspo.grid.report`) are rewritten from the files at the end
of every run.
"""

from __future__ import annotations

import logging
import shutil
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

from realspo.arms.candidate_pool import build_candidates, selected_pairs
from realspo.arms.controls import control_selection
from realspo.arms.knobs import candidate_effects, with_confusion
from realspo.arms.plan import DemoPlan
from realspo.arms.train_and_evaluate import evaluate_run, label_summary, train_run, training_rows
from realspo.grid.spec import (
    ARMS,
    GridSpec,
    cell_dir,
    cell_file,
    cell_plan,
    open_grid,
)
from realspo.outputs import write_json, write_rows

log = logging.getLogger(__name__)

def run_grid(spec: GridSpec, out: str | Path) -> int:
    """Run (or resume) the grid in ``out``; returns the number of training runs done now. The
    table: :func:`realspo.grid.report.write_grid_report`."""
    out = open_grid(spec, out)
    started = time.perf_counter()
    trained = 0
    for seed in cell_plan(spec, spec.couplings[0]).seeds:  # seeds outermost: a partial grid
        for coupling in spec.couplings:                    # has every cell at fewer seeds
            trained += run_seed_cells(spec, out, coupling, seed, started)
    log.info("[%.0fs] grid finished: %d training runs now", time.perf_counter() - started, trained)
    return trained


def _missing(spec: GridSpec, out: Path, coupling: float, seed: int) -> list[tuple[float, str]]:
    todo = [(k, arm) for k in spec.confusions for arm in (*ARMS, "pairs")
            if arm != "noiseless" or k == spec.confusions[0]]
    return [(k, arm) for k, arm in todo if not cell_file(out, coupling, seed, k, arm).exists()]


def run_seed_cells(spec: GridSpec, out: Path, coupling: float, seed: int, started: float) -> int:
    """Every missing file of one seed and RHO; returns the number of training runs done."""
    from realspo.generation.sampling import load_generator_model
    from realspo.proving_ground.sft import get_sft_model
    from realspo.proving_ground.world import build_world

    missing = _missing(spec, out, coupling, seed)
    if not missing and (cell_dir(out, coupling, seed) / "baseline.json").exists():
        log.info("seed %d, RHO=%g: done before, skipped", seed, coupling)
        return 0
    plan = cell_plan(spec, coupling)
    world = build_world(plan.world)
    sft_dir = get_sft_model(plan.world, plan.sft)
    model, tokenizer = load_generator_model(str(sft_dir), device=plan.device)
    base = build_candidates(world, model, tokenizer, plan, seed, {})
    del model
    baseline_file = cell_dir(out, coupling, seed) / "baseline.json"
    if not baseline_file.exists():
        rewards = evaluate_run(sft_dir, plan, world, seed)
        write_json(baseline_file, {"rewards": rewards.tolist(), "sft_model": sft_dir.name})
    ranked = {s: selected_pairs(base, s, seed) for s in ("random", "easy")}
    n = resolve_n(plan, len(ranked["random"]))
    trained = 0
    for confusion in spec.confusions:
        cands = with_confusion(base, world, confusion, seed)
        pairs_file = cell_file(out, coupling, seed, confusion, "pairs")
        if not pairs_file.exists():
            write_json(pairs_file, candidate_effects(cands))
        for arm in ARMS:
            path = cell_file(out, coupling, seed, confusion, arm)
            if path.exists() or (arm == "noiseless" and confusion != spec.confusions[0]):
                continue
            source = base if arm == "noiseless" else cands
            rows, labels = (ranked[arm], None) if arm in ranked else \
                control_selection(arm, source, ranked, seed)
            t0 = time.perf_counter()
            rewards = train_cell(plan, sft_dir, world, source, rows[:n], labels, seed)
            write_json(path, {"rewards": rewards.tolist(),
                              "labels": label_summary(source, rows[:n], labels),
                              "seconds": round(time.perf_counter() - t0, 1)})
            trained += 1
            log.info("[%.0fs] seed %d RHO=%g K=%g %s: mean reward %.3f, %.0fs",
                     time.perf_counter() - started, seed, coupling, confusion, arm,
                     rewards.mean(), time.perf_counter() - t0)
    return trained


def resolve_n(plan: DemoPlan, eligible: int) -> int:
    """Labels of the main budget (as the demo: a fraction of the eligible prompts, or a count)."""
    from realspo.selection.budget import resolve_budget

    return resolve_budget(plan.budget, eligible)


def train_cell(plan: DemoPlan, sft_dir: Path, world: Any, cands: Any, rows: list[int],
               labels: np.ndarray | None, seed: int) -> np.ndarray:
    """Train DPO on ``rows`` from the SFT model and return its held-out oracle rewards (T,)."""
    with tempfile.TemporaryDirectory(prefix="realspo-grid-") as scratch:
        data = Path(scratch) / "pairs.jsonl"
        write_rows(data, training_rows(cands, rows, labels))
        train_run(plan, sft_dir, data, Path(scratch) / "model", "dpo", seed, Path(scratch))
        rewards = evaluate_run(Path(scratch) / "model", plan, world, seed)
        shutil.rmtree(Path(scratch) / "model")
    return rewards


