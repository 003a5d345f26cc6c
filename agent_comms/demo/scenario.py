"""The demo's script: a private mesh of real agent processes, step by step, with measured figures.

1. alice starts first, binds the coordinator port and becomes the coordinator; bob and carol join.
2. alice creates a public room (bob and carol join) and a private one (bob is invited, carol is refused).
3. They talk in the rooms; carol cannot read the private one.
4. bob sends carol a direct message; bob gets the ``delivered`` and ``read`` receipts.
5. dave starts late, joins the public room and reads the history sent before it existed.
6. The coordinator's process is killed with SIGKILL; a survivor wins the port. The failover time runs from the
   kill to the moment the new coordinator answers on the port (serving, so a newcomer can join); the demo also
   measures until the survivors are one mesh again and until the dead agent shows offline.
7. erin starts after the crash, joins the same mesh, reads the room history (it survived the crash: the state is
   replicated, not held by the coordinator) and talks to the others.

Each step has a deadline; a failure names its step (:class:`StepFailed`).
"""

from __future__ import annotations

import os
import re
import socket
import tempfile
import time
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Final

import trio

from agent_comms.mesh.keyfile import load_or_create_key
from agent_comms.mesh.observe import MeshSnapshot, NoMesh, observe_mesh
from agent_comms.mesh.registry import PeerRegistry
from agent_comms.mesh.settings import DEFAULT_PORT

from .bridges import Bridge, BridgeExited, Bridges, RequestFailed, open_bridges
from .report import DemoReport
from .show import Narrator

__all__ = ["STEP_SECONDS", "StepFailed", "free_port", "run_demo"]

#: The longest any one step may take before the demo gives up on it.
STEP_SECONDS: Final = 15.0
#: Codes that only mean "not replicated to this peer yet": retried.
_NOT_YET: Final = frozenset({"ROOM_NOT_FOUND", "AGENT_NOT_FOUND"})
_STEPS: Final = 7
_MESSAGE_ID: Final = re.compile(r"\s+\[id [^\]]+\]$", re.MULTILINE)


