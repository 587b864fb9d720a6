"""Atomic writing of every file realspo produces.

Everything goes to a temporary file in the destination directory and is renamed into place
(``os.replace`` is atomic on POSIX), so a crash or kill leaves either the old file or the new
one, never a torn file (a kill can leave a hidden ``.NAME.*.tmp`` file beside it; an exception
removes it). Existing outputs are refused unless ``overwrite`` is set.
"""

from __future__ import annotations

import contextlib
import errno
import json
import math
import os
import secrets
import shutil
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

from realspo.errors import ConfigError, OutputExistsError, RealspoError

MIN_FREE_BYTES = 1 << 20  # a file system with less free space than this counts as full


def check_writable(path: str | os.PathLike, overwrite: bool) -> Path:
    """Fail early (before expensive work) if ``path`` exists and may not be replaced, or if it
    cannot be written at all (:func:`check_location`)."""
    path = Path(path)
    if path.exists() and not overwrite:
        raise OutputExistsError(str(path))
    check_location(path)
    return path


def check_location(path: Path) -> None:
    """Refuse an output whose directory cannot be created or written.

    Walks up from ``path``'s parent to the first existing ancestor: a file there (``--out
    f/x.jsonl`` where ``f`` is a file), a directory this process may not write (permissions,
    a read-only file system), a full file system, or one that refuses a probe file (``/proc``)
    are reported now, not after hours of work.
    """
    ancestor = path.parent
    while not ancestor.exists() and ancestor != ancestor.parent:
        ancestor = ancestor.parent
    if not ancestor.is_dir():
        raise RealspoError(f"{path}: cannot be written: {ancestor} is a file, not a directory")
    why = None
    if not os.access(ancestor, os.W_OK | os.X_OK):
        why = "is not writable"
    elif hasattr(os, "statvfs"):  # POSIX
        fs = os.statvfs(ancestor)
        if fs.f_flag & os.ST_RDONLY:
            why = "is on a read-only file system"
        elif fs.f_blocks and fs.f_bavail * fs.f_frsize < MIN_FREE_BYTES:
            why = f"is on a full file system ({fs.f_bavail * fs.f_frsize} bytes free)"
    why = why or _probe(ancestor)
    if why:
        raise RealspoError(f"{path}: cannot be written: {ancestor} {why}")


def _probe(directory: Path) -> str | None:
    """Why a new file cannot be created in ``directory``, or None. Linux creates an unnamed
    file (``O_TMPFILE``), which nothing can leave behind; elsewhere a hidden file is created
    and removed."""
    try:
        try:
            os.close(os.open(directory, os.O_TMPFILE | os.O_WRONLY, 0o600))
            return None
        except (AttributeError, OSError) as exc:  # no O_TMPFILE: not Linux, or not this fs
            if isinstance(exc, OSError) and exc.errno not in (errno.EOPNOTSUPP, errno.EISDIR,
                                                              errno.EINVAL):
                raise
        probe = directory / f".realspo-probe-{secrets.token_hex(6)}"
        try:
            probe.touch(exist_ok=False)
        finally:
            probe.unlink(missing_ok=True)
    except OSError as exc:
        return f"refuses new files ({exc.strerror or exc})"
    return None


def check_outputs_apart(inputs: dict[str, str], outputs: dict[str, str]) -> None:
    """Refuse an output that is, contains, or lies inside an input, or two outputs that are
    the same path (symlinks resolved).

    ``inputs`` and ``outputs`` map an option name to a path. Whatever ``--overwrite`` says,
    no command may replace, or write into, what it reads: ``train --data D/p.jsonl --out D``
    would otherwise delete its own data; nor write two outputs to one path (the second would
    replace the first, or fail after the first was written). A hub id (``org/model``, where
    no ``org`` exists here) is not a local path and is not compared.
    """
    seen: dict[Path, str] = {}
    for out_flag, out_value in outputs.items():
        out = Path(out_value).expanduser().resolve()
        if out in seen:
            raise ConfigError(f"{out_flag} {out_value}: the same path as {seen[out]}; "
                              "give each output its own path")
        seen[out] = out_flag
    for out_flag, out_value in outputs.items():
        out = Path(out_value).expanduser().resolve()
        for in_flag, in_value in inputs.items():
            if _is_hub_id(in_value):
                continue
            inp = Path(in_value).expanduser().resolve()
            if out == inp:
                how = "is"
            elif inp in out.parents:
                how = "lies inside"
            elif out in inp.parents:
                how = "contains"
            else:
                continue
            raise ConfigError(f"{out_flag} {out_value}: {how} the input {in_flag} {in_value}; "
                              "write the output elsewhere")


