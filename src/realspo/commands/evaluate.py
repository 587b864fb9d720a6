"""``realspo evaluate``: win rate of a trained model over a baseline, judged by a reward
model, an LLM judge (both orders) or the proving ground's oracle, with a bootstrap interval;
optionally the implicit-reward accuracy on held-out pairs. See :mod:`realspo.evaluation.evaluate`.
"""

from __future__ import annotations

import argparse
from dataclasses import dataclass

from realspo.chat_format import CHAT_TEMPLATE_HELP, CHAT_TEMPLATE_MODES
from realspo.config import add_options, check_seed, option, resolve, to_dict
from realspo.errors import ConfigError
from realspo.generation.settings import SamplingSettings
from realspo.gguf import find_gguf
from realspo.labels.judge_prompts import JUDGE_MODE_HELP, TIE_MARGIN_HELP
from realspo.labels.judges import REWARD_MODEL, check_reward_model, find_judge, judges_help
from realspo.models import check_model_location
from realspo.outputs import check_writable, output_lock, write_json
from realspo.schema import read_preference_rows
from realspo.served.options import ServedFields


@dataclass
class EvaluateConfig(ServedFields):
    model: str = option(help="the trained model (directory or hub id)", metavar="PATH", path="input")
    baseline: str = option(help="the model to compare against (e.g. the SFT model); also the "
                                "reference for the implicit reward", metavar="PATH", path="input")
    prompts: str = option(help="evaluation prompts (same format as `realspo generate`)",
                          metavar="FILE", path="input")
    judge: str = option(help=f"what scores the responses, a judge: {judges_help()}", metavar="NAME",
                        path="input")
    out: str = option(help="where to write the results (JSON)", metavar="FILE", path="output")
    judge_template: str | None = option(None, "--judge llm:PATH: the judge's prompt template, with "
                                              "{prompt}, {response_a}, {response_b}", metavar="FILE",
                                        path="input")
    judge_mode: str = option("pairwise", JUDGE_MODE_HELP, choices=("pairwise", "pointwise"))
    tie_margin: float = option(0.0, TIE_MARGIN_HELP)
    judge_base_url: str | None = option(None, "--judge openai:NAME: the server's OpenAI-compatible "
                                              "base URL, e.g. http://127.0.0.1:8000/v1", metavar="URL")
    pairs: str | None = option(None, "held-out preference rows (prompt, chosen, rejected) for the "
                                     "implicit-reward accuracy", metavar="FILE", path="input")
    num_prompts: int | None = option(None, "use only the first N prompts (default: all)",
                                     metavar="N")
    seed: int = option(0, "sampling seed (the same for both models) and bootstrap seed")
    max_new_tokens: int = option(256, "longest response, in tokens")
    temperature: float = option(1.0, "sampling temperature (0 = greedy)")
    top_p: float = option(1.0, "nucleus sampling threshold (1 = off)")
    batch_size: int = option(8, "prompts (or pairs) per batch")
    chat_template: str = option("auto", CHAT_TEMPLATE_HELP + "; also for --pairs log-probs and "
                                        "reward-model judging", choices=CHAT_TEMPLATE_MODES)
    beta: float = option(0.1, "beta of the implicit reward beta * (logp_model - logp_baseline)")
    max_length: int = option(1024, "longest prompt + response in tokens for --pairs log-probs and "
                                   "reward-model judging")
    bootstrap_resamples: int = option(2000, "bootstrap resamples for the 95% interval")
    split: str = option("train", "split to read when --prompts is a dataset directory or hub id")
    device: str = option("auto", "device: auto, cpu, cuda, mps")
    dtype: str = option("auto", "dtype: auto, float32, bfloat16, float16")
    trust_remote_code: bool = option(False, "allow model code from the hub (runs that code)")
    allow_pickle: bool = option(False, "accept a model directory whose weights are only pickled "
                                       ".bin files (unpickling can run code: trusted sources only)")
    overwrite: bool = option(False, "replace an existing output")
    progress: bool = option(True, "show progress bars")

    def validate(self) -> None:
        if self.num_prompts is not None and self.num_prompts < 1:
            raise ConfigError(f"--num-prompts must be at least 1, got {self.num_prompts}")
        if self.beta <= 0:
            raise ConfigError(f"--beta must be > 0, got {self.beta}")
        if self.bootstrap_resamples < 1 or self.batch_size < 1:
            raise ConfigError("--bootstrap-resamples and --batch-size must be at least 1")
        check_seed(self.seed)
        if not self.tie_margin >= 0:
            raise ConfigError(f"--tie-margin must be >= 0, got {self.tie_margin}")
        if self.judge_mode != "pointwise" and self.tie_margin != 0.0:
            raise ConfigError("--tie-margin has no effect without --judge-mode pointwise")
        self.check_served(self.judge, "--judge", self.judge_base_url, "--judge-base-url")
        if self.pairs is None and self.beta != 0.1:
            raise ConfigError("--beta has no effect without --pairs")
        self.settings().validate()

    def settings(self) -> SamplingSettings:
        return SamplingSettings(num_responses=1, temperature=self.temperature, top_p=self.top_p,
                                max_new_tokens=self.max_new_tokens, seed=self.seed,
                                chat_template=self.chat_template)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    add_options(parser, EvaluateConfig)


