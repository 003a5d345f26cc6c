"""Rule 9 of the peer: a peer is *synced* once its first anti-entropy round with the mesh is done, and no later
than its bounds (see peernet.py for the simulated machine).

Testing policy: the invariant is checked after every single delivery of the simulated network (a synced peer holds
everything the mesh held when it started); the bounds are asserted as exact virtual times.
"""

from __future__ import annotations

import random

from peernet import COORDINATOR_PORT, Node, PeerNet

from agent_comms.protocol.ops import AgentUpsert, RoomCreate
from agent_comms.protocol.peer import Peer, PeerConfig


def record(agent_id: str) -> AgentUpsert:
    return AgentUpsert(agent_id, "", 0, 0, agent_id, "test", "/w", 1, 1.0)


def test_alone_on_the_mesh_a_peer_is_synced_at_once() -> None:
    net = PeerNet()
    a = net.spawn("a").peer
    assert a.is_coordinator
    assert a.synced
    assert net.now == 0.0


def test_a_newcomer_is_synced_only_once_it_holds_what_every_peer_held() -> None:
    net = PeerNet()
    for name in "abc":
        net.spawn(name)
        node = net.nodes[name]
        net._run(node, node.peer.host_agent(record(f"agent-{name}"), net.now))
        net.settle()
    a = net.nodes["a"].peer
    room = RoomCreate(a.replica.next_op_id(), "general", "public", "", "agent-a", a.hosted["agent-a"].incarnation)
    net._run(net.nodes["a"], a.submit(room, net.now))
    net.settle()
    assert net.nodes["c"].peer.replica.state.room("general") is not None
    expected = {f"agent-{name}" for name in "abc"}

    node = _unstarted(net, "d")
    d = node.peer
    net._run(node, d.start(net.now))
    seen_unsynced = False
    while net.queue:
        name, kind, args = net.queue.popleft()
        net._dispatch(name, kind, args)
        if d.synced:
            assert set(d.replica.state.agents) >= expected, "synced before every peer's agents arrived"
            assert d.replica.state.room("general") is not None, "synced before the room arrived"
        else:
            seen_unsynced = True
    assert seen_unsynced  # it did have to wait for the round
    assert d.synced
    assert net.now == 0.0  # one round trip, no timer


def _unstarted(net: PeerNet, name: str) -> Node:
    """A peer process that listens but has not started yet (``net.spawn`` would also settle the network)."""
    port = net._next_port
    net._next_port += 1
    peer = Peer.create(
        key=net.nodes["a"].peer.key,
        config=net.config,
        rng=random.Random(123),
        pid=4000,
        started_at=net.now,
        data_port=port,
    )
    net.ports[port] = name
    net.registry[peer.peer_id] = peer.info
    node = net.nodes[name] = Node(name, peer)
    return node


def test_a_stopped_coordinator_holds_a_newcomer_up_for_the_handshake_timeout_only() -> None:
    net = PeerNet()
    for name in "abc":
        net.spawn(name)
    net.stop("a")
    d = net.spawn("d").peer
    assert not d.synced  # the process on the port has not answered yet
    config = net.config
    bound = config.handshake_timeout + config.heartbeat_interval / 2  # the timeout is checked every half heartbeat
    while not d.synced:
        net.advance(0.001)
    assert config.handshake_timeout <= net.now <= bound
    assert {net.nodes[n].peer.peer_id for n in "bc"} <= set(d.data_links)


def test_a_stopped_peer_in_the_registry_holds_a_newcomer_up_for_the_handshake_timeout_only() -> None:
    net = PeerNet()
    for name in "abc":
        net.spawn(name)
    net.stop("b")
    d = net.spawn("d").peer
    assert not d.synced
    config = net.config
    while not d.synced:
        net.advance(0.001)
    assert config.handshake_timeout <= net.now <= config.handshake_timeout + config.heartbeat_interval / 2
    assert net.nodes["c"].peer.peer_id in d.data_links


def test_ready_timeout_bounds_any_other_stall() -> None:
    """With handshakes allowed to take long, a stopped peer would hold the newcomer up: ``ready_timeout`` ends it."""
    config = PeerConfig(coordinator_port=COORDINATOR_PORT, handshake_timeout=30.0, link_timeout=30.0)
    net = PeerNet(config=config)
    for name in "ab":
        net.spawn(name)
    net.stop("b")
    d = net.spawn("d").peer
    while not d.synced:
        net.advance(0.001)
    assert config.ready_timeout <= net.now < config.ready_timeout + 0.002  # stepped by 1 ms
    assert net.nodes["a"].peer.peer_id in d.data_links
