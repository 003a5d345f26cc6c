"""Room benchmark: fan-out to members in other processes, and the memory a member holds per message.

    python benchmarks/bench_rooms.py [--quick] [--members 15] [--messages 2000] [--held 10000,100000] [--wait 300]

Fan-out: one sender agent and ``--members`` member agents, each agent in a process of its own (started with
``open_agent``, the public API), all in the same rooms. The sender sends ``--messages`` messages as fast as its tool
takes them, over as many rooms as keep them all (1,000 each); the figure is messages per second delivered to all:
the count divided by the time from the first send until the last member has seen the last message (each member
reports when it has seen them all; one that has not within ``--wait`` seconds is reported, and no rate).

Memory: one member in another process joins enough rooms to hold every message (a room keeps its newest 1,000),
the sender floods them, and the member reports its resident memory (``VmRSS``) when it has seen each count of
``--held``; the bytes held per message are the slope between the first and the last count.

Both report the links the peers closed with a warning meanwhile (a loaded machine closes some). Prints a table and
writes ``bench-results/rooms.json``. Not a test: nothing fails because the machine is slow.
"""

from __future__ import annotations

import argparse
import logging
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import trio
import trio.lowlevel

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import ROOT, free_port, write_results

#: messages a room keeps (the default history limit), so a member holding N messages needs N / 1,000 rooms
ROOM_HISTORY = 1000


def _rss_kib() -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS"):
            return int(line.split()[1])
    return 0


async def member(index: int, rooms: list[str], checkpoints: list[int]) -> None:
    """A member process: joins ``rooms``, prints ``joined``, then ``at <count> <rss KiB> <unix time>`` when it has
    seen each count of room messages in ``checkpoints``, and stays until killed."""
    from agent_comms import open_agent

    async with open_agent(harness=f"bench-member{index}", name=f"member{index}", cwd=tempfile.gettempdir()) as agent:
        with trio.fail_after(60):
            for room in rooms:
                while (await agent.call({"action": "join_room", "room": room})).is_error:  # noqa: ASYNC110
                    await trio.sleep(0.02)
        print("joined", flush=True)
        seen, pending = 0, sorted(checkpoints)
        while pending:
            await agent.store.wait_pending(agent.id)
            seen += sum(1 for e in agent.drain() if e.type == "room_message")
            while pending and seen >= pending[0]:
                print(f"at {pending.pop(0)} {_rss_kib()} {time.time()}", flush=True)
        await trio.sleep_forever()


class Member:
    """A member process, its standard output read line by line, its log (standard error) kept in a file."""

    def __init__(self, process: trio.Process, log: Path) -> None:
        self.process = process
        self.log = log
        self.buffer = b""

    @classmethod
    async def start(cls, index: int, rooms: list[str], checkpoints: list[int], logs: Path) -> Member:
        spec = [__file__, "--member", str(index), "--rooms", ",".join(rooms)]
        spec += ["--checkpoints", ",".join(map(str, checkpoints))]
        log = logs / f"member{index}.log"
        with log.open("wb") as stderr:
            process = await trio.lowlevel.open_process([sys.executable, *spec], stdout=subprocess.PIPE, stderr=stderr)
        return cls(process, log)

    def links_closed(self) -> list[str]:
        """The reasons of the links this member's peer closed (from its log)."""
        lines = self.log.read_text(errors="replace").splitlines()
        return [_reason(line) for line in lines if " closed: " in line]

    async def line(self) -> str:
        assert self.process.stdout is not None
        while b"\n" not in self.buffer:
            chunk = await self.process.stdout.receive_some(4096)
            if not chunk:
                raise RuntimeError(f"member process {self.process.pid} ended (exit status {self.process.returncode})")
            self.buffer += chunk
        line, self.buffer = self.buffer.split(b"\n", 1)
        return line.decode()

    async def stop(self) -> None:
        self.process.kill()
        await self.process.wait()


class ClosedLinks(logging.Handler):
    """Counts the links this process's peer closed with a warning, by reason (from the mesh's log; the member
    processes write the same warnings to standard error)."""

    def __init__(self) -> None:
        super().__init__(logging.WARNING)
        self.reasons: dict[str, int] = {}

    def emit(self, record: logging.LogRecord) -> None:
        message = record.getMessage()
        if " closed: " in message:
            reason = _reason(message)
            self.reasons[reason] = self.reasons.get(reason, 0) + 1