def run(args: argparse.Namespace) -> int:
    from realspo.generation.prompts import read_prompts

    cfg = resolve(EvaluateConfig, args)
    prompts = read_prompts(cfg.prompts, cfg.split)[: cfg.num_prompts]
    pairs = [row.data for row in read_preference_rows(cfg.pairs, conversational=False)] \
        if cfg.pairs else None
    served = cfg.check_served(cfg.judge, "--judge", cfg.judge_base_url, "--judge-base-url")
    check_writable(cfg.out, cfg.overwrite)
    check_model_location(cfg.model)
    check_model_location(cfg.baseline, "--baseline")
    if find_judge(cfg.judge) is REWARD_MODEL and find_gguf(cfg.judge) is not None:
        check_reward_model(cfg.judge)  # refuses a .gguf in one line, before transformers loads
    # inputs and output are checked: now torch, the judge's check and the models
    from realspo.evaluation.evaluate import evaluate_models

    with output_lock(cfg.out):  # one run per output, before any work
        result = evaluate_models(
            cfg.model, cfg.baseline, prompts, cfg.judge, cfg.settings(), batch_size=cfg.batch_size,
            pairs=pairs, pairs_source=cfg.pairs or "pairs", beta=cfg.beta, max_length=cfg.max_length,
            n_resamples=cfg.bootstrap_resamples, device=cfg.device, dtype=cfg.dtype,
            trust_remote_code=cfg.trust_remote_code, progress=cfg.progress,
            allow_pickle=cfg.allow_pickle, judge_template=cfg.judge_template,
            judge_mode=cfg.judge_mode, tie_margin=cfg.tie_margin, served=served,
        )
        result = {"config": to_dict(cfg), **result}
        write_json(cfg.out, result, overwrite=cfg.overwrite)
    if result["win_rate"] is None:  # every judgment a tie: no rate, and no interval around one
        line = (f"{cfg.model} vs {cfg.baseline}: {result['no_win_rate']}, no win rate "
                f"({result['num_prompts']} prompts); ")
    else:
        lo, hi = result["win_rate_interval"]
        line = (f"win rate of {cfg.model} over {cfg.baseline}: {result['win_rate']:.3f} "
                f"(95% CI {lo:.3f}-{hi:.3f}, {result['num_prompts']} prompts); ")
    if result["mean_reward"] is not None:
        line += (f"mean reward {result['mean_reward']['trained']:.3f} vs "
                 f"{result['mean_reward']['baseline']:.3f}")
    else:
        judged = result["pairwise"]
        line += (f"judge position-bias rate {judged['position_bias_rate']:.3f} "
                 f"({judged['position_disagreements']} of {result['num_prompts']} prompts judged "
                 "differently in the two orders)")
        if judged["unparseable"]:
            line += f"; {judged['unparseable']} unparseable (left out)"
        if "requests_sent" in judged:
            line += f"; {judged['requests_sent']} judge requests sent"
    if result["implicit_reward"]:
        line += f"; implicit-reward accuracy {result['implicit_reward']['accuracy']:.3f}"
    print(f"{line}; wrote {cfg.out}")
    return 0
