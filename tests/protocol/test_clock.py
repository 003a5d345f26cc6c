"""Wall-clock time under suspends and steps: peers in an in-memory network with per-process clocks (see peernet.py).

A suspend stops a process's monotonic clock while its wall clock goes on; a step moves its wall clock alone. The
peers must stamp with the wall clock as it reads when they stamp, accept each other's operations after any of
these, keep their links, and say once (not per operation or link) that their clock is behind.
"""

from __future__ import annotations

import pytest
from peernet import Node, PeerNet

from agent_comms.protocol.commands import Command
from agent_comms.protocol.hlc import hlc_wall_ms
from agent_comms.protocol.ops import AgentUpsert, DirectMessage, Membership, RoomCreate, RoomMessage, op_key

#: a wall-clock date in 2026 (the simulation's machine time starts there)
START = 1_796_000_000.0
DAY = 24 * 3600.0


def record(agent_id: str) -> AgentUpsert:
    return AgentUpsert(agent_id, "", 0, 0, agent_id, "test", "/w", 1, 1.0)


def act(net: PeerNet, name: str, commands: list[Command]) -> None:
    net._run(net.nodes[name], commands)
    net.settle()


def host(net: PeerNet, name: str) -> None:
    node = net.nodes[name]
    act(net, name, node.peer.host_agent(record(f"agent-{name}"), net.clock(node)))


def dm(net: PeerNet, sender: str, recipient: str, text: str) -> None:
    node = net.nodes[sender]
    me = f"agent-{sender}"
    body = DirectMessage(me, node.peer.hosted[me].incarnation, f"agent-{recipient}", text)
    act(net, sender, node.peer.submit(body, net.clock(node)))


def texts(node: Node) -> set[str]:
    return {op.body.content for op in node.peer.replica.state.messages.values() if isinstance(op.body, DirectMessage)}


def clock_refusals(net: PeerNet) -> list[str]:
    return [reason for node in net.nodes.values() for reason in node.closes if reason.startswith("clock")]


def links(net: PeerNet) -> dict[str, dict[str, int]]:
    return {node.name: dict(node.peer.data_links) for node in net.live()}


def mesh(names: str) -> PeerNet:
    net = PeerNet(now=START)
    for name in names:
        net.spawn(name)
        net.advance(0.01)
        host(net, name)
    net.advance(0.1)
    assert net.fully_linked()
    return net


def exchange(net: PeerNet, names: str, tag: str) -> set[str]:
    """Every agent DMs every other; returns the texts sent."""
    sent = set()
    for sender in names:
        for recipient in names:
            if sender != recipient:
                text = f"{tag} {sender}->{recipient}"
                dm(net, sender, recipient, text)
                sent.add(text)
    return sent


def converged(net: PeerNet) -> bool:
    return net.fully_linked() and len({node.peer.replica.state.digest() for node in net.live()}) == 1


@pytest.mark.parametrize("seconds", [600.0, 2 * DAY])
def test_a_machine_suspend_keeps_peers_started_before_and_after_in_one_mesh(seconds: float) -> None:
    """Regression: the wall time was the monotonic time plus an offset fixed at start, and the monotonic clock
    stands still during a suspend: peers started before it stamped in the past and refused, link after link,
    every operation of a peer started after it ("stamped 580 s ahead of this peer's clock")."""
    net = mesh("ab")
    before = links(net)
    net.suspend(["a", "b"], seconds)  # the whole machine sleeps: every monotonic clock stops, the wall goes on
    assert links(net) == before  # nothing timed out: no monotonic time passed
    net.spawn("c")
    host(net, "c")
    net.advance(0.1)
    sent = exchange(net, "abc", "after")
    net.advance(0.1)
    assert clock_refusals(net) == []
    assert converged(net)
    assert all(sent <= texts(node) for node in net.live())
    assert all(before[name].items() <= now.items() for name, now in links(net).items() if name in before)
    # every stamp made after the suspend reads the wall clock after it
    newest = max(op.hlc for op in net.nodes["a"].peer.replica.state.messages.values())
    assert hlc_wall_ms(newest) >= int((START + seconds) * 1000)


@pytest.mark.parametrize("seconds", [60.0, 600.0])
def test_one_suspended_process_stamps_with_the_wall_clock_when_it_wakes(seconds: float) -> None:
    """One process suspended (its monotonic clock stopped, the others' running): its links time out on the other
    side, and come back; its stamps and checks read the wall clock, so nothing is refused for clock reasons."""
    net = mesh("abc")
    net.suspend(["b"], seconds)
    net.advance(net.config.anti_entropy_interval * 2)
    sent = exchange(net, "abc", "woke")
    net.advance(net.config.anti_entropy_interval * 2)
    assert clock_refusals(net) == []
    assert converged(net)
    assert all(sent <= texts(node) for node in net.live())
    messages = net.nodes["b"].peer.replica.state.messages.values()
    stamps = [op.hlc for op in messages if isinstance(op.body, DirectMessage) and op.body.content.startswith("woke")]
    assert min(hlc_wall_ms(s) for s in stamps) >= int((START + seconds) * 1000)


