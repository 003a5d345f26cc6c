"""Delivery events: what an agent is told, one line each for the model.

Every event has a stable ``id`` (a message's events are named after the message), so a bridge can show each event
exactly once even when it is delivered again after a restart. ``actionable`` events (direct messages, room
messages, invites) are the ones a bridge should push at once; the others are informational and can be batched.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Final, Literal

import msgspec

from agent_comms.display import display

__all__ = [
    "ACTIONABLE",
    "EVENT_TYPES",
    "RECEIPT_NAMES_UP_TO",
    "DeliveryEvent",
    "EventType",
    "Member",
    "format_delivery_event",
    "format_events",
]

EventType = Literal[
    "room_message",
    "dm",
    "room_invite",
    "invite_declined",
    "member_joined",
    "member_left",
    "room_members",
    "member_status",
    "member_kicked",
    "room_destroyed",
    "delivery_status",
]

EVENT_TYPES: Final = frozenset(EventType.__args__)  # type: ignore[attr-defined]
#: Event types a bridge should bring to the model's attention right away.
ACTIONABLE: Final = frozenset({"dm", "room_message", "room_invite"})

_PREVIEW: Final = 40
#: A receipt line names the recipients of a message up to this many; beyond, it counts them ("read by 3 of 7").
RECEIPT_NAMES_UP_TO: Final = 4


class Member(msgspec.Struct, frozen=True, array_like=True):
    """Who is in a room, for ``room_members``."""

    id: str
    name: str
    status: str


class DeliveryEvent(msgspec.Struct, frozen=True, kw_only=True):
    """One thing that happened that an agent should know about."""

    id: str
    type: EventType
    #: the agent this event is for
    to: str
    #: who caused it (message author, inviter, the agent that joined, the reader of a receipt...)
    sender: str = ""
    sender_name: str = ""
    room: str = ""
    room_id: str = ""
    content: str = ""
    message_id: str = ""
    reply_to: str = ""
    #: milliseconds since the epoch
    timestamp: int = 0
    streaming: str = "info"
    #: for delivery_status: delivered / read / dropped; for member_status: the new status
    status: str = ""
    #: for member_status: the status before
    previous: str = ""
    reason: str = ""
    #: the agent acted on (the kicked agent, for member_kicked)
    subject: str = ""
    subject_name: str = ""
    #: for room_members: who is in the room; for delivery_status: where the message stands for each recipient
    #: the sender may see (``sent``, ``delivered`` or ``read``), when the receipt was planned
    members: tuple[Member, ...] = ()

    @property
    def actionable(self) -> bool:
        """Whether a bridge should push this now (rather than batch it with other informational events)."""
        return self.type in ACTIONABLE


def _who(agent_id: str, name: str) -> str:
    label = f"{name} ({agent_id})" if name and name != agent_id else agent_id
    return display(label, inline=True)


def _preview(text: str) -> str:
    flat = " ".join(text.split())
    flat = flat if len(flat) <= _PREVIEW else flat[: _PREVIEW - 1] + "…"
    return display(flat, inline=True)


def format_delivery_event(event: DeliveryEvent) -> str:
    """One readable line: names the sender; for room messages and DMs it contains the message text.

    What other agents chose is shown through :func:`agent_comms.display.display`: control characters escaped, and
    each further line of a multi-line message or reason starts with ``"  | "``, so it cannot pass for an event.
    """
    who = _who(event.sender, event.sender_name)
    room = "#" + display(event.room, inline=True)
    kind = event.type
    message_id = display(event.message_id, inline=True)
    reason = f": {display(event.reason)}" if event.reason else ""
    if kind in ("dm", "room_message"):
        reply = f" (reply to {display(event.reply_to, inline=True)})" if event.reply_to else ""
        content = display(event.content)
        if kind == "dm":
            return f"[DM from {who}]{reply} {content}  [id {message_id}]"
        return f"[{room}] {who}{reply}: {content}  [id {message_id}]"
    if kind == "room_invite":
        return f"[{room}] {who} invited you; join_room to accept or decline_invite to refuse"
    if kind == "invite_declined":
        return f"[{room}] {who} declined your invite{reason}"
    if kind == "member_joined":
        return f"[{room}] {who} joined"
    if kind == "member_left":
        return f"[{room}] {who} left"
    if kind == "room_members":
        members = (
            ", ".join(f"{_who(m.id, m.name)} [{display(m.status, inline=True)}]" for m in event.members)
            or "nobody else"
        )
        return f"[{room}] you joined (via {who}); members: {members}"
    if kind == "member_status":
        return f"[{room}] {who} is now {display(event.status, inline=True)}"
    if kind == "member_kicked":
        target = "you were" if event.subject == event.to else f"{_who(event.subject, event.subject_name)} was"
        return f"[{room}] {target} kicked by {who}{reason}"
    if kind == "room_destroyed":
        return f"[{room}] the room was destroyed by {who}"
    # delivery_status
    if event.status == "dropped":
        return f"your message {message_id} to {who} was dropped undelivered{reason}"
    states = event.members or (Member(event.sender, event.sender_name, event.status),)
    return f'your message {message_id} "{_preview(event.content)}": {_receipt_summary(states)}'


def _receipt_summary(states: tuple[Member, ...]) -> str:
    """Where a message stands: ``read by bob, carol; delivered to dave`` (names up to :data:`RECEIPT_NAMES_UP_TO`
    recipients, counts beyond: ``read by 3 of 7; delivered to 2``)."""
    names = [m.name or m.id for m in states]
    labels = [
        _who(m.id, m.name) if names.count(m.name or m.id) > 1 else display(m.name or m.id, inline=True) for m in states
    ]
    read = [label for label, m in zip(labels, states, strict=True) if m.status == "read"]
    delivered = [label for label, m in zip(labels, states, strict=True) if m.status == "delivered"]
    if len(states) > RECEIPT_NAMES_UP_TO:
        parts = [f"read by {len(read)} of {len(states)}"] if read else []
        if delivered:
            parts.append(f"delivered to {len(delivered)}" + ("" if read else f" of {len(states)}"))
        return "; ".join(parts) or f"sent to {len(states)}"
    parts = ([f"read by {', '.join(read)}"] if read else []) + (
        [f"delivered to {', '.join(delivered)}"] if delivered else []
    )
    return "; ".join(parts) or "sent"


def format_events(events: Sequence[DeliveryEvent]) -> list[str]:
    """The lines a model is shown for ``events`` (a batch a bridge shows at once), in order: the one place that
    decides what of the events reaches a model.

    - The receipts of one message (``delivery_status`` events, one per recipient and state) become one line, where
      the last of them stood: the message's state then (``read by bob, carol; delivered to dave``); a state
      superseded within the batch (delivered, then read) is not shown. A ``dropped`` note stays a line of its own.
    - The status changes of one agent (``member_status``, one per shared room) become one line naming the rooms,
      where the last of them stood; an agent back to its status of before the batch (offline, then online again)
      is not shown at all.

    Everything else is one line per event (:func:`format_delivery_event`). The events themselves are not changed:
    bridges that want per-recipient detail read them.
    """
    last_receipt: dict[str, int] = {}
    statuses: dict[str, list[int]] = {}
    for index, event in enumerate(events):
        if event.type == "delivery_status" and event.status != "dropped":
            last_receipt[event.message_id] = index
        elif event.type == "member_status":
            statuses.setdefault(event.sender, []).append(index)
    lines: list[str] = []
    for index, event in enumerate(events):
        if event.type == "delivery_status" and event.status != "dropped":
            if last_receipt[event.message_id] == index:
                lines.append(format_delivery_event(event))
        elif event.type == "member_status":
            indices = statuses[event.sender]
            if indices[-1] == index:
                line = _status_line([events[i] for i in indices])
                if line is not None:
                    lines.append(line)
        else:
            lines.append(format_delivery_event(event))
    return lines


def _status_line(events: list[DeliveryEvent]) -> str | None:
    """One line for the status changes of one agent, or ``None`` if it ended where it started."""
    first, last = events[0], events[-1]
    if first.previous and first.previous == last.status:
        return None
    rooms: list[str] = []
    for event in events:
        if event.room not in rooms:
            rooms.append(event.room)
    if len(rooms) == 1:
        return format_delivery_event(last)
    shown = ", ".join("#" + display(room, inline=True) for room in rooms)
    return f"[{shown}] {_who(last.sender, last.sender_name)} is now {display(last.status, inline=True)}"
