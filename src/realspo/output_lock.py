"""One run per output: :func:`output_lock`.

Every command that writes an output takes the lock ``.NAME.lock`` beside it at start, before
any work, so a second run on the same output is refused at once instead of doing all the work
and failing at the end (or interleaving its writes with the first run's). The lock file is a
reserved name: its first line says it is a realspo lock, and a file of that name without it is
never taken over or deleted. A refused run leaves nothing behind: the directories the lock
had to create for its file are removed again when they are still empty.
"""

from __future__ import annotations

import contextlib
import logging
import os
from collections.abc import Iterator
from pathlib import Path

from realspo.errors import OutputExistsError

log = logging.getLogger(__name__)

LOCK_TAG = "realspo-lock"  # first word of a lock file: ``realspo-lock PID``


def lock_path(path: str | os.PathLike) -> Path:
    """The lock file of output ``path``: ``.NAME.lock`` beside it."""
    path = Path(path)
    if not path.name:  # ``.``
        path = path.resolve()
    return path.with_name(f".{path.name}.lock")


def make_parents(path: Path) -> list[Path]:
    """Create ``path``'s missing parent directories; return those created, deepest first."""
    created = []
    parent = path.parent
    while not parent.exists() and parent != parent.parent:
        created.append(parent)
        parent = parent.parent
    path.parent.mkdir(parents=True, exist_ok=True)
    return created


def remove_if_empty(directories: list[Path]) -> None:
    """Remove each of ``directories`` (deepest first) that is still empty."""
    for directory in directories:
        try:
            directory.rmdir()
        except OSError:  # not empty (the run wrote there), or already gone
            return


@contextlib.contextmanager
def output_lock(path: str | os.PathLike) -> Iterator[Path]:
    """Hold ``.NAME.lock`` beside ``path`` (holding this process's PID) while a run writes it.

    A second run on the same output is refused at start instead of interleaving its writes
    with the first one's. A lock whose process is gone (killed) is stale: it is named in a log
    line and taken over. A file of the lock's name that realspo did not write is refused, never
    deleted. Parent directories created for the lock and left empty are removed on exit.
    """
    path = Path(path) if Path(path).name else Path(path).resolve()
    created = make_parents(path)
    lock = lock_path(path)
    try:
        _take(lock, path)
    except BaseException:
        remove_if_empty(created)
        raise
    try:
        yield lock
    finally:
        if _lock_pid(lock) == os.getpid():
            lock.unlink(missing_ok=True)
        remove_if_empty(created)


def _take(lock: Path, path: Path) -> None:
    for _ in range(2):
        try:
            fd = os.open(lock, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
        except FileExistsError:
            if lock.is_symlink() or not lock.is_file():
                raise OutputExistsError(str(lock), "is not a realspo lock file (the lock of "
                                                   f"{path.name}); move it away") from None
            pid = _lock_pid(lock)
            if pid is None:
                raise OutputExistsError(str(lock), "is not a realspo lock file (the lock of "
                                                   f"{path.name}); move it away") from None
            if _alive(pid):
                raise OutputExistsError(str(path), f"is being written by another run (PID {pid}, "
                                                   f"lock {lock})") from None
            log.warning("%s: stale lock of PID %s (no such process); taking it over", lock, pid)
            lock.unlink(missing_ok=True)
            continue
        with os.fdopen(fd, "w") as fh:
            fh.write(f"{LOCK_TAG} {os.getpid()}\n")
        return
    raise OutputExistsError(str(path), f"its lock {lock} could not be taken")


def _lock_pid(lock: Path) -> int | None:
    """The PID in a realspo lock file (``realspo-lock PID``, or a bare PID as written by
    earlier versions), else None."""
    try:
        with lock.open("rb") as fh:
            words = fh.read(64).decode("ascii").split()
    except (OSError, UnicodeDecodeError):
        return None
    if len(words) == 2 and words[0] == LOCK_TAG and words[1].isdigit():
        return int(words[1])
    if len(words) == 1 and words[0].isdigit():
        return int(words[0])
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
    except OverflowError:
        return False
    return True


@contextlib.contextmanager
def main_process_lock(path: str | os.PathLike) -> Iterator[None]:
    """:func:`output_lock` taken by the main process only (``RANK`` 0 or unset): under
    ``torchrun`` / ``accelerate launch`` every process runs the command, one writes."""
    if int(os.environ.get("RANK", "0")) != 0:
        yield
        return
    with output_lock(path):
        yield
