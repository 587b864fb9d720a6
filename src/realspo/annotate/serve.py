"""Running a campaign's server: the socket, the links, uvicorn, the output lock."""

from __future__ import annotations

import contextlib
import errno
import ipaddress
import signal
import socket
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import quote

from realspo.annotate.campaign import Campaign, CampaignSpec, open_campaign
from realspo.errors import RealspoError
from realspo.outputs import output_lock


def bind(host: str, port: int) -> socket.socket:
    """A listening socket on ``host:port`` (port 0: any free one).

    Raises:
        RealspoError: the port is in use or the address cannot be bound.
    """
    try:
        family = socket.AF_INET6 if ipaddress.ip_address(host).version == 6 else socket.AF_INET
    except ValueError:
        family = socket.AF_INET  # a host name
    # IPPROTO_TCP named, not 0: asyncio sets TCP_NODELAY on accepted connections only when
    # the protocol says TCP; without it each keep-alive reply waited ~40 ms for a delayed ACK
    sock = socket.socket(family, socket.SOCK_STREAM, socket.IPPROTO_TCP)
    # a restart right after a crash must not wait out the old connections' TIME_WAIT; a port
    # another process listens on is still refused
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind((host, port))
    except OSError as exc:
        sock.close()
        why = "is in use" if exc.errno == errno.EADDRINUSE else f"cannot be bound ({exc.strerror})"
        raise RealspoError(f"--host {host} --port {port}: {why}; pick another --port") from None
    sock.listen(128)
    return sock


def links(campaign: Campaign, host: str, sock: socket.socket,
          public_url: str | None = None) -> dict[str | None, str]:
    """Each annotator's link and the owner's (key None): ``http://HOST:PORT/?token=...``, or
    ``PUBLIC_URL/?token=...`` behind a reverse proxy."""
    if public_url:
        base = public_url.rstrip("/")
    else:
        shown = socket.gethostname() if host in ("0.0.0.0", "::") else host
        if ":" in shown:
            shown = f"[{shown}]"  # an IPv6 address in a URL
        base = f"http://{shown}:{sock.getsockname()[1]}"
    tokens = {**campaign.tokens.annotators, None: campaign.tokens.owner}
    return {name: f"{base}/?token={quote(token)}" for name, token in tokens.items()}


@contextlib.contextmanager
def serve_campaign(spec: CampaignSpec, out: str | Path,
                   sock: socket.socket) -> Iterator[tuple[Campaign, bool, object]]:
    """Open (or resume) the campaign under its output lock and yield it with a uvicorn server.

    Args:
        spec: what the campaign is made of.
        out: the campaign directory.
        sock: the bound socket (:func:`bind`).

    Yields:
        The campaign, whether it was created now, and a ``uvicorn.Server`` to ``run``.
    """
    import uvicorn

    from realspo.annotate.server import create_app

    try:
        with output_lock(out):
            campaign, created = open_campaign(spec, out)
            app = create_app(campaign)
            # no access log: the first request of a link carries its token in the URL
            config = uvicorn.Config(app, log_level="warning", access_log=False,
                                    timeout_graceful_shutdown=5)
            # uvicorn stops gracefully on SIGTERM, then raises the signal again: with the
            # default action that kills us before the journals close and the lock goes
            previous = signal.signal(signal.SIGTERM, _exit_on_sigterm)
            try:
                yield campaign, created, uvicorn.Server(config)
            finally:
                signal.signal(signal.SIGTERM, previous)
                app.state.api.close()
    finally:
        sock.close()


def _exit_on_sigterm(signum: int, frame: object) -> None:
    raise SystemExit(128 + signum)


def is_loopback(host: str) -> bool:
    """Whether ``host`` is a loopback address (the default, reachable from this machine only)."""
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return host == "localhost"

