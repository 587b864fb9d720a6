"""User-facing errors: bad input, bad configuration, refused overwrites.

Every error a user can fix is a :class:`RealspoError`. The CLI prints its message on one
line and exits with code 2; library callers catch it like any exception. Messages name
the file, the line or row, and the field, and say what was expected.
"""

from __future__ import annotations


class RealspoError(Exception):
    """An error the user can fix (exit code 2 from the CLI)."""

    exit_code = 2


class InputError(RealspoError):
    """A problem with an input file: ``source:where: field 'x': message``."""

    def __init__(
        self, source: str, message: str, *, where: str | int | None = None, field: str | None = None
    ) -> None:
        self.source, self.where, self.field, self.detail = str(source), where, field, message
        loc = self.source if where is None else f"{self.source}:{where}"
        text = f"{loc}: field '{field}': {message}" if field else f"{loc}: {message}"
        super().__init__(text)


class ConfigError(RealspoError):
    """An invalid option value or configuration file entry."""


class OutputExistsError(RealspoError):
    """An output already exists and neither ``--overwrite`` nor ``--resume`` was given."""

    def __init__(self, path: str, why: str | None = None) -> None:
        super().__init__(f"{path}: {why}; refusing to replace it" if why else
                         f"{path}: already exists; pass --overwrite to replace it")


class WriteFailed(RealspoError, OSError):
    """The environment failed a write (a full disk, a quota, a file-size limit): one line
    naming the file. Still an ``OSError``, for callers that catch those."""

    def __init__(self, path: str, reason: OSError) -> None:
        self.message = f"{path}: cannot be written ({reason.strerror or reason})"
        RealspoError.__init__(self, self.message)
        self.errno, self.filename = reason.errno, path

    def __str__(self) -> str:  # (OSError's own would print "[Errno 28] None: PATH")
        return self.message


class TrainingDiverged(RealspoError):
    """A non-finite loss stopped training; the last good checkpoint is kept."""
