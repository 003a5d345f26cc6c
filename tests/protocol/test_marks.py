"""Progress markers (:class:`~agent_comms.protocol.ops.Mark`): messages are numbered per origin and conversation,
markers cover them by ranges, only grow, count under a known claim only, and say nothing of a message not in them
(one that arrives late from a partitioned peer included). Deterministic scenarios over real replicas."""

from __future__ import annotations

from simnet import rebuild, visible_snapshot

from agent_comms.protocol.changes import MarkAdvanced, MessageEvicted
from agent_comms.protocol.ops import (
    AgentUpsert,
    DirectMessage,
    Mark,
    Membership,
    Op,
    RoomCreate,
    RoomMessage,
    dm_conversation,
    op_id,
    op_key,
)
from agent_comms.protocol.replica import Replica, sync_order


def claim(replica: Replica, agent_id: str) -> int:
    inc = replica.hlc.tick(0)
    record = AgentUpsert(agent_id, replica.peer_id, inc, 0, agent_id, "t", "/w", 1, 1.0)
    replica.make(record, 0)
    return inc


def link(*replicas: Replica) -> None:
    """Everything each replica stores reaches every other one (anti-entropy, both ways)."""
    for _ in range(2):
        for a in replicas:
            for b in replicas:
                if a is not b:
                    b.receive_many(a.sync_answer(b.sync_request()))


def mark(replica: Replica, conversation: str, recipient: str, inc: int, status: str, ranges: dict) -> tuple[Op, list]:  # type: ignore[type-arg]
    return replica.make(Mark(conversation, recipient, inc, status, ranges), 0)  # type: ignore[arg-type]


def test_messages_are_numbered_densely_per_origin_and_conversation() -> None:
    a = Replica.create("pa")
    inc = claim(a, "alice")
    ns = [a.make(DirectMessage("alice", inc, "bob", "hi"), 0)[0].body.n for _ in range(3)]  # type: ignore[union-attr]
    other = a.make(DirectMessage("alice", inc, "carol", "hi"), 0)[0].body.n  # type: ignore[union-attr]
    room = a.make(RoomCreate(a.next_op_id(), "lobby", "public", "", "alice", inc), 0)[0]
    in_room = a.make(RoomMessage(op_id(room), "alice", inc, "yo"), 0)[0].body.n  # type: ignore[union-attr]
    assert ns == [1, 2, 3]
    assert other == 1
    assert in_room == 1


def test_a_marker_covers_exactly_its_ranges_and_read_implies_delivered() -> None:
    a, b = Replica.create("pa"), Replica.create("pb")
    alice, bob = claim(a, "alice"), claim(b, "bob")
    link(a, b)
    sent = [a.make(DirectMessage("alice", alice, "bob", f"m{i}"), 0)[0] for i in range(4)]
    link(a, b)
    conversation = dm_conversation("alice", "bob")
    _op, changes = mark(b, conversation, "bob", bob, "read", {"pa": (1, 1, 3, 3)})
    assert changes == [MarkAdvanced(conversation, "bob", "read", {"pa": ((1, 1), (3, 3))}, _op)]
    _op2, changes = mark(b, conversation, "bob", bob, "delivered", {"pa": (1, 4)})
    assert [c.ranges for c in changes if isinstance(c, MarkAdvanced)] == [{"pa": ((2, 2), (4, 4))}]
    link(a, b)
    for replica in (a, b):
        statuses = [replica.state.receipt_status(op_id(m), "bob") for m in sent]
        assert statuses == ["read", "delivered", "read", "delivered"]
        assert replica.state.receipt_status(op_id(sent[0]), "alice") is None


def test_a_newer_marker_of_one_issuer_replaces_the_older_one_and_a_stale_one_changes_nothing() -> None:
    a, b = Replica.create("pa"), Replica.create("pb")
    alice, bob = claim(a, "alice"), claim(b, "bob")
    link(a, b)
    sent = [a.make(DirectMessage("alice", alice, "bob", f"m{i}"), 0)[0] for i in range(3)]
    link(a, b)
    conversation = dm_conversation("alice", "bob")
    old, _ = mark(b, conversation, "bob", bob, "read", {"pa": (1, 1)})
    new, _ = mark(b, conversation, "bob", bob, "read", {"pa": (1, 2)})
    a.receive(new)
    assert a.receive(old) == []  # the stale one arrives late: it is not stored
    assert {op_id(op) for op in a.state.stored_ops()} >= {op_id(new)}
    assert op_id(old) not in {op_id(op) for op in a.state.stored_ops()}
    assert a.state.digest() == b.state.digest()
    assert [a.state.receipt_status(op_id(m), "bob") for m in sent] == ["read", "read", None]


