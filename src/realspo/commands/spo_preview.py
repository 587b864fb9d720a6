"""``realspo spo-preview``: print a few preference pairs with their SPO degree variants.

Shows exactly what the degree loss would see during ``realspo train --spo`` with the same
options: for each response, every level with its class label, its text and the key
phrases removed, or why the response is skipped.
"""

from __future__ import annotations

import argparse
import os
import shutil
import sys
import textwrap
from dataclasses import dataclass

from realspo.config import add_options, check_seed, option, resolve
from realspo.errors import ConfigError, InputError
from realspo.formats.registry import DETECT_ROWS, format_names, parse_rows
from realspo.sources import read_rows
from realspo.spo.variants import (
    LABEL_MODES,
    REMOVALS,
    SELECTIONS,
    SPO_DEFAULTS,
    SPOConfig,
    degree_label,
    degree_variants,
    is_graded,
)


@dataclass
class SPOPreviewConfig:
    data: str = option(help="preference pairs (TRL: prompt, chosen, rejected; or any format realspo "
                            "reads), a file, dataset directory or hub id", metavar="PATH",
                       path="input")
    format: str = option("auto", "input format", choices=("auto", *format_names()))
    n: int = option(3, "number of pairs to show", flag="-n")
    split: str = option("train", "split to read when --data is a dataset directory or hub id")
    levels: int = option(SPO_DEFAULTS.levels, "degree levels D (level 0 is the original response)")
    selection: str = option(SPO_DEFAULTS.selection, "which key phrases level d removes, a fraction d/D of "
                                   "them: facts first (numbers and sentence-final phrases, then "
                                   "names), RAKE's top-ranked, or a seeded random subset",
                            choices=SELECTIONS)
    removal: str = option(SPO_DEFAULTS.removal, "what level d removes: the key phrases (phrases) or "
                                                "the whole sentences holding them (sentences)",
                          choices=REMOVALS)
    labels: str = option(SPO_DEFAULTS.labels, "label space: separate (rejected classes D..2D-1) or shared",
                         choices=LABEL_MODES)
    seed: int = option(SPO_DEFAULTS.seed, "seed of the random selection")
    max_words: int = option(SPO_DEFAULTS.max_words, "RAKE: longest key phrase, in words")
    width: int = option(0, "wrap text at this many columns (0: terminal width)")

    def validate(self) -> None:
        if self.n < 1:
            raise ConfigError(f"-n must be >= 1, got {self.n}")
        check_seed(self.seed)
        if self.width < 0:
            raise ConfigError(f"--width must be >= 0, got {self.width}")
        self.spo_config().validate()

    def spo_config(self) -> SPOConfig:
        return SPOConfig(levels=self.levels, labels=self.labels, selection=self.selection,
                         seed=self.seed, max_words=self.max_words, removal=self.removal)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    add_options(parser, SPOPreviewConfig)


def read_pairs(source: str, split: str, fmt: str, limit: int) -> list[tuple[str, str, str, str]]:
    """The first ``limit`` labelled pairs as ``(where, prompt, chosen, rejected)``, read with
    the same format readers as the rest of realspo (:mod:`realspo.formats.registry`): conversations
    rendered as HH text, implicit prompts split off, scored candidates oriented by score."""
    rows = read_rows(source, split)
    if not rows:
        raise InputError(source, "the dataset is empty (no rows)")
    pairs = []
    # A preview needs only the first rows (SHP groups may then be partial: fine for a look).
    groups, _ = parse_rows(rows[: max(limit, DETECT_ROWS)], fmt)
    for group in groups:
        for c, r in group.preferences:
            if len(pairs) < limit:
                where = f"{source}:{group.meta.get('row', group.prompt_id)}"
                pairs.append((where, group.prompt, group.responses[c], group.responses[r]))
    if not pairs:
        raise InputError(source, "no labelled pairs in the first rows (expected chosen/rejected "
                                 "pairs, or candidates with scores)")
    return pairs


def _wrap(text: str, width: int, indent: str) -> str:
    lines = []
    for para in text.strip().splitlines() or [""]:
        lines.extend(textwrap.wrap(para, width=width, initial_indent=indent, subsequent_indent=indent)
                     or [indent])
    return "\n".join(lines)


def format_pair(where: str, prompt: str, chosen: str, rejected: str, cfg: SPOConfig, width: int) -> str:
    """One pair with the variants of both responses, as terminal text."""
    out = [f"=== {where} " + "=" * max(3, width - len(where) - 5), "prompt:",
           _wrap(prompt if len(prompt) <= 400 else prompt[:400] + " [...]", width, "    ")]
    for side, response in (("chosen", chosen), ("rejected", rejected)):
        variants = degree_variants(response, cfg.levels, selection=cfg.selection, seed=cfg.seed,
                                   max_words=cfg.max_words, removal=cfg.removal)
        graded = is_graded(variants)
        out.append(f"--- {side}" + ("" if graded else
                   f"  [skipped by the degree loss: needs >= {cfg.levels - 1} units to remove and a word left at every level]"))
        for v in variants:
            label = degree_label(v.level, side == "chosen", cfg.levels, cfg.labels)
            out.append(f"  level {v.level}  label {label}  removed {len(v.removed)}:")
            out.append(_wrap(v.text, width, "    "))
            if v.removed:
                out.append(_wrap("removed: " + "; ".join(f'"{p}"' for p in v.removed), width, "      "))
    return "\n".join(out)


def run(args: argparse.Namespace) -> int:
    cfg = resolve(SPOPreviewConfig, args)
    width = cfg.width or min(shutil.get_terminal_size((100, 24)).columns, 120)
    spo = cfg.spo_config()
    try:
        for where, prompt, chosen, rejected in read_pairs(cfg.data, cfg.split, cfg.format, cfg.n):
            print(format_pair(where, prompt, chosen, rejected, spo, width) + "\n", flush=True)
    except BrokenPipeError:  # ``realspo spo-preview ... | head``: the reader has seen enough
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
    return 0
