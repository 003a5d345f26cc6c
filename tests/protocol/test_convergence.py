"""The replicated state converges: a Hypothesis state machine over a simulated network of 2-6 peers.

Rules make operations on random peers (register, update, rooms, membership, messages, DMs, receipts, offline
verdicts, and forgeries by a misbehaving peer; a hosted agent's bridge shows or delivers some of the messages
addressed to it and issues its cumulative progress markers, some of them held back and delivered stale; a peer cut
off from all others speaks and is merged later), and move frames in any order, duplicate or drop them, cut and heal
links, crash and restart peers. Time passes too: hosts re-stamp their live agents, failure detectors declare the
agents of dead peers offline, and peers forget at advancing horizons (each on its own schedule); an agent released
by its host is forgotten and may come back later, under a new claim, on any peer. Two agents on two peers may
create one room name at the same moment and speak in it at once. Safety invariants are checked after every step
(among them: a message once seen by a peer stays visible there unless its history limit, its room's destroy or a
membership decision of the room removed it); after the network settles, every live peer must hold the same state.
"""

from __future__ import annotations

import contextlib
import sys
from collections.abc import Callable

import pytest
from hypothesis import event
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, initialize, invariant, precondition, rule
from simnet import Frame, SimNet, rebuild, receipt_body, visible_snapshot

from agent_comms.protocol.coverage import Bounds, RangeBuilder, difference
from agent_comms.protocol.ops import (
    AgentSuspect,
    AgentUpsert,
    DirectMessage,
    Mark,
    Membership,
    Op,
    RoomCreate,
    RoomMessage,
    dm_conversation,
    message_conversation,
    op_id,
)
from agent_comms.protocol.replica import sync_order
from agent_comms.protocol.wire import SyncRequest

ROOM_NAMES = ["lobby", "dev", "ops"]
AGENTS_PER_PEER = 2
HISTORY_LIMIT = 4
#: how long an offline agent is remembered (``offline_retention``), in the simulation's milliseconds
RETENTION_MS = 200

peer_index = st.integers(0, 5)
slot = st.integers(0, AGENTS_PER_PEER - 1)


def agent_of(peer: int, which: int) -> str:
    return f"agent-{peer}-{which}"


