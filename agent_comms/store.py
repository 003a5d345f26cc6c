"""The agent-facing view of one mesh node: agents, rooms and messages, and each hosted agent's deliveries.

:class:`MeshStore` reads the replicated state of its node and makes operations on behalf of the agents the node
hosts. It hands the node's state changes to the delivery planner (:mod:`agent_comms.deliveries`), queues the
:class:`~agent_comms.events.DeliveryEvent` objects it plans for those agents and keeps the honest receipts:

* ``delivered`` is reported when a message has reached the recipient's bridge (this store queued it);
* ``read`` when the bridge says it showed it to the model (:meth:`MeshStore.mark_read`: a push that succeeded, or
  a drain into a tool result). Nothing is reported for a message that went nowhere.

They are reported as progress markers (:class:`~agent_comms.protocol.ops.Mark`): the store records each message's
``(origin, n)`` in the agent's ranges for its conversation and status, and once per scheduler pass submits one
cumulative marker per (agent, conversation, status) that grew (a ``delivered`` one only if the ``read`` ones do not
cover it already), so a drain or a push costs one operation per conversation, not two per message.

Each hosted agent's events wait in its :class:`~agent_comms.inbox.Inbox` (:meth:`MeshStore.inbox`), which every
bridge takes them from and settles or gives them back through.

An agent whose bridge was down gets, when an agent with its identity is hosted again, every message addressed to
it that it has not read (direct messages, and room messages from when it was a member), oldest first, once (when
more waits than its inbox holds, the newest that fit come first and the older ones as the bridge makes room).

A full inbox refuses events; the messages (and invitations) it refused are remembered, in the history's order, and
queued from the state once there is room, each checked to be still held, counted and unread: a refill costs what it
queues, not the history held (:meth:`MeshStore._refill`).
"""

from __future__ import annotations

import collections
import heapq
import time
from collections.abc import Callable, Iterable
from typing import Final

import msgspec
import trio

from agent_comms.display import display
from agent_comms.events import DeliveryEvent
from agent_comms.mesh.node import MeshNode
from agent_comms.protocol.changes import (
    Change,
)
from agent_comms.protocol.coverage import RangeBuilder, difference, union
from agent_comms.protocol.fields import InvalidField, check_body
from agent_comms.protocol.ops import (
    AgentUpsert,
    Body,
    DirectMessage,
    Mark,
    Membership,
    MembershipAction,
    Op,
    OpKey,
    Receipt,
    ReceiptStatus,
    RoomCreate,
    RoomMessage,
    RoomType,
    StreamingBehavior,
    message_conversation,
    op_id,
    op_key,
)
from agent_comms.protocol.rooms import RoomView
from agent_comms.protocol.state import MeshState

from . import queries, visibility
from .actions import parameter_of
from .deliveries import Delivery, DeliveryPlanner, ReadElsewhere
from .errors import CommsError, ErrorCode
from .inbox import Inbox

__all__ = ["PRESENCE_QUIET_S", "DeliveryCallback", "MeshStore"]

DeliveryCallback = Callable[[DeliveryEvent], None]
"""Called synchronously with every event for a hosted agent, as it is queued."""

#: Events kept per hosted agent until its bridge takes them. A message that does not fit waits in the state, not
#: acknowledged as delivered, and is queued once the bridge took events (:meth:`MeshStore._refill`).
INBOX_LIMIT: Final = 1000
_SEEN_LIMIT: Final = 20_000
#: Messages a full inbox refused that are remembered per hosted agent, to queue them once there is room without
#: walking the history (:meth:`MeshStore._refill`); past this many, the next refill walks the whole history.
_REFUSED_LIMIT: Final = 10_000
#: A room member's status that changes and changes back within this many seconds is not told; every status change
#: reaches the members' inboxes this much later (quiet presence).
PRESENCE_QUIET_S: Final = 3.0


