"""Anti-entropy at scale: one whole exchange between two peers' replicas holding N stored operations.

    python benchmarks/bench_antientropy.py [--quick] [--sizes 10000,100000] [--rounds 21]

Sans-IO, in one process: two replicas (each the replica of a real :class:`~agent_comms.protocol.peer.Peer`) hold
the same N direct messages made by four origins (100 per conversation of 1,000 messages, the history bound), and
one exchange is what a link does for anti-entropy: the asker's ``SyncRequest`` (its digest and floors) encoded as a
frame, decoded by the answerer, the answer made (:meth:`Replica.sync_answer`), cut into ``SyncOps`` frames as the
peer does and encoded, then decoded by the asker, its operations applied and the floors adopted. Timed:

- in sync: nothing to send (the periodic round when the replicas agree);
- one behind: the answerer holds one operation the asker lacks (a live operation still on its way: what a round
  finds on a link that carries traffic);
- 100 behind: the answerer holds the asker's hundred newest operations (a round after a short cut): the answer
  is found by bisection above the asker's floors, so it should cost what it sends, whatever N;
- catch-up: an empty replica asks (a new peer), once per size; this one is expected to grow with N.

The first three are what the target ("<= 5 ms, independent of state size") is about. Prints a table and writes
``bench-results/antientropy.json``. Not a test: nothing fails because a figure is large.
"""

from __future__ import annotations

import argparse
import random
import statistics
import sys
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import ROOT, write_results

from agent_comms.protocol.framing import FrameDecoder, encode_frame, encode_frames
from agent_comms.protocol.ops import DirectMessage
from agent_comms.protocol.peer import Peer, PeerConfig
from agent_comms.protocol.replica import Replica
from agent_comms.protocol.wire import SyncOps, SyncRequest

#: messages per conversation (the default history bound: more would evict, and the state would not grow)
PER_CONVERSATION = 1000
ORIGINS = 4
NOW_MS = 1_800_000_000_000
#: operations the asker lacks in the "100 behind" round
BEHIND = 100


def _peer(seed: int) -> Peer:
    return Peer.create(
        key=bytes(32),
        config=PeerConfig(coordinator_port=1),
        rng=random.Random(seed),
        pid=1,
        started_at=seed,
        data_port=1,
    )


