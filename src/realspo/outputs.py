"""Atomic writing of every file realspo produces.

Everything goes to a temporary file in the destination directory and is renamed into place
(``os.replace`` is atomic on POSIX), so a crash or kill leaves either the old file or the new
one, never a torn file (a kill can leave a hidden ``.NAME.*.tmp`` file beside it; an exception
removes it). Existing outputs are refused unless ``overwrite`` is set.
"""

from __future__ import annotations

import contextlib
import json
import math
import os
import secrets
import shutil
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

from realspo.errors import OutputExistsError


def check_writable(path: str | os.PathLike, overwrite: bool) -> Path:
    """Fail early (before expensive work) if ``path`` exists and may not be replaced."""
    path = Path(path)
    if path.exists() and not overwrite:
        raise OutputExistsError(str(path))
    return path


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike, overwrite: bool = False) -> Iterator[Path]:
    """Yield a temporary path next to ``path``; rename it onto ``path`` on success."""
    path = check_writable(path, overwrite)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp_path = _temporary_name(path)
    try:  # created inside the try: an interruption at any point leaves no temporary behind
        tmp_path.touch(exist_ok=False)
        yield tmp_path
        if path.is_dir() and not path.is_symlink():
            shutil.rmtree(path)
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


@contextlib.contextmanager
def atomic_dir(path: str | os.PathLike, overwrite: bool = False) -> Iterator[Path]:
    """Yield a temporary directory next to ``path``; swap it into place on success.

    An existing directory is exchanged with the new one atomically where the system allows
    (Linux); elsewhere by two renames: an exception between them puts the old directory back,
    and a kill between them leaves it at ``.NAME.old``, restored by the next call on ``path``.
    """
    _finish_swap(Path(path))  # a kill may have interrupted an earlier swap
    path = check_writable(path, overwrite)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = _temporary_name(path)
    try:
        tmp.mkdir()
        yield tmp
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


def write_rows(
    path: str | os.PathLike, rows: Iterable[dict[str, Any]], overwrite: bool = False
) -> Path:
    """Write a table atomically: Parquet for ``.parquet``, CSV for ``.csv``, else JSON Lines."""
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
                    writer.writerow(
                        {
                            k: json.dumps(v) if isinstance(v, (list, dict)) else v
                            for k, v in r.items()
                        }
                    )
        else:
            with tmp.open("w", encoding="utf-8") as fh:
                for r in rows:
                    fh.write(json.dumps(_json_safe(r), ensure_ascii=False) + "\n")
    return path
