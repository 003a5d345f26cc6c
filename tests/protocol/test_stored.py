"""The index of stored operations (:mod:`agent_comms.protocol.stored`) that digests and anti-entropy answers read.

Against a model (a count per ``(origin, seq)``) under any adds and discards, with blocks small enough that every
split and merge happens; and in a real replica through what makes it store and forget (messages arriving out of
order, eviction from full histories, superseded records and markers, collection of a destroyed room): an answer
found in the index equals the one a scan of every stored operation finds, and making it reads no other operation.
"""

from __future__ import annotations

from collections import Counter

import pytest
from hypothesis import given
from hypothesis import strategies as st

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
)
from agent_comms.protocol.replica import Replica, sync_order
from agent_comms.protocol.state import MeshState
from agent_comms.protocol.stored import DIGEST_MODULUS, StoredOps, op_hash
from agent_comms.protocol.wire import SyncRequest

ORIGINS = ["pa", "pb", "pc"]


def _op(origin: str, seq: int) -> Op:
    return Op(origin, seq, seq << 16, DirectMessage("alice", 1, "bob", f"{origin}-{seq}"))


actions = st.lists(st.tuples(st.booleans(), st.sampled_from(ORIGINS), st.integers(1, 60)), min_size=100, max_size=400)
floors = st.dictionaries(st.sampled_from(ORIGINS), st.integers(0, 70))


@given(block=st.integers(1, 4), steps=actions, probes=st.lists(floors, min_size=1, max_size=4))
def test_the_index_agrees_with_a_model_under_any_adds_and_discards(
    block: int, steps: list[tuple[bool, str, int]], probes: list[dict[str, int]]
) -> None:
    """A discard takes out one of the origin's held numbers (the ``seq``-th, wrapping), so blocks empty, shrink at
    either end and merge as often as they fill and split."""
    stored = StoredOps(block)
    model: dict[str, Counter[int]] = {origin: Counter() for origin in ORIGINS}
    for add, origin, seq in steps:
        places = model[origin]
        numbers = sorted(number for number, count in places.items() if count)
        if not add and numbers:
            number = numbers[seq % len(numbers)]
            stored.discard(_op(origin, number))
            places[number] -= 1
        else:
            stored.add(_op(origin, seq))  # kept by one more place (by a second one if already held)
            places[seq] += 1
        stored.check()
    held = sorted((origin, seq) for origin, places in model.items() for seq, count in places.items() if count)
    for origin in ORIGINS:
        for seq in (0, 61):
            with pytest.raises(KeyError):
                stored.discard(_op(origin, seq))
    assert len(stored) == len(held)
    assert int.from_bytes(stored.digest(), "big") == sum(op_hash(o, s) for o, s in held) % DIGEST_MODULUS
    assert stored.origins() == {origin for origin, _seq in held}
    for probe in [{}, *probes]:
        above = [(op.origin, op.seq) for op in stored.above(probe)]
        assert sorted(above) == [(o, s) for o, s in held if s > probe.get(o, 0)]
        assert len(above) == len(set(above))


def test_a_block_size_below_one_is_refused() -> None:
    with pytest.raises(ValueError, match="at least 1"):
        StoredOps(0)


def _claim(replica: Replica, agent: str, now_ms: int, version: int = 0) -> int:
    inc = replica.hlc.tick(now_ms)
    replica.make(AgentUpsert(agent, replica.peer_id, inc, version, agent, "t", "/w", 1, 1.0), now_ms)
    return inc


def _answers_agree(replica: Replica) -> int:
    """The answer for several floors (none; the replica's own; halves and near the top of them) equals a scan's."""
    state = replica.state
    own = replica.floors()
    probes = [
        {},
        own,
        {origin: floor // 2 for origin, floor in own.items()},
        {origin: max(0, floor - 3) for origin, floor in own.items()},
    ]
    for probe in probes:
        scanned = state.stored_above_from_scratch(probe)
        assert replica.sync_answer(SyncRequest(b"", probe)) == sorted(scanned, key=lambda op: sync_order(op, state))
    everything = state.stored_above_from_scratch({})
    assert state.digest() == state.digest_from_scratch()
    return len(everything)


def test_an_answer_from_the_index_equals_a_full_scan_through_eviction_supersession_and_collection() -> None:
    a, b, hub = Replica.create("pa"), Replica.create("pb"), Replica.create("hub", history_limit=200)
    alice, bob = _claim(a, "alice", 10), _claim(b, "bob", 10)
    made: list[Op] = []
    for i in range(3000):  # ten conversations, some past their history limit: the oldest are evicted
        author, inc, peer = ("alice", alice, a) if i % 2 else ("bob", bob, b)
        made.append(peer.make(DirectMessage(author, inc, f"x{i % 10}", f"m{i}"), 100 + i)[0])
        if i % 25 == 0:  # each author's cumulative read marker, the newer replacing the older
            conversation = dm_conversation("alice", f"x{i % 10}")
            made.append(a.make(Mark(conversation, "alice", alice, "read", {"pa": (1, 1 + i // 50)}), 100 + i)[0])
    records = [op for op in a.state.stored_above({}) if isinstance(op.body, AgentUpsert)]
    records += [op for op in b.state.stored_above({}) if isinstance(op.body, AgentUpsert)]
    for chunk in range(0, len(made), 200):  # out of order: each chunk backwards, so numbers land inside blocks
        hub.receive_many(made[chunk : chunk + 200][::-1])
    hub.receive_many(records)
    held = _answers_agree(hub)
    assert held < len(made)  # some were evicted
    assert sum(op.origin == "pa" for op in hub.state.stored_above({})) > 2 * 256  # more than one block of an origin

    # a record replaced by a newer one of the same claim, and a new claim of the same agent
    _claim(a, "alice", 5000, version=1)
    hub.receive_many(a.sync_answer(hub.sync_request()))
    _answers_agree(hub)

    # a room created, spoken in and destroyed, then forgotten at a horizon after its destroy
    room = a.make(RoomCreate(a.next_op_id(), "lobby", "public", "", "alice", alice), 6000)[0]
    for i in range(30):
        a.make(RoomMessage(op_id(room), "alice", alice, f"r{i}"), 6001 + i)
    a.make(Membership(op_id(room), "destroy", "alice", alice), 7000)
    hub.receive_many(a.sync_answer(hub.sync_request()))
    before = _answers_agree(hub)
    hub.state.collect_garbage(8000)
    assert op_id(room) not in hub.state.rooms
    assert _answers_agree(hub) < before


def test_an_answer_reads_only_what_it_sends(monkeypatch: pytest.MonkeyPatch) -> None:
    a, b = Replica.create("pa"), Replica.create("pb")
    alice = _claim(a, "alice", 10)
    for i in range(300):
        a.make(DirectMessage("alice", alice, "bob", f"m{i}"), 100 + i)
    b.receive_many(a.sync_answer(b.sync_request()))
    new = a.make(DirectMessage("alice", alice, "bob", "one more"), 1000)[0]

    def scan(_state: MeshState) -> None:
        raise AssertionError("an answer scanned every stored operation")

    monkeypatch.setattr(MeshState, "stored_ops", scan)
    assert a.sync_answer(b.sync_request()) == [new]
