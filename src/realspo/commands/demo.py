"""``realspo demo``: generate, select, label, train and evaluate in the offline proving ground,
and write a report of whether REAL's selection and SPO's loss helped (see :mod:`realspo.demo.run`;
presets and sizes: :mod:`realspo.demo.plan`).

Examples::

    realspo demo --out runs/demo                       # the default run (3 seeds, ~7 min on 2 cores + the first SFT build)
    realspo demo --quick --out /tmp/demo-quick         # a smoke run (1 seed, small everything, no verdicts)
    realspo demo --full --seeds 5 --out runs/demo-full # more seeds and budgets
"""

from __future__ import annotations

import argparse
import contextlib
import os
from dataclasses import dataclass

from realspo.config import add_options, check_seed, option, resolve
from realspo.demo.plan import PRESETS, make_plan
from realspo.errors import ConfigError
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

    def validate(self) -> None:
        if self.quick and self.full:
            raise ConfigError("--quick and --full: give at most one of them")
        if self.seeds is not None and self.seeds < 1:
            raise ConfigError(f"--seeds must be at least 1, got {self.seeds}")
        parse_budget(self.budget)
        check_seed(self.seed)
        check_seed(self.seed + (self.seeds or 1) - 1, "--seed + --seeds - 1")

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

    cfg = resolve(DemoConfig, args)
    plan = make_plan(cfg.preset, seed=cfg.seed, seeds=cfg.seeds, budget=cfg.budget,
                     device=cfg.device)
    with _training_device(cfg.device):
        run_demo(plan, cfg.out, overwrite=cfg.overwrite)
    print(os.path.join(cfg.out, "report.md"))
    return 0
