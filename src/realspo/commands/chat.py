"""``realspo chat``: talk to a model, a few lines at a time, to see what training did to it.

Reads one message per line from stdin (a terminal or a pipe), answers each under the model's
chat template (:class:`realspo.chat_format.PromptFormat`; HH text for a model without one),
and keeps the conversation: each reply sees every earlier turn. ``/reset`` forgets the
conversation, ``/quit`` (or end of input) ends it. Sampling defaults come from the model, as
for ``generate`` (:mod:`realspo.generation.settings`); replies are reproducible (the seed and
the turn's number fix the noise).
"""

from __future__ import annotations

import argparse
import logging
import sys
from dataclasses import dataclass
from typing import TextIO

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

log = logging.getLogger(__name__)

EPILOG = """\
Reads one message per line; /reset clears the conversation, /quit or end of input ends it.

examples:
  realspo chat --model runs/dpo                 # a trained output directory (or a LoRA adapter)
  realspo chat --model SmolLM2-135M-Instruct.Q4_1.gguf --temperature 0.2 --top-p 0.9
  printf 'What is the capital of France?\\nAnd of Italy?\\n' | realspo chat --model runs/dpo
"""

RESET, QUIT = "/reset", "/quit"


@dataclass
class ChatConfig:
    model: str = option(help="the model to talk to: a trained output directory (a LoRA adapter "
                             "directory too), a model directory, .gguf file or hub id",
                        metavar="PATH", path="input")
    system: str | None = option(None, "system prompt (unset: the chat template's own, if any)",
                                metavar="TEXT")
    temperature: float | None = option(None, "sampling temperature (0 = greedy)" + FROM_MODEL.format("1.0"))
    top_p: float | None = option(None, "nucleus sampling threshold (1 = off)" + FROM_MODEL.format("1.0"))
    top_k: int | None = option(None, "keep the K most likely tokens (0 = off)" + FROM_MODEL.format("0"),
                               metavar="K")
    repetition_penalty: float | None = option(None, "penalty on tokens already in the conversation "
                                                    "(1 = off)" + FROM_MODEL.format("1.0"))
    max_new_tokens: int | None = option(None, "longest reply, in tokens" + FROM_MODEL.format("256"))
    seed: int = option(0, "seed; reply n of a conversation depends only on (seed, n, the conversation)")
    chat_template: str = option("auto", CHAT_TEMPLATE_HELP, choices=CHAT_TEMPLATE_MODES)
    device: str = option("auto", "device: auto, cpu, cuda, cuda:1, mps")
    dtype: str = option("auto", "weights dtype: auto (bf16/fp16 on GPU, fp32 on CPU), float32, "
                                "bfloat16, float16")
    trust_remote_code: bool = option(False, "allow model code from the hub (runs that code)")
    allow_pickle: bool = option(False, "accept weights that are only pickled .bin files (unpickling "
                                       "can run code: trusted sources only)")

    def validate(self) -> None:
        check_seed(self.seed)
        if self.system is not None and not self.system.strip():
            raise ConfigError("--system is empty; leave it out for the template's own system prompt")
        self.settings().validate()  # the given values

    def settings(self, defaults: SamplingDefaults | None = None) -> SamplingSettings:
        """The sampling settings: the given options, the rest from ``defaults``."""
        return sampling_settings(self, defaults, num_responses=1)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.epilog = EPILOG
    add_options(parser, ChatConfig)


def converse(reply, lines: TextIO, out: TextIO, system: str | None = None,
             interactive: bool = False) -> int:
    """The conversation loop: a reply to each message line, the history kept.

    Args:
        reply: ``reply(messages, turn) -> text``, the model's next turn.
        lines: where messages come from, one per line.
        out: where replies go, each on its own line(s).
        system: a system prompt that starts every conversation.
        interactive: print a ``you>`` prompt before each message (a terminal).

    Returns:
        the number of replies given.
    """
    start = [{"role": "system", "content": system}] if system else []
    messages = list(start)
    replies = 0
    while True:
        if interactive:
            out.write("you> ")
            out.flush()
        line = lines.readline()
        if not line or line.strip() == QUIT:
            break
        text = line.rstrip("\n").strip()
        if not text:
            continue
        if text == RESET:
            messages = list(start)
            if interactive:
                out.write("(conversation cleared)\n")
            continue
        messages.append({"role": "user", "content": text})
        answer = reply(messages, replies)
        messages.append({"role": "assistant", "content": answer})
        replies += 1
        out.write(answer + "\n")
        out.flush()
    return replies


def run(args: argparse.Namespace) -> int:
    cfg = resolve(ChatConfig, args)
    check_model_location(cfg.model)
    # the model is the only input: now torch, transformers and the model
    from realspo.generation.sampling import load_generator_model, sample_reply

    defaults = resolve_sampling(cfg.model, given_sampling(cfg), cfg.trust_remote_code)
    settings = cfg.settings(defaults)
    settings.validate()
    model, tokenizer = load_generator_model(cfg.model, device=cfg.device, dtype=cfg.dtype,
                                            trust_remote_code=cfg.trust_remote_code,
                                            allow_pickle=cfg.allow_pickle)
    interactive = sys.stdin.isatty()
    print(f"sampling: {defaults.describe()}", file=sys.stderr)
    if interactive:
        print(f"talking to {cfg.model}; {RESET} clears the conversation, {QUIT} or Ctrl-D ends it",
              file=sys.stderr)

    def reply(messages: list[dict[str, str]], turn: int) -> str:
        text, finished = sample_reply(model, tokenizer, messages, settings, turn)
        if not finished:
            log.warning("(the reply was cut at --max-new-tokens %d)", settings.max_new_tokens)
        return text

    converse(reply, sys.stdin, sys.stdout, cfg.system, interactive)
    return 0
