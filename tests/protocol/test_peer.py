"""The peer state machine in an in-memory network under virtual time (see peernet.py).

Testing policy: every scenario starts from spawned peers, acts through the same inputs a runtime would give
(dials, binds, frames, closes, timers), and asserts the mesh-level outcome (who is coordinator, who is linked to
whom, what replicated) and, where timing is the point, the virtual time it took.
"""

from __future__ import annotations

import pytest
from peernet import COORDINATOR_PORT, PeerNet

from agent_comms.protocol.commands import CloseLink, Dial, Send
from agent_comms.protocol.links import DialPeer
from agent_comms.protocol.ops import AgentUpsert, Op, RoomMessage
from agent_comms.protocol.wire import Ops


def record(agent_id: str) -> AgentUpsert:
    return AgentUpsert(agent_id, "", 0, 0, agent_id, "test", "/w", 1, 1.0)


def online(net: PeerNet, observer: str, agent_id: str) -> bool | None:
    entry = net.nodes[observer].peer.replica.state.agents.get(agent_id)
    return None if entry is None or entry.record is None else entry.online


def test_first_peer_becomes_coordinator_and_others_link_to_everyone() -> None:
    net = PeerNet()
    for name in "abcd":
        net.spawn(name)
        net.advance(0.01)
    assert net.coordinators() == ["a"]
    assert net.fully_linked()
    coordinator_id = net.nodes["a"].peer.peer_id
    assert all(n.peer.coordinator_id == coordinator_id for n in net.live())


def test_operations_replicate_and_late_joiner_catches_up() -> None:
    net = PeerNet()
    net.spawn("a")
    net.spawn("b")
    b = net.nodes["b"]
    net._run(b, b.peer.host_agent(record("agent-b"), net.now))
    net.settle()
    assert online(net, "a", "agent-b") is True
    net.spawn("c")  # anti-entropy on its new links brings it everything
    assert online(net, "c", "agent-b") is True
    digests = {n.peer.replica.state.digest() for n in net.live()}
    assert len(digests) == 1


def test_graceful_handover_to_the_longest_running_peer() -> None:
    net = PeerNet()
    for name in "abc":
        net.spawn(name)
        net.advance(0.01)
    net.graceful("a")
    net.advance(0.05)
    assert net.coordinators() == ["b"]  # b started before c
    net.spawn("d")
    net.advance(0.05)
    assert net.fully_linked()
    assert {n.peer.coordinator_id for n in net.live()} == {net.nodes["b"].peer.peer_id}


def test_graceful_leave_marks_agents_offline_at_once() -> None:
    net = PeerNet()
    net.spawn("a")
    net.spawn("b")
    b = net.nodes["b"]
    net._run(b, b.peer.host_agent(record("agent-b"), net.now))
    net.settle()
    net.graceful("b")
    assert online(net, "a", "agent-b") is False


def test_crash_of_the_coordinator_fails_over_within_milliseconds() -> None:
    net = PeerNet()
    for name in "abcdefgh":
        net.spawn(name)
        net.advance(0.01)
    a = net.nodes["a"]
    net._run(a, a.peer.host_agent(record("agent-a"), net.now))
    net.settle()
    crashed_at = net.now
    net.kill("a")
    # b ranks first among the survivors and binds at once; the others bind later, fail, and dial b.
    net.advance(0.001)
    assert net.coordinators() == ["b"]
    net.advance(0.05)
    survivors = net.live()
    assert all(n.peer.coordinator_id == net.nodes["b"].peer.peer_id for n in survivors)
    assert len(net.nodes["b"].peer.introduced) == len(survivors) - 1
    assert all(online(net, n.name, "agent-a") is False for n in survivors)
    assert net.now - crashed_at <= 0.06
    net.spawn("late")
    net.advance(0.01)
    assert net.fully_linked()
    assert online(net, "late", "agent-a") is False


