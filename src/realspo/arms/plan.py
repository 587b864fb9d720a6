"""The plan of ``realspo demo`` as data: its presets, sizes and hyper-parameters, and the
training runs it implies. Nothing here runs anything (see :mod:`realspo.demo.run`).

A plan is built from a preset (``quick``, ``default``, ``full``: :data:`PRESETS`) by
:func:`make_plan`; :func:`planned_runs` lists one seed's training runs, and
:func:`plan_dict` is the plan as it appears in ``results.json``.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, replace
from typing import Any

from realspo.errors import ConfigError
from realspo.proving_ground.sft import SFTConfig
from realspo.proving_ground.world import WORLD_KINDS, WorldConfig, question_pool_size
from realspo.selection.budget import parse_budget
from realspo.spo.variants import SPOConfig

LOSSES = ("dpo", "dpo+spo")  # training.train with loss="sigmoid", without / with --spo
EFFICIENCY_STRATEGIES = ("random", "easy")
CONTROLS = ("ceiling", "noiseless", "easy-random-prompts")  # demo arms: realspo.arms.controls
PREMISE_CONFUSION = 4.0  # --world premise's annotator confusion K unless one is given


@dataclass(frozen=True)
class DemoPlan:
    """Everything one demo run does; :func:`make_plan` builds it from a preset."""

    preset: str
    seeds: tuple[int, ...]
    world: WorldConfig
    sft: SFTConfig
    n_train_prompts: int          # training prompts that get K candidates each
    n_test_prompts: int           # held-out prompts for evaluation (>= 200 but in --quick)
    budget: int | float           # labels of the main comparison: a count, or a fraction of prompts
    efficiency_budgets: tuple[float, ...]  # fractions for the label-efficiency curve
    num_candidates: int = 4
    max_new_tokens: int = 64
    temperature: float = 1.0
    tau: float = 1.0              # simulated annotator: P(A) = sigmoid((r_A - r_B) / tau)
    flip: float = 0.0
    beta: float = 0.1
    lr: float = 5e-4
    steps: int = 30               # optimizer steps of every training run (the same compute for all)
    batch_size: int = 16
    max_length: int = 128
    spo_weight: float = SPOConfig().weight   # the library defaults (docs/experiments/spo-defaults.md)
    spo_levels: int = SPOConfig().levels
    strategies: tuple[str, ...] = ("random", "easy", "hard", "centroid")
    controls: tuple[str, ...] = CONTROLS  # DPO at the main budget (realspo.arms.controls)
    losses: tuple[str, ...] = LOSSES
    eval_samples: int = 4         # samples per held-out prompt for the mean-reward outcome (sample 0: the win rate's)
    bootstrap_resamples: int = 2000
    device: str = "auto"
    annotator_confusion: float = 0.0  # K: guess with probability s**K (realspo.arms.knobs); 0 off
    candidates: str = "policy"    # "policy": SFT samples; "world": the world's writer (premise world)

    def budget_specs(self) -> list[str]:
        """Budget labels, main first: ``"50%"`` for fractions, ``"120"`` for counts."""
        specs = [budget_label(self.budget)]
        specs += [budget_label(b) for b in self.efficiency_budgets if budget_label(b) not in specs]
        return specs


def budget_label(budget: int | float) -> str:
    """``0.5 -> "50%"``, ``0.125 -> "12.5%"``, ``120 -> "120"`` (a count)."""
    if isinstance(budget, int):
        return str(budget)
    return f"{100 * budget:g}%"


def run_name(strategy: str, loss: str, budget: str) -> str:
    """Directory of one run: ``easy-dpo+spo-50pct`` (a fraction) or ``easy-dpo-120pairs``."""
    size = budget[:-1] + "pct" if budget.endswith("%") else budget + "pairs"
    return f"{strategy}-{loss}-{size}"


# Sizes per preset. The quick SFT model is deliberately small: in --quick its build dominates.
PRESETS: dict[str, dict[str, Any]] = {
    "quick": dict(
        seeds=1, world=WorldConfig(n_train_prompts=160, n_test_prompts=40, responses_per_prompt=6),
        sft=SFTConfig(hidden_size=64, num_layers=2, num_heads=4, intermediate_size=192,
                      vocab_size=512, steps=120, batch_size=16),
        n_train_prompts=40, n_test_prompts=40, efficiency_budgets=(0.5, 1.0), steps=4,
        batch_size=8, max_new_tokens=40, eval_samples=2, bootstrap_resamples=500),
    "default": dict(seeds=3, world=WorldConfig(), sft=SFTConfig(), n_train_prompts=400,
                    n_test_prompts=200, efficiency_budgets=(0.125, 0.25, 0.5, 1.0)),
    "full": dict(seeds=5, world=WorldConfig(), sft=SFTConfig(), n_train_prompts=600,
                 n_test_prompts=200, efficiency_budgets=(0.125, 0.25, 0.375, 0.5, 0.75, 1.0)),
}


def make_plan(preset: str = "default", *, seed: int = 0, seeds: int | None = None,
              budget: str | int | float = 0.5, device: str = "auto",
              annotator_confusion: float | None = None, world_coupling: float = 0.0,
              world: str = "default") -> DemoPlan:
    """The plan of a preset (``quick``, ``default``, ``full``), with the user's overrides, the
    premise's knobs (:mod:`realspo.arms.knobs`) and the world (``default``, or a positive
    control: ``premise``, ``omissions``; :mod:`realspo.proving_ground.world`).

    ``annotator_confusion`` None is the world's default: :data:`PREMISE_CONFUSION` in the
    ``premise`` world (both halves of REAL's premise), 0 (off) elsewhere. The ``omissions``
    world has fewer questions: its training prompts are capped to what it can ask."""
    if preset not in PRESETS:
        raise ConfigError(f"unknown demo preset {preset!r}; expected one of {', '.join(PRESETS)}")
    if world not in WORLD_KINDS:
        raise ConfigError(f"--world must be one of {', '.join(WORLD_KINDS)}, got {world!r}")
    sizes = dict(PRESETS[preset])
    n_seeds = sizes.pop("seeds") if seeds is None else seeds
    if n_seeds < 1:
        raise ConfigError(f"--seeds must be at least 1, got {n_seeds}")
    if annotator_confusion is None:
        annotator_confusion = PREMISE_CONFUSION if world == "premise" else 0.0
    check_knobs(annotator_confusion, world_coupling)
    world_cfg = replace(sizes["world"], coupling=float(world_coupling), kind=world)
    room = question_pool_size(world) - world_cfg.n_test_prompts
    if world_cfg.n_train_prompts > room:  # the omissions world asks fewer questions
        world_cfg = replace(world_cfg, n_train_prompts=room)
        sizes["n_train_prompts"] = min(sizes["n_train_prompts"], room)
    sizes["world"] = world_cfg
    sizes["candidates"] = "world" if world == "premise" else "policy"
    plan = DemoPlan(preset=preset, seeds=tuple(range(seed, seed + n_seeds)),
                    budget=parse_budget(budget), device=device,
                    annotator_confusion=float(annotator_confusion),
                    **{k: v for k, v in sizes.items() if k != "seeds"})
    if plan.n_train_prompts > plan.world.n_train_prompts or plan.n_test_prompts > plan.world.n_test_prompts:
        raise ConfigError("demo plan asks for more prompts than its world has")
    if plan.eval_samples < 1:
        raise ConfigError(f"eval_samples must be at least 1, got {plan.eval_samples}")
    if isinstance(plan.budget, int) and plan.budget > plan.n_train_prompts:
        raise ConfigError(f"--budget {plan.budget}: more labels than the {plan.n_train_prompts} "
                          f"training prompts of the {preset} run (one pair per prompt)")
    return plan


def check_knobs(annotator_confusion: float, world_coupling: float) -> None:
    """ConfigError unless K >= 0 (finite) and RHO in [0, 1]."""
    if not 0.0 <= annotator_confusion < float("inf"):
        raise ConfigError(f"--annotator-confusion must be a finite number >= 0 (0 = off), "
                          f"got {annotator_confusion}")
    if not 0.0 <= world_coupling <= 1.0:
        raise ConfigError(f"--world-coupling must be in [0, 1] (0 = off), got {world_coupling}")


def planned_runs(plan: DemoPlan) -> list[tuple[str, str, str]]:
    """(strategy or control, loss, budget label) of every training run of one seed: the main
    grid, the controls (DPO, main budget), then the label-efficiency budgets."""
    main = budget_label(plan.budget)
    runs = [(s, loss, main) for s in plan.strategies for loss in plan.losses]
    runs += [(c, "dpo", main) for c in plan.controls]
    for b in plan.budget_specs()[1:]:
        runs += [(s, "dpo", b) for s in EFFICIENCY_STRATEGIES if s in plan.strategies]
    return runs


def plan_dict(plan: DemoPlan) -> dict[str, Any]:
    """The plan as plain data (for results.json and the report)."""
    data = asdict(plan)
    data["budget"] = budget_label(plan.budget)
    return data
