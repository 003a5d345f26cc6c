"""Agent benchmark: DM round trip between two agent processes against a bare echo, room throughput, memory, import.

Run with ``nox -s bench`` or ``python benchmarks/bench_agents.py [--quick] [--pairs 20] [--block 100]``. Prints a
table and writes ``bench-results/agents.json``. Not a test: nothing fails because the machine is slow.

The DM round trip (client agent -> echo agent -> client, each agent in its own process) is measured in blocks
interleaved with blocks of the baseline, a bare Trio + msgspec echo between two processes, in the same run: the
baseline's median moves several-fold with the machine's load, so a ratio of two separate runs means little. The
ratio is computed per pair of neighbouring blocks and its median (and range) is reported, with the wall time and
the CPU both processes spent per round trip (user + system, so the wall time can be split into work and waiting).
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import msgspec
import trio
import trio.lowlevel

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import ROOT, Echo, StepCounter, free_port, ms, process_cpu, read_frame, write_results

# ------------------------------------------------------------------------------------------- helper processes


async def baseline_server(port: int) -> None:
    """Bare Trio + msgspec echo server (run as its own process)."""
    decoder, encoder = msgspec.msgpack.Decoder(Echo), msgspec.msgpack.Encoder()

    async def serve(stream: trio.SocketStream) -> None:
        buf = bytearray()
        try:
            while True:
                out = encoder.encode(decoder.decode(await read_frame(stream, buf)))
                await stream.send_all(len(out).to_bytes(4, "big") + out)
        except (EOFError, trio.BrokenResourceError):
            pass

    await trio.serve_tcp(serve, port, host="127.0.0.1")


async def echo_agent(count_room: int) -> None:
    """An agent that answers every DM with a DM, and reports by DM when it has seen ``count_room`` room messages."""
    from agent_comms import open_agent

    async with open_agent(harness="bench-echo", name="echo", cwd=tempfile.gettempdir()) as agent:
        print("ready", flush=True)
        seen = 0
        while True:
            await agent.store.wait_pending(agent.id)
            events = agent.drain()
            for event in events:
                if event.type == "dm":
                    await agent.call({"action": "dm", "target": event.sender, "content": event.content})
                elif event.type == "room_message":
                    seen += 1
                    if seen == count_room:
                        await agent.call({"action": "dm", "target": event.sender, "content": f"seen {seen}"})
                        seen = 0


# ------------------------------------------------------------------------------------------- measurements


async def _open_baseline(port: int) -> tuple[trio.Process, trio.SocketStream]:
    """Start the bare echo server process and connect to it."""
    server = await trio.lowlevel.open_process([sys.executable, __file__, "--baseline-server", str(port)])
    with trio.fail_after(30):
        while True:
            try:
                return server, await trio.open_tcp_stream("127.0.0.1", port)
            except OSError:
                await trio.sleep(0.02)


async def dm_against_baseline(pairs: int, per_block: int) -> dict[str, Any]:
    """DM round trips between two agent processes, interleaved with the bare echo between two processes.

    ``pairs`` pairs of blocks of ``per_block`` round trips each, one block of each kind per pair (the order
    alternating from pair to pair), so the machine's load moves both alike. Per block: the median wall time, and the
    CPU both processes spent per round trip; per pair, the ratio of the two blocks' medians."""
    from agent_comms import open_agent

    encoder, decoder = msgspec.msgpack.Encoder(), msgspec.msgpack.Decoder(Echo)
    server, stream = await _open_baseline(free_port())
    echo = await trio.lowlevel.open_process([sys.executable, __file__, "--echo-agent", "1"], stdout=subprocess.PIPE)
    try:
        assert echo.stdout is not None
        with trio.fail_after(30):
            await echo.stdout.receive_some(64)
        async with open_agent(harness="bench-client", name="client", cwd=str(ROOT)) as agent:
            store = agent.store
            with trio.fail_after(20):
                while "echo" not in (await agent.call({"action": "list_agents"})).text:  # noqa: ASYNC110
                    await trio.sleep(0.05)
            agent.drain()
            buf = bytearray()

            async def echo_round_trip(i: int) -> float:
                out = encoder.encode(Echo(i, "ping"))
                t0 = time.perf_counter()
                await stream.send_all(len(out).to_bytes(4, "big") + out)
                decoder.decode(await read_frame(stream, buf))
                return time.perf_counter() - t0

            async def dm_round_trip(i: int) -> float:
                t0 = time.perf_counter()
                await agent.call({"action": "dm", "target": "echo", "content": "ping"})
                while True:
                    await store.wait_pending(agent.id)
                    if any(e.type == "dm" for e in agent.drain()):
                        return time.perf_counter() - t0

            async def block(kind: str) -> dict[str, float]:
                trip, other = (echo_round_trip, server.pid) if kind == "echo" else (dm_round_trip, echo.pid)
                counter = StepCounter()
                cpu0, other_cpu0 = time.process_time(), process_cpu(other)
                trio.lowlevel.add_instrument(counter)
                try:
                    samples = [await trip(i) for i in range(per_block)]
                finally:
                    trio.lowlevel.remove_instrument(counter)
                return {
                    "median_ms": statistics.median(samples) * 1000,
                    "client_cpu_ms": (time.process_time() - cpu0) / per_block * 1000,
                    "server_cpu_ms": (process_cpu(other) - other_cpu0) / per_block * 1000,
                    "task_steps": counter.steps / per_block,
                    "scheduler_passes": counter.passes / per_block,
                }

            for _ in range(50):  # warm up both
                await echo_round_trip(0)
                await dm_round_trip(0)
            blocks: dict[str, list[dict[str, float]]] = {"echo": [], "dm": []}
            for pair in range(pairs):
                for kind in ("echo", "dm") if pair % 2 == 0 else ("dm", "echo"):
                    blocks[kind].append(await block(kind))
            await stream.aclose()
    finally:
        for process in (echo, server):
            process.kill()
            await process.wait()
    ratios = [dm["median_ms"] / base["median_ms"] for dm, base in zip(blocks["dm"], blocks["echo"], strict=True)]

    def summary(kind: str) -> dict[str, float]:
        return {key: statistics.median(b[key] for b in blocks[kind]) for key in blocks[kind][0]}

    return {
        "pairs": pairs,
        "round_trips_per_block": per_block,
        "baseline": summary("echo"),
        "dm": summary("dm"),
        "ratio_median": statistics.median(ratios),
        "ratio_min": min(ratios),
        "ratio_max": max(ratios),
        "ratios": ratios,
        "blocks": blocks,
    }


