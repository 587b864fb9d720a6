"""The plan and the records of ``realspo leaderboard`` (:mod:`realspo.leaderboard.run` runs
it, :mod:`realspo.leaderboard.report` reports it): presets and budgets as data, one trained
model's record, the whole run, and the raw file (``runs.json``: every held-out reward) from
which the report can be rebuilt without rerunning (:func:`load_run`).
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np

from realspo.arms.plan import DemoPlan, make_plan
from realspo.errors import ConfigError
from realspo.outputs import write_json
from realspo.selection.budget import resolve_budget
from realspo.selection.strategies import strategy_names

SETTINGS = ("one-round", "rounds")
CONTROL_ARMS = ("ceiling", "noiseless")  # demo controls the leaderboard runs beside the registry

# Sizes per preset: the demo preset it builds on, and what the leaderboard changes.
PRESETS: dict[str, dict[str, Any]] = {
    "quick": dict(base="quick", n_train_prompts=30, n_test_prompts=40, steps=6),
    # 180 prompts: the 3 x 11 arms' candidate sampling in rounds 2-3 dominates the cost; with
    # other jobs on the 2 cores (load 7-10) an arm of one seed took about 75 s at this size
    "default": dict(base="default", n_train_prompts=180, n_test_prompts=200),
}


@dataclass(frozen=True)
class LeaderboardPlan:
    """What one leaderboard run does: the demo plan it shares (world, SFT model, sampling,
    annotator, training hyper-parameters, budget, seeds), the rounds, the arms."""

    demo: DemoPlan
    rounds: int = 3
    arms: tuple[str, ...] = (*strategy_names(), *CONTROL_ARMS)
    overrides: dict[str, Any] = field(default_factory=dict)  # make_leaderboard_plan's extra sizes

    @property
    def preset(self) -> str:
        return self.demo.preset

    @property
    def total_labels(self) -> int:
        """B: the labels of every arm, in both settings."""
        return resolve_budget(self.demo.budget, self.demo.n_train_prompts)

    def round_budgets(self) -> list[int]:
        """B_1..B_R, near-equal, earlier rounds taking the remainder."""
        b, r = self.total_labels, self.rounds
        return [b // r + (1 if i < b % r else 0) for i in range(r)]

    def steps_for(self, labels: int) -> int:
        """Optimizer steps of a run on ``labels`` pairs: the same epochs for every run. (A
        1-step run does not move the model: its one step is the learning-rate warmup from 0.)"""
        return max(1, round(self.demo.steps * labels / self.total_labels))


def make_leaderboard_plan(preset: str = "default", *, seed: int = 0, seeds: int | None = None,
                          budget: str | int | float = 0.5, rounds: int = 3,
                          arms: tuple[str, ...] | None = None, device: str = "auto",
                          **overrides: Any) -> LeaderboardPlan:
    """The plan of a preset (``quick``, ``default``) with the user's overrides (``overrides``:
    fields of :class:`realspo.arms.plan.DemoPlan`, e.g. ``steps`` for tests)."""
    if preset not in PRESETS:
        raise ConfigError(f"unknown leaderboard preset {preset!r}; expected one of {', '.join(PRESETS)}")
    sizes = dict(PRESETS[preset])
    base = sizes.pop("base")
    given = dict(overrides)
    demo = make_plan(base, seed=seed, seeds=seeds, budget=budget, device=device)
    demo = replace(demo, **{**sizes, **overrides})
    if rounds < 1:
        raise ConfigError(f"--rounds must be at least 1, got {rounds}")
    arms = tuple(arms) if arms else LeaderboardPlan.arms
    known = (*strategy_names(), *CONTROL_ARMS)
    repeated = sorted({arm for arm in arms if arms.count(arm) > 1})
    if repeated:
        raise ConfigError(f"--arms: {', '.join(repeated)} given more than once; name each arm once")
    for arm in arms:
        if arm not in known:
            raise ConfigError(f"--arms: unknown arm {arm!r}; expected some of {', '.join(known)}")
    if demo.n_train_prompts > demo.world.n_train_prompts:
        raise ConfigError(f"the leaderboard needs {demo.n_train_prompts} training prompts; the "
                          f"world has {demo.world.n_train_prompts}")
    plan = LeaderboardPlan(demo, rounds, arms, given)
    if plan.total_labels > demo.n_train_prompts or plan.total_labels < rounds:
        raise ConfigError(f"--budget: {plan.total_labels} labels for {demo.n_train_prompts} "
                          f"prompts and {rounds} rounds (one pair per prompt, one per round at least)")
    return plan


@dataclass
class ArmRecord:
    """One trained model: an arm, a setting (``one-round`` or ``rounds``), a round."""

    seed: int
    arm: str
    setting: str
    round: int
    n_labels: int                  # this run's labels
    cumulative_labels: int         # labels spent up to and including this run
    steps: int
    labels: dict[str, Any]         # realspo.arms.train_and_evaluate.label_summary of this run's pairs
    rewards: np.ndarray            # (T,) oracle rewards of its held-out samples
    seconds: float = 0.0
    extra: dict[str, Any] = field(default_factory=dict)


@dataclass
class LeaderboardRun:
    plan: LeaderboardPlan
    sft_dir: Path
    baseline: dict[int, np.ndarray] = field(default_factory=dict)
    records: list[ArmRecord] = field(default_factory=list)
    timings: dict[str, float] = field(default_factory=dict)
    # seed -> per-prompt Spearman(similarity, |gap|) of its first-round candidates
    # (realspo.arms.premise_check): whether REAL's premise holds in this run
    premise: dict[int, list[float]] = field(default_factory=dict)


RAW = "runs.json"


def save_run(lb: LeaderboardRun, out: Path) -> None:
    """``runs.json``: the plan's arguments, the SFT rewards and every record with its rewards."""
    write_json(out / RAW, {
        "plan": {"preset": lb.plan.preset, "seeds": list(lb.plan.demo.seeds),
                 "budget": lb.plan.demo.budget, "rounds": lb.plan.rounds, "arms": list(lb.plan.arms),
                 "device": lb.plan.demo.device, "overrides": lb.plan.overrides},
        "sft_dir": str(lb.sft_dir), "baseline": {str(s): b.tolist() for s, b in lb.baseline.items()},
        "records": [asdict(r) | {"rewards": r.rewards.tolist()} for r in lb.records],
        "timings": lb.timings, "premise": {str(s): v for s, v in lb.premise.items()}},
        overwrite=True)


