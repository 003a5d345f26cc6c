"""Agent benchmark: DM round trip between two agent processes, room throughput, memory, import time.

Run with ``nox -s bench`` (after the mesh benchmark) or ``python benchmarks/bench_agents.py``. Prints a table and
writes ``bench-results/agents.json``. Not a test: nothing fails because the machine is slow. Quote the ratio of
the DM round trip to the bare Trio + msgspec echo measured in the same run (both between two processes).
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


async def baseline_round_trip(rounds: int) -> list[float]:
    port = free_port()
    server = await trio.lowlevel.open_process([sys.executable, __file__, "--baseline-server", str(port)])
    try:
        for _ in range(200):
            try:
                stream = await trio.open_tcp_stream("127.0.0.1", port)
                break
            except OSError:
                await trio.sleep(0.02)
        encoder, decoder = msgspec.msgpack.Encoder(), msgspec.msgpack.Decoder(Echo)
        buf = bytearray()
        samples = []
        for i in range(rounds):
            out = encoder.encode(Echo(i, "ping"))
            t0 = time.perf_counter()
            await stream.send_all(len(out).to_bytes(4, "big") + out)
            decoder.decode(await read_frame(stream, buf))
            samples.append(time.perf_counter() - t0)
        await stream.aclose()
        return samples
    finally:
        server.kill()
        await server.wait()


async def agent_measurements(rounds: int, room_messages: int) -> dict[str, Any]:
    from agent_comms import open_agent

    results: dict[str, Any] = {}
    echo = await trio.lowlevel.open_process(
        [sys.executable, __file__, "--echo-agent", str(room_messages)], stdout=subprocess.PIPE
    )
    try:
        assert echo.stdout is not None
        with trio.fail_after(20):
            await echo.stdout.receive_some(64)
        async with open_agent(harness="bench-client", name="client", cwd=str(ROOT)) as agent:
            store = agent.store
            with trio.fail_after(10):
                while "echo" not in (await agent.call({"action": "list_agents"})).text:  # noqa: ASYNC110
                    await trio.sleep(0.05)
            agent.drain()

            async def dm_round_trip() -> float:
                t0 = time.perf_counter()
                await agent.call({"action": "dm", "target": "echo", "content": "ping"})
                while True:
                    await store.wait_pending(agent.id)
                    if any(e.type == "dm" for e in agent.drain()):
                        return time.perf_counter() - t0

            for _ in range(50):  # warm up
                await dm_round_trip()
            counter = StepCounter()
            cpu0, echo_cpu0 = time.process_time(), process_cpu(echo.pid)
            trio.lowlevel.add_instrument(counter)
            try:
                results["dm_round_trip"] = [await dm_round_trip() for _ in range(rounds)]
            finally:
                trio.lowlevel.remove_instrument(counter)
            results["client_cpu_per_round_trip_ms"] = (time.process_time() - cpu0) / rounds * 1000
            results["echo_cpu_per_round_trip_ms"] = (process_cpu(echo.pid) - echo_cpu0) / rounds * 1000
            results["client_task_steps_per_round_trip"] = counter.steps / rounds
            results["client_scheduler_passes_per_round_trip"] = counter.passes / rounds

            return results
    finally:
        echo.kill()
        await echo.wait()


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
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--out", default=str(ROOT / "bench-results" / "agents.json"))
    parser.add_argument("--baseline-server", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--echo-agent", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--room-member", type=int, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.baseline_server:
        trio.run(baseline_server, args.baseline_server)
        return 0
    if args.echo_agent is not None:
        trio.run(echo_agent, args.echo_agent)
        return 0
    if args.room_member is not None:
        trio.run(room_member, args.room_member)
        return 0

    rounds = 300 if args.quick else 1000
    with tempfile.TemporaryDirectory() as home:
        os.environ["AGENT_COMMS_HOME"] = str(Path(home) / "home")
        os.environ["AGENT_COMMS_PORT"] = str(free_port())
        base = trio.run(baseline_round_trip, rounds)
        agents = trio.run(agent_measurements, rounds, 1)
        rate, rss_kib = trio.run(room_throughput, 10_000)
    results: dict[str, Any] = {
        "baseline_round_trip": ms(base),
        "dm_round_trip": ms(agents["dm_round_trip"]),
        "dm_vs_baseline_ratio": statistics.median(agents["dm_round_trip"]) / statistics.median(base),
        **{key: value for key, value in agents.items() if key != "dm_round_trip"},
        "room_messages_per_s": rate,
        "member_rss_mib_holding_10000_messages": rss_kib / 1024,
        "import_agent_comms": ms(import_time()),
    }
    print(f"{'measurement':52} {'value':>14}")
    print(
        f"{'bare trio+msgspec echo round trip (2 processes)':52} {results['baseline_round_trip']['median_ms']:11.3f} ms"
    )
    print(f"{'DM round trip between two agent processes':52} {results['dm_round_trip']['median_ms']:11.3f} ms")
    print(f"{'DM round trip / baseline (target <= 1.5x)':52} {results['dm_vs_baseline_ratio']:12.2f}x")
    for label, key, unit in (
        ("DM round trip: CPU of the client, per round trip", "client_cpu_per_round_trip_ms", "ms"),
        ("DM round trip: CPU of the echo agent, per round trip", "echo_cpu_per_round_trip_ms", "ms"),
        ("DM round trip: task steps of the client, per trip", "client_task_steps_per_round_trip", ""),
        ("DM round trip: scheduler passes of the client", "client_scheduler_passes_per_round_trip", ""),
    ):
        print(f"{label:52} {agents[key]:12.3f} {unit}")
    print(f"{'room messages per second, 1 sender -> 1 member':52} {rate:12.0f}/s")
    print(f"{'member resident memory holding 10,000 messages':52} {rss_kib / 1024:10.1f} MiB")
    print(f"{'import agent_comms (target <= 150 ms)':52} {results['import_agent_comms']['median_ms']:11.1f} ms")
    write_results(args.out, results)
    return 0


if __name__ == "__main__":
    sys.exit(main())
