"""Annotation campaigns on disk: the order key and the annotators' journals, read back.

A campaign directory (written by ``realspo annotate``) holds:

- ``key.jsonl``: one row per pair shown, ``{pair_id, swapped, fingerprint, export_id}``
  (whether the pair is shown with its responses swapped, as :func:`export_tasks`'s key, plus
  the campaign's export id, and ``annotators``: who was given it); a gold pair adds ``gold``,
  its known answer (A, B or tie in the pair's own order).
- ``journals/<annotator>.jsonl``: an append-only journal of events, one JSON object a line:
  ``{"event": "label", "seq", "pair_id", "annotator", "answer", "comment", "export_id",
  "time"}`` (``answer`` in the *shown* order) and ``{"event": "undo", "seq", "undoes"}``.

A line without its final newline is a write cut short by a crash: it was never acknowledged
(the server replies only after the whole line is fsynced), so it is ignored.
"""

from __future__ import annotations

import json
import os
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from realspo.errors import InputError
from realspo.labels.annotation import fingerprint
from realspo.schema import AnnotationPair

KEY_FILE = "key.jsonl"
JOURNALS_DIR = "journals"
JOURNAL_ANSWERS = ("A", "B", "tie", "skip")


@dataclass
class KeyEntry:
    """One pair of a campaign's key: its shown order and, for a gold pair, its known answer."""

    pair_id: str
    swapped: bool
    fingerprint: str
    export_id: str
    gold_answer: str | None = None


@dataclass
class JournalState:
    """An annotator's journal replayed: the answers in force, and where the valid part ends.

    ``answers`` maps pair id -> its label event (undone labels removed); ``order`` is the
    seqs of the labels in force, oldest first (what ``undo`` takes back, newest first);
    ``valid_bytes`` is the length of the file without a torn last line; ``last_seq`` the
    highest seq seen.
    """

    answers: dict[str, dict[str, Any]] = field(default_factory=dict)
    order: list[int] = field(default_factory=list)
    last_seq: int = 0
    valid_bytes: int = 0


def is_campaign(path: str | os.PathLike) -> bool:
    """Whether ``path`` is a campaign directory (holds a key and a journals folder)."""
    path = Path(path)
    return (path / KEY_FILE).is_file() and (path / JOURNALS_DIR).is_dir()


def read_key(directory: str | os.PathLike) -> dict[str, KeyEntry]:
    """The campaign key, pair id -> :class:`KeyEntry`; a malformed row is an InputError."""
    path = Path(directory) / KEY_FILE
    entries: dict[str, KeyEntry] = {}
    for number, row in enumerate(_lines(path), start=1):
        where = f"{path}:{number}"
        if not isinstance(row, dict):
            raise InputError(where, "expected a JSON object")
        pair_id, swapped, fp, export_id = (row.get(k) for k in
                                           ("pair_id", "swapped", "fingerprint", "export_id"))
        if not isinstance(pair_id, str) or pair_id in entries:
            raise InputError(where, f"expected a new pair id, got {pair_id!r}", field="pair_id")
        if not isinstance(swapped, bool):
            raise InputError(where, "expected true or false", field="swapped")
        if not isinstance(fp, str) or not isinstance(export_id, str):
            raise InputError(where, "expected strings", field="fingerprint/export_id")
        gold = row.get("gold")
        if gold is not None and gold not in ("A", "B", "tie"):
            raise InputError(where, f"expected A, B or tie, got {gold!r}", field="gold")
        entries[pair_id] = KeyEntry(pair_id, swapped, fp, export_id, gold)
    return entries


def _lines(path: Path) -> list[Any]:
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise InputError(str(path), "no such file; is this a campaign directory written by "
                                    "`realspo annotate`?") from None
    rows = []
    for number, line in enumerate(text.splitlines(), start=1):
        try:
            rows.append(json.loads(line))
        except ValueError:
            raise InputError(f"{path}:{number}", "not a JSON line") from None
    return rows


