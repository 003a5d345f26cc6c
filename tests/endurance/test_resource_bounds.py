"""Every per-peer structure that grows with traffic or churn has a limit, and the limit holds under more input.

Limits (documented in docs/reliability.md): messages per conversation (history), events queued per hosted agent
(inbox), event ids remembered per agent (de-duplication), claims per agent, offline agents (forgotten after
``offline_retention``), the sequence bookkeeping of anti-entropy (gaps closed by the answer's floors; origins that
left forgotten), and bytes and writes queued per link.
"""

from __future__ import annotations

import random
import sys
from pathlib import Path

import pytest
import trio
import trio.testing

# The in-memory network of protocol state machines lives beside the protocol tests.
sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "protocol"))

from peernet import COORDINATOR_PORT, Node, PeerNet

from agent_comms.mesh.network import MemoryNetwork
from agent_comms.mesh.node import MeshNode, open_node
from agent_comms.protocol.ops import AgentUpsert, Body, DirectMessage, Membership, RoomCreate, RoomMessage
from agent_comms.protocol.peer import PeerConfig
from agent_comms.protocol.replica import Replica
from agent_comms.protocol.state import MAX_CLAIMS
from agent_comms.store import INBOX_LIMIT, MeshStore
from agent_comms.testing import open_in_memory_mesh


def agent(agent_id: str, peer_id: str = "", incarnation: int = 0, version: int = 0) -> AgentUpsert:
    return AgentUpsert(agent_id, peer_id, incarnation, version, agent_id, "test", "/w", 0, 0.0)


def submit(net: PeerNet, node: Node, body: Body) -> None:
    net._run(node, node.peer.submit(body, net.now))
    net.settle()


def host(net: PeerNet, node: Node, agent_id: str) -> int:
    net._run(node, node.peer.host_agent(agent(agent_id), net.now))
    net.settle()
    return node.peer.hosted[agent_id].incarnation


def update(net: PeerNet, node: Node, agent_id: str, **changes: object) -> None:
    net._run(node, node.peer.update_agent(agent_id, net.now, **changes))
    net.settle()


# ------------------------------------------------------------------ anti-entropy bookkeeping


def test_the_answer_floors_close_gaps_left_by_superseded_operations() -> None:
    """A late joiner never receives the superseded versions of a record, so without the answer's floors its floor
    for that origin stays below them and every later operation of the origin is remembered one by one, forever."""
    a = Replica.create("A")
    a.make(agent("x", "A", 7), 1)  # seq 1: the claim's first record
    for version in range(1, 6):  # seq 2-6: newer versions; only the last is kept (as record and claim)
        a.make(agent("x", "A", 7, version), 2)
    b = Replica.create("B")
    b.receive_many(a.sync_answer(b.sync_request()))
    assert b.seen["A"].floor == 0
    assert b.seen["A"].extra == {6}
    b.adopt_floors(a.floors())
    assert b.seen["A"].floor == 6
    assert b.seen["A"].extra == set()
    for n in range(3000):
        message, _ = a.make(DirectMessage("x", 7, "y", f"m{n}"), 3)
        b.receive(message)
    assert b.seen["A"].extra == set()
    assert b.state.digest() == a.state.digest()


def test_a_floor_is_never_raised_beyond_what_was_seen() -> None:
    a, b = Replica.create("A"), Replica.create("B")
    first, _ = a.make(agent("x", "A", 1), 1)
    b.receive(first)
    b.adopt_floors({"A": 10_000, "C": 5})  # a wrong or hostile floor
    assert b.seen["A"].floor == 1
    assert "C" not in b.seen
    later, _ = a.make(agent("y", "A", 2), 2)
    assert b.receive(later) != []  # still applied: the floor did not swallow it


def test_peers_linked_after_updates_keep_no_gaps_while_traffic_flows() -> None:
    """Through the real peer state machines: the final SyncOps frame carries the floors and the joiner adopts them."""
    net = PeerNet()
    a = net.spawn("a")
    host(net, a, "x")
    for n in range(5):
        update(net, a, "x", status="busy" if n % 2 else "idle")
    b = net.spawn("b")
    net.advance(1.0)
    assert net.fully_linked()
    inc = a.peer.hosted["x"].incarnation
    for n in range(2000):
        submit(net, a, DirectMessage("x", inc, "y", f"m{n}"))
    seen = b.peer.replica.seen[a.peer.peer_id]
    assert len(seen.extra) == 0
    assert seen.floor == a.peer.replica.seq


# ------------------------------------------------------------------ offline agents


