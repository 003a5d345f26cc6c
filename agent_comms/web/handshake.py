"""How the page and the server prove to each other that they know the launch's token, without sending it.

The token reaches the browser once, in the URL fragment. After that it never crosses the wire: whatever listens on
the page's port when the page (re)connects may be another program (the server crashed and something else took the
port), so the page must not hand it anything it could use or replay. Over the WebSocket, before any data:

1. the page sends ``{"type": "hello", "nonce": PAGE_NONCE, "key": KEY_ID}``: fresh random bytes (base64url), and
   which token it holds, as :func:`key_id` (a truncated HMAC keyed with the token over a fixed label: it names the
   token without giving anything that helps to make a proof). The server knows two tokens at most, its launch's
   own and the previous launch's on the same port (:mod:`~agent_comms.web.keys`); a key id of neither is closed
   with 4401 at once;
2. the server answers ``{"type": "challenge", "nonce": SERVER_NONCE, "proof": server_proof(...)}``: an
   HMAC-SHA256 keyed with the token over a label, the page's nonce and its own (:func:`server_proof`);
3. the page checks that proof (WebCrypto) and only then sends ``{"type": "proof", "proof": page_proof(...)}``,
   over the other label and the nonces in the other order (:func:`page_proof`), so neither side's proof can be
   reflected as the other's; a wrong server proof ends the page's session (it stops retrying);
4. the server checks it in constant time (:func:`proof_matches`), or closes with 4401. When the page proved the
   previous launch's token, the server sends it the current one, ``{"type": "rotate", "token": ...}``, over this
   proved socket; the page keeps it in place of the old one. Then the data.

An impostor thus receives only a random nonce from the page, and a recorded proof is worth nothing on another
connection (the other side's nonce is new each time). A relaunch makes a new token but accepts the previous one, so
an open page resumes by itself (and is moved onto the new token); a page two launches old, or of a launch on another
port, names a key the server does not know, is refused with 4401 and says its session ended.
"""

from __future__ import annotations

import hashlib
import hmac
import re
import secrets
from typing import Final

__all__ = [
    "KEY_ID_CHARS",
    "NONCE_BYTES",
    "key_id",
    "new_nonce",
    "page_proof",
    "proof_matches",
    "server_proof",
    "valid_nonce",
]

#: Random bytes in a nonce (each side's).
NONCE_BYTES: Final = 32
#: A nonce as sent: base64url without padding, at least 128 bits, at most a small bound.
_NONCE: Final = re.compile(r"[A-Za-z0-9_-]{22,128}")
_SERVER_LABEL: Final = "agent-comms web server"
_PAGE_LABEL: Final = "agent-comms web page"
_KEY_ID_LABEL: Final = "agent-comms web key id"
#: Hex characters in a key id (64 bits: enough to tell two tokens apart, far too few to stand for one).
KEY_ID_CHARS: Final = 16


def new_nonce() -> str:
    """A fresh nonce (:data:`NONCE_BYTES` random bytes, base64url)."""
    return secrets.token_urlsafe(NONCE_BYTES)


def valid_nonce(value: object) -> bool:
    """Whether ``value`` has the shape of a nonce (a base64url string of 22 to 128 characters)."""
    return isinstance(value, str) and _NONCE.fullmatch(value) is not None


def _mac(token: str, *parts: str) -> str:
    return hmac.new(token.encode(), "\n".join(parts).encode(), hashlib.sha256).hexdigest()


def key_id(token: str) -> str:
    """Which token a page holds, as it says so in its hello: hex HMAC-SHA256 over a fixed label, truncated."""
    return _mac(token, _KEY_ID_LABEL)[:KEY_ID_CHARS]


def server_proof(token: str, page_nonce: str, server_nonce: str) -> str:
    """What the server sends to show it knows ``token``: hex HMAC-SHA256 over the server's label and the nonces."""
    return _mac(token, _SERVER_LABEL, page_nonce, server_nonce)


def page_proof(token: str, server_nonce: str, page_nonce: str) -> str:
    """What the page sends once the server proved itself: hex HMAC-SHA256 over the page's label and the nonces."""
    return _mac(token, _PAGE_LABEL, server_nonce, page_nonce)


def proof_matches(given: object, expected: str) -> bool:
    """Whether ``given`` is ``expected`` (compared in constant time; anything but a string is not)."""
    return isinstance(given, str) and hmac.compare_digest(given.encode(), expected.encode())
