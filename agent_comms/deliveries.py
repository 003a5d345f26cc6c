"""From changes of the replicated state to what each hosted agent is told: the delivery planner.

Pure: it reads a :class:`~agent_comms.protocol.state.MeshState` (the changes are applied to it already), the agents
this peer hosts and the time it is given, and returns :class:`~agent_comms.events.DeliveryEvent` objects and
:class:`ReadElsewhere` notes, in order. It neither queues nor sends anything: :class:`~agent_comms.store.MeshStore`
puts the events in the agents' inboxes and issues the progress markers. Who may see what is
:mod:`agent_comms.visibility`'s.

What is told: a message to each hosted recipient that has not read it (a room message to those who were members when
it was posted); to its hosted author, each ``delivered`` and ``read`` state it may see (from the recipients'
progress markers, one summary per message), and a direct message that
fell out of the history before it reached its recipient; room changes (joined, left, kicked, invited, declined,
destroyed) to the members who may see them; status changes of room members (not of one-shot commands:
:data:`ONE_SHOT_TAG`).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Final

import attrs

from agent_comms import queries, visibility
from agent_comms.events import DeliveryEvent, EventType, Member
from agent_comms.protocol.changes import (
    AgentChanged,
    Change,
    MarkAdvanced,
    MessageAdded,
    MessageEvicted,
    ReceiptAdvanced,
    RoomChanged,
)
from agent_comms.protocol.coverage import from_wire
from agent_comms.protocol.hlc import hlc_wall_ms
from agent_comms.protocol.ops import AgentUpsert, DirectMessage, Op, OpKey, RoomMessage, op_id, op_key
from agent_comms.protocol.rooms import RoomView
from agent_comms.protocol.state import MeshState

__all__ = ["ONE_SHOT_TAG", "Delivery", "DeliveryPlanner", "ReadElsewhere"]

#: An agent that carries this tag comes and goes quietly: no ``member_status`` event is told of it (a person's
#: one-shot ``agent-comms send`` / ``dm``, online only while it posts).
ONE_SHOT_TAG: Final = "one-shot"


@attrs.frozen
class ReadElsewhere:
    """A read marker (or receipt) of hosted ``agent`` covering ``message_id`` came from another peer (an earlier
    bridge of the agent read it): the message leaves the agent's inbox."""

    agent: str
    message_id: str


Delivery = DeliveryEvent | ReadElsewhere