def test_offline_agents_are_forgotten_after_the_retention_and_live_ones_are_kept() -> None:
    config = PeerConfig(coordinator_port=COORDINATOR_PORT, offline_retention=20.0, gc_interval=1.0)
    net = PeerNet(config=config)
    a, b = net.spawn("a"), net.spawn("b")
    net.advance(1.0)
    host(net, a, "live")
    for n in range(50):  # churn: fifty agents come and go
        host(net, b, f"gone-{n}")
        net._run(b, b.peer.release_agent(f"gone-{n}", net.now))
        net.settle()
    assert len(a.peer.replica.state.agents) == 51
    net.advance(10.0)
    assert len(a.peer.replica.state.agents) == 51  # not yet: retention is 20 s
    net.advance(15.0)
    for node in (a, b):
        assert set(node.peer.replica.state.agents) == {"live"}
    # The live agent was re-stamped within the retention, so a peer that starts now still learns it.
    net.advance(60.0)
    c = net.spawn("c")
    net.advance(3.0)
    assert set(c.peer.replica.state.agents) == {"live"}
    assert c.peer.replica.state.agents["live"].online
    digests = {n.peer.replica.state.digest() for n in (a, b, c)}
    assert len(digests) == 1


def test_sequence_bookkeeping_of_departed_peers_is_forgotten() -> None:
    config = PeerConfig(coordinator_port=COORDINATOR_PORT, offline_retention=60.0, gc_interval=1.0)
    net = PeerNet(config=config)
    a = net.spawn("a")
    for n in range(20):  # twenty short-lived peers, each hosting an agent that dies with it
        other = net.spawn(f"p{n}")
        net.advance(0.5)
        host(net, other, f"agent-{n}")
        net.kill(f"p{n}")
        net.advance(0.5)
    assert len(a.peer.replica.seen) > 20
    net.advance(70.0)
    assert a.peer.replica.state.agents == {}
    # Kept for twice the retention after each origin's last operation and a retention after nothing of it is
    # held: a replica collecting later may still offer what was forgotten here, and the floors are what refuse it.
    assert len(a.peer.replica.seen) > 20
    net.advance(60.0)  # twice the retention after their last operations: found empty only now
    assert len(a.peer.replica.seen) > 20
    net.advance(60.0)
    assert set(a.peer.replica.seen) == {a.peer.peer_id}
    assert a.peer.replica.last_stamp.keys() == {a.peer.peer_id}


def test_claims_per_agent_are_bounded() -> None:
    net = PeerNet()
    a = net.spawn("a")
    for _ in range(3 * MAX_CLAIMS):  # a bridge restarting again and again claims its agent anew each time
        host(net, a, "x")
        net.advance(0.01)
    assert len(a.peer.replica.state.agents["x"].claims) == MAX_CLAIMS


# ------------------------------------------------------------------ histories and inboxes


async def test_histories_and_inboxes_stay_within_their_limits() -> None:
    limit = 50
    async with open_in_memory_mesh(history_limit=limit) as mesh:
        alice = await mesh.agent("h1", name="alice")
        bob = await mesh.agent("h2", name="bob")
        assert (await alice.call({"action": "create_room", "room": "r"})).is_error is False
        await mesh.settle()
        assert (await bob.call({"action": "join_room", "room": "r"})).is_error is False
        await mesh.settle()
        for n in range(3 * limit):
            await alice.call({"action": "send", "target": "r", "content": f"post {n}"})
            await alice.call({"action": "dm", "target": bob.id, "content": f"dm {n}"})
        await mesh.settle()
        state = bob.store.state
        assert all(len(h) == limit for h in state.histories.values())
        assert len(state.messages) == 2 * limit
        assert all(len(slot) <= 2 for slot in state.receipts.values())  # delivered + read, one claim
        assert sum(len(heap) for heap in state.orphan_receipts.values()) <= 2 * limit


