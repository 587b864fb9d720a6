"""``realspo label``: turn annotation pairs into preference pairs.

One label source per run: ``--from-scores``, ``--reward-model PATH``, ``--judge NAME`` (any
judge of :data:`realspo.labels.judges.JUDGES`, e.g. an LLM judge ``llm:PATH``), the human round
trip (``--export-tasks`` then ``--annotations``) or ``--simulate`` (a Bradley-Terry annotator
over an oracle reward). See :mod:`realspo.labels`.
"""

from __future__ import annotations

import argparse
import dataclasses
from dataclasses import dataclass, replace

from realspo.chat_format import CHAT_TEMPLATE_HELP, CHAT_TEMPLATE_MODES, PromptFormat
from realspo.config import add_options, check_seed, option, resolve
from realspo.errors import ConfigError, RealspoError
from realspo.labels.annotation import default_key_path, export_tasks, read_annotations
from realspo.labels.annotator import simulate_labels
from realspo.labels.journals import campaign_outcomes, is_campaign
from realspo.labels.judges import (
    PROVING_GROUND,
    JudgeOptions,
    check_judge,
    find_judge,
    judges_help,
    make_judge,
    make_pairwise_judge,
    reward_model_judge,
)
from realspo.labels.outcomes import (
    compare_pairs,
    judge_pairs,
    labeled_rows,
    outcome_of,
    pair_scores,
)
from realspo.outputs import check_outputs_apart, check_writable, write_rows
from realspo.schema import read_annotation_rows

MODES = ("from_scores", "reward_model", "judge", "export_tasks", "annotations", "simulate")


@dataclass
class LabelConfig:
    pairs: str = option(help="annotation rows from `realspo select` (pair_id, prompt, response_a, "
                             "response_b, ...)", metavar="FILE", path="input")
    out: str | None = option(None, "where to write the preference rows (prompt, chosen, rejected + "
                                   "metadata); needed except with --export-tasks", metavar="FILE",
                          path="output")
    from_scores: bool = option(False, "label by the pairs' score_a/score_b (or --candidates scores)")
    candidates: str | None = option(None, "with --from-scores: multi-completion file whose scores "
                                          "fill pairs without score_a/score_b", metavar="FILE",
                                 path="input")
    reward_model: str | None = option(None, "label by this reward model (a one-output "
                                            "AutoModelForSequenceClassification)", metavar="PATH",
                                   path="input")
    judge: str | None = option(None, f"label by a judge: {judges_help()}; a pairwise judge's "
                                     "probability that the chosen response is preferred becomes "
                                     "chosen_score (rejected_score = 1 - it)", metavar="NAME")
    judge_template: str | None = option(None, "--judge llm:PATH: the judge's prompt template, with "
                                              "{prompt}, {response_a}, {response_b}", metavar="FILE",
                                        path="input")
    export_tasks: str | None = option(None, "write annotator tasks (pair_id, prompt, A, B, answer) "
                                            "to this .csv/.jsonl, order randomised", metavar="FILE",
                                   path="output")
    annotations: str | None = option(None, "read answers (pair_id, answer: A, B, tie, skip) for "
                                           "tasks from --export-tasks, or a `realspo annotate` "
                                           "campaign directory (majority of its annotators)",
                                     metavar="FILE|DIR", path="input")
    key: str | None = option(None, "order key of the tasks (default: TASKS.key.jsonl next to the "
                                   "tasks / annotations file)", metavar="FILE",
                          path="output")  # written by --export-tasks; read with --annotations,
    # where as an "output" it still may not be --out or lie inside an input
    simulate: bool = option(False, "label with a simulated Bradley-Terry annotator over --oracle")
    tau: float = option(1.0, "--simulate: Bradley-Terry temperature; P(A) = sigmoid((r_a - r_b) / "
                             "tau), 0 = noiseless")
    flip: float = option(0.0, "--simulate: flip rate f; P = (1 - f) p + f (1 - p)")
    oracle: str | None = option(None, f"oracle reward, a judge: {judges_help()}; used by "
                                      f"--simulate (default {PROVING_GROUND.name}) and, with any "
                                      "other source, for the label-error rate", metavar="NAME")
    seed: int = option(0, "seed of the shown order (--export-tasks) and of --simulate")
    model: str | None = option(None, "--export-tasks: the model that wrote the responses; its chat "
                                     "template's system prompt is shown to annotators", metavar="PATH",
                               path="input")
    chat_template: str = option("auto", CHAT_TEMPLATE_HELP + " (a model judge's, or --model's "
                                        "for --export-tasks)", choices=CHAT_TEMPLATE_MODES)
    batch_size: int = option(16, "batch size of a model judge (reward model, LLM judge)")
    max_length: int = option(1024, "model judges: longest input in tokens (cut from the left)")
    device: str = option("auto", "device for model judges: auto, cpu, cuda, mps")
    dtype: str = option("auto", "model-judge dtype: auto, float32, bfloat16, float16")
    trust_remote_code: bool = option(False, "allow model code from the hub (runs that code)")
    allow_pickle: bool = option(False, "accept a model directory whose weights are only pickled "
                                       ".bin files (unpickling can run code: trusted sources only)")
    overwrite: bool = option(False, "replace existing outputs")

    def validate(self) -> None:
        chosen = [m for m in MODES if getattr(self, m)]
        if len(chosen) != 1:
            flags = ", ".join("--" + m.replace("_", "-") for m in MODES)
            raise ConfigError(f"give exactly one label source of {flags}"
                              + (f" (got {', '.join('--' + m.replace('_', '-') for m in chosen)})"
                                 if chosen else ""))
        if not self.export_tasks and not self.out:
            raise ConfigError("--out is required (except with --export-tasks)")
        check_seed(self.seed)
        if self.tau < 0 or not 0 <= self.flip <= 1:
            raise ConfigError(f"need --tau >= 0 and 0 <= --flip <= 1, got {self.tau}, {self.flip}")
        if self.oracle and find_judge(self.oracle).pairwise:
            raise ConfigError(f"--oracle {self.oracle}: a pairwise judge gives no rewards to compare "
                              "labels with; use it as the label source (--judge)")
        uses_model = bool(self.reward_model) or any(
            value and find_judge(value).uses_model_options for value in (self.judge, self.oracle))
        used = {"candidates": self.from_scores, "tau": self.simulate, "flip": self.simulate,
                "key": bool(self.export_tasks or self.annotations),
                "seed": bool(self.export_tasks or self.simulate),
                "out": not self.export_tasks, "oracle": not self.export_tasks,
                "batch_size": uses_model, "max_length": uses_model, "device": uses_model,
                "dtype": uses_model, "allow_pickle": uses_model,
                "judge_template": bool(self.judge and find_judge(self.judge).uses_template),
                "model": bool(self.export_tasks),
                "chat_template": uses_model or bool(self.export_tasks and self.model)}
        defaults = {f.name: f.default for f in dataclasses.fields(self)}
        for name, is_used in used.items():
            if not is_used and getattr(self, name) != defaults[name]:
                raise ConfigError(f"--{name.replace('_', '-')} has no effect with --{chosen[0].replace('_', '-')}")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    add_options(parser, LabelConfig)


