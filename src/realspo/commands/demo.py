"""``realspo demo``: generate, select, label, train and evaluate in the offline proving ground,
and write a report of whether REAL's selection and SPO's loss helped (see :mod:`realspo.demo.run`;
presets and sizes: :mod:`realspo.arms.plan`).

Examples::

    realspo demo --out runs/demo                       # the default run (3 seeds, ~7 min on 2 cores + the first SFT build)
    realspo demo --quick --out /tmp/demo-quick         # a smoke run (1 seed, small everything, no verdicts)
    realspo demo --full --seeds 5 --out runs/demo-full # more seeds and budgets
    realspo demo --world premise --out runs/premise    # a positive control: REAL's premise holds
    realspo demo --world omissions --out runs/omissions  # a positive control for SPO
    realspo demo --grid --out runs/grid                # easy vs random over K x RHO (resumable)
"""

from __future__ import annotations

import argparse
import contextlib
import os
from dataclasses import dataclass

from realspo.arms.plan import PREMISE_CONFUSION, PRESETS, check_knobs, make_plan
from realspo.config import add_options, check_seed, option, resolve
from realspo.errors import ConfigError
from realspo.grid.spec import GridSpec, parse_values
from realspo.selection.budget import parse_budget


def _seeds(preset: str) -> str:
    n = PRESETS[preset]["seeds"]
    return f"{n} seed" + ("s" if n != 1 else "")


@dataclass
class DemoConfig:
    out: str = option(help="report directory (report.md, results.json, figures)", metavar="DIR",
                      path="output")
    overwrite: bool = option(False, "replace an existing --out")
    quick: bool = option(False, f"a small, fast run ({_seeds('quick')}, "
                                f"{PRESETS['quick']['n_train_prompts']} prompts, a small SFT model; "
                                "numbers are not meaningful: the report makes no verdicts)")
    full: bool = option(False, f"a larger run: {_seeds('full')}, "
                               f"{PRESETS['full']['n_train_prompts']} training prompts, "
                               f"{len(PRESETS['full']['efficiency_budgets'])} budgets")
    seed: int = option(0, "first seed; seeds are SEED, SEED+1, ...")
    seeds: int | None = option(None, "number of seeds (default: "
                                     + ", ".join(f"{p['seeds']} {name}" for name, p in PRESETS.items())
                                     + ")", metavar="N")
    budget: str = option("0.5", "labels of the main comparison: a fraction of the training prompts "
                                "(0.5 = half of them) or a count", metavar="N|FRACTION")
    device: str = option("auto", "device for sampling, embedding and training; cpu also keeps "
                                 "training on the CPU", choices=("auto", "cpu", "cuda", "mps"))
    world: str = option("default", "the proving-ground world: default; premise (REAL's "
                                   "premise holds: quality shows on the surface as an ordinal "
                                   "ladder of hedges, and the annotator is confused by look-alike "
                                   "pairs); omissions (SPO's premise holds: errors are missing "
                                   "facts, so removing key content lowers the reward)",
                        choices=("default", "premise", "omissions"))
    annotator_confusion: float | None = option(
        None, "K >= 0: the simulated annotator guesses at random with probability s^K, s = the "
              "pair's perceptual (TF-IDF) similarity; 0 = off, 1 = guess with probability s, "
              f"larger K confuses only near-identical pairs (default: {PREMISE_CONFUSION:g} with "
              "--world premise, else 0)", metavar="K")
    world_coupling: float = option(
        0.0, "RHO in [0, 1]: with probability RHO a low-quality corpus response is written in "
             "its own register, so quality shows on the surface; 0 = off (the default world); "
             "> 0 builds its own SFT model", metavar="RHO")
    grid: bool = option(False, "run the grid instead: K x RHO (--grid-confusions x "
                               "--grid-couplings) x seeds, arms random, easy, ceiling, noiseless "
                               "(DPO, main budget); resumable: rerun the same command to continue")
    grid_confusions: str = option("0,1,4", "--grid: the values of K", metavar="K,K,...")
    grid_couplings: str = option("0,0.5,1", "--grid: the values of RHO", metavar="RHO,RHO,...")

    def validate(self) -> None:
        if self.quick and self.full:
            raise ConfigError("--quick and --full: give at most one of them")
        if self.seeds is not None and self.seeds < 1:
            raise ConfigError(f"--seeds must be at least 1, got {self.seeds}")
        parse_budget(self.budget)
        check_seed(self.seed)
        check_seed(self.seed + (self.seeds or 1) - 1, "--seed + --seeds - 1")
        check_knobs(self.annotator_confusion or 0.0, self.world_coupling)
        if not self.grid and (self.grid_confusions, self.grid_couplings) != ("0,1,4", "0,0.5,1"):
            raise ConfigError("--grid-confusions and --grid-couplings apply only with --grid")
        if self.grid:
            if self.world != "default":
                raise ConfigError("--grid runs in the default world; --world applies to a single "
                                  "demo run")
            if self.annotator_confusion or self.world_coupling:
                raise ConfigError("--grid sets K and RHO per cell: give --grid-confusions and "
                                  "--grid-couplings instead of --annotator-confusion / "
                                  "--world-coupling")
            if self.overwrite:
                raise ConfigError("--grid resumes in its --out directory; --overwrite does not "
                                  "apply (give a new --out to start afresh)")
            for value in parse_values(self.grid_confusions, "--grid-confusions"):
                check_knobs(value, 0.0)
            for value in parse_values(self.grid_couplings, "--grid-couplings"):
                check_knobs(0.0, value)

    @property
    def preset(self) -> str:
        return "quick" if self.quick else "full" if self.full else "default"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    add_options(parser, DemoConfig)


