"""``Peer.request_sync`` / ``Peer.synced_with``: how a one-shot command knows the mesh holds what it made.

Driven through the in-memory peer network (peernet.py) one network event at a time, so the test sees the exact
moment an answer counts and can check that the answering peer already holds the operation at that moment.
"""

from __future__ import annotations

from peernet import PeerNet

from agent_comms.protocol.ops import AgentUpsert, RoomMessage, op_id


def _mesh(*names: str) -> PeerNet:
    net = PeerNet()
    for name in names:
        net.spawn(name)
        net.advance(0.01)
    assert net.fully_linked()
    return net


def test_an_answer_counts_only_once_the_peer_holds_the_operations_made_before_the_request() -> None:
    net = _mesh("a", "b", "c")
    b = net.nodes["b"]
    net._run(b, b.peer.host_agent(AgentUpsert("h", "", 0, 0, "h", "human", "/w", 1, 1.0), net.now))
    net.settle()
    before = net.now
    commands = b.peer.submit(RoomMessage("room-x", "h", b.peer.hosted["h"].incarnation, "hello"), before)
    [message] = [op for op in b.peer.replica.state.messages.values() if op.origin == b.peer.peer_id]
    marks, more = b.peer.request_sync(before)
    net._run(b, commands + more)
    assert b.peer.synced_with(marks) == []
    others = {net.nodes[n].peer.peer_id: n for n in ("a", "c")}
    seen: set[str] = set()
    steps = 0
    # One network event or timer at a time: an answer may wait for sync_answer_interval (a peer coalesces the
    # requests of a link that come too soon after its last answer).
    while seen != set(others) and steps < 10_000 and _step(net):
        steps += 1
        for peer_id in b.peer.synced_with(marks):
            # The moment a peer counts as having answered, it already holds the message.
            assert op_id(message) in net.nodes[others[peer_id]].peer.replica.state.messages
            seen.add(peer_id)
    assert steps > 0
    assert seen == set(others)
    assert b.peer.synced_with(marks) == sorted(others)


def _step(net: PeerNet) -> bool:
    """Deliver the next network event, else fire the next timer; ``False`` when nothing is left to do."""
    if net.queue:
        net._dispatch(*net.queue.popleft())
        return True
    due = [
        (timer, node.name)
        for node in net.nodes.values()
        if node.alive and not node.stopped and (timer := node.peer.get_timer()) is not None
    ]
    if not due:
        return False
    timer, name = min(due)
    net.now = max(net.now, timer)
    node = net.nodes[name]
    net._run(node, node.peer.handle_timer(net.now))
    return True


def test_a_peer_whose_link_closed_before_answering_does_not_count() -> None:
    net = _mesh("a", "b", "c")
    b = net.nodes["b"]
    marks, commands = b.peer.request_sync(net.now)
    assert len(marks) == 2
    net._run(b, commands)
    net.kill("c")  # its link resets; what it would have answered never comes
    net.advance(0.5)  # past sync_answer_interval: a request that came soon after the join's sync is answered
    assert b.peer.synced_with(marks) == [net.nodes["a"].peer.peer_id]


def test_without_links_there_is_nothing_to_wait_for() -> None:
    net = _mesh("a")
    a = net.nodes["a"]
    marks, commands = a.peer.request_sync(net.now)
    assert (marks, commands) == ({}, [])
    assert a.peer.synced_with(marks) == []


def test_every_request_is_answered_once_in_order() -> None:
    net = _mesh("a", "b")
    b = net.nodes["b"]
    first, commands = b.peer.request_sync(net.now)
    second, more = b.peer.request_sync(net.now)
    [link_id] = first
    assert second[link_id] == first[link_id] + 1
    net._run(b, commands)  # only the first request goes out for now
    net.advance(0.5)  # past sync_answer_interval: a request that came soon after the join's sync is answered
    a_id = net.nodes["a"].peer.peer_id
    assert b.peer.synced_with(first) == [a_id]
    assert b.peer.synced_with(second) == []
    net._run(b, more)
    net.advance(0.5)
    assert b.peer.synced_with(second) == [a_id]
