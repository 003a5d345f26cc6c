"""What the peer state machine asks its runtime to do (imperatives), one small class each.

Every input method of :class:`~.peer.Peer` returns a list of these, to be carried out in order.
"""

from __future__ import annotations

from typing import Literal

import attrs

from .changes import Change
from .wire import Frame

__all__ = [
    "BindCoordinatorPort",
    "CloseLink",
    "Command",
    "Deliver",
    "Dial",
    "Notice",
    "ReadPeerRegistry",
    "ReleaseCoordinatorPort",
    "Send",
]

DialPurpose = Literal["coordinator", "data"]


@attrs.frozen
class Send:
    """Queue ``frames`` on link ``link_id`` (the runtime coalesces queued frames into one write)."""

    link_id: int
    frames: tuple[Frame, ...]


@attrs.frozen
class Dial:
    """Open a TCP connection to 127.0.0.1:``port``; report it with ``link_opened(link_id, ...)`` or
    ``dial_failed(link_id, ...)``. ``peer_id`` is who we expect there (``None`` for the coordinator port)."""

    link_id: int
    port: int
    purpose: DialPurpose
    peer_id: str | None = None


@attrs.frozen
class CloseLink:
    """Close link ``link_id`` after flushing what was queued on it; ``reason`` is for the log, and so is
    ``remote`` (who was at the other end: its peer id once authenticated, else its address)."""

    link_id: int
    reason: str
    remote: str = ""


@attrs.frozen
class BindCoordinatorPort:
    """Try to bind and listen on the coordinator port; report ``coordinator_bound`` or ``coordinator_bind_failed``."""


@attrs.frozen
class ReleaseCoordinatorPort:
    """Stop listening on the coordinator port (graceful handover)."""


@attrs.frozen
class ReadPeerRegistry:
    """Read the peer registry beside the mesh key and report it with ``peers_discovered``.

    This is the second way to meet: used when the coordinator port is held but does not answer."""


@attrs.frozen
class Deliver:
    """Changes to the replicated state, for the layers above (delivery events, receipts)."""

    changes: tuple[Change, ...]


@attrs.frozen
class Notice:
    """Something the user should know that is not an error of any link (a clock set back, say): for the log."""

    text: str


Command = Send | Dial | CloseLink | BindCoordinatorPort | ReleaseCoordinatorPort | ReadPeerRegistry | Deliver | Notice