@contextlib.contextmanager
def _training_device(device: str):
    """``--device cpu``: accelerate (the trainer) otherwise picks a GPU when there is one."""
    if device != "cpu":
        yield
        return
    old = os.environ.get("ACCELERATE_USE_CPU")
    os.environ["ACCELERATE_USE_CPU"] = "1"
    try:
        yield
    finally:
        if old is None:
            os.environ.pop("ACCELERATE_USE_CPU", None)
        else:
            os.environ["ACCELERATE_USE_CPU"] = old


def run(args: argparse.Namespace) -> int:
    from realspo.demo.run import run_demo
    from realspo.models import check_device
    from realspo.outputs import check_dir_output, output_lock

    cfg = resolve(DemoConfig, args)
    if not cfg.grid:  # (a grid resumes in its existing --out)
        check_dir_output(cfg.out, cfg.overwrite, kind="demo-report")
    check_device(cfg.device)
    with output_lock(cfg.out):  # one run per output, before any work
        if cfg.grid:
            return run_grid_command(cfg)
        plan = make_plan(cfg.preset, seed=cfg.seed, seeds=cfg.seeds, budget=cfg.budget,
                         device=cfg.device, annotator_confusion=cfg.annotator_confusion,
                         world_coupling=cfg.world_coupling, world=cfg.world)
        with _training_device(cfg.device):
            run_demo(plan, cfg.out, overwrite=cfg.overwrite)
    print(os.path.join(cfg.out, "report.md"))
    return 0


def run_grid_command(cfg: DemoConfig) -> int:
    """``--grid``: run or resume the grid in ``--out``, then write its table and heatmap."""
    from realspo.grid.report import write_grid_report
    from realspo.grid.run import open_grid, run_grid

    spec = GridSpec(confusions=parse_values(cfg.grid_confusions, "--grid-confusions"),
                    couplings=parse_values(cfg.grid_couplings, "--grid-couplings"),
                    preset=cfg.preset, seed=cfg.seed, seeds=cfg.seeds, budget=cfg.budget,
                    device=cfg.device)
    out = open_grid(spec, cfg.out)  # refuses another grid's directory before any work
    with _training_device(cfg.device):
        run_grid(spec, out)
    write_grid_report(spec, out)
    print(os.path.join(cfg.out, "grid.md"))
    return 0
