"""One secret token per annotator, and one for the owner, kept under the campaign directory.

Tokens are :func:`secrets.token_urlsafe` of 32 bytes (256 bits), stored in ``tokens.json``
with mode 0600 (the owner's only) so that a rerun prints the same links; a request's token is
compared with every known token in constant time (:func:`hmac.compare_digest`).
"""

from __future__ import annotations

import hmac
import json
import os
import secrets
import stat
from dataclasses import dataclass
from pathlib import Path

from realspo.errors import InputError

TOKENS_FILE = "tokens.json"
TOKEN_BYTES = 32


@dataclass(frozen=True)
class Identity:
    """Who a token belongs to: the owner (``name`` None) or an annotator."""

    name: str | None

    @property
    def is_owner(self) -> bool:
        return self.name is None


@dataclass
class Tokens:
    """The campaign's tokens: the owner's and each annotator's."""

    owner: str
    annotators: dict[str, str]

    def identify(self, presented: str) -> Identity | None:
        """Whose token ``presented`` is, or None. Every token is compared (in constant time
        each), so the time taken does not tell which one nearly matched."""
        found: Identity | None = None
        given = presented.encode("utf-8", "surrogateescape")
        for name, token in [(None, self.owner), *self.annotators.items()]:
            if hmac.compare_digest(given, token.encode("ascii")):
                found = Identity(name)
        return found


def new_tokens(annotators: list[str]) -> Tokens:
    """Fresh random tokens for the owner and each annotator."""
    return Tokens(secrets.token_urlsafe(TOKEN_BYTES),
                  {name: secrets.token_urlsafe(TOKEN_BYTES) for name in annotators})


def write_tokens(directory: Path, tokens: Tokens) -> Path:
    """Create ``directory/tokens.json`` readable and writable by the owner only (0600)."""
    path = directory / TOKENS_FILE
    fd = os.open(path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o600)
    with os.fdopen(fd, "w", encoding="utf-8") as fh:
        json.dump({"owner": tokens.owner, "annotators": tokens.annotators}, fh, indent=2)
        fh.write("\n")
    return path


def read_tokens(directory: Path) -> Tokens:
    """The tokens of a campaign; refused if the file is readable by anyone but its owner."""
    path = directory / TOKENS_FILE
    mode = path.stat().st_mode
    if mode & (stat.S_IRWXG | stat.S_IRWXO):
        raise InputError(str(path), f"is readable by others (mode {stat.S_IMODE(mode):o}); "
                                    f"run chmod 600 {path}")
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
        owner, annotators = data["owner"], data["annotators"]
    except (ValueError, KeyError, TypeError):
        raise InputError(str(path), "expected {owner, annotators} (written by realspo "
                                    "annotate)") from None
    if not isinstance(owner, str) or not isinstance(annotators, dict) or not all(
            isinstance(v, str) and len(v) >= 22 for v in [owner, *annotators.values()]):
        raise InputError(str(path), "expected tokens of at least 128 bits")
    return Tokens(owner, dict(annotators))
