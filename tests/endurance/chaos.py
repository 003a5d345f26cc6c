"""Chaos with real processes: bridges that talk while a seeded adversary kills, restarts, stops and resumes them.

Run as a program (``python tests/endurance/chaos.py --duration 60 --peers 10 --seed 7``; ``nox -s chaos``) or
call :func:`run_chaos` from a test. Every peer is a real ``agent-comms bridge jsonl`` process (one agent each, its
own working directory, so a restarted bridge comes back as the same agent) driven over its standard input and
output. For ``duration`` seconds the agents post to a shared room and send each other direct messages while the
adversary, from ``random.Random(seed)``, SIGKILLs peers (restarting them after a pause) and SIGSTOPs them
(SIGCONT after a pause), the current coordinator included. Then traffic stops, every stopped peer resumes, and
the driver waits for quiescence and checks:

* one mesh: exactly the live bridge processes, one coordinator every peer follows, everyone linked to everyone,
  and every peer reports the same state digest;
* no agent of a dead process is shown online;
* every (message, recipient) that a sender was told was ``delivered`` or ``read``, for a recipient whose bridge is
  alive at the end, reached that recipient's standard output (``lost`` counts those that did not) and is in the
  final replicated history (unless newer messages pushed it out of the bounded history);
* no bridge process showed the same event twice (``duplicates``); a message shown by a bridge that was then
  killed before its ``read`` receipt left the process may be shown again by its restarted bridge (counted, as
  ``redelivered_after_crash``, not a duplicate: a crashed process cannot remember what it showed).

Figures are printed and written as JSON (``--json``). The seed makes the adversary's and the senders' choices
replayable; the operating system's scheduling is not, so a replay reproduces the schedule, not every interleaving.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path
from typing import Any

import attrs
import msgspec
import trio

from agent_comms.mesh.keyfile import load_or_create_key
from agent_comms.mesh.observe import MeshSnapshot, NoMesh, observe_mesh
from agent_comms.mesh.registry import PeerRegistry
from agent_comms.protocol.ops import DirectMessage, RoomMessage, dm_conversation

ROOM = "chaos"
#: A bridge that has not registered its agent this long after its start counts as a failed start.
START_TIMEOUT = 60.0


def free_port() -> int:
    """A port nobody listens on right now (never the real default 19876)."""
    while True:
        with socket.socket() as sock:
            sock.bind(("127.0.0.1", 0))
            port: int = sock.getsockname()[1]
        if port != 19876:
            return port


@attrs.define
class ChaosConfig:
    """What to run. ``peers`` bridge processes for ``duration`` seconds of chaos."""

    peers: int = 10
    duration: float = 60.0
    seed: int = 1
    #: mean pause between two chaos actions (seconds)
    action_interval: float = 1.0
    #: mean pause between two messages of one agent (seconds)
    send_interval: float = 0.4
    #: longest wait for quiescence after the chaos (seconds)
    settle_timeout: float = 60.0
    workdir: Path | None = None


@attrs.define
class Incarnation:
    """One process of a slot: its events as it printed them."""

    number: int
    process: trio.Process
    agent_id: str = ""
    #: event ids this process printed, in order
    shown: list[str] = attrs.field(factory=list)
    #: message ids of the room messages and DMs among them
    messages: list[str] = attrs.field(factory=list)
    stopped: bool = False


@attrs.define
class Slot:
    """One agent (``aN``, its own directory) and the processes that have run it."""

    name: str
    cwd: Path
    log: Path
    incarnations: list[Incarnation] = attrs.field(factory=list)
    agent_id: str = ""
    #: the live process's pending requests: request id -> where to put the answer
    waiting: dict[int, trio.MemorySendChannel[dict[str, Any]]] = attrs.field(factory=dict)
    ready: trio.Event = attrs.field(factory=trio.Event)
    busy: bool = False  # being killed or restarted

    @property
    def current(self) -> Incarnation | None:
        return self.incarnations[-1] if self.incarnations else None

    def alive(self) -> bool:
        inc = self.current
        return inc is not None and inc.process.returncode is None and inc.process.poll() is None


@attrs.define
class Ledger:
    """Everything the driver saw, for the verdict."""

    #: message id -> (sender agent id, "dm" | "room", recipient agent id or "")
    sent: dict[str, tuple[str, str, str]] = attrs.field(factory=dict)
    #: (message id, recipient agent id) reported delivered/read to a sender
    reported: set[tuple[str, str]] = attrs.field(factory=set)
    send_errors: Counter[str] = attrs.field(factory=Counter)
    kills: int = 0
    coordinator_kills: int = 0
    stops: int = 0
    coordinator_stops: int = 0
    restarts: int = 0
    #: bridges that did not get ready within START_TIMEOUT (slot name # incarnation)
    start_failures: list[str] = attrs.field(factory=list)


class Chaos:
    """The driver (see the module docstring)."""

    def __init__(self, config: ChaosConfig, workdir: Path) -> None:
        self.config = config
        self.rng = random.Random(config.seed)
        self.workdir = workdir
        self.home = workdir / "home"
        self.port = free_port()
        self.ledger = Ledger()
        self.slots = [
            Slot(f"a{i}", workdir / "agents" / f"a{i}", workdir / "logs" / f"a{i}.log") for i in range(config.peers)
        ]
        self._request_ids = 0
        self._nursery: trio.Nursery | None = None
        self._stopping = False

    @property
    def env(self) -> dict[str, str]:
        return {
            **os.environ,
            "AGENT_COMMS_HOME": str(self.home),
            "AGENT_COMMS_PORT": str(self.port),
            "AGENT_COMMS_LOAD_PLUGINS": "",
        }

    # ------------------------------------------------------------------ processes

    async def start(self, slot: Slot) -> None:
        """Start a bridge process for ``slot`` and wait until its agent is registered."""
        slot.cwd.mkdir(parents=True, exist_ok=True)
        slot.log.parent.mkdir(parents=True, exist_ok=True)
        slot.ready = trio.Event()
        slot.waiting = {}
        command = [sys.executable, "-m", "agent_comms", "bridge", "jsonl", "--name", slot.name]
        with slot.log.open("ab") as log:
            process = await trio.lowlevel.open_process(
                command, env=self.env, cwd=slot.cwd, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=log
            )
        inc = Incarnation(len(slot.incarnations) + 1, process)
        slot.incarnations.append(inc)
        assert self._nursery is not None
        self._nursery.start_soon(self._read, slot, inc)
        with trio.move_on_after(START_TIMEOUT):
            await slot.ready.wait()
        if not slot.ready.is_set():
            # Counted and reported (a finding, not a crash of the driver); the slot stays dead.
            self.ledger.start_failures.append(f"{slot.name}#{inc.number}")
            await self.kill(slot)
            return
        await self.call(slot, action="join_room", room=ROOM)

    async def _read(self, slot: Slot, inc: Incarnation) -> None:
        assert inc.process.stdout is not None
        buffer = b""
        async for chunk in inc.process.stdout:
            buffer += chunk
            *lines, buffer = buffer.split(b"\n")
            for line in lines:
                if line.strip():
                    self._on_line(slot, inc, msgspec.json.decode(line))
        for channel in list(slot.waiting.values()) if slot.current is inc else []:
            channel.close()

    def _on_line(self, slot: Slot, inc: Incarnation, message: dict[str, Any]) -> None:
        kind = message.get("type")
        if kind == "ready":
            inc.agent_id = slot.agent_id = message["agent"]["id"]
            slot.ready.set()
        elif kind == "result":
            channel = slot.waiting.pop(message["id"], None)
            if channel is not None:
                channel.send_nowait(message)
        elif kind == "event":
            event = message["event"]
            inc.shown.append(event["id"])
            if event["type"] in ("dm", "room_message"):
                inc.messages.append(event["message_id"])
            if event["type"] == "delivery_status" and event.get("status") in ("delivered", "read"):
                self.ledger.reported.add((event["message_id"], event["sender"]))

    async def call(self, slot: Slot, **params: object) -> dict[str, Any] | None:
        """One tool call on the slot's live process (``None`` if the process went away first)."""
        inc = slot.current
        if inc is None or not slot.alive() or inc.process.stdin is None:
            return None
        self._request_ids += 1
        request_id = self._request_ids
        send, receive = trio.open_memory_channel[dict[str, Any]](1)
        slot.waiting[request_id] = send
        line = msgspec.json.encode({"id": request_id, "params": params}) + b"\n"
        try:
            await inc.process.stdin.send_all(line)
        except (trio.BrokenResourceError, trio.ClosedResourceError, OSError):
            return None
        with trio.move_on_after(30):
            try:
                return await receive.receive()
            except trio.EndOfChannel:
                return None
        return None  # stopped long enough to miss this one

    async def join(self, slot: Slot) -> None:
        """Join the room, retrying while the slot's peer has not received the room's creation yet."""
        for _ in range(40):
            result = await self.call(slot, action="join_room", room=ROOM)
            if result is None or not result["is_error"]:
                return
            await trio.sleep(0.25)

    async def kill(self, slot: Slot) -> None:
        inc = slot.current
        if inc is None or inc.process.returncode is not None:
            return
        inc.process.kill()  # SIGKILL works on a stopped process too
        await inc.process.wait()
        inc.stopped = False

    # ------------------------------------------------------------------ traffic

    #: the share of messages that are DMs (the rest are room posts)
    dm_share = 0.5

    def dm_targets(self, slot: Slot) -> list[str]:
        """Whom ``slot``'s agent may DM: every other agent."""
        return [s.agent_id for s in self.slots if s is not slot and s.agent_id]

    async def talk(self, slot: Slot, rng: random.Random) -> None:
        """Post to the room or DM another agent, forever, at random intervals."""
        count = 0
        while True:
            await trio.sleep(rng.expovariate(1 / self.config.send_interval))
            if self._stopping or slot.busy or not slot.alive() or not slot.ready.is_set():
                continue
            if slot.current is not None and slot.current.stopped:
                continue
            count += 1
            content = f"{slot.name} #{count}"
            others = self.dm_targets(slot)
            if others and rng.random() < self.dm_share:
                target = rng.choice(others)
                result = await self.call(slot, action="dm", target=target, content=content)
                kind = "dm"
            else:
                target = ""
                result = await self.call(slot, action="send", target=ROOM, content=content)
                kind = "room"
            if result is None:
                self.ledger.send_errors["no answer"] += 1
            elif result["is_error"]:
                self.ledger.send_errors[result["data"].get("code", "error")] += 1
            else:
                self.ledger.sent[result["data"]["message_id"]] = (slot.agent_id, kind, target)

    # ------------------------------------------------------------------ the adversary

    async def coordinator_slot(self) -> Slot | None:
        try:
            snapshot = await observe_mesh(
                load_or_create_key(self.home), port=self.port, each_peer=False, attempt_seconds=2.0
            )
        except NoMesh:
            return None
        if snapshot.coordinator is None:
            return None
        pid = snapshot.coordinator.pid
        return next((s for s in self.slots if s.current is not None and s.current.process.pid == pid), None)

    async def adversary(self) -> None:
        rng = self.rng
        assert self._nursery is not None
        deadline = trio.current_time() + self.config.duration
        while trio.current_time() < deadline:
            await trio.sleep(rng.expovariate(1 / self.config.action_interval))
            candidates = [s for s in self.slots if not s.busy and s.alive()]
            if len(candidates) < 2:
                continue
            pick_coordinator = rng.random() < 0.3
            kill = rng.random() < 0.5
            pause = rng.uniform(0.3, 3.0)
            victim = rng.choice(candidates)
            if pick_coordinator:
                coordinator = await self.coordinator_slot()
                if coordinator is not None and coordinator in candidates:
                    victim = coordinator
                else:
                    pick_coordinator = False
            victim.busy = True
            if kill:
                self.ledger.kills += 1
                self.ledger.coordinator_kills += pick_coordinator
                self._nursery.start_soon(self._kill_and_restart, victim, pause)
            else:
                self.ledger.stops += 1
                self.ledger.coordinator_stops += pick_coordinator
                self._nursery.start_soon(self._stop_and_resume, victim, pause)

    async def _kill_and_restart(self, slot: Slot, pause: float) -> None:
        await self.kill(slot)
        await trio.sleep(pause)
        if not self._stopping:
            self.ledger.restarts += 1
            await self.start(slot)
        slot.busy = False

    async def _stop_and_resume(self, slot: Slot, pause: float) -> None:
        inc = slot.current
        assert inc is not None
        inc.process.send_signal(signal.SIGSTOP)
        inc.stopped = True
        await trio.sleep(pause)
        if inc.process.returncode is None:
            inc.process.send_signal(signal.SIGCONT)
        inc.stopped = False
        slot.busy = False

    # ------------------------------------------------------------------ the verdict

    async def observe(self) -> MeshSnapshot:
        return await observe_mesh(
            load_or_create_key(self.home), port=self.port, registry=PeerRegistry(self.home), attempt_seconds=1.0
        )

    def live_pids(self) -> set[int]:
        return {s.current.process.pid for s in self.slots if s.current is not None and s.alive()}

    def mesh_problems(self, snapshot: MeshSnapshot) -> list[str]:
        """What keeps ``snapshot`` from being one settled mesh of exactly the live processes."""
        problems = []
        views = {v.info.peer_id: v for v in snapshot.peers}
        pids = {v.info.pid for v in snapshot.peers}
        if pids != self.live_pids():
            problems.append(f"peers {sorted(pids)} are not the live processes {sorted(self.live_pids())}")
        if snapshot.coordinator is None:
            problems.append("no coordinator")
        for peer_id, view in views.items():
            if view.links is None or set(view.links) != set(views) - {peer_id}:
                problems.append(f"peer {peer_id} is not linked to every other peer")
            if snapshot.coordinator is None or view.coordinator != snapshot.coordinator.peer_id:
                problems.append(f"peer {peer_id} follows {view.coordinator}")
        digests = {v.digest for v in views.values()}
        if len(digests) != 1:
            problems.append(f"{len(digests)} different state digests")
        dead = {s.agent_id for s in self.slots if s.agent_id and not s.alive()}
        for agent_id in sorted(dead):
            entry = snapshot.state.agents.get(agent_id)
            if entry is not None and entry.online:
                problems.append(f"agent {agent_id} of a dead process is shown online")
        return problems

    def delivery_figures(self, snapshot: MeshSnapshot) -> dict[str, Any]:
        """Lost, duplicated and redelivered messages, per the module docstring."""
        state = snapshot.state
        by_agent = {s.agent_id: s for s in self.slots if s.agent_id}
        duplicates = 0
        redelivered = 0
        shown_by: dict[str, set[str]] = {}
        for slot in self.slots:
            everything: set[str] = set()
            for inc in slot.incarnations:
                duplicates += sum(n - 1 for n in Counter(inc.shown).values())
                shown = set(inc.messages)
                redelivered += len(everything & shown)
                everything |= shown
            shown_by[slot.agent_id] = everything
        lost: list[tuple[str, str]] = []
        missing_in_history: list[tuple[str, str]] = []
        evicted = 0
        checked = 0
        for message_id, recipient in sorted(self.ledger.reported):
            slot = by_agent.get(recipient)
            if slot is None or not slot.alive() or message_id not in self.ledger.sent:
                continue
            checked += 1
            if message_id not in shown_by[recipient]:
                lost.append((message_id, recipient))
            if message_id in state.messages:
                continue
            sender, kind, target = self.ledger.sent[message_id]
            conversation = dm_conversation(sender, target) if kind == "dm" else state.room_id(ROOM)
            history = state.histories.get(conversation or "")
            if history is not None and history.full:
                evicted += 1  # older than the kept history: pushed out by newer messages, not lost
            else:
                missing_in_history.append((message_id, recipient))
        room_messages = sum(1 for op in state.messages.values() if isinstance(op.body, RoomMessage))
        direct = sum(1 for op in state.messages.values() if isinstance(op.body, DirectMessage))
        return {
            "reported_delivered": len(self.ledger.reported),
            "checked_deliveries": checked,
            "lost": len(lost),
            "lost_examples": lost[:10],
            "missing_in_history": len(missing_in_history),
            "missing_examples": missing_in_history[:10],
            "evicted_by_history_bound": evicted,
            "duplicates": duplicates,
            "redelivered_after_crash": redelivered,
            "events_shown": sum(len(inc.shown) for s in self.slots for inc in s.incarnations),
            "final_room_messages": room_messages,
            "final_direct_messages": direct,
        }

    async def settle(self) -> tuple[MeshSnapshot, float, list[str]]:
        """Wait for one mesh of the live processes with equal digests; how long it took."""
        started = time.monotonic()
        problems: list[str] = ["not observed yet"]
        snapshot: MeshSnapshot | None = None
        with trio.move_on_after(self.config.settle_timeout):
            while True:
                try:
                    snapshot = await self.observe()
                    problems = self.mesh_problems(snapshot)
                except NoMesh as exc:
                    problems = [str(exc)]
                if not problems:
                    # Settled once: look again a moment later so late receipts are in both looks.
                    await trio.sleep(0.5)
                    snapshot = await self.observe()
                    problems = self.mesh_problems(snapshot)
                    if not problems:
                        break
                await trio.sleep(0.1)
        if snapshot is None:
            snapshot = await self.observe()
        return snapshot, time.monotonic() - started, problems

    # ------------------------------------------------------------------ the run

    async def run(self) -> dict[str, Any]:
        started = time.monotonic()
        try:
            async with trio.open_nursery() as nursery:
                self._nursery = nursery
                await self.start(self.slots[0])
                async with trio.open_nursery() as starting:
                    for slot in self.slots[1:]:
                        starting.start_soon(self.start, slot)
                setup_seconds = time.monotonic() - started
                await self.call(self.slots[0], action="create_room", room=ROOM)
                for slot in self.slots:
                    await self.join(slot)
                chaos_started = time.monotonic()
                with trio.CancelScope() as traffic:
                    async with trio.open_nursery() as talkers:
                        for slot in self.slots:
                            talkers.start_soon(self.talk, slot, random.Random(self.rng.getrandbits(64)))
                        await self.adversary()
                        self._stopping = True
                        traffic.cancel()
                chaos_seconds = time.monotonic() - chaos_started
                # The chaos is over: resume the stopped, let pending restarts finish, and leave one peer dead so
                # the "no agent of a dead process is online" check has something to check.
                while any(s.busy for s in self.slots):  # noqa: ASYNC110 - several tasks clear it, no single event
                    await trio.sleep(0.05)
                dead = [s for s in self.slots if not s.alive()]
                if not dead:
                    victim = self.rng.choice(self.slots)
                    await self.kill(victim)
                    self.ledger.kills += 1
                snapshot, settle_seconds, problems = await self.settle()
                figures = self.delivery_figures(snapshot)
                alive = sorted(s.name for s in self.slots if s.alive())
                nursery.cancel_scope.cancel()
        finally:
            for slot in self.slots:
                inc = slot.current
                if inc is not None and inc.process.returncode is None:
                    inc.process.kill()
                    with trio.move_on_after(5):
                        await inc.process.wait()
        report = {
            "seed": self.config.seed,
            "peers": self.config.peers,
            "duration_s": round(chaos_seconds, 2),
            "kills": self.ledger.kills,
            "coordinator_kills": self.ledger.coordinator_kills,
            "restarts": self.ledger.restarts,
            "stops": self.ledger.stops,
            "coordinator_stops": self.ledger.coordinator_stops,
            "messages_sent": len(self.ledger.sent),
            "send_errors": dict(self.ledger.send_errors),
            "start_failures": self.ledger.start_failures,
            **figures,
            "alive_at_end": alive,
            "dead_at_end": sorted(s.name for s in self.slots if s.name not in alive),
            "setup_s": round(setup_seconds, 2),
            "time_to_quiescence_s": round(settle_seconds, 3),
            "mesh_problems": problems,
            "final_mesh": snapshot.to_json() if problems else None,
            "total_s": round(time.monotonic() - started, 2),
            "ok": not problems
            and not self.ledger.start_failures
            and figures["lost"] == 0
            and figures["duplicates"] == 0
            and figures["missing_in_history"] == 0,
        }
        return report


