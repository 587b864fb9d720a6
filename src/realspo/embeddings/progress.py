"""Saving embedding progress as it goes, so a killed ``realspo select`` resumes where it was.

Embedding a large pool takes hours. :class:`EmbeddingCheckpoint` keeps the finished rows in a
sidecar directory (``select`` uses ``OUT.embeddings-partial/``) as chunk files::

    chunk-r{rank}-{n:06d}.safetensors    indices  (k,)   int64    rows, in flattened order
                                         embeddings (k, H) float32  their unit embeddings
                                         header metadata: the run's fingerprint

Only the rows finished since the previous chunk are written (every ``every`` batches, and at
the end), so the cost does not grow with the pool. Each chunk goes to a temporary name and is
renamed into place: a kill leaves complete chunks only (a stray temporary file is ignored and
removed on resume). Every chunk records a *fingerprint* of what determines the rows (the
texts, the embedder and its options): resuming with anything different is refused rather
than mixing rows from two different runs. Chunks are safetensors, never pickles.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import re
import shutil
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from realspo.errors import RealspoError
from realspo.outputs import mark_output, output_kind

log = logging.getLogger(__name__)

FINGERPRINT_KEY = "realspo_embedding_fingerprint"
_CHUNK = re.compile(r"^chunk-r(\d+)-(\d+)\.safetensors$")


PROGRESS_KIND = "embedding-progress"  # the kind in a progress directory's marker


def check_progress_owned(path: Path) -> None:
    """Refuse ``path`` unless it is absent or a progress directory realspo made (its marker
    records :data:`PROGRESS_KIND`): the name is reserved, and what else lives there is not ours."""
    path = Path(path)
    if not os.path.lexists(path):
        return
    if path.is_symlink() or not path.is_dir() or output_kind(path) != PROGRESS_KIND:
        raise RealspoError(f"{path}: not a realspo embedding-progress directory (this name is "
                           "reserved for the progress of --out); move it away")


def remove_progress(path: str | Path) -> None:
    """Delete the progress directory ``path`` (absent: nothing), refusing one realspo did not make."""
    path = Path(path)
    check_progress_owned(path)
    if path.exists():
        shutil.rmtree(path)


def check_interrupted_run(progress: Path, *, resume: bool, overwrite: bool) -> None:
    """Refuse to discard an interrupted run's saved embeddings unless told to (as ``generate``
    does), and a directory at the progress name that realspo did not make in any case."""
    check_progress_owned(progress)
    if resume or overwrite or not EmbeddingCheckpoint(progress, "").chunks():
        return
    raise RealspoError(f"{progress}: an interrupted run left its embedding progress here; pass "
                       "--resume to continue it or --overwrite to start over")


def embedding_fingerprint(texts: Sequence[str], prompts: Sequence[str] | None,
                          options: dict[str, Any]) -> str:
    """SHA-256 (hex) of the texts, the prompts (or None) and the options (JSON-serialisable)."""
    digest = hashlib.sha256(json.dumps(options, sort_keys=True, default=str).encode("utf-8"))
    for part in (texts, prompts or ()):
        digest.update(b"\x01")
        for text in part:
            encoded = text.encode("utf-8")
            digest.update(len(encoded).to_bytes(8, "little"))  # unambiguous concatenation
            digest.update(encoded)
    return digest.hexdigest()


class EmbeddingCheckpoint:
    """Finished embedding rows of one run, appended in chunks to the directory ``path``.

    ``fingerprint``: from :func:`embedding_fingerprint`; ``every``: batches buffered between
    chunk files; ``rank``: the process (several processes write their own chunks).
    """

    def __init__(self, path: str | Path, fingerprint: str, *, every: int = 64, rank: int = 0) -> None:
        if every < 1:
            raise ValueError(f"every must be >= 1, got {every}")
        self.path, self.fingerprint, self.every, self.rank = Path(path), fingerprint, every, rank
        self._indices: list[int] = []
        self._rows: list[np.ndarray] = []
        self._batches = 0
        self._next = 0

    def check_owned(self) -> None:
        """Refuse a directory at this name that realspo did not make (no progress marker)."""
        check_progress_owned(self.path)

    def chunks(self) -> list[Path]:
        """The complete chunk files, in name order."""
        if not self.path.is_dir():
            return []
        return sorted(p for p in self.path.iterdir() if _CHUNK.match(p.name))

    def clear(self) -> None:
        """Delete the directory and everything in it (a fresh start); only a directory
        carrying the progress marker is ever deleted."""
        remove_progress(self.path)

    def load(self) -> dict[int, np.ndarray]:
        """Rows saved by an earlier run of the same fingerprint: index -> (H,) float32.

        Raises :class:`RealspoError` if a chunk belongs to a different run or is unreadable.
        """
        from safetensors import safe_open

        self.check_owned()
        done: dict[int, np.ndarray] = {}
        for chunk in self.chunks():
            try:
                with safe_open(str(chunk), framework="numpy") as fh:
                    saved = (fh.metadata() or {}).get(FINGERPRINT_KEY)
                    if saved != self.fingerprint:
                        raise RealspoError(
                            f"{self.path}: cannot resume: the data or embedding options differ from "
                            "the interrupted run (the texts, embedder, --conditioned, --batch-size, "
                            "--max-length and --dtype must be the same); pass --overwrite to start over")
                    indices, rows = fh.get_tensor("indices"), fh.get_tensor("embeddings")
            except RealspoError:
                raise
            except Exception as exc:  # a chunk is renamed into place only once complete
                raise RealspoError(f"{chunk}: unreadable embedding progress ({exc}); pass "
                                   "--overwrite to start over") from None
            if rows.ndim != 2 or indices.shape != (rows.shape[0],):
                raise RealspoError(f"{chunk}: malformed embedding progress; pass --overwrite")
            done.update(zip(indices.tolist(), rows.astype(np.float32), strict=True))
            match = _CHUNK.match(chunk.name)
            if match and int(match.group(1)) == self.rank:
                self._next = max(self._next, int(match.group(2)) + 1)
        return done

    def add(self, indices: Sequence[int], rows: np.ndarray) -> None:
        """Buffer one finished batch ((B,) indices, (B, H) rows); write a chunk every ``every``."""
        self._indices.extend(int(i) for i in indices)
        self._rows.append(np.asarray(rows, dtype=np.float32))
        self._batches += 1
        if self._batches >= self.every:
            self.flush()

    def flush(self) -> None:
        """Write the buffered rows as one chunk file, atomically (nothing if the buffer is empty)."""
        if not self._indices:
            return
        from safetensors.numpy import save_file

        from realspo.outputs import atomic_path

        try:  # (ownership was checked at start, by clear() or load())
            self.path.mkdir(parents=True)
            mark_output(self.path, PROGRESS_KIND)
        except FileExistsError:  # an earlier chunk, or another process, made it
            pass
        target = self.path / f"chunk-r{self.rank}-{self._next:06d}.safetensors"
        tensors = {"indices": np.asarray(self._indices, dtype=np.int64),
                   "embeddings": np.ascontiguousarray(np.concatenate(self._rows))}
        with atomic_path(target, overwrite=True) as tmp:
            save_file(tensors, str(tmp), metadata={FINGERPRINT_KEY: self.fingerprint})
        self._next += 1
        self._indices, self._rows, self._batches = [], [], 0

    def remove_temporaries(self) -> None:
        """Delete half-written chunk files a kill left behind (their names start with '.')."""
        if self.path.is_dir():
            self.check_owned()
            for stray in self.path.glob(".chunk-*.tmp"):
                stray.unlink(missing_ok=True)
