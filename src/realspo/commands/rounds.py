"""``realspo rounds``: multi-round active labeling (see :mod:`realspo.pipeline.rounds`).

R rounds of generate (with the current policy) -> select -> label (an automatic judge) ->
train (from the previous round's policy), with a budget schedule; rerunning the same command
continues after the last finished round.
"""

from __future__ import annotations

import argparse

from realspo.config import add_options, resolve
from realspo.pipeline.rounds_config import RoundsConfig

EPILOG = """\
Labels come from an automatic judge in every round (a reward model, llm:PATH, proving-ground);
human labels are not part of the loop: for people, run the stages one by one
(generate, select, label --export-tasks / --annotations, train).

examples:
  realspo rounds --model ./sft --prompts prompts.jsonl --judge ./reward-model \\
      --budget 600 --rounds 3 --schedule front --strategy margin --first-strategy random \\
      --out runs/rounds
  realspo rounds --model ./sft --prompts prompts.jsonl --judge llm:./judge --budget 0.3 \\
      --strategy easy --lora-r 16 --max-steps 50 --out runs/rounds-lora
"""


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.epilog = EPILOG
    add_options(parser, RoundsConfig)


def run(args: argparse.Namespace) -> int:
    from realspo.pipeline.rounds import run_rounds

    cfg = resolve(RoundsConfig, args)
    model = run_rounds(cfg)
    print(f"{cfg.rounds} rounds finished; summary {cfg.out}/summary.json; final model {model}")
    return 0
