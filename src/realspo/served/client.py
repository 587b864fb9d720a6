"""One served model: the connection, retries, error classification and the request budget.

:class:`ServedClient` wraps the ``openai`` client library, which sends the requests and
retries them (429 honouring ``Retry-After``, 408/409, 5xx, timeouts and dropped connections;
exponential backoff from 0.5 s with jitter, up to ``--max-retries`` times, each attempt
bounded by ``--timeout``). What the library raises once its retries are spent becomes one
:class:`~realspo.errors.RealspoError` line (:func:`describe_failure`): a bad key (401), a
refused model (403), an unknown model or wrong URL (404), a server that stays unreachable, or
a reply that is not chat-completions JSON. The key is read from the environment variable
``--api-key-env`` names and never appears in a message.

:meth:`ServedClient.send_all` sends a list of keyed requests: replies already in the
:class:`~realspo.served.journal.ReplyJournal` are not asked again, the first request goes
alone (so a bad key or URL stops the run before anything else is spent), the rest go
``--concurrency`` at a time from a thread pool, and each reply is journaled as it arrives.
"""

from __future__ import annotations

import logging
import os
import threading
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from realspo.errors import RealspoError
from realspo.served.journal import ReplyJournal, journal_path
from realspo.served.options import ServedOptions

log = logging.getLogger(__name__)

Reply = dict[str, Any]


class DryRun(Exception):
    """Raised instead of sending in ``--dry-run``: what the command would send (not an error)."""

    def __init__(self, to_send: int, cached: int, note: str = "") -> None:
        self.to_send, self.cached = to_send, cached
        super().__init__(f"dry run: would send {to_send} request(s); {cached} already cached"
                         + (f" ({note})" if note else ""))


class BudgetSpent(RealspoError):
    """``--max-requests`` was reached before every request was sent."""


def _first_line(text: str, limit: int = 200) -> str:
    line = " ".join(str(text).split())
    return line if len(line) <= limit else line[: limit - 3] + "..."


def describe_failure(exc: Exception, options: ServedOptions, model: str, secret: str | None) -> str:
    """One line saying what went wrong with a request to ``model`` (the key blanked out)."""
    import openai

    url, status = options.base_url, getattr(exc, "status_code", None)
    detail = _first_line(getattr(exc, "message", None) or str(exc))
    if isinstance(exc, openai.AuthenticationError):
        text = (f"{url}: the server refused the API key (401); put a valid key in "
                f"${options.api_key_env} ({detail})")
    elif isinstance(exc, openai.PermissionDeniedError):
        text = f"{url}: model {model!r} is not allowed with this key (403) ({detail})"
    elif isinstance(exc, openai.NotFoundError):
        text = (f"{url}: not found (404): no model {model!r} there, or a wrong base URL (an "
                f"OpenAI-compatible base URL usually ends in /v1) ({detail})")
    elif isinstance(exc, openai.APITimeoutError):
        text = (f"{url}: no reply within --timeout {options.timeout:g} s, "
                f"{options.max_retries} retries spent")
    elif isinstance(exc, openai.APIConnectionError):
        text = (f"{url}: server unreachable after {options.max_retries} retries "
                f"({_first_line(str(exc.__cause__ or exc))})")
    elif isinstance(exc, openai.APIResponseValidationError) or isinstance(exc, ValueError):
        text = f"{url}: the reply is not chat-completions JSON ({detail})"
    elif status is not None:
        retried = f" after {options.max_retries} retries" if status >= 500 or status == 429 else ""
        text = f"{url}: the server answered {status}{retried} ({detail})"
    else:
        text = f"{url}: request failed ({type(exc).__name__}: {detail})"
    return text.replace(secret, "***") if secret else text


def mean_of_tokens(embedding: Any) -> list[float]:
    """One vector: ``embedding`` itself, or the mean of its rows when the server returned one
    vector per token (llama-cpp-python's server does for a causal LM: it has no pooling
    option), which is REAL's mean pooling over the text's tokens."""
    if embedding and isinstance(embedding[0], list):
        width = len(embedding[0])
        return [sum(row[d] for row in embedding) / len(embedding) for d in range(width)]
    return list(embedding)


def check_chat_reply(reply: Any, url: str) -> Reply:
    """``reply`` if it has the shape of a chat completion (non-empty ``choices`` with a
    ``message``); else RealspoError."""
    choices = reply.get("choices") if isinstance(reply, dict) else None
    if not choices or not all(isinstance(c, dict) and isinstance(c.get("message"), dict)
                              for c in choices):
        raise RealspoError(f"{url}: the reply is not chat-completions JSON (no choices with a "
                           f"message: {_first_line(repr(reply), 120)})")
    return reply