def _is_hub_id(value: str) -> bool:
    """``org/name`` that names nothing here: a Hugging Face Hub id, not a local path."""
    parts = Path(value).parts
    return (len(parts) == 2 and not Path(value).is_absolute() and not value.startswith(".")
            and not os.path.lexists(parts[0]))


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike, overwrite: bool = False) -> Iterator[Path]:
    """Yield a temporary path next to ``path``; rename it onto ``path`` on success."""
    path = check_writable(path, overwrite)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp_path = _temporary_name(path)
    if path.is_dir():
        raise OutputExistsError(str(path), "is a directory, and a file never replaces one")
    try:  # created inside the try: an interruption at any point leaves no temporary behind
        tmp_path.touch(exist_ok=False)
        yield tmp_path
        os.replace(tmp_path, path)
    finally:
        tmp_path.unlink(missing_ok=True)


def _temporary_name(path: Path) -> Path:
    """A fresh hidden name next to ``path``: ``.NAME.<random>.tmp``."""
    return path.with_name(f".{path.name}.{secrets.token_hex(6)}.tmp")


def _exchange(a: Path, b: Path) -> bool:
    """Swap two directories in one atomic step (Linux ``renameat2(RENAME_EXCHANGE)``); False
    where the system or file system cannot."""
    try:
        import ctypes

        libc = ctypes.CDLL(None, use_errno=True)
        renameat2 = libc.renameat2
    except Exception:  # not Linux, or a C library without renameat2 (glibc < 2.28)
        return False
    at_fdcwd, rename_exchange = -100, 2
    return renameat2(at_fdcwd, os.fsencode(a), at_fdcwd, os.fsencode(b), rename_exchange) == 0


MARKER = ".realspo-output.json"  # in every directory realspo writes whole: {"kind": ...}


def output_kind(path: Path) -> str | None:
    """The kind recorded in a realspo output directory's marker, or None if it has none."""
    try:
        kind = json.loads((path / MARKER).read_text(encoding="utf-8")).get("kind")
    except (OSError, ValueError, AttributeError):
        return None
    return kind if isinstance(kind, str) else None


def mark_output(path: Path, kind: str) -> None:
    """Record in directory ``path`` that realspo wrote it, as an output of ``kind``."""
    (path / MARKER).write_text(json.dumps({"kind": kind}) + "\n", encoding="utf-8")


def check_replaceable_dir(path: Path, kind: str) -> None:
    """Refuse to replace ``path`` unless it is a directory realspo wrote as a ``kind`` output."""
    if not path.is_dir() or path.is_symlink():
        raise OutputExistsError(str(path), f"is not a directory, and a {kind} output is one")
    found = output_kind(path)
    if found != kind:
        what = f"a realspo {found} output" if found else f"not a realspo output (no {MARKER})"
        raise OutputExistsError(str(path), f"is {what}, not a {kind} output")


@contextlib.contextmanager
def atomic_dir(path: str | os.PathLike, overwrite: bool = False, *, kind: str,
               replace_unmarked: bool = False) -> Iterator[Path]:
    """Yield a temporary directory next to ``path``; swap it into place on success.

    The new directory is marked as a realspo ``kind`` output (:data:`MARKER`). An existing
    ``path`` is replaced only with ``overwrite`` and only if it is a realspo output of the same
    kind (``replace_unmarked``: or an unmarked directory, for realspo's own caches).
    An existing directory is exchanged with the new one atomically where the system allows
    (Linux); elsewhere by two renames: an exception between them puts the old directory back,
    and a kill between them leaves it at ``.NAME.old``, restored by the next call on ``path``.
    """
    _finish_swap(Path(path))  # a kill may have interrupted an earlier swap
    path = check_writable(path, overwrite)
    if path.exists() and not (replace_unmarked and path.is_dir() and output_kind(path) is None):
        check_replaceable_dir(path, kind)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = _temporary_name(path)
    try:
        tmp.mkdir()
        yield tmp
        mark_output(tmp, kind)
        if path.is_dir() and not path.is_symlink() and _exchange(tmp, path):
            shutil.rmtree(tmp)  # now the old directory
        elif path.exists():
            old = path.with_name(f".{path.name}.old")
            if old.exists():
                shutil.rmtree(old)
            os.replace(path, old)
            os.replace(tmp, path)
            _finish_swap(path)  # (again in `finally`, should this be interrupted)
        else:
            os.replace(tmp, path)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp)
        _finish_swap(path)


def _finish_swap(path: Path) -> None:
    """After a two-rename swap, finished or interrupted: drop ``.NAME.old`` if ``path`` holds
    the new directory, else put it back."""
    old = path.with_name(f".{path.name}.old")
    if old.exists():
        if path.exists():
            shutil.rmtree(old)
        else:
            os.replace(old, path)