class StepFailed(Exception):
    """A step of the demo did not work; ``step`` names it, the message says what went wrong."""

    def __init__(self, number: int, step: str, reason: str) -> None:
        super().__init__(f"step {number} of {_STEPS} ({step}) failed: {reason}")
        self.number = number
        self.step = step
        self.reason = reason


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nobody listens on right now, never the well-known default."""
    while True:
        with socket.socket() as sock:
            sock.bind(("127.0.0.1", 0))
            port: int = sock.getsockname()[1]
        if port != DEFAULT_PORT:
            return port


def _ms(seconds: float) -> float:
    return round(seconds * 1000, 1)


class _Demo:
    def __init__(self, bridges: Bridges, narrator: Narrator, report: DemoReport, key: bytes, home: Path) -> None:
        self.bridges = bridges
        self.show = narrator
        self.report = report
        self.key = key
        self.home = home
        self.port = report.port
        self.agents: dict[str, Bridge] = {}
        #: who wrote each message the demo sent, by message id
        self.authors: dict[str, str] = {}
        self._step = 0
        self._title = ""
        self._doing = ""

    # ------------------------------------------------------------------ helpers

    @contextmanager
    def step(self, title: str) -> Iterator[None]:
        self._step += 1
        self._title = title
        self._doing = ""
        self.show.step(self._step, title[:1].upper() + title[1:])
        try:
            with trio.fail_after(STEP_SECONDS):
                yield
        except trio.TooSlowError:
            reason = f"it did not finish within {STEP_SECONDS:.0f} s" + (f" ({self._doing})" if self._doing else "")
            try:
                self.bridges.check()
            except BridgeExited as exc:
                reason = f"{reason}; {exc}"
            raise StepFailed(self._step, title, reason) from None
        except (BridgeExited, RequestFailed) as exc:
            raise StepFailed(self._step, title, str(exc)) from exc

    def doing(self, what: str) -> None:
        """Say what the step is waiting for, for the message if it times out."""
        self._doing = what

    def fail(self, reason: str) -> StepFailed:
        return StepFailed(self._step, self._title, reason)

    async def start(self, *names: str) -> list[Bridge]:
        """Start agents together; return them once every one is registered."""
        started = [await self.bridges.start(name) for name in names]
        for bridge in started:
            self.doing(f"waiting for {bridge.name} (pid {bridge.pid}) to register")
            ready = await bridge.wait_ready()
            assert bridge.ready_at is not None
            self.agents[bridge.name] = bridge
            self.report.agents.append({"name": bridge.name, "id": bridge.agent_id, "pid": bridge.pid})
            took = bridge.ready_at - bridge.spawned_at
            self.show.agent(
                bridge.name,
                f"registered as {ready['agent']['name']} ({bridge.agent_id}), pid {bridge.pid}, up in {took:.2f} s",
            )
        return started

    async def observe(self, *, each_peer: bool = True, attempt: float = 1.0) -> MeshSnapshot | None:
        try:
            return await observe_mesh(
                self.key,
                port=self.port,
                registry=PeerRegistry(self.home) if each_peer else None,
                each_peer=each_peer,
                attempt_seconds=attempt,
            )
        except NoMesh:
            return None

    async def wait_one_mesh(self, members: list[Bridge]) -> MeshSnapshot:
        """Poll until the peers of ``members`` form one mesh: all linked, all following one live coordinator."""
        pids = {bridge.pid for bridge in members}
        names = ", ".join(bridge.name for bridge in members)
        self.doing(f"waiting for the peers of {names} to be linked and to follow one coordinator")
        while True:
            snapshot = await self.observe()
            if snapshot is not None and snapshot.coordinator is not None and snapshot.coordinator.pid in pids:
                views = [view for view in snapshot.peers if view.info.pid in pids]
                ids = {view.info.peer_id for view in views}
                if len(views) == len(pids) and all(
                    view.links is not None
                    and ids - {view.info.peer_id} <= set(view.links)
                    and view.coordinator == snapshot.coordinator.peer_id
                    for view in views
                ):
                    return snapshot
            self.bridges.check()
            await trio.sleep(0.02)

    def coordinator_of(self, snapshot: MeshSnapshot) -> Bridge:
        if snapshot.coordinator is None:
            raise self.fail("the mesh has no coordinator")
        bridge = self.bridges.by_pid(snapshot.coordinator.pid)
        if bridge is None:
            raise self.fail(f"the coordinator is a process the demo did not start (pid {snapshot.coordinator.pid})")
        return bridge

    async def wait_message(self, bridge: Bridge, message_id: str) -> Mapping[str, Any]:
        line = await bridge.wait_event(
            lambda e: e.get("type") in {"room_message", "dm"} and e.get("message_id") == message_id
        )
        self.show.agent(bridge.name, f"<- {self.brief(line['text'])}")
        return line

    def brief(self, text: str) -> str:
        """A bridge's line without the agent ids and message ids, which the reader does not need here."""
        for bridge in self.bridges.started:
            if bridge.ready is not None:
                text = text.replace(f" ({bridge.agent_id})", "")
        text = _MESSAGE_ID.sub("", text)
        for message_id, author in self.authors.items():
            text = text.replace(f"(reply to {message_id})", f"(reply to {author})").replace(f" {message_id}", "")
        return text

    async def online(self, bridge: Bridge) -> str:
        """Who ``bridge``'s agent sees online (``list_agents``), by name."""
        ids: list[str] = (await bridge.ok(action="list_agents"))["data"]["agents"]
        names = {b.agent_id: b.name for b in self.bridges.started if b.ready is not None}
        return f"list_agents: {len(ids)} online: " + ", ".join(names.get(i, i) for i in ids)

    async def send(self, sender: Bridge, room: str, content: str, **extra: object) -> str:
        result = await sender.ok(action="send", target=room, content=content, **extra)
        self.report.room_messages += 1
        self.show.agent(sender.name, f"-> #{room}: {content}")
        message_id: str = result["data"]["message_id"]
        self.authors[message_id] = sender.name
        return message_id

    # ------------------------------------------------------------------ the steps

    async def run(self) -> None:
        await self.agents_register()
        await self.rooms()
        await self.talk()
        await self.direct_message()
        await self.late_joiner()
        await self.crash_of_the_coordinator()
        await self.newcomer_after_failover()

    async def agents_register(self) -> None:
        with self.step("agents start and register"):
            (alice,) = await self.start("alice")
            bob, carol = await self.start("bob", "carol")
            self.doing("waiting for carol to see all three agents online")
            while len((await carol.ok(action="list_agents"))["data"]["agents"]) < 3:  # noqa: ASYNC110 - another process's view
                await trio.sleep(0.02)
            self.show.agent("carol", await self.online(carol))
            snapshot = await self.wait_one_mesh([alice, bob, carol])
            coordinator = self.coordinator_of(snapshot)
            self.report.coordinator_before = coordinator.name
            first = "the first to bind the port" if coordinator is alice else "it won the port"
            self.show.say(
                f"3 peers, fully linked; coordinator: {coordinator.name} (pid {coordinator.pid}), {first}; "
                "it only makes introductions, messages go directly between peers"
            )

    async def rooms(self) -> None:
        alice, bob, carol = self.agents["alice"], self.agents["bob"], self.agents["carol"]
        with self.step("a public and a private room"):
            await alice.ok(action="create_room", room="general", type="public", description="everyone")
            self.show.agent("alice", "created #general (public)")
            for member in (bob, carol):
                await member.ok_eventually(_NOT_YET, action="join_room", room="general")
                self.show.agent(member.name, "joined #general")
            await self.joined(alice, "general", bob, carol)
            await alice.ok(action="create_room", room="core", type="private", description="maintainers only")
            self.show.agent("alice", "created #core (private) and invited bob")
            await alice.ok_eventually(_NOT_YET, action="invite", room="core", agent="bob")
            invite = await bob.wait_event(lambda e: e.get("type") == "room_invite" and e.get("room") == "core")
            self.show.agent("bob", f"<- {self.brief(invite['text'])}")
            await bob.ok(action="join_room", room="core")
            self.show.agent("bob", "joined #core")
            await self.joined(alice, "core", bob, show=True)
            refused = await carol.refused("NOT_INVITED", _NOT_YET, action="join_room", room="core")
            self.show.agent("carol", f"tried to join #core: {refused['text']}")
            self.report.rooms = ["general (public)", "core (private)"]

    async def talk(self) -> None:
        alice, bob, carol = self.agents["alice"], self.agents["bob"], self.agents["carol"]
        with self.step("talking in the rooms"):
            first = await self.send(alice, "general", "Morning! I'm refactoring the parser today.")
            await self.wait_message(bob, first)
            await self.wait_message(carol, first)
            reply = await self.send(bob, "general", "Then I'll take the parser tests.", replyTo=first)
            await self.wait_message(carol, reply)
            await self.wait_message(alice, reply)
            secret = await self.send(alice, "core", "Release candidate goes out on Friday.")
            await self.wait_message(bob, secret)
            refused = await carol.refused("NOT_MEMBER", _NOT_YET, action="read_room", room="core")
            self.show.agent("carol", f"tried to read #core: {refused['text']}")

    async def direct_message(self) -> None:
        bob, carol = self.agents["bob"], self.agents["carol"]
        with self.step("a direct message with delivered and read receipts"):
            sent_at = trio.current_time()
            result = await bob.ok(action="dm", target="carol", content="Could you review my parser tests?")
            self.report.direct_messages += 1
            message_id = result["data"]["message_id"]
            self.authors[message_id] = "bob"
            self.show.agent("bob", "-> DM to carol: Could you review my parser tests?")
            await self.wait_message(carol, message_id)

            def receipt(status: str) -> Callable[[Mapping[str, Any]], bool]:
                return lambda e: (
                    e.get("type") == "delivery_status"
                    and e.get("message_id") == message_id
                    and e.get("status") == status
                )

            delivered = await bob.wait_event(receipt("delivered"))
            delivered_at = trio.current_time()
            self.show.agent("bob", f"<- {self.brief(delivered['text'])}")
            read = await bob.wait_event(receipt("read"))
            read_at = trio.current_time()
            self.show.agent("bob", f"<- {self.brief(read['text'])}")
            # The reader saw the lines later than they were written: these times are upper bounds.
            self.report.dm_delivered_ms = _ms(delivered_at - sent_at)
            self.report.dm_read_ms = _ms(read_at - sent_at)
            self.show.figure(
                f"receipts: delivered after {self.report.dm_delivered_ms:.1f} ms, "
                f"read after {self.report.dm_read_ms:.1f} ms (carol's bridge showed it)"
            )

    async def late_joiner(self) -> None:
        with self.step("a late joiner catches up on the room history"):
            (dave,) = await self.start("dave")
            await dave.ok_eventually(_NOT_YET, action="join_room", room="general")
            self.doing("waiting for dave to read the 2 messages sent to #general before it started")
            history = await self.read_history(dave, "general", 2)
            self.show.agent("dave", self.brief(history["text"]))
            caught_up = int(history["data"]["total"])
            self.report.late_joiner_caught_up = caught_up
            self.show.figure(f"dave caught up on {caught_up} messages sent before it started")

    async def crash_of_the_coordinator(self) -> None:
        with self.step("SIGKILL of the coordinator, and failover"):
            snapshot = await self.wait_one_mesh(self.bridges.live())
            victim = self.coordinator_of(snapshot)
            survivors = [bridge for bridge in self.bridges.live() if bridge is not victim]
            self.show.say(f"the coordinator is {victim.name} (pid {victim.pid}); sending it SIGKILL")
            killed_at = trio.current_time()
            self.bridges.kill(victim)
            # Failover: from the kill until a survivor answers on the coordinator port as the coordinator.
            self.doing(f"waiting for a survivor to serve on the coordinator port {self.port}")
            while True:
                seen = await self.observe(each_peer=False, attempt=0.5)
                if seen is not None and seen.coordinator is not None and seen.coordinator.pid != victim.pid:
                    break
                self.bridges.check()
                await trio.sleep(0.001)
            serving_at = trio.current_time()
            winner = self.coordinator_of(seen)
            self.report.coordinator_after = winner.name
            self.report.failover_ms = _ms(serving_at - killed_at)
            self.show.figure(
                f"failover: {winner.name} won the port and is the new coordinator, serving "
                f"{self.report.failover_ms:.1f} ms after the SIGKILL"
            )
            watcher = survivors[0]

            async def healed() -> None:
                await self.wait_one_mesh(survivors)
                self.report.mesh_healed_ms = _ms(trio.current_time() - killed_at)

            async def offline() -> None:
                while victim.agent_id in (await watcher.ok(action="list_agents"))["data"]["agents"]:  # noqa: ASYNC110
                    await trio.sleep(0.01)
                self.report.offline_ms = _ms(trio.current_time() - killed_at)

            self.doing(f"waiting for the survivors to link up and for {victim.name} to show offline")
            async with trio.open_nursery() as nursery:
                nursery.start_soon(healed)
                nursery.start_soon(offline)
            self.show.agent(
                watcher.name, f"sees {victim.name} offline {self.report.offline_ms:.0f} ms after the SIGKILL"
            )
            names = ", ".join(bridge.name for bridge in survivors)
            self.show.say(
                f"{names}: one mesh again, all linked and following {winner.name}, "
                f"{self.report.mesh_healed_ms:.0f} ms after the SIGKILL"
            )
            with trio.fail_after(2):
                code = await victim.process.wait()
            self.show.say(f"{victim.name}'s process ended with status {code} (killed)")

    async def newcomer_after_failover(self) -> None:
        with self.step("a new agent joins the same mesh after the failover"):
            (erin,) = await self.start("erin")
            assert erin.ready_at is not None
            self.report.new_agent_ready_ms = _ms(erin.ready_at - erin.spawned_at)
            members = self.bridges.live()
            snapshot = await self.wait_one_mesh(members)
            coordinator = self.coordinator_of(snapshot)
            self.show.say(f"{len(members)} peers in one mesh again; coordinator: {coordinator.name}")
            self.show.agent("erin", await self.online(erin))
            await erin.ok_eventually(_NOT_YET, action="join_room", room="general")
            self.doing("waiting for erin to read the history of #general from before the crash")
            history = await self.read_history(erin, "general", 2)
            self.report.history_after_failover = int(history["data"]["total"])
            self.show.agent(
                "erin",
                f"joined #general and read its history: {self.report.history_after_failover} messages, "
                "kept through the crash (every peer holds the replicated state, not the coordinator)",
            )
            hello = await self.send(erin, "general", "Hi all, erin here. Anything I can pick up?")
            for bridge in members:
                if bridge is not erin and "general" in await self._rooms_of(bridge):
                    await self.wait_message(bridge, hello)

    async def joined(self, owner: Bridge, room: str, *members: Bridge, show: bool = False) -> None:
        """Wait until ``owner`` was told that ``members`` joined ``room``."""
        for member in members:
            self.doing(f"waiting for {owner.name} to see {member.name} join #{room}")
            line = await owner.wait_event(_joined(room, member.agent_id))
            if show:
                self.show.agent(owner.name, f"<- {self.brief(line['text'])}")

    async def read_history(self, bridge: Bridge, room: str, at_least: int) -> Mapping[str, Any]:
        """``read_room`` until it shows ``at_least`` messages: a newcomer's peer may still be catching up (its
        anti-entropy exchange runs as it links to each peer); the step's deadline bounds the wait."""
        while int((history := await bridge.ok(action="read_room", room=room))["data"]["total"]) < at_least:  # noqa: ASYNC110
            await trio.sleep(0.02)
        return history

    async def _rooms_of(self, bridge: Bridge) -> list[str]:
        rooms: list[str] = (await bridge.ok(action="whoami"))["data"]["rooms"]
        return rooms