async def test_a_flood_past_the_inbox_limit_shows_every_delivered_message_exactly_once() -> None:
    """The inbox holds at most ``INBOX_LIMIT`` events; what does not fit is not acknowledged as delivered and
    comes from the state once there is room again. Nothing acknowledged as delivered is lost. (Two senders: each
    conversation stays within its history.)"""
    extra = 300
    async with open_in_memory_mesh() as mesh:
        senders = [await mesh.agent("h1", name="alice"), await mesh.agent("h1", name="carol")]
        bob = await mesh.agent("h2", name="bob")
        sent = [
            await senders[n % 2].call({"action": "dm", "target": bob.id, "content": f"dm {n}"})
            for n in range(INBOX_LIMIT + extra)
        ]
        assert not any(result.is_error for result in sent)
        await mesh.settle()
        assert isinstance(bob.store, MeshStore)
        state = bob.store.state
        waiting = {e.message_id for e in bob.store.pending(bob.id)}
        assert len(waiting) == INBOX_LIMIT
        acknowledged = {m for m in state.messages if state.receipt_status(m, bob.id) is not None}
        assert acknowledged <= waiting, f"{len(acknowledged - waiting)} messages acknowledged as delivered are lost"
        shown: list[str] = []
        while drained := bob.drain():  # each drain makes room: what did not fit comes next
            shown += [e.content for e in drained if e.type == "dm"]
            await mesh.settle()
        assert len(shown) == INBOX_LIMIT + extra  # each once
        assert set(shown) == {f"dm {n}" for n in range(INBOX_LIMIT + extra)}
        assert all(state.receipt_status(m, bob.id) == "read" for m in state.messages)


# ------------------------------------------------------------------ per-link queues


@pytest.fixture
def autojump_clock() -> trio.testing.MockClock:
    return trio.testing.MockClock(autojump_threshold=0)


async def test_a_link_whose_queue_outgrows_its_byte_limit_is_closed(autojump_clock: trio.testing.MockClock) -> None:
    """A peer whose socket stops taking bytes (stopped process, full buffer) cannot make the sender hold an
    unbounded queue: past ``link_queue_bytes`` the link is closed; the peer catches up by anti-entropy later, even
    when what it lacks is more than ``link_queue_bytes`` (an anti-entropy answer is owed, not a backlog)."""
    network = MemoryNetwork()
    rng = random.Random(5)
    async with trio.open_nursery() as nursery:
        nodes: dict[str, MeshNode] = {}

        async def run(name: str, task_status: trio.TaskStatus[None]) -> None:
            async with open_node(
                bytes(32),
                port=COORDINATOR_PORT,
                network=network.host(name),
                config=PeerConfig(coordinator_port=COORDINATOR_PORT),
                rng=random.Random(rng.getrandbits(64)),
                probe_processes=False,
            ) as node:
                nodes[name] = node
                task_status.started()
                await trio.sleep_forever()

        await nursery.start(run, "a")
        await trio.sleep(0.01)
        await nursery.start(run, "b")
        a, b = nodes["a"], nodes["b"]
        with trio.fail_after(5):
            await a.wait_for(lambda: b.peer_id in a.peer.data_links)
        a.link_queue_bytes = 256 * 1024
        a.host_agent(agent("x"))
        a.submit(RoomCreate(a.peer.replica.next_op_id(), "r", "public", "", "x", a.peer.hosted["x"].incarnation))
        room_id = next(iter(a.peer.replica.state.rooms))
        link = a.peer.data_links[b.peer_id]
        network.freeze("a")  # a's sockets take nothing: its writer blocks, its queue grows
        peak = 0
        for n in range(400):
            a.submit(RoomMessage(room_id, "x", a.peer.hosted["x"].incarnation, f"{n:04d} " + "x" * 4000))
            peak = max(peak, a.queued_bytes(link))
            if b.peer_id not in a.peer.data_links:
                break
        assert b.peer_id not in a.peer.data_links, "the link outlived its byte limit"
        assert n < 100  # closed as soon as the limit was passed, long before the heartbeat timeout could
        assert peak <= a.link_queue_bytes
        # More while the link is down, so b lacks more than the limit whatever the closed link still delivers.
        for m in range(80):
            a.submit(RoomMessage(room_id, "x", a.peer.hosted["x"].incarnation, f"late {m:04d} " + "x" * 4000))
        network.thaw("a")
        # Both live on, so the link is repaired within an anti-entropy interval (rule 8 of the peer).
        with trio.fail_after(2 * a.peer.config.anti_entropy_interval + 1):
            await a.wait_for(lambda: b.peer_id in a.peer.data_links)
            await b.wait_for(lambda: b.peer.replica.state.digest() == a.peer.replica.state.digest())
        nursery.cancel_scope.cancel()


