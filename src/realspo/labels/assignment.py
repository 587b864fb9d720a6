"""Several annotators per pair: who labels what, and known-answer (gold) pairs mixed in.

``label --export-tasks DIR --annotators M --overlap K`` writes ``DIR/annotator-1.csv`` ...
``DIR/annotator-M.csv`` (or ``.jsonl``, or Label Studio ``.json``) and one ``DIR/key.jsonl``.
Every pair goes to exactly K of the M annotators and the loads differ by at most one pair
(:func:`assign_pairs`). With ``--gold FILE`` (annotation rows with a known ``answer``) every
file also holds every gold pair, at random places and under an id like the others', so an
annotator cannot tell them apart; their answers score the annotator
(:mod:`realspo.labels.agreement`) and never become training labels.
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from realspo.chat_format import PromptFormat
from realspo.errors import ConfigError, InputError
from realspo.labels.annotation import ANSWERS, export_id_of, key_row, shown_task, write_tasks
from realspo.outputs import atomic_dir, write_rows
from realspo.schema import AnnotationPair, read_annotation_rows

SUFFIX = {"csv": ".csv", "jsonl": ".jsonl", "label-studio": ".json"}


def annotator_ids(annotators: int) -> list[str]:
    """``annotator-1`` ... ``annotator-M``."""
    return [f"annotator-{i + 1}" for i in range(annotators)]


def assign_pairs(n_pairs: int, annotators: int, overlap: int, seed: int = 0) -> list[list[int]]:
    """Per annotator, the indices of the pairs it labels: each pair by exactly ``overlap``
    distinct annotators, loads within one pair of each other.

    The pairs are shuffled (seeded), then dealt in turn: the t-th pair of the shuffled order
    goes to annotators ``(t * overlap + j) mod annotators`` for ``j < overlap``, distinct because
    ``overlap <= annotators``; dealing cyclically keeps every load at floor or ceil of
    ``n_pairs * overlap / annotators``, and every two annotators share about as many pairs.

    Args:
        n_pairs: how many pairs.
        annotators: how many annotators (M >= 1).
        overlap: annotators per pair (1 <= K <= M).
        seed: seed of the shuffle.

    Returns:
        M sorted lists of pair indices.
    """
    if not 1 <= overlap <= annotators:
        raise ConfigError(f"--overlap {overlap}: expected 1 to --annotators ({annotators})")
    order = np.random.default_rng(seed).permutation(n_pairs)
    given: list[list[int]] = [[] for _ in range(annotators)]
    for t, pair in enumerate(order):
        for j in range(overlap):
            given[(t * overlap + j) % annotators].append(int(pair))
    return [sorted(g) for g in given]


def read_gold(path: str | os.PathLike) -> tuple[list[AnnotationPair], list[str]]:
    """Gold pairs: annotation rows with an ``answer`` (A, B or tie, in the row's own order),
    re-identified so their ids look like any other pair's.

    Returns:
        (pairs, answers), in file order.
    """
    pairs, answers = [], []
    for pair in read_annotation_rows(path):
        value = pair.row.data.get("answer")
        answer = {a.lower(): a for a in ANSWERS[:3]}.get(str(value).strip().lower())
        if answer is None:
            raise pair.row.error(f"expected the known answer A, B or tie, got {value!r:.40}",
                                 "answer")
        text = "\x00".join((pair.prompt, pair.response_a, pair.response_b))
        hidden = "p-" + hashlib.sha256(text.encode("utf-8")).hexdigest()[:12] + ":0-1"
        pairs.append(AnnotationPair(hidden, pair.prompt, pair.response_a, pair.response_b,
                                    pair.row, {k: v for k, v in pair.meta.items()
                                               if k in ("finished_a", "finished_b")}))
        answers.append(answer)
    return pairs, answers


def export_assignments(pairs: Sequence[AnnotationPair], out_dir: str | os.PathLike,
                       annotators: int, overlap: int, seed: int = 0, task_format: str = "csv",
                       gold: str | os.PathLike | None = None, overwrite: bool = False,
                       prompt_format: PromptFormat | None = None) -> Path:
    """Write one tasks file per annotator and the shared key into ``out_dir``.

    Args:
        pairs: the annotation pairs.
        out_dir: the directory to write (a realspo ``label-tasks`` directory).
        annotators: how many annotators (M).
        overlap: annotators per pair (K).
        seed: seed of the assignment, the shown order and each file's task order.
        task_format: csv, jsonl or label-studio.
        gold: optional file of gold pairs (see :func:`read_gold`).
        overwrite: replace an existing ``label-tasks`` directory.
        prompt_format: the model's prompt format, to show its system prompt.

    Returns:
        The key path, ``out_dir/key.jsonl``. Its rows: ``pair_id``, ``swapped``,
        ``fingerprint``, ``annotators`` (who was given the pair), ``export_id``, and ``gold``
        (the known answer) for gold pairs.
    """
    gold_pairs, gold_answers = read_gold(gold) if gold else ([], [])
    known = {p.pair_id for p in pairs}
    clash = [g.row.where for g in gold_pairs if g.pair_id in known]
    if clash:
        raise InputError(str(gold), "a gold pair is also in the pairs file", where=clash[0])
    given = assign_pairs(len(pairs), annotators, overlap, seed)
    rng = np.random.default_rng([seed, 1])
    every = list(pairs) + gold_pairs
    swapped = rng.random(len(every)) < 0.5
    names = annotator_ids(annotators)
    holders: dict[int, list[str]] = {i: [] for i in range(len(every))}
    for name, indices in zip(names, given, strict=True):
        for i in indices:
            holders[i].append(name)
    for g in range(len(pairs), len(every)):
        holders[g] = list(names)
    keys = []
    for i, pair in enumerate(every):
        extra = {"annotators": holders[i]}
        if i >= len(pairs):
            extra["gold"] = gold_answers[i - len(pairs)]
        keys.append(key_row(pair, bool(swapped[i]), **extra))
    export_id = export_id_of(keys)
    out_dir = Path(out_dir)
    with atomic_dir(out_dir, overwrite, kind="label-tasks") as tmp:
        for name, indices in zip(names, given, strict=True):
            mine = indices + list(range(len(pairs), len(every)))
            order = rng.permutation(len(mine))
            tasks = [{**shown_task(every[mine[t]], bool(swapped[mine[t]]), export_id,
                                   prompt_format), "annotator": name} for t in order]
            write_tasks(tmp / f"{name}{SUFFIX[task_format]}", tasks, task_format)
        write_rows(tmp / "key.jsonl", [{**k, "export_id": export_id} for k in keys])
    return out_dir / "key.jsonl"
