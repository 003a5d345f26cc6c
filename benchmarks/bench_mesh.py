"""Mesh benchmark: failover, handover, join, round trip and throughput, against a bare Trio + msgspec baseline.

Run with ``nox -s bench`` (or ``python benchmarks/bench_mesh.py``). Prints a table and writes
``bench-results/mesh.json``. It is not a test: nothing here fails because the machine is slow. Compare the ratios
measured in one run (the machine is shared and noisy), not absolute times across runs.
"""

from __future__ import annotations

import argparse
import os
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from functools import partial
from pathlib import Path
from typing import Any

import msgspec
import trio
import trio.lowlevel

from agent_comms.mesh.keyfile import load_or_create_key
from agent_comms.mesh.node import MeshNode, open_node
from agent_comms.mesh.registry import PeerRegistry
from agent_comms.protocol.changes import MessageAdded
from agent_comms.protocol.ops import AgentUpsert, DirectMessage

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import ROOT, Echo, free_port, ms, read_frame, write_results

# ----------------------------------------------------------------------------------------------- baseline


async def baseline_round_trip(rounds: int) -> list[float]:
    """Bare Trio + msgspec: a client sends a length-prefixed msgpack message, a server echoes it."""
    encoder, decoder = msgspec.msgpack.Encoder(), msgspec.msgpack.Decoder(Echo)
    samples: list[float] = []

    async def serve(stream: trio.SocketStream) -> None:
        buf = bytearray()
        try:
            while True:
                body = await read_frame(stream, buf)
                message = decoder.decode(body)
                out = encoder.encode(message)
                await stream.send_all(len(out).to_bytes(4, "big") + out)
        except (EOFError, trio.BrokenResourceError):
            pass

    async with trio.open_nursery() as nursery:
        listeners = await nursery.start(partial(trio.serve_tcp, serve, 0, host="127.0.0.1"))
        port = listeners[0].socket.getsockname()[1]
        stream = await trio.open_tcp_stream("127.0.0.1", port)
        buf = bytearray()
        for i in range(rounds):
            out = encoder.encode(Echo(i, "ping"))
            t0 = time.perf_counter()
            await stream.send_all(len(out).to_bytes(4, "big") + out)
            decoder.decode(await read_frame(stream, buf))
            samples.append(time.perf_counter() - t0)
        await stream.aclose()
        nursery.cancel_scope.cancel()
    return samples


# ----------------------------------------------------------------------------------------------- in-process nodes


async def _two_nodes(nursery: trio.Nursery, key: bytes, port: int) -> tuple[MeshNode, MeshNode]:
    async def run(task_status: trio.TaskStatus[MeshNode]) -> None:
        async with open_node(key, port=port, probe_processes=False) as node:
            task_status.started(node)
            await trio.sleep_forever()

    a: MeshNode = await nursery.start(run)
    b: MeshNode = await nursery.start(run)
    await a.wait_for(lambda: b.peer_id in a.peer.data_links and a.peer_id in b.peer.data_links)
    return a, b


def _agent(name: str) -> AgentUpsert:
    return AgentUpsert(name, "", 0, 0, name, "bench", "/bench", 0, 0.0)


async def node_round_trip(key: bytes, rounds: int) -> list[float]:
    """An operation from A to B, and B's answer back, over a real data link (both nodes in this process)."""
    samples: list[float] = []
    async with trio.open_nursery() as nursery:
        a, b = await _two_nodes(nursery, key, free_port())
        alice, bob = a.host_agent(_agent("alice")), b.host_agent(_agent("bob"))
        a_changes, b_changes = a.subscribe(), b.subscribe()

        async def answer() -> None:
            async for change in b_changes:
                if isinstance(change, MessageAdded) and change.op.origin == a.peer_id:
                    b.submit(DirectMessage("bob", bob.incarnation, "alice", "pong"))

        nursery.start_soon(answer)
        for _ in range(rounds):
            t0 = time.perf_counter()
            a.submit(DirectMessage("alice", alice.incarnation, "bob", "ping"))
            async for change in a_changes:
                if isinstance(change, MessageAdded) and change.op.origin == b.peer_id:
                    break
            samples.append(time.perf_counter() - t0)
        nursery.cancel_scope.cancel()
    return samples


async def node_throughput(key: bytes, count: int) -> float:
    """One-way operations per second from A to B over one data link."""
    async with trio.open_nursery() as nursery:
        a, b = await _two_nodes(nursery, key, free_port())
        alice = a.host_agent(_agent("alice"))
        b.host_agent(_agent("bob"))
        await b.wait_for(lambda: "alice" in b.peer.replica.state.agents)
        received = b.subscribe()
        done = trio.Event()
        seen = 0

        async def count_arrivals() -> None:
            nonlocal seen
            async for change in received:
                if isinstance(change, MessageAdded):
                    seen += 1
                    if seen == count:
                        done.set()

        nursery.start_soon(count_arrivals)
        t0 = time.perf_counter()
        for i in range(count):
            a.submit(DirectMessage("alice", alice.incarnation, "bob", f"m{i}"))
            if i % 256 == 255:
                await trio.lowlevel.checkpoint()  # let the writer drain, as a real sender yields between tool calls
        await done.wait()
        elapsed = time.perf_counter() - t0
        nursery.cancel_scope.cancel()
    return count / elapsed