def _joined(room: str, agent_id: str) -> Callable[[Mapping[str, Any]], bool]:
    return lambda e: e.get("type") == "member_joined" and e.get("room") == room and e.get("sender") == agent_id


def _child_env(home: Path, port: int) -> dict[str, str]:
    env = {name: value for name, value in os.environ.items() if not name.startswith("AGENT_COMMS_")}
    env.update(AGENT_COMMS_HOME=str(home), AGENT_COMMS_PORT=str(port), AGENT_COMMS_LOAD_PLUGINS="")
    if "AGENT_COMMS_LOG" in os.environ:
        env["AGENT_COMMS_LOG"] = os.environ["AGENT_COMMS_LOG"]
    return env


async def run_demo(narrator: Narrator, report: DemoReport) -> None:
    """Run the whole demo, filling ``report``; raises :class:`StepFailed` naming the step that failed.

    Every process it starts is stopped before it returns, also when it fails or is cancelled.
    """
    began = time.monotonic()
    with tempfile.TemporaryDirectory(prefix="agent-comms-demo-", ignore_cleanup_errors=True) as tmp:
        root = Path(tmp)
        home = root / "home"
        key = load_or_create_key(home)  # a key of its own: the demo can neither join nor disturb your mesh
        report.port = free_port()
        report.home = str(home)
        narrator.header(
            [
                f"A private mesh of real agent processes on 127.0.0.1:{report.port},",
                f"with its own key in {home} (your mesh, if any, is not touched).",
                "Each agent is an 'agent-comms bridge jsonl' process driven over its stdin and stdout.",
            ]
        )
        started: list[Bridge] = []
        try:
            async with open_bridges(root, _child_env(home, report.port)) as bridges:
                started = bridges.started
                try:
                    await _Demo(bridges, narrator, report, key, home).run()
                except StepFailed as exc:
                    report.failed_step = exc.step
                    report.error = exc.reason
                    raise
        finally:
            report.processes_started = len(started)
            report.processes_left = sum(1 for bridge in started if bridge.process.returncode is None)
            report.total_seconds = round(time.monotonic() - began, 2)
    narrator.say(f"stopped all {report.processes_started} agent processes; the private mesh is gone")
    narrator.summary(report.rows())
