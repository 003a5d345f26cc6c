"""The agent-facing view of one mesh node: agents, rooms and messages, and each hosted agent's deliveries.

:class:`MeshStore` reads the replicated state of its node and makes operations on behalf of the agents the node
hosts. It also turns the node's state changes into :class:`~agent_comms.events.DeliveryEvent` objects for those
agents and keeps the honest receipts:

* ``delivered`` is reported when a message has reached the recipient's bridge (this store queued it);
* ``read`` when the bridge says it showed it to the model (:meth:`MeshStore.mark_read`: a push that succeeded, or
  a drain into a tool result). Nothing is reported for a message that went nowhere.

Each hosted agent's events wait in its :class:`~agent_comms.inbox.Inbox` (:meth:`MeshStore.inbox`), which every
bridge takes them from and settles or gives them back through.

An agent whose bridge was down gets, when an agent with its identity is hosted again, every message addressed to
it that it has not read (direct messages, and room messages from when it was a member), oldest first, once.
"""

from __future__ import annotations

import collections
import time
from collections.abc import Callable, Iterable
from typing import Final, Literal

import msgspec

from agent_comms.display import display
from agent_comms.events import DeliveryEvent, EventType, Member
from agent_comms.mesh.node import MeshNode
from agent_comms.protocol.changes import (
    AgentChanged,
    Change,
    MessageAdded,
    MessageEvicted,
    ReceiptAdvanced,
    RoomChanged,
)
from agent_comms.protocol.fields import InvalidField, check_body
from agent_comms.protocol.hlc import hlc_wall_ms
from agent_comms.protocol.ops import (
    AgentUpsert,
    Body,
    DirectMessage,
    Membership,
    MembershipAction,
    Op,
    OpKey,
    Receipt,
    RoomCreate,
    RoomMessage,
    RoomType,
    StreamingBehavior,
    dm_conversation,
    op_id,
    op_key,
)
from agent_comms.protocol.rooms import RoomView
from agent_comms.protocol.state import MeshState

from . import queries, visibility
from .errors import CommsError, ErrorCode
from .inbox import Inbox

__all__ = ["DeliveryCallback", "MeshStore"]

DeliveryCallback = Callable[[DeliveryEvent], None]
"""Called synchronously with every event for a hosted agent, as it is queued."""

#: Fields of operations -> the tool parameters they come from (a field not listed has its parameter's name).
_PARAMETER: Final = {
    ("RoomCreate", "name"): "room",
    ("RoomCreate", "room_type"): "type",
    ("Membership", "room_id"): "room",
    ("Membership", "subject"): "agent",
    ("RoomMessage", "room_id"): "target",
    ("RoomMessage", "reply_to"): "replyTo",
    ("RoomMessage", "streaming"): "streamingBehavior",
    ("DirectMessage", "recipient"): "target",
    ("DirectMessage", "reply_to"): "replyTo",
    ("DirectMessage", "streaming"): "streamingBehavior",
}

#: Events kept per hosted agent until its bridge takes them; the oldest go first when full.
INBOX_LIMIT: Final = 1000
_SEEN_LIMIT: Final = 20_000