def test_link_silence_closes_after_link_timeout_and_agents_go_offline() -> None:
    net = PeerNet()
    for name in "abc":
        net.spawn(name)
    c = net.nodes["c"]
    net._run(c, c.peer.host_agent(record("agent-c"), net.now))
    net.settle()
    stopped_at = net.now
    net.stop("c")
    net.advance(net.config.link_timeout - 0.01)
    assert online(net, "a", "agent-c") is True  # heartbeats not yet overdue
    net.advance(0.3)
    assert online(net, "a", "agent-c") is False
    assert net.nodes["c"].peer.peer_id not in net.nodes["a"].peer.data_links
    assert net.now - stopped_at < net.config.link_timeout + 0.3
    # Continued, it finds its links gone, rejoins the same mesh and refutes the offline verdict.
    net.cont("c")
    net.advance(0.5)
    assert net.fully_linked()
    assert online(net, "a", "agent-c") is True
    assert net.coordinators() == ["a"]


def test_stopped_coordinator_newcomer_meets_the_mesh_through_the_registry() -> None:
    net = PeerNet()
    for name in "abc":
        net.spawn(name)
    net.stop("a")
    start = net.now
    net.spawn("d")
    net.advance(3.0)
    d = net.nodes["d"].peer
    assert {net.nodes["b"].peer.peer_id, net.nodes["c"].peer.peer_id} <= set(d.data_links)
    joined = net.fully_linked(["b", "c", "d"])
    assert joined
    assert net.now - start <= 3.0
    net.cont("a")
    net.advance(1.0)
    assert net.coordinators() == ["a"]
    assert net.fully_linked()


def test_simultaneous_dials_leave_exactly_one_link_per_pair() -> None:
    net = PeerNet()
    for name in "abc":
        net.spawn(name)
    b, c = net.nodes["b"], net.nodes["c"]
    # Drop the b-c link, then have both re-discover each other at the same instant.
    link = b.peer.data_links[c.peer.peer_id]
    net._run(b, [CloseLink(link, "test")])
    net._run(b, b.peer.link_closed(link, net.now, "test"))
    net.settle()
    net._run(b, b.peer.peers_discovered([c.peer.info], net.now))
    net._run(c, c.peer.peers_discovered([b.peer.info], net.now))
    net.advance(0.05)
    assert net.fully_linked()
    b_links = [e for e in b.peer.links.values() if e.peer_id == c.peer.peer_id and e.purpose == "data"]
    assert len(b_links) == 1


def test_operation_forged_for_another_origin_closes_the_link() -> None:
    net = PeerNet()
    for name in "abc":
        net.spawn(name)
    a, b, c = net.nodes["a"], net.nodes["b"], net.nodes["c"]
    forged = Op(c.peer.peer_id, 99, 1, RoomMessage("r", "x", 1, "forged"))
    link = b.peer.data_links[a.peer.peer_id]
    net._run(b, [Send(link, (Ops((forged,)),))])
    net.settle()
    assert b.peer.peer_id not in a.peer.data_links
    assert "forged" not in [getattr(op.body, "content", "") for op in a.peer.replica.state.stored_ops()]
    assert c.peer.peer_id in a.peer.data_links  # other links unaffected


def test_peer_with_a_foreign_key_cannot_join() -> None:
    net = PeerNet()
    net.spawn("a")
    net.spawn("b")
    intruder = net.spawn("intruder", key=b"\x01" * 32)
    net.advance(0.5)
    assert not intruder.peer.data_links
    assert intruder.peer.peer_id not in net.nodes["a"].peer.known
    assert net.fully_linked(["a", "b"])


@pytest.mark.parametrize("peers", [4, 16])
def test_join_into_many_peers_is_immediate(peers: int) -> None:
    net = PeerNet()
    for i in range(peers):
        net.spawn(f"p{i}")
    before = net.now
    net.spawn("new")
    assert net.fully_linked()
    assert net.now == before  # no timer needed: introductions and links complete without waiting
    assert net.coordinators() == ["p0"]
    assert COORDINATOR_PORT in net.ports


def test_a_newcomer_taking_the_port_during_a_handover_is_followed_by_the_named_successor() -> None:
    net = PeerNet()
    for name in "abc":
        net.spawn(name)
    a = net.nodes["a"]
    leaving = a.peer.close(net.now)
    del net.ports[COORDINATOR_PORT]  # the old coordinator lets go of the port...
    newcomer = net.spawn("new")  # ...and a newcomer grabs it before the named successor does
    assert newcomer.peer.is_coordinator
    net._run(a, leaving)  # now the handover naming b arrives
    net.settle()
    net.kill("a")
    net.advance(1.0)
    assert net.coordinators() == ["new"]
    assert net.fully_linked()
    b = net.nodes["b"].peer
    assert b.coordinator_link is not None
    assert all(n.peer.coordinator_id == newcomer.peer.peer_id for n in net.live())


