"""Same-user admission: proving knowledge of the mesh key without revealing it.

Every peer of one user reads the same 32-byte key from ``AGENT_COMMS_HOME`` (created 0600; reading and checking
the file is the runtime's job). On each link both sides prove they know it with an HMAC-SHA256 over a transcript
that binds the proof to this one connection:

* both fresh nonces, so a proof cannot be replayed on another connection;
* the prover's role (``dialer`` / ``listener``), so a proof cannot be reflected back to its author;
* both socket addresses as each side sees them, so a process that sits in the middle and relays bytes between a
  peer and a real mesh peer (it would have to be two connections) produces transcripts that do not match.
"""

from __future__ import annotations

import hashlib
import hmac
from typing import Final, Literal

__all__ = ["KEY_SIZE", "NONCE_SIZE", "Role", "link_proof", "verify_link_proof"]

#: Length of the mesh key in bytes.
KEY_SIZE: Final = 32
#: Length of a handshake nonce in bytes.
NONCE_SIZE: Final = 16

Role = Literal["dialer", "listener"]

_LABEL: Final = b"agent-comms link proof v1"


def _transcript(role: Role, dialer_nonce: bytes, listener_nonce: bytes, dialer_addr: str, listener_addr: str) -> bytes:
    parts = [_LABEL, role.encode(), dialer_nonce, listener_nonce, dialer_addr.encode(), listener_addr.encode()]
    # Length-prefix every part so that no two different transcripts serialise to the same bytes.
    return b"".join(len(p).to_bytes(2, "big") + p for p in parts)


def link_proof(
    key: bytes, role: Role, *, dialer_nonce: bytes, listener_nonce: bytes, dialer_addr: str, listener_addr: str
) -> bytes:
    """The proof that the side playing ``role`` on this connection knows ``key``."""
    transcript = _transcript(role, dialer_nonce, listener_nonce, dialer_addr, listener_addr)
    return hmac.new(key, transcript, hashlib.sha256).digest()


def verify_link_proof(
    key: bytes,
    role: Role,
    mac: bytes,
    *,
    dialer_nonce: bytes,
    listener_nonce: bytes,
    dialer_addr: str,
    listener_addr: str,
) -> bool:
    """Whether ``mac`` is the right proof for ``role`` (constant-time comparison)."""
    expected = link_proof(
        key,
        role,
        dialer_nonce=dialer_nonce,
        listener_nonce=listener_nonce,
        dialer_addr=dialer_addr,
        listener_addr=listener_addr,
    )
    return hmac.compare_digest(expected, mac)
