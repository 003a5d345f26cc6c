"""A simulated network of replicas for property tests: frames in flight, in any order, lost or duplicated.

No sockets, no clock, no event loop: the test decides which frame arrives next. Used by the convergence machine
and by targeted scenario tests.
"""

from __future__ import annotations

from typing import Any

import attrs

from agent_comms.protocol.ops import AgentUpsert, Body, Op, Receipt, op_id, op_key
from agent_comms.protocol.replica import Replica, sync_order
from agent_comms.protocol.state import MeshState
from agent_comms.protocol.wire import SyncOps, SyncRequest

Payload = Op | SyncRequest | SyncOps


@attrs.define
class Frame:
    """One frame in flight from ``src`` to ``dst``."""

    src: int
    dst: int
    payload: Payload


@attrs.define
class SimPeer:
    """A slot in the simulation: the replica currently running there (``None`` while crashed)."""

    index: int
    replica: Replica | None
    generation: int = 0
    #: agent id -> (incarnation, version) of the claim this peer holds
    claims: dict[str, tuple[int, int]] = attrs.field(factory=dict)


@attrs.define
class SimNet:
    """Peers 0..n-1 exchanging frames through an explicit in-flight list."""

    history_limit: int
    peers: list[SimPeer] = attrs.field(factory=list)
    in_flight: list[Frame] = attrs.field(factory=list)
    cut: set[frozenset[int]] = attrs.field(factory=set)
    now_ms: int = 1_000_000

    @classmethod
    def build(cls, n: int, history_limit: int) -> SimNet:
        net = cls(history_limit)
        for i in range(n):
            net.peers.append(SimPeer(i, net.new_replica(i, 0)))
        return net

    def new_replica(self, index: int, generation: int) -> Replica:
        return Replica.create(f"p{index}g{generation}", history_limit=self.history_limit)

    def live(self) -> list[SimPeer]:
        return [p for p in self.peers if p.replica is not None]

    def connected(self, a: int, b: int) -> bool:
        return a != b and frozenset((a, b)) not in self.cut

    def tick(self) -> int:
        self.now_ms += 1
        return self.now_ms

    # -------------------------------------------------------------- making and moving frames

    def make(self, index: int, body: Body) -> Op:
        """Peer ``index`` makes an operation and broadcasts it to every peer it can reach."""
        replica = self.peers[index].replica
        assert replica is not None
        op, _changes = replica.make(body, self.tick())
        self.broadcast(index, op)
        return op

    def broadcast(self, index: int, op: Op) -> None:
        for peer in self.live():
            if self.connected(index, peer.index):
                self.in_flight.append(Frame(index, peer.index, op))

    def request_sync(self, a: int, b: int) -> None:
        replica = self.peers[a].replica
        if replica is not None and self.peers[b].replica is not None and self.connected(a, b):
            self.in_flight.append(Frame(a, b, replica.sync_request()))

    def deliver(self, position: int) -> None:
        frame = self.in_flight.pop(position)
        target = self.peers[frame.dst].replica
        if target is None or not self.connected(frame.src, frame.dst):
            return  # crashed, or the link is down: the frame is lost
        payload = frame.payload
        if isinstance(payload, Op):
            target.receive(payload)
        elif isinstance(payload, SyncRequest):
            answer = target.sync_answer(payload)
            if answer:
                self.in_flight.append(Frame(frame.dst, frame.src, SyncOps(tuple(answer))))
        else:
            target.receive_many(payload.ops)

    def settle(self, max_rounds: int = 50) -> int:
        """Heal everything, deliver everything, run anti-entropy until nothing moves; return the rounds used."""
        self.cut.clear()
        for rounds in range(max_rounds):
            while self.in_flight:
                self.deliver(0)
            digests = {p.replica.state.digest() for p in self.live() if p.replica is not None}
            if len(digests) <= 1:
                return rounds
            live = self.live()
            for a in live:
                for b in live:
                    if a.index != b.index:
                        self.request_sync(a.index, b.index)
        raise AssertionError("anti-entropy did not settle")

    # -------------------------------------------------------------- crashes

    def crash(self, index: int) -> None:
        self.peers[index].replica = None
        self.peers[index].claims.clear()
        self.in_flight = [f for f in self.in_flight if f.dst != index]

    def restart(self, index: int) -> Replica:
        peer = self.peers[index]
        peer.generation += 1
        peer.replica = self.new_replica(index, peer.generation)
        self.now_ms += 5  # a restart takes time; the new claims sort after the old ones
        return peer.replica


def visible_snapshot(state: MeshState) -> dict[str, Any]:
    """Everything a user could observe in a replica, in a canonical form (for equality checks)."""
    agents = {}
    for agent_id, entry in sorted(state.agents.items()):
        if entry.record is None:
            continue
        agents[agent_id] = (msgspec_tuple(entry.body), entry.online, sorted(entry.claims))
    rooms = {}
    for name in sorted(state.room_names):
        described = []
        for view in state.rooms_named(name):
            described.append(
                (
                    list(view.founders),
                    view.room_type,
                    view.owner,
                    sorted(view.members),
                    sorted(view.invited.items()),
                    sorted(view.banned),
                    view.destroyed,
                )
            )
        rooms[name] = described
    conversations = {}
    for conversation, history in sorted(state.histories.items()):
        conversations[conversation] = [op_id(op) for op in history.messages if state.message_visible(op)]
    receipts = {}
    for message_id in sorted(state.receipts):
        for recipient, _peer, _inc in sorted(state.receipts[message_id]):
            receipts[(message_id, recipient)] = state.receipt_status(message_id, recipient)
    for conversation, by_recipient in sorted(state.marks.items()):
        for recipient in sorted(by_recipient):
            receipts[(conversation, recipient)] = state.coverage(conversation, recipient)  # type: ignore[assignment]
    return {"agents": agents, "rooms": rooms, "conversations": conversations, "receipts": receipts}


def msgspec_tuple(body: AgentUpsert) -> tuple[Any, ...]:
    import msgspec

    return tuple(msgspec.structs.astuple(body))


def rebuild(state: MeshState, *, reverse: bool = False) -> MeshState:
    """A fresh state built from ``state``'s stored operations in key order (or reverse): order independence.

    Once a horizon is set, operations stamped before it come in the order anti-entropy sends them (the only way
    they travel: a live peer's new operations are stamped after it): state rule 8 refuses an unknown agent's or an
    unheld room's old operations, so a record must come before its older claims, a room's creation before its log.
    """
    fresh = MeshState(state.history_limit, horizon=state.horizon)
    ops = sorted({(op.origin, op.seq): op for op in state.stored_ops()}.values(), key=op_key, reverse=reverse)
    if state.horizon:
        old = sorted((op for op in ops if op.hlc < state.horizon), key=sync_order)
        ops = old + [op for op in ops if op.hlc >= state.horizon]
    for op in ops:
        fresh.apply(op)
    return fresh


def receipt_body(message: Op, recipient: str, recipient_inc: int, status: str, conversation: str) -> Receipt:
    return Receipt(
        message_id=op_id(message),
        conversation=conversation,
        message_key=op_key(message),
        recipient=recipient,
        recipient_inc=recipient_inc,
        status=status,  # type: ignore[arg-type]
    )
