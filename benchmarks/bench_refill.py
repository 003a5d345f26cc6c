"""What a flooded inbox's refills cost the recipient: ``--senders`` agents each DM bob ``--per-sender`` times (bob's
inbox holds 1,000 events, the rest is refused and waits in the history), then bob takes ``--take`` events at a
time, each take followed by ``mark_read`` (a drain), until nothing waits. Each take makes room, and the store
refills the inbox from the state.

    python benchmarks/bench_refill.py [--senders 10] [--per-sender 1000] [--take 100]

Prints the CPU the takes and marks spent (the refills run inside them), and how often the recipient's node asked a
message's receipt status and visibility meanwhile. In-memory mesh (one process, no sockets): the figures are the
store's and planner's own. Not a test: nothing fails because the machine is slow.
"""

from __future__ import annotations

import argparse
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import trio

from agent_comms.protocol.state import MeshState
from agent_comms.testing import open_in_memory_mesh

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import ROOT, write_results


def _count(name: str, counts: dict[str, int], state: MeshState) -> None:
    """Count the calls of ``MeshState.<name>`` on ``state`` into ``counts[name]``."""
    real: Callable[..., Any] = getattr(MeshState, name)
    counts[name] = 0

    def counting(self: MeshState, *args: Any) -> Any:
        if self is state:
            counts[name] += 1
        return real(self, *args)

    setattr(MeshState, name, counting)


async def flood_and_drain(senders: int, per_sender: int, take: int) -> dict[str, Any]:
    async with open_in_memory_mesh() as mesh:
        agents = [await mesh.agent("h1", name=f"s{i}", cwd=f"/w{i}") for i in range(senders)]
        bob = await mesh.agent("h2", name="bob")
        await mesh.settle()
        for n in range(per_sender):
            for agent in agents:
                result = await agent.call({"action": "dm", "target": bob.id, "content": f"dm {n}"})
                assert not result.is_error, result.text
            if n % 50 == 0:
                await mesh.settle()
        await mesh.settle()
        store = bob.store
        counts: dict[str, int] = {}
        for name in ("receipt_status", "message_visible"):
            _count(name, counts, store.state)
        cpu, shown, takes = 0.0, 0, 0
        while True:
            started = time.process_time()
            taken = store.take(bob.id, take)
            store.mark_read(bob.id, taken)
            cpu += time.process_time() - started
            if not taken:
                break
            shown, takes = shown + len(taken), takes + 1
            await mesh.settle()
        held = len(store.state.messages)
    return {
        "held": held,
        "shown": shown,
        "takes": takes,
        "take_and_mark_cpu_ms": cpu * 1000,
        "receipt_status_calls": counts["receipt_status"],
        "message_visible_calls": counts["message_visible"],
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--senders", type=int, default=10)
    parser.add_argument("--per-sender", type=int, default=1000)
    parser.add_argument("--take", type=int, default=100)
    parser.add_argument("--out", default=str(ROOT / "bench-results" / "refill.json"))
    args = parser.parse_args()
    results = trio.run(flood_and_drain, args.senders, args.per_sender, args.take)
    print(f"{results['held']:,} messages held, {results['shown']:,} shown in {results['takes']} takes of {args.take}")
    print(f"{'CPU of the takes and marks (the refills run in them)':58} {results['take_and_mark_cpu_ms']:9.0f} ms")
    print(f"{'receipt status asked on the recipient node':58} {results['receipt_status_calls']:9,}")
    print(f"{'visibility asked on the recipient node':58} {results['message_visible_calls']:9,}")
    write_results(args.out, results)
    return 0


if __name__ == "__main__":
    sys.exit(main())
