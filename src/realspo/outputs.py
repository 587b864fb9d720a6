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
import stat
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

from realspo.errors import OutputExistsError, RealspoError, WriteFailed
from realspo.output_lock import make_parents, output_lock, remove_if_empty  # noqa: F401
from realspo.output_paths import (  # noqa: F401  (re-exported)
    check_outputs_apart,
    check_replaceable_file,
    reserved_names,
)

MIN_FREE_BYTES = 1 << 20  # a file system with less free space than this counts as full


def check_writable(path: str | os.PathLike, overwrite: bool) -> Path:
    """Fail early (before expensive work) if ``path`` exists and may not be replaced, or if it
    cannot be written at all (:func:`check_location`)."""
    if not os.fspath(path).strip():
        raise RealspoError("an empty output path ''; give a file or directory name")
    path = Path(path)
    if os.path.lexists(path) and not overwrite:
        raise OutputExistsError(str(path))
    check_replaceable_file(path)
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
        try:
            yield tmp_path
        except OSError as exc:
            raise _named(exc, path) from None
        check_replaceable_file(path)  # (again: it may have changed while the work ran)
        os.replace(tmp_path, path)
    finally:
        tmp_path.unlink(missing_ok=True)


def _named(exc: OSError, path: Path) -> OSError:
    """An environment failure while writing ``path`` (a full disk, a quota, a file-size limit),
    as one line naming ``path`` (:class:`~realspo.errors.WriteFailed`); other errors unchanged."""
    if exc.errno in (errno.ENOSPC, errno.EDQUOT, errno.EFBIG, errno.EROFS, errno.EIO) \
            and not isinstance(exc, WriteFailed):
        return WriteFailed(str(path), exc)
    return exc


@contextlib.contextmanager
def writing(path: str | os.PathLike) -> Iterator[None]:
    """Name ``path`` in an environment failure raised inside (a full disk while appending to
    a progress or metrics file, or writing a checkpoint), as :func:`atomic_path` does.

    Args:
        path: the file or directory being written.
    """
    try:
        yield
    except OSError as exc:
        raise _named(exc, Path(path)) from None


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


def check_dir_output(path: str | os.PathLike, overwrite: bool = False, *, kind: str,
                     replace_unmarked: bool = False) -> Path:
    """Fail early if :func:`atomic_dir` could not write the directory ``path``: it exists
    (without ``overwrite``, or not a realspo ``kind`` output), it cannot be written, or its
    reserved backup name ``.NAME.old`` holds something realspo did not put there.

    Args:
        path: the output directory.
        overwrite: whether an existing ``kind`` output may be replaced.
        kind: the kind recorded in the directory's marker.
        replace_unmarked: also replace an unmarked directory (realspo's own caches).

    Returns:
        ``path`` as a Path.
    """
    path = check_writable(path, overwrite)
    if path.exists() and not (replace_unmarked and path.is_dir() and output_kind(path) is None):
        check_replaceable_dir(path, kind)
    old = backup_name(path)
    if os.path.lexists(old) and not _is_backup(path):
        raise OutputExistsError(str(old), f"is reserved for the backup of {path.name} and is not "
                                          "realspo's; move it away")
    return path


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
    if Path(path).name:
        _finish_swap(Path(path))  # a kill may have interrupted an earlier swap
    path = check_dir_output(path, overwrite, kind=kind, replace_unmarked=replace_unmarked)
    old = backup_name(path)
    created = make_parents(path)
    tmp = _temporary_name(path)
    try:  # (a fresh random name in the reserved ``.NAME.*.tmp`` space: ours once made)
        tmp.mkdir()
        yield tmp
        mark_output(tmp, kind)
        if path.is_dir() and not path.is_symlink() and _exchange(tmp, path):
            shutil.rmtree(tmp)  # now the old directory
        elif path.exists():
            _mark_backup(path)
            os.replace(path, old)
            os.replace(tmp, path)
            _finish_swap(path)  # (again in `finally`, should this be interrupted)
        else:
            os.replace(tmp, path)
    except OSError as exc:
        raise _named(exc, path) from None
    finally:
        if tmp.exists():
            shutil.rmtree(tmp)
        _finish_swap(path)
        remove_if_empty(created)


def backup_name(path: Path) -> Path:
    """Where a two-rename swap keeps the old ``path`` for a moment: ``.NAME.old``."""
    return path.with_name(f".{path.name}.old")


def _backup_marker(path: Path) -> Path:
    """The marker beside ``.NAME.old`` that makes it realspo's: ``.NAME.old.realspo``, holding
    the directory's device and inode (a rename keeps them; another directory has others)."""
    return path.with_name(f".{path.name}.old.realspo")


def _mark_backup(path: Path) -> None:
    """Record, before ``path`` is renamed to ``.NAME.old``, that the directory is realspo's."""
    st = os.lstat(path)
    _backup_marker(path).write_text(json.dumps({"dev": st.st_dev, "ino": st.st_ino}) + "\n",
                                    encoding="utf-8")


def _is_backup(path: Path) -> bool:
    """Whether ``.NAME.old`` is the directory realspo itself moved there (its marker names it)."""
    old = backup_name(path)
    try:
        st = os.lstat(old)
        mark = json.loads(_backup_marker(path).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return False
    return (isinstance(mark, dict) and stat.S_ISDIR(st.st_mode)
            and mark.get("dev") == st.st_dev and mark.get("ino") == st.st_ino)


def _finish_swap(path: Path) -> None:
    """After a two-rename swap, finished or interrupted: drop ``.NAME.old`` if ``path`` holds
    the new directory, else put it back. A ``.NAME.old`` realspo did not put there (no marker
    naming it) is never touched."""
    old = backup_name(path)
    if _is_backup(path):
        if path.exists():
            shutil.rmtree(old)
        else:
            os.replace(old, path)
    if not os.path.lexists(old):
        _backup_marker(path).unlink(missing_ok=True)


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
