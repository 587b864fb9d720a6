"""The labeling page and its JSON API, as a Starlette app.

Routes: ``GET /`` (the page, a Jinja2 template), ``/static/*`` (one CSS and one hand-written
JS file, package data), and the API, each call carrying ``Authorization: Bearer TOKEN``:
``GET /api/whoami``, ``GET /api/next``, ``POST /api/label``, ``POST /api/undo``,
``GET /api/progress``. Every response carries a Content-Security-Policy that allows only
this server's own script, style and images, and no inline script; errors are JSON
(``{"error": ...}``) and never show a traceback.
"""

from __future__ import annotations

import json
import logging
from importlib import resources
from typing import Any

from jinja2 import Environment, PackageLoader, select_autoescape
from starlette.applications import Starlette
from starlette.concurrency import run_in_threadpool
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import HTMLResponse, JSONResponse, Response
from starlette.routing import Mount, Route
from starlette.staticfiles import StaticFiles
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from realspo.annotate.campaign import Campaign
from realspo.annotate.queues import AnnotatorQueue, TaskRefused
from realspo.annotate.report import OwnerReport
from realspo.annotate.tokens import Identity

log = logging.getLogger(__name__)

MAX_BODY_BYTES = 16 * 1024
CSP = ("default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self'; "
       "connect-src 'self'; font-src 'self'; object-src 'none'; base-uri 'none'; "
       "form-action 'none'; frame-ancestors 'none'")
SECURITY_HEADERS = [(b"content-security-policy", CSP.encode()),
                    (b"x-content-type-options", b"nosniff"),
                    (b"referrer-policy", b"no-referrer"),
                    (b"x-frame-options", b"DENY"),
                    (b"cache-control", b"no-store")]


class SecurityHeaders:
    """ASGI middleware adding :data:`SECURITY_HEADERS` to every response."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return

        async def send_with_headers(message: Message) -> None:
            if message["type"] == "http.response.start":
                names = {name for name, _ in SECURITY_HEADERS}
                message["headers"] = [h for h in message.get("headers", [])
                                      if h[0].lower() not in names] + SECURITY_HEADERS
            await send(message)

        await self.app(scope, receive, send_with_headers)


def _error(status: int, message: str) -> JSONResponse:
    return JSONResponse({"error": message}, status_code=status)


class AnnotateApi:
    """The API's handlers over a campaign's queues."""

    def __init__(self, campaign: Campaign) -> None:
        self.campaign = campaign
        self.queues = {name: AnnotatorQueue(campaign, name) for name in campaign.queues}
        self.report = OwnerReport(campaign)

    def identify(self, request: Request) -> Identity:
        scheme, _, token = request.headers.get("authorization", "").partition(" ")
        who = self.campaign.tokens.identify(token.strip()) if scheme.lower() == "bearer" else None
        if who is None:
            raise HTTPException(401, "missing or unknown token (Authorization: Bearer TOKEN)")
        return who

    def annotator(self, request: Request) -> AnnotatorQueue:
        who = self.identify(request)
        if who.is_owner:
            raise HTTPException(403, "the owner token has no queue; use an annotator's link")
        assert who.name is not None
        return self.queues[who.name]

    def whoami(self, request: Request) -> Response:
        who = self.identify(request)
        return JSONResponse({"role": "owner" if who.is_owner else "annotator", "name": who.name})

    def next(self, request: Request) -> Response:
        return JSONResponse(self.annotator(request).next_task())

    async def label(self, request: Request) -> Response:
        queue = self.annotator(request)
        body = await _json_body(request)
        unknown = set(body) - {"task_id", "answer", "comment"}
        if unknown:
            raise HTTPException(400, f"unknown field {sorted(unknown)[0][:40]!r}")
        # the fsync blocks: run it in a worker thread, not on the event loop
        progress = await run_in_threadpool(queue.label, body.get("task_id"), body.get("answer"),
                                           body.get("comment"))
        return JSONResponse({"saved": True, "progress": progress.as_dict()})

    async def undo(self, request: Request) -> Response:
        queue = self.annotator(request)
        undone, progress = await run_in_threadpool(queue.undo)
        return JSONResponse({"undone": undone, "progress": progress.as_dict()})

    async def progress(self, request: Request) -> Response:
        who = self.identify(request)
        if not who.is_owner:
            assert who.name is not None
            return JSONResponse({"progress": self.queues[who.name].progress.as_dict()})
        version = tuple(q.journal.state.last_seq for q in self.queues.values())
        # the report's bootstrap takes a moment: off the event loop
        report = await run_in_threadpool(self.report.lines, version)
        return JSONResponse({**self.owner_progress(), "report": report})

    def owner_progress(self) -> dict[str, Any]:
        """Per annotator and over the campaign: labels given of labels assigned, and pairs
        answered by every annotator they were given to."""
        per = {name: q.progress.as_dict() for name, q in self.queues.items()}
        gold = set(self.campaign.key.gold)
        counts: dict[str, int] = {}
        for q in self.queues.values():
            for pair_id in q.journal.state.answers:
                counts[pair_id] = counts.get(pair_id, 0) + 1
        need: dict[str, int] = {}
        for q in self.queues.values():
            for pair_id in q.pair_ids:
                need[pair_id] = need.get(pair_id, 0) + 1
        pairs = [p for p in need if p not in gold]
        complete = sum(counts.get(p, 0) >= need[p] for p in pairs)
        return {"annotators": per,
                "labels": {"done": sum(v["done"] for v in per.values()),
                           "total": sum(v["total"] for v in per.values())},
                "pairs": {"complete": complete, "total": len(pairs)}}

    def close(self) -> None:
        for queue in self.queues.values():
            queue.close()


async def _json_body(request: Request) -> dict[str, Any]:
    """The request's JSON object, read up to :data:`MAX_BODY_BYTES` (413 beyond)."""
    declared = request.headers.get("content-length")
    if declared is not None and (not declared.isdigit() or int(declared) > MAX_BODY_BYTES):
        raise HTTPException(413, f"body over {MAX_BODY_BYTES} bytes")
    body = bytearray()
    async for chunk in request.stream():
        body += chunk
        if len(body) > MAX_BODY_BYTES:
            raise HTTPException(413, f"body over {MAX_BODY_BYTES} bytes")
    try:
        data = json.loads(bytes(body))
    except (ValueError, UnicodeDecodeError):
        raise HTTPException(400, "body: expected a JSON object") from None
    if not isinstance(data, dict):
        raise HTTPException(400, "body: expected a JSON object")
    return data