def load_run(out: str | Path) -> LeaderboardRun:
    """The run saved in ``out/runs.json`` (to rebuild its report)."""
    raw = json.loads((Path(out) / RAW).read_text(encoding="utf-8"))
    if "proxy" in raw:
        # Its reward-proxy arms had a proxy fitted on spare prompts' labels (16x the budget):
        # a report rebuilt with today's label counts would misstate what they spent.
        raise ConfigError(f"{Path(out) / RAW}: written before the reward-proxy arms paid for "
                          f"their proxy's labels from their budget; rerun realspo leaderboard")
    p = raw["plan"]
    plan = make_leaderboard_plan(p["preset"], seed=p["seeds"][0], seeds=len(p["seeds"]),
                                 budget=p["budget"], rounds=p["rounds"], arms=tuple(p["arms"]),
                                 device=p["device"], **p["overrides"])
    records = [ArmRecord(**(r | {"rewards": np.asarray(r["rewards"], dtype=np.float64)}))
               for r in raw["records"]]
    return LeaderboardRun(plan, Path(raw["sft_dir"]),
                          {int(s): np.asarray(b, dtype=np.float64) for s, b in raw["baseline"].items()},
                          records, raw["timings"],
                          {int(s): v for s, v in raw.get("premise", {}).items()})
