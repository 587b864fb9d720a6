"""The options every command that talks to a served model shares, and their checks.

A served model is named ``openai:NAME`` (NAME as the server knows it) with a base URL
(``--base-url``, or ``--judge-base-url`` for a judge). The command's config dataclass inherits
:class:`ServedFields`; :class:`ServedOptions` is what the client reads.
"""

from __future__ import annotations

import dataclasses
import os
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlsplit

from realspo.config import option
from realspo.errors import ConfigError

PREFIX = "openai:"
DEFAULT_KEY_ENV = "OPENAI_API_KEY"
BASE_URL_ENV = "OPENAI_BASE_URL"  # the openai library's own fallback for the base URL


def is_served(value: str | None) -> bool:
    """Whether a model or judge value names a served model (``openai:...``)."""
    return bool(value) and str(value).startswith(PREFIX)


def served_name(value: str, flag: str) -> str:
    """NAME of ``openai:NAME``; ConfigError when NAME is empty."""
    name = value.removeprefix(PREFIX).strip()
    if not name:
        raise ConfigError(f"{flag} {value!r}: expected openai:NAME, the model's name on the server")
    return name


def check_base_url(url: str | None, flag: str) -> str:
    """``url`` (else ``$OPENAI_BASE_URL``) without a trailing slash if it is an http(s) URL with
    a host; else ConfigError."""
    url = url or os.environ.get(BASE_URL_ENV)
    if not url:
        raise ConfigError(f"{flag} is required with an openai:NAME model (e.g. "
                          f"http://127.0.0.1:8000/v1), or set ${BASE_URL_ENV}")
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise ConfigError(f"{flag} {url!r}: expected an http:// or https:// URL with a host, "
                          "e.g. http://127.0.0.1:8000/v1")
    return url.rstrip("/")


def default_cache_dir() -> Path:
    """``$REALSPO_CACHE/served``, else ``~/.cache/realspo/served``."""
    root = os.environ.get("REALSPO_CACHE")
    return (Path(root) if root else Path.home() / ".cache" / "realspo") / "served"


@dataclass(frozen=True)
class ServedOptions:
    """How to reach a server and how hard to try.

    ``concurrency``: requests in flight; ``max_retries``: retries of one request (429 with
    its ``Retry-After``, 5xx, timeouts, dropped connections; exponential backoff with
    jitter); ``timeout``: seconds per request; ``max_requests``: requests this run may send
    (None: no limit; cached replies are free); ``dry_run``: count, send nothing;
    ``cache_dir``: where the reply journals live.
    """

    base_url: str
    api_key_env: str = DEFAULT_KEY_ENV
    concurrency: int = 4
    max_retries: int = 5
    timeout: float = 120.0
    max_requests: int | None = None
    dry_run: bool = False
    cache_dir: str | None = None

    def journal_dir(self) -> Path:
        """The directory of the reply journals."""
        return Path(self.cache_dir) if self.cache_dir else default_cache_dir()


@dataclass(kw_only=True)
class ServedFields:
    """The shared served-model options of a command's config (a base class; see the module)."""

    api_key_env: str = option(DEFAULT_KEY_ENV, "openai:NAME: the environment variable holding the "
                                                "API key (a local server needs none)", metavar="VAR")
    concurrency: int = option(4, "openai:NAME: requests in flight at once", metavar="N")
    max_retries: int = option(5, "openai:NAME: retries of a failed request (429, 5xx, timeouts, "
                                 "dropped connections), with exponential backoff and jitter")
    timeout: float = option(120.0, "openai:NAME: seconds to wait for one reply", metavar="SECONDS")
    max_requests: int | None = option(None, "openai:NAME: stop cleanly before sending more than N "
                                            "requests (replies already cached are free)", metavar="N")
    dry_run: bool = option(False, "openai:NAME: print how many requests the command would make "
                                  "and exit")
    served_cache: str | None = option(None, "openai:NAME: directory of the reply journal and cache "
                                            "(default $REALSPO_CACHE/served or "
                                            "~/.cache/realspo/served)", metavar="DIR")

    def served_options(self, base_url: str | None, url_flag: str) -> ServedOptions:
        """The :class:`ServedOptions` these fields give (checked), for ``base_url``."""
        if self.concurrency < 1:
            raise ConfigError(f"--concurrency must be at least 1, got {self.concurrency}")
        if self.max_retries < 0:
            raise ConfigError(f"--max-retries must be >= 0, got {self.max_retries}")
        if not self.timeout > 0:
            raise ConfigError(f"--timeout must be > 0 seconds, got {self.timeout}")
        if self.max_requests is not None and self.max_requests < 0:
            raise ConfigError(f"--max-requests must be >= 0, got {self.max_requests}")
        if not self.api_key_env.strip():
            raise ConfigError("--api-key-env must name an environment variable")
        return ServedOptions(base_url=check_base_url(base_url, url_flag),
                             api_key_env=self.api_key_env, concurrency=self.concurrency,
                             max_retries=self.max_retries, timeout=self.timeout,
                             max_requests=self.max_requests, dry_run=self.dry_run,
                             cache_dir=self.served_cache)

    def check_served(self, value: str | None, flag: str, base_url: str | None,
                     url_flag: str) -> ServedOptions | None:
        """The :class:`ServedOptions` when ``value`` (the ``flag`` option) is ``openai:NAME``
        (checked: a name, a URL, sane limits), else None; ConfigError when a served option,
        ``url_flag`` included, was given though nothing is served."""
        if is_served(value):
            served_name(str(value), flag)
            return self.served_options(base_url, url_flag)
        given = {url_flag: base_url is not None}
        given.update({f"--{f.name.replace('_', '-')}": getattr(self, f.name) != f.default
                      for f in dataclasses.fields(ServedFields)})
        for name, changed in given.items():
            if changed:
                raise ConfigError(f"{name} has no effect without {flag} openai:NAME")
        return None
