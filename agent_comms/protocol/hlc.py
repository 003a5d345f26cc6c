"""Hybrid logical clock (HLC) packed into one integer.

A timestamp is ``wall_ms << 16 | counter``. It orders events consistently with causality (a receive is stamped
after the send it saw) while staying close to wall time, so it doubles as a human timestamp. Together with the
origin peer id and sequence number it gives every operation a deterministic total order, which is what the
bounded histories and the room folds sort by.

The clock never reads time itself: callers pass ``now_ms`` in (the sans-IO rule).
"""

from __future__ import annotations

import attrs

__all__ = ["COUNTER_BITS", "Hlc", "hlc_wall_ms"]

COUNTER_BITS = 16
_COUNTER_MASK = (1 << COUNTER_BITS) - 1


def hlc_wall_ms(stamp: int) -> int:
    """The wall-clock part of an HLC stamp, in milliseconds since the epoch."""
    return stamp >> COUNTER_BITS


@attrs.define
class Hlc:
    """A hybrid logical clock owned by one peer."""

    last: int = 0

    def tick(self, now_ms: int) -> int:
        """Return a fresh stamp for a local event at wall time ``now_ms``; strictly greater than any before."""
        candidate = now_ms << COUNTER_BITS
        self.last = candidate if candidate > self.last else self.last + 1
        return self.last

    def observe(self, stamp: int) -> None:
        """Account for a stamp seen on a received operation, so later local stamps sort after it."""
        if stamp > self.last:
            self.last = stamp
