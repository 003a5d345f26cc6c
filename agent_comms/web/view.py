"""What the page shows, as JSON-ready data: built from the mesh's replicated state by the person's rules.

The page is redrawn from each snapshot (it never appends what a message says twice: every message is keyed by its
id), so a reconnection, or a restart of the server, cannot show anything twice.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from agent_comms import person
from agent_comms.protocol.hlc import hlc_wall_ms
from agent_comms.protocol.ops import DirectMessage, Op, RoomMessage, op_id, op_key
from agent_comms.protocol.rooms import RoomView
from agent_comms.views import shown_names

if TYPE_CHECKING:
    from agent_comms.store import MeshStore

__all__ = ["snapshot"]

#: The newest direct messages kept per partner in a snapshot.
DM_LIMIT = 200


def snapshot(store: MeshStore, me: str, activity: list[dict[str, Any]]) -> dict[str, Any]:
    """Everything the page shows now: the person, the agents, the rooms, the conversations, the activity lines."""
    record = store.record(me)
    rooms = person.rooms(store, me)
    return {
        "type": "state",
        "me": {
            "id": me,
            "name": me if record is None else record.name,
            "status": "offline" if record is None else record.status,
        },
        "agents": _agents(store, me),
        "rooms": [_room(store, me, room_id, view) for room_id, view in rooms],
        "conversations": [
            *(_room_conversation(store, me, room_id, view) for room_id, view in rooms if me in view.members),
            *_dm_conversations(store, me),
        ],
        "activity": activity,
    }


def _agents(store: MeshStore, me: str) -> list[dict[str, Any]]:
    rows: list[dict[str, Any]] = []
    for body, online in person.others(store, me, offline=True):
        rows.append(
            {
                "id": body.agent_id,
                "name": _name(store, body.agent_id),
                "harness": body.harness,
                "status": body.status if online else "offline",
                "online": online,
                "cwd": body.cwd,
                "rooms": store.rooms_of(body.agent_id, viewer=me),
            }
        )
    rows.sort(key=lambda row: (not row["online"], row["name"].lower(), row["id"]))
    return rows


def _room(store: MeshStore, me: str, room_id: str, view: RoomView) -> dict[str, Any]:
    return {
        "name": view.name,
        "id": room_id,
        "type": view.room_type,
        "description": view.description,
        "owner": view.owner,
        "mine": view.owner == me,
        "joined": me in view.members,
        "invited": me in view.invited,
        "members": [{"id": m, "name": _name(store, m)} for m in person.seen_members(store, view, me)],
    }


def _name(store: MeshStore, agent_id: str) -> str:
    """The agent's name as the person sees it (``name (short id)`` where agents share it, as in ``chat``)."""
    return shown_names(store.state, also=(agent_id,))(agent_id)


def _message(store: MeshStore, me: str, op: Op, readers: list[str]) -> dict[str, Any]:
    body = op.body
    assert isinstance(body, RoomMessage | DirectMessage)
    message_id = op_id(op)
    row: dict[str, Any] = {
        "id": message_id,
        "from": body.author,
        "from_name": _name(store, body.author),
        "content": body.content,
        "time": hlc_wall_ms(op.hlc),
        "reply_to": body.reply_to or None,
        "mine": body.author == me,
    }
    if body.author == me:
        statuses = [store.state.receipt_status(message_id, reader) for reader in readers if reader != me]
        row["delivered"] = sum(1 for s in statuses if s in ("delivered", "read"))
        row["read"] = sum(1 for s in statuses if s == "read")
        row["readers"] = len(statuses)
    return row


def _room_conversation(store: MeshStore, me: str, room_id: str, view: RoomView) -> dict[str, Any]:
    readers = person.seen_members(store, view, me)
    return {
        "key": f"#{view.name}",
        "kind": "room",
        "name": view.name,
        "messages": [_message(store, me, op, readers) for op in store.history(room_id)],
    }


def _dm_conversations(store: MeshStore, me: str) -> list[dict[str, Any]]:
    state = store.state
    by_partner: dict[str, list[Op]] = {}
    for op in state.messages.values():
        body = op.body
        if not isinstance(body, DirectMessage) or me not in (body.author, body.recipient):
            continue
        if not state.message_visible(op):
            continue
        partner = body.recipient if body.author == me else body.author
        by_partner.setdefault(partner, []).append(op)
    conversations: list[dict[str, Any]] = []
    for partner, ops in by_partner.items():
        ops.sort(key=op_key)
        conversations.append(
            {
                "key": f"@{partner}",
                "kind": "dm",
                "name": _name(store, partner),
                "partner": partner,
                "messages": [_message(store, me, op, [partner]) for op in ops[-DM_LIMIT:]],
            }
        )
    conversations.sort(key=lambda c: c["name"].lower())
    return conversations
