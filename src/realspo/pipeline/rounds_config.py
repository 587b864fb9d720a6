"""Options of ``realspo rounds`` (multi-round active labeling) and the plan they give.

:data:`RoundsConfig` is one dataclass (see :mod:`realspo.config`): the options of the rounds
themselves (prompts, budget and schedule, sampling, selection, judge, reference) followed by
every option of ``realspo train`` that applies to one round's training, taken from
:class:`realspo.training.train_config.TrainConfig` so each training hyper-parameter is declared
once. :func:`round_budgets` splits the total budget over the rounds; :func:`round_prompts`
says which prompts each round samples for. Nothing here imports torch.
"""

from __future__ import annotations

import dataclasses
import math
import typing
from typing import Any

import numpy as np

from realspo.config import MAX_SEED, check_seed, option
from realspo.errors import ConfigError
from realspo.labels.judges import find_judge, judges_help
from realspo.selection.budget import parse_budget
from realspo.selection.pickers import pick_random, similarity_key
from realspo.selection.strategies import Strategy, get_strategy, strategy_help, strategy_names
from realspo.training.train_config import TrainConfig

SCHEDULES = ("even", "front", "back")
ROUND_PROMPTS = ("split", "all")
# Which model each round's training is anchored to. Default "initial": iterative DPO in the
# online-RLHF line keeps the KL anchor at the starting model in every round (Xiong et al. 2024,
# "Iterative Preference Learning from Human Feedback", arXiv 2312.11456; Dong et al. 2024,
# "RLHF Workflow", arXiv 2405.07863), so R rounds optimise one KL-regularised objective instead
# of drifting a step further each round, and the implicit-reward margins that `margin` ranks by
# stay measured against one model. "previous" is the Self-Rewarding / Iterative RPO recipe
# (Yuan et al. 2024, arXiv 2401.10020; Pang et al. 2024, arXiv 2404.19733): round r's
# reference is the policy it starts from.
REFERENCES = ("initial", "previous")

# Options of `train` that a round sets itself, or that do not apply to rounds.
NOT_FROM_TRAIN = {
    "data": "each round trains on its own labels",
    "model": "round r starts from round r-1's policy",
    "out": "OUT/round-r/model",
    "split": "the labels are a file (rounds' --split reads --prompts)",
    "eval_data": "use --eval-fraction",
    "save_steps": "a round is finished whole, or rerun whole",
    "keep_checkpoints": "(no checkpoints)",
    "merge": "the next round loads the merged model",
    "overwrite": "rounds' own --overwrite",
    "resume": "rerunning the command resumes after the last finished round",
}


@dataclasses.dataclass
class _RoundsOptions:
    model: str = option(help="the starting model (an SFT model): round 1's policy and the "
                             "reference of the margins and the loss", metavar="PATH", path="input")
    prompts: str = option(help="prompts file (anything `realspo generate --prompts` reads)",
                          metavar="FILE", path="input")
    judge: str = option(help=f"the automatic judge that labels every round: {judges_help()}",
                        metavar="NAME", path="input")
    out: str = option(help="output directory: round-1/, round-2/, ..., summary.json, model "
                           "(a link to the latest round's policy)", metavar="DIR", path="output")
    budget: str = option(help="labels (pairs) over all rounds: a count (300) or a fraction of the "
                              "prompts (0.5)", metavar="N|FRACTION")
    rounds: int = option(3, "R: rounds of generate -> select -> label -> train")
    schedule: str = option("even", "how the budget is spread over the rounds: even, front "
                                   "(weights R, R-1, ..., 1: more labels early, which helped in "
                                   "arXiv 2406.17312), back (1, ..., R), or R fractions summing "
                                   "to 1 (0.5,0.3,0.2)", metavar="NAME|FRACTIONS")
    round_prompts: str = option("split", "split: a seeded partition of the prompts, different "
                                         "prompts each round; all: every round samples new "
                                         "responses for all prompts", choices=ROUND_PROMPTS)
    split: str = option("train", "split to read when --prompts is a dataset directory or hub id")
    policy: str | None = option(None, "a starting policy already trained against --model: round "
                                      "1 samples from and trains it (margin strategies need it "
                                      "in round 1 unless --first-strategy)", metavar="PATH",
                                path="input")
    reference: str = option("initial", "each round's reference model: initial (--model, the "
                                       "iterative-DPO default of arXiv 2312.11456) or previous "
                                       "(the policy the round starts from)", choices=REFERENCES)
    num_responses: int = option(4, "K: responses sampled per prompt with the current policy",
                                metavar="K")
    temperature: float = option(1.0, "sampling temperature (> 0)")
    top_p: float = option(1.0, "nucleus sampling (1 = off)")
    max_new_tokens: int = option(256, "longest sampled response, in tokens")
    generate_batch_size: int = option(4, "prompts per generate call")
    strategy: str = option("easy", strategy_help(), choices=strategy_names())
    first_strategy: str | None = option(None, "round 1's strategy, when --strategy needs a "
                                              "policy that differs from its reference and none "
                                              "is given (e.g. random)", choices=strategy_names())
    embedder: str | None = option(None, "what embeds responses for embedding strategies: a "
                                        "causal LM path or st:PATH (unset: the current policy)",
                                  metavar="PATH", path="input")
    design_ridge: float = option(1.0, "--strategy design: ridge lambda > 0")
    pairs_per_prompt: int = option(1, "--strategy design: at most N pairs per prompt")
    selection_judge: str | None = option(None, "reward-gap/reward-uncertain: the reward judge "
                                               "that scores candidates (unset: --judge)",
                                         metavar="NAME", path="input")
    judge_template: str | None = option(None, "--judge llm:PATH: its prompt template",
                                        metavar="FILE", path="input")
    score_batch_size: int = option(16, "batch size of embedding, margin log-probs and judges")
    device: str = option("auto", "device of sampling, scoring and judging: auto, cpu, cuda, mps")
    progress: bool = option(True, "show progress bars")
    overwrite: bool = option(False, "start over, replacing OUT (only a `realspo rounds` output)")