async def run_chaos(config: ChaosConfig) -> dict[str, Any]:
    """Run the chaos described by ``config``; return the figures (``report["ok"]`` is the verdict)."""
    if config.workdir is not None:
        return await Chaos(config, config.workdir).run()
    with tempfile.TemporaryDirectory(prefix="agent-comms-chaos-") as tmp:
        return await Chaos(config, Path(tmp)).run()


def print_report(report: dict[str, Any]) -> None:
    """The figures, one per line."""
    for key, value in report.items():
        print(f"{key:>26}: {value}")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--duration", type=float, default=60.0, help="seconds of chaos (default 60)")
    parser.add_argument("--peers", type=int, default=10, help="bridge processes (default 10)")
    parser.add_argument(
        "--seed", type=int, default=None, help="seed of the adversary and the senders (default: random)"
    )
    parser.add_argument("--json", default="bench-results/chaos.json", help="where to write the figures")
    parser.add_argument("--workdir", type=Path, default=None, help="keep homes and logs here (default: a temp dir)")
    args = parser.parse_args(argv)
    seed = args.seed if args.seed is not None else random.SystemRandom().randrange(1 << 31)
    config = ChaosConfig(peers=args.peers, duration=args.duration, seed=seed, workdir=args.workdir)
    print(f"chaos: {args.peers} peers, {args.duration:g} s, seed {seed} (replay with --seed {seed})", flush=True)
    report = trio.run(run_chaos, config)
    print_report(report)
    out = Path(args.json)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(report, indent=2))
    print(f"written to {out}")
    return 0 if report["ok"] else 1


if __name__ == "__main__":
    sys.exit(main())
