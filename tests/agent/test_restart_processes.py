"""Identities and liveness with real ``jsonl`` bridge processes: restart, a second bridge in the same slot, SIGKILL.

Testing policy: ``python -m agent_comms bridge jsonl --name NAME`` runs as a real process with pipes for stdin and
stdout, as a harness starts it, on a free coordinator port with its own ``AGENT_COMMS_HOME``. Each bridge runs in a
working directory of its own (its identity is per harness and directory). Every test runs under a deadline, and the
``bridges`` fixture kills whatever is still running at the end and shows the bridges' stderr if the test failed.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import pytest
import trio

DEADLINE = 60
#: Stale agents: offline within 1 s of their connection dropping (DESIGN 2.4); we allow 2 s.
OFFLINE_WITHIN = 2.0

Message = dict[str, Any]


def free_port() -> int:
    """A port nobody listens on right now (never the real default 19876)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
    assert port != 19876
    return port


class Bridge:
    """One ``jsonl`` bridge process: requests in, results matched by id, events collected as they come."""

    def __init__(self, name: str, cwd: Path, process: trio.Process) -> None:
        self.name = name
        self.cwd = cwd
        self.process = process
        self.ready: Message = {}
        #: every event line, in the order written
        self.events: list[Message] = []
        #: every line, in the order written
        self.lines: list[Message] = []
        self._buffer = b""
        self._ids = 0

    @property
    def agent_id(self) -> str:
        agent_id: str = self.ready["agent"]["id"]
        return agent_id

    async def _read(self) -> Message:
        assert self.process.stdout is not None
        while b"\n" not in self._buffer:
            chunk = await self.process.stdout.receive_some()
            if not chunk:
                raise EOFError(f"{self.name}'s output ended; unread: {self._buffer!r}")
            self._buffer += chunk
        line, _, self._buffer = self._buffer.partition(b"\n")
        message: Message = json.loads(line)
        self.lines.append(message)
        if message["type"] == "event":
            self.events.append(message)
        return message

    async def read_ready(self) -> Message:
        self.ready = await self._read()
        assert self.ready["type"] == "ready", self.ready
        assert self.ready["agent"]["name"] == self.name
        assert self.ready["agent"]["harness"] == "jsonl"
        return self.ready

    async def call(self, **params: object) -> Message:
        """One tool call; the events written before its result are kept in :attr:`events`."""
        self._ids += 1
        request_id = self._ids
        assert self.process.stdin is not None
        await self.process.stdin.send_all(json.dumps({"id": request_id, "params": params}).encode() + b"\n")
        while (message := await self._read())["type"] != "result":
            assert message["type"] == "event", message
        assert message["id"] == request_id, message
        return message

    async def ok(self, **params: object) -> Message:
        result = await self.call(**params)
        assert result["is_error"] is False, result["text"]
        return result

    async def wait_events(self, predicate: Callable[[Message], bool], count: int) -> list[Message]:
        """Read until ``count`` events match ``predicate``; return those."""
        while len(found := [m for m in self.events if predicate(m["event"])]) < count:
            await self._read()
        return found

    async def listed(self) -> list[str]:
        """The ids ``list_agents`` shows this bridge's agent."""
        agents: list[str] = (await self.ok(action="list_agents"))["data"]["agents"]
        return agents

    async def wait_listed(self, agent_id: str, *, listed: bool = True) -> None:
        """Poll ``list_agents`` until ``agent_id`` is (or is no longer) listed as online."""
        while (agent_id in await self.listed()) is not listed:  # noqa: ASYNC110 - another process's view
            await trio.sleep(0.05)

    async def close(self) -> int:
        """End of input: the bridge leaves the mesh and exits; read what it wrote until then; its exit status."""
        assert self.process.stdin is not None
        await self.process.stdin.aclose()
        while True:
            try:
                await self._read()
            except EOFError:
                break
        return await self.process.wait()