def test_a_newcomer_links_to_registered_peers_without_waiting_for_the_coordinator() -> None:
    net = PeerNet()
    for name in "abc":
        net.spawn(name)
    net.stop("a")  # the coordinator holds the port but answers nothing
    d = net.spawn("d")
    # No time has passed: the registry alone brought the links.
    assert {net.nodes["b"].peer.peer_id, net.nodes["c"].peer.peer_id} <= set(d.peer.data_links)


def test_two_dials_by_one_peer_to_the_same_peer_leave_one_link_at_both_ends() -> None:
    """The registry and the coordinator's list can both make a newcomer dial the same peer. If the two handshakes
    finish in one order at one end and in the other order at the other end, both ends must still keep the same
    one of the two links (an earlier version kept different ones and so closed both)."""
    net = PeerNet()
    net.spawn("a")
    b = net.spawn("b")
    c = net.spawn("c")
    link = b.peer.data_links[c.peer.peer_id]
    net._run(b, [CloseLink(link, "test")])
    net._run(b, b.peer.link_closed(link, net.now, "test"))
    net.settle()
    dials = [Dial(b.peer._new_link_id(), c.peer.info.data_port, "data", c.peer.peer_id) for _ in range(2)]
    for dial in dials:
        b.peer._pending_dials[dial.link_id] = DialPeer(c.peer.peer_id)
    net._run(b, dials)
    # Deliver everything, except that b's proofs reach c link by link in reverse order (frames within one link
    # keep their order, as TCP keeps them): c then finishes the second handshake first, b the first one first.
    held: dict[int, list[tuple[str, str, tuple[object, ...]]]] = {}
    released = False
    while net.queue:
        name, kind, args = event = net.queue.popleft()
        if not released and name == "c" and kind == "frame" and args[0] == "b":
            entry = c.peer.links.get(args[2])  # type: ignore[arg-type]
            if entry is not None and entry.handshake.state.value == "await-proof":
                held.setdefault(entry.link_id, []).append(event)
                if len(held) == 2:
                    for link_id in sorted(held, reverse=True):
                        net.queue.extend(held[link_id])
                    released = True
                continue
        net._dispatch(name, kind, args)
    net.advance(0.1)
    assert c.peer.peer_id in b.peer.data_links
    assert b.peer.peer_id in c.peer.data_links
    assert net.fully_linked()


def test_a_starting_peer_moves_its_forgetting_horizon_at_once() -> None:
    """Whether an old claim of a forgotten agent counts (state rule 8) must not wait for the first periodic
    collection: a bridge that comes back the next morning on a new peer sees its rooms from the start."""
    net = PeerNet()
    net.now = 10_000.0
    node = net.spawn("a")
    retention_ms = int(net.config.offline_retention * 1000)
    assert node.peer.replica.state.horizon >> 16 == 10_000_000 - retention_ms


def test_a_host_claims_its_agent_again_when_a_newer_host_releases_it() -> None:
    """Two bridges hosted one identity (a restart before the old one ended): when the newer releases the agent,
    the older host, still running it, claims it again above every claim, so the mesh sees it online and what it
    does from then on is made under its newest claim (the rules of forgetting rely on that)."""
    net = PeerNet()
    net.spawn("a")
    net.spawn("b")
    a, b = net.nodes["a"], net.nodes["b"]
    net._run(a, a.peer.host_agent(record("agent-x"), net.now))
    net.settle()
    net._run(b, b.peer.host_agent(record("agent-x"), net.now))
    net.settle()
    newer = b.peer.hosted["agent-x"].incarnation
    assert a.peer.hosted["agent-x"].incarnation < newer
    net._run(b, b.peer.release_agent("agent-x", net.now))
    net.settle()
    assert a.peer.hosted["agent-x"].incarnation > newer
    for observer in "ab":
        assert online(net, observer, "agent-x") is True
        entry = net.nodes[observer].peer.replica.state.agents["agent-x"]
        assert (entry.body.incarnation, entry.body.peer_id) == (a.peer.hosted["agent-x"].incarnation, a.peer.peer_id)
