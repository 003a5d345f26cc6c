"""One peer's data plane: stamping local operations, applying remote ones exactly once, and anti-entropy.

Anti-entropy is two frames. The requester sends a :class:`~.wire.SyncRequest` with the digest of its state and, for
every origin, the highest sequence number below which it has seen every operation. A responder whose digest
differs answers with every stored operation the requester may lack (sequence above that floor) in causal order
(:func:`sync_order`): agents' records first (newest first), so every claim is known before anything acts under
it; then the rest oldest first, so that a room's creation arrives before its membership changes; and each
marker right after the oldest message it covers (each receipt right after its message), so a bridge that restarts
and catches up has its own ``read`` marker for a message no later than the message itself, whatever frame carries
it, and does not show it to its model a second time. The last frame of an answer carries the
responder's floors (:meth:`Replica.adopt_floors`).
Doing this in both directions on every new link, and periodically on some link, makes the stored sets equal
(:mod:`agent_comms.protocol.state` explains why equal sets mean equal states).

Replicas forget at a shared horizon, each on its own schedule, so one that has not collected yet offers in its
answers what another already forgot. The floors are what refuse it: a replica keeps an origin's floors, even once
it holds nothing of it, for twice the retention after the origin's last operation and a retention after it first
found nothing of the origin held (:meth:`Replica.collect_garbage`), so a forgotten agent or destroyed room is never
taken back, and the stored sets become equal once both collected.
"""

from __future__ import annotations

from collections.abc import Callable, Collection

import attrs
import msgspec

from .changes import Change
from .hlc import COUNTER_BITS, Hlc
from .ops import (
    AgentSuspect,
    AgentUpsert,
    Body,
    DirectMessage,
    Mark,
    Op,
    OpKey,
    Receipt,
    RoomMessage,
    message_conversation,
    op_key,
)
from .state import DEFAULT_HISTORY_LIMIT, MeshState
from .wire import SyncRequest

__all__ = ["Replica", "SeenSet", "sync_order"]

_NO_KEY: OpKey = (0, "", 0)


def sync_order(op: Op, state: MeshState | None = None) -> tuple[int, int, str, int, int, OpKey]:
    """The order of an anti-entropy answer (a sort key).

    Agents' operations first, newest first: the newest record of a live agent is recent, so it is accepted even
    by a peer whose forgetting horizon lies after the agent's first claim, and the older claims that follow are
    then accepted because the agent is known (everything of a forgotten agent is older than the horizon: a replica
    that forgot it refuses it as seen, see :meth:`Replica.collect_garbage`, and one that never held it takes it and
    forgets it at its next collection). Then everything else oldest first, each receipt right after its message,
    each marker right after the oldest message of ``state`` it covers (:meth:`MeshState.mark_anchor`; at its own
    stamp without ``state``).
    """
    body = op.body
    if isinstance(body, AgentUpsert | AgentSuspect):
        return (0, -op.hlc, op.origin, -op.seq, 0, _NO_KEY)
    if isinstance(body, Receipt):
        hlc, origin, seq = body.message_key
        return (1, hlc, origin, seq, 1, op_key(op))
    if isinstance(body, Mark) and state is not None:
        hlc, origin, seq = state.mark_anchor(op)
        return (1, hlc, origin, seq, 1, op_key(op))
    return (1, op.hlc, op.origin, op.seq, 0, _NO_KEY)


@attrs.define
class SeenSet:
    """The sequence numbers seen from one origin: everything up to ``floor``, plus ``extra`` beyond it."""

    floor: int = 0
    extra: set[int] = attrs.field(factory=set)

    def add(self, seq: int) -> bool:
        """Record ``seq``; return ``False`` if it had been seen already."""
        if seq <= self.floor or seq in self.extra:
            return False
        if seq == self.floor + 1:
            self.floor = seq
            extra = self.extra
            while self.floor + 1 in extra:
                self.floor += 1
                extra.discard(self.floor)
        else:
            self.extra.add(seq)
        return True

    def __contains__(self, seq: int) -> bool:
        return seq <= self.floor or seq in self.extra

    @property
    def highest(self) -> int:
        """The highest sequence number seen."""
        return max(self.extra, default=self.floor)

    def raise_floor(self, floor: int) -> None:
        """Count everything up to ``floor`` as seen (never beyond the highest number actually seen)."""
        floor = min(floor, self.highest)
        if floor <= self.floor:
            return
        self.floor = floor
        self.extra = {seq for seq in self.extra if seq > floor}
        while self.floor + 1 in self.extra:
            self.floor += 1
            self.extra.discard(self.floor)