class _Refused:
    """What a hosted agent's full inbox refused and the state still holds: the messages in the history's order
    (at most :data:`_REFUSED_LIMIT`, then the oldest one forgotten: :attr:`forgot_from`), and whether an invitation
    was refused."""

    __slots__ = ("forgot_from", "ids", "invites", "keys")

    def __init__(self) -> None:
        #: (key, id) of the refused messages: a heap, the oldest first
        self.keys: list[tuple[OpKey, str]] = []
        self.ids: set[str] = set()
        #: the key of the oldest refused message not remembered (more were refused than remembered): the ones
        #: remembered before it come in order, then only a walk over the history finds what follows
        self.forgot_from: OpKey | None = None
        self.invites = False

    def add(self, op: Op) -> None:
        """Remember that ``op`` was refused (or that one was forgotten, past :data:`_REFUSED_LIMIT`)."""
        message_id = op_id(op)
        if message_id in self.ids:
            return
        key = op_key(op)
        if len(self.ids) >= _REFUSED_LIMIT:
            self.forgot_from = key if self.forgot_from is None else min(self.forgot_from, key)
            return
        self.ids.add(message_id)
        heapq.heappush(self.keys, (key, message_id))

    def next_in_order(self) -> bool:
        """Whether the oldest remembered message is the oldest refused one (nothing older was forgotten)."""
        return bool(self.keys) and (self.forgot_from is None or self.keys[0][0] < self.forgot_from)

    def pop(self) -> str:
        """The oldest remembered message's id, forgotten."""
        message_id = heapq.heappop(self.keys)[1]
        self.ids.discard(message_id)
        return message_id

    def __bool__(self) -> bool:
        return bool(self.keys) or self.forgot_from is not None or self.invites