def _reason(line: str) -> str:
    """The reason of a "link ... closed: <reason> (<details>)" log line, without its details."""
    return line.split(" closed: ", 1)[1].split(" (", 1)[0]


async def flood(members: int, rooms: list[str], messages: int, checkpoints: list[int], wait: float) -> dict[str, Any]:
    """Start ``members`` member processes in ``rooms``, send ``messages`` round-robin over the rooms from this
    process, and collect each member's checkpoint lines: ``{count: [(seconds since the first send, rss KiB)]}``
    (a member that has not reached a count ``wait`` seconds after the first send is left out of it)."""
    from agent_comms import open_agent

    started = time.perf_counter()
    procs: list[Member] = []
    logs = Path(tempfile.mkdtemp(prefix="bench-rooms-"))
    sender_closed = ClosedLinks()
    logging.getLogger("agent_comms.mesh").addHandler(sender_closed)
    try:
        async with open_agent(harness="bench-sender", name="sender", cwd=str(ROOT)) as agent:
            for room in rooms:
                await agent.call({"action": "create_room", "room": room})
            async with trio.open_nursery() as nursery:
                for index in range(members):

                    async def launch(index: int = index) -> None:
                        procs.append(await Member.start(index, rooms, checkpoints, logs))

                    nursery.start_soon(launch)
            with trio.fail_after(300):
                for proc in procs:
                    if (line := await proc.line()) != "joined":
                        raise RuntimeError(f"unexpected line from a member: {line!r}")
            ready = time.perf_counter() - started
            agent.drain()
            t0_wall, t0 = time.time(), time.perf_counter()
            for i in range(messages):
                agent.tool.call({"action": "send", "target": rooms[i % len(rooms)], "content": f"message {i}"})
                if i % 512 == 511:
                    await trio.lowlevel.checkpoint()
            sent = time.perf_counter() - t0
            reached: dict[int, list[tuple[float, int]]] = {count: [] for count in checkpoints}
            with trio.move_on_after(max(0.0, wait - (time.perf_counter() - t0))):
                for proc in procs:
                    for _ in checkpoints:
                        _, count, rss, at = (await proc.line()).split()
                        reached[int(count)].append((float(at) - t0_wall, int(rss)))
            agent.drain()
    finally:
        logging.getLogger("agent_comms.mesh").removeHandler(sender_closed)
        for proc in procs:
            await proc.stop()
    closed: dict[str, int] = {}
    for proc in procs:
        for reason in proc.links_closed():
            closed[reason] = closed.get(reason, 0) + 1
    shutil.rmtree(logs)
    return {
        "members_ready_s": ready,
        "sender_done_s": sent,
        "reached": reached,
        "links_closed_by_members": closed,
        "links_closed_by_sender": sender_closed.reasons,
    }


