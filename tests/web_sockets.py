"""WebSocket ends for the web page's tests, on wsproto (Hypercorn's own WebSocket core) over Trio TCP streams.

- :class:`Client`: a raw client of ``agent-comms web``'s ``/ws`` (any Host and Origin, any frames), with
  :func:`prove`, the page's side of the handshake written again from its description;
- :class:`Impostor`: what might take the port of a crashed ``agent-comms web``: it accepts WebSockets (and answers
  plain HTTP with a 404), records every byte it receives and every decoded frame, and answers a hello as told.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import secrets
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import trio
from wsproto import ConnectionType, WSConnection
from wsproto.connection import ConnectionState
from wsproto.events import (
    AcceptConnection,
    BytesMessage,
    CloseConnection,
    Event,
    Message,
    Ping,
    RejectConnection,
    Request,
    TextMessage,
)

__all__ = ["Client", "Closed", "Impostor", "act", "key_id", "mac", "open_client", "open_impostor", "prove"]


class Closed(Exception):
    """The other end closed the WebSocket (``code``), or refused its handshake (``code`` is the HTTP status)."""

    def __init__(self, code: int) -> None:
        super().__init__(code)
        self.code = code


class Client:
    """One WebSocket to ``/ws``: send frames, receive text frames; :class:`Closed` when it ends."""

    def __init__(self, stream: trio.SocketStream) -> None:
        self.stream = stream
        self.ws = WSConnection(ConnectionType.CLIENT)
        self._pending: list[Event] = []

    async def _events(self) -> Event:
        while not self._pending:
            data = await self.stream.receive_some()
            self.ws.receive_data(data or None)
            self._pending.extend(self.ws.events())
            if not data and not self._pending:
                raise Closed(1006)
        return self._pending.pop(0)

    async def handshake(self, host: str, origin: str | None) -> None:
        headers = [] if origin is None else [(b"origin", origin.encode())]
        await self.stream.send_all(self.ws.send(Request(host=host, target="/ws", extra_headers=headers)))
        event = await self._events()
        if isinstance(event, RejectConnection):
            raise Closed(event.status_code)
        assert isinstance(event, AcceptConnection), event

    async def send(self, frame: str | bytes | dict[str, Any]) -> None:
        if isinstance(frame, dict):
            frame = json.dumps(frame)
        message = BytesMessage(data=frame) if isinstance(frame, bytes) else TextMessage(data=frame)
        await self.stream.send_all(self.ws.send(message))

    async def receive(self) -> Any:
        """The next text frame, decoded from JSON."""
        text = ""
        while True:
            event = await self._events()
            if isinstance(event, CloseConnection):
                raise Closed(event.code)
            if isinstance(event, Ping):
                await self.stream.send_all(self.ws.send(event.response()))
            elif isinstance(event, TextMessage):
                text += event.data
                if event.message_finished:
                    return json.loads(text)


@asynccontextmanager
async def open_client(port: int, *, host: str | None = None, origin: str | None = None) -> AsyncIterator[Client]:
    """A WebSocket to ``127.0.0.1:port/ws`` with this ``Host`` (default the page's own) and ``Origin`` (none)."""
    stream = await trio.open_tcp_stream("127.0.0.1", port)
    async with stream:
        client = Client(stream)
        await client.handshake(host or f"127.0.0.1:{port}", origin)
        yield client


def mac(token: str, *parts: str) -> str:
    """Hex HMAC-SHA256 keyed with ``token`` over the parts joined by newlines (as the page computes it)."""
    return hmac.new(token.encode(), "\n".join(parts).encode(), hashlib.sha256).hexdigest()


def key_id(token: str) -> str:
    """Which token the page holds, as its hello says: the first 16 hex characters of an HMAC of a fixed label."""
    return mac(token, "agent-comms web key id")[:16]


async def prove(client: Client, token: str, rotated: list[str] | None = None) -> dict[str, Any]:
    """Run the page's side of the handshake with ``token``; the first snapshot the server then sends.

    A ``rotate`` frame (the server accepted ``token`` as the previous launch's) is put in ``rotated`` if given, else
    it fails the assertion that a snapshot comes first.
    """
    page_nonce = secrets.token_urlsafe(32)
    await client.send({"type": "hello", "nonce": page_nonce, "key": key_id(token)})
    challenge = await client.receive()
    assert challenge["type"] == "challenge"
    assert hmac.compare_digest(challenge["proof"], mac(token, "agent-comms web server", page_nonce, challenge["nonce"]))
    await client.send({"type": "proof", "proof": mac(token, "agent-comms web page", challenge["nonce"], page_nonce)})
    state: dict[str, Any] = await client.receive()
    if rotated is not None and state["type"] == "rotate":
        rotated.append(state["token"])
        state = await client.receive()
    assert state["type"] == "state", state
    return state


async def act(client: Client, request: dict[str, Any], action_id: int = 1) -> dict[str, Any]:
    """Send one action on a proved socket; its answer (snapshots that come first are skipped)."""
    await client.send({"type": "act", "id": action_id, "request": request})
    while (answer := await client.receive())["type"] != "answer":
        pass
    assert answer["id"] == action_id
    return dict(answer)


class Impostor:
    """A program on the port of a crashed server: records everything it receives; answers as ``mode`` says.

    ``mode``: ``"fake-proof"`` answers a hello with a challenge whose proof is random; ``"close-4401"`` closes
    with 4401 on the first frame; ``"drop"`` closes the connection on the first frame with no reason.
    """

    def __init__(self, mode: str) -> None:
        self.mode = mode
        self.raw = bytearray()  # every byte received, on every connection (WebSocket frames are masked here)
        self.frames: list[str | bytes] = []  # every frame, unmasked
        self.connections = 0
        self.websockets = 0
        self.changed = trio.Event()

    def _note(self) -> None:
        self.changed.set()
        self.changed = trio.Event()

    async def wait_for(self, condition: Any) -> None:
        while not condition():
            await self.changed.wait()

    async def serve(self, stream: trio.SocketStream) -> None:
        self.connections += 1
        self._note()
        ws = WSConnection(ConnectionType.SERVER)
        async with stream:
            try:
                head = b""
                while b"\r\n\r\n" not in head:  # the request's head: a WebSocket handshake, or plain HTTP
                    data = await stream.receive_some()
                    if not data:
                        return
                    self.raw += data
                    head += data
                    self._note()
                if b"upgrade: websocket" not in head.lower():
                    await stream.send_all(b"HTTP/1.1 404 Not Found\r\ncontent-length: 0\r\nconnection: close\r\n\r\n")
                    return
                data = head
                while data:
                    ws.receive_data(data)
                    for event in ws.events():
                        if isinstance(event, Request):
                            self.websockets += 1
                            self._note()
                            await stream.send_all(ws.send(AcceptConnection()))
                        elif isinstance(event, Message):
                            self.frames.append(event.data)
                            self._note()
                            await self._answer(stream, ws, event.data)
                        elif isinstance(event, CloseConnection):
                            if ws.state is ConnectionState.REMOTE_CLOSING:
                                await stream.send_all(ws.send(event.response()))
                            return
                    data = await stream.receive_some()
                    self.raw += data
                    self._note()
            except (trio.BrokenResourceError, trio.ClosedResourceError):
                return

    async def _answer(self, stream: trio.SocketStream, ws: WSConnection, frame: str | bytes) -> None:
        if self.mode == "fake-proof":
            challenge = {"type": "challenge", "nonce": secrets.token_urlsafe(32), "proof": secrets.token_hex(32)}
            await stream.send_all(ws.send(TextMessage(data=json.dumps(challenge))))
        elif self.mode == "close-4401":
            await stream.send_all(ws.send(CloseConnection(code=4401)))
        else:
            await stream.aclose()


@asynccontextmanager
async def open_impostor(port: int, mode: str) -> AsyncIterator[Impostor]:
    """An :class:`Impostor` listening on ``127.0.0.1:port`` until the block ends."""
    impostor = Impostor(mode)
    listeners = await trio.open_tcp_listeners(port, host="127.0.0.1")
    async with trio.open_nursery() as nursery:
        nursery.start_soon(trio.serve_listeners, impostor.serve, listeners)
        yield impostor
        nursery.cancel_scope.cancel()
