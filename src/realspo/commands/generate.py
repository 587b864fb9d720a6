"""``realspo generate``: sample K candidate responses per prompt from a causal LM.

Writes the multi-completion rows (``prompt_id``, ``prompt``, ``responses``, ``finished``) that
``realspo select`` reads; prints how many responses were cut at ``--max-new-tokens``. Reproducible (samples depend only on the seed and the prompt's
position) and resumable by prompt; see :mod:`realspo.generation.sampling` and
:mod:`realspo.generation.candidates`.
"""

from __future__ import annotations

import argparse
import logging
from dataclasses import dataclass

from realspo.chat_format import CHAT_TEMPLATE_HELP, CHAT_TEMPLATE_MODES
from realspo.config import add_options, check_seed, option, resolve
from realspo.errors import ConfigError
from realspo.generation.settings import (
    FROM_MODEL,
    SamplingDefaults,
    SamplingSettings,
    given_sampling,
    resolve_sampling,
    sampling_settings,
)
from realspo.models import check_model_location
from realspo.outputs import check_writable, output_lock
from realspo.served.options import ServedFields, is_served, served_name

log = logging.getLogger(__name__)


@dataclass
class GenerateConfig(ServedFields):
    model: str = option(help="causal LM to sample from: a model directory, .gguf file or hub id, "
                             "or openai:NAME for a model behind an OpenAI-compatible server "
                             "(--base-url)", metavar="PATH", path="input")
    prompts: str = option(help="prompts file (JSONL/JSON/CSV/Parquet, dataset dir or hub id) with "
                               "'prompt' (text or [{role, content}] messages) and optional "
                               "'prompt_id'/'id'", metavar="FILE", path="input")
    out: str = option(help="where to write the candidates (.jsonl, .json, .parquet or .csv)",
                      metavar="FILE", path="output")
    num_responses: int = option(4, "K: responses sampled per prompt (at least 2, so pairs exist)",
                                metavar="K")
    temperature: float | None = option(None, "sampling temperature (> 0)" + FROM_MODEL.format("1.0"))
    top_p: float | None = option(None, "nucleus sampling: keep the smallest set of tokens with this "
                                       "much probability (1 = off)" + FROM_MODEL.format("1.0"))
    top_k: int | None = option(None, "keep the K most likely tokens (0 = off)" + FROM_MODEL.format("0"),
                               metavar="K")
    repetition_penalty: float | None = option(None, "penalty on tokens already in the prompt or "
                                                    "response (1 = off)" + FROM_MODEL.format("1.0"))
    max_new_tokens: int | None = option(None, "longest response, in tokens" + FROM_MODEL.format("256"))
    seed: int = option(0, "seed; sample j of prompt i depends only on (seed, i, j)")
    batch_size: int = option(8, "prompts per decoding batch (each contributes K sequences; samples do not "
                                "depend on it)")
    chat_template: str = option("auto", CHAT_TEMPLATE_HELP, choices=CHAT_TEMPLATE_MODES)
    split: str = option("train", "split to read when --prompts is a dataset directory or hub id")
    resume: bool = option(False, "continue an interrupted run from OUT.partial.jsonl")
    overwrite: bool = option(False, "replace an existing output (and discard any partial run)")
    device: str = option("auto", "device: auto, cpu, cuda, cuda:1, mps")
    dtype: str = option("auto", "weights dtype: auto (bf16/fp16 on GPU, fp32 on CPU), float32, "
                                "bfloat16, float16")
    trust_remote_code: bool = option(False, "allow model code from the hub (runs that code)")
    allow_pickle: bool = option(False, "accept a model directory whose weights are only pickled "
                                       ".bin files (unpickling can run code: trusted sources only)")
    progress: bool = option(True, "show a progress bar")
    base_url: str | None = option(None, "openai:NAME: the server's OpenAI-compatible base URL, "
                                        "e.g. http://127.0.0.1:8000/v1", metavar="URL")

    def validate(self) -> None:
        if self.num_responses < 2:
            raise ConfigError(f"--num-responses must be at least 2 (pairs need two responses), "
                              f"got {self.num_responses}")
        if self.temperature is not None and self.temperature == 0:
            raise ConfigError("--temperature must be > 0: greedy decoding would give K identical "
                              "responses")
        if self.batch_size < 1:
            raise ConfigError(f"--batch-size must be at least 1, got {self.batch_size}")
        check_seed(self.seed)
        self.settings().validate()  # the given values
        if self.check_served(self.model, "--model", self.base_url, "--base-url"):
            if self.chat_template != "auto":
                raise ConfigError("--chat-template has no effect with openai:NAME: the server "
                                  "applies the model's own chat template")
            for flag, value in (("--top-k", self.top_k),
                                ("--repetition-penalty", self.repetition_penalty)):
                if value is not None:
                    raise ConfigError(f"{flag} is not an OpenAI API parameter; set it on the "
                                      "server for an openai:NAME model")

    def reserved_paths(self) -> dict[str, str]:
        """The progress sidecar ``OUT.partial.jsonl``: a name this command derives for itself."""
        return {"the progress file of --out": self.out + ".partial.jsonl"}

    def settings(self, defaults: SamplingDefaults | None = None) -> SamplingSettings:
        """The sampling settings: the given options, the rest from ``defaults``."""
        return sampling_settings(self, defaults, num_responses=self.num_responses)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    add_options(parser, GenerateConfig)


