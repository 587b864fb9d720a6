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
from pathlib import Path
from typing import TYPE_CHECKING, Any

from realspo.chat_format import CHAT_TEMPLATE_HELP, CHAT_TEMPLATE_MODES, PromptFormat
from realspo.config import add_options, check_seed, declared_paths, option, resolve
from realspo.errors import ConfigError, RealspoError
from realspo.labels.aggregate import METHODS
from realspo.labels.annotation import TASK_FORMATS, default_key_path, task_format_of
from realspo.labels.answers import find_key
from realspo.labels.judge_prompts import JUDGE_MODE_HELP, TIE_MARGIN_HELP
from realspo.labels.judges import (
    PROVING_GROUND,
    JudgeOptions,
    check_judge,
    check_reward_model,
    find_judge,
    judges_help,
    make_judge,
    make_pairwise_judge,
    reward_model_judge,
)
from realspo.labels.label_studio import config_path
from realspo.labels.outcomes import (
    compare_pairs,
    judge_pairs,
    labeled_rows,
    outcome_of,
    pair_scores,
)
from realspo.outputs import check_outputs_apart, check_writable, output_lock, write_json, write_rows
from realspo.schema import read_annotation_rows
from realspo.served.options import ServedFields

if TYPE_CHECKING:
    from realspo.labels.people import PeopleLabels

MODES = ("from_scores", "reward_model", "judge", "export_tasks", "annotations", "simulate")


