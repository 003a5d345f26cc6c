"""Replicated operations: the only way the shared mesh state changes.

Every change is an :class:`Op`: an envelope (origin peer, per-origin sequence number, HLC stamp) around one body.
Bodies are frozen msgspec Structs in one tagged union. ``(origin, seq)`` identifies an operation uniquely;
``(hlc, origin, seq)`` orders all operations totally and deterministically (see :func:`op_key`).

Schema evolution: every struct here is ``array_like`` (compact and fast); a new field must be appended at the end
of its struct with a default, so that older peers keep decoding (they ignore trailing fields they do not know) and
newer peers decode older frames (the default fills the gap).
"""

from __future__ import annotations

from typing import Final, Literal

import msgspec

__all__ = [
    "ACTIONS_BY_OWNER",
    "AgentStatus",
    "AgentSuspect",
    "AgentUpsert",
    "Body",
    "DirectMessage",
    "Mark",
    "MarkRanges",
    "Membership",
    "MembershipAction",
    "Op",
    "OpKey",
    "Receipt",
    "ReceiptStatus",
    "RoomCreate",
    "RoomMessage",
    "RoomType",
    "StreamingBehavior",
    "Visibility",
    "dm_conversation",
    "dm_parties",
    "message_conversation",
    "op_id",
    "op_key",
]

Visibility = Literal["visible", "hidden", "ghost"]
AgentStatus = Literal["active", "idle", "busy"]
RoomType = Literal["public", "private", "secret"]
StreamingBehavior = Literal["steer", "followUp", "info"]
MembershipAction = Literal["join", "leave", "invite", "kick", "decline", "destroy"]
ReceiptStatus = Literal["delivered", "read"]

#: Membership actions that only the room's owner may take.
ACTIONS_BY_OWNER: Final[frozenset[MembershipAction]] = frozenset({"invite", "kick", "destroy"})

OpKey = tuple[int, str, int]
"""The total order of operations: ``(hlc, origin, seq)``."""


class AgentUpsert(msgspec.Struct, frozen=True, array_like=True, tag="agent"):
    """The whole record of one agent, as its hosting peer last wrote it.

    An agent's *claim* is ``(incarnation, peer_id)``: the peer that hosts it and the HLC stamp at which that peer
    took it over. ``version`` counts the host's updates within one claim. Records merge last-writer-wins by
    ``(incarnation, peer_id, version)``; a record is only accepted from the peer it names (``peer_id == origin``).
    """

    agent_id: str
    peer_id: str
    incarnation: int
    version: int
    name: str
    harness: str
    cwd: str
    pid: int
    process_start: float
    visibility: Visibility = "visible"
    status: AgentStatus = "active"
    tags: tuple[str, ...] = ()
    online: bool = True


class AgentSuspect(msgspec.Struct, frozen=True, array_like=True, tag="suspect"):
    """A failure detector's verdict: the agent's claim ``(incarnation, peer_id)`` is offline.

    Any peer may say this (it is how a dead host's agents go offline); the host refutes a false verdict by claiming
    again with a higher incarnation.
    """

    agent_id: str
    incarnation: int
    peer_id: str


class RoomCreate(msgspec.Struct, frozen=True, array_like=True, tag="room"):
    """An agent creates a room instance. ``room_id`` is unique; ``name`` is what people type."""

    room_id: str
    name: str
    room_type: RoomType
    description: str
    author: str
    author_inc: int


class Membership(msgspec.Struct, frozen=True, array_like=True, tag="member"):
    """One change to a room's membership, authored by ``author``.

    ``subject`` is the agent acted on: the author itself for join, leave and decline; the invitee or the kicked
    agent for invite and kick; empty for destroy. Whether the change takes effect is decided by the room's fold
    (:mod:`agent_comms.protocol.rooms`), never by the order in which peers received it.
    """

    room_id: str
    action: MembershipAction
    author: str
    author_inc: int
    subject: str = ""
    reason: str = ""