def replay_journal(path: str | os.PathLike, annotator: str,
                   key: dict[str, KeyEntry]) -> JournalState:
    """Replay one annotator's journal into the answers in force.

    A label for a pair outside ``key``, of another export or another annotator, a second
    label for a pair without an undo between, an undo of a label not in force, or a seq that
    does not increase is an InputError naming the line: journals are written by one server
    and never edited, so any of these means the file is not what it claims to be.
    """
    path = Path(path)
    data = path.read_bytes() if path.exists() else b""
    state = JournalState()
    complete = data[: data.rfind(b"\n") + 1]  # a torn last line was never acknowledged
    state.valid_bytes = len(complete)
    by_seq: dict[int, dict[str, Any]] = {}
    for number, raw in enumerate(complete.splitlines(), start=1):
        where = f"{path}:{number}"
        try:
            event = json.loads(raw)
        except ValueError:
            raise InputError(where, "not a JSON line (journals are append-only; was it "
                                    "edited?)") from None
        seq = event.get("seq") if isinstance(event, dict) else None
        if not isinstance(seq, int) or isinstance(seq, bool) or seq <= state.last_seq:
            raise InputError(where, f"expected a seq above {state.last_seq}, got {seq!r}",
                             field="seq")
        state.last_seq = seq
        if event.get("event") == "label":
            _check_label(event, where, annotator, key)
            if event["pair_id"] in state.answers:
                raise InputError(where, f"pair {event['pair_id']!r} answered twice without an "
                                        "undo", field="pair_id")
            state.answers[event["pair_id"]] = event
            state.order.append(seq)
            by_seq[seq] = event
        elif event.get("event") == "undo":
            undone = by_seq.get(event.get("undoes"))  # type: ignore[arg-type]
            if undone is None or event.get("undoes") not in state.order:
                raise InputError(where, f"undoes {event.get('undoes')!r}, not a label in force",
                                 field="undoes")
            state.order.remove(event["undoes"])
            del state.answers[undone["pair_id"]]
        else:
            raise InputError(where, f"expected event label or undo, got {event.get('event')!r}",
                             field="event")
    return state


def _check_label(event: dict[str, Any], where: str, annotator: str,
                 key: dict[str, KeyEntry]) -> None:
    entry = key.get(event.get("pair_id"))  # type: ignore[arg-type]
    if entry is None:
        raise InputError(where, f"pair {event.get('pair_id')!r} is not in the campaign key",
                         field="pair_id")
    if event.get("export_id") != entry.export_id:
        raise InputError(where, f"export id {event.get('export_id')!r} is not the key's "
                                f"{entry.export_id!r}", field="export_id")
    if event.get("annotator") != annotator:
        raise InputError(where, f"annotator {event.get('annotator')!r} in {annotator}'s journal",
                         field="annotator")
    if event.get("answer") not in JOURNAL_ANSWERS:
        raise InputError(where, f"expected A, B, tie or skip, got {event.get('answer')!r}",
                         field="answer")


def unswap(answer: str, entry: KeyEntry) -> str:
    """An answer in the shown order -> in the pair's own order."""
    if entry.swapped and answer in ("A", "B"):
        return "B" if answer == "A" else "A"
    return answer


def campaign_answers(directory: str | os.PathLike) -> dict[str, dict[str, str]]:
    """Every annotator's answers in force, annotator -> pair id -> answer in the pair's own
    order (gold pairs included; :func:`read_key` tells them apart)."""
    directory = Path(directory)
    key = read_key(directory)
    answers: dict[str, dict[str, str]] = {}
    for journal in sorted((directory / JOURNALS_DIR).glob("*.jsonl")):
        state = replay_journal(journal, journal.stem, key)
        answers[journal.stem] = {pid: unswap(e["answer"], key[pid])
                                 for pid, e in state.answers.items()}
    return answers


def campaign_outcomes(directory: str | os.PathLike, pairs: Sequence[AnnotationPair]) -> list[str]:
    """One outcome per pair (in pair order) from a campaign's journals, by majority.

    Each annotator's answer counts once; skips do not vote. The most frequent of A, B and tie
    wins; a draw between them (one A, one B) is a ``tie``, so a disputed pair gives no
    preference; a pair nobody answered is ``unanswered`` (``skip`` if every answer was a
    skip). Gold pairs are left out. Every pair must be in the key with the same texts (its
    fingerprint), so answers never meet another campaign's key.

    Args:
        directory: a campaign directory (:func:`is_campaign`).
        pairs: the pairs file's rows.

    Returns:
        ``"A"``, ``"B"``, ``"tie"``, ``"skip"`` or ``"unanswered"`` per pair.
    """
    key = read_key(directory)
    for pair in pairs:
        entry = key.get(pair.pair_id)
        if entry is None:
            raise pair.row.error(f"pair id {pair.pair_id!r} is not in the campaign {directory}",
                                 "pair_id")
        if entry.fingerprint != fingerprint(pair):
            raise pair.row.error(f"the pair's texts differ from campaign {directory}'s; was it "
                                 "set up from another pairs file?", "pair_id")
    votes: dict[str, Counter[str]] = {p.pair_id: Counter() for p in pairs}
    for answers in campaign_answers(directory).values():
        for pair_id, answer in answers.items():
            if pair_id in votes:
                votes[pair_id][answer] += 1
    outcomes = []
    for pair in pairs:
        counted = votes[pair.pair_id]
        ranked = [(n, a) for a, n in counted.items() if a != "skip"]
        if not ranked:
            outcomes.append("skip" if counted else "unanswered")
            continue
        top = max(n for n, _ in ranked)
        winners = [a for n, a in ranked if n == top]
        outcomes.append(winners[0] if len(winners) == 1 else "tie")
    return outcomes
