"""The UI's Starlette app: three pages, a JSON API over the readers, and a Server-Sent Events stream.

Pages (HTML shells; ``static/app.js`` renders them): ``/`` sessions, ``/session/{id}``
one session's waterfall, ``/usage``. API (JSON, GET only: the UI never writes):

- ``/api/sessions?since=W&q=TEXT`` - ``model.session_row`` per session, newest first;
- ``/api/session/{id}`` - ``model.session_view``;
- ``/api/session/{id}/record/{pos}`` - ``model.record_view`` (blobs read back);
- ``/api/usage?since=W&stack=model|skill`` - ``model.usage_view``;
- ``/api/events`` - change notices from ``live.Hub`` (``text/event-stream``).

Everything from the traces reaches the page as JSON and is put into the DOM as
text (``textContent``), never as markup.
"""

from __future__ import annotations

import html
import json
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Final

import anyio
import msgspec
from sse_starlette import EventSourceResponse
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import HTMLResponse, Response
from starlette.routing import Mount, Route
from starlette.staticfiles import StaticFiles

from traced.errors import ReadError, SessionNotFound
from traced.format.layout import NAME_RE
from traced.read.sessions import Session, find_session, load_session, scan
from traced.read.usage import Pricer
from traced.read.window import Window, parse_window
from traced.ui import model
from traced.ui.live import Hub

STATIC: Final = Path(__file__).parent / "static"
PAGES: Final = {"sessions": "Sessions", "session": "Session", "usage": "Usage"}
_encode = msgspec.json.Encoder().encode


@dataclass(slots=True)
class State:
    """What the app reads (``roots``) and how it goes live (``hub``)."""

    roots: list[Path]
    hub: Hub = field(default_factory=Hub)
    pricer: Pricer = field(default_factory=Pricer)


def json_response(data: Any, status: int = 200) -> Response:
    """JSON as msgspec encodes it (fast on a 5,000-step session)."""
    return Response(_encode(data), status, media_type="application/json")


def _error(status: int, message: str) -> Response:
    return json_response({"error": message}, status)


def shell(page: str, session_id: str = "") -> str:
    """A page's HTML: no inline script or style (the CSP forbids them), data attributes escaped."""
    title = PAGES[page] + (f" {session_id}" if session_id else "")
    return (
        "<!doctype html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">"
        "<meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">"
        f"<title>traced · {html.escape(title)}</title>"
        "<link rel=\"icon\" href=\"data:,\"><link rel=\"stylesheet\" href=\"/static/app.css\"></head>"
        f"<body data-page=\"{page}\" data-session=\"{html.escape(session_id, quote=True)}\">"
        "<div id=\"app\"></div><script src=\"/static/app.js\"></script></body></html>\n"
    )


def _window(request: Request, default: str | None) -> Window | None:
    text = request.query_params.get("since") or default
    if not text or text == "all":
        return None
    return parse_window(text)


def _load(state: State, sid: str) -> Session:
    """The session ``sid`` (an id or id prefix, never a path: ``find_session`` would take one)."""
    if not NAME_RE.match(sid):
        raise SessionNotFound(f"not a session id: {sid!r}")
    return load_session(find_session(state.roots, sid))


def build(state: State) -> Starlette:
    """The app over ``state`` (wrap it in ``guard.Guard`` before serving)."""

    async def page_sessions(request: Request) -> Response:
        return HTMLResponse(shell("sessions"))

    async def page_session(request: Request) -> Response:
        return HTMLResponse(shell("session", request.path_params["sid"]))

    async def page_usage(request: Request) -> Response:
        return HTMLResponse(shell("usage"))

    async def api_sessions(request: Request) -> Response:
        try:
            window = _window(request, None)
        except ValueError as e:
            return _error(400, str(e))
        query = request.query_params.get("q", "").strip()

        def work() -> list[dict[str, Any]]:
            infos = scan(state.roots, window)
            if query:
                infos = [i for i in infos if model.matches(i, query)]
            return [model.session_row(i, state.pricer) for i in infos]

        rows = await anyio.to_thread.run_sync(work)
        return json_response({"sessions": rows, "live": state.hub.mode})

    async def api_session(request: Request) -> Response:
        sid = request.path_params["sid"]

        def work() -> dict[str, Any]:
            session = _load(state, sid)
            return model.session_view(session, state.pricer, now=time.time())

        try:
            return json_response(await anyio.to_thread.run_sync(work))
        except ReadError as e:
            return _error(404, str(e))

    async def api_record(request: Request) -> Response:
        sid, pos = request.path_params["sid"], request.path_params["pos"]

        def work() -> dict[str, Any] | None:
            return model.record_view(_load(state, sid), pos)

        try:
            found = await anyio.to_thread.run_sync(work)
        except ReadError as e:
            return _error(404, str(e))
        return json_response(found) if found is not None else _error(404, f"no record {pos}")

    async def api_usage(request: Request) -> Response:
        try:
            window = _window(request, "7d")
            stack = request.query_params.get("stack", "model")
            if stack not in ("model", "skill"):
                raise ValueError(f"bad stack {stack!r}: use model or skill")
            if window is None:
                raise ValueError("usage needs a window: today, 7d, 30d, YYYY-MM-DD or A..B")
            data = await anyio.to_thread.run_sync(
                lambda: model.usage_view(state.roots, window, stack, state.pricer))
        except ValueError as e:
            return _error(400, str(e))
        return json_response(data)

    async def api_events(request: Request) -> Response:
        async def stream() -> AsyncIterator[dict[str, str]]:
            async with state.hub.subscribe() as notices:
                yield {"event": "hello", "data": json.dumps({"live": state.hub.mode})}
                async for notice in notices:
                    yield {"event": "change", "data": json.dumps(notice)}

        return EventSourceResponse(stream(), ping=15)

    routes = [
        Route("/", page_sessions),
        Route("/session/{sid:str}", page_session),
        Route("/usage", page_usage),
        Route("/api/sessions", api_sessions),
        Route("/api/session/{sid:str}", api_session),
        Route("/api/session/{sid:str}/record/{pos:int}", api_record),
        Route("/api/usage", api_usage),
        Route("/api/events", api_events),
        Mount("/static", app=StaticFiles(directory=STATIC), name="static"),
    ]
    return Starlette(routes=routes)