def test_a_late_message_from_a_partitioned_peer_is_not_covered_by_earlier_markers() -> None:
    """Carol's peer was cut off; bob read everything he was shown. Carol's message, merged later, is unread."""
    a, b, c = Replica.create("pa"), Replica.create("pb"), Replica.create("pc")
    alice, bob, carol = claim(a, "alice"), claim(b, "bob"), claim(c, "carol")
    link(a, b, c)
    room = a.make(RoomCreate(a.next_op_id(), "lobby", "public", "", "alice", alice), 0)[0]
    link(a, b, c)
    b.make(Membership(op_id(room), "join", "bob", bob), 0)
    c.make(Membership(op_id(room), "join", "carol", carol), 0)
    link(a, b, c)
    late = c.make(RoomMessage(op_id(room), "carol", carol, "written while cut off"), 0)[0]  # not linked yet
    shown = [a.make(RoomMessage(op_id(room), "alice", alice, f"m{i}"), 0)[0] for i in range(2)]
    link(a, b)
    mark(b, op_id(room), "bob", bob, "read", {"pa": (1, 2)})
    link(a, b, c)
    for replica in (a, b, c):
        assert replica.state.receipt_status(op_id(late), "bob") is None
        assert [replica.state.receipt_status(op_id(m), "bob") for m in shown] == ["read", "read"]


def test_a_marker_counts_only_under_a_known_claim_of_its_recipient() -> None:
    a, b, rogue = Replica.create("pa"), Replica.create("pb"), Replica.create("px")
    alice, bob = claim(a, "alice"), claim(b, "bob")
    link(a, b, rogue)
    message = a.make(DirectMessage("alice", alice, "bob", "hi"), 0)[0]
    link(a, b, rogue)
    conversation = dm_conversation("alice", "bob")
    forged, changes = mark(rogue, conversation, "bob", bob, "read", {"pa": (1, 1)})
    assert changes == []
    a.receive(forged)
    assert a.state.receipt_status(op_id(message), "bob") is None
    _op, changes = mark(b, conversation, "carol", bob, "read", {"pa": (1, 1)})  # not a party of the DM
    assert changes == []
    assert not b.state.marks.get(conversation, {}).get("carol")
    _op, changes = mark(b, conversation, "bob", bob, "read", {"pa": (2, 1)})  # malformed ranges
    assert changes == []
    assert b.state.receipt_status(op_id(message), "bob") is None


def test_markers_are_order_independent_and_reach_a_bridge_before_the_later_messages_they_cover() -> None:
    a, b = Replica.create("pa", history_limit=4), Replica.create("pb", history_limit=4)
    alice, bob = claim(a, "alice"), claim(b, "bob")
    link(a, b)
    sent = [a.make(DirectMessage("alice", alice, "bob", f"m{i}"), 0)[0] for i in range(5)]
    link(a, b)
    conversation = dm_conversation("alice", "bob")
    marker, _ = mark(b, conversation, "bob", bob, "read", {"pa": (1, 4)})
    later = a.make(DirectMessage("alice", alice, "bob", "after"), 0)[0]
    link(a, b)
    newcomer = Replica.create("pn", history_limit=4)
    answer = a.sync_answer(newcomer.sync_request())
    keys = [op_id(op) for op in answer]
    # held: m2, m3, m4 and "after"; right after the oldest held message it covers (m2, n = 3), before m3 (n = 4)
    assert keys.index(op_id(marker)) == keys.index(op_id(sent[2])) + 1
    assert keys.index(op_id(marker)) < keys.index(op_id(sent[3])) < keys.index(op_id(later))
    assert sync_order(marker) > sync_order(sent[3])  # without the state: at its own stamp, still after
    newcomer.receive_many(answer)
    assert newcomer.state.digest() == a.state.digest()
    for reverse in (False, True):
        rebuilt = rebuild(a.state, reverse=reverse)
        assert visible_snapshot(rebuilt) == visible_snapshot(a.state)
        assert rebuilt.coverage(conversation, "bob") == a.state.coverage(conversation, "bob")
    evicted = [c for c in a.make(DirectMessage("alice", alice, "bob", "x"), 0)[1] if isinstance(c, MessageEvicted)]
    assert [(op_id(c.op), c.reached) for c in evicted] == [(op_id(sent[2]), True)]
    assert op_key(later) > op_key(sent[3])


