"""The human round trip: tasks for annotators, and their answers read back as outcomes.

:func:`export_tasks` writes what an annotator sees (each pair in a seeded random order) and
the key that undoes that order; :func:`read_annotations` reads the answers back as outcomes
(``"A"``, ``"B"``, ``"tie"``, ``"skip"``, ``"unanswered"``) in the pairs' own A/B order.
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from realspo.chat_format import PromptFormat, readable_turns
from realspo.errors import InputError
from realspo.outputs import check_writable, write_rows
from realspo.schema import AnnotationPair
from realspo.sources import Row, read_rows

ANSWERS = ("A", "B", "tie", "skip")


def fingerprint(pair: AnnotationPair) -> str:
    """12 hex digits of the pair's texts, to tell whether a key belongs to this pair."""
    text = "\x00".join((pair.prompt, pair.response_a, pair.response_b))
    return hashlib.sha256(text.encode("utf-8")).hexdigest()[:12]


def default_key_path(tasks: str | os.PathLike) -> Path:
    """Where the order key of a tasks file lives: ``tasks.csv`` -> ``tasks.key.jsonl``."""
    tasks = Path(tasks)
    return tasks.with_name(tasks.stem + ".key.jsonl")


def export_tasks(pairs: Sequence[AnnotationPair], tasks: str | os.PathLike,
                 key: str | os.PathLike | None = None, seed: int = 0, overwrite: bool = False,
                 prompt_format: PromptFormat | None = None) -> Path:
    """Write what an annotator sees and the key that undoes the shown order.

    Tasks (CSV or JSONL): ``pair_id``, ``prompt``, ``A``, ``B``, ``answer`` (blank, for the
    annotator: A, B, tie or skip). The prompt is shown as readable turns (``System: ...``,
    ``Human: ...``), with the system prompt the model saw when ``prompt_format`` is the
    model's (its chat template's default one included; :meth:`PromptFormat.readable`). Each pair is shown swapped with probability 1/2 (seeded), so
    the position of a response says nothing about where it came from. The key (JSONL, default
    :func:`default_key_path`) holds ``pair_id``, ``swapped`` and the pair's :func:`fingerprint`.
    """
    key_path = Path(key) if key is not None else default_key_path(tasks)
    check_writable(tasks, overwrite)
    check_writable(key_path, overwrite)
    swapped = np.random.default_rng(seed).random(len(pairs)) < 0.5
    shown, keys = [], []
    for pair, swap in zip(pairs, swapped, strict=True):
        a, b = (pair.response_b, pair.response_a) if swap else (pair.response_a, pair.response_b)
        prompt = prompt_format.readable(pair.prompt) if prompt_format else readable_turns(pair.prompt)
        shown.append({"pair_id": pair.pair_id, "prompt": prompt, "A": a, "B": b, "answer": ""})
        keys.append({"pair_id": pair.pair_id, "swapped": bool(swap), "fingerprint": fingerprint(pair)})
    write_rows(key_path, keys, overwrite=overwrite)
    write_rows(tasks, shown, overwrite=overwrite)
    return key_path


def _read_key(key_path: Path, pairs: Sequence[AnnotationPair]) -> dict[str, bool]:
    if not key_path.exists():
        raise InputError(str(key_path), "no such key file; pass --key with the file written by "
                         "--export-tasks")
    by_id = {p.pair_id: p for p in pairs}
    swapped: dict[str, bool] = {}
    for row in read_rows(str(key_path)):
        pair = by_id.get(str(row.data.get("pair_id")))
        if pair is None:
            raise row.error(f"pair id {row.data.get('pair_id')!r} is not in the pairs file", "pair_id")
        if row.data.get("fingerprint") != fingerprint(pair):
            raise row.error("the pair's texts differ from the pairs file; was the key exported "
                            "from another pairs file?", "fingerprint")
        if not isinstance(row.data.get("swapped"), bool):
            raise row.error("expected true or false", "swapped")
        swapped[pair.pair_id] = row.data["swapped"]
    missing = [p.pair_id for p in pairs if p.pair_id not in swapped]
    if missing:
        raise InputError(str(key_path), f"{len(missing)} pair(s) of the pairs file are not in the "
                         f"key, e.g. {missing[0]!r}")
    return swapped


def _check_columns(rows: Sequence[Row], source: str) -> None:
    """Refuse a file without ``pair_id`` and ``answer`` columns, naming what it has instead: a
    spreadsheet that saved ``pair_id;answer`` (semicolons) has one column of that name.
    (A JSON Lines row may leave out an unanswered ``answer``.)"""
    columns = list(dict.fromkeys(k for row in rows[:1] for k in row.data))
    required = {"pair_id", "answer"} if source.lower().endswith(".csv") else {"pair_id"}
    if not rows or required <= set(columns):
        return
    shown = ", ".join(repr(str(c)[:40]) for c in columns[:4])
    delimiter = next((d for d in (";", "\t", "|") if any(d in str(c) for c in columns)), None)
    hint = (f"; the delimiter looks wrong ({delimiter!r}): save the file as comma-separated CSV"
            if delimiter else "")
    raise InputError(source, f"the header lacks {' and '.join(sorted(required))} (columns: "
                             f"{shown}){hint}", where="line 1")


def read_annotations(annotations: str | os.PathLike, pairs: Sequence[AnnotationPair],
                     key: str | os.PathLike | None = None) -> list[str]:
    """Outcomes (in pair order) from an annotator's answers, with the shown order undone.

    ``annotations``: CSV/JSONL with ``pair_id`` and ``answer`` (A, B, tie or skip, any case;
    blank = unanswered). An unknown or repeated pair id, or any other answer, is an
    InputError naming the row. ``key`` defaults to :func:`default_key_path` of the file.
    """
    key_path = Path(key) if key is not None else default_key_path(annotations)
    swapped = _read_key(key_path, pairs)
    canonical = {a.lower(): a for a in ANSWERS}
    answers: dict[str, str] = {}
    seen: dict[str, str] = {}
    rows = read_rows(str(annotations))
    _check_columns(rows, str(annotations))
    for row in rows:
        pair_id = row.data.get("pair_id")
        pair_id = None if pair_id is None else str(pair_id)
        if pair_id not in swapped:
            raise row.error(f"unknown pair id {pair_id!r} (not in {key_path})", "pair_id")
        if pair_id in seen:
            raise row.error(f"pair id {pair_id!r} answered twice (first at {seen[pair_id]})", "pair_id")
        seen[pair_id] = row.where
        value = row.data.get("answer")
        if value is None or (isinstance(value, str) and not value.strip()):
            continue
        answer = canonical.get(str(value).strip().lower()) if isinstance(value, str) else None
        if answer is None:
            raise row.error(f"expected A, B, tie or skip (or blank), got {value!r}", "answer")
        if swapped[pair_id] and answer in ("A", "B"):
            answer = "B" if answer == "A" else "A"  # undo the order the annotator saw
        answers[pair_id] = answer
    return [answers.get(p.pair_id, "unanswered") for p in pairs]