class DeliveryPlanner:
    """Plans deliveries over ``state`` for the agents in ``hosted`` (this peer, ``peer_id``); ``now_ms`` stamps the
    events of room changes."""

    def __init__(self, state: MeshState, hosted: Mapping[str, AgentUpsert], peer_id: str, now_ms: int) -> None:
        self.state = state
        self.hosted = hosted
        self.peer_id = peer_id
        self.now_ms = now_ms
        self._out: list[Delivery] = []

    def record(self, agent_id: str) -> AgentUpsert | None:
        """The agent's current record, if known."""
        entry = self.state.agents.get(agent_id)
        return None if entry is None or entry.record is None else entry.body

    def _members_shown(self, view: RoomView, viewer: str) -> list[str]:
        return [m for m in sorted(view.members) if visibility.shown_in_room(self.record(m), view, viewer)]

    def plan(self, changes: Iterable[Change]) -> list[Delivery]:
        """What the hosted agents are told of ``changes`` (applied to the state already), in order."""
        self._out = []
        if not self.hosted:
            return self._out
        for change in changes:
            if isinstance(change, MessageAdded):
                self._on_message(change.op)
            elif isinstance(change, MarkAdvanced):
                self._on_mark(change)
            elif isinstance(change, ReceiptAdvanced):
                self._on_receipt(change)
            elif isinstance(change, RoomChanged):
                self._on_room(change)
            elif isinstance(change, AgentChanged):
                self._on_agent(change)
            elif isinstance(change, MessageEvicted):
                self._on_evicted(change)
        return self._out

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
        hosted = self.hosted
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
                self._out.append(self.message_event(op, agent_id))

    def backlog(self, agent_id: str, limit: int) -> list[Delivery]:
        """Everything addressed to the agent that it has not read (at most the newest ``limit`` messages), for when
        it is hosted again: kept while its bridge was down."""
        self._out = [self.message_event(op, agent_id) for op in self.waiting(agent_id)[-limit:]]
        self._out += self.invites(agent_id)
        return self._out

    def waiting(self, agent_id: str) -> list[Op]:
        """Every held message the agent has not read and may be shown, oldest first (:meth:`is_waiting`): a walk
        over the whole history held."""
        state = self.state
        waiting: list[Op] = []
        for op in state.messages.values():
            body = op.body
            if isinstance(body, DirectMessage) and body.recipient != agent_id:
                continue
            if self.is_waiting(op, agent_id):
                waiting.append(op)
        return sorted(waiting, key=op_key)

    def is_waiting(self, op: Op, agent_id: str) -> bool:
        """Whether the held message ``op`` waits for the agent: it counts, is addressed to the agent (a room
        message: the agent was a member when it was posted) and the agent has not read it."""
        state = self.state
        if not state.message_visible(op) or state.receipt_status(op_id(op), agent_id) == "read":
            return False
        return agent_id in self._recipients(op)

    def invites(self, agent_id: str) -> list[Delivery]:
        """The invitations to live rooms the agent has not answered."""
        found: list[Delivery] = []
        for room_id, view in queries.live_rooms(self.state):
            inviter = view.invited.get(agent_id)
            if inviter is not None:
                event_id = _room_event_id(room_id, "invited", agent_id, view.invite_keys.get(agent_id))
                found.append(self._room_event("room_invite", agent_id, room_id, view, inviter, event_id))
        return found

    def _on_evicted(self, change: MessageEvicted) -> None:
        """A direct message that never reached its (offline) recipient fell out of the bounded history."""
        body = change.op.body
        if change.reached or not isinstance(body, DirectMessage) or body.author not in self.hosted:
            return
        recipient = self.record(body.recipient)
        self._out.append(
            DeliveryEvent(
                id=f"{op_id(change.op)}/{body.recipient}/dropped",
                type="delivery_status",
                to=body.author,
                sender=body.recipient,
                sender_name="" if recipient is None else recipient.name,
                content=body.content,
                message_id=op_id(change.op),
                timestamp=self.now_ms,
                status="dropped",
                reason=f"{body.recipient} stayed away while newer messages filled the history",
            )
        )

    def _on_mark(self, change: MarkAdvanced) -> None:
        """A recipient's markers newly cover some messages: for each one held, what a receipt of it would tell."""
        state = self.state
        for origin, ranges in change.ranges.items():
            bounds = from_wire(tuple(bound for pair in ranges for bound in pair))
            if bounds is None:
                continue
            for message in state.held_numbered(change.conversation, origin, bounds):
                if change.status == "delivered":
                    if getattr(message.body, "author", None) not in self.hosted:
                        continue  # a delivered state is told only to the message's author, not hosted here
                    if state.receipt_status(op_id(message), change.recipient) == "read":
                        continue  # read already: being delivered tells nothing new
                self._advanced(message, change.recipient, change.status, change.op)

    def _on_receipt(self, change: ReceiptAdvanced) -> None:
        message = self.state.messages.get(change.message_id)
        if message is None:
            return
        self._advanced(message, change.recipient, change.status, change.op)

    def _advanced(self, message: Op, recipient: str, status: str, op: Op) -> None:
        """``recipient`` reached ``status`` for ``message`` (``op`` said so): an earlier bridge of a hosted recipient
        read it, or a hosted author is told (one summary of the message)."""
        message_id = op_id(message)
        if status == "read" and recipient in self.hosted and op.origin != self.peer_id:
            # an earlier bridge of the agent read it
            self._out.append(ReadElsewhere(recipient, message_id))
        body = message.body
        author = getattr(body, "author", None)
        if author is None or author not in self.hosted or recipient == author:
            return
        reader = self.record(recipient)
        if not self._receipt_shown(body, reader, author):
            return
        self._out.append(
            DeliveryEvent(
                id=f"{message_id}/{recipient}/{status}",
                type="delivery_status",
                to=author,
                sender=recipient,
                sender_name="" if reader is None else reader.name,
                content=getattr(body, "content", ""),
                message_id=message_id,
                timestamp=hlc_wall_ms(op.hlc),
                status=status,
                members=self._receipt_states(message, author),
            )
        )

    def _receipt_states(self, message: Op, author: str) -> tuple[Member, ...]:
        """Where the message stands for each recipient ``author`` may see (its receipt status, ``sent`` before
        any): what a model is shown of it, as one line (:func:`~agent_comms.events.format_events`)."""
        body = message.body
        if isinstance(body, DirectMessage):
            recipients = [body.recipient]
        elif isinstance(body, RoomMessage):
            log = self.state.rooms.get(body.room_id)
            if log is None or log.view is None:
                return ()
            key = op_key(message)
            recipients = sorted(a for a in log.view.intervals if log.view.was_member(a, key, body.room_id))
        else:
            return ()
        states = []
        for recipient in recipients:
            record = self.record(recipient)
            if recipient == author or not self._receipt_shown(body, record, author):
                continue
            status = self.state.receipt_status(op_id(message), recipient) or "sent"
            states.append(Member(recipient, "" if record is None else record.name, status))
        return tuple(states)

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
            timestamp=self.now_ms,
            **extra,  # type: ignore[arg-type]
        )

    def _on_room(self, change: RoomChanged) -> None:
        log = self.state.rooms.get(change.room_id)
        if log is None or log.view is None:
            return
        view, room_id, detail = log.view, change.room_id, change.change
        hosted = self.hosted
        agent, by = detail.agent, detail.by
        members = [m for m in view.members if m in hosted]
        # Presence (joined, left, kicked) is told only to those who may see the agent in the room.
        seeing = [m for m in members if visibility.shown_in_room(self.record(agent), view, m)]
        event_id = _room_event_id(room_id, detail.kind, agent, detail.key)
        if detail.kind == "joined":
            for member in members:
                if member == agent:
                    shown = [m for m in self._members_shown(view, agent) if m != agent]
                    if not shown:
                        continue  # it created the room, or joined one with nobody it may see: nothing to tell
                    listing = tuple(Member(m, (self.record(m) or _unknown(m)).name, self._status(m)) for m in shown)
                    self._out.append(
                        self._room_event("room_members", member, room_id, view, agent, event_id, members=listing)
                    )
                elif member in seeing:
                    self._out.append(self._room_event("member_joined", member, room_id, view, agent, event_id))
        elif detail.kind == "left":
            for member in seeing:
                self._out.append(self._room_event("member_left", member, room_id, view, agent, event_id))
        elif detail.kind == "kicked":
            subject = self.record(agent)
            for member in {*seeing, *([agent] if agent in hosted else [])}:
                self._out.append(
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
                self._out.append(self._room_event("room_invite", agent, room_id, view, by, event_id))
        elif detail.kind == "declined":
            if by in hosted:
                self._out.append(
                    self._room_event("invite_declined", by, room_id, view, agent, event_id, reason=detail.reason)
                )
        elif detail.kind == "destroyed":
            assert view.destroyed is not None
            former = [
                a for a, spans in view.intervals.items() if a in hosted and spans and spans[-1][1] == view.destroyed
            ]
            for member in former:
                if member != by:
                    self._out.append(self._room_event("room_destroyed", member, room_id, view, by, event_id))

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
        if before == after or ONE_SHOT_TAG in change.record.tags:
            return
        hosted = self.hosted
        for room_id, view in queries.live_rooms(self.state):
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
                    self._out.append(
                        self._room_event(
                            "member_status",
                            member,
                            room_id,
                            view,
                            change.agent_id,
                            event_id,
                            status=after,
                            previous=before,
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