class Mesh:
    """Origins making direct messages, and the two peers whose replicas receive every one of them."""

    def __init__(self) -> None:
        self.origins = [Replica.create(f"origin{i}-{'0' * 12}") for i in range(ORIGINS)]
        self.asker, self.answerer = _peer(1), _peer(2)
        self.made = 0

    def make(self) -> Any:
        n = self.made
        self.made += 1
        conversation = n // PER_CONVERSATION
        body = DirectMessage(f"claude-code-{conversation:010x}", 1, f"codex-{conversation:010x}", f"message {n}")
        op, _ = self.origins[n % ORIGINS].make(body, NOW_MS + n // 1000, n % 1000)
        return op

    def grow(self, count: int) -> None:
        """Both replicas receive ``count`` new operations."""
        for _ in range(count):
            op = self.make()
            self.asker.replica.receive(op)
            self.answerer.replica.receive(op)


def exchange(asker: Peer, answerer: Peer) -> dict[str, float]:
    """One anti-entropy exchange, asker -> answerer -> asker, through the real frame encoding. Returns the time of
    each step (seconds) and how many operations the answer carried."""
    t0 = time.perf_counter()
    request_bytes = encode_frame(asker.replica.sync_request())
    t1 = time.perf_counter()
    decoder = FrameDecoder()
    decoder.feed(request_bytes)
    request = decoder.next_frame()
    assert isinstance(request, SyncRequest)
    answer = answerer.replica.sync_answer(request)
    chunks = [frame.ops for frame in answerer.ops_frames(answer)]
    last = chunks.pop() if chunks else ()
    frames = [
        *(SyncOps(chunk, done=False) for chunk in chunks),
        SyncOps(last, done=True, floors=answerer.replica.floors()),
    ]
    answer_bytes = encode_frames(frames)
    t2 = time.perf_counter()
    decoder = FrameDecoder()
    decoder.feed(answer_bytes)
    for frame in decoder.frames():
        assert isinstance(frame, SyncOps)
        asker.replica.receive_many(frame.ops)
        if frame.done:
            asker.replica.adopt_floors(frame.floors)
    t3 = time.perf_counter()
    return {"total": t3 - t0, "request": t1 - t0, "answer": t2 - t1, "apply": t3 - t2, "ops": len(answer)}


def _in_ms(sample: dict[str, float]) -> dict[str, float]:
    """The step times in milliseconds (``<step>_ms``), the operation count as it is."""
    return {
        key if key == "ops" else f"{key}_ms": value if key == "ops" else value * 1000 for key, value in sample.items()
    }


def _summary(samples: list[dict[str, float]]) -> dict[str, float]:
    """Per step, the median over the rounds; and the slowest round."""
    medians = _in_ms({key: statistics.median(s[key] for s in samples) for key in samples[0]})
    return medians | {"max_total_ms": max(s["total"] for s in samples) * 1000, "n": len(samples)}


def measure(size: int, rounds: int) -> dict[str, Any]:
    mesh = Mesh()
    started = time.perf_counter()
    mesh.grow(size)
    built = time.perf_counter() - started
    asker, answerer = mesh.asker, mesh.answerer
    stored = len({(op.origin, op.seq) for op in answerer.replica.state.stored_ops()})
    assert asker.replica.state.digest() == answerer.replica.state.digest()
    in_sync, behind, behind_100 = [], [], []
    for _ in range(rounds):
        in_sync.append(exchange(asker, answerer))
        answerer.replica.receive(mesh.make())  # a live operation the asker has not received yet
        behind.append(exchange(asker, answerer))
        assert asker.replica.state.digest() == answerer.replica.state.digest(), "the exchange did not converge"
        for _ in range(BEHIND):
            answerer.replica.receive(mesh.make())
        behind_100.append(exchange(asker, answerer))
        assert asker.replica.state.digest() == answerer.replica.state.digest(), "the exchange did not converge"
    fresh = _peer(3)
    catch_up = exchange(fresh, answerer)
    assert fresh.replica.state.digest() == answerer.replica.state.digest(), "the catch-up did not converge"
    return {
        "stored_ops": stored,
        "build_s": built,
        "in_sync": _summary(in_sync),
        "one_behind": _summary(behind),
        "100_behind": _summary(behind_100),
        "catch_up": _in_ms(catch_up),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="a smoke run (1,000 and 5,000 operations, 5 rounds)")
    parser.add_argument("--sizes", default="10000,100000", help="stored operations, comma-separated")
    parser.add_argument("--rounds", type=int, default=21)
    parser.add_argument("--out", default=str(ROOT / "bench-results" / "antientropy.json"))
    args = parser.parse_args()
    if args.quick:
        args.sizes, args.rounds = "1000,5000", 5
    results: dict[str, Any] = {"quick": args.quick, "rounds": args.rounds, "sizes": {}}
    print(f"{'stored ops':>10} {'round':<12} {'total':>10} {'request':>10} {'answer':>10} {'apply':>10} {'ops':>7}")
    for size in (int(s) for s in args.sizes.split(",")):
        row = results["sizes"][size] = measure(size, args.rounds)
        for name in ("in_sync", "one_behind", "100_behind", "catch_up"):
            r = row[name]
            print(
                f"{row['stored_ops']:>10} {name:<12} {r['total_ms']:>8.3f}ms {r['request_ms']:>8.3f}ms "
                f"{r['answer_ms']:>8.3f}ms {r['apply_ms']:>8.3f}ms {r['ops']:>7.0f}"
            )
    print(
        "(in_sync, one_behind, 100_behind: medians of the rounds; catch_up: an empty replica asks, once;"
        " target <= 5 ms)"
    )
    write_results(args.out, results)


if __name__ == "__main__":
    main()