class MeshStore:
    """Agents, rooms and deliveries over one :class:`~agent_comms.mesh.node.MeshNode`."""

    def __init__(self, node: MeshNode, *, inbox_limit: int = INBOX_LIMIT) -> None:
        self.node = node
        self.inbox_limit = inbox_limit
        self._inboxes: dict[str, Inbox] = {}
        self._seen: dict[str, collections.OrderedDict[str, None]] = {}
        self._callbacks: list[DeliveryCallback] = []
        node.add_listener(self._on_changes)

    # ------------------------------------------------------------------ reading the mesh

    @property
    def state(self) -> MeshState:
        """The replicated state (read-only by convention)."""
        return self.node.peer.replica.state

    def is_hosted(self, agent_id: str) -> bool:
        """Whether this store's node hosts the agent."""
        return agent_id in self.node.peer.hosted

    def record(self, agent_id: str) -> AgentUpsert | None:
        """The agent's current record, if known."""
        entry = self.state.agents.get(agent_id)
        return None if entry is None or entry.record is None else entry.body

    def online(self, agent_id: str) -> bool:
        """Whether the agent is online."""
        entry = self.state.agents.get(agent_id)
        return entry is not None and entry.online

    def label(self, agent_id: str) -> str:
        """``name (id)`` for results and events, as it may be shown (:func:`~agent_comms.display.display`)."""
        record = self.record(agent_id)
        return display(agent_id if record is None else f"{record.name} ({agent_id})", inline=True)

    def agents(self) -> list[tuple[AgentUpsert, bool]]:
        """Every agent with a record, with its online state, by name."""
        found = [(e.body, e.online) for e in self.state.agents.values() if e.record is not None]
        return sorted(found, key=lambda item: (item[0].name.lower(), item[0].agent_id))

    def find_agent(self, ref: str, *, viewer: str | None = None, allow_ghost: bool = False) -> AgentUpsert:
        """An agent named by id or by name, as ``viewer`` may name it (:func:`~agent_comms.visibility.addressable`).

        ``viewer=None`` (the person's command line) finds every agent. ``allow_ghost``: a ghost may be found by
        id (the caller narrows it further). What ``viewer`` may not name answers exactly as an unknown agent:
        ``AGENT_NOT_FOUND``. Several online agents with that name is ``INVALID_PARAMS`` (use the id).
        """

        rooms = {} if viewer is None else dict(self.rooms(viewer=viewer))

        def may(body: AgentUpsert, by_id: bool) -> bool:
            if viewer is None:
                return True
            return visibility.addressable(body, by_id=by_id, viewer=viewer, rooms=rooms, include_ghosts=allow_ghost)

        entry = self.state.agents.get(ref)
        if entry is not None and entry.record is not None and may(entry.body, True):
            return entry.body
        matches = [(body, online) for body, online in self.agents() if body.name == ref and may(body, False)]
        if not matches:
            raise CommsError(ErrorCode.AGENT_NOT_FOUND, f"no agent named or with id {ref!r}")
        live = [m for m in matches if m[1]] or matches
        if len(live) > 1:
            ids = ", ".join(body.agent_id for body, _ in live)
            raise CommsError(ErrorCode.INVALID_PARAMS, f"several agents are called {ref!r} ({ids}); use the id")
        return live[0][0]

    def room(self, name: str, *, viewer: str) -> tuple[str, RoomView]:
        """The live room called ``name`` as ``viewer`` may see it (a secret room only to its members)."""
        room_id = self.state.room_id(name)
        view = self.state.room(name)
        if room_id is None or view is None or not visibility.room_discoverable(view, viewer):
            raise CommsError(ErrorCode.ROOM_NOT_FOUND, f"no room #{name}")
        return room_id, view

    def rooms(self, *, viewer: str | None) -> list[tuple[str, RoomView]]:
        """Live rooms ``viewer`` may see (``None``: every room, for the CLI), by name."""
        rooms = queries.live_rooms(self.state)
        if viewer is None:
            return rooms
        return [(room_id, view) for room_id, view in rooms if visibility.room_discoverable(view, viewer)]

    def history(self, room_id: str) -> list[Op]:
        """The visible messages of a room, oldest first (within the kept history)."""
        return queries.room_history(self.state, room_id)

    def rooms_of(self, agent_id: str, *, viewer: str | None = None) -> list[str]:
        """Names of the live rooms the agent is a member of, as ``viewer`` may see them (``None``: all of them)."""
        return [
            view.name
            for _room_id, view in self.rooms(viewer=viewer)
            if agent_id in view.members
            and (viewer is None or visibility.shown_in_room(self.record(agent_id), view, viewer))
        ]

    def members_shown(self, view: RoomView, viewer: str) -> list[str]:
        """The room's members whose presence ``viewer`` may see, by id."""
        return [m for m in sorted(view.members) if visibility.shown_in_room(self.record(m), view, viewer)]

    def owner_shown(self, view: RoomView, viewer: str) -> str | None:
        """``name (id)`` of the room's owner, or ``None`` where ``viewer`` may not see it."""
        return self.label(view.owner) if visibility.shown_in_room(self.record(view.owner), view, viewer) else None

    def readable(self, message_id: str, viewer: str) -> bool:
        """Whether the held message exists for ``viewer`` (it may read it; else it answers as an unknown id)."""
        op = self.state.messages.get(message_id)
        if op is None or not self.state.message_visible(op):
            return False
        view, live = None, False
        if isinstance(op.body, RoomMessage):
            log = self.state.rooms.get(op.body.room_id)
            view = None if log is None else log.view
            # the room it was posted to (through any instance merged into it) is the live room of its name
            live = view is not None and self.state.room_id(view.name) == view.room_id
        return visibility.readable(op, viewer, view, live=live)

    # ------------------------------------------------------------------ acting as a hosted agent

    def host(self, record: AgentUpsert) -> AgentUpsert:
        """Host an agent here (register it); queue for it what it missed while its bridge was down.

        Like every operation the store makes, the record is checked first (:meth:`check`)."""
        self.check(record)
        claimed = self.node.host_agent(record)
        self.inbox(record.agent_id)
        self._seen.setdefault(record.agent_id, collections.OrderedDict())
        self._queue_backlog(record.agent_id)
        return claimed

    def update(self, agent_id: str, **fields: object) -> AgentUpsert:
        """Change a hosted agent's record (checked first, see :meth:`check`)."""
        self.check(msgspec.structs.replace(self._require_hosted(agent_id), **fields))
        self.node.update_agent(agent_id, **fields)
        return self.node.peer.hosted[agent_id]

    def release(self, agent_id: str) -> None:
        """Stop hosting an agent (it goes offline for everyone)."""
        if self.is_hosted(agent_id):
            self.node.release_agent(agent_id)

    def create_room(self, agent_id: str, name: str, room_type: RoomType, description: str) -> str:
        """Create a room owned by the agent; raises ``ROOM_EXISTS``."""
        inc = self._incarnation(agent_id)
        if self.state.room(name) is not None:
            raise CommsError(ErrorCode.ROOM_EXISTS, f"room #{name} already exists")
        # A room's id is the id of the operation creating it, and the operation carries it.
        room_id = self.node.peer.replica.next_op_id()
        op = self._submit(RoomCreate(room_id, name, room_type, description, agent_id, inc))
        assert op_id(op) == room_id
        return room_id

    def change_membership(
        self, agent_id: str, room_id: str, action: MembershipAction, subject: str = "", reason: str = ""
    ) -> None:
        """One membership operation as the agent (the caller has checked that it is allowed)."""
        inc = self._incarnation(agent_id)
        self._submit(Membership(room_id, action, agent_id, inc, subject, reason))

    def send(
        self, agent_id: str, room_id: str, content: str, reply_to: str = "", streaming: StreamingBehavior = "followUp"
    ) -> str:
        """Post to a room; returns the message id."""
        inc = self._incarnation(agent_id)
        return op_id(self._submit(RoomMessage(room_id, agent_id, inc, content, reply_to, streaming)))

    def dm(
        self, agent_id: str, recipient: str, content: str, reply_to: str = "", streaming: StreamingBehavior = "steer"
    ) -> str:
        """Send a direct message; returns the message id."""
        inc = self._incarnation(agent_id)
        return op_id(self._submit(DirectMessage(agent_id, inc, recipient, content, reply_to, streaming)))

    @staticmethod
    def check(body: Body) -> None:
        """Refuse, with ``INVALID_PARAMS`` naming the tool's parameter, an operation that peers would refuse as
        malformed or that breaks the rules for what an agent may write (:func:`~agent_comms.protocol.fields.check_body`:
        the one home of those rules, shared with the tool's parameter checks)."""
        try:
            check_body(body)
        except InvalidField as exc:
            name = _PARAMETER.get((type(body).__name__, exc.field), exc.field)
            raise CommsError(ErrorCode.INVALID_PARAMS, f"invalid {name!r}: {exc.problem}") from None

    def _submit(self, body: Body) -> Op:
        self.check(body)
        return self.node.submit(body)

    def _incarnation(self, agent_id: str) -> int:
        return self._require_hosted(agent_id).incarnation

    def _require_hosted(self, agent_id: str) -> AgentUpsert:
        hosted = self.node.peer.hosted.get(agent_id)
        if hosted is None:
            raise CommsError(ErrorCode.INVALID_PARAMS, "not registered: call the 'register' action first")
        return hosted

    # ------------------------------------------------------------------ deliveries

    def add_delivery_callback(self, callback: DeliveryCallback) -> None:
        """Call ``callback`` with every event queued for any hosted agent (the push path of bridges)."""
        self._callbacks.append(callback)

    def inbox(self, agent_id: str) -> Inbox:
        """The agent's :class:`~agent_comms.inbox.Inbox`: what waits for it and what its bridge is showing. Every
        bridge takes, holds, settles and gives back events through it."""
        inbox = self._inboxes.get(agent_id)
        if inbox is None:
            inbox = self._inboxes[agent_id] = Inbox(self.inbox_limit, lambda events: self.mark_read(agent_id, events))
        return inbox

    def pending(self, agent_id: str) -> list[DeliveryEvent]:
        """Events waiting for the agent, oldest first (they stay waiting): :meth:`Inbox.pending`."""
        return self.inbox(agent_id).pending()

    def take(self, agent_id: str, limit: int | None = None) -> list[DeliveryEvent]:
        """Remove and return waiting events, oldest first (call :meth:`mark_read` once they were shown)."""
        return self.inbox(agent_id).take(limit)

    async def wait_pending(self, agent_id: str) -> None:
        """Wait until the agent has at least one waiting event."""
        await self.inbox(agent_id).wait_pending()

    def mark_read(self, agent_id: str, events: Iterable[DeliveryEvent]) -> None:
        """The bridge showed these events to the agent's model: their messages are read."""
        if not self.is_hosted(agent_id):
            return
        for event in events:
            if event.type in ("dm", "room_message"):
                self._receipt(agent_id, event.message_id, "read")

    def _receipt(self, agent_id: str, message_id: str, status: Literal["delivered", "read"]) -> None:
        message = self.state.messages.get(message_id)
        if message is None or self.state.receipt_status(message_id, agent_id) in (status, "read"):
            return
        body = message.body
        conversation = (
            dm_conversation(body.author, body.recipient) if isinstance(body, DirectMessage) else body.room_id  # type: ignore[union-attr]
        )
        inc = self._incarnation(agent_id)
        self.node.submit(Receipt(message_id, conversation, op_key(message), agent_id, inc, status))

    def _emit(self, event: DeliveryEvent) -> None:
        agent_id = event.to
        seen = self._seen.setdefault(agent_id, collections.OrderedDict())
        if event.id in seen:
            return
        seen[event.id] = None
        if len(seen) > _SEEN_LIMIT:
            seen.popitem(last=False)
        self.inbox(agent_id).put(event)
        if event.type in ("dm", "room_message"):
            self._receipt(agent_id, event.message_id, "delivered")
        for callback in self._callbacks:
            callback(event)

    # ------------------------------------------------------------------ from state changes to events

    def _on_changes(self, changes: tuple[Change, ...]) -> None:
        hosted = self.node.peer.hosted
        if not hosted:
            return
        for change in changes:
            if isinstance(change, MessageAdded):
                self._on_message(change.op)
            elif isinstance(change, ReceiptAdvanced):
                self._on_receipt(change)
            elif isinstance(change, RoomChanged):
                self._on_room(change)
            elif isinstance(change, AgentChanged):
                self._on_agent(change)
            elif isinstance(change, MessageEvicted):
                self._on_evicted(change)

    def message_event(self, op: Op, to: str) -> DeliveryEvent:
        """The delivery event of a room message or DM for agent ``to``."""
        body = op.body
        assert isinstance(body, RoomMessage | DirectMessage)
        author = self.record(body.author)
        room_name, room_id = "", ""
        if isinstance(body, RoomMessage):
            room_id = body.room_id
            log = self.state.rooms.get(room_id)
            room_name = log.view.name if log is not None and log.view is not None else ""
        return DeliveryEvent(
            id=op_id(op),
            type="room_message" if isinstance(body, RoomMessage) else "dm",
            to=to,
            sender=body.author,
            sender_name="" if author is None else author.name,
            room=room_name,
            room_id=room_id,
            content=body.content,
            message_id=op_id(op),
            reply_to=body.reply_to,
            timestamp=hlc_wall_ms(op.hlc),
            streaming=body.streaming,
        )

    def _recipients(self, op: Op) -> list[str]:
        """Hosted agents a visible message is for."""
        body = op.body
        hosted = self.node.peer.hosted
        if isinstance(body, DirectMessage):
            return [body.recipient] if body.recipient in hosted and body.recipient != body.author else []
        assert isinstance(body, RoomMessage)
        log = self.state.rooms.get(body.room_id)
        if log is None or log.view is None:
            return []
        key = op_key(op)
        return [a for a in hosted if a != body.author and log.view.was_member(a, key, body.room_id)]

    def _on_message(self, op: Op) -> None:
        message_id = op_id(op)
        for agent_id in self._recipients(op):
            # A bridge that restarted catches up on old messages together with its own read receipts for them
            # (anti-entropy sends each receipt right after its message): what it already read is not shown again.
            if self.state.receipt_status(message_id, agent_id) != "read":
                self._emit(self.message_event(op, agent_id))

    def _queue_backlog(self, agent_id: str) -> None:
        """Everything addressed to the agent that it has not read: kept while its bridge was down."""
        state = self.state
        waiting: list[Op] = []
        for op in state.messages.values():
            body = op.body
            if isinstance(body, DirectMessage) and body.recipient != agent_id:
                continue
            if not state.message_visible(op) or state.receipt_status(op_id(op), agent_id) == "read":
                continue
            if agent_id in self._recipients(op):
                waiting.append(op)
        for op in sorted(waiting, key=op_key)[-self.inbox_limit :]:
            self._emit(self.message_event(op, agent_id))
        for room_id, view in self.rooms(viewer=None):
            inviter = view.invited.get(agent_id)
            if inviter is not None:
                event_id = _room_event_id(room_id, "invited", agent_id, view.invite_keys.get(agent_id))
                self._emit(self._room_event("room_invite", agent_id, room_id, view, inviter, event_id))

    def _on_evicted(self, change: MessageEvicted) -> None:
        """A direct message that never reached its (offline) recipient fell out of the bounded history."""
        body = change.op.body
        if change.reached or not isinstance(body, DirectMessage) or body.author not in self.node.peer.hosted:
            return
        recipient = self.record(body.recipient)
        self._emit(
            DeliveryEvent(
                id=f"{op_id(change.op)}/{body.recipient}/dropped",
                type="delivery_status",
                to=body.author,
                sender=body.recipient,
                sender_name="" if recipient is None else recipient.name,
                content=body.content,
                message_id=op_id(change.op),
                timestamp=int(time.time() * 1000),
                status="dropped",
                reason=f"{body.recipient} stayed away while newer messages filled the history",
            )
        )

    def _on_receipt(self, change: ReceiptAdvanced) -> None:
        message = self.state.messages.get(change.message_id)
        if message is None:
            return
        if (
            change.status == "read"
            and change.recipient in self.node.peer.hosted
            and change.op.origin != self.node.peer_id
        ):
            self.inbox(change.recipient).drop_message(change.message_id)  # read by an earlier bridge of the agent
        body = message.body
        author = getattr(body, "author", None)
        if author not in self.node.peer.hosted or change.recipient == author:
            return
        reader = self.record(change.recipient)
        if not self._receipt_shown(body, reader, author):
            return
        self._emit(
            DeliveryEvent(
                id=f"{change.message_id}/{change.recipient}/{change.status}",
                type="delivery_status",
                to=author,
                sender=change.recipient,
                sender_name="" if reader is None else reader.name,
                content=getattr(body, "content", ""),
                message_id=change.message_id,
                timestamp=hlc_wall_ms(change.op.hlc),
                status=change.status,
            )
        )

    def _receipt_shown(self, body: object, reader: AgentUpsert | None, author: str) -> bool:
        """A read receipt is presence: a room member's only where the author may see it there; no ghost's."""
        if isinstance(body, RoomMessage):
            log = self.state.rooms.get(body.room_id)
            return log is not None and log.view is not None and visibility.shown_in_room(reader, log.view, author)
        return reader is not None and reader.visibility != "ghost"

    def _room_event(
        self,
        kind: EventType,
        to: str,
        room_id: str,
        view: RoomView,
        sender: str,
        event_id: str,
        **extra: object,
    ) -> DeliveryEvent:
        record = self.record(sender)
        return DeliveryEvent(
            id=event_id,
            type=kind,
            to=to,
            sender=sender,
            sender_name="" if record is None else record.name,
            room=view.name,
            room_id=room_id,
            timestamp=int(time.time() * 1000),
            **extra,  # type: ignore[arg-type]
        )

    def _on_room(self, change: RoomChanged) -> None:
        log = self.state.rooms.get(change.room_id)
        if log is None or log.view is None:
            return
        view, room_id, detail = log.view, change.room_id, change.change
        hosted = self.node.peer.hosted
        agent, by = detail.agent, detail.by
        members = [m for m in view.members if m in hosted]
        # Presence (joined, left, kicked) is told only to those who may see the agent in the room.
        seeing = [m for m in members if visibility.shown_in_room(self.record(agent), view, m)]
        event_id = _room_event_id(room_id, detail.kind, agent, detail.key)
        if detail.kind == "joined":
            for member in members:
                if member == agent:
                    shown = [m for m in self.members_shown(view, agent) if m != agent]
                    if not shown:
                        continue  # it created the room, or joined one with nobody it may see: nothing to tell
                    listing = tuple(Member(m, (self.record(m) or _unknown(m)).name, self._status(m)) for m in shown)
                    self._emit(
                        self._room_event("room_members", member, room_id, view, agent, event_id, members=listing)
                    )
                elif member in seeing:
                    self._emit(self._room_event("member_joined", member, room_id, view, agent, event_id))
        elif detail.kind == "left":
            for member in seeing:
                self._emit(self._room_event("member_left", member, room_id, view, agent, event_id))
        elif detail.kind == "kicked":
            subject = self.record(agent)
            for member in {*seeing, *([agent] if agent in hosted else [])}:
                self._emit(
                    self._room_event(
                        "member_kicked",
                        member,
                        room_id,
                        view,
                        by or view.owner,
                        event_id,
                        subject=agent,
                        subject_name="" if subject is None else subject.name,
                        reason=detail.reason,
                    )
                )
        elif detail.kind == "invited":
            if agent in hosted:
                self._emit(self._room_event("room_invite", agent, room_id, view, by, event_id))
        elif detail.kind == "declined":
            if by in hosted:
                self._emit(
                    self._room_event("invite_declined", by, room_id, view, agent, event_id, reason=detail.reason)
                )
        elif detail.kind == "destroyed":
            assert view.destroyed is not None
            former = [
                a for a, spans in view.intervals.items() if a in hosted and spans and spans[-1][1] == view.destroyed
            ]
            for member in former:
                if member != by:
                    self._emit(self._room_event("room_destroyed", member, room_id, view, by, event_id))

    def _status(self, agent_id: str) -> str:
        entry = self.state.agents.get(agent_id)
        if entry is None or entry.record is None:
            return "unknown"
        return entry.body.status if entry.online else "offline"

    def _on_agent(self, change: AgentChanged) -> None:
        previous = change.previous
        if previous is None:
            return
        before = previous.status if change.was_online else "offline"
        after = change.record.status if change.online else "offline"
        if before == after:
            return
        hosted = self.node.peer.hosted
        for room_id, view in self.rooms(viewer=None):
            if change.agent_id not in view.members:
                continue
            for member in view.members:
                if (
                    member in hosted
                    and member != change.agent_id
                    and visibility.shown_in_room(change.record, view, member)
                ):
                    # A record is named by its claim and version; going offline without a new record is told once
                    # per record, and coming back needs a new claim.
                    record = change.record
                    event_id = (
                        f"{room_id}/status/{change.agent_id}/{record.incarnation}-{record.peer_id}-{record.version}"
                        f"/{after}"
                    )
                    self._emit(
                        self._room_event(
                            "member_status", member, room_id, view, change.agent_id, event_id, status=after
                        )
                    )


def _room_event_id(room_id: str, kind: str, agent: str, key: OpKey | None) -> str:
    """The id of a room event: the room instance, what happened to whom, and the operation that did it.

    The same change gets the same id on every drain and after a restart (a bridge may drop what it has already
    seen), and every change gets its own (a second invite after a kick, a join after a leave and so on).
    """
    if key is None:
        return f"{room_id}/{kind}/{agent}"
    _hlc, origin, seq = key
    return f"{room_id}/{kind}/{agent}/{origin}-{seq}"


def _unknown(agent_id: str) -> AgentUpsert:
    return AgentUpsert(agent_id, "", 0, 0, agent_id, "", "", 0, 0.0)
