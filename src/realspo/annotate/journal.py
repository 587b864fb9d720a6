"""An annotator's append-only journal: each event is on disk before the server replies.

Events, one JSON object a line (``labels/answers.py`` reads them for ``label --annotations``):
``{"event": "label", "seq", "pair_id", "annotator", "answer", "comment", "export_id", "time"}``
(``answer`` in the order shown) and ``{"event": "undo", "seq", "undoes"}``.

One ``os.write`` of the whole line (JSON + newline) on a file opened with ``O_APPEND``, then
``os.fsync``: when the reply is sent, the line is durable. A kill at any moment leaves at
worst a last line without its newline; it was never acknowledged, so :meth:`Journal.open`
cuts it off before appending again.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from realspo.errors import InputError
from realspo.labels.annotation import ANSWERS, Key

JOURNALS_DIR = "journals"


@dataclass
class JournalState:
    """A journal replayed: the answers in force, and where the valid part ends.

    ``answers`` maps pair id -> its label event (undone labels removed); ``order`` is the
    seqs of the labels in force, oldest first (what undo takes back, newest first);
    ``valid_bytes`` is the length of the file without a torn last line; ``last_seq`` the
    highest seq seen.
    """

    answers: dict[str, dict[str, Any]] = field(default_factory=dict)
    order: list[int] = field(default_factory=list)
    last_seq: int = 0
    valid_bytes: int = 0


def replay_journal(path: Path, annotator: str, key: Key) -> JournalState:
    """Replay one annotator's journal into the answers in force.

    A label for a pair outside ``key``, of another export or another annotator, a second
    label for a pair without an undo between, an undo of a label not in force, or a seq that
    does not increase is an InputError naming the line: journals are written by one server
    and never edited, so any of these means the file is not what it claims to be.
    """
    data = path.read_bytes() if path.exists() else b""
    state = JournalState()
    complete = data[: data.rfind(b"\n") + 1]  # a torn last line was never acknowledged
    state.valid_bytes = len(complete)
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
        elif event.get("event") == "undo":
            undone = event.get("undoes")
            if undone not in state.order:
                raise InputError(where, f"undoes {undone!r}, not a label in force",
                                 field="undoes")
            state.order.remove(undone)
            del state.answers[next(p for p, e in state.answers.items() if e["seq"] == undone)]
        else:
            raise InputError(where, f"expected event label or undo, got {event.get('event')!r}",
                             field="event")
    return state


def _check_label(event: dict[str, Any], where: str, annotator: str, key: Key) -> None:
    if event.get("pair_id") not in key.swapped:
        raise InputError(where, f"pair {event.get('pair_id')!r} is not in the campaign key",
                         field="pair_id")
    if event.get("export_id") != key.export_id:
        raise InputError(where, f"export id {event.get('export_id')!r} is not the key's "
                                f"{key.export_id!r}", field="export_id")
    if event.get("annotator") != annotator:
        raise InputError(where, f"annotator {event.get('annotator')!r} in {annotator}'s journal",
                         field="annotator")
    if event.get("answer") not in ANSWERS:
        raise InputError(where, f"expected A, B, tie or skip, got {event.get('answer')!r}",
                         field="answer")


class Journal:
    """One annotator's journal file, replayed and open for appending.

    The file is created with the first answer, so an annotator who has not started has no
    journal (``label --annotations`` reads the journals there are).
    """

    def __init__(self, path: Path, state: JournalState) -> None:
        self.path, self.state = path, state
        self._fd: int | None = None

    @classmethod
    def open(cls, path: Path, annotator: str, key: Key) -> Journal:
        """Replay the journal at ``path`` (if any) and cut off a torn last line.

        Args:
            path: ``journals/<annotator>.jsonl`` of a campaign.
            annotator: whose journal it is (every label event must name them).
            key: the campaign key (the pairs a label may name, the export id).

        Returns:
            The journal, its replayed :class:`JournalState` in ``state``.
        """
        journal = cls(path, replay_journal(path, annotator, key))
        if path.exists():
            journal._open_fd()
            if os.fstat(journal._fd).st_size > journal.state.valid_bytes:  # never acknowledged
                os.ftruncate(journal._fd, journal.state.valid_bytes)
                os.fsync(journal._fd)
        return journal

    def _open_fd(self) -> int:
        if self._fd is None:
            existed = self.path.exists()
            self._fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
            if not existed:  # the new name must survive a crash too
                _fsync_directory(self.path.parent)
        return self._fd

    def append(self, event: dict[str, Any]) -> None:
        """Write ``event`` as one line and fsync it; returns once it is durable."""
        fd = self._open_fd()
        data = (json.dumps(event, ensure_ascii=False) + "\n").encode("utf-8")
        size = os.fstat(fd).st_size
        try:
            view = memoryview(data)
            while view:
                view = view[os.write(fd, view):]
            os.fsync(fd)
        except OSError:  # a full disk: take back the part-line, so the next append starts clean
            os.ftruncate(fd, size)
            raise

    def close(self) -> None:
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None


def _fsync_directory(directory: Path) -> None:
    fd = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