async def test_a_peer_behind_by_more_than_the_queue_limit_catches_up(autojump_clock: trio.testing.MockClock) -> None:
    """The anti-entropy answer to a peer that lacks more than ``link_queue_bytes`` is larger than the limit; it is
    sent whole (the other end reads it), where counting it as a backlog closed every link to that peer, forever."""
    network = MemoryNetwork()
    rng = random.Random(7)
    async with trio.open_nursery() as nursery:
        nodes: dict[str, MeshNode] = {}

        async def run(name: str, task_status: trio.TaskStatus[None]) -> None:
            async with open_node(
                bytes(32),
                port=COORDINATOR_PORT,
                network=network.host(name),
                config=PeerConfig(coordinator_port=COORDINATOR_PORT),
                rng=random.Random(rng.getrandbits(64)),
                probe_processes=False,
            ) as node:
                nodes[name] = node
                task_status.started()
                await trio.sleep_forever()

        await nursery.start(run, "a")
        a = nodes["a"]
        a.link_queue_bytes = 256 * 1024
        a.host_agent(agent("x"))
        incarnation = a.peer.hosted["x"].incarnation
        a.submit(RoomCreate(a.peer.replica.next_op_id(), "r", "public", "", "x", incarnation))
        room_id = next(iter(a.peer.replica.state.rooms))
        for n in range(100):  # about 400 kB: half as much again as the limit
            a.submit(RoomMessage(room_id, "x", incarnation, f"{n:04d} " + "x" * 4000))
        await trio.sleep(0.01)
        await nursery.start(run, "b")
        b = nodes["b"]
        with trio.fail_after(2 * a.peer.config.anti_entropy_interval + 1):
            await a.wait_for(lambda: b.peer_id in a.peer.data_links)
            first = a.peer.data_links[b.peer_id]
            await b.wait_for(lambda: b.peer.replica.state.digest() == a.peer.replica.state.digest())
        assert a.peer.data_links[b.peer_id] == first  # caught up on its first link, which was never closed
        nursery.cancel_scope.cancel()


# ------------------------------------------------------------------ repair of lost links


@pytest.mark.parametrize("pair", [("a", "b"), ("b", "c")])
def test_a_data_link_lost_between_two_live_peers_is_dialed_again(pair: tuple[str, str]) -> None:
    """Before repair (peer rule 8), two live peers that lost their data link (one timed it out while the other was
    stopped) stayed unlinked for good, and operations between them travelled only by luck of anti-entropy."""
    net = PeerNet()
    for name in "abc":
        net.spawn(name)
    net.advance(1.0)
    assert net.fully_linked()
    assert net.coordinators() == ["a"]
    first, second = (net.nodes[n] for n in pair)
    link = first.peer.data_links[second.peer.peer_id]
    for owner, link_id in [(first.name, link), net.wires[(first.name, link)]]:
        net.wires.pop((owner, link_id), None)
        net.queue.append((owner, "closed", (link_id, "connection reset")))
    net.settle()
    assert second.peer.peer_id not in first.peer.data_links
    net.advance(2 * net.config.anti_entropy_interval + 1.0)
    assert net.fully_linked()


# ------------------------------------------------------------------ destroyed rooms


def test_destroyed_rooms_are_forgotten_after_the_retention_and_stay_forgotten() -> None:
    config = PeerConfig(coordinator_port=COORDINATOR_PORT, offline_retention=20.0, gc_interval=1.0)
    net = PeerNet(config=config)
    a, b = net.spawn("a"), net.spawn("b")
    net.advance(1.0)
    inc = host(net, a, "owner")
    rooms = []
    for n in range(30):  # thirty rooms live, talk and are destroyed; one stays
        room_id = a.peer.replica.next_op_id()
        submit(net, a, RoomCreate(room_id, f"r{n}", "public", "", "owner", inc))
        for m in range(5):
            submit(net, a, RoomMessage(room_id, "owner", inc, f"{n}/{m}"))
        if n:
            submit(net, a, Membership(room_id, "destroy", "owner", inc))
        rooms.append(room_id)
    state = b.peer.replica.state
    assert len(state.rooms) == 30
    assert len(state.messages) == 150
    net.advance(10.0)
    assert len(state.rooms) == 30  # the destroys are younger than the retention
    net.advance(15.0)
    for node in (a, b):
        held = node.peer.replica.state
        assert set(held.rooms) == {rooms[0]}
        assert set(held.room_names) == {"r0"}
        assert len(held.messages) == 5
        assert set(held.histories) == {rooms[0]}
    # An operation for a forgotten room, stamped before the horizon (as a peer that was away all along would
    # offer it by anti-entropy), stays refused.
    before = b.peer.replica.state.digest()
    op, _ = Replica.create("z").make(RoomMessage(rooms[5], "owner", inc, "after the fact"), 1)
    assert b.peer.replica.receive(op) == []
    assert b.peer.replica.state.digest() == before
    assert rooms[5] not in b.peer.replica.state.rooms