def test_markers_of_a_forgotten_room_go_with_it() -> None:
    a = Replica.create("pa")
    alice = claim(a, "alice")
    room = a.make(RoomCreate(a.next_op_id(), "lobby", "public", "", "alice", alice), 0)[0]
    a.make(RoomMessage(op_id(room), "alice", alice, "hi"), 0)
    a.make(Mark(op_id(room), "alice", alice, "read", {"pa": (1, 1)}), 0)
    a.make(Mark("peer-z-9", "alice", alice, "read", {"pz": (1, 1)}), 0)  # a room never held
    a.make(Membership(op_id(room), "destroy", "alice", alice), 0)
    assert op_id(room) in a.state.marks
    assert "peer-z-9" in a.state.marks
    now = a.hlc.last >> 16
    a.collect_garbage(now + 10, 0)
    a.collect_garbage(now + 10, 0)
    assert op_id(room) not in a.state.marks
    assert "peer-z-9" not in a.state.marks
    assert a.state.digest() == a.state.digest_from_scratch()


def test_an_origin_with_no_ranges_makes_a_marker_malformed_and_the_next_one_applies() -> None:
    """An empty range list is refused like any malformed ranges; a marker of the same issuer after it applies (it
    used to be stored, and the next one crashed the peer comparing against it)."""
    a, b = Replica.create("pa"), Replica.create("pb")
    alice, bob = claim(a, "alice"), claim(b, "bob")
    link(a, b)
    sent = a.make(DirectMessage("alice", alice, "bob", "hi"), 0)[0]
    link(a, b)
    conversation = dm_conversation("alice", "bob")
    empty, changes = mark(b, conversation, "bob", bob, "read", {"pa": ()})
    assert changes == []
    assert empty not in list(b.state.stored_ops())
    _op, changes = mark(b, conversation, "bob", bob, "read", {"pa": (1, 1)})
    assert [c.ranges for c in changes if isinstance(c, MarkAdvanced)] == [{"pa": ((1, 1),)}]
    assert b.state.receipt_status(op_id(sent), "bob") == "read"


def test_a_cumulative_marker_over_many_origins_reports_and_merges_only_what_changed() -> None:
    """A recipient's marker names every origin it ever read from; the next one differs in one. The change reported
    is that origin's new numbers, and the coverage is the one computed from scratch."""
    hub = Replica.create("ph")
    bob = claim(hub, "bob")
    writers = [Replica.create(f"p{i:02}") for i in range(30)]
    incs = [claim(w, f"w{i}") for i, w in enumerate(writers)]
    room = hub.make(RoomCreate(hub.next_op_id(), "lobby", "public", "", "bob", bob), 0)[0]
    room_id = op_id(room)
    for w in writers:
        w.receive_many(list(hub.state.stored_ops()))
    for i, w in enumerate(writers):
        w.make(Membership(room_id, "join", f"w{i}", incs[i]), 0)
        for _ in range(3):
            w.make(RoomMessage(room_id, f"w{i}", incs[i], "hi"), 0)
        hub.receive_many(list(w.state.stored_ops()))
    ranges = {w.peer_id: (1, 2) for w in writers}
    mark(hub, room_id, "bob", bob, "read", dict(ranges))
    ranges[writers[7].peer_id] = (1, 3)
    op, changes = mark(hub, room_id, "bob", bob, "read", dict(ranges))
    assert changes == [MarkAdvanced(room_id, "bob", "read", {writers[7].peer_id: ((3, 3),)}, op)]
    assert hub.state.coverage(room_id, "bob") == hub.state.coverage_from_scratch(room_id, "bob")
    # An origin dropped from the newer marker is not a cumulative marker's shape: the coverage is rebuilt, and
    # stays what every marker of the key says together.
    del ranges[writers[0].peer_id]
    ranges[writers[1].peer_id] = (1, 3)
    mark(hub, room_id, "bob", bob, "read", dict(ranges))
    assert hub.state.coverage(room_id, "bob") == hub.state.coverage_from_scratch(room_id, "bob")


def test_a_number_taken_twice_by_a_misbehaving_origin_is_indexed_alike_in_any_order() -> None:
    """Of two held messages under one number, the index holds the first in the total order, whatever the order
    they came in; when it goes, the other takes its place."""
    a = Replica.create("pa")
    alice = claim(a, "alice")
    first = a.make(DirectMessage("alice", alice, "bob", "one"), 0)[0]
    again = Op("pa", a.seq + 1, a.hlc.tick(0), DirectMessage("alice", alice, "bob", "one again", n=1))
    a.seq += 1
    record = next(op for op in a.state.stored_ops() if isinstance(op.body, AgentUpsert))
    conversation = dm_conversation("alice", "bob")
    replicas = []
    for order in ([first, again], [again, first]):
        b = Replica.create("pb", history_limit=2)
        b.receive_many([record, *order])
        assert b.state.numbered[conversation]["pa"] == {1: first}
        replicas.append(b)
    later = a.make(DirectMessage("alice", alice, "bob", "two"), 0)[0]  # pushes ``first`` out of the history
    for b in replicas:
        b.receive(later)
        assert b.state.numbered[conversation]["pa"] == {1: again, 2: later}
        assert not b.state.renumbered
