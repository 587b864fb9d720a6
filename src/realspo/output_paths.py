"""Which paths a command reads and which it writes, kept apart.

Every path a command reads is an input: data files, ``--config``, and models named by value
(``--judge llm:PATH``, ``--embedder st:PATH``, a reward-model directory), including every file
inside a model directory. Every path it writes is an output, and so are the names it derives
from an output for itself (the reserved names: a progress sidecar such as ``OUT.partial.jsonl``,
the lock ``.OUT.lock``, the backup ``.OUT.old`` of a directory swap). :func:`check_outputs_apart`
refuses any output or reserved name that is, contains or lies inside an input, whatever
``--overwrite`` says. :func:`check_replaceable_file` refuses to replace anything but a regular
file (a FIFO, a device such as ``/dev/null``, a symlink).
"""

from __future__ import annotations

import os
import re
import stat
from pathlib import Path

from realspo.errors import ConfigError, OutputExistsError

# ``llm:PATH``, ``st:PATH``, ``rm:PATH``, ``openai:NAME``: a scheme word, then what it names
_SCHEME = re.compile(r"^[A-Za-z][A-Za-z0-9_+.-]*:(?!//)")


def reserved_names(output: str | os.PathLike) -> list[Path]:
    """The names realspo derives from every output ``output`` for itself: its lock
    (``.NAME.lock``) and the backup of a directory swap (``.NAME.old``)."""
    out = Path(output).expanduser().resolve()  # (``.`` has no name of its own)
    return [out.with_name(f".{out.name}.lock"), out.with_name(f".{out.name}.old")]


def local_input_path(value: str) -> Path | None:
    """The local file or directory an input value names, or None when it names nothing here.

    ``llm:PATH`` / ``st:PATH`` / any ``scheme:REST`` names ``REST`` when that exists here (else
    it is a hub id or a served model's name); any other value names itself, except a Hugging
    Face hub id (``org/name`` where no ``org`` exists here).
    """
    value = str(value)
    match = _SCHEME.match(value)
    if match and not os.path.lexists(os.path.expanduser(value)):
        rest = value[match.end():]
        return Path(rest).expanduser().resolve() if rest and os.path.lexists(os.path.expanduser(rest)) else None
    if not value or _is_hub_id(value):
        return None
    return Path(value).expanduser().resolve()


def check_outputs_apart(inputs: dict[str, str], outputs: dict[str, str],
                        reserved: dict[str, str] | None = None) -> None:
    """Refuse an output that is, contains, or lies inside an input, or two outputs that are
    the same path (symlinks resolved).

    ``inputs`` and ``outputs`` map an option name to a path; ``reserved`` maps a description
    (``"the progress sidecar of --out"``) to a name a command derives for itself. Whatever
    ``--overwrite`` says, no command may replace, or write into, what it reads:
    ``train --data D/p.jsonl --out D`` would otherwise delete its own data; nor write two
    outputs to one path (the second would replace the first, or fail after the first was
    written). The lock and backup names of every output (:func:`reserved_names`) are checked
    too. Inputs are compared through :func:`local_input_path`.
    """
    seen: dict[Path, str] = {}
    for out_flag, out_value in outputs.items():
        if not str(out_value).strip():
            raise ConfigError(f"{out_flag}: an empty path; give a file or directory name")
        out = Path(out_value).expanduser().resolve()
        if out in seen:
            raise ConfigError(f"{out_flag} {out_value}: the same path as {seen[out]}; "
                              "give each output its own path")
        seen[out] = out_flag
    written: list[tuple[str, str, Path]] = []
    for out_flag, out_value in outputs.items():
        written.append((f"{out_flag} {out_value}", "", Path(out_value).expanduser().resolve()))
        for name in reserved_names(out_value):
            written.append((f"{out_flag} {out_value}", f"(its reserved name {name.name}) ",
                            name.expanduser().resolve()))
    for what, value in (reserved or {}).items():
        written.append((what, f"({value}) ", Path(value).expanduser().resolve()))
    for label, detail, out in written:
        for in_flag, in_value in inputs.items():
            inp = local_input_path(in_value)
            if inp is None:
                continue
            if out == inp:
                how = "is"
            elif inp in out.parents:
                how = "lies inside"
            elif out in inp.parents:
                how = "contains"
            else:
                continue
            raise ConfigError(f"{label}: {detail}{how} the input {in_flag} {in_value}; "
                              "write the output elsewhere")


def _is_hub_id(value: str) -> bool:
    """``org/name`` that names nothing here: a Hugging Face Hub id, not a local path."""
    parts = Path(value).parts
    return (len(parts) == 2 and not Path(value).is_absolute() and not value.startswith(".")
            and not os.path.lexists(parts[0]))


def check_replaceable_file(path: Path) -> None:
    """Refuse to replace ``path`` unless it is absent or a regular file (not a symlink).

    Replacing a FIFO, a device (``/dev/null``), a socket or a symlink with a regular file
    would silently change what that name means for everyone else who uses it.
    """
    try:
        mode = os.lstat(path).st_mode
    except (FileNotFoundError, NotADirectoryError):  # (a parent that is a file: check_location)
        return
    if stat.S_ISREG(mode) or stat.S_ISDIR(mode):
        return  # (a directory is refused, or replaced by its own kind, by the caller)
    what = ("a symlink" if stat.S_ISLNK(mode) else "a FIFO" if stat.S_ISFIFO(mode)
            else "a device" if stat.S_ISCHR(mode) or stat.S_ISBLK(mode)
            else "a socket" if stat.S_ISSOCK(mode) else "not a regular file")
    raise OutputExistsError(str(path), f"is {what}; realspo replaces only regular files and "
                                       "its own directories")
