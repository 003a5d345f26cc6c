"""Tests of the hybrid logical clock: :mod:`agent_comms.protocol.hlc`."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from agent_comms.protocol.hlc import COUNTER_BITS, MICROS_SHIFT, Hlc, hlc_wall_ms

NOW = 1_700_000_000_000


def test_counter_bits_and_wall_extraction() -> None:
    assert COUNTER_BITS == 16
    assert hlc_wall_ms(NOW << 16) == NOW
    assert hlc_wall_ms((NOW << 16) | 0xFFFF) == NOW
    assert hlc_wall_ms((NOW + 1) << 16) == NOW + 1


def test_first_tick_is_wall_time_with_zero_counter() -> None:
    clock = Hlc()
    stamp = clock.tick(NOW)
    assert stamp == NOW << 16
    assert clock.last == stamp


def test_tick_with_same_wall_time_increments_counter() -> None:
    clock = Hlc()
    stamps = [clock.tick(NOW) for _ in range(5)]
    assert stamps == [(NOW << 16) + i for i in range(5)]
    assert all(hlc_wall_ms(s) == NOW for s in stamps)


def test_tick_when_wall_time_goes_backwards_stays_strictly_increasing() -> None:
    clock = Hlc()
    first = clock.tick(NOW)
    second = clock.tick(NOW - 5_000)
    third = clock.tick(0)
    assert second == first + 1
    assert third == second + 1
    assert hlc_wall_ms(third) == NOW


def test_tick_follows_wall_time_when_it_advances() -> None:
    clock = Hlc()
    for _ in range(3):
        clock.tick(NOW)
    later = clock.tick(NOW + 1)
    assert later == (NOW + 1) << 16
    assert hlc_wall_ms(later) == NOW + 1
    much_later = clock.tick(NOW + 60_000)
    assert much_later == (NOW + 60_000) << 16


def test_tick_after_backwards_jump_catches_up_once_wall_time_passes_again() -> None:
    clock = Hlc()
    clock.tick(NOW)
    clock.tick(NOW - 10)
    resumed = clock.tick(NOW + 1)
    assert resumed == (NOW + 1) << 16


def test_counter_overflow_still_strictly_increasing() -> None:
    clock = Hlc()
    previous = clock.tick(NOW)
    for _ in range(1 << COUNTER_BITS):
        stamp = clock.tick(NOW)
        assert stamp == previous + 1
        previous = stamp
    assert hlc_wall_ms(previous) == NOW + 1  # the counter carried into the wall part
    assert clock.tick(NOW + 1) == previous + 1


def test_microseconds_order_the_stamps_of_two_clocks_within_one_millisecond() -> None:
    """Two peers of one machine that have not heard of each other: 0.3 ms apart in real time, in that order."""
    first, second = Hlc(), Hlc()
    second.tick(NOW - 1)  # history does not matter while wall time moves on
    early, late = first.tick(NOW, 100), second.tick(NOW, 400)
    assert early == (NOW << 16) | 100 << MICROS_SHIFT
    assert early < late
    assert hlc_wall_ms(early) == hlc_wall_ms(late) == NOW


def test_the_counter_carries_into_the_microseconds_and_on_into_the_milliseconds() -> None:
    clock = Hlc()
    stamps = [clock.tick(NOW, 999) for _ in range(1 << MICROS_SHIFT)]
    assert stamps == [(NOW << 16) + (999 << MICROS_SHIFT) + i for i in range(1 << MICROS_SHIFT)]
    previous = stamps[-1]
    while hlc_wall_ms(previous) == NOW:
        stamp = clock.tick(NOW, 0)
        assert stamp == previous + 1
        previous = stamp
    assert previous == (NOW + 1) << 16
    assert clock.tick(NOW + 1, 0) == previous + 1  # strictly after, though the wall clock gives the same value


def test_observe_future_stamp_moves_next_tick_past_it() -> None:
    clock = Hlc()
    clock.tick(NOW)
    future = ((NOW + 5_000) << 16) + 7
    clock.observe(future)
    assert clock.last == future
    stamp = clock.tick(NOW)
    assert stamp == future + 1
    assert hlc_wall_ms(stamp) == NOW + 5_000


def test_observe_past_stamp_changes_nothing() -> None:
    clock = Hlc()
    current = clock.tick(NOW)
    clock.observe((NOW - 1) << 16)
    clock.observe(current)
    assert clock.last == current
    assert clock.tick(NOW) == current + 1


def test_observe_then_wall_time_overtakes() -> None:
    clock = Hlc()
    clock.observe((NOW << 16) + 3)
    assert clock.tick(NOW + 1) == (NOW + 1) << 16


_actions = st.lists(
    st.one_of(
        st.tuples(st.just("tick"), st.integers(0, 1 << 44)),
        st.tuples(st.just("observe"), st.integers(0, 1 << 60)),
        st.tuples(st.just("observe-near"), st.integers(-3, 3)),
        st.tuples(st.just("tick-near"), st.integers(-3, 3)),
    ),
    max_size=60,
)


@given(_actions)
def test_ticks_strictly_increase_and_exceed_every_observed_stamp(actions: list[tuple[str, int]]) -> None:
    clock = Hlc()
    previous_tick = clock.last  # 0: a fresh clock's stamps are all positive
    assert previous_tick == 0
    max_observed = -1
    wall = NOW
    for kind, value in actions:
        if kind == "observe":
            clock.observe(value)
            max_observed = max(max_observed, value)
        elif kind == "observe-near":  # a stamp close to the clock, to exercise ties and off-by-ones
            stamp = max(0, clock.last + value)
            clock.observe(stamp)
            max_observed = max(max_observed, stamp)
        else:
            now_ms = value if kind == "tick" else max(0, wall + value)
            wall = now_ms
            stamp = clock.tick(now_ms)
            assert stamp > previous_tick
            assert stamp > max_observed
            assert stamp >= now_ms << COUNTER_BITS  # never behind wall time
            assert hlc_wall_ms(stamp) >= now_ms
            if (now_ms << COUNTER_BITS) > max(previous_tick, max_observed):
                assert stamp == now_ms << COUNTER_BITS  # wall time ahead of everything seen: follow it exactly
            else:
                assert stamp == max(previous_tick, max_observed) + 1
            previous_tick = stamp
