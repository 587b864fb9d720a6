"""The human round trip, export side: tasks for annotators and the key that undoes their order.

:func:`export_tasks` writes what one annotator sees (each pair in a seeded random order) and
the key; :mod:`realspo.labels.assignment` does the same for several annotators. The answers
come back through :mod:`realspo.labels.answers`.

**An export and its answers stay together.** Every export gets an *export id*: 12 hex digits
of the key's content (each pair's id, shown order and fingerprint, and who was given what), so
two exports of the same pairs in another order (another ``--seed``) have different ids. Every
task row (and Label Studio task) carries it in ``export_id``, and so does every key row;
answers whose export id is not the key's are refused, because undoing one export's order with
another's key silently flips labels.
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from realspo.chat_format import PromptFormat, readable_turns
from realspo.errors import InputError
from realspo.outputs import check_writable, write_rows
from realspo.schema import AnnotationPair
from realspo.sources import read_rows

ANSWERS = ("A", "B", "tie", "skip")
TASK_FORMATS = ("csv", "jsonl", "label-studio")
CUT_MARKER = "[cut off here: this response reached the token limit]"


def fingerprint(pair: AnnotationPair) -> str:
    """12 hex digits of the pair's texts, to tell whether a key belongs to this pair."""
    text = "\x00".join((pair.prompt, pair.response_a, pair.response_b))
    return hashlib.sha256(text.encode("utf-8")).hexdigest()[:12]


def default_key_path(tasks: str | os.PathLike) -> Path:
    """Where the order key of a tasks file lives: ``tasks.csv`` -> ``tasks.key.jsonl``."""
    tasks = Path(tasks)
    return tasks.with_name(tasks.stem + ".key.jsonl")


def task_format_of(path: str | os.PathLike, task_format: str | None) -> str:
    """The tasks' format: ``task_format`` if given, else from the suffix (``.jsonl`` -> jsonl,
    anything else csv)."""
    if task_format is not None:
        return task_format
    return "jsonl" if str(path).lower().endswith(".jsonl") else "csv"


def export_id_of(key_rows: Sequence[dict[str, Any]]) -> str:
    """The export id: 12 hex digits of the key rows (without their ``export_id``)."""
    text = json.dumps([{k: v for k, v in r.items() if k != "export_id"} for r in key_rows],
                      sort_keys=True)
    return hashlib.sha256(text.encode("utf-8")).hexdigest()[:12]


def shown_response(pair: AnnotationPair, side: str) -> tuple[str, bool]:
    """(text as shown, cut off?) of response ``side`` ("a" or "b"); a response cut at the
    token limit (``finished_x`` False) ends with :data:`CUT_MARKER` so the annotator sees it."""
    text = pair.response_a if side == "a" else pair.response_b
    cut = pair.meta.get(f"finished_{side}") is False
    return (f"{text}\n\n{CUT_MARKER}" if cut else text), cut


def shown_task(pair: AnnotationPair, swapped: bool, export_id: str,
               prompt_format: PromptFormat | None = None) -> dict[str, Any]:
    """What an annotator sees of one pair: ``pair_id``, ``export_id``, the prompt as readable
    turns (system prompt included when ``prompt_format`` is the model's), ``A`` and ``B`` in the
    shown order, ``A_cut_off``/``B_cut_off``, and blank ``answer`` and ``comment``."""
    first, second = ("b", "a") if swapped else ("a", "b")
    (a, a_cut), (b, b_cut) = shown_response(pair, first), shown_response(pair, second)
    prompt = prompt_format.readable(pair.prompt) if prompt_format else readable_turns(pair.prompt)
    return {"pair_id": pair.pair_id, "export_id": export_id, "prompt": prompt, "A": a, "B": b,
            "A_cut_off": a_cut, "B_cut_off": b_cut, "answer": "", "comment": ""}


def key_row(pair: AnnotationPair, swapped: bool, **extra: Any) -> dict[str, Any]:
    """One key row without its export id: ``pair_id``, ``swapped``, ``fingerprint`` (+ extra)."""
    return {"pair_id": pair.pair_id, "swapped": bool(swapped), "fingerprint": fingerprint(pair),
            **extra}


def write_tasks(path: str | os.PathLike, tasks: Sequence[dict[str, Any]], task_format: str,
                overwrite: bool = False) -> list[Path]:
    """Write shown tasks as CSV, JSONL or Label Studio import JSON (+ its labeling config);
    returns the paths written."""
    if task_format == "label-studio":
        from realspo.labels.label_studio import write_label_studio_tasks

        return write_label_studio_tasks(path, tasks, overwrite)
    rows = [{k: v for k, v in t.items()} for t in tasks]
    if task_format == "csv":  # a spreadsheet shows booleans better as a visible word
        for r in rows:
            for side in "AB":
                r[f"{side}_cut_off"] = "CUT OFF" if r[f"{side}_cut_off"] else ""
    suffix = ".csv" if task_format == "csv" else ".jsonl"
    if Path(path).suffix.lower() != suffix:
        raise InputError(str(path), f"--task-format {task_format} writes a {suffix} file")
    return [write_rows(path, rows, overwrite=overwrite)]


