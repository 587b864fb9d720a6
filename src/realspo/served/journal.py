"""The reply journal: every reply is appended as it arrives, and read back as a cache.

One JSONL file per (kind, model, base URL) under the cache directory
(``<dir>/<kind>-<16 hex digits>.jsonl``); each line is ``{"key": ..., "reply": ...}``, where the
key is the SHA-256 of everything that determines the reply (:func:`request_key`: the model,
the base URL and the request: template, prompt, responses, order, sampling options and seed).
A run reads the journal first and sends only the requests it lacks, so a killed run resumes
without asking again, and a second command that needs the same replies (``evaluate`` after
``label``) sends none. Lines are appended, flushed and fsynced one at a time under a lock; a
torn last line left by a kill is cut off when the journal is opened. Nothing else is stored:
no API key, no headers.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import threading
from pathlib import Path
from typing import Any

from realspo.errors import RealspoError

log = logging.getLogger(__name__)


def request_key(**fields: Any) -> str:
    """SHA-256 hex digest of ``fields`` as canonical JSON (sorted keys)."""
    text = json.dumps(fields, sort_keys=True, ensure_ascii=False, separators=(",", ":"))
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


def journal_path(directory: str | os.PathLike, kind: str, model: str, base_url: str) -> Path:
    """The journal of ``kind`` (``chat``, ``embeddings``) replies of ``model`` at ``base_url``."""
    digest = request_key(model=model, base_url=base_url)[:16]
    return Path(directory) / f"{kind}-{digest}.jsonl"


class ReplyJournal:
    """Replies by request key, loaded from and appended to one JSONL file (see the module)."""

    def __init__(self, path: str | os.PathLike) -> None:
        self.path = Path(path)
        self.replies: dict[str, Any] = {}
        self._lock = threading.Lock()
        if self.path.exists():
            self._load()

    def _load(self) -> None:
        raw = self.path.read_bytes()
        end = raw.rfind(b"\n") + 1  # text after the last newline is a torn write
        if end != len(raw):
            log.info("%s: dropping an unfinished last line", self.path)
            with self.path.open("r+b") as fh:
                fh.truncate(end)
        for number, line in enumerate(raw[:end].splitlines(), 1):
            if not line.strip():
                continue
            try:
                entry = json.loads(line)
                self.replies[entry["key"]] = entry["reply"]
            except (json.JSONDecodeError, KeyError, TypeError):
                raise RealspoError(f"{self.path}:{number}: not a reply journal line; delete the "
                                   "file to start its cache over") from None

    def __contains__(self, key: str) -> bool:
        return key in self.replies

    def __len__(self) -> int:
        return len(self.replies)

    def get(self, key: str) -> Any:
        """The reply stored under ``key`` (KeyError if none)."""
        return self.replies[key]

    def add(self, key: str, reply: Any) -> None:
        """Store ``reply`` under ``key``: appended, flushed and fsynced before returning."""
        line = json.dumps({"key": key, "reply": reply}, ensure_ascii=False) + "\n"
        with self._lock:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            with self.path.open("a", encoding="utf-8") as fh:
                fh.write(line)
                fh.flush()
                os.fsync(fh.fileno())
            self.replies[key] = reply