@dataclass
class LabelConfig(ServedFields):
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
                                     "chosen_score (rejected_score = 1 - it)", metavar="NAME",
                                path="input")
    judge_template: str | None = option(None, "--judge llm:PATH: the judge's prompt template, with "
                                              "{prompt}, {response_a}, {response_b}", metavar="FILE",
                                        path="input")
    judge_mode: str = option("pairwise", JUDGE_MODE_HELP, choices=("pairwise", "pointwise"))
    tie_margin: float = option(0.0, TIE_MARGIN_HELP)
    judge_base_url: str | None = option(None, "--judge openai:NAME: the server's OpenAI-compatible "
                                              "base URL, e.g. http://127.0.0.1:8000/v1", metavar="URL")
    export_tasks: str | None = option(None, "write annotator tasks (pair_id, export_id, prompt, A, "
                                            "B, answer) to this .csv/.jsonl/.json file, order "
                                            "randomised; with --annotators > 1 or --gold, a "
                                            "directory of one file per annotator + key.jsonl",
                                   metavar="PATH", path="output")
    task_format: str | None = option(None, "--export-tasks format (default: from the suffix, csv "
                                           "for a directory); label-studio writes Label Studio's "
                                           "import JSON and its labeling config (.xml)",
                                     choices=TASK_FORMATS)
    annotators: int = option(1, "--export-tasks: how many annotators (one tasks file each); "
                                "--simulate: how many independent simulated annotators")
    overlap: int = option(1, "--export-tasks: how many annotators label each pair (<= --annotators)")
    gold: str | None = option(None, "--export-tasks: pairs with a known answer (annotation rows + "
                                    "answer: A, B or tie) mixed into every annotator's file, "
                                    "unmarked, to score annotators", metavar="FILE", path="input")
    annotations: list[str] | None = option(None, "read answers: sheets (pair_id, answer: A, B, "
                                                 "tie, skip; optional annotator), journals, a "
                                                 "campaign directory or a Label Studio export",
                                           metavar="PATH", path="input")
    aggregate: str = option("majority", "how several answers per pair become one label",
                            choices=METHODS)
    min_agreement: float | None = option(None, "leave out pairs whose share of answers agreeing "
                                               "with the aggregate is below this (0 to 1)")
    key: str | None = option(None, "order key of the tasks (default: TASKS.key.jsonl next to the "
                                   "tasks / annotations file, or DIR/key.jsonl)", metavar="FILE")
    # written by --export-tasks, read with --annotations: check_derived_paths gives it its role
    simulate: bool = option(False, "label with a simulated Bradley-Terry annotator over --oracle")
    tau: float = option(1.0, "--simulate: Bradley-Terry temperature; P(A) = sigmoid((r_a - r_b) / "
                             "tau), 0 = noiseless")
    flip: float = option(0.0, "--simulate: flip rate f; P = (1 - f) p + f (1 - p)")
    annotator_confusion: float = option(0.0, "--simulate (proving ground): each annotator guesses "
                                             "with probability s ** K, s the pair's surface "
                                             "similarity to it (0 = off)")
    oracle: str | None = option(None, f"oracle reward, a judge: {judges_help()}; used by "
                                      f"--simulate (default {PROVING_GROUND.name}) and, with any "
                                      "other source, for the label-error rate", metavar="NAME",
                                 path="input")
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
        if not self.tie_margin >= 0:
            raise ConfigError(f"--tie-margin must be >= 0, got {self.tie_margin}")
        self.check_served(self.judge, "--judge", self.judge_base_url, "--judge-base-url")
        if self.annotators < 1 or not 1 <= self.overlap <= self.annotators:
            raise ConfigError(f"need 1 <= --overlap <= --annotators, got --overlap {self.overlap} "
                              f"and --annotators {self.annotators}")
        if self.export_tasks and (self.annotators > 1 or self.gold) and \
                self.export_tasks.lower().endswith((".csv", ".jsonl", ".json")):
            raise ConfigError(f"--export-tasks {self.export_tasks}: with --annotators > 1 or "
                              "--gold it is a directory (one file per annotator + key.jsonl); "
                              "give a directory path")
        if self.min_agreement is not None and not 0 <= self.min_agreement <= 1:
            raise ConfigError(f"--min-agreement {self.min_agreement}: expected a number in [0, 1]")
        if self.annotator_confusion < 0:
            raise ConfigError(f"--annotator-confusion {self.annotator_confusion}: expected >= 0")
        if self.tau < 0 or not 0 <= self.flip <= 1:
            raise ConfigError(f"need --tau >= 0 and 0 <= --flip <= 1, got {self.tau}, {self.flip}")
        if self.oracle and find_judge(self.oracle).pairwise:
            raise ConfigError(f"--oracle {self.oracle}: a pairwise judge gives no rewards to compare "
                              "labels with; use it as the label source (--judge)")
        uses_model = bool(self.reward_model) or any(
            value and find_judge(value).uses_model_options for value in (self.judge, self.oracle))
        used = {"candidates": self.from_scores, "tau": self.simulate, "flip": self.simulate,
                "key": bool(self.export_tasks or self.annotations),
                "task_format": bool(self.export_tasks),
                "annotators": bool(self.export_tasks or self.simulate),
                "overlap": bool(self.export_tasks), "gold": bool(self.export_tasks),
                "aggregate": bool(self.annotations or self.simulate),
                "min_agreement": bool(self.annotations or self.simulate),
                "annotator_confusion": self.simulate,
                "seed": bool(self.export_tasks or self.simulate),
                "out": not self.export_tasks, "oracle": not self.export_tasks,
                "batch_size": uses_model, "max_length": uses_model, "device": uses_model,
                "dtype": uses_model, "allow_pickle": uses_model,
                "judge_template": bool(self.judge and find_judge(self.judge).uses_template),
                "judge_mode": bool(self.judge and find_judge(self.judge).uses_template),
                "tie_margin": self.judge_mode == "pointwise",

                "model": bool(self.export_tasks),
                "chat_template": uses_model or bool(self.export_tasks and self.model)}
        defaults = {f.name: f.default for f in dataclasses.fields(self)}
        for name, is_used in used.items():
            if not is_used and getattr(self, name) != defaults[name]:
                raise ConfigError(f"--{name.replace('_', '-')} has no effect with --{chosen[0].replace('_', '-')}")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    add_options(parser, LabelConfig)


def by_directory(cfg: LabelConfig) -> bool:
    """--export-tasks writes a directory (one file per annotator + key.jsonl)."""
    return cfg.annotators > 1 or cfg.gold is not None


def report_paths(out: str) -> tuple[Path, Path]:
    """The report and the premise plot written beside ``--out``: ``X.report.json``, ``X.premise.png``."""
    path = Path(out)
    return path.with_name(path.stem + ".report.json"), path.with_name(path.stem + ".premise.png")