def export_tasks(pairs: Sequence[AnnotationPair], tasks: str | os.PathLike,
                 key: str | os.PathLike | None = None, seed: int = 0, overwrite: bool = False,
                 prompt_format: PromptFormat | None = None,
                 task_format: str | None = None) -> Path:
    """Write what one annotator sees and the key that undoes the shown order.

    Args:
        pairs: the annotation pairs (``realspo select`` rows).
        tasks: the tasks file (``.csv``, ``.jsonl``, or Label Studio ``.json``).
        key: the key file (JSONL; default :func:`default_key_path`).
        seed: seed of the shown order (each pair swapped with probability 1/2).
        overwrite: replace existing outputs.
        prompt_format: the model's prompt format, to show its system prompt.
        task_format: csv, jsonl or label-studio (default: from the suffix).

    Returns:
        The key path. Its rows: ``pair_id``, ``swapped``, ``fingerprint``, ``export_id``.
    """
    key_path = Path(key) if key is not None else default_key_path(tasks)
    fmt = task_format_of(tasks, task_format)
    check_writable(tasks, overwrite)
    check_writable(key_path, overwrite)
    swapped = np.random.default_rng(seed).random(len(pairs)) < 0.5
    keys = [key_row(p, s) for p, s in zip(pairs, swapped, strict=True)]
    export_id = export_id_of(keys)
    shown = [shown_task(p, bool(s), export_id, prompt_format)
             for p, s in zip(pairs, swapped, strict=True)]
    write_rows(key_path, [{**k, "export_id": export_id} for k in keys], overwrite=overwrite)
    write_tasks(tasks, shown, fmt, overwrite)
    return key_path


# --- the key, read back -----------------------------------------------------------------


@dataclass
class Key:
    """An export's key: where it is, its export id, each pair's shown order, the gold answers
    (pair id -> the right answer in the pair's own order) and the gold pairs' texts."""

    path: Path
    export_id: str | None
    swapped: dict[str, bool]
    gold: dict[str, str] = field(default_factory=dict)
    fingerprints: dict[str, str] = field(default_factory=dict)

    def undo(self, pair_id: str, answer: str) -> str:
        """The answer in the pair's own A/B order."""
        if self.swapped[pair_id] and answer in ("A", "B"):
            return "B" if answer == "A" else "A"
        return answer


def read_key(key_path: str | os.PathLike) -> Key:
    """Read a key file (an InputError naming the row for a malformed one)."""
    key_path = Path(key_path)
    if not key_path.is_file():
        raise InputError(str(key_path), "no such key file; pass --key with the file written by "
                         "--export-tasks")
    key = Key(key_path, None, {})
    ids: set[Any] = set()
    for row in read_rows(str(key_path)):
        pair_id = row.data.get("pair_id")
        if not isinstance(pair_id, str) or not pair_id:
            raise row.error("expected a pair id", "pair_id")
        if pair_id in key.swapped:
            raise row.error(f"pair id {pair_id!r} appears twice", "pair_id")
        if not isinstance(row.data.get("swapped"), bool):
            raise row.error("expected true or false", "swapped")
        key.swapped[pair_id] = row.data["swapped"]
        key.fingerprints[pair_id] = str(row.data.get("fingerprint"))
        ids.add(row.data.get("export_id"))
        gold = row.data.get("gold")
        if gold is not None:
            if gold not in ANSWERS[:3]:
                raise row.error(f"expected A, B or tie, got {gold!r}", "gold")
            key.gold[pair_id] = gold
    if len(ids) > 1:
        raise InputError(str(key_path), f"rows of several exports ({', '.join(sorted(map(str, ids)))})"
                         "; a key belongs to one export")
    key.export_id = next(iter(ids), None)
    return key


def check_key_pairs(key: Key, pairs: Sequence[AnnotationPair]) -> None:
    """Refuse a key that does not belong to ``pairs``: a pair id of the key (gold pairs aside)
    that is not in the pairs file, a pair whose texts changed, or a pair the key lacks."""
    by_id = {p.pair_id: p for p in pairs}
    for pair_id, printed in key.fingerprints.items():
        if pair_id in key.gold:
            continue
        pair = by_id.get(pair_id)
        if pair is None:
            raise InputError(str(key.path), f"pair id {pair_id!r} is not in the pairs file",
                             field="pair_id")
        if printed != fingerprint(pair):
            raise InputError(str(key.path), f"pair {pair_id!r}: the pair's texts differ from the "
                             "pairs file; was the key exported from another pairs file?",
                             field="fingerprint")
    missing = [p.pair_id for p in pairs if p.pair_id not in key.swapped]
    if missing:
        raise InputError(str(key.path), f"{len(missing)} pair(s) of the pairs file are not in the "
                         f"key, e.g. {missing[0]!r}")