def create_app(campaign: Campaign) -> Starlette:
    """The labeling app of ``campaign`` (its queues opened and replayed from the journals).

    Args:
        campaign: an open campaign (:func:`realspo.annotate.campaign.open_campaign`).

    Returns:
        The ASGI app; ``app.state.api.close()`` closes the journals.
    """
    api = AnnotateApi(campaign)
    templates = Environment(loader=PackageLoader("realspo.annotate", "templates"),
                            autoescape=select_autoescape(default=True))
    page = templates.get_template("index.html").render(title="realspo annotate")

    def index(request: Request) -> Response:
        return HTMLResponse(page)

    async def http_error(request: Request, exc: Exception) -> Response:
        assert isinstance(exc, HTTPException)
        return _error(exc.status_code, str(exc.detail))

    async def refused(request: Request, exc: Exception) -> Response:
        assert isinstance(exc, TaskRefused)
        return _error(exc.status, str(exc))

    async def server_error(request: Request, exc: Exception) -> Response:
        log.error("%s %s failed: %s: %s", request.method, request.url.path,
                  type(exc).__name__, exc)
        return _error(500, "internal error (see the server's log)")

    static = resources.files("realspo.annotate") / "static"
    app = Starlette(
        routes=[Route("/", index),
                Route("/api/whoami", api.whoami),
                Route("/api/next", api.next),
                Route("/api/label", api.label, methods=["POST"]),
                Route("/api/undo", api.undo, methods=["POST"]),
                Route("/api/progress", api.progress),
                Mount("/static", StaticFiles(directory=str(static)), name="static")],
        exception_handlers={HTTPException: http_error, TaskRefused: refused,
                            Exception: server_error})
    app.add_middleware(SecurityHeaders)
    app.state.api = api
    return app
