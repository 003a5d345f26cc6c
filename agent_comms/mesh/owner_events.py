"""What the tasks of a :class:`~agent_comms.mesh.node.MeshNode` tell its owner task, one small class each.

Readers, listeners, dials, the coordinator bind and the alarm put these in the node's inbox; the owner takes them
in order and turns each into an input of the :class:`~agent_comms.protocol.peer.Peer`
(:meth:`~agent_comms.mesh.node.MeshNode._handle`, a ``match`` the type checker holds to every case).
"""

from __future__ import annotations

import attrs

from agent_comms.protocol.wire import Frame

from .network import Connection, Listener

__all__ = [
    "Accepted",
    "BindFailed",
    "Bound",
    "DialFailed",
    "FramesRead",
    "LinkEnded",
    "Opened",
    "OwnerEvent",
    "TimerDue",
]


@attrs.frozen
class FramesRead:
    """A reader decoded ``frames`` from link ``link_id`` (one read's worth, in order)."""

    link_id: int
    frames: list[Frame]


@attrs.frozen
class LinkEnded:
    """Link ``link_id``'s tasks ended (end of stream, a reset, a malformed frame, or closed on our side)."""

    link_id: int
    reason: str


@attrs.frozen
class Accepted:
    """A listener accepted ``conn`` (not yet known to the peer)."""

    conn: Connection


@attrs.frozen
class Opened:
    """The dial for link ``link_id`` connected."""

    link_id: int
    conn: Connection


@attrs.frozen
class DialFailed:
    """The dial for link ``link_id`` could not connect."""

    link_id: int
    reason: str


@attrs.frozen
class Bound:
    """The coordinator port is bound: ``listener`` listens on it."""

    listener: Listener


@attrs.frozen
class BindFailed:
    """Someone else holds the coordinator port."""


@attrs.frozen
class TimerDue:
    """The alarm rang: the peer's earliest deadline may have passed."""


OwnerEvent = FramesRead | LinkEnded | Accepted | Opened | DialFailed | Bound | BindFailed | TimerDue