@pytest.mark.parametrize(("name", "step"), [("a", -DAY), ("a", 2 * DAY), ("c", -2 * DAY), ("b", 7 * DAY)])
def test_a_wall_clock_stepped_back_or_forward_splits_nothing_and_is_said_once(name: str, step: float) -> None:
    """A step of days either way (NTP, a user setting the time): every operation is accepted both ways, no link
    is dropped, and the peers whose clock is behind say so once each, not per operation or link."""
    net = mesh("abc")
    before = links(net)
    net.step_wall(name, step)
    sent: set[str] = set()
    for round_ in range(3):
        sent |= exchange(net, "abc", f"round {round_}")
        net.advance(net.config.anti_entropy_interval)
    assert clock_refusals(net) == []
    assert links(net) == before
    assert converged(net)
    assert all(sent <= texts(node) for node in net.live())
    for node in net.live():
        notes = [text for text in node.notices if text.startswith("clock")]
        behind = node.name == name if step < 0 else node.name != name
        assert len(notes) == (1 if behind else 0), (node.name, node.notices)


def test_a_clock_stepped_back_keeps_stamping_after_what_it_has_seen_and_notes_again_after_catching_up() -> None:
    net = mesh("ab")
    a = net.nodes["a"]
    newest = a.peer.replica.hlc.last
    net.step_wall("a", -DAY)
    dm(net, "a", "b", "after the step")
    stamp = max(op.hlc for op in a.peer.replica.state.messages.values())
    assert stamp > newest  # the hybrid clock carries on after the newest stamp
    assert len(a.notices) == 1
    net.step_wall("a", DAY)  # set right again: caught up, the next step back is said again
    dm(net, "a", "b", "set right")
    net.step_wall("a", -DAY)
    dm(net, "a", "b", "stepped back again")
    dm(net, "a", "b", "and again")
    assert len(a.notices) == 2
    assert clock_refusals(net) == []
    assert converged(net)


def test_a_peer_started_with_a_clock_days_behind_accepts_the_mesh() -> None:
    """A newcomer whose wall clock lags by days (say its own time namespace) is handed operations stamped days
    ahead of it by anti-entropy: it takes them all."""
    net = mesh("ab")
    exchange(net, "ab", "old")
    net.spawn("c", wall_step=-3 * DAY)
    host(net, "c")
    net.advance(0.1)
    sent = exchange(net, "abc", "new")
    net.advance(0.1)
    assert clock_refusals(net) == []
    assert converged(net)
    assert all(sent <= texts(node) for node in net.live())
    assert len(net.nodes["c"].notices) == 1


def test_peers_of_one_machine_stamp_in_real_time_order_within_a_millisecond() -> None:
    """c joins a room; 0.3 ms later, in the same millisecond, a posts to it before it has heard of the join. On one
    machine both read the same clock, so the message sorts after the join and c counts as a member (a millisecond
    stamp would tie them, and the peer ids alone would decide whether c is told of the message)."""
    net = mesh("abc")
    a, c = net.nodes["a"], net.nodes["c"]
    a_inc, c_inc = a.peer.hosted["agent-a"].incarnation, c.peer.hosted["agent-c"].incarnation
    room_id = a.peer.replica.next_op_id()
    act(net, "a", a.peer.submit(RoomCreate(room_id, "review", "public", "", "agent-a", a_inc), net.clock(a)))
    net.now = float(int(net.now * 1000) + 1) / 1000 + 0.0001  # 0.1 ms into a millisecond
    joined, join_commands = c.peer.make(Membership(room_id, "join", "agent-c", c_inc, "agent-c"), net.clock(c))
    net.now += 0.0003
    posted, post_commands = a.peer.make(RoomMessage(room_id, "agent-a", a_inc, "just after"), net.clock(a))
    assert hlc_wall_ms(joined.hlc) == hlc_wall_ms(posted.hlc)  # the same millisecond, neither heard of the other
    assert op_key(joined) < op_key(posted)
    act(net, "c", join_commands)
    act(net, "a", post_commands)
    for node in net.live():
        view = node.peer.replica.state.rooms[room_id].view
        assert view is not None
        assert view.was_member("agent-c", op_key(posted), room_id)
