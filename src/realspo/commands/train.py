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
from realspo.formats.registry import parse_rows
from realspo.models import check_model_location
from realspo.outputs import check_location
from realspo.schema import read_preference_rows
from realspo.training.run_dir import check_run_dir
from realspo.training.train_config import TrainConfig


def add_arguments(parser: argparse.ArgumentParser) -> None:
    add_options(parser, TrainConfig)


def check_before_loading(cfg: TrainConfig) -> None:
    """What needs no model, checked before torch and transformers are imported (seconds): the
    pairs file's rows (a local file; a dataset directory or hub id is read by the run) and
    whether ``OUT`` may be written. The run checks both again, under its lock.

    Args:
        cfg: the resolved options.
    """
    check_seed(cfg.seed)
    check_location(Path(cfg.out))
    if Path(cfg.data).is_file():
        parse_rows(read_preference_rows(cfg.data, cfg.split), "trl")  # as training reads them
    check_run_dir(Path(cfg.out), resume=cfg.resume, overwrite=cfg.overwrite)
    check_model_location(cfg.model)


def run(args: argparse.Namespace) -> int:
    cfg = resolve(TrainConfig, args)
    check_before_loading(cfg)
    from realspo.training.loop import train  # torch, transformers: only when training runs

    out = train(cfg)
    if out is not None and os.environ.get("RANK", "0") == "0":  # once under torchrun
        print(out)
    return 0
