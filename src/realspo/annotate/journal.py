"""An annotator's append-only journal: each event is on disk before the server replies.

One ``os.write`` of the whole line (JSON + newline) on a file opened with ``O_APPEND``, then
``os.fsync``: when the reply is sent, the line is durable. A kill at any moment leaves at
worst a last line without its newline; it was never acknowledged, so :meth:`Journal.open`
cuts it off (``labels/journals.py`` ignores it too) before appending again.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

from realspo.labels.journals import JournalState, KeyEntry, replay_journal


class Journal:
    """One annotator's journal file, open for appending."""

    def __init__(self, path: Path, fd: int, state: JournalState) -> None:
        self.path, self._fd, self.state = path, fd, state

    @classmethod
    def open(cls, path: Path, annotator: str, key: dict[str, KeyEntry]) -> Journal:
        """Replay the journal at ``path`` (if any) and open it for appending.

        Args:
            path: ``journals/<annotator>.jsonl`` of a campaign.
            annotator: whose journal it is (every label event must name them).
            key: the campaign key (the pairs a label may name).

        Returns:
            The open journal, its replayed :class:`JournalState` in ``state``.
        """
        state = replay_journal(path, annotator, key)
        existed = path.exists()
        fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
        if os.fstat(fd).st_size > state.valid_bytes:  # a torn, never acknowledged last line
            os.ftruncate(fd, state.valid_bytes)
            os.fsync(fd)
        if not existed:  # the new name must survive a crash too
            _fsync_directory(path.parent)
        return cls(path, fd, state)

    def append(self, event: dict[str, Any]) -> None:
        """Write ``event`` as one line and fsync it; returns once it is durable."""
        data = (json.dumps(event, ensure_ascii=False) + "\n").encode("utf-8")
        size = os.fstat(self._fd).st_size
        try:
            view = memoryview(data)
            while view:
                view = view[os.write(self._fd, view):]
            os.fsync(self._fd)
        except OSError:  # a full disk: take back the part-line, so the next append starts clean
            os.ftruncate(self._fd, size)
            raise

    def close(self) -> None:
        os.close(self._fd)


def _fsync_directory(directory: Path) -> None:
    fd = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