def _rooms(prefix: str, messages: int) -> list[str]:
    """Enough rooms that none keeps more than its history holds: a message pushed out of a room's history before a
    member took it is never shown to that member (by design), and the count would never be reached."""
    return [f"{prefix}{i}" for i in range(-(-messages // ROOM_HISTORY))]


async def fanout(members: int, messages: int, wait: float) -> dict[str, Any]:
    rooms = _rooms("fanout", messages)
    run = await flood(members, rooms, messages, [messages], wait)
    times = sorted(t for t, _ in run["reached"][messages])
    complete = len(times) == members
    return {
        "members": members,
        "messages": messages,
        "rooms": len(rooms),
        "members_that_had_all": len(times),
        "messages_per_s_delivered_to_all": messages / times[-1] if complete else None,
        "first_member_done_s": times[0] if times else None,
        "median_member_done_s": statistics.median(times) if complete else None,
        "last_member_done_s": times[-1] if complete else None,
        "sender_done_s": run["sender_done_s"],
        "members_started_and_joined_s": run["members_ready_s"],
        "links_closed_by_members": run["links_closed_by_members"],
        "links_closed_by_sender": run["links_closed_by_sender"],
    }


async def held(counts: list[int], wait: float) -> dict[str, Any]:
    rooms = _rooms("held", max(counts))
    run = await flood(1, rooms, max(counts), counts, wait)
    reached = {count: run["reached"][count][0] for count in counts if run["reached"][count]}
    rss = {count: kib * 1024 for count, (_, kib) in reached.items()}
    low, high = min(counts), max(counts)
    complete = len(reached) == len(counts)
    return {
        "rooms": len(rooms),
        "rss_bytes": rss,
        "seconds": {count: seconds for count, (seconds, _) in reached.items()},
        "messages_per_s_1_member": high / reached[high][0] if complete else None,
        "bytes_per_message": (rss[high] - rss[low]) / (high - low) if complete else None,
        "links_closed_by_members": run["links_closed_by_members"],
        "links_closed_by_sender": run["links_closed_by_sender"],
    }


def _closed(closed: dict[str, int]) -> str:
    reasons = "; ".join(f"{count} x {reason}" for reason, count in sorted(closed.items(), key=lambda kv: -kv[1]))
    return f"{sum(closed.values())}" + (f" ({reasons})" if reasons else "")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="a smoke run (3 members, 200 messages; 1,000 -> 3,000)")
    parser.add_argument("--members", type=int, default=15)
    parser.add_argument("--messages", type=int, default=2000)
    parser.add_argument("--held", default="10000,100000", help="message counts at which the member's RSS is read")
    parser.add_argument("--wait", type=float, default=300, help="seconds after the first send the members may take")
    parser.add_argument("--out", default=str(ROOT / "bench-results" / "rooms.json"))
    parser.add_argument("--member", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--rooms", help=argparse.SUPPRESS)
    parser.add_argument("--checkpoints", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.member is not None:
        trio.run(member, args.member, args.rooms.split(","), [int(c) for c in args.checkpoints.split(",")])
        return 0
    if args.quick:
        args.members, args.messages, args.held = 3, 200, "1000,3000"
    counts = sorted(int(c) for c in args.held.split(","))
    results: dict[str, Any] = {"quick": args.quick}
    with tempfile.TemporaryDirectory() as home:
        os.environ["AGENT_COMMS_HOME"] = str(Path(home) / "home")
        os.environ["AGENT_COMMS_PORT"] = str(free_port())
        results["fanout"] = f = trio.run(fanout, args.members, args.messages, args.wait)
    with tempfile.TemporaryDirectory() as home:
        os.environ["AGENT_COMMS_HOME"] = str(Path(home) / "home")
        os.environ["AGENT_COMMS_PORT"] = str(free_port())
        results["held"] = h = trio.run(held, counts, args.wait)
    label = f"room fan-out, 1 sender -> {f['members']} members, {f['messages']:,} messages ({f['rooms']} rooms)"
    if f["messages_per_s_delivered_to_all"] is None:
        print(f"{label:64} only {f['members_that_had_all']} members had them all within {args.wait:.0f} s")
    else:
        print(f"{label:64} {f['messages_per_s_delivered_to_all']:10.0f}/s delivered to all (target >= 20,000)")
        print(
            f"{'  first / median / last member had all; sender done after':64} {f['first_member_done_s']:.2f} / "
            f"{f['median_member_done_s']:.2f} / {f['last_member_done_s']:.2f} s; {f['sender_done_s']:.2f} s"
        )
    for count in counts:
        label = f"member RSS holding {count:,} messages ({h['rooms']} rooms)"
        value = f"{h['rss_bytes'][count] / 2**20:10.1f} MiB" if count in h["rss_bytes"] else "not reached"
        print(f"{label:64} {value}")
    if h["bytes_per_message"] is not None:
        print(f"{'bytes held per message (RSS slope, target <= 600)':64} {h['bytes_per_message']:10.0f} B")
        rate = h["messages_per_s_1_member"]
        print(f"{'room messages per second, 1 sender -> 1 member, whole flood':64} {rate:10.0f}/s")
    for name, part in (("fan-out", f), ("memory", h)):
        print(f"links closed with a warning in the {name} run, by members: {_closed(part['links_closed_by_members'])}")
        print(
            f"links closed with a warning in the {name} run, by the sender: {_closed(part['links_closed_by_sender'])}"
        )
    write_results(args.out, results)
    return 0


if __name__ == "__main__":
    sys.exit(main())