# ----------------------------------------------------------------------------------------------- real processes


class Cluster:
    """Peers as OS processes on a free port, sharing a temporary AGENT_COMMS_HOME."""

    def __init__(self, home: Path, port: int) -> None:
        self.home, self.port = home, port
        self.env = {**os.environ, "AGENT_COMMS_HOME": str(home), "AGENT_COMMS_PORT": str(port)}
        self.processes: list[subprocess.Popen[bytes]] = []
        self.peer_ids: list[str] = []

    def spawn(self) -> None:
        process = subprocess.Popen([sys.executable, "-m", "agent_comms.mesh"], env=self.env, stdout=subprocess.PIPE)
        assert process.stdout is not None
        line = process.stdout.readline().decode().split()
        self.processes.append(process)
        self.peer_ids.append(line[1])

    def close(self) -> None:
        for process in self.processes:
            if process.poll() is None:
                process.kill()
        for process in self.processes:
            process.wait()


async def _join_one(key: bytes, port: int, home: Path, expect: set[str]) -> tuple[float, float, float]:
    """Start a node here; return how long until it is linked to every peer in ``expect``, until it is also synced
    (its first anti-entropy round answered: what an agent waits for before its first call), and until it is also
    introduced by a live coordinator (the mesh has a coordinator again)."""
    t0 = time.perf_counter()
    async with open_node(key, port=port, registry=PeerRegistry(home), probe_processes=False) as node:
        with trio.fail_after(10):
            await node.wait_for(lambda: expect <= set(node.peer.data_links))
            linked = time.perf_counter() - t0
            await node.wait_synced()
            synced = time.perf_counter() - t0
            await node.wait_for(
                lambda: (
                    node.peer.is_coordinator
                    or (node.peer.coordinator_link is not None and node.peer.coordinator_id is not None)
                )
            )
            introduced = time.perf_counter() - t0
        node.abort()  # leave without ceremony, so the next round starts clean
    return linked, synced, introduced


def _wait_linked(cluster: Cluster, key: bytes, expect_peers: int) -> None:
    """Wait until a fresh observer-free check says the cluster has one coordinator linking everyone."""
    from agent_comms.mesh.observe import observe_mesh

    async def check() -> None:
        with trio.fail_after(20):
            while True:
                snap = await observe_mesh(key, port=cluster.port, registry=PeerRegistry(cluster.home))
                views = [v for v in snap.peers if v.links is not None]
                if len(views) == expect_peers and all(len(v.links or ()) == expect_peers - 1 for v in views):
                    return
                await trio.sleep(0.05)

    trio.run(check)


def failover(peers: int, rounds: int, *, graceful: bool) -> tuple[list[float], list[float]]:
    """Kill (or SIGTERM) the coordinator of ``peers`` processes and start a new peer at once. Returns the times
    until the new peer has joined the survivors, and until it is also introduced by the new coordinator."""
    samples: list[float] = []
    coordinated: list[float] = []
    for _ in range(rounds):
        with tempfile.TemporaryDirectory() as tmp:
            home = Path(tmp) / "home"
            key = load_or_create_key(home)
            cluster = Cluster(home, free_port())
            try:
                for _ in range(peers):
                    cluster.spawn()
                _wait_linked(cluster, key, peers)
                survivors = set(cluster.peer_ids[1:])
                victim = cluster.processes[0]
                t0 = time.perf_counter()
                victim.send_signal(signal.SIGTERM if graceful else signal.SIGKILL)

                started = time.perf_counter() - t0
                linked, _synced, introduced = trio.run(_join_one, key, cluster.port, home, survivors)
                samples.append(started + linked)
                coordinated.append(started + introduced)
            finally:
                cluster.close()
    return samples, coordinated


