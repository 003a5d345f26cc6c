"""The page's Starlette application: three static files and one WebSocket that carries everything else.

Routes (behind :class:`~agent_comms.web.guard.Guard`):

- ``GET /``, ``/web.js``, ``/web.css``, ``/favicon.svg``: the page (no data in it; the token comes in the URL fragment);
- ``WebSocket /ws``: first the mutual proof of the token (:mod:`~agent_comms.web.handshake`, within
  :data:`AUTH_TIMEOUT`; a failure closes it with :data:`WS_UNAUTHORIZED`; a page that proved the previous launch's
  token is first sent the current one), then the server sends the snapshot, and a
  new one after every change. The page's actions travel on the same socket: ``{"type": "act", "id": N,
  "request": {...}}`` (see :meth:`~agent_comms.web.hub.Hub.act`), answered by ``{"type": "answer", "id": N,
  "ok": ..., "text"/"error"/"data": ...}``. A frame of any other shape closes it with :data:`WS_BAD_FRAME`.

There is no HTTP data endpoint: the token, or anything derived from it that could be replayed, never travels in a
request (a program that took the port after a crash would get it).
"""

from __future__ import annotations

import json
from collections.abc import Awaitable, Callable
from importlib.resources import files
from typing import Any, Final

import trio
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route, WebSocketRoute
from starlette.websockets import WebSocket, WebSocketDisconnect, WebSocketDisconnected

from agent_comms.web.guard import Guard
from agent_comms.web.handshake import key_id, new_nonce, page_proof, proof_matches, server_proof, valid_nonce
from agent_comms.web.hub import ActionRefused, Hub
from agent_comms.web.keys import Keys

__all__ = ["AUTH_TIMEOUT", "MAX_FRAME", "WS_BAD_FRAME", "WS_UNAUTHORIZED", "build_app"]

#: Seconds a WebSocket has to complete the proof of the token.
AUTH_TIMEOUT: Final = 10.0
#: The close code of a WebSocket that did not prove it knows the token.
WS_UNAUTHORIZED: Final = 4401
#: The close code of an authenticated WebSocket that sent a frame of no known shape.
WS_BAD_FRAME: Final = 1008
#: The largest frame accepted from the page (bytes).
MAX_FRAME: Final = 256 * 1024

_STATIC: Final = {
    "/": ("index.html", "text/html"),
    "/web.js": ("web.js", "text/javascript"),
    "/web.css": ("web.css", "text/css"),
    "/favicon.svg": ("favicon.svg", "image/svg+xml"),
}


class _BadFrame(Exception):
    """The page sent a frame that is not text, not JSON, or not of an expected shape (the reason is the message)."""


def _static(name: str) -> bytes:
    return files("agent_comms.web").joinpath("static", name).read_bytes()


async def _receive_json(websocket: WebSocket) -> Any:
    """The next frame, decoded; :class:`WebSocketDisconnect` when the page went away, :class:`_BadFrame` if bad."""
    message = await websocket.receive()
    if message["type"] == "websocket.disconnect":
        raise WebSocketDisconnect(message.get("code", 1000))
    text = message.get("text")
    if not isinstance(text, str):
        raise _BadFrame("a frame that is not text")
    try:
        return json.loads(text)
    except ValueError:
        raise _BadFrame("a frame that is not JSON") from None