class ConvergenceMachine(RuleBasedStateMachine):
    """A small mesh under arbitrary operations and faults."""

    net: SimNet

    def __init__(self) -> None:
        super().__init__()
        self.receipt_floor: dict[tuple[int, int, str, str], int] = {}
        #: message id -> the message, for every message acknowledged to its author (visible at its peer when made)
        self.acknowledged: dict[str, Op] = {}
        #: message id -> the (peer, generation) replicas that have shown it, with the author's claim known there
        self.shown: dict[str, set[tuple[int, int]]] = {}
        #: the newest horizon any peer collected at (the teardown brings every peer there)
        self.horizon_ms = 0
        #: whether an agent came back after some peer had forgotten it
        self.returned_forgotten = False
        #: agent -> ids of the messages any of its bridges showed to its model / had queued (delivered)
        self.shown_to: dict[str, set[str]] = {}
        self.delivered_to: dict[str, set[str]] = {}
        #: (peer, generation, agent, conversation, status) -> what that bridge recorded (its cumulative markers)
        self.builders: dict[tuple[int, int, str, str, str], RangeBuilder] = {}
        #: markers made and not broadcast yet (delivered late, after newer ones of their issuer)
        self.held_back: list[tuple[int, Op]] = []
        #: (peer, generation, conversation, recipient, status, origin) -> the coverage seen at the last check
        self.coverage_floor: dict[tuple[int, int, str, str, str, str], Bounds] = {}
        self.status_floor: dict[tuple[int, int, str, str], int] = {}
        #: whether markers were issued, a stale one delivered, a message made while cut off from every peer
        self.marked = self.stale_delivered = self.partitioned = False

    @initialize(n=st.integers(2, 6))
    def start(self, n: int) -> None:
        self.net = SimNet.build(n, HISTORY_LIMIT)
        for index in range(n):
            for which in range(AGENTS_PER_PEER):
                self.register(index, which)
        # A populated start: a public and a private room, known everywhere, and everybody asking to join both
        # (the private room's joins take effect only for those invited later).
        self.create_room(0, 0, "lobby", "public")
        self.create_room(1, 0, "dev", "private")
        self.net.settle()
        for index in range(n):
            for which in range(AGENTS_PER_PEER):
                self.membership(index, which, "lobby", "join", 0, 0)
                self.membership(index, which, "dev", "join", 0, 0)

    # ------------------------------------------------------------------ helpers

    def peer(self, index: int):  # type: ignore[no-untyped-def]
        peers = self.net.peers
        return peers[index % len(peers)]

    def hosted(self, index: int, which: int) -> tuple[int, str, int] | None:
        """(peer index, agent id, incarnation) of the ``which``-th agent hosted on a live peer, if any."""
        peer = self.peer(index)
        if peer.replica is None or not peer.claims:
            return None
        agents = sorted(peer.claims)
        agent = agents[which % len(agents)]
        return peer.index, agent, peer.claims[agent][0]

    def acknowledge(self, index: int, op: Op) -> None:
        """The author's bridge was told "sent" if its own replica shows the message once made."""
        replica = self.net.peers[index].replica
        assert replica is not None
        if replica.state.message_visible(op):
            self.acknowledged[op_id(op)] = op

    def upsert(self, index: int, agent: str, **changes: object) -> None:
        peer = self.net.peers[index]
        assert peer.replica is not None
        incarnation, version = peer.claims[agent]
        peer.claims[agent] = (incarnation, version + 1)
        fields: dict[str, object] = {
            "agent_id": agent,
            "peer_id": peer.replica.peer_id,
            "incarnation": incarnation,
            "version": version + 1,
            "name": agent,
            "harness": "test",
            "cwd": "/work",
            "pid": 100 + index,
            "process_start": 1.0,
        }
        fields.update(changes)
        self.net.make(index, AgentUpsert(**fields))  # type: ignore[arg-type]

    def room_id(self, index: int, name: str) -> str | None:
        replica = self.net.peers[index].replica
        assert replica is not None
        return replica.state.room_id(name)

    # ------------------------------------------------------------------ operations

    @rule(index=peer_index, which=slot)
    def register(self, index: int, which: int) -> None:
        peer = self.peer(index)
        if peer.replica is None:
            return
        agent = agent_of(peer.index, which)
        if any(agent in p.claims for p in self.net.live() if p is not peer):
            return  # another live bridge holds the identity (it came back there): this one gets another identity
        incarnation = peer.replica.hlc.tick(self.net.tick())
        peer.claims[agent] = (incarnation, -1)
        self.upsert(peer.index, agent)

    @rule(index=peer_index, which=slot, status=st.sampled_from(["active", "idle", "busy"]), online=st.booleans())
    def update(self, index: int, which: int, status: str, online: bool) -> None:
        hosted = self.hosted(index, which)
        if hosted is not None:
            self.upsert(hosted[0], hosted[1], status=status, online=online)

    @rule(index=peer_index, target_peer=peer_index, which=slot)
    def suspect(self, index: int, target_peer: int, which: int) -> None:
        """A failure detector on ``index`` declares the agent's claim it knows offline."""
        peer = self.peer(index)
        if peer.replica is None:
            return
        agent = agent_of(self.peer(target_peer).index, which)
        entry = peer.replica.state.agents.get(agent)
        if entry is None or entry.record is None or not entry.online:
            return  # a failure detector declares offline what it sees online
        body = entry.body
        self.net.make(peer.index, AgentSuspect(agent, body.incarnation, body.peer_id))

    @rule(index=peer_index, which=slot, name=st.sampled_from(ROOM_NAMES), kind=st.sampled_from(["public", "private"]))
    def create_room(self, index: int, which: int, name: str, kind: str) -> None:
        hosted = self.hosted(index, which)
        if hosted is None:
            return
        p, agent, inc = hosted
        replica = self.net.peers[p].replica
        assert replica is not None
        body = RoomCreate(replica.next_op_id(), name, kind, "a room", agent, inc)  # type: ignore[arg-type]
        self.net.make(p, body)

    @rule(
        index=peer_index,
        which=slot,
        name=st.sampled_from(ROOM_NAMES),
        action=st.sampled_from(["join", "leave", "invite", "kick", "decline", "destroy"]),
        subject_peer=peer_index,
        subject_which=slot,
    )
    def membership(self, index: int, which: int, name: str, action: str, subject_peer: int, subject_which: int) -> None:
        """Any membership change, allowed or not: the fold must decide the same way everywhere."""
        hosted = self.hosted(index, which)
        if hosted is None:
            return
        p, agent, inc = hosted
        room_id = self.room_id(p, name)
        if room_id is None:
            return
        subject = agent_of(self.peer(subject_peer).index, subject_which) if action in ("invite", "kick") else ""
        self.net.make(p, Membership(room_id, action, agent, inc, subject))  # type: ignore[arg-type]

    @rule(index=peer_index, which=slot, name=st.sampled_from(ROOM_NAMES), text=st.sampled_from(["hi", "ok"]))
    def send(self, index: int, which: int, name: str, text: str) -> None:
        hosted = self.hosted(index, which)
        if hosted is None:
            return
        p, agent, inc = hosted
        room_id = self.room_id(p, name)
        if room_id is not None:
            self.acknowledge(p, self.net.make(p, RoomMessage(room_id, agent, inc, text)))

    @rule(index=peer_index, which=slot, to_peer=peer_index, to_which=slot)
    def dm(self, index: int, which: int, to_peer: int, to_which: int) -> None:
        hosted = self.hosted(index, which)
        if hosted is None:
            return
        p, agent, inc = hosted
        message = self.net.make(p, DirectMessage(agent, inc, agent_of(self.peer(to_peer).index, to_which), "psst"))
        self.acknowledge(p, message)

    @rule(index=peer_index, which=slot, pick=st.integers(0, 50), read=st.booleans())
    def receipt(self, index: int, which: int, pick: int, read: bool) -> None:
        """The recipient's host reports a message delivered or read."""
        hosted = self.hosted(index, which)
        if hosted is None:
            return
        p, agent, inc = hosted
        replica = self.net.peers[p].replica
        assert replica is not None
        held = sorted(replica.state.messages.values(), key=op_id)
        if not held:
            return
        message = held[pick % len(held)]
        body = message.body
        if isinstance(body, DirectMessage):
            conversation = dm_conversation(body.author, body.recipient)
        else:
            assert isinstance(body, RoomMessage)
            conversation = body.room_id
        status = "read" if read else "delivered"
        self.net.make(p, receipt_body(message, agent, inc, status, conversation))

    @rule(
        index=peer_index,
        which=slot,
        picks=st.sets(st.integers(0, 30), max_size=6),
        read=st.booleans(),
        hold=st.booleans(),
    )
    def show(self, index: int, which: int, picks: set[int], read: bool, hold: bool) -> None:
        """The bridge of a hosted agent queues (``read``: and shows) some of the held messages addressed to it, in
        any order, and issues its cumulative markers for the conversations it touched (``hold``: not broadcast
        yet, so they arrive late, after newer ones)."""
        hosted = self.hosted(index, which)
        if hosted is None:
            return
        p, agent, inc = hosted
        peer = self.net.peers[p]
        replica = peer.replica
        assert replica is not None
        state = replica.state
        addressed = sorted(
            (
                op
                for op in state.messages.values()
                if state.message_visible(op)
                and op.body.n  # type: ignore[union-attr]
                and op.body.author != agent  # type: ignore[union-attr]
                and (not isinstance(op.body, DirectMessage) or op.body.recipient == agent)
            ),
            key=op_id,
        )
        if not addressed:
            return
        touched: set[tuple[str, str]] = set()
        for pick in sorted(picks, reverse=True):  # not in the order the messages were made
            message = addressed[pick % len(addressed)]
            body = message.body
            assert isinstance(body, RoomMessage | DirectMessage)
            conversation = message_conversation(body)
            statuses = ("delivered", "read") if read else ("delivered",)
            self.delivered_to.setdefault(agent, set()).add(op_id(message))
            if read:
                self.shown_to.setdefault(agent, set()).add(op_id(message))
            for status in statuses:
                key = (p, peer.generation, agent, conversation, status)
                if self.builders.setdefault(key, RangeBuilder()).add(message.origin, body.n):
                    touched.add((conversation, status))
        for conversation, status in sorted(touched):
            builder = self.builders[(p, peer.generation, agent, conversation, status)]
            op, _changes = replica.make(Mark(conversation, agent, inc, status, builder.wire()), self.net.tick())  # type: ignore[arg-type]
            self.marked = True
            if not hold:
                self.net.broadcast(p, op)
                continue
            self.held_back.append((p, op))
            # ... and the bridge goes on: one more message of the conversation, and a newer marker that does go out
            more = [
                m
                for m in addressed
                if message_conversation(m.body) == conversation  # type: ignore[arg-type]
                and not builder.covers(m.origin, m.body.n)  # type: ignore[union-attr]
            ]
            if more:
                self.delivered_to.setdefault(agent, set()).add(op_id(more[0]))
                if status == "read":
                    self.shown_to.setdefault(agent, set()).add(op_id(more[0]))
                builder.add(more[0].origin, more[0].body.n)  # type: ignore[union-attr]
                newer, _changes = replica.make(Mark(conversation, agent, inc, status, builder.wire()), self.net.tick())  # type: ignore[arg-type]
                self.net.broadcast(p, newer)

    @rule(index=peer_index, which=slot, to_peer=peer_index, to_which=slot, hold=st.booleans())
    def push(self, index: int, which: int, to_peer: int, to_which: int, hold: bool) -> None:
        """A DM reaches its recipient's peer at once and a push bridge there shows it (with whatever else it holds
        for the agent) and issues its markers."""
        hosted = self.hosted(index, which)
        target = self.hosted(to_peer, to_which)
        if hosted is None or target is None or hosted[1] == target[1]:
            return
        p, agent, inc = hosted
        message = self.net.make(p, DirectMessage(agent, inc, target[1], "push"))
        self.acknowledge(p, message)
        for position in reversed(range(len(self.net.in_flight))):
            frame = self.net.in_flight[position]
            if frame.payload is message and frame.dst == target[0]:
                self.net.deliver(position)
        to_index, to_agent = target[0], target[1]
        which_there = sorted(self.net.peers[to_index].claims).index(to_agent)
        self.show(to_index, which_there, set(range(31)), True, hold)

    @rule(index=peer_index, which=slot, read=st.booleans())
    def show_all(self, index: int, which: int, read: bool) -> None:
        """A drain: the bridge shows (or queues) everything addressed to its agent that it holds."""
        self.show(index, which, set(range(31)), read, hold=False)

    @precondition(lambda self: self.held_back)
    @rule(pick=st.integers(0, 100))
    def deliver_stale(self, pick: int) -> None:
        """A marker held back reaches the peers now, after newer markers of its issuer (or alone)."""
        index, op = self.held_back.pop(pick % len(self.held_back))
        self.stale_delivered = True
        for peer in self.net.live():
            if peer.index != index:
                self.net.in_flight.append(Frame(index, peer.index, op))

    @rule(index=peer_index, which=slot, name=st.sampled_from(ROOM_NAMES), to_peer=peer_index, to_which=slot)
    def speak_cut_off(self, index: int, which: int, name: str, to_peer: int, to_which: int) -> None:
        """A peer cut off from every other one posts to a room and sends a DM; it is merged later (heal), after
        markers were issued elsewhere."""
        hosted = self.hosted(index, which)
        if hosted is None:
            return
        p, agent, inc = hosted
        for other in self.net.peers:
            if other.index != p:
                self.net.cut.add(frozenset((p, other.index)))
        self.partitioned = True
        room_id = self.room_id(p, name)
        if room_id is not None:
            self.acknowledge(p, self.net.make(p, RoomMessage(room_id, agent, inc, "from afar")))
        to = agent_of(self.peer(to_peer).index, to_which)
        self.acknowledge(p, self.net.make(p, DirectMessage(agent, inc, to, "from afar")))

    @rule(rogue=peer_index, victim=peer_index, which=slot)
    def forge(self, rogue: int, victim: int, which: int) -> None:
        """A misbehaving peer edits another peer's agent and speaks as it: both must have no effect."""
        rogue_peer, victim_peer = self.peer(rogue), self.peer(victim)
        if rogue_peer.index == victim_peer.index or rogue_peer.replica is None:
            return
        hosted = self.hosted(victim_peer.index, which)
        if hosted is None:
            return
        _p, agent, inc = hosted
        victim_replica = victim_peer.replica
        assert victim_replica is not None
        forged = AgentUpsert(agent, victim_replica.peer_id, inc, 10_000, "forged", "evil", "/", 1, 1.0, online=False)
        self.net.make(rogue_peer.index, forged)
        self.net.make(rogue_peer.index, DirectMessage(agent, inc, agent_of(rogue_peer.index, 0), "forged"))
        # Speaking for the victim in rooms, too: destroy and kick as it, wherever the rogue knows a room.
        rogue_state = rogue_peer.replica.state
        for name in ROOM_NAMES:
            room_id = rogue_state.room_id(name)
            if room_id is not None:
                self.net.make(rogue_peer.index, Membership(room_id, "destroy", agent, inc))
                self.net.make(rogue_peer.index, Membership(room_id, "kick", agent, inc, agent_of(victim_peer.index, 1)))

    @rule(a=peer_index, a_which=slot, b=peer_index, b_which=slot, name=st.sampled_from(ROOM_NAMES))
    def create_at_once(self, a: int, a_which: int, b: int, b_which: int, name: str) -> None:
        """Two agents on two peers create one room name at the same moment, and each speaks in its room at once."""
        first, second = self.hosted(a, a_which), self.hosted(b, b_which)
        if first is None or second is None or first[0] == second[0]:
            return
        made = []
        for p, agent, inc in (first, second):
            replica = self.net.peers[p].replica
            assert replica is not None
            made.append(
                (p, agent, inc, self.net.make(p, RoomCreate(replica.next_op_id(), name, "public", "", agent, inc)))
            )
        for p, agent, inc, create in made:
            self.acknowledge(p, self.net.make(p, RoomMessage(op_id(create), agent, inc, "first!")))

    @rule(index=peer_index, which=slot)
    def release(self, index: int, which: int) -> None:
        """A bridge ends: its host publishes the agent offline and stops hosting it (it may be forgotten later)."""
        hosted = self.hosted(index, which)
        if hosted is None:
            return
        p, agent, _inc = hosted
        self.upsert(p, agent, online=False)
        del self.net.peers[p].claims[agent]

    @rule(index=peer_index, which=slot, collectors=st.sets(peer_index, min_size=1))
    def night_away(self, index: int, which: int, collectors: set[int]) -> None:
        """A bridge ends and its agent stays away for longer than the retention: some peers forget it."""
        self.release(index, which)
        self.time_passes(3)
        self.time_passes(3)
        for collector in sorted(collectors):
            self.collect(collector)

    @rule(index=peer_index, pick=st.integers(0, 11))
    def come_back(self, index: int, pick: int) -> None:
        """An agent that is hosted nowhere (released, or its peer crashed) comes back on peer ``index``: same id,
        a new claim (perhaps long after it was forgotten)."""
        peer = self.peer(index)
        hosted = {agent for p in self.net.live() for agent in p.claims}
        away = sorted({agent_of(p, w) for p in range(len(self.net.peers)) for w in range(AGENTS_PER_PEER)} - hosted)
        if peer.replica is None or not away:
            return
        agent = away[pick % len(away)]
        self.returned_forgotten |= any(
            p.replica is not None and agent not in p.replica.state.agents for p in self.net.live()
        )
        incarnation = peer.replica.hlc.tick(self.net.tick())
        peer.claims[agent] = (incarnation, -1)
        self.upsert(peer.index, agent)

    @rule(steps=st.integers(1, 3))
    def time_passes(self, steps: int) -> None:
        """Time passes: hosts re-stamp their agents (well within the retention, as peers do), and failure
        detectors declare offline the agents whose host is gone.

        The retention is far longer than any delay of an operation (the premise of forgetting, state rule 8), so
        the mesh first settles: whatever is older than a horizon has reached every peer.
        """
        self.converge()
        for _ in range(steps):
            self.net.now_ms += RETENTION_MS // 4
            self.keep_alive()

    def keep_alive(self, *, restamp: bool = True) -> None:
        """Hosts claim their live agents again wherever the mesh sees them offline (an offline verdict on their
        claim, or another host's newer claim released), as ``Peer._refute`` does, and (``restamp``) re-stamp them;
        failure detectors declare offline the agents of peers that are gone."""
        live_ids = {p.replica.peer_id for p in self.net.live() if p.replica is not None}
        for peer in self.net.live():
            assert peer.replica is not None
            for agent in sorted(peer.claims):
                entry = peer.replica.state.agents.get(agent)
                if entry is not None and entry.record is not None and not entry.online:
                    incarnation = peer.replica.hlc.tick(self.net.tick())
                    peer.claims[agent] = (max(incarnation, max(entry.claims)[0] + 1), -1)
                    self.upsert(peer.index, agent)
                elif restamp:
                    self.upsert(peer.index, agent)
            for agent_id, entry in sorted(peer.replica.state.agents.items()):
                if entry.record is not None and entry.online and entry.body.peer_id not in live_ids:
                    self.net.make(peer.index, AgentSuspect(agent_id, entry.body.incarnation, entry.body.peer_id))

    def converge(self) -> None:
        """Settle the network with every peer at the newest horizon, collecting periodically as peers do (what one
        forgot and another still held when it collected goes at the other's next collection), hosts refuting
        offline verdicts on their live agents."""
        for _round in range(12):
            if _round == 6 and self.horizon_ms:
                # What a peer forgot while another still took new operations on it (a room it had forgotten, an
                # agent) converges once the horizon has passed those too: one more retention period, and a
                # millisecond (an operation made in the last one, with a counter above 0, is not before it yet; the
                # next collection of a peer, later in time, forgets it).
                self.net.now_ms += RETENTION_MS + 1
                self.horizon_ms = self.net.now_ms - RETENTION_MS
                self.keep_alive()
            with contextlib.suppress(AssertionError):
                self.net.settle(max_rounds=10)
            self.keep_alive(restamp=False)
            with contextlib.suppress(AssertionError):
                self.net.settle(max_rounds=10)
            if self.horizon_ms:
                for peer in self.net.live():
                    self.collect_at(peer.index, self.horizon_ms)
            if len({p.replica.state.digest() for p in self.net.live() if p.replica is not None}) == 1:
                return
        raise AssertionError("the mesh did not settle")

    @rule(index=peer_index)
    def collect(self, index: int) -> None:
        """Peer ``index`` forgets what was offline or destroyed before its horizon (each peer on its own schedule)."""
        peer = self.peer(index)
        if peer.replica is None:
            return
        horizon = self.net.now_ms - RETENTION_MS
        self.horizon_ms = max(self.horizon_ms, horizon)
        self.collect_at(index, horizon)

    def collect_at(self, index: int, horizon_ms: int) -> None:
        """A peer's collection at ``horizon_ms``: it also forgets the floors of origins it holds nothing of, is not
        linked to and heard nothing from for twice the retention, once it has held nothing of them for a retention (as
        peers do)."""
        replica = self.peer(index).replica
        assert replica is not None
        linked = {p.replica.peer_id for p in self.net.live() if p.replica is not None}
        replica.collect_garbage(horizon_ms, horizon_ms - RETENTION_MS, keep=linked)

    @rule(order=st.permutations(range(6)), leaving=st.none() | peer_index)
    def out_of_phase(self, order: list[int], leaving: int | None) -> None:
        """A retention passes and the peers collect one after the other, anti-entropy running in between (each
        peer collects on its own schedule). Whatever one forgot and another still offered before collecting
        itself must not come back: once all have collected and the mesh settled, a collection at the same
        horizon finds nothing left to forget (no agent or room forgotten everywhere is back), and the peers agree.
        With ``leaving``, a peer comes (a restart: a new peer id, its agents claimed again and acting nowhere yet)
        and goes: its agents are forgotten in this round, and whoever collected holds nothing of it any more.
        """
        if leaving is not None:
            self.crash(leaving)
            self.restart(leaving)
            with contextlib.suppress(AssertionError):
                self.net.settle(max_rounds=10)
            self.crash(leaving)
        self.converge()
        self.net.now_ms += RETENTION_MS
        self.keep_alive()
        with contextlib.suppress(AssertionError):
            self.net.settle(max_rounds=10)
        horizon = self.net.now_ms - RETENTION_MS
        self.horizon_ms = max(self.horizon_ms, horizon)
        live = [p.index for p in self.net.live()]
        known = set().union(*(self.held(i) for i in live))
        kept: set[str] = set()  # what some peer still held right after its own collection
        for index in sorted(live, key=lambda i: order.index(i)):
            self.collect_fully(index, horizon)
            kept |= self.held(index)
            self.exchange()
        self.net.settle()
        forgotten = known - kept
        for index in live:
            back = forgotten & self.held(index)
            assert not back, f"forgotten by every peer, back at {index}: {sorted(back)}"
        for peer in self.net.live():
            assert peer.replica is not None
            state = peer.replica.state
            before = {op_id(op): op for op in state.stored_ops()}
            self.collect_fully(peer.index, horizon)
            late = sorted(before.keys() - {op_id(op) for op in state.stored_ops()})
            assert not late, f"forgotten everywhere, back at {peer.index}: {[before[i] for i in late]}"

    def held(self, index: int) -> set[str]:
        """The agents and room instances peer ``index`` holds."""
        replica = self.peer(index).replica
        assert replica is not None
        return set(replica.state.agents) | set(replica.state.rooms)

    def collect_fully(self, index: int, horizon_ms: int) -> None:
        """Collect at ``horizon_ms`` until nothing more goes (a destroy may count only once the horizon passed the
        claim it was made under, and its room goes at the collection after that)."""
        replica = self.peer(index).replica
        assert replica is not None
        for _ in range(4):
            before = replica.state.digest()
            self.collect_at(index, horizon_ms)
            if replica.state.digest() == before:
                return
        raise AssertionError("collecting at one horizon did not come to rest")

    def exchange(self) -> None:
        """Deliver everything in flight, then one anti-entropy round between every pair of live peers."""
        while self.net.in_flight:
            self.net.deliver(0)
        live = self.net.live()
        for a in live:
            for b in live:
                self.net.request_sync(a.index, b.index)
        while self.net.in_flight:
            self.net.deliver(0)

    # ------------------------------------------------------------------ the network

    @precondition(lambda self: self.net.in_flight)
    @rule(pick=st.integers(0, 10_000))
    def deliver(self, pick: int) -> None:
        self.net.deliver(pick % len(self.net.in_flight))

    @precondition(lambda self: self.net.in_flight)
    @rule(pick=st.integers(0, 10_000))
    def deliver_many(self, pick: int) -> None:
        for _ in range(min(8, len(self.net.in_flight))):
            self.net.deliver((pick * 7919) % len(self.net.in_flight))

    @precondition(lambda self: self.net.in_flight)
    @rule(pick=st.integers(0, 10_000))
    def duplicate(self, pick: int) -> None:
        frame = self.net.in_flight[pick % len(self.net.in_flight)]
        self.net.in_flight.append(type(frame)(frame.src, frame.dst, frame.payload))

    @precondition(lambda self: self.net.in_flight)
    @rule(pick=st.integers(0, 10_000))
    def drop(self, pick: int) -> None:
        self.net.in_flight.pop(pick % len(self.net.in_flight))

    @rule(a=peer_index, b=peer_index)
    def cut(self, a: int, b: int) -> None:
        a, b = self.peer(a).index, self.peer(b).index
        if a != b:
            self.net.cut.add(frozenset((a, b)))

    @rule()
    def heal(self) -> None:
        self.net.cut.clear()

    @rule(a=peer_index, b=peer_index)
    def anti_entropy(self, a: int, b: int) -> None:
        self.net.request_sync(self.peer(a).index, self.peer(b).index)

    @rule(index=peer_index)
    def crash(self, index: int) -> None:
        peer = self.peer(index)
        if len(self.net.live()) > 1 and peer.replica is not None:
            self.net.crash(peer.index)

    @rule(index=peer_index)
    def restart(self, index: int) -> None:
        """A crashed peer comes back with a new peer id and re-claims its agents (same identities), except those
        that came back on another live peer meanwhile: one live bridge holds an identity (its lock), a second one
        in the same place gets another identity."""
        peer = self.peer(index)
        if peer.replica is not None:
            return
        self.net.restart(peer.index)
        for which in range(AGENTS_PER_PEER):
            self.register(peer.index, which)

    # ------------------------------------------------------------------ invariants

    @invariant()
    def agents_written_by_their_hosts_only(self) -> None:
        for peer in self.net.live():
            assert peer.replica is not None
            for entry in peer.replica.state.agents.values():
                if entry.record is not None:
                    assert entry.body.peer_id == entry.record.origin
                    assert entry.body.name != "forged"
                for (_inc, claim_peer), op in entry.claims.items():
                    assert op.origin == claim_peer

    @invariant()
    def histories_bounded(self) -> None:
        for peer in self.net.live():
            assert peer.replica is not None
            for history in peer.replica.state.histories.values():
                assert len(history) <= HISTORY_LIMIT
                assert history.keys == sorted(history.keys)

    @invariant()
    def forged_messages_invisible(self) -> None:
        for peer in self.net.live():
            assert peer.replica is not None
            state = peer.replica.state
            for op in state.messages.values():
                if isinstance(op.body, DirectMessage) and op.body.content == "forged":
                    author = state.agents.get(op.body.author)
                    if author is not None and author.claims:
                        inc = op.body.author_inc
                        if inc < state.horizon and inc < max(author.claims)[0]:
                            continue  # state rule 4: an incarnation older than the horizon and the newest claim
                        assert not state.message_visible(op)

    @invariant()
    def receipts_only_grow(self) -> None:
        rank = {None: 0, "delivered": 1, "read": 2}
        for peer in self.net.live():
            assert peer.replica is not None
            state = peer.replica.state
            for message_id, slot in state.receipts.items():
                for recipient, _issuer, _inc in slot:
                    key = (peer.index, peer.generation, message_id, recipient)
                    now = rank[state.receipt_status(message_id, recipient)]
                    assert now >= self.receipt_floor.get(key, 0), "a receipt went backwards"
                    self.receipt_floor[key] = now

    @invariant()
    def markers_only_grow(self) -> None:
        """On every replica, for every (conversation, recipient) it holds markers of, the effective coverage of each
        status and origin contains what it contained at the previous check, and no held message's status goes
        back."""
        rank = {None: 0, "delivered": 1, "read": 2}
        for peer in self.net.live():
            assert peer.replica is not None
            state = peer.replica.state
            for conversation, by_recipient in state.marks.items():
                held = [
                    message for numbers in state.numbered.get(conversation, {}).values() for message in numbers.values()
                ]
                for recipient in by_recipient:
                    coverage = state.coverage(conversation, recipient)
                    for status, by_origin in coverage.items():
                        for origin, bounds in by_origin.items():
                            key = (peer.index, peer.generation, conversation, recipient, status, origin)
                            lost = difference(self.coverage_floor.get(key, []), bounds)
                            assert not lost, f"{status} coverage of {recipient} in {conversation} shrank: {lost}"
                            self.coverage_floor[key] = bounds
                    for message in held:
                        where = (peer.index, peer.generation, op_id(message), recipient)
                        now = rank[state.receipt_status(op_id(message), recipient)]
                        assert now >= self.status_floor.get(where, 0), "a message's status went backwards"
                        self.status_floor[where] = now

    @invariant()
    def markers_honest(self) -> None:
        """Every held message that a recipient's ``read`` markers cover was shown to that recipient by one of its
        bridges, and every one its ``delivered`` markers cover was queued by one (messages made on a peer cut off
        from the others and merged later included)."""
        for peer in self.net.live():
            assert peer.replica is not None
            state = peer.replica.state
            for conversation, by_recipient in state.marks.items():
                for recipient in by_recipient:
                    coverage = state.coverage(conversation, recipient)
                    for status, told in (("read", self.shown_to), ("delivered", self.delivered_to)):
                        for origin, bounds in coverage[status].items():
                            for message in state.held_numbered(conversation, origin, bounds):
                                assert op_id(message) in told.get(recipient, set()), (
                                    f"{op_id(message)} counts as {status} by {recipient} at {peer.index}, never so"
                                )
                    # and what the sender is told (the status), for the messages no receipt of version 1 names
                    for numbers in state.numbered.get(conversation, {}).values():
                        for message in numbers.values():
                            if op_id(message) in state.receipts:
                                continue
                            status = state.receipt_status(op_id(message), recipient)
                            told = self.shown_to if status == "read" else self.delivered_to
                            assert status is None or op_id(message) in told.get(recipient, set()), (
                                f"{op_id(message)} is {status} by {recipient} at {peer.index}, never so"
                            )

    @invariant()
    def coverage_kept_up_to_date(self) -> None:
        """The coverage a replica remembers is the one computed from its markers now."""
        for peer in self.net.live():
            assert peer.replica is not None
            state = peer.replica.state
            for conversation, by_recipient in state.marks.items():
                for recipient in by_recipient:
                    assert state.coverage(conversation, recipient) == state.coverage_from_scratch(
                        conversation, recipient
                    )

    @invariant()
    def digest_kept_up_to_date(self) -> None:
        """The digest maintained as operations are stored and forgotten is the one computed from scratch."""
        for peer in self.net.live():
            assert peer.replica is not None
            state = peer.replica.state
            assert state.digest() == state.digest_from_scratch()

    @invariant()
    def anti_entropy_index_kept_up_to_date(self) -> None:
        """What an anti-entropy answer holds, found in the index maintained as operations are stored, superseded,
        evicted and collected, is what a scan of every stored operation finds: above no floors (everything), above
        each live peer's floors and above half of them (floors in the middle of an origin's numbers); and the
        answer is that, in sync order."""
        replicas = [peer.replica for peer in self.net.live() if peer.replica is not None]
        for replica in replicas:
            state = replica.state
            floors: list[dict[str, int]] = [{}]
            for other in replicas:
                seen = other.floors()
                floors += [seen, {origin: floor // 2 for origin, floor in seen.items()}]
            for above in floors:
                scanned = state.stored_above_from_scratch(above)
                assert sorted(state.stored_above(above), key=lambda op: (op.origin, op.seq)) == scanned
                answer = replica.sync_answer(SyncRequest(b"", above))
                assert answer == sorted(scanned, key=lambda op: sync_order(op, state))

    @invariant()
    def receipt_statuses_kept_up_to_date(self) -> None:
        """The receipt status a replica remembers is the one computed from its receipts now."""
        for peer in self.net.live():
            assert peer.replica is not None
            state = peer.replica.state
            for message_id, slot in state.receipts.items():
                for recipient, _issuer, _inc in slot:
                    remembered = state.receipt_status(message_id, recipient)
                    assert remembered == state.receipt_status_from_scratch(message_id, recipient)

    @invariant()
    def order_independent(self) -> None:
        """Rebuilding from the stored operations, in key order and in reverse, gives the same state."""
        for peer in self.net.live():
            assert peer.replica is not None
            state = peer.replica.state
            expected = visible_snapshot(state)
            for reverse in (False, True):
                rebuilt = rebuild(state, reverse=reverse)
                assert rebuilt.digest() == state.digest()
                assert visible_snapshot(rebuilt) == expected

    @invariant()
    def acknowledged_messages_stay(self) -> None:
        """A message a replica has shown stays visible there, unless it is no longer held (its history limit, or its
        room destroyed and forgotten) or a membership decision of its room hides it (a kick, leave or destroy
        ordered before it: the author was not a member at its place in the total order)."""
        live = {(p.index, p.generation): p for p in self.net.live()}
        for message_id, op in self.acknowledged.items():
            body = op.body
            assert isinstance(body, RoomMessage | DirectMessage)
            shown = self.shown.setdefault(message_id, set())
            for where, peer in live.items():
                assert peer.replica is not None
                state = peer.replica.state
                if message_id not in state.messages:
                    continue
                if state.message_visible(op):
                    if state.claim_known(body.author, body.author_inc, op.origin, op.hlc, strict=True):
                        shown.add(where)
                    continue
                if where not in shown:
                    continue
                assert state.claim_known(body.author, body.author_inc, op.origin, op.hlc), (
                    f"{message_id} vanished at {where}: its author's claim no longer counts"
                )
                assert isinstance(body, RoomMessage), f"{message_id} vanished at {where}"
                assert state.room_accepted(body.room_id), f"{message_id} vanished at {where}: its room is gone"
                # what is left: its author was not a member at its place in the order (a kick, leave or destroy)

    @invariant()
    def kicked_stay_out(self) -> None:
        """A banned agent is never a member, and nobody but the owner's actions banned it."""
        for peer in self.net.live():
            assert peer.replica is not None
            for log in peer.replica.state.rooms.values():
                view = log.view
                if view is not None:
                    assert not (view.banned & view.members.keys())
                    assert not (view.invited.keys() & view.members.keys())
                    if view.destroyed is not None:
                        assert not view.members

    def teardown(self) -> None:
        if not hasattr(self, "net"):
            return
        if self.horizon_ms:
            self.keep_alive()
            self.converge()
            event("forgetting horizon passed")
        self.net.settle()
        live = [p.replica for p in self.net.live() if p.replica is not None]
        digests = {r.state.digest() for r in live}
        assert len(digests) == 1, "live peers disagree after the network settled"
        snapshots = [visible_snapshot(r.state) for r in live]
        assert all(s == snapshots[0] for s in snapshots)
        state = live[0].state
        visible = sum(1 for op in state.messages.values() if state.message_visible(op))
        members = sum(len(log.view.members) for log in state.rooms.values() if log.view is not None)
        event(f"visible messages after settling: {min(visible, 10) // 5 * 5}+")
        event(f"room members after settling: {min(members, 6) // 3 * 3}+")
        event(f"receipts after settling: {'some' if state.receipts else 'none'}")
        event(f"markers after settling: {'some' if state.marks else 'none'}")
        event(f"markers issued / stale delivered: {self.marked} / {self.stale_delivered}")
        event(f"a peer spoke while cut off: {self.partitioned}")
        event(f"restarted peers: {'some' if any(p.generation for p in self.net.peers) else 'none'}")
        merged = any(len(view.founders) > 1 for log in state.rooms.values() if (view := log.view) is not None)
        event(f"merged rooms: {'some' if merged else 'none'}")
        event(f"forgotten agents came back: {'some' if self.returned_forgotten else 'none'}")
        everything = set().union(*(set(r.state.messages) for r in live))
        for replica in live:
            assert set(replica.state.messages) == everything


TestConvergence = ConvergenceMachine.TestCase


def _invariants(machine: ConvergenceMachine) -> list[str]:
    names = [n for n in dir(type(machine)) if hasattr(getattr(type(machine), n), "hypothesis_stateful_invariant")]
    assert names, "the machine's invariants were not found"
    return names


def _run(machine: ConvergenceMachine, steps: list[Callable[[], object]], monkeypatch: pytest.MonkeyPatch) -> None:
    """Run scripted steps, checking every invariant after each, then the teardown (the network settles)."""
    for step in steps:
        step()
        for name in _invariants(machine):
            getattr(machine, name)()
    # statistics are kept only inside a Hypothesis run
    monkeypatch.setattr(sys.modules[__name__], "event", lambda *_args: None)
    machine.teardown()


def test_an_agent_forgotten_everywhere_stays_forgotten_long_after_its_host_left(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A scripted run: a peer restarts and crashes again, other peers declare its agents offline, and long after
    its last operation the peers collect one after the other. Its agents' records outlived it (the verdicts are
    younger), so a peer that forgot them must go on refusing them while the others still offer them."""
    machine = ConvergenceMachine()
    steps = [
        lambda: machine.start(n=4),
        lambda: machine.crash(0),
        lambda: machine.restart(0),
        lambda: machine.crash(4),
        lambda: machine.time_passes(3),
        lambda: machine.time_passes(2),
        lambda: machine.out_of_phase(leaving=None, order=[2, 4, 5, 1, 3, 0]),
    ]
    _run(machine, steps, monkeypatch)


def test_a_receipt_for_a_forgotten_room_goes_where_it_arrived_late(monkeypatch: pytest.MonkeyPatch) -> None:
    """A scripted run: a forged destroy of the lobby counts once the horizon passed the claim it named, the lobby
    is forgotten, and a receipt for one of its messages reaches a peer that forgot the room at an earlier horizon:
    it goes at that peer's next collection, as the others refuse it."""
    machine = ConvergenceMachine()
    steps = [
        lambda: machine.start(n=4),
        lambda: machine.send(index=3, name="lobby", text="hi", which=0),
        lambda: machine.suspect(index=5, target_peer=4, which=0),
        lambda: machine.forge(rogue=2, victim=0, which=0),
        lambda: machine.time_passes(steps=3),
        lambda: machine.collect(index=2),
        lambda: machine.time_passes(steps=2),
        lambda: machine.receipt(index=4, pick=35, read=False, which=1),
        lambda: machine.collect(index=3),
    ]
    _run(machine, steps, monkeypatch)


def test_a_stale_marker_arriving_after_the_newer_one_changes_nothing(monkeypatch: pytest.MonkeyPatch) -> None:
    """A scripted run: a bridge shows a direct message and issues its markers, held back; then it shows the next
    one and its newer markers go out and arrive first. The stale markers, delivered last, must not shrink what
    the newer ones cover, and every peer ends up holding the newer ones only."""
    machine = ConvergenceMachine()
    steps = [
        lambda: machine.start(n=3),
        lambda: machine.dm(index=0, which=0, to_peer=1, to_which=0),
        lambda: machine.dm(index=0, which=0, to_peer=1, to_which=0),
        lambda: machine.net.settle(),
        lambda: machine.show(index=1, which=0, picks={0}, read=True, hold=True),
        lambda: machine.net.settle(),
        lambda: machine.deliver_stale(pick=0),
        lambda: machine.deliver_stale(pick=0),
        lambda: machine.deliver_many(pick=1),
    ]
    _run(machine, steps, monkeypatch)
    assert machine.stale_delivered


def test_a_message_merged_from_a_cut_off_peer_is_not_covered_by_earlier_markers(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A scripted run: peer 2 is cut off and speaks in the lobby and to agent-1-0; meanwhile agent-1-0's bridge
    reads everything it holds and issues its markers. Once merged, the late messages count as unread."""
    machine = ConvergenceMachine()
    steps = [
        lambda: machine.start(n=3),
        lambda: machine.send(index=0, which=0, name="lobby", text="hi"),
        lambda: machine.net.settle(),
        lambda: machine.speak_cut_off(index=2, which=0, name="lobby", to_peer=1, to_which=0),
        lambda: machine.show(index=1, which=0, picks=set(range(6)), read=True, hold=False),
        lambda: machine.heal(),
        lambda: machine.net.settle(),
        lambda: machine.show(index=1, which=0, picks=set(), read=True, hold=False),
    ]
    _run(machine, steps, monkeypatch)
    assert machine.partitioned
    state = machine.net.peers[0].replica.state  # type: ignore[union-attr]
    late = [op for op in state.messages.values() if op.body.content == "from afar"]  # type: ignore[union-attr]
    assert len(late) == 2
    assert all(state.receipt_status(op_id(op), "agent-1-0") is None for op in late)
    assert machine.shown_to["agent-1-0"]
