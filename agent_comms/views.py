"""What the command line shows of the replicated state: agents, rooms and a room's messages, as plain data.

Pure functions of a :class:`~agent_comms.protocol.state.MeshState` (an observer's copy or a peer's own replica).
The dictionaries are the ``--json`` shapes of ``agent-comms agents``, ``rooms`` and ``read`` (DESIGN 2.6): the keys
named there are relied on by scripts; the others are extras. Which rooms are live, a room's history and ``since``
are asked of :mod:`agent_comms.queries`, like the tool does (its :class:`SinceError` and :func:`select_messages` are
re-exported here for the command line).

The command line serves the person who owns the mesh (whoever can read the mesh key can read everything anyway),
so rooms of every type are shown, with their hidden and ghost members marked (``member_labels``, ``owner_label``);
agents are filtered like the tool's ``list_agents`` unless ``everyone`` is set. The visibility rules for agents are
in :mod:`agent_comms.visibility`; the command line observes without being an agent, so they do not bind it.
"""

from __future__ import annotations

import datetime as dt
from typing import Any

from agent_comms import queries
from agent_comms.protocol.hlc import hlc_wall_ms
from agent_comms.protocol.ops import AgentUpsert, Op, RoomMessage, op_id
from agent_comms.protocol.state import MeshState
from agent_comms.queries import SinceError, live_rooms, select_messages

__all__ = [
    "SinceError",
    "agent_rows",
    "marked",
    "message_rows",
    "room_history",
    "room_rows",
    "select_messages",
]


def _name(state: MeshState, agent_id: str) -> str:
    entry = state.agents.get(agent_id)
    return agent_id if entry is None or entry.record is None else entry.body.name


def marked(name: str, visibility: str) -> str:
    """``name``, marked ``[hidden]`` or ``[ghost]`` when the agent is not visible to other agents."""
    return name if visibility == "visible" else f"{name} [{visibility}]"


def _label(state: MeshState, agent_id: str) -> str:
    entry = state.agents.get(agent_id)
    if entry is None or entry.record is None:
        return agent_id
    return marked(entry.body.name, entry.body.visibility)


def agent_rows(state: MeshState, *, everyone: bool = False) -> list[dict[str, Any]]:
    """Agents by name: online and visible ones (``everyone``: also offline, hidden and ghost agents).

    ``status`` is the agent's own status (active, idle, busy), or ``offline``.
    """
    rooms_of: dict[str, list[str]] = {}
    for _room_id, view in live_rooms(state):
        for member in view.members:
            rooms_of.setdefault(member, []).append(view.name)
    records: list[tuple[AgentUpsert, bool]] = [
        (entry.body, entry.online) for entry in state.agents.values() if entry.record is not None
    ]
    rows = []
    for body, online in sorted(records, key=lambda item: (item[0].name.lower(), item[0].agent_id)):
        if not everyone and (not online or body.visibility != "visible"):
            continue
        rows.append(
            {
                "id": body.agent_id,
                "name": body.name,
                "harness": body.harness,
                "status": body.status if online else "offline",
                "visibility": body.visibility,
                "cwd": body.cwd,
                "rooms": rooms_of.get(body.agent_id, []),
                "online": online,
                "tags": list(body.tags),
                "peer_id": body.peer_id,
                "pid": body.pid,
            }
        )
    return rows


def room_rows(state: MeshState) -> list[dict[str, Any]]:
    """Every live room by name, of every type."""
    rows = []
    for room_id, view in live_rooms(state):
        messages = len(state.room_messages(room_id))
        rows.append(
            {
                "name": view.name,
                "type": view.room_type,
                "owner": view.owner,
                "description": view.description,
                "members": sorted(view.members),
                "id": room_id,
                "owner_name": _name(state, view.owner),
                "member_names": [_name(state, m) for m in sorted(view.members)],
                "owner_label": _label(state, view.owner),
                "member_labels": [_label(state, m) for m in sorted(view.members)],
                "invited": sorted(view.invited),
                "messages": messages,
            }
        )
    return rows


def room_history(state: MeshState, name: str) -> list[Op] | None:
    """The visible messages of the live room ``name``, oldest first (``None``: no such room)."""
    room_id = state.room_id(name)
    return None if room_id is None else queries.room_history(state, room_id)


def message_rows(state: MeshState, messages: list[Op]) -> list[dict[str, Any]]:
    """The ``read --json`` shape of room messages (``timestamp``: epoch milliseconds; ``time``: ISO 8601, UTC)."""
    rows = []
    for op in messages:
        body = op.body
        assert isinstance(body, RoomMessage)
        millis = hlc_wall_ms(op.hlc)
        rows.append(
            {
                "id": op_id(op),
                "from": body.author,
                "from_name": _name(state, body.author),
                "content": body.content,
                "timestamp": millis,
                "reply_to": body.reply_to or None,
                "time": dt.datetime.fromtimestamp(millis / 1000, dt.UTC).isoformat(timespec="milliseconds"),
            }
        )
    return rows
