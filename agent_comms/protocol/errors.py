"""Protocol errors, split by who broke the rules.

Following h11's convention: a :class:`RemoteProtocolError` means the other side sent something we cannot accept
(a malformed frame, a wrong proof, an incompatible version); the link that carried it must be closed and the peer
keeps running. A :class:`LocalProtocolError` means our own code asked the protocol to do something it cannot do;
that is a bug on our side and should propagate.
"""

from __future__ import annotations

__all__ = ["LocalProtocolError", "ProtocolError", "RemoteProtocolError"]


class ProtocolError(Exception):
    """Base class of every error raised by :mod:`agent_comms.protocol`."""


class LocalProtocolError(ProtocolError):
    """Our side misused the protocol (a programming error, never caused by input from the network)."""


class RemoteProtocolError(ProtocolError):
    """The remote side violated the protocol; close the link that delivered the offending bytes.

    ``reason`` is a short machine-friendly word (``oversized``, ``malformed``, ``version``, ``auth``, ...) that
    logs and tests can match on; the message says what happened in words.
    """

    def __init__(self, message: str, *, reason: str) -> None:
        super().__init__(message)
        self.reason = reason