def check_derived_paths(cfg: LabelConfig) -> None:
    """Paths realspo derives for itself (the key beside the tasks or answers, the Label Studio
    config, the report and plot beside --out) are not seen by :func:`realspo.config.resolve`:
    check them against the other paths now."""
    inputs = declared_paths(cfg, "input")
    if cfg.export_tasks:
        if by_directory(cfg):
            if cfg.key:
                raise ConfigError("--key: with several annotators the key is DIR/key.jsonl")
            check_outputs_apart(inputs, {"--export-tasks": cfg.export_tasks})
            check_writable(cfg.export_tasks, cfg.overwrite)
            return
        outputs = {"--export-tasks": cfg.export_tasks,
                   "--key": cfg.key or str(default_key_path(cfg.export_tasks))}
        if task_format_of(cfg.export_tasks, cfg.task_format) == "label-studio":
            outputs["labeling config"] = str(config_path(cfg.export_tasks))
        check_outputs_apart(inputs, outputs)
        for path in outputs.values():
            check_writable(path, cfg.overwrite)
        return
    if not cfg.out:
        return
    report, plot = report_paths(cfg.out)
    if cfg.annotations:
        inputs["--key"] = str(find_key(cfg.annotations, cfg.key))
    outputs = {"--out": cfg.out}
    if cfg.annotations or cfg.annotators > 1:
        outputs.update({"the report": str(report), "the premise plot": str(plot)})
    check_outputs_apart(inputs, outputs)
    for path in outputs.values():
        check_writable(path, cfg.overwrite)


def export(cfg: LabelConfig, pairs: list) -> int:
    """--export-tasks: one file (+ key), or a directory of one file per annotator."""
    shown = None
    if cfg.model:
        from realspo.models import load_tokenizer

        shown = PromptFormat.of(load_tokenizer(cfg.model, trust_remote_code=cfg.trust_remote_code),
                                cfg.chat_template)
    if by_directory(cfg):
        from realspo.labels.assignment import export_assignments

        key = export_assignments(pairs, cfg.export_tasks, cfg.annotators, cfg.overlap, cfg.seed,
                                 cfg.task_format or "csv", cfg.gold, cfg.overwrite, shown)
        print(f"wrote tasks for {cfg.annotators} annotators ({len(pairs)} pairs, each labeled by "
              f"{cfg.overlap}) to {cfg.export_tasks} and their order key to {key}")
        return 0
    from realspo.labels.annotation import export_tasks

    key = export_tasks(pairs, cfg.export_tasks, cfg.key, cfg.seed, cfg.overwrite, shown,
                       cfg.task_format)
    extra = (f" (paste {config_path(cfg.export_tasks)} into the project's labeling setup)"
             if task_format_of(cfg.export_tasks, cfg.task_format) == "label-studio" else "")
    print(f"wrote {len(pairs)} tasks to {cfg.export_tasks} and their order key to {key}{extra}")
    return 0


def simulated(cfg: LabelConfig, pairs: list, oracle: Any) -> tuple[list[str], PeopleLabels | None]:
    """--simulate: outcomes of one simulated annotator, or several aggregated."""
    from realspo.labels.annotator import perceptual_pair_similarity, simulate_annotators

    similarity = None
    if cfg.annotator_confusion:
        similarity = perceptual_pair_similarity([p.response_a for p in pairs],
                                                [p.response_b for p in pairs])
    a_wins = simulate_annotators(oracle[:, 0], oracle[:, 1], cfg.annotators, cfg.tau, cfg.flip,
                                 cfg.seed, similarity, cfg.annotator_confusion)
    if cfg.annotators == 1:
        return ["A" if a else "B" for a in a_wins[0]], None
    from realspo.labels.annotation import Key
    from realspo.labels.answers import Answers
    from realspo.labels.people import label_by_answers, simulated_answers

    answers = Answers(simulated_answers(a_wins, pairs), Key(Path("(simulated)"), None, {}))
    people = label_by_answers(pairs, answers, cfg.aggregate, cfg.min_agreement, cfg.seed)
    return people.outcomes, people