@attrs.define
class Replica:
    """A peer's replica of the mesh state plus the bookkeeping that makes delivery exactly-once."""

    peer_id: str
    state: MeshState = attrs.field(factory=lambda: MeshState(DEFAULT_HISTORY_LIMIT))
    hlc: Hlc = attrs.field(factory=Hlc)
    seq: int = 0
    seen: dict[str, SeenSet] = attrs.field(factory=dict)
    #: per origin, the newest HLC stamp of an operation seen from it (how long its ``seen`` entry must be kept)
    last_stamp: dict[str, int] = attrs.field(factory=dict)
    #: per origin whose floors may go, the horizon (HLC) of the collection that first found nothing of it held
    empty_since: dict[str, int] = attrs.field(factory=dict)
    #: conversation -> how many messages this peer made in it (the ``n`` of the last one; :meth:`make`)
    counters: dict[str, int] = attrs.field(factory=dict)
    #: called with every operation made or received here for the first time (the gateway publishes this machine's)
    observer: Callable[[Op], None] | None = attrs.field(default=None, eq=False, repr=False)

    @classmethod
    def create(cls, peer_id: str, *, history_limit: int = DEFAULT_HISTORY_LIMIT) -> Replica:
        """A fresh replica for a peer."""
        return cls(peer_id, MeshState(history_limit))

    def next_op_id(self) -> str:
        """The id the next local operation will get (a room's id is the id of the operation creating it)."""
        return f"{self.peer_id}-{self.seq + 1}"

    def make(self, body: Body, now_ms: int, micros: int = 0) -> tuple[Op, list[Change]]:
        """Stamp a local operation at wall time ``now_ms`` (and ``micros`` microseconds), apply it, and return it (to
        broadcast) with the changes it caused.

        A message is numbered here: its ``n`` is this peer's count of the messages it made in the conversation."""
        if isinstance(body, RoomMessage | DirectMessage):
            conversation = message_conversation(body)
            n = self.counters.get(conversation, 0) + 1
            self.counters[conversation] = n
            body = msgspec.structs.replace(body, n=n)
        self.seq += 1
        op = Op(self.peer_id, self.seq, self.hlc.tick(now_ms, micros), body)
        self.seen.setdefault(self.peer_id, SeenSet()).add(self.seq)
        self.last_stamp[self.peer_id] = op.hlc
        changes = self.state.apply(op)
        if self.observer is not None:
            self.observer(op)
        return op, changes

    def receive(self, op: Op) -> list[Change]:
        """Apply an operation from the network; a duplicate is ignored."""
        seen = self.seen.get(op.origin)
        if seen is None:
            seen = self.seen[op.origin] = SeenSet()
        if not seen.add(op.seq):
            return []
        self.last_stamp[op.origin] = max(self.last_stamp.get(op.origin, 0), op.hlc)
        self.hlc.observe(op.hlc)
        changes = self.state.apply(op)
        if self.observer is not None:
            self.observer(op)
        return changes

    def receive_many(self, ops: tuple[Op, ...] | list[Op]) -> list[Change]:
        """Apply several operations in the given order; return all their changes."""
        changes: list[Change] = []
        for op in ops:
            changes.extend(self.receive(op))
        return changes

    def sync_request(self) -> SyncRequest:
        """Anti-entropy, step one: our digest and how far we have seen each origin."""
        return SyncRequest(self.state.digest(), {origin: s.floor for origin, s in self.seen.items()})

    def floors(self) -> dict[str, int]:
        """Per origin, the sequence number up to which every operation has been seen."""
        return {origin: s.floor for origin, s in self.seen.items()}

    def adopt_floors(self, floors: dict[str, int]) -> None:
        """After a complete anti-entropy answer: count as seen what its sender saw up to its floors.

        Safe because the answer held every operation the sender stores above our floors; what the sender saw and
        does not store is dominated by what it stores (a message pushed out of a full history, a superseded
        record or receipt), so it would change nothing here either. Capped at what we have seen ourselves, so a
        wrong floor can never make us ignore operations we have not seen yet.
        """
        for origin, floor in floors.items():
            seen = self.seen.get(origin)
            if seen is not None:
                seen.raise_floor(floor)

    def collect_garbage(self, horizon_ms: int, seen_horizon_ms: int, keep: Collection[str] = ()) -> None:
        """Forget what went offline or was destroyed before ``horizon_ms`` (:meth:`MeshState.collect_garbage`), and
        the sequence bookkeeping of origins this replica holds nothing of and has seen nothing from since
        ``seen_horizon_ms`` (wall-clock milliseconds), except those in ``keep``.

        ``seen_horizon_ms`` must lie a retention or more before ``horizon_ms`` (a peer passes twice the retention
        before now). What this replica forgot at a horizon may still be held by a replica that has not collected at
        that horizon yet, and its anti-entropy answers offer it again. The floors are what refuses it (an
        operation is never taken twice); without them, the forgotten agent or destroyed room would be taken again,
        forgotten again, and handed back and forth between replicas collecting out of phase. So an origin's floors
        go only once both its last operation and the collection that first found nothing of it held here lie before
        ``seen_horizon_ms``: every replica has collected at that horizon since. (The origin's last operation alone
        is not enough: what it made can outlive it by far, an agent's record kept by a later offline verdict of
        another peer, a room by its members.)
        """
        state = self.state
        state.collect_garbage(horizon_ms)
        seen_horizon = seen_horizon_ms << COUNTER_BITS
        stale = [
            origin
            for origin in self.seen
            if origin not in keep and origin != self.peer_id and self.last_stamp.get(origin, 0) < seen_horizon
        ]
        if not stale:
            self.empty_since.clear()
            return
        holding = state.stored_origins()
        empty_since = {origin: self.empty_since.get(origin, state.horizon) for origin in stale if origin not in holding}
        for origin, since in empty_since.items():
            if since < seen_horizon:
                del self.seen[origin]
                self.last_stamp.pop(origin, None)
        self.empty_since = {origin: since for origin, since in empty_since.items() if origin in self.seen}

    def sync_answer(self, request: SyncRequest) -> list[Op]:
        """Anti-entropy, step two: what the requester may lack, in :func:`sync_order` (empty if the digests agree).

        That is every stored operation above the requester's floor of its origin, found by bisection in the
        state's index (:meth:`MeshState.stored_above`): the cost is that of what is sent, not of what is stored."""
        if request.digest == self.state.digest():
            return []
        state = self.state
        return sorted(state.stored_above(request.seen), key=lambda op: sync_order(op, state))