#: Rooms the throughput run spreads its messages over, so that the member ends up holding all of them.
ROOMS = [f"flood{i}" for i in range(10)]


async def room_throughput(messages: int) -> tuple[float, int]:
    """One sender to one member (in another process): messages per second, and the member's resident memory."""
    from agent_comms import open_agent

    member = await trio.lowlevel.open_process(
        [sys.executable, __file__, "--room-member", str(messages)], stdout=subprocess.PIPE
    )
    try:
        assert member.stdout is not None
        async with open_agent(harness="bench-sender", name="sender", cwd=str(ROOT)) as agent:
            for room in ROOMS:
                await agent.call({"action": "create_room", "room": room})
            line = b""
            with trio.fail_after(30):
                while not line.endswith(b"\n"):
                    line += await member.stdout.receive_some(64)
            assert line.startswith(b"joined")
            agent.drain()
            t0 = time.perf_counter()
            for i in range(messages):
                agent.tool.call({"action": "send", "target": ROOMS[i % len(ROOMS)], "content": f"message {i}"})
                if i % 512 == 511:
                    await trio.lowlevel.checkpoint()
            with trio.fail_after(120):
                done = b""
                while not done.endswith(b"\n"):
                    done += await member.stdout.receive_some(64)
            elapsed = time.perf_counter() - t0
            rss_kib = int(done.split()[1])
            return messages / elapsed, rss_kib
    finally:
        member.kill()
        await member.wait()