def check_key_path(cfg: LabelConfig) -> None:
    """The order key's default path (beside the tasks or annotations file) is derived, so
    :func:`realspo.config.resolve` cannot see it: check it against the other paths now."""
    if cfg.export_tasks:
        key = cfg.key or str(default_key_path(cfg.export_tasks))
        check_outputs_apart({"--pairs": cfg.pairs},
                            {"--export-tasks": cfg.export_tasks, "--key": key})
    elif cfg.annotations and cfg.out:
        key = cfg.key or str(default_key_path(cfg.annotations))
        check_outputs_apart({"--key": key}, {"--out": cfg.out})


def run(args: argparse.Namespace) -> int:
    cfg = resolve(LabelConfig, args)
    check_key_path(cfg)
    if cfg.out:
        check_writable(cfg.out, cfg.overwrite)
    pairs = read_annotation_rows(cfg.pairs)
    if cfg.export_tasks:
        shown = None
        if cfg.model:
            from realspo.models import load_tokenizer

            shown = PromptFormat.of(load_tokenizer(cfg.model, trust_remote_code=cfg.trust_remote_code),
                                    cfg.chat_template)
        key = export_tasks(pairs, cfg.export_tasks, cfg.key, cfg.seed, cfg.overwrite, shown)
        print(f"wrote {len(pairs)} tasks to {cfg.export_tasks} and their order key to {key}")
        return 0
    assert cfg.out is not None  # validate() made sure
    options = JudgeOptions(device=cfg.device, dtype=cfg.dtype, batch_size=cfg.batch_size,
                           max_length=cfg.max_length, trust_remote_code=cfg.trust_remote_code,
                           allow_pickle=cfg.allow_pickle, template=cfg.judge_template,
                           chat_template=cfg.chat_template)
    oracle_name = cfg.oracle or (PROVING_GROUND.name if cfg.simulate else None)
    prompts = [p.prompt for p in pairs]
    entry = check_judge(cfg.judge, options, prompts) if cfg.judge else None  # before any model loads
    if oracle_name:
        check_judge(oracle_name, replace(options, template=None), prompts)
    oracle_judge = make_judge(oracle_name, replace(options, template=None)) if oracle_name else None
    scores = comparison = None
    if cfg.from_scores:
        scores = pair_scores(pairs, cfg.candidates)
        outcomes = [outcome_of(a, b) for a, b in scores]
        source = "scores"
    elif cfg.reward_model:
        scores = judge_pairs(reward_model_judge(cfg.reward_model, options), pairs)
        outcomes = [outcome_of(a, b) for a, b in scores]
        source = "reward-model"
    elif cfg.judge:
        assert entry is not None
        if entry.pairwise:
            scores, comparison = compare_pairs(make_pairwise_judge(cfg.judge, options), pairs)
            outcomes = comparison.outcomes
        else:
            scores = judge_pairs(make_judge(cfg.judge, options), pairs)
            outcomes = [outcome_of(a, b) for a, b in scores]
        source = entry.label_source
    elif cfg.annotations and is_campaign(cfg.annotations):
        if cfg.key:
            raise ConfigError("--key: a campaign directory holds its own key")
        outcomes = campaign_outcomes(cfg.annotations, pairs)
        source = "human"
    elif cfg.annotations:
        outcomes = read_annotations(cfg.annotations, pairs, cfg.key)
        source = "human"
    oracle = judge_pairs(oracle_judge, pairs) if oracle_judge is not None else None
    if cfg.simulate:
        assert oracle is not None
        a_wins = simulate_labels(oracle[:, 0], oracle[:, 1], cfg.tau, cfg.flip, cfg.seed)
        outcomes = ["A" if a else "B" for a in a_wins]
        source = "simulated"
    rows, report = labeled_rows(pairs, outcomes, source, scores, oracle)
    if comparison is not None:
        report.judge_bias = comparison.bias_summary()
    if not rows:
        raise RealspoError(f"no pair got a preference ({report.summary()}); nothing written")
    write_rows(cfg.out, rows, overwrite=cfg.overwrite)
    print(f"{report.summary()}; wrote {cfg.out}")
    return 0