def run(args: argparse.Namespace) -> int:
    from realspo.generation.prompts import read_prompts

    cfg = resolve(GenerateConfig, args)
    check_writable(cfg.out, cfg.overwrite or cfg.resume)  # before reading prompts or the model
    prompts = read_prompts(cfg.prompts, cfg.split)
    with output_lock(cfg.out):  # one run per output, before any work
        return _run_served(cfg, prompts) if is_served(cfg.model) else _run_local(cfg, prompts)


def _run_local(cfg: GenerateConfig, prompts: list) -> int:
    """Generate with a local model (``--model`` a directory, ``.gguf`` or hub id)."""
    check_model_location(cfg.model)
    # inputs and output are checked: now torch, transformers and the model
    from realspo.generation.candidates import generate_candidates
    from realspo.models import check_device

    check_device(cfg.device)

    defaults = resolve_sampling(cfg.model, given_sampling(cfg), cfg.trust_remote_code)
    settings = cfg.settings(defaults)
    log.info("sampling: %s", defaults.describe())
    rows = generate_candidates(
        cfg.model, prompts, cfg.out, settings, batch_size=cfg.batch_size,
        resume=cfg.resume, overwrite=cfg.overwrite, device=cfg.device, dtype=cfg.dtype,
        trust_remote_code=cfg.trust_remote_code, progress=cfg.progress,
        allow_pickle=cfg.allow_pickle,
    )
    print(f"{_summary(cfg, rows, settings)}; sampling: {defaults.describe()}")
    return 0


def _summary(cfg: GenerateConfig, rows: list, settings: SamplingSettings) -> str:
    total = sum(len(r["responses"]) for r in rows)
    cut = sum(not f for r in rows for f in r["finished"])
    return (f"wrote {total} responses for {len(rows)} prompts to {cfg.out}; {cut} of {total} cut "
            f"at --max-new-tokens {settings.max_new_tokens} (finished: false)")


def _run_served(cfg: GenerateConfig, prompts: list) -> int:
    """``generate --model openai:NAME``: the given sampling options, realspo's defaults for
    temperature, top-p and max new tokens, the server's own for the rest."""
    from realspo.generation.served import generate_served

    options = cfg.served_options(cfg.base_url, "--base-url")  # checked by validate()
    settings = cfg.settings()
    rows, usage = generate_served(served_name(cfg.model, "--model"), prompts, cfg.out, settings,
                                  options, overwrite=cfg.overwrite or cfg.resume,
                                  progress=cfg.progress)
    print(f"{_summary(cfg, rows, settings)}; sampling: temperature {settings.temperature:g}, "
          f"top_p {settings.top_p:g} (the server's defaults for the rest); "
          f"{usage['requests_sent']} requests sent, tokens: {usage['prompt_tokens']} prompt, "
          f"{usage['completion_tokens']} completion")
    return 0