class Bridges:
    """Starts bridges on one mesh (one home, one free port) and keeps them for the finaliser."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.home = root / "home"
        self.port = free_port()
        self.started: list[Bridge] = []
        self.logs: list[Path] = []

    async def start(self, name: str, cwd: Path) -> Bridge:
        """Start ``agent-comms bridge jsonl --name NAME`` in ``cwd`` and read its ready line."""
        await trio.Path(cwd).mkdir(parents=True, exist_ok=True)
        env = {
            **os.environ,
            "AGENT_COMMS_HOME": str(self.home),
            "AGENT_COMMS_PORT": str(self.port),
            "AGENT_COMMS_LOAD_PLUGINS": "",
        }
        log = self.root / f"{name}-{len(self.logs)}.stderr"
        self.logs.append(log)
        with log.open("wb") as stderr:
            process = await trio.lowlevel.open_process(
                [sys.executable, "-m", "agent_comms", "bridge", "jsonl", "--name", name],
                stdin=subprocess.PIPE,
                stdout=subprocess.PIPE,
                stderr=stderr,
                env=env,
                cwd=cwd,
            )
        bridge = Bridge(name, cwd, process)
        self.started.append(bridge)
        await bridge.read_ready()
        return bridge

    async def kill_all(self) -> None:
        for bridge in self.started:
            if bridge.process.poll() is None:
                bridge.process.kill()
        with trio.move_on_after(10) as scope:
            scope.shield = True
            for bridge in self.started:
                await bridge.process.wait()
        for log in self.logs:
            if log.exists() and (text := log.read_text(errors="replace")):
                print(f"--- {log.name} ---\n{text}", file=sys.stderr)


@pytest.fixture
async def bridges(tmp_path: Path) -> AsyncIterator[Bridges]:
    started = Bridges(tmp_path)
    try:
        yield started
    finally:
        await started.kill_all()
    assert all(bridge.process.returncode is not None for bridge in started.started)


async def test_a_restarted_bridge_is_the_same_agent_and_gets_what_it_missed(bridges: Bridges, tmp_path: Path) -> None:
    with trio.fail_after(DEADLINE):
        alice = await bridges.start("alice", tmp_path / "alice")
        bob = await bridges.start("bob", tmp_path / "bob")
        bob_id = bob.agent_id
        assert bob_id.startswith("jsonl-")
        assert bob_id != alice.agent_id
        await alice.wait_listed(bob_id)

        assert await bob.close() == 0
        await alice.wait_listed(bob_id, listed=False)  # a graceful stop is seen at once
        sent = []
        for content in ("while you were out", "and again"):
            result = await alice.ok(action="dm", target=bob_id, content=content)
            message_id = result["data"]["message_id"]
            assert result["text"] == (
                f"Sent to bob ({bob_id}); message id {message_id}. It is offline; it gets the message when it returns."
            )
            sent.append((message_id, content))

        back = await bridges.start("bob", tmp_path / "bob")
        assert back.agent_id == bob_id
        dms = await back.wait_events(lambda event: event["type"] == "dm", 2)
        assert [(m["event"]["message_id"], m["event"]["content"]) for m in dms] == sent
        assert [m["text"] for m in dms] == [
            f"[DM from alice ({alice.agent_id})] {content}  [id {message_id}]" for message_id, content in sent
        ]
        assert all(m["event"]["sender"] == alice.agent_id and m["event"]["to"] == bob_id for m in dms)

        def read(event: Message) -> bool:
            return (event["type"], event["status"]) == ("delivery_status", "read")

        reads = await alice.wait_events(read, 2)
        assert sorted((m["event"]["message_id"], m["event"]["sender"]) for m in reads) == sorted(
            (message_id, bob_id) for message_id, _ in sent
        )

        # Exactly once: everything each bridge wrote until it ended.
        assert await back.close() == 0
        assert [m["event"]["message_id"] for m in back.events if m["event"]["type"] == "dm"] == [m for m, _ in sent]
        assert await alice.close() == 0
        statuses = [
            (m["event"]["message_id"], m["event"]["status"])
            for m in alice.events
            if m["event"]["type"] == "delivery_status"
        ]
        for message_id, _ in sent:
            assert [status for mid, status in statuses if mid == message_id] == ["delivered", "read"]


async def test_a_second_bridge_in_the_same_directory_gets_the_next_slot(bridges: Bridges, tmp_path: Path) -> None:
    with trio.fail_after(DEADLINE):
        first = await bridges.start("bob", tmp_path / "bob")
        second = await bridges.start("bob", tmp_path / "bob")
        assert second.agent_id == f"{first.agent_id}-2"
        # Both are on the mesh, each under its own id; the first one's identity was not taken over.
        await first.wait_listed(second.agent_id)
        assert {first.agent_id, second.agent_id} <= set(await second.listed())
        assert (await first.ok(action="whoami"))["text"].startswith(f"You are bob ({first.agent_id}): ")
        assert (await second.ok(action="whoami"))["text"].startswith(f"You are bob ({second.agent_id}): ")
        sent = await first.ok(action="dm", target=second.agent_id, content="hello, other me")
        [event] = await second.wait_events(lambda event: event["type"] == "dm", 1)
        assert event["event"]["message_id"] == sent["data"]["message_id"]
        assert event["event"]["sender"] == first.agent_id
        # Once the first has ended, its slot is free again.
        assert await first.close() == 0
        third = await bridges.start("bob", tmp_path / "bob")
        assert third.agent_id == first.agent_id


@pytest.mark.parametrize("victim", ["coordinator", "newcomer"])
async def test_a_killed_bridge_is_offline_within_two_seconds(bridges: Bridges, tmp_path: Path, victim: str) -> None:
    with trio.fail_after(DEADLINE):
        first = await bridges.start("alice", tmp_path / "alice")  # the first binds the port: the coordinator
        second = await bridges.start("bob", tmp_path / "bob")
        killed, survivor = (first, second) if victim == "coordinator" else (second, first)
        await survivor.wait_listed(killed.agent_id)
        killed.process.send_signal(signal.SIGKILL)
        with trio.fail_after(OFFLINE_WITHIN):
            await survivor.wait_listed(killed.agent_id, listed=False)
        assert await killed.process.wait() == -signal.SIGKILL
        result = await survivor.ok(action="list_agents")
        assert result["data"]["agents"] == [survivor.agent_id]
        assert killed.agent_id not in result["text"]
        assert result["text"].startswith("1 agent(s) online:\n")