def reads_embeddings(strategy: Strategy) -> bool:
    """Whether ``strategy``'s choice depends on the response embeddings: the similarity-keyed
    REAL strategies (not ``random``) and ``design``. The others get a constant stand-in (and
    their rows no similarity), so a round embeds nothing for them."""
    return strategy.joint or (strategy.key is similarity_key and strategy.pick_per_prompt is not pick_random)


def _copy(f: dataclasses.Field, tp: Any) -> tuple[str, Any, Any]:
    return f.name, tp, dataclasses.field(default=f.default, default_factory=f.default_factory,
                                         metadata=f.metadata)


def _own_fields() -> list[tuple[str, Any, Any]]:
    hints = typing.get_type_hints(_RoundsOptions)
    return [_copy(f, hints[f.name]) for f in dataclasses.fields(_RoundsOptions)]


def _train_fields() -> list[tuple[str, Any, Any]]:
    """``train``'s options that apply to a round, as ``make_dataclass`` field specs."""
    hints = typing.get_type_hints(TrainConfig)
    own = {f.name for f in dataclasses.fields(_RoundsOptions)}
    specs = []
    for f in dataclasses.fields(TrainConfig):
        if f.name in NOT_FROM_TRAIN or f.name in own:
            continue
        specs.append(_copy(f, hints[f.name]))
    return specs


def _validate(self: Any) -> None:
    if self.rounds < 1:
        raise ConfigError(f"--rounds must be at least 1, got {self.rounds}")
    check_seed(self.seed)
    if self.seed + self.rounds - 1 > MAX_SEED:
        raise ConfigError(f"--seed {self.seed}: round seeds (seed + round - 1) pass {MAX_SEED}")
    parse_budget(self.budget)
    schedule_fractions(self.schedule, self.rounds)
    if self.num_responses < 2:
        raise ConfigError(f"--num-responses must be at least 2, got {self.num_responses}")
    if not (self.temperature > 0 and 0 < self.top_p <= 1 and self.max_new_tokens >= 1):
        raise ConfigError("need --temperature > 0, 0 < --top-p <= 1 and --max-new-tokens >= 1")
    for name in ("generate_batch_size", "score_batch_size", "pairs_per_prompt"):
        if getattr(self, name) < 1:
            raise ConfigError(f"--{name.replace('_', '-')} must be at least 1")
    if not (math.isfinite(self.design_ridge) and self.design_ridge > 0):
        raise ConfigError(f"--design-ridge must be > 0, got {self.design_ridge}")
    strategy = get_strategy(self.strategy)
    if not strategy.joint and (self.design_ridge != 1.0 or self.pairs_per_prompt != 1):
        raise ConfigError(f"--design-ridge and --pairs-per-prompt apply only to --strategy design, "
                          f"not {self.strategy}")
    if "implicit_rewards" in strategy.needs and self.policy is None and self.first_strategy is None:
        raise ConfigError(f"--strategy {self.strategy} needs a policy that differs from its reference, "
                          "and round 1 has none: give --policy PATH (a policy trained against "
                          "--model) or --first-strategy (e.g. random) for round 1")
    if self.first_strategy is not None:
        if not ("implicit_rewards" in strategy.needs and self.policy is None):
            raise ConfigError("--first-strategy applies only when --strategy needs a policy "
                              "(margin, margin-large) and no --policy is given")
        if "implicit_rewards" in get_strategy(self.first_strategy).needs:
            raise ConfigError(f"--first-strategy {self.first_strategy} needs a policy too; "
                              "choose one that does not (e.g. random)")
    if self.embedder is not None and not any(reads_embeddings(get_strategy(s))
                                             for s in self.strategies_used()):
        raise ConfigError(f"--embedder has no effect with --strategy {self.strategy}: it reads no "
                          "embeddings")
    find_judge(self.judge)  # an unknown judge lists the known ones
    if self.selection_judge is not None and not any(
            "rewards" in get_strategy(s).needs for s in self.strategies_used()):
        raise ConfigError("--selection-judge applies only to --strategy reward-gap/reward-uncertain")
    if any("rewards" in get_strategy(s).needs for s in self.strategies_used()) \
            and find_judge(self.scoring_judge()).pairwise:
        raise ConfigError(f"--strategy {self.strategy} scores candidates with a reward judge, and "
                          f"{self.scoring_judge()} only compares pairs: give --selection-judge "
                          "(a reward model or proving-ground)")
    self.train_config(data="-", model=self.model, out="-").validate()


