"""``realspo train``: DPO-family preference training, optionally with SPO's degree loss.

Examples::

    realspo train --data pairs.jsonl --model ./sft --loss sigmoid --beta 0.1 --spo --out runs/dpo-spo
    realspo train --config run.yaml --lr 5e-6          # flags override the YAML file
    torchrun --nproc_per_node 4 -m realspo.cli train --config run.yaml
"""

from __future__ import annotations

import argparse
import os
from pathlib import Path

from realspo.config import add_options, check_seed, resolve
from realspo.outputs import check_location
from realspo.training.train_config import TrainConfig


def add_arguments(parser: argparse.ArgumentParser) -> None:
    add_options(parser, TrainConfig)


def run(args: argparse.Namespace) -> int:
    from realspo.training.loop import train  # torch, transformers: only when training runs

    cfg = resolve(TrainConfig, args)
    check_seed(cfg.seed)
    check_location(Path(cfg.out))  # before loading anything; replacing it is train's to judge
    out = train(cfg)
    if out is not None and os.environ.get("RANK", "0") == "0":  # once under torchrun
        print(out)
    return 0