def _json_safe(value: Any) -> Any:
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if hasattr(value, "item") and not isinstance(value, (list, dict, str)):
        return _json_safe(value.item())
    if isinstance(value, (list, tuple)):
        return [_json_safe(v) for v in value]
    if isinstance(value, dict):
        return {k: _json_safe(v) for k, v in value.items()}
    return value


def write_json(path: str | os.PathLike, obj: Any, overwrite: bool = False) -> Path:
    """Write ``obj`` as indented JSON, atomically."""
    with atomic_path(path, overwrite) as tmp:
        tmp.write_text(json.dumps(_json_safe(obj), indent=2, ensure_ascii=False) + "\n")
    return Path(path)


CSV_ESCAPE = "'"  # before a text cell a spreadsheet would read as a formula (or as JSON)
FORMULA_STARTS = ("=", "+", "-", "@", "\t", "\r", CSV_ESCAPE)


def csv_needs_escape(text: str) -> bool:
    """Whether a text cell gets :data:`CSV_ESCAPE` in front when written to CSV.

    Text a spreadsheet would evaluate (``=HYPERLINK(...)``, ``+cmd|...``, ``-``, ``@``, a
    leading tab or CR), text that already starts with the escape, and text that the CSV reader
    would otherwise decode as a JSON list or object (``[1, 2]``).
    """
    return text.startswith(FORMULA_STARTS) or text.lstrip().startswith(("[", "{"))


def csv_cell(value: Any) -> Any:
    """One CSV cell: lists and dicts as JSON, risky text escaped (:func:`csv_needs_escape`);
    :func:`realspo.sources.read_rows` undoes both."""
    if isinstance(value, (list, dict)):
        return json.dumps(_json_safe(value), ensure_ascii=False)
    if isinstance(value, str) and csv_needs_escape(value):
        return CSV_ESCAPE + value
    return value


def write_rows(
    path: str | os.PathLike, rows: Iterable[dict[str, Any]], overwrite: bool = False
) -> Path:
    """Write a table atomically: Parquet for ``.parquet``, CSV for ``.csv``, a JSON array for
    ``.json``, else JSON Lines (each reads back through :func:`realspo.sources.read_rows`)."""
    path = Path(path)
    rows = list(rows)
    with atomic_path(path, overwrite) as tmp:
        if path.suffix == ".parquet":
            import pyarrow as pa
            import pyarrow.parquet as pq

            pq.write_table(pa.Table.from_pylist([_json_safe(r) for r in rows]), tmp)
        elif path.suffix == ".csv":
            import csv

            fields = list(dict.fromkeys(k for r in rows for k in r))
            with tmp.open("w", newline="", encoding="utf-8") as fh:
                writer = csv.DictWriter(fh, fieldnames=fields)
                writer.writeheader()
                for r in rows:
                    writer.writerow({k: csv_cell(v) for k, v in r.items()})
        elif path.suffix == ".json":  # one array: JSON Lines in a .json file would not read back
            with tmp.open("w", encoding="utf-8") as fh:
                fh.write("[\n" + ",\n".join(json.dumps(_json_safe(r), ensure_ascii=False)
                                             for r in rows) + "\n]\n")
        else:
            with tmp.open("w", encoding="utf-8") as fh:
                for r in rows:
                    fh.write(json.dumps(_json_safe(r), ensure_ascii=False) + "\n")
    return path


@contextlib.contextmanager
def output_lock(path: str | os.PathLike) -> Iterator[Path]:
    """Hold ``.NAME.lock`` beside ``path`` (holding this process's PID) while a run writes it.

    A second run on the same output is refused at start instead of interleaving its writes
    with the first one's. A lock whose process is gone (killed) is stale: it is named in a log
    line and taken over.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    lock = path.with_name(f".{path.name}.lock")
    for _ in range(2):
        try:
            fd = os.open(lock, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
        except FileExistsError:
            pid = _lock_pid(lock)
            if pid is not None and _alive(pid):
                raise OutputExistsError(str(path), f"is being written by another run (PID {pid}, "
                                                   f"lock {lock})") from None
            import logging

            logging.getLogger(__name__).warning("%s: stale lock of PID %s (no such process); "
                                                "taking it over", lock, pid)
            lock.unlink(missing_ok=True)
            continue
        with os.fdopen(fd, "w") as fh:
            fh.write(f"{os.getpid()}\n")
        break
    else:
        raise OutputExistsError(str(path), f"its lock {lock} could not be taken")
    try:
        yield lock
    finally:
        if _lock_pid(lock) == os.getpid():
            lock.unlink(missing_ok=True)


def _lock_pid(lock: Path) -> int | None:
    try:
        return int(lock.read_text(encoding="utf-8").split()[0])
    except (OSError, ValueError, IndexError):
        return None


def _alive(pid: int) -> bool:
    if pid == os.getpid():
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # exists, owned by someone else
        return True
    return True
