"""Sets of message numbers as sorted ranges: what a :class:`~.ops.Mark` covers, per origin.

Two forms of one set of positive integers:

* **wire** (:data:`~.ops.MarkRanges` values): inclusive bounds, flat, ``(lo1, hi1, lo2, hi2, ...)``, ascending, with
  a gap of at least one number between two ranges;
* **bounds** (:data:`Bounds`): half-open and flat, ``[lo1, hi1 + 1, lo2, hi2 + 1, ...]``, strictly ascending, so a
  number ``n`` is covered exactly when ``bisect_right(bounds, n)`` is odd (one bisection).

Pure functions; nothing here knows messages or operations.
"""

from __future__ import annotations

import bisect
from collections.abc import Iterable, Iterator, Mapping

import attrs

__all__ = [
    "Bounds",
    "RangeBuilder",
    "add",
    "covers",
    "difference",
    "from_wire",
    "intervals",
    "to_wire",
    "union",
]

Bounds = list[int]
"""Half-open ranges, flat and strictly ascending: ``[lo1, end1, lo2, end2, ...]`` covers ``lo1 <= n < end1``..."""


def covers(bounds: Bounds, n: int) -> bool:
    """Whether ``n`` lies in one of the ranges."""
    return bisect.bisect_right(bounds, n) & 1 == 1


def intervals(bounds: Bounds) -> Iterator[tuple[int, int]]:
    """The half-open ranges ``(lo, end)`` in order."""
    for i in range(0, len(bounds), 2):
        yield bounds[i], bounds[i + 1]


def _merged(pairs: Iterable[tuple[int, int]]) -> Bounds:
    out: Bounds = []
    for lo, end in sorted(pairs):
        if out and lo <= out[-1]:
            out[-1] = max(out[-1], end)
        else:
            out.extend((lo, end))
    return out


def union(*sets: Bounds) -> Bounds:
    """Every number in any of ``sets``."""
    non_empty = [s for s in sets if s]
    if len(non_empty) <= 1:
        return list(non_empty[0]) if non_empty else []
    if len(non_empty) == 2:
        a, b = non_empty
        if len(b) == 2 and b[0] <= a[0] and a[-1] <= b[1]:
            return list(b)  # one range holding all of the other set: the usual growth of a cumulative marker
        if len(a) == 2 and a[0] <= b[0] and b[-1] <= a[1]:
            return list(a)
    return _merged(pair for s in non_empty for pair in intervals(s))


def add(bounds: Bounds, n: int) -> bool:
    """Add ``n`` in place; return whether it was new."""
    i = bisect.bisect_right(bounds, n)
    if i & 1:
        return False
    joins_left = i > 0 and bounds[i - 1] == n  # the range before ends right below n
    joins_right = i < len(bounds) and bounds[i] == n + 1  # the range after starts right above n
    if joins_left and joins_right:
        del bounds[i - 1 : i + 1]
    elif joins_left:
        bounds[i - 1] = n + 1
    elif joins_right:
        bounds[i] = n
    else:
        bounds[i:i] = [n, n + 1]
    return True


def difference(a: Bounds, b: Bounds) -> Bounds:
    """The numbers of ``a`` not in ``b``."""
    if not b:
        return list(a)
    if len(a) == 2 and len(b) == 2:  # one range each: the usual case
        lo, end, c_lo, c_end = a[0], a[1], b[0], b[1]
        if c_end <= lo or end <= c_lo:
            return [lo, end]
        single: Bounds = []
        if lo < c_lo:
            single.extend((lo, c_lo))
        if c_end < end:
            single.extend((c_end, end))
        return single
    out: Bounds = []
    cut = list(intervals(b))
    j = 0
    for lo, end in intervals(a):
        while j < len(cut) and cut[j][1] <= lo:
            j += 1
        start = lo
        k = j
        while k < len(cut) and cut[k][0] < end:
            c_lo, c_end = cut[k]
            if c_lo > start:
                out.extend((start, c_lo))
            start = max(start, c_end)
            if c_end >= end:
                break
            k += 1
        if start < end:
            out.extend((start, end))
    return out


def from_wire(flat: tuple[int, ...]) -> Bounds | None:
    """The bounds of inclusive wire ranges, or ``None`` if they are malformed (odd length, a number below 1, a
    range upside down, ranges out of order, overlapping or adjacent, or no range at all)."""
    if not flat or len(flat) % 2:
        return None
    out: Bounds = []
    previous = 0
    for i in range(0, len(flat), 2):
        lo, hi = flat[i], flat[i + 1]
        if lo < 1 or hi < lo or lo <= previous:
            return None
        out.extend((lo, hi + 1))
        previous = hi + 1
    return out


def to_wire(bounds: Bounds) -> tuple[int, ...]:
    """The inclusive wire form of ``bounds``."""
    return tuple(value if i % 2 == 0 else value - 1 for i, value in enumerate(bounds))


@attrs.define
class RangeBuilder:
    """The numbers recorded so far, per origin: what an issuer puts in its cumulative marker."""

    by_origin: dict[str, Bounds] = attrs.field(factory=dict)

    def add(self, origin: str, n: int) -> bool:
        """Record message ``n`` of ``origin``; return whether it was new."""
        bounds = self.by_origin.get(origin)
        if bounds is None:
            self.by_origin[origin] = [n, n + 1]
            return True
        return add(bounds, n)

    def add_all(self, other: Mapping[str, Bounds]) -> bool:
        """Record every number of ``other`` (per origin); return whether any was new."""
        grew = False
        for origin, bounds in other.items():
            mine = self.by_origin.get(origin, [])
            merged = union(mine, bounds)
            if merged != mine:
                self.by_origin[origin] = merged
                grew = True
        return grew

    def covers(self, origin: str, n: int) -> bool:
        """Whether message ``n`` of ``origin`` was recorded."""
        bounds = self.by_origin.get(origin)
        return bounds is not None and covers(bounds, n)

    def wire(self) -> dict[str, tuple[int, ...]]:
        """The ranges in the wire form of :class:`~.ops.Mark` (by origin, sorted)."""
        return {origin: to_wire(self.by_origin[origin]) for origin in sorted(self.by_origin)}
