"""Refuse every request that is not the page's own, and give every answer the headers of a locked-down page.

The server binds 127.0.0.1 only, but any web page the person visits can make the browser send requests to it, and
any local user can connect to it. So, for every HTTP request and WebSocket handshake:

1. the ``Host`` header must be exactly ``127.0.0.1:PORT`` or ``localhost:PORT`` (a DNS-rebinding page sends its own
   host name: refused);
2. an ``Origin`` header, when present, must be ``http://`` and one of those two (another page's requests, and
   every cross-origin WebSocket, carry theirs: refused);
3. the only data endpoint, the WebSocket, needs the proof of the launch's token
   (:mod:`~agent_comms.web.handshake`); the page gets the token in the URL fragment, which the browser never sends
   in a request line, and never sends it anywhere itself;
4. there is nothing to ``POST`` to (a form, or a ``no-cors`` request, reaches only a 405 or 404);
5. no CORS header is ever sent, so a browser never lets another origin read an answer or pass a preflight.

Every HTTP answer carries ``Content-Security-Policy: default-src 'self'; frame-ancestors 'none'``,
``X-Content-Type-Options: nosniff``, ``Cache-Control: no-store`` and ``Referrer-Policy: no-referrer``. Refusals
are logged with their reason, never with a header's value (so no token reaches a log).
"""

from __future__ import annotations

import json
import sys
from collections.abc import Callable
from typing import Any, Final

from starlette.types import ASGIApp, Message, Receive, Scope, Send

__all__ = ["SECURITY_HEADERS", "Guard", "allowed_hosts"]

SECURITY_HEADERS: Final[list[tuple[bytes, bytes]]] = [
    (b"content-security-policy", b"default-src 'self'; frame-ancestors 'none'"),
    (b"x-content-type-options", b"nosniff"),
    (b"cache-control", b"no-store"),
    (b"referrer-policy", b"no-referrer"),
    (b"x-frame-options", b"DENY"),
]


def allowed_hosts(port: int) -> frozenset[str]:
    """The two ``Host`` values of the page: ``127.0.0.1:PORT`` and ``localhost:PORT``."""
    return frozenset({f"127.0.0.1:{port}", f"localhost:{port}"})


def _header(scope: Scope, name: bytes) -> str | None:
    values = [value for key, value in scope.get("headers", ()) if key.lower() == name]
    if len(values) != 1:  # absent, or repeated (a repeated Host or Origin is refused as if wrong)
        return None if not values else "\0repeated"
    return bytes(values[0]).decode("latin-1")


class Guard:
    """ASGI middleware in front of the page's application: rules 1, 2 and the headers (see the module)."""

    def __init__(self, app: ASGIApp, port: Callable[[], int], log: Callable[[str], None] | None = None) -> None:
        self.app = app
        self.port = port
        self.log = log or _stderr
        self.refused = 0

    def refusal(self, scope: Scope) -> str | None:
        """Why the request is refused, or ``None``."""
        hosts = allowed_hosts(self.port())
        host = _header(scope, b"host")
        if host not in hosts:
            return "wrong Host header"
        origin = _header(scope, b"origin")
        if origin is not None and origin not in {f"http://{h}" for h in hosts}:
            return "foreign Origin"
        return None

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] not in ("http", "websocket"):
            await self.app(scope, receive, send)
            return
        reason = self.refusal(scope)
        if reason is not None:
            self.refused += 1
            self.log(f"refused {scope.get('method', 'WebSocket')} {scope.get('path', '')}: {reason}")
            if scope["type"] == "websocket":
                await send({"type": "websocket.close", "code": 1008})  # before accepting: a 403 to the handshake
            else:
                await _send_json(send, 403, {"error": f"refused: {reason}"})
            return
        if scope["type"] == "websocket":
            await self.app(scope, receive, send)
            return

        async def send_with_headers(message: Message) -> None:
            if message["type"] == "http.response.start":
                headers = [(k, v) for k, v in message.get("headers", []) if not k.lower().startswith(b"access-")]
                message = {**message, "headers": [*headers, *SECURITY_HEADERS]}
            await send(message)

        await self.app(scope, receive, send_with_headers)


async def _send_json(send: Send, status: int, body: dict[str, Any]) -> None:
    data = json.dumps(body).encode()
    headers = [(b"content-type", b"application/json"), (b"content-length", str(len(data)).encode())]
    await send({"type": "http.response.start", "status": status, "headers": [*headers, *SECURITY_HEADERS]})
    await send({"type": "http.response.body", "body": data})


def _stderr(text: str) -> None:
    print(f"agent-comms web: {text}", file=sys.stderr, flush=True)
