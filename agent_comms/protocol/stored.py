"""The operations a replica stores, indexed by origin and sequence number, and their digest.

:class:`~.state.MeshState` keeps an operation in one or more places (an agent's record is also its claim's; a
room's log, a history, a receipt or marker slot). Every place registers the operation here when it takes it and
when it lets it go (``MeshState._store`` / ``_unstore``, the one home of that rule), so this index always holds
exactly the operations some place keeps. Two things are read off it:

- the digest: the sum (modulo 2**128) of a 128-bit hash of each stored operation's ``(origin, seq)``, order
  independent, so it is updated as operations come and go and costs nothing to read;
- the operations above a requester's floors (an anti-entropy answer, :meth:`~.replica.Replica.sync_answer`): per
  origin, the sequence numbers are kept sorted, so those above a floor are found by bisection, and an answer costs
  what it sends, not what the replica stores.

The sorted numbers are kept in blocks (a list of short sorted lists and their maxima): adding the next number of
an origin appends to the last block, forgetting the oldest empties the first one, and anything else (a
superseded record or marker, a message that arrives out of order) touches one block of at most twice
``_BLOCK`` numbers, and two neighbouring blocks that fit in one are merged.
"""

from __future__ import annotations

import hashlib
from bisect import bisect_left, bisect_right, insort
from collections.abc import Iterator, Mapping
from typing import Final

from .ops import Op

__all__ = ["DIGEST_MODULUS", "StoredOps", "op_hash"]

#: the digest is a sum modulo this
DIGEST_MODULUS: Final = 1 << 128
#: the usual size of a block of sorted sequence numbers (a block is split beyond twice this)
_BLOCK: Final = 256


def op_hash(origin: str, seq: int) -> int:
    """The 128-bit hash of an operation's ``(origin, seq)`` that the digest sums."""
    return int.from_bytes(hashlib.blake2b(f"{origin}:{seq}".encode(), digest_size=16).digest(), "big")


class _SortedSeqs:
    """A set of sequence numbers kept sorted, in blocks, with the maximum of each block."""

    __slots__ = ("block", "blocks", "maxes")

    def __init__(self, block: int) -> None:
        self.block = block
        self.blocks: list[list[int]] = []
        self.maxes: list[int] = []

    def add(self, seq: int) -> None:
        """Add ``seq`` (not present)."""
        blocks, maxes = self.blocks, self.maxes
        if not blocks:
            blocks.append([seq])
            maxes.append(seq)
            return
        if seq > maxes[-1]:
            i = len(blocks) - 1
            block = blocks[i]
            block.append(seq)
            maxes[i] = seq
        else:
            i = bisect_left(maxes, seq)
            block = blocks[i]
            insort(block, seq)
        size = self.block
        if len(block) > 2 * size:
            blocks.insert(i + 1, block[size:])
            del block[size:]
            maxes.insert(i, block[-1])

    def remove(self, seq: int) -> None:
        """Remove ``seq`` (present)."""
        blocks, maxes = self.blocks, self.maxes
        i = bisect_left(maxes, seq)
        block = blocks[i]
        j = bisect_left(block, seq)
        if j == len(block) or block[j] != seq:
            raise KeyError(seq)
        del block[j]
        if not block:
            del blocks[i]
            del maxes[i]
            return
        if j == len(block):
            maxes[i] = block[-1]
        if i + 1 < len(blocks) and len(block) + len(blocks[i + 1]) <= self.block:
            block.extend(blocks.pop(i + 1))  # two small neighbours become one block
            maxes[i] = maxes.pop(i + 1)

    def above(self, floor: int) -> Iterator[int]:
        """The numbers greater than ``floor``, ascending."""
        blocks = self.blocks
        i = bisect_right(self.maxes, floor)
        if i == len(blocks):
            return
        block = blocks[i]
        yield from block[bisect_right(block, floor) :]
        for block in blocks[i + 1 :]:
            yield from block


class _Origin:
    """What is stored of one origin: its operations by sequence number, sorted, and how many places keep each."""

    __slots__ = ("extra", "ops", "seqs")

    def __init__(self, block: int) -> None:
        self.ops: dict[int, Op] = {}
        #: sequence number -> places beyond the first that keep it (only ever an agent's record: rarely present)
        self.extra: dict[int, int] = {}
        self.seqs = _SortedSeqs(block)


class StoredOps:
    """Every operation stored by some place of a replica, counted per place, by origin and sequence number."""

    __slots__ = ("_block", "_digest", "_origins")

    def __init__(self, block: int = _BLOCK) -> None:
        """``block``: the usual size of a block of sorted sequence numbers (small ones only in tests)."""
        if block < 1:
            raise ValueError(f"block must be at least 1, not {block}")
        self._block = block
        self._origins: dict[str, _Origin] = {}
        self._digest = 0

    def add(self, op: Op) -> None:
        """One more place keeps ``op``."""
        origin, seq = op.origin, op.seq
        held = self._origins.get(origin)
        if held is None:
            held = self._origins[origin] = _Origin(self._block)
        if seq in held.ops:
            held.extra[seq] = held.extra.get(seq, 0) + 1
            return
        held.ops[seq] = op
        held.seqs.add(seq)
        self._digest = (self._digest + op_hash(origin, seq)) % DIGEST_MODULUS

    def discard(self, op: Op) -> None:
        """One place fewer keeps ``op`` (it must be kept by one)."""
        origin, seq = op.origin, op.seq
        held = self._origins[origin]
        if seq not in held.ops:
            raise KeyError((origin, seq))
        extra = held.extra.get(seq)
        if extra:
            if extra == 1:
                del held.extra[seq]
            else:
                held.extra[seq] = extra - 1
            return
        del held.ops[seq]
        held.seqs.remove(seq)
        if not held.ops:
            del self._origins[origin]
        self._digest = (self._digest - op_hash(origin, seq)) % DIGEST_MODULUS

    def digest(self) -> bytes:
        """The hash of the set of stored operations (16 bytes)."""
        return self._digest.to_bytes(16, "big")

    def above(self, floors: Mapping[str, int]) -> Iterator[Op]:
        """Every stored operation whose sequence number is above its origin's floor in ``floors`` (0 if absent),
        by origin and then sequence number; each once."""
        for origin, held in self._origins.items():
            ops = held.ops
            for seq in held.seqs.above(floors.get(origin, 0)):
                yield ops[seq]

    def origins(self) -> set[str]:
        """The origins of which some operation is stored."""
        return set(self._origins)

    def __len__(self) -> int:
        return sum(len(held.ops) for held in self._origins.values())

    def check(self) -> None:
        """Raise ``AssertionError`` unless the sorted numbers and the operations agree (for tests; the digest is
        checked against one computed from scratch by ``MeshState.digest_from_scratch``)."""
        for origin, held in self._origins.items():
            seqs = [seq for block in held.seqs.blocks for seq in block]
            assert held.ops, origin
            assert seqs == sorted(held.ops), origin
            assert held.seqs.maxes == [block[-1] for block in held.seqs.blocks], origin
            assert all(0 < len(block) <= 2 * self._block for block in held.seqs.blocks), origin
            assert held.extra.keys() <= held.ops.keys(), origin
            assert all(op.origin == origin and op.seq == seq for seq, op in held.ops.items()), origin
