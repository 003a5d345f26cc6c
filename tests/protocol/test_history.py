"""Tests of the bounded, converging message history: :mod:`agent_comms.protocol.history`."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from agent_comms.protocol.history import History
from agent_comms.protocol.ops import Op, OpKey, RoomMessage, op_key


def make_op(hlc: int, origin: str = "p", seq: int = 1, content: str = "x") -> Op:
    return Op(origin, seq, hlc, RoomMessage(room_id="r", author="a", author_inc=1, content=content))


def _check_aligned(history: History) -> None:
    assert [op_key(op) for op in history.messages] == history.keys
    assert history.keys == sorted(history.keys)
    assert len(set(history.keys)) == len(history.keys)
    assert len(history) == len(history.keys) <= history.limit


def test_empty_history() -> None:
    history = History(3)
    assert len(history) == 0
    assert history.keys == []
    assert history.messages == []
    assert not history.full
    assert history.since((0, "", 0)) == []


def test_keeps_newest_limit_in_order() -> None:
    history = History(3)
    ops = [make_op(hlc, seq=hlc) for hlc in range(1, 6)]
    results = [history.add(op) for op in ops]
    assert results == [(True, []), (True, []), (True, []), (True, [ops[0]]), (True, [ops[1]])]
    assert history.messages == ops[2:]
    assert history.keys == [(3, "p", 3), (4, "p", 4), (5, "p", 5)]
    assert history.full
    assert len(history) == 3
    _check_aligned(history)


def test_out_of_order_arrivals_sorted_by_total_order() -> None:
    history = History(10)
    ops = [make_op(5, "b", 1), make_op(5, "a", 2), make_op(4, "z", 9), make_op(5, "a", 1), make_op(6, "a", 0)]
    for op in ops:
        assert history.add(op) == (True, [])
    assert history.keys == [(4, "z", 9), (5, "a", 1), (5, "a", 2), (5, "b", 1), (6, "a", 0)]
    _check_aligned(history)


@pytest.mark.parametrize("which", [0, 1, 2], ids=["oldest", "middle", "newest"])
@pytest.mark.parametrize("limit", [3, 10], ids=["full", "not-full"])
def test_duplicates_ignored(which: int, limit: int) -> None:
    history = History(limit)
    ops = [make_op(10), make_op(20), make_op(30)]
    for op in ops:
        history.add(op)
    before_keys = list(history.keys)
    before_messages = list(history.messages)
    assert history.add(ops[which]) == (False, [])
    # same identity and stamp, different (forged) body: still the same operation
    assert history.add(make_op(ops[which].hlc, content="other")) == (False, [])
    assert history.keys == before_keys
    assert history.messages == before_messages
    assert history.messages[which] is ops[which]


def test_op_older_than_everything_in_full_history_refused() -> None:
    history = History(2)
    newer = [make_op(10), make_op(20)]
    for op in newer:
        history.add(op)
    assert history.add(make_op(5)) == (False, [])
    assert history.add(make_op(10, "a")) == (False, [])  # same hlc, smaller origin: older
    assert history.add(make_op(10, "p", 0)) == (False, [])  # same hlc and origin, smaller seq: older
    assert history.messages == newer


def test_older_op_accepted_while_not_full() -> None:
    history = History(3)
    history.add(make_op(10))
    history.add(make_op(20))
    old = make_op(5)
    assert history.add(old) == (True, [])
    assert history.messages[0] is old
    assert history.keys == [(5, "p", 1), (10, "p", 1), (20, "p", 1)]


def test_insert_in_middle_of_full_history_evicts_oldest() -> None:
    history = History(3)
    ops = [make_op(10), make_op(20), make_op(30)]
    for op in ops:
        history.add(op)
    middle = make_op(15)
    assert history.add(middle) == (True, [ops[0]])
    assert history.messages == [middle, ops[1], ops[2]]
    _check_aligned(history)


def test_op_just_newer_than_oldest_in_full_history_evicts_it() -> None:
    history = History(2)
    ops = [make_op(10, "p", 1), make_op(20)]
    for op in ops:
        history.add(op)
    barely = make_op(10, "p", 2)
    assert history.add(barely) == (True, [ops[0]])
    assert history.messages == [barely, ops[1]]


def test_eviction_returns_oldest_first_when_several_go_at_once() -> None:
    history = History(5)
    ops = [make_op(hlc) for hlc in (10, 20, 30, 40, 50)]
    for op in ops:
        history.add(op)
    history.limit = 2  # History is a plain mutable record; shrinking the limit trims on the next add
    newest = make_op(60)
    assert history.add(newest) == (True, ops[:4])
    assert history.messages == [ops[4], newest]
    _check_aligned(history)


def test_limit_one() -> None:
    history = History(1)
    a, b, c = make_op(10), make_op(30), make_op(20)
    assert history.add(a) == (True, [])
    assert history.add(b) == (True, [a])
    assert history.add(c) == (False, [])
    assert history.messages == [b]


def test_since() -> None:
    history = History(10)
    ops = [make_op(hlc, seq=hlc) for hlc in (10, 20, 30, 40)]
    for op in reversed(ops):
        history.add(op)
    assert history.since((0, "", 0)) == ops
    assert history.since(op_key(ops[0])) == ops[1:]  # strictly after
    assert history.since(op_key(ops[1])) == ops[2:]
    assert history.since((25, "p", 25)) == ops[2:]  # a key not in the history
    assert history.since((20, "p", 21)) == ops[2:]  # between two kept keys by seq only
    assert history.since((20, "o", 99)) == ops[1:]  # same hlc, smaller origin: before ops[1]
    assert history.since(op_key(ops[3])) == []
    assert history.since((1 << 62, "", 0)) == []


def test_admits_agrees_with_add() -> None:
    history = History(2)
    assert history.admits((1, "p", 1))
    history.add(make_op(10))
    history.add(make_op(20))
    assert not history.admits((5, "p", 1))
    assert not history.admits((10, "a", 1))
    assert history.admits((10, "p", 2))
    assert history.admits((15, "p", 1))
    assert history.admits((99, "p", 1))


# ---------------------------------------------------------------------------------------------------------------
# Convergence: the kept set depends only on which ops arrived, never on their order or on duplicates.

_keys = st.lists(
    st.tuples(st.integers(0, 30), st.sampled_from(["a", "b", "c"]), st.integers(0, 4)),
    unique=True,
    max_size=40,
)


def _with_duplicates(data: st.DataObject, ops: list[Op]) -> list[Op]:
    sequence = list(data.draw(st.permutations(ops)))
    if ops:
        for _ in range(data.draw(st.integers(0, 10))):
            dup = data.draw(st.sampled_from(ops))
            sequence.insert(data.draw(st.integers(0, len(sequence))), dup)
    return sequence


def _feed(history: History, sequence: list[Op]) -> None:
    live: set[OpKey] = set()
    for op in sequence:
        key = op_key(op)
        admitted = history.admits(key)
        already = key in live
        kept, evicted = history.add(op)
        assert kept == (admitted and not already)
        if kept:
            live.add(key)
        else:
            assert evicted == []
        assert evicted == sorted(evicted, key=op_key)  # oldest first
        for gone in evicted:
            assert op_key(gone) < key
            live.remove(op_key(gone))
        assert live == set(history.keys)
        _check_aligned(history)


@given(keys=_keys, limit=st.integers(1, 12), data=st.data())
def test_any_arrival_order_with_duplicates_converges_to_top_limit(
    keys: list[OpKey], limit: int, data: st.DataObject
) -> None:
    ops = [make_op(hlc, origin, seq) for hlc, origin, seq in keys]
    first, second = History(limit), History(limit)
    _feed(first, _with_duplicates(data, ops))
    _feed(second, _with_duplicates(data, ops))
    expected = sorted(keys)[-limit:]
    assert first.keys == expected
    assert second.keys == expected
    assert first.messages == second.messages
