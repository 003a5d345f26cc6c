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
from collections.abc import Callable, Iterable
from typing import Any

from agent_comms import queries
from agent_comms.protocol.hlc import hlc_wall_ms
from agent_comms.protocol.ops import AgentUpsert, DirectMessage, Op, RoomMessage, op_id
from agent_comms.protocol.state import MeshState
from agent_comms.queries import SinceError, live_rooms, select_messages

__all__ = [
    "SinceError",
    "agent_rows",
    "author_of",
    "marked",
    "message_rows",
    "namesakes",
    "room_history",
    "room_rows",
    "select_messages",
    "shown_names",
]


def _name(state: MeshState, agent_id: str) -> str:
    entry = state.agents.get(agent_id)
    return agent_id if entry is None or entry.record is None else entry.body.name


#: The fewest characters of an id shown to tell agents of one name apart.
_SHORT_ID = 6


def shown_names(state: MeshState, also: Iterable[str] = ()) -> Callable[[str], str]:
    """How agents are named to a person (chat, web page, command line): by name, or ``name (short id)`` where
    agents share a name, so that two agents called alice never look the same.

    The agents that count are those online, and ``also`` (say, the authors of the messages shown). The short id is
    the shortest end of the id, at least six characters, that no other agent of that name shares (the agents
    table shows whole ids). An unknown agent is shown by its id.
    """
    ids_by_name: dict[str, set[str]] = {}
    for agent_id in {*(i for i, e in state.agents.items() if e.record is not None and e.online), *also}:
        entry = state.agents.get(agent_id)
        if entry is not None and entry.record is not None:
            ids_by_name.setdefault(entry.body.name, set()).add(agent_id)
    shorts: dict[str, str] = {}
    for ids in ids_by_name.values():
        if len(ids) > 1:
            shorts.update(_short_ids(ids))

    def shown(agent_id: str) -> str:
        name = _name(state, agent_id)
        if name == agent_id:
            return name
        short = shorts.get(agent_id)
        if short is None and len(ids_by_name.get(name, ())) > 0 and agent_id not in ids_by_name[name]:
            short = _short_ids({agent_id, *ids_by_name[name]})[agent_id]  # an agent out of view, of a name in it
        return name if short is None else f"{name} ({short})"

    return shown


def _short_ids(ids: set[str]) -> dict[str, str]:
    longest = max(len(agent_id) for agent_id in ids)
    for length in range(_SHORT_ID, longest + 1):
        ends = {agent_id: agent_id[-length:] for agent_id in ids}
        if len(set(ends.values())) == len(ids):
            return ends
    return {agent_id: agent_id for agent_id in ids}


def author_of(state: MeshState, message_id: str) -> str | None:
    """Who wrote the message ``message_id`` (``None``: no such message is held, or none is named)."""
    op = state.messages.get(message_id) if message_id else None
    return op.body.author if op is not None and isinstance(op.body, RoomMessage | DirectMessage) else None


def namesakes(state: MeshState, agent_id: str) -> list[str]:
    """The other online agents that bear ``agent_id``'s name, by id."""
    name = _name(state, agent_id)
    return sorted(
        other
        for other, entry in state.agents.items()
        if other != agent_id and entry.record is not None and entry.online and entry.body.name == name
    )


def marked(name: str, visibility: str) -> str:
    """``name``, marked ``[hidden]`` or ``[ghost]`` when the agent is not visible to other agents."""
    return name if visibility == "visible" else f"{name} [{visibility}]"


def _label(state: MeshState, agent_id: str, shown: Callable[[str], str]) -> str:
    entry = state.agents.get(agent_id)
    if entry is None or entry.record is None:
        return agent_id
    return marked(shown(agent_id), entry.body.visibility)


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
    shown = shown_names(state, also=(body.agent_id for body, _online in records) if everyone else ())
    for body, online in sorted(records, key=lambda item: (item[0].name.lower(), item[0].agent_id)):
        if not everyone and (not online or body.visibility != "visible"):
            continue
        rows.append(
            {
                "id": body.agent_id,
                "name": body.name,
                "label": shown(body.agent_id),
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
    shown = shown_names(state)
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
                "owner_label": _label(state, view.owner, shown),
                "member_labels": [_label(state, m, shown) for m in sorted(view.members)],
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
    authors = [op.body.author for op in messages if isinstance(op.body, RoomMessage)]
    shown = shown_names(state, also=authors)
    rows = []
    for op in messages:
        body = op.body
        assert isinstance(body, RoomMessage)
        millis = hlc_wall_ms(op.hlc)
        replied = author_of(state, body.reply_to)
        rows.append(
            {
                "id": op_id(op),
                "from": body.author,
                "from_name": _name(state, body.author),
                "content": body.content,
                "timestamp": millis,
                "reply_to": body.reply_to or None,
                "from_label": shown(body.author),
                "reply_to_label": None if replied is None else shown(replied),
                "time": dt.datetime.fromtimestamp(millis / 1000, dt.UTC).isoformat(timespec="milliseconds"),
            }
        )
    return rows
