"""The anti-entropy digest at scale: reading ``MeshState.digest()`` after each apply, against computing it from every
stored operation as it was done before it was maintained incrementally (the same run, same state).

    python benchmarks/bench_digest.py [--ops 20000]

Builds a replica of ``--ops`` direct messages and receipts (one conversation per 1,000 operations, within their
histories), then times
applying a further operation and reading the digest, and the from-scratch computation over the same state.
"""

from __future__ import annotations

import argparse
import hashlib
import statistics
import time

from agent_comms.protocol.ops import DirectMessage, Op, Receipt, dm_conversation, op_key
from agent_comms.protocol.state import MeshState


def _from_scratch(state: MeshState) -> bytes:
    """The digest as it was computed before: every stored operation's id, sorted, hashed."""
    ids = sorted({(op.origin, op.seq) for op in state.stored_ops()})
    h = hashlib.blake2b(digest_size=16)
    for origin, seq in ids:
        h.update(f"{origin}:{seq};".encode())
    return h.digest()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--ops", type=int, default=20_000)
    parser.add_argument("--rounds", type=int, default=21)
    args = parser.parse_args()
    state = MeshState()
    seq = 0

    def stamp(body: DirectMessage | Receipt) -> Op:
        nonlocal seq
        seq += 1
        return Op("p1", seq, seq << 16, body)

    conversations = max(1, args.ops // 1000)
    while seq < args.ops:
        n = seq
        author, recipient = f"a{n % conversations}", f"b{n % conversations}"
        message = stamp(DirectMessage(author, 0, recipient, f"m{n}"))
        state.apply(message)
        receipt = Receipt(
            f"p1-{message.seq}", dm_conversation(author, recipient), op_key(message), recipient, 0, "read"
        )
        state.apply(stamp(receipt))
    stored = len({(op.origin, op.seq) for op in state.stored_ops()})
    incremental, scratch = [], []
    for n in range(args.rounds):
        op = stamp(DirectMessage("a0", 0, "b0", f"extra {n}"))
        started = time.perf_counter()
        state.apply(op)
        state.digest()
        incremental.append(time.perf_counter() - started)
        started = time.perf_counter()
        _from_scratch(state)
        scratch.append(time.perf_counter() - started)
    inc, old = statistics.median(incremental), statistics.median(scratch)
    print(f"stored operations: {stored}")
    print(f"apply + digest (maintained): {inc * 1e3:.3f} ms median of {args.rounds}")
    print(f"digest from scratch (before): {old * 1e3:.3f} ms median of {args.rounds}")
    print(f"ratio: {old / inc:.0f}x")


if __name__ == "__main__":
    main()