class ServedClient:
    """Requests to one model on one OpenAI-compatible server (see the module docstring).

    Args:
        model: the model's name on the server (NAME of ``openai:NAME``).
        options: the server and how hard to try.
        http_client: an ``httpx.Client`` to send through (tests inject faults with it).
    """

    def __init__(self, model: str, options: ServedOptions, http_client: Any = None) -> None:
        try:
            import openai
        except ImportError:
            raise RealspoError("openai:NAME needs the openai client library: pip install "
                               "'realspo[served]'") from None

        self.model, self.options = model, options
        for name in ("httpx", "httpx2"):  # one INFO line per request would drown the progress bar
            logging.getLogger(name).setLevel(logging.WARNING)
        self._secret = os.environ.get(options.api_key_env) or None
        # a local server needs no key, but the library wants one: send a placeholder
        self._client = openai.OpenAI(base_url=options.base_url, api_key=self._secret or "none",
                                     max_retries=options.max_retries, timeout=options.timeout,
                                     http_client=http_client)
        self.sent = 0  # requests sent by this client (retries not counted)
        self._lock = threading.Lock()

    def journal(self, kind: str) -> ReplyJournal:
        """The reply journal of ``kind`` requests to this model at this URL."""
        return ReplyJournal(journal_path(self.options.journal_dir(), kind, self.model,
                                         self.options.base_url))

    def _call(self, fn: Callable[[], Any]) -> Any:
        import openai

        try:
            return fn()
        except (openai.OpenAIError, ValueError) as exc:
            raise RealspoError(describe_failure(exc, self.options, self.model, self._secret)) from None

    def check_reachable(self) -> None:
        """List the server's models (``GET /models``, not counted as a request): a wrong URL,
        a bad key or a server that stays down fails here, as one line, before any work."""
        listed = self._call(lambda: self._client.models.list())
        if isinstance(listed, str):
            raise RealspoError(f"{self.options.base_url}: /models did not answer with JSON "
                               f"({_first_line(listed, 120)}); is this an OpenAI-compatible URL?")
        names = [getattr(m, "id", None) for m in getattr(listed, "data", None) or []]
        if names and self.model not in names:  # llama.cpp serves any name; vLLM would refuse
            log.warning("%s lists no model %r (it lists %s); the first request will tell",
                        self.options.base_url, self.model, ", ".join(map(str, names[:5])))

    def chat(self, request: dict[str, Any]) -> Reply:
        """One chat completion (``request``: the body without ``model``), checked, as a dict."""
        reply = self._call(lambda: self._client.chat.completions.create(model=self.model, **request))
        if isinstance(reply, str):  # the library hands back a body it could not parse as JSON
            raise RealspoError(f"{self.options.base_url}: the reply is not chat-completions JSON "
                               f"({_first_line(reply, 120)})")
        return check_chat_reply(reply.model_dump(exclude_unset=True), self.options.base_url)

    def embed(self, texts: list[str]) -> list[Any]:
        """What ``/embeddings`` returns for each of ``texts``, in input order: a vector, or
        one vector per token (:func:`mean_of_tokens` pools them)."""
        reply = self._call(lambda: self._client.embeddings.create(model=self.model, input=texts))
        data = getattr(reply, "data", None)
        if not isinstance(data, list) or len(data) != len(texts):
            raise RealspoError(f"{self.options.base_url}: the reply is not an embeddings list for "
                               f"{len(texts)} inputs ({_first_line(repr(reply), 120)})")
        return [item.embedding for item in sorted(data, key=lambda item: item.index)]

    def send_all(self, journal: ReplyJournal, requests: Sequence[tuple[str, Any]],
                 send: Callable[[Any], Any], desc: str = "requests",
                 progress: bool = True) -> dict[str, Any]:
        """Replies to keyed ``requests`` ((key, payload) pairs): from ``journal`` when there,
        else ``send(payload)``, journaled as they arrive (see the module docstring).

        Raises:
            DryRun: with ``--dry-run``, before sending anything.
            BudgetSpent: when ``--max-requests`` stops the run before every request is sent
                (the replies received are journaled).
        """
        todo = list({key: payload for key, payload in requests if key not in journal}.items())
        cached = len({key for key, _ in requests}) - len(todo)
        self.run(todo, lambda item: journal.add(item[0], send(item[1])), cached=cached,
                 kept_in=str(journal.path), desc=desc, progress=progress)
        return {key: journal.get(key) for key, _ in requests}

    def run(self, jobs: Sequence[Any], do: Callable[[Any], None], *, cached: int, kept_in: str,
            desc: str = "requests", progress: bool = True) -> None:
        """``do(job)`` for each job, one request each, journaling its own reply: the first
        alone, the rest ``--concurrency`` at a time, no more than ``--max-requests`` allow.

        Args:
            jobs: the requests still to send.
            do: sends one and journals its reply.
            cached: requests answered from the journal (for the dry-run count).
            kept_in: where the replies are journaled (for the budget message).
        Raises:
            DryRun, BudgetSpent: see :meth:`send_all`.
        """
        from tqdm.auto import tqdm

        if self.options.dry_run:
            raise DryRun(len(jobs), cached)
        limit = self.options.max_requests
        allowed = list(jobs) if limit is None else list(jobs)[: max(0, limit - self.sent)]

        failed = threading.Event()  # after one failure no new request starts

        def ask(job: Any) -> None:
            if failed.is_set():
                return
            with self._lock:
                self.sent += 1
            try:
                do(job)
            except BaseException:
                failed.set()
                raise

        with tqdm(total=len(allowed), desc=desc, unit="request", disable=not progress) as bar:
            if allowed:  # alone: a bad key, model or URL ends the run before more is spent
                ask(allowed[0])
                bar.update(1)
            with ThreadPoolExecutor(self.options.concurrency) as pool:
                futures = [pool.submit(ask, job) for job in allowed[1:]]
                for future in futures:
                    future.add_done_callback(lambda _: bar.update(1))
            errors = [f.exception() for f in futures if f.exception() is not None]
            if errors:
                raise errors[0]
        if len(allowed) < len(jobs):
            raise BudgetSpent(
                f"stopped at --max-requests {limit}: {len(jobs) - len(allowed)} of {len(jobs)} "
                f"request(s) not sent; the {self.sent} replies received are kept in {kept_in}; "
                "run the command again to continue")
