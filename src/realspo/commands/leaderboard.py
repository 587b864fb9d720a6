"""``realspo leaderboard``: every selection strategy of the registry, plus the controls
``ceiling`` and ``noiseless``, at equal label budgets in the offline proving ground, in one
round and in R rounds of active labeling; a report with hierarchical intervals, differences to
``random`` with their mde, shares of the ceiling's gain and a label-efficiency plot (see
:mod:`realspo.leaderboard.run`).

Examples::

    realspo leaderboard --out runs/leaderboard             # 3 seeds, 180 prompts, 90 labels per arm
    realspo leaderboard --quick --out /tmp/lb-quick        # a smoke run (1 seed, small everything, no verdicts)
    realspo leaderboard --arms random margin design ceiling --rounds 2 --out runs/lb
"""

from __future__ import annotations

import argparse
import os
from dataclasses import dataclass

from realspo.config import add_options, check_seed, option, resolve
from realspo.errors import ConfigError
from realspo.selection.budget import parse_budget


@dataclass
class LeaderboardConfig:
    out: str = option(help="report directory (report.md, results.json, figures)", metavar="DIR",
                      path="output")
    overwrite: bool = option(False, "replace an existing --out")
    quick: bool = option(False, "a small, fast run (1 seed, 30 prompts, the quick SFT model; "
                                "numbers are not meaningful: the report makes no verdicts)")
    seed: int = option(0, "first seed; seeds are SEED, SEED+1, ...")
    seeds: int | None = option(None, "number of seeds (default: 3; 1 with --quick)", metavar="N")
    budget: str = option("0.5", "labels of every arm: a fraction of the training prompts or a "
                                "count (one pair per prompt)", metavar="N|FRACTION")
    rounds: int = option(3, "rounds of the multi-round setting (the budget split near-equally)")
    arms: list[str] | None = option(None, "arms to run (default: every registered strategy, "
                                          "then ceiling and noiseless)", metavar="ARM")
    device: str = option("auto", "device for sampling, embedding and training",
                         choices=("auto", "cpu", "cuda", "mps"))

    def validate(self) -> None:
        if self.seeds is not None and self.seeds < 1:
            raise ConfigError(f"--seeds must be at least 1, got {self.seeds}")
        if self.rounds < 1:
            raise ConfigError(f"--rounds must be at least 1, got {self.rounds}")
        parse_budget(self.budget)
        check_seed(self.seed)
        check_seed(self.seed + (self.seeds or 1) - 1, "--seed + --seeds - 1")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    add_options(parser, LeaderboardConfig)


def run(args: argparse.Namespace) -> int:
    from realspo.commands.demo import _training_device
    from realspo.leaderboard.plan import make_leaderboard_plan
    from realspo.leaderboard.run import run_leaderboard
    from realspo.models import check_device
    from realspo.outputs import check_dir_output, output_lock

    cfg = resolve(LeaderboardConfig, args)
    plan = make_leaderboard_plan("quick" if cfg.quick else "default", seed=cfg.seed,
                                 seeds=cfg.seeds, budget=cfg.budget, rounds=cfg.rounds,
                                 arms=tuple(cfg.arms) if cfg.arms else None, device=cfg.device)
    check_dir_output(cfg.out, cfg.overwrite, kind="leaderboard-report")
    check_device(cfg.device)
    with output_lock(cfg.out), _training_device(cfg.device):  # one run per output
        run_leaderboard(plan, cfg.out, overwrite=cfg.overwrite)
    print(os.path.join(cfg.out, "report.md"))
    return 0
