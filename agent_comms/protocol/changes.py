"""What applying an operation changed, as facts the runtime turns into delivery events.

:meth:`MeshState.apply <agent_comms.protocol.state.MeshState.apply>` returns a list of these. They describe the
replicated state, not any one agent's inbox: deciding who is told what (and formatting it) happens above the
protocol layer.
"""

from __future__ import annotations

import attrs

from .ops import AgentUpsert, Op, ReceiptStatus
from .rooms import RoomChange

__all__ = [
    "AgentChanged",
    "Change",
    "MarkAdvanced",
    "MessageAdded",
    "MessageEvicted",
    "ReceiptAdvanced",
    "RoomChanged",
]


@attrs.frozen
class AgentChanged:
    """An agent's visible record or its online state changed. ``previous`` is ``None`` for a new agent."""

    agent_id: str
    record: AgentUpsert
    online: bool
    previous: AgentUpsert | None
    was_online: bool


@attrs.frozen
class RoomChanged:
    """Something happened in the room ``room_id`` (called ``name``; the id of its first instance when concurrent
    creations merged)."""

    room_id: str
    name: str
    change: RoomChange


@attrs.frozen
class MessageAdded:
    """A room message or a direct message was added to its conversation and is visible."""

    op: Op
    conversation: str


@attrs.frozen
class MessageEvicted:
    """A message fell out of its bounded history. ``reached`` is whether a direct message's recipient had
    received it (its ``delivered`` coverage, or any receipt) by then;
    a DM that never reached its recipient is lost, and its sender is told."""

    op: Op
    reached: bool


@attrs.frozen
class ReceiptAdvanced:
    """``recipient``'s receipt for ``message_id`` reached ``status`` (a :class:`~.ops.Receipt` of protocol
    version 1 applied)."""

    message_id: str
    recipient: str
    status: ReceiptStatus
    op: Op


@attrs.frozen
class MarkAdvanced:
    """``recipient``'s effective ``status`` coverage of ``conversation`` grew (a :class:`~.ops.Mark` applied):
    ``ranges`` holds, per origin, the newly covered message numbers as inclusive ``(lo, hi)`` ranges."""

    conversation: str
    recipient: str
    status: ReceiptStatus
    ranges: dict[str, tuple[tuple[int, int], ...]]
    op: Op


Change = AgentChanged | RoomChanged | MessageAdded | MessageEvicted | ReceiptAdvanced | MarkAdvanced
