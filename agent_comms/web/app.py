"""The page's Starlette application: three static files, a JSON API, one WebSocket of snapshots.

Routes (behind :class:`~agent_comms.web.guard.Guard`):

- ``GET /``, ``/web.js``, ``/web.css``, ``/favicon.svg``: the page (no data in it; the token comes in the URL fragment);
- ``GET /api/state``: the snapshot (``Authorization: Bearer TOKEN``);
- ``POST /api/action``: one action as the person (``Authorization: Bearer TOKEN``, ``Content-Type:
  application/json``; see :meth:`~agent_comms.web.hub.Hub.act`);
- ``WebSocket /ws``: the first frame must be ``{"token": TOKEN}`` (within :data:`AUTH_TIMEOUT`), then the server
  sends the snapshot, and a new one after every change. A wrong token closes it with code 4401.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from importlib.resources import files
from typing import Final

import trio
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route, WebSocketRoute
from starlette.websockets import WebSocket, WebSocketDisconnect

from agent_comms.web.guard import Guard, token_matches
from agent_comms.web.hub import ActionRefused, Hub

__all__ = ["AUTH_TIMEOUT", "WS_UNAUTHORIZED", "build_app"]

#: Seconds a WebSocket has to send its token.
AUTH_TIMEOUT: Final = 10.0
#: The close code of a WebSocket whose first frame is not the token.
WS_UNAUTHORIZED: Final = 4401
#: The largest action request accepted (bytes).
MAX_BODY: Final = 256 * 1024

_STATIC: Final = {
    "/": ("index.html", "text/html"),
    "/web.js": ("web.js", "text/javascript"),
    "/web.css": ("web.css", "text/css"),
    "/favicon.svg": ("favicon.svg", "image/svg+xml"),
}


def _static(name: str) -> bytes:
    return files("agent_comms.web").joinpath("static", name).read_bytes()


def build_app(hub: Hub, token: str, port: Callable[[], int], log: Callable[[str], None] | None = None) -> Guard:
    """The guarded application serving ``hub`` (``port``: a callable giving the bound port, for the Host check)."""
    pages = {path: (_static(name), kind) for path, (name, kind) in _STATIC.items()}

    async def page(request: Request) -> Response:
        body, kind = pages[request.url.path]
        return Response(body, media_type=kind)

    def authorized(request: Request) -> bool:
        scheme, _, given = request.headers.get("authorization", "").partition(" ")
        return scheme.lower() == "bearer" and token_matches(given.strip(), token)

    async def state(request: Request) -> Response:
        if not authorized(request):
            return _refuse(guard, "missing or wrong token", 401, request)
        return Response(hub.snapshot_json(), media_type="application/json")

    async def action(request: Request) -> Response:
        if not authorized(request):
            return _refuse(guard, "missing or wrong token", 401, request)
        media = request.headers.get("content-type", "").partition(";")[0].strip().lower()
        if media != "application/json":
            return _refuse(guard, "not application/json", 415, request)
        body = await request.body()
        if len(body) > MAX_BODY:
            return _refuse(guard, "request too large", 413, request)
        try:
            data = json.loads(body)
            answer = await hub.act(data)
        except ValueError as exc:  # bad JSON, or ActionRefused
            message = str(exc) if isinstance(exc, ActionRefused) else "the body is not JSON"
            return JSONResponse({"ok": False, "error": message}, status_code=400)
        return JSONResponse(answer)

    async def socket(websocket: WebSocket) -> None:
        await websocket.accept()
        given = None
        with trio.move_on_after(AUTH_TIMEOUT):
            try:
                first = json.loads(await websocket.receive_text())
                given = first.get("token") if isinstance(first, dict) else None
            except (ValueError, KeyError, WebSocketDisconnect):
                given = None
        if not isinstance(given, str) or not token_matches(given, token):
            guard.refused += 1
            guard.log("refused WebSocket /ws: missing or wrong token")
            await websocket.close(WS_UNAUTHORIZED)
            return
        hub.page_opened()
        try:
            async with trio.open_nursery() as nursery:

                async def until_closed() -> None:
                    try:
                        while True:
                            await websocket.receive_text()  # the page sends nothing more; read to see it go
                    except WebSocketDisconnect:
                        pass
                    nursery.cancel_scope.cancel()

                nursery.start_soon(until_closed)
                version = hub.version
                await websocket.send_text(hub.snapshot_json())
                while True:
                    version = await hub.wait_newer(version)
                    await websocket.send_text(hub.snapshot_json())
        except (WebSocketDisconnect, RuntimeError):  # the page went away while a snapshot was on its way
            pass
        finally:
            hub.page_closed()

    app = Starlette(
        routes=[
            *(Route(path, page, methods=["GET"]) for path in pages),
            Route("/api/state", state, methods=["GET"]),
            Route("/api/action", action, methods=["POST"]),
            WebSocketRoute("/ws", socket),
        ]
    )
    guard = Guard(app, port, log)
    return guard


def _refuse(guard: Guard, reason: str, status: int, request: Request) -> Response:
    guard.refused += 1
    guard.log(f"refused {request.method} {request.url.path}: {reason}")
    return JSONResponse({"ok": False, "error": f"refused: {reason}"}, status_code=status)