def run(args: argparse.Namespace) -> int:
    cfg = resolve(LabelConfig, args)
    pairs = read_annotation_rows(cfg.pairs)
    check_derived_paths(cfg)  # before any model loads
    if cfg.device != "auto":
        from realspo.models import check_device

        check_device(cfg.device)
    with output_lock(cfg.out or cfg.export_tasks):  # one run per output, before any work
        return _label(cfg, pairs)


def _label(cfg: LabelConfig, pairs: list) -> int:
    """``realspo label`` once its inputs are read, its outputs checked and locked."""
    if cfg.export_tasks:
        return export(cfg, pairs)
    assert cfg.out is not None  # validate() made sure
    options = JudgeOptions(device=cfg.device, dtype=cfg.dtype, batch_size=cfg.batch_size,
                           max_length=cfg.max_length, trust_remote_code=cfg.trust_remote_code,
                           allow_pickle=cfg.allow_pickle, template=cfg.judge_template,
                           chat_template=cfg.chat_template, mode=cfg.judge_mode,
                           tie_margin=cfg.tie_margin,
                           served=cfg.check_served(cfg.judge, "--judge", cfg.judge_base_url,
                                                   "--judge-base-url"))
    oracle_name = cfg.oracle or (PROVING_GROUND.name if cfg.simulate else None)
    if cfg.annotator_confusion and oracle_name != PROVING_GROUND.name:
        raise ConfigError("--annotator-confusion needs the proving-ground oracle (its annotator's "
                          "notion of similarity belongs to that world)")
    prompts = [p.prompt for p in pairs]
    if cfg.reward_model:
        check_reward_model(cfg.reward_model, options)  # before the oracle or anything loads
    entry = check_judge(cfg.judge, options, prompts) if cfg.judge else None  # before any model loads
    if oracle_name:
        check_judge(oracle_name, replace(options, template=None), prompts)
    people = None
    if cfg.annotations:  # every answer is read and checked before any model loads
        from realspo.labels.annotation import check_key_pairs, read_key
        from realspo.labels.answers import read_answers
        from realspo.labels.people import label_by_answers

        key = read_key(find_key(cfg.annotations, cfg.key))
        check_key_pairs(key, pairs)
        answers = read_answers(cfg.annotations, key_data=key)
        for note in answers.notes:
            print(f"note: {note}")
        people = label_by_answers(pairs, answers, cfg.aggregate, cfg.min_agreement, cfg.seed)
    oracle_judge = make_judge(oracle_name, replace(options, template=None)) if oracle_name else None
    scores = comparison = pairwise_judge = None
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
            pairwise_judge = make_pairwise_judge(cfg.judge, options)
            scores, comparison = compare_pairs(pairwise_judge, pairs)
            outcomes = comparison.outcomes
        else:
            scores = judge_pairs(make_judge(cfg.judge, options), pairs)
            outcomes = [outcome_of(a, b) for a, b in scores]
        source = entry.label_source
    elif people is not None:
        outcomes, source = people.outcomes, "human"
    oracle = judge_pairs(oracle_judge, pairs) if oracle_judge is not None else None
    if cfg.simulate:
        assert oracle is not None
        outcomes, people = simulated(cfg, pairs, oracle)
        source = "simulated"
    rows, report = labeled_rows(pairs, outcomes, source, scores, oracle,
                                people.columns if people is not None else None)
    if comparison is not None:
        report.judge_bias = comparison.bias_summary()
    if hasattr(pairwise_judge, "requests_summary"):
        report.judge_bias = f"{report.judge_bias}; {pairwise_judge.requests_summary()}"
    if not rows:
        raise RealspoError(f"no pair got a preference ({report.summary()}); nothing written")
    if people is not None:
        report_path, plot_path = report_paths(cfg.out)
        write_json(report_path, people.report, overwrite=cfg.overwrite)
        if "premise" in people.report:
            from realspo.labels.premise import plot_premise

            plot_premise(people.report["premise"], plot_path)
        for line in people.printed():
            print(line)
        print(f"wrote the agreement report {report_path}")
    write_rows(cfg.out, rows, overwrite=cfg.overwrite)
    print(f"{report.summary()}; wrote {cfg.out}")
    return 0
