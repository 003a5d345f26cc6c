"""Sets of message numbers as ranges (:mod:`agent_comms.protocol.coverage`), checked against Python sets."""

from __future__ import annotations

import itertools

from hypothesis import given
from hypothesis import strategies as st

from agent_comms.protocol.coverage import (
    RangeBuilder,
    add,
    covers,
    difference,
    from_wire,
    intervals,
    to_wire,
    union,
)

numbers = st.sets(st.integers(1, 60), max_size=40)


def bounds_of(values: set[int]) -> list[int]:
    bounds: list[int] = []
    for n in sorted(values):
        add(bounds, n)
    return bounds


def members(bounds: list[int]) -> set[int]:
    return {n for lo, end in intervals(bounds) for n in range(lo, end)}


def well_formed(bounds: list[int]) -> bool:
    return len(bounds) % 2 == 0 and all(a < b for a, b in itertools.pairwise(bounds))


@given(numbers, st.permutations(range(1, 61)))
def test_adding_in_any_order_gives_the_set_and_one_range_per_run(values: set[int], order: list[int]) -> None:
    bounds: list[int] = []
    for n in order:
        if n in values:
            assert add(bounds, n)
            assert not add(bounds, n)
    assert members(bounds) == values
    assert well_formed(bounds)
    runs = sum(1 for n in values if n - 1 not in values)
    assert len(bounds) == 2 * runs
    for n in range(0, 62):
        assert covers(bounds, n) == (n in values)


@given(numbers, numbers, numbers)
def test_union_and_difference_are_those_of_sets(a: set[int], b: set[int], c: set[int]) -> None:
    ba, bb, bc = bounds_of(a), bounds_of(b), bounds_of(c)
    assert members(union(ba, bb, bc)) == a | b | c
    assert well_formed(union(ba, bb, bc))
    assert members(difference(ba, bb)) == a - b
    assert well_formed(difference(ba, bb))
    assert union(ba, bb) == bounds_of(a | b)  # one canonical form
    assert difference(ba, bb) == bounds_of(a - b)


@given(numbers)
def test_the_wire_form_round_trips(values: set[int]) -> None:
    bounds = bounds_of(values)
    wire = to_wire(bounds)
    assert from_wire(wire) == (bounds or None)  # no range at all is not a marker's (the builder never sends it)
    assert all(wire[i] <= wire[i + 1] for i in range(0, len(wire), 2))


def test_malformed_wire_ranges_are_refused() -> None:
    assert from_wire((1, 3, 5, 5)) == [1, 4, 5, 6]
    for bad in [(1,), (0, 2), (3, 2), (4, 6, 1, 2), (1, 3, 3, 5), (1, 3, 4, 5), (-1, 1)]:
        assert from_wire(bad) is None, bad


def test_the_builder_merges_numbers_shown_out_of_order_into_one_range() -> None:
    builder = RangeBuilder()
    assert builder.add("p1", 2)
    assert builder.add("p1", 1)
    assert not builder.add("p1", 2)
    assert builder.add("p2", 5)
    assert builder.wire() == {"p1": (1, 2), "p2": (5, 5)}
    assert builder.add_all({"p1": [3, 5], "p3": [1, 2]})
    assert not builder.add_all({"p1": [1, 4]})
    assert builder.wire() == {"p1": (1, 4), "p2": (5, 5), "p3": (1, 1)}
    assert builder.covers("p1", 4)
    assert not builder.covers("p1", 5)
    assert not builder.covers("p9", 1)