def _train_config(self: Any, *, data: str, model: str, out: str) -> TrainConfig:
    """One round's :class:`TrainConfig`: this run's training options on ``data`` from ``model``."""
    values = {name: getattr(self, name) for name, _, _ in _train_fields()}
    return TrainConfig(data=data, model=model, out=out, **values)


def _strategies_used(self: Any) -> list[str]:
    return [self.strategy] + ([self.first_strategy] if self.first_strategy else [])


def _scoring_judge(self: Any) -> str:
    return self.selection_judge or self.judge


def _round_strategy(self: Any, round_number: int) -> str:
    """The strategy of round ``round_number`` (1-based)."""
    return self.first_strategy if round_number == 1 and self.first_strategy else self.strategy


RoundsConfig = dataclasses.make_dataclass(
    "RoundsConfig",
    _own_fields() + _train_fields(),
    namespace={"validate": _validate, "train_config": _train_config,
               "strategies_used": _strategies_used, "scoring_judge": _scoring_judge,
               "round_strategy": _round_strategy,
               "__doc__": "Options of ``realspo rounds``: its own, then train's (see the module)."},
)
RoundsConfig.__module__ = __name__


def schedule_fractions(schedule: str, rounds: int) -> list[float]:
    """The share of the budget of each round: ``even``, ``front`` (weights R..1), ``back``
    (1..R), or ``rounds`` comma-separated fractions > 0 summing to 1."""
    if schedule in SCHEDULES:
        weights = {"even": [1.0] * rounds, "front": [float(rounds - r) for r in range(rounds)],
                   "back": [float(r + 1) for r in range(rounds)]}[schedule]
        return [w / sum(weights) for w in weights]
    try:
        fractions = [float(part) for part in schedule.split(",")]
    except ValueError:
        raise ConfigError(f"--schedule: expected {', '.join(SCHEDULES)} or fractions like "
                          f"0.5,0.3,0.2, got {schedule!r}") from None
    if len(fractions) != rounds:
        raise ConfigError(f"--schedule {schedule}: {len(fractions)} fractions for {rounds} rounds")
    if not all(math.isfinite(f) and f > 0 for f in fractions) or abs(sum(fractions) - 1) > 1e-6:
        raise ConfigError(f"--schedule {schedule}: fractions must be > 0 and sum to 1 "
                          f"(they sum to {sum(fractions):g})")
    return fractions


def round_budgets(total: int, fractions: list[float]) -> list[int]:
    """``total`` pairs split by ``fractions``: largest-remainder rounding, so the budgets sum to
    ``total`` exactly; a round left with none is an error."""
    raw = [total * f for f in fractions]
    budgets = [math.floor(x) for x in raw]
    by_remainder = sorted(range(len(raw)), key=lambda i: (-(raw[i] - budgets[i]), i))
    for i in by_remainder[: total - sum(budgets)]:
        budgets[i] += 1
    if min(budgets) < 1:
        raise ConfigError(f"--budget {total} over {len(fractions)} rounds gives a round no labels "
                          f"({budgets}); raise --budget or use fewer rounds")
    return budgets


def total_budget(budget: str, n_prompts: int, pairs_per_prompt: int = 1) -> int:
    """Pairs over all rounds: a count, or a fraction of the prompts (at least 1)."""
    value = parse_budget(budget)
    if isinstance(value, int):
        return value
    return max(1, math.floor(value * n_prompts * pairs_per_prompt + 0.5))


def round_prompts(n_prompts: int, rounds: int, mode: str, seed: int) -> list[list[int]]:
    """Indices of the prompts each round samples for, in file order: ``split`` deals a seeded
    permutation into ``rounds`` near-equal disjoint parts, ``all`` gives every round all."""
    if mode == "all":
        return [list(range(n_prompts)) for _ in range(rounds)]
    if n_prompts < rounds:
        raise ConfigError(f"--round-prompts split: {n_prompts} prompts cannot be split into "
                          f"{rounds} rounds; use --round-prompts all or fewer rounds")
    order = np.random.default_rng(seed).permutation(n_prompts)
    return [sorted(part.tolist()) for part in np.array_split(order, rounds)]


def check_budgets(budgets: list[int], parts: list[list[int]], pairs_per_prompt: int) -> None:
    """Refuse a round whose budget exceeds the pairs its prompts can give."""
    for r, (budget, part) in enumerate(zip(budgets, parts, strict=True), start=1):
        if budget > len(part) * pairs_per_prompt:
            raise ConfigError(f"round {r} of {len(parts)}: budget {budget} pairs, but it has only "
                              f"{len(part)} prompts ({pairs_per_prompt} pair(s) each); lower "
                              "--budget, change --schedule or use --round-prompts all")