class MeshStore:
    """Agents, rooms and deliveries over one :class:`~agent_comms.mesh.node.MeshNode`."""

    def __init__(
        self, node: MeshNode, *, inbox_limit: int = INBOX_LIMIT, presence_quiet_s: float = PRESENCE_QUIET_S
    ) -> None:
        self.node = node
        self.inbox_limit = inbox_limit
        self.presence_quiet_s = presence_quiet_s
        self._inboxes: dict[str, Inbox] = {}
        self._seen: dict[str, collections.OrderedDict[str, None]] = {}
        #: per hosted agent, what its full inbox refused (queued from the state once there is room)
        self._refused: dict[str, _Refused] = {}
        self._callbacks: list[DeliveryCallback] = []
        #: member_status events waiting out :data:`PRESENCE_QUIET_S`, by (agent told, agent, room): the event and
        #: when it is due
        self._quiet: dict[tuple[str, str, str], tuple[DeliveryEvent, float]] = {}
        self._quiet_flushing = False
        #: (agent, conversation, status) -> the messages this store recorded for the agent (its cumulative markers)
        self._progress: dict[tuple[str, str, ReceiptStatus], RangeBuilder] = {}
        #: the keys of :attr:`_progress` that grew since the last flush, in order, with the agent's claim
        #: (incarnation) when it grew: a marker still goes out if the agent was released meanwhile
        self._dirty: dict[tuple[str, str, ReceiptStatus], int] = {}
        self._marks_flushing = False
        node.add_listener(self._on_changes)

    # ------------------------------------------------------------------ reading the mesh

    @property
    def state(self) -> MeshState:
        """The replicated state (read-only by convention)."""
        return self.node.state

    def is_hosted(self, agent_id: str) -> bool:
        """Whether this store's node hosts the agent."""
        return agent_id in self.node.hosted

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
        if record is None:
            return display(agent_id, inline=True)
        remote = self.node.remote_machine_of
        machine = None if remote is None else remote(record.peer_id)  # an agent of another machine: name@machine
        return display(f"{record.name}{'' if machine is None else '@' + machine} ({agent_id})", inline=True)

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
        return self.node.hosted[agent_id]

    def release(self, agent_id: str) -> None:
        """Stop hosting an agent (it goes offline for everyone), its last markers sent first."""
        if self.is_hosted(agent_id):
            self.flush_marks()
            self.node.release_agent(agent_id)
            self._forget_released()

    def create_room(self, agent_id: str, name: str, room_type: RoomType, description: str) -> str:
        """Create a room owned by the agent; raises ``ROOM_EXISTS``."""
        inc = self._acting_as(agent_id)
        if self.state.room(name) is not None:
            raise CommsError(ErrorCode.ROOM_EXISTS, f"room #{name} already exists")
        # A room's id is the id of the operation creating it, and the operation carries it.
        self.flush_marks()  # (the markers waiting would take the ids before it)
        room_id = self.node.next_op_id()
        op = self._submit(RoomCreate(room_id, name, room_type, description, agent_id, inc))
        assert op_id(op) == room_id
        return room_id

    def change_membership(
        self, agent_id: str, room_id: str, action: MembershipAction, subject: str = "", reason: str = ""
    ) -> None:
        """One membership operation as the agent (the caller has checked that it is allowed)."""
        inc = self._acting_as(agent_id)
        self._submit(Membership(room_id, action, agent_id, inc, subject, reason))

    def send(
        self, agent_id: str, room_id: str, content: str, reply_to: str = "", streaming: StreamingBehavior = "followUp"
    ) -> str:
        """Post to a room; returns the message id."""
        inc = self._acting_as(agent_id)
        return op_id(self._submit(RoomMessage(room_id, agent_id, inc, content, reply_to, streaming)))

    def dm(
        self, agent_id: str, recipient: str, content: str, reply_to: str = "", streaming: StreamingBehavior = "steer"
    ) -> str:
        """Send a direct message; returns the message id."""
        inc = self._acting_as(agent_id)
        return op_id(self._submit(DirectMessage(agent_id, inc, recipient, content, reply_to, streaming)))

    @staticmethod
    def check(body: Body) -> None:
        """Refuse, with ``INVALID_PARAMS`` naming the tool's parameter, an operation that peers would refuse as
        malformed or that breaks the rules for what an agent may write (:func:`~agent_comms.protocol.fields.check_body`:
        the one home of those rules, shared with the tool's parameter checks; the parameter's name from
        :func:`~agent_comms.actions.parameter_of`)."""
        try:
            check_body(body)
        except InvalidField as exc:
            name = parameter_of(type(body).__name__, exc.field)
            raise CommsError(ErrorCode.INVALID_PARAMS, f"invalid {name!r}: {exc.problem}") from None

    def _submit(self, body: Body) -> Op:
        """Make an operation as an agent. The markers waiting for the flush go first, in the same frame: what was
        shown before an agent acts reaches the others before what it does (a reply never overtakes the ``read``
        it follows), in one write with it."""
        self.check(body)
        marks = self._take_marks()
        if not marks:
            return self.node.submit(body)
        return self.node.submit_all([*marks, body])[-1]

    def _acting_as(self, agent_id: str) -> int:
        """The claim the agent acts under."""
        return self._require_hosted(agent_id).incarnation

    def _require_hosted(self, agent_id: str) -> AgentUpsert:
        hosted = self.node.hosted.get(agent_id)
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
            inbox = self._inboxes[agent_id] = Inbox(
                self.inbox_limit,
                lambda events: self.mark_read(agent_id, events),
                on_room=lambda: self._refill(agent_id),
            )
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
                self._record(agent_id, event.message_id, "read")

    def _record(self, agent_id: str, message_id: str, status: ReceiptStatus, *, unread: bool = False) -> None:
        """Record that ``message_id`` reached ``status`` for the agent; its marker goes out at the next flush.

        ``unread``: the caller knows the agent has not read it (the planner found it so in this same pass), so the
        state is not asked again: a numbered message that is ``delivered`` already is recorded anyway, and
        :meth:`flush_marks` sends no ``delivered`` marker that the agent's coverage holds already."""
        message = self.state.messages.get(message_id)
        if message is None:
            return
        hosted = self.node.hosted.get(agent_id)
        if hosted is None:
            return
        body = message.body
        assert isinstance(body, RoomMessage | DirectMessage)
        if not (unread and body.n) and self.state.receipt_status(message_id, agent_id) in (status, "read"):
            return
        conversation = message_conversation(body)
        if not body.n:
            # Made by protocol version 1 (brought back by a hub that kept it): no number for a marker to name, so
            # it gets the receipt that version reads.
            self.node.submit(Receipt(message_id, conversation, op_key(message), agent_id, hosted.incarnation, status))
            return
        key = (agent_id, conversation, status)
        builder = self._progress.get(key)
        if builder is None:
            builder = self._progress[key] = RangeBuilder()
        if builder.add(message.origin, body.n):
            self._dirty[key] = hosted.incarnation
            if not self._marks_flushing:
                self._marks_flushing = True
                self.node.start_soon(self._flush_marks_soon)

    @property
    def marking(self) -> int:
        """How many (agent, conversation, status) markers wait for the next flush."""
        return len(self._dirty)

    async def _flush_marks_soon(self) -> None:
        """Flush once the current scheduler pass is over: everything recorded in it goes out together."""
        try:
            await trio.lowlevel.checkpoint()
        finally:
            self._marks_flushing = False
        self.flush_marks()

    def flush_marks(self) -> None:
        """Submit the markers waiting (:meth:`_take_marks`), together."""
        marks = self._take_marks()
        if marks:
            self.node.submit_all(marks)

    def _take_marks(self) -> list[Body]:
        """One cumulative marker per (agent, conversation, status) that grew since the last flush: ``read`` ones
        first, then a ``delivered`` one only where the agent's ``delivered`` coverage (which ``read`` implies, the
        ``read`` markers here included) does not hold it all already (a push bridge that shows a message at once
        sends a single marker for it)."""
        dirty, self._dirty = self._dirty, {}
        marks: list[Body] = []
        for key in sorted(dirty, key=lambda key: key[2] != "read"):
            agent_id, conversation, status = key
            builder = self._progress[key]
            if status == "delivered":
                covered = self.state.coverage(conversation, agent_id)["delivered"]
                read_key: tuple[str, str, ReceiptStatus] = (agent_id, conversation, "read")
                read = self._progress[read_key].by_origin if read_key in dirty else {}
                if not any(
                    difference(bounds, union(covered.get(origin, []), read.get(origin, [])))
                    for origin, bounds in builder.by_origin.items()
                ):
                    continue
            # Under the claim it was recorded with, hosted still or released since (its process exited, say):
            # what the agent was shown then stays told.
            marks.append(Mark(conversation, agent_id, dirty[key], status, builder.wire()))
        if any(agent_id not in self.node.hosted for agent_id, _conversation, _status in dirty):
            self._forget_released()
        return marks

    def _forget_released(self) -> None:
        """Drop the recorded progress of agents no longer hosted (a later claim starts its markers afresh)."""
        hosted = self.node.hosted
        for key in [key for key in self._progress if key[0] not in hosted and key not in self._dirty]:
            del self._progress[key]
        for agent_id in [agent_id for agent_id in self._refused if agent_id not in hosted]:
            del self._refused[agent_id]

    def _emit(self, event: DeliveryEvent) -> None:
        seen = self._seen.setdefault(event.to, collections.OrderedDict())
        if event.id in seen:
            return
        if event.type == "member_status" and self.presence_quiet_s > 0:
            self._remember(seen, event.id)
            self._quieten(event)
            return
        self._queue(event)

    def _queue(self, event: DeliveryEvent) -> None:
        agent_id = event.to
        if not self.inbox(agent_id).put(event):
            # full: not delivered (no receipt, not seen); it comes from the state once there is room
            self._note_refused(event)
            return
        self._remember(self._seen.setdefault(agent_id, collections.OrderedDict()), event.id)
        if event.type in ("dm", "room_message"):
            # every message event queued was planned in this pass for an agent that has not read it
            self._record(agent_id, event.message_id, "delivered", unread=True)
        for callback in self._callbacks:
            callback(event)

    @staticmethod
    def _remember(seen: collections.OrderedDict[str, None], event_id: str) -> None:
        seen[event_id] = None
        if len(seen) > _SEEN_LIMIT:
            seen.popitem(last=False)

    @property
    def quieting(self) -> int:
        """How many status changes wait out the quiet window before they are queued."""
        return len(self._quiet)

    def _quieten(self, event: DeliveryEvent) -> None:
        """Hold a status change for ``presence_quiet_s`` (:data:`PRESENCE_QUIET_S`): one changed back meanwhile is
        not told at all, one changed again is told once, as the latest."""
        key = (event.to, event.sender, event.room_id)
        held = self._quiet.pop(key, None)
        if held is not None:
            first = held[0]
            if first.previous == event.status:
                return
            event = msgspec.structs.replace(event, previous=first.previous)
        self._quiet[key] = (event, trio.current_time() + self.presence_quiet_s)
        if not self._quiet_flushing:
            self._quiet_flushing = True
            self.node.start_soon(self._flush_quiet)

    async def _flush_quiet(self) -> None:
        try:
            while self._quiet:
                await trio.sleep_until(min(due for _event, due in self._quiet.values()))
                now = trio.current_time()
                for key, (event, due) in list(self._quiet.items()):
                    if due <= now:
                        del self._quiet[key]
                        self._queue(event)
        finally:
            self._quiet_flushing = False

    # ------------------------------------------------------------------ from state changes to events

    def _on_changes(self, changes: tuple[Change, ...]) -> None:
        self._deliver(self._planner().plan(changes))

    def _planner(self) -> DeliveryPlanner:
        return DeliveryPlanner(self.state, self.node.hosted, self.node.peer_id, int(time.time() * 1000))

    def _deliver(self, deliveries: list[Delivery]) -> None:
        for delivery in deliveries:
            if isinstance(delivery, ReadElsewhere):
                self.inbox(delivery.agent).drop_message(delivery.message_id)
            else:
                self._emit(delivery)

    def _note_refused(self, event: DeliveryEvent) -> None:
        """The agent's full inbox refused ``event``: remember a message or an invitation, to queue it from the state
        once there is room (other events are not queued again)."""
        if event.type in ("dm", "room_message"):
            op = self.state.messages.get(event.message_id)
            if op is not None:
                self._refused.setdefault(event.to, _Refused()).add(op)
        elif event.type == "room_invite":
            self._refused.setdefault(event.to, _Refused()).invites = True

    def _queue_backlog(self, agent_id: str) -> None:
        """Everything addressed to the agent that it has not read: kept while its bridge was down. The newest
        messages that fit are queued; the older ones are remembered as refused and come once there is room."""
        planner = self._planner()
        waiting = planner.waiting(agent_id)
        cut = max(0, len(waiting) - self.inbox_limit)
        refused = self._refused[agent_id] = _Refused()
        for op in waiting[:cut]:
            refused.add(op)
        self._deliver([planner.message_event(op, agent_id) for op in waiting[cut:]])
        self._deliver(planner.invites(agent_id))
        if refused:
            self.inbox(agent_id).more_to_put()

    def _refill(self, agent_id: str) -> None:
        """The agent's inbox refused events and has room again: queue, oldest first, what it refused and the state
        still holds for the agent (held, counted, unread; what was queued already is skipped as seen), as many as
        fit, then the invitations it refused. This costs what it queues, not the history held: only when more
        messages were refused than remembered (:data:`_REFUSED_LIMIT`), and the ones remembered that are older than
        any forgotten are queued, is the whole history walked, once, which remembers what does not fit afresh."""
        refused = self._refused.get(agent_id)
        if not refused or not self.is_hosted(agent_id):
            return
        inbox = self.inbox(agent_id)
        planner = self._planner()
        while refused.next_in_order() and not inbox.full:
            op = self.state.messages.get(refused.pop())
            if op is not None and planner.is_waiting(op, agent_id):
                self._emit(planner.message_event(op, agent_id))
        if refused.forgot_from is not None and not inbox.full:
            # Some refused messages were forgotten: only a walk over the whole history held finds them (the cost
            # grows with the history, as the refill's used to); the events that do not fit are remembered afresh.
            self._refused[agent_id] = _Refused()
            self._deliver(planner.backlog(agent_id, len(self.state.messages)))
            return
        if refused.invites and not inbox.full:
            refused.invites = False
            self._deliver(planner.invites(agent_id))
        if refused:
            inbox.more_to_put()

    def message_event(self, op: Op, to: str) -> DeliveryEvent:
        """The delivery event of a room message or DM for agent ``to``."""
        return self._planner().message_event(op, to)
