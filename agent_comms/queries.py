"""Questions asked of the replicated state: which rooms are live, what a room holds, what came after ``since``.

Pure functions of a :class:`~agent_comms.protocol.state.MeshState`, shared by the agents' side
(:class:`~agent_comms.store.MeshStore`, the tool) and the person's command line (:mod:`agent_comms.views`), so a
room and its history read the same through both. Who may see what is not decided here
(:mod:`agent_comms.visibility` narrows these answers for an agent).
"""

from __future__ import annotations

import datetime as dt

from agent_comms.protocol.hlc import hlc_wall_ms
from agent_comms.protocol.ops import Op, op_id
from agent_comms.protocol.rooms import RoomView
from agent_comms.protocol.state import MeshState

__all__ = ["SinceError", "live_rooms", "messages_after", "room_history", "select_messages"]


class SinceError(ValueError):
    """``since`` is neither a message id of the room, nor epoch milliseconds, nor an ISO 8601 time.

    ``since`` holds the value as given; callers word the complaint for their audience (the tool's parameter, the
    command line's option).
    """

    def __init__(self, since: str) -> None:
        super().__init__(
            f"{since!r} is neither a message id of this room, nor epoch milliseconds, nor an ISO 8601 time"
        )
        self.since = since


def live_rooms(state: MeshState) -> list[tuple[str, RoomView]]:
    """Every live room as ``(room id, view)``, by name."""
    found = []
    for name in sorted(state.room_names):
        view = state.room(name)
        room_id = state.room_id(name)
        if view is not None and room_id is not None:
            found.append((room_id, view))
    return found


def room_history(state: MeshState, room_id: str) -> list[Op]:
    """The visible messages of a room, oldest first (within the kept history)."""
    return state.room_messages(room_id)


def messages_after(messages: list[Op], since: str | int) -> list[Op]:
    """The messages (oldest first) after ``since``: a message id of the list, epoch milliseconds (a number or its
    digits), or an ISO 8601 time (UTC unless it says otherwise). Raises :class:`SinceError`."""
    if isinstance(since, int):
        threshold = since
    else:
        for index, op in enumerate(messages):
            if op_id(op) == since:
                return messages[index + 1 :]
        threshold = _millis(since)
    return [op for op in messages if hlc_wall_ms(op.hlc) > threshold]


def select_messages(messages: list[Op], *, since: str | int | None = None, limit: int | None = None) -> list[Op]:
    """Narrow ``messages`` (oldest first): those after ``since`` (:func:`messages_after`), then the newest
    ``limit`` of them. Raises :class:`SinceError`."""
    if since is not None:
        messages = messages_after(messages, since)
    if limit is not None:
        messages = messages[-limit:] if limit > 0 else []
    return messages


def _millis(since: str) -> int:
    """Epoch milliseconds of a time given as digits or in ISO 8601."""
    text = since.strip()
    if text.isascii() and text.isdigit():
        return int(text)
    try:
        when = dt.datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        raise SinceError(since) from None
    if when.tzinfo is None:
        when = when.replace(tzinfo=dt.UTC)
    return int(when.timestamp() * 1000)
