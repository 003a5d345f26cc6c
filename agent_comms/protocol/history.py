"""Bounded message histories that converge.

A conversation (a room instance, or the direct messages between two agents) keeps the newest ``limit`` messages
by the total order ``(hlc, origin, seq)``. Keeping the top ``limit`` of a set is a join: whatever order messages
arrive in, and whatever each peer dropped on the way, two peers that have seen the same messages keep the same
ones, because a message among the newest ``limit`` of everything is among the newest ``limit`` of any subset that
contains it. A message older than everything kept in a full history is refused on arrival, so it cannot creep
back in through anti-entropy.
"""

from __future__ import annotations

import bisect

import attrs

from .ops import Op, OpKey, op_key

__all__ = ["History"]


@attrs.define
class History:
    """The newest ``limit`` messages of one conversation, oldest first."""

    limit: int = attrs.field(validator=attrs.validators.ge(1))
    keys: list[OpKey] = attrs.field(factory=list)
    messages: list[Op] = attrs.field(factory=list)

    def __len__(self) -> int:
        return len(self.messages)

    @property
    def full(self) -> bool:
        """Whether the history holds ``limit`` messages (so older arrivals are refused)."""
        return len(self.keys) >= self.limit

    def admits(self, key: OpKey) -> bool:
        """Would a message with this key be kept (ignoring duplicates)?"""
        return not self.full or key > self.keys[0]

    def add(self, op: Op) -> tuple[bool, list[Op]]:
        """Insert a message; return whether it was kept, and the messages evicted to stay within the limit."""
        key = op_key(op)
        keys = self.keys
        if keys and key > keys[-1]:
            index = len(keys)
        else:
            index = bisect.bisect_left(keys, key)
            if index < len(keys) and keys[index] == key:
                return False, []
            if index == 0 and self.full:
                return False, []
        keys.insert(index, key)
        self.messages.insert(index, op)
        if len(keys) <= self.limit:
            return True, []
        excess = len(keys) - self.limit
        evicted = self.messages[:excess]
        del keys[:excess]
        del self.messages[:excess]
        return True, evicted

    def since(self, key: OpKey) -> list[Op]:
        """Messages strictly after ``key``."""
        return self.messages[bisect.bisect_right(self.keys, key) :]