async def room_member(expected: int) -> None:
    """Joins the rooms, counts room messages, prints ``done <rss KiB>`` when all arrived (run as its own process).

    With 10,000 messages over 10 rooms it then holds all 10,000 in its history (1,000 per room is the bound)."""
    from agent_comms import open_agent

    async with open_agent(harness="bench-member", name="member", cwd=tempfile.gettempdir()) as agent:
        with trio.fail_after(20):
            for room in ROOMS:
                while (await agent.call({"action": "join_room", "room": room})).is_error:  # noqa: ASYNC110
                    await trio.sleep(0.02)
        print("joined", flush=True)
        seen = 0
        while seen < expected:
            await agent.store.wait_pending(agent.id)
            seen += sum(1 for e in agent.drain() if e.type == "room_message")
        rss = _rss_kib()
        print(f"done {rss}", flush=True)
        await trio.sleep_forever()


def _rss_kib() -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS"):
            return int(line.split()[1])
    return 0


def import_time(repeats: int = 7) -> list[float]:
    code = "import time; t = time.perf_counter(); import agent_comms; print(time.perf_counter() - t)"
    return [float(subprocess.check_output([sys.executable, "-c", code]).decode()) for _ in range(repeats)]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--quick", action="store_true", help="a smoke run (4 pairs of 50 round trips, 2,000 messages)")
    parser.add_argument("--pairs", type=int, default=20, help="interleaved pairs of blocks (bare echo, DM)")
    parser.add_argument("--block", type=int, default=100, help="round trips per block")
    parser.add_argument("--out", default=str(ROOT / "bench-results" / "agents.json"))
    parser.add_argument("--baseline-server", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--echo-agent", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--room-member", type=int, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.baseline_server is not None:
        trio.run(baseline_server, args.baseline_server)
        return 0
    if args.echo_agent is not None:
        trio.run(echo_agent, args.echo_agent)
        return 0
    if args.room_member is not None:
        trio.run(room_member, args.room_member)
        return 0

    pairs, per_block = (4, 50) if args.quick else (args.pairs, args.block)
    messages = 2_000 if args.quick else 10_000
    with tempfile.TemporaryDirectory() as home:
        os.environ["AGENT_COMMS_HOME"] = str(Path(home) / "home")
        os.environ["AGENT_COMMS_PORT"] = str(free_port())
        dm = trio.run(dm_against_baseline, pairs, per_block)
        rate, rss_kib = trio.run(room_throughput, messages)
    results: dict[str, Any] = {
        "quick": args.quick,
        "dm_vs_baseline": dm,
        "room_messages_per_s": rate,
        "room_messages": messages,
        f"member_rss_mib_holding_{messages}_messages": rss_kib / 1024,
        "import_agent_comms": ms(import_time()),
    }
    base, trip = dm["baseline"], dm["dm"]
    print(f"{pairs} interleaved pairs of blocks of {per_block} round trips (medians over the blocks)")
    print(f"{'measurement':58} {'bare echo':>12} {'DM':>12}")
    for label, key, unit in (
        ("round trip, wall time (median of block medians)", "median_ms", "ms"),
        ("CPU of the client per round trip", "client_cpu_ms", "ms"),
        ("CPU of the other process (echo server / echo agent)", "server_cpu_ms", "ms"),
        ("task steps of the client per round trip", "task_steps", ""),
        ("scheduler passes of the client per round trip", "scheduler_passes", ""),
    ):
        print(f"{label:58} {base[key]:9.3f} {unit:2} {trip[key]:9.3f} {unit:2}")
    print(
        f"{'DM / bare echo, per pair (target <= 1.5x)':58} median {dm['ratio_median']:.2f}x"
        f" (range {dm['ratio_min']:.2f}-{dm['ratio_max']:.2f}x)"
    )
    print(f"{'room messages per second, 1 sender -> 1 member':58} {rate:12.0f}/s")
    print(f"{f'member resident memory holding {messages:,} messages':58} {rss_kib / 1024:10.1f} MiB")
    print(f"{'import agent_comms (target <= 150 ms)':58} {results['import_agent_comms']['median_ms']:11.1f} ms")
    write_results(args.out, results)
    return 0


if __name__ == "__main__":
    sys.exit(main())
