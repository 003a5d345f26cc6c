"""Hybrid logical clock (HLC) packed into one integer.

A timestamp is ``wall_ms << 16 | micros << 6 | counter``: the wall clock's millisecond, the microsecond within it
(0-999) and a counter. It orders events consistently with causality (a receive is stamped after the send it saw)
while staying close to wall time, so it doubles as a human timestamp. The microseconds matter on one machine, where
every peer reads the same clock: two peers that act one after the other in real time stamp in that order even when
neither has heard of the other yet (a person joins a room, and a message posted a moment later by another peer,
within the same millisecond, must still count the person as a member). The counter orders the stamps of one peer
within one microsecond; when it runs out it carries into the microseconds (and on into the milliseconds), so stamps
stay strictly increasing. Together with the
origin peer id and sequence number it gives every operation a deterministic total order, which is what the
bounded histories and the room folds sort by.

The clock never reads time itself: callers pass ``now_ms`` in (the sans-IO rule).
"""

from __future__ import annotations

import attrs

__all__ = ["COUNTER_BITS", "MICROS_SHIFT", "Hlc", "hlc_wall_ms"]

#: the bits below the millisecond: the microsecond within it and the counter
COUNTER_BITS = 16
#: where the microsecond within the millisecond sits in those bits (the counter has the six below)
MICROS_SHIFT = 6
_COUNTER_MASK = (1 << COUNTER_BITS) - 1


def hlc_wall_ms(stamp: int) -> int:
    """The wall-clock part of an HLC stamp, in milliseconds since the epoch."""
    return stamp >> COUNTER_BITS


@attrs.define
class Hlc:
    """A hybrid logical clock owned by one peer."""

    last: int = 0

    def tick(self, now_ms: int, micros: int = 0) -> int:
        """Return a fresh stamp for a local event at wall time ``now_ms`` and ``micros`` microseconds (0-999);
        strictly greater than any before."""
        candidate = now_ms << COUNTER_BITS | micros << MICROS_SHIFT
        self.last = candidate if candidate > self.last else self.last + 1
        return self.last

    def observe(self, stamp: int) -> None:
        """Account for a stamp seen on a received operation, so later local stamps sort after it."""
        if stamp > self.last:
            self.last = stamp