def join_into(peers: int, rounds: int) -> dict[str, list[float]]:
    """A new peer joins ``peers`` running processes, in interleaved rounds of three kinds: a node opened in this
    already running process, until linked with all of them (``linked``) and also synced (``synced``); a new process
    (this script's ``--join-child``), from its launch until it has printed that it is linked and synced
    (``process``); and ``python -c "import trio"`` from launch to exit, the floor of any Python process (``trio``)."""
    samples: dict[str, list[float]] = {"linked": [], "synced": [], "process": [], "trio": []}
    with tempfile.TemporaryDirectory() as tmp:
        home = Path(tmp) / "home"
        key = load_or_create_key(home)
        cluster = Cluster(home, free_port())
        try:
            for _ in range(peers):
                cluster.spawn()
            _wait_linked(cluster, key, peers)
            expect = ",".join(cluster.peer_ids)
            for _ in range(rounds):
                linked, in_sync, _introduced = trio.run(_join_one, key, cluster.port, home, set(cluster.peer_ids))
                samples["linked"].append(linked)
                samples["synced"].append(in_sync)
                time.sleep(0.3)  # let the others notice the departure before the next round
                t0 = time.perf_counter()
                child = [sys.executable, __file__, "--join-child", str(cluster.port), str(home), expect]
                with subprocess.Popen(child, env=cluster.env, stdout=subprocess.PIPE) as process:
                    assert process.stdout is not None
                    line = process.stdout.readline()
                    samples["process"].append(time.perf_counter() - t0)
                    if process.wait(timeout=60) != 0 or not line.startswith(b"synced"):
                        raise RuntimeError(f"the joining process failed (exit status {process.returncode})")
                time.sleep(0.3)
                t0 = time.perf_counter()
                subprocess.run([sys.executable, "-c", "import trio"], check=True)
                samples["trio"].append(time.perf_counter() - t0)
        finally:
            cluster.close()
    return samples


def join_child(port: int, home: Path, expect: str) -> None:
    """``--join-child``: join the mesh, print ``synced`` once linked with every peer in ``expect`` and synced, leave."""
    trio.run(_join_one, load_or_create_key(home), port, home, set(expect.split(",")))
    print("synced", flush=True)


# ----------------------------------------------------------------------------------------------- report


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--quick", action="store_true", help="fewer rounds (a smoke run)")
    parser.add_argument("--out", default=str(ROOT / "bench-results" / "mesh.json"))
    parser.add_argument("--join-child", nargs=3, metavar=("PORT", "HOME", "PEERS"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.join_child:
        join_child(int(args.join_child[0]), Path(args.join_child[1]), args.join_child[2])
        return 0
    rounds = 3 if args.quick else 7
    key = bytes(32)
    results: dict[str, Any] = {"python": sys.version.split()[0], "cpus": os.cpu_count(), "quick": args.quick}

    base = trio.run(baseline_round_trip, 2000)
    node = trio.run(node_round_trip, key, 2000)
    results["baseline_round_trip"] = ms(base)
    results["link_round_trip"] = ms(node)
    results["link_vs_baseline_ratio"] = statistics.median(node) / statistics.median(base)
    results["one_way_ops_per_s"] = trio.run(node_throughput, key, 20000 if args.quick else 100000)
    for peers in (4, 8, 16):
        joined, coordinated = failover(peers, rounds, graceful=False)
        results[f"crash_failover_{peers}"] = ms(joined)
        results[f"crash_new_coordinator_{peers}"] = ms(coordinated)
    joined, coordinated = failover(8, rounds, graceful=True)
    results["graceful_handover_8"] = ms(joined)
    results["graceful_new_coordinator_8"] = ms(coordinated)
    join = join_into(16, rounds * 2)
    results["join_into_16"] = ms(join["linked"])
    results["join_into_16_synced"] = ms(join["synced"])
    results["join_into_16_from_process_start"] = ms(join["process"])
    results["python_import_trio_launch_to_exit"] = ms(join["trio"])

    rows = [
        ("bare trio+msgspec echo round trip", results["baseline_round_trip"]),
        ("op round trip over a data link", results["link_round_trip"]),
        ("SIGKILL coordinator of 4: new peer joined", results["crash_failover_4"]),
        ("SIGKILL coordinator of 8: new peer joined", results["crash_failover_8"]),
        ("SIGKILL coordinator of 16: new peer joined", results["crash_failover_16"]),
        ("SIGKILL coordinator of 4: ...and coordinated", results["crash_new_coordinator_4"]),
        ("SIGKILL coordinator of 8: ...and coordinated", results["crash_new_coordinator_8"]),
        ("SIGKILL coordinator of 16: ...and coordinated", results["crash_new_coordinator_16"]),
        ("SIGTERM coordinator of 8: new peer joined", results["graceful_handover_8"]),
        ("SIGTERM coordinator of 8: ...and coordinated", results["graceful_new_coordinator_8"]),
        ("join into 16 peers: linked with all", results["join_into_16"]),
        ("join into 16: linked and synced (target <= 50)", results["join_into_16_synced"]),
        ("join into 16 from process start: synced", results["join_into_16_from_process_start"]),
        ('python -c "import trio", launch to exit', results["python_import_trio_launch_to_exit"]),
    ]
    print(f"{'measurement':46} {'median':>10} {'p90':>10} {'min':>10} {'n':>6}")
    for label, value in rows:
        print(
            f"{label:46} {value['median_ms']:9.3f}ms {value['p90_ms']:9.3f}ms {value['min_ms']:9.3f}ms {value['n']:6}"
        )
    print(f"{'link round trip / baseline round trip':46} {results['link_vs_baseline_ratio']:9.2f}x")
    print(f"{'one-way ops per second, one link':46} {results['one_way_ops_per_s']:10.0f}/s")
    write_results(args.out, results)
    return 0


if __name__ == "__main__":
    sys.exit(main())