async def _prove(websocket: WebSocket, keys: Keys) -> tuple[str | None, str | None]:
    """Run the handshake (:mod:`~agent_comms.web.handshake`): ``(None, token)`` once the page proved it holds
    ``token`` (the launch's or the previous launch's), else ``(why not, None)``."""
    try:
        hello = await _receive_json(websocket)
        if not isinstance(hello, dict) or hello.get("type") != "hello" or not valid_nonce(hello.get("nonce")):
            return "the first frame is not a hello with a nonce", None
        named = hello.get("key")
        token = next((t for t in (keys.current, keys.previous) if t and proof_matches(named, key_id(t))), None)
        if token is None:
            return "a key this launch does not know", None
        page_nonce: str = hello["nonce"]
        nonce = new_nonce()
        proof = server_proof(token, page_nonce, nonce)
        await websocket.send_text(json.dumps({"type": "challenge", "nonce": nonce, "proof": proof}))
        answer = await _receive_json(websocket)
    except _BadFrame as exc:
        return str(exc), None
    except WebSocketDisconnect:
        return "the page left before proving it has the key", None
    if not isinstance(answer, dict) or answer.get("type") != "proof":
        return "no proof of the key", None
    if not proof_matches(answer.get("proof"), page_proof(token, nonce, page_nonce)):
        return "wrong proof of the key", None
    return None, token


async def _answer_actions(websocket: WebSocket, hub: Hub, send: Callable[[str], Awaitable[None]]) -> None:
    """Run the page's actions, one at a time, and answer each; raises when the page goes or sends a bad frame."""
    while True:
        frame = await _receive_json(websocket)
        if not isinstance(frame, dict) or frame.get("type") != "act" or not isinstance(frame.get("id"), int):
            raise _BadFrame("a frame that is not an action")
        answer: dict[str, Any]
        try:
            answer = await hub.act(frame.get("request"))
        except ActionRefused as exc:
            answer = {"ok": False, "error": str(exc)}
        await send(json.dumps({"type": "answer", "id": frame["id"], **answer}, ensure_ascii=False))


def build_app(
    hub: Hub,
    keys: Keys,
    port: Callable[[], int],
    log: Callable[[str], None] | None = None,
    *,
    keys_ready: trio.Event | None = None,
) -> Guard:
    """The guarded application serving ``hub`` (``port``: a callable giving the bound port, for the Host check).

    ``keys_ready``: set once ``keys.previous`` is settled (known only once the port is bound); until then a page's
    handshake waits (within :data:`AUTH_TIMEOUT`).
    """
    pages = {path: (_static(name), kind) for path, (name, kind) in _STATIC.items()}

    async def page(request: Request) -> Response:
        body, kind = pages[request.url.path]
        return Response(body, media_type=kind)

    async def socket(websocket: WebSocket) -> None:
        await websocket.accept()
        refusal: str | None = "no proof of the key in time"
        proved: str | None = None
        with trio.move_on_after(AUTH_TIMEOUT):
            if keys_ready is not None:
                await keys_ready.wait()
            refusal, proved = await _prove(websocket, keys)
        if refusal is not None or proved is None:
            guard.refused += 1
            guard.log(f"refused WebSocket /ws: {refusal}")
            await websocket.close(WS_UNAUTHORIZED)
            return
        sending = trio.Lock()  # snapshots and answers go out whole, one after the other

        async def send(text: str) -> None:
            async with sending:
                await websocket.send_text(text)

        hub.page_opened()
        try:
            if proved != keys.current:  # the previous launch's token: the page takes this launch's instead
                await send(json.dumps({"type": "rotate", "token": keys.current}))
            # The reader raises when the page goes (or misbehaves); the nursery hands that on as an ExceptionGroup.
            async with trio.open_nursery() as nursery:
                nursery.start_soon(_answer_actions, websocket, hub, send)
                version = hub.version
                await send(hub.snapshot_json())
                while True:
                    version = await hub.wait_newer(version)
                    await send(hub.snapshot_json())
        except* (WebSocketDisconnect, WebSocketDisconnected):  # the page went away
            pass
        except* _BadFrame as group:
            guard.refused += 1
            guard.log(f"closed WebSocket /ws: {group.exceptions[0]}")
            await websocket.close(WS_BAD_FRAME)
        finally:
            hub.page_closed()

    app = Starlette(
        routes=[
            *(Route(path, page, methods=["GET"]) for path in pages),
            WebSocketRoute("/ws", socket),
        ]
    )
    guard = Guard(app, port, log)
    return guard