class RoomMessage(msgspec.Struct, frozen=True, array_like=True, tag="msg"):
    """A message posted to a room by ``author``.

    ``n`` is its origin's count of the messages it made in this conversation (1, 2, 3, ...), stamped by
    :meth:`~.replica.Replica.make`: what a :class:`Mark` names it by. ``0`` for a message of protocol version 1.
    """

    room_id: str
    author: str
    author_inc: int
    content: str
    reply_to: str = ""
    streaming: StreamingBehavior = "info"
    n: int = 0


class DirectMessage(msgspec.Struct, frozen=True, array_like=True, tag="dm"):
    """A direct message from ``author`` to ``recipient``. ``n`` numbers it as :class:`RoomMessage` does."""

    author: str
    author_inc: int
    recipient: str
    content: str
    reply_to: str = ""
    streaming: StreamingBehavior = "steer"
    n: int = 0


class Receipt(msgspec.Struct, frozen=True, array_like=True, tag="receipt"):
    """``recipient``'s bridge reports that message ``message_id`` was delivered to it, or shown to its model.

    ``conversation`` and ``message_key`` locate the message even before it arrives, so a receipt is pruned
    together with its message by the same deterministic rule. Protocol version 1: no longer made (a :class:`Mark`
    replaces it), still applied as it comes (a hub keeps older operations).
    """

    message_id: str
    conversation: str
    message_key: tuple[int, str, int]
    recipient: str
    recipient_inc: int
    status: ReceiptStatus


MarkRanges = dict[str, tuple[int, ...]]
"""Per origin peer, inclusive ranges of message numbers ``n`` as flat bounds: ``(lo1, hi1, lo2, hi2, ...)``."""


class Mark(msgspec.Struct, frozen=True, array_like=True, tag="mark"):
    """A progress marker: ``recipient``, under its claim ``recipient_inc``, has been ``status`` (``read`` implies
    ``delivered``) every message of ``conversation`` made by ``origin`` whose number ``n`` lies in one of that
    origin's ``ranges``.

    Cumulative: it states everything its issuer (the recipient's host, the operation's origin) knows to be covered
    for the recipient and conversation, so a newer marker from the same issuer replaces the older one. Ranges are
    ascending, disjoint and not adjacent (``lo >= 1``, ``lo <= hi``, a gap of at least one number between two).
    """

    conversation: str
    recipient: str
    recipient_inc: int
    status: ReceiptStatus
    ranges: MarkRanges


AGENT_AUTHORED = (RoomCreate, Membership, RoomMessage, DirectMessage)
"""Bodies acting as an agent; each names the agent (``author``) and the claim it acts under (``author_inc``)."""

Body = AgentUpsert | AgentSuspect | RoomCreate | Membership | RoomMessage | DirectMessage | Receipt | Mark


class Op(msgspec.Struct, frozen=True, array_like=True):
    """An operation: who made it (``origin`` peer, its ``seq``), when (``hlc``), and what (``body``)."""

    origin: str
    seq: int
    hlc: int
    body: Body


def op_key(op: Op) -> OpKey:
    """The deterministic total order of operations."""
    return (op.hlc, op.origin, op.seq)


def op_id(op: Op) -> str:
    """The stable, unique id of an operation (used as message id and room id)."""
    return f"{op.origin}-{op.seq}"


def message_conversation(body: RoomMessage | DirectMessage) -> str:
    """The conversation a message belongs to: its room instance, or :func:`dm_conversation` of its two parties."""
    if isinstance(body, DirectMessage):
        return dm_conversation(body.author, body.recipient)
    return body.room_id


def dm_conversation(a: str, b: str) -> str:
    """The conversation key of the direct messages between agents ``a`` and ``b`` (order-independent).

    The first id is length-prefixed, so no two pairs share a key whatever characters the ids contain.
    """
    first, second = (a, b) if a <= b else (b, a)
    return f"dm:{len(first)}:{first}|{second}"


def dm_parties(conversation: str) -> tuple[str, str]:
    """The two agents of a :func:`dm_conversation` key."""
    length, rest = conversation[3:].split(":", 1)
    size = int(length)
    return rest[:size], rest[size + 1 :]
