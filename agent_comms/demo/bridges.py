"""The demo's agents: real ``agent-comms bridge jsonl`` processes, driven over their stdin and stdout.

Each agent is one bridge process in a working directory of its own (an agent's identity is per harness and
directory), on the demo's private mesh. A reader task per process sorts its output lines into the answers to our
requests, the events pushed to the agent, and error lines. Anything waiting on any agent wakes up when any of them
writes or ends, so a process that dies unexpectedly fails the current step at once instead of after a timeout.

:func:`open_bridges` owns every process it starts: when its block ends (normally, by an exception, or cancelled by
a signal), it closes their input (a bridge then leaves the mesh and exits), and kills whatever is still running
after a grace period. Processes run in sessions of their own, so a Ctrl-C in the terminal reaches only the demo,
which then stops them in order; if the demo itself is killed, the bridges see the end of their input and exit.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
from collections.abc import AsyncIterator, Callable, Mapping
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any, Final, TypeVar

import trio

from agent_comms.private_files import create_private_file

__all__ = ["Bridge", "BridgeExited", "Bridges", "Message", "RequestFailed", "open_bridges"]

#: One JSON line of a bridge's output.
Message = dict[str, Any]
T = TypeVar("T")

#: How long stopped bridges get to leave the mesh gracefully before they are killed.
STOP_GRACE: Final = 2.0
_LOG_TAIL: Final = 6


class BridgeExited(Exception):
    """A bridge process ended while the demo still needed it; the message says how and quotes its last log lines."""


class RequestFailed(Exception):
    """A tool call returned an error (or not the error that was expected)."""


class Bridge:
    """One agent: its bridge process, what it wrote, and tool calls over its stdin."""

    def __init__(self, group: Bridges, name: str, process: trio.Process, log: Path) -> None:
        self.group = group
        self.name = name
        self.process = process
        self.log = log
        self.spawned_at = trio.current_time()
        self.ready_at: float | None = None
        #: the ``ready`` line: ``{"agent": {"id", "name", "harness"}}``
        self.ready: Message | None = None
        #: every event line, in the order written
        self.events: list[Message] = []
        #: error lines without a request id (the bridge could not join the mesh, ...)
        self.errors: list[str] = []
        #: set when the demo ends this process on purpose (the crash of the coordinator)
        self.expected_exit = False
        self.ended = False
        self._results: dict[int, Message] = {}
        self._ids = 0

    @property
    def pid(self) -> int:
        """The bridge's process id."""
        return self.process.pid

    @property
    def agent_id(self) -> str:
        """The agent id the bridge registered."""
        if self.ready is None:
            raise RuntimeError(f"{self.name} is not registered yet")
        agent_id: str = self.ready["agent"]["id"]
        return agent_id

    def describe_exit(self) -> str:
        """How the process ended, with the last lines of its log."""
        code = self.process.returncode
        if code is None:
            how = "closed its output"
        elif code < 0:
            how = f"was killed by {signal.Signals(-code).name}"
        else:
            how = f"exited with status {code}"
        text = f"{self.name}'s bridge process (pid {self.pid}) {how}"
        tail = self.log_tail()
        return text + (":\n    " + "\n    ".join(tail) if tail else "")

    def log_tail(self) -> list[str]:
        """The last lines the process wrote on standard error, and any error lines it sent."""
        try:
            lines = self.log.read_text(errors="replace").splitlines()
        except OSError:
            lines = []
        return [*self.errors, *lines][-_LOG_TAIL:]

    async def wait_ready(self) -> Message:
        """Wait for the ``ready`` line (the agent is registered); :class:`BridgeExited` if an error came instead."""
        return await self.group.wait_for(lambda: self.ready, self)

    async def call(self, **params: object) -> Message:
        """One ``agent_comms`` tool call; its result line (``text``, ``is_error``, ``data``)."""
        self._ids += 1
        request_id = self._ids
        line = json.dumps({"id": request_id, "params": params}).encode() + b"\n"
        stdin = self.process.stdin
        assert stdin is not None
        try:
            await stdin.send_all(line)
        except (trio.BrokenResourceError, trio.ClosedResourceError):
            await self.group.wait_for(lambda: None, self)  # raises BridgeExited once the reader saw the end
        return await self.group.wait_for(lambda: self._results.pop(request_id, None), self)

    async def ok(self, **params: object) -> Message:
        """A tool call that must succeed; :class:`RequestFailed` quotes the error otherwise."""
        result = await self.call(**params)
        if result.get("is_error", True):
            raise RequestFailed(f"{self.name}: {params.get('action')} failed: {result.get('text')}")
        return result

    async def refused(self, code: str, retry: frozenset[str], **params: object) -> Message:
        """A tool call that must be refused with the error ``code``; retried while it fails with a code in
        ``retry`` instead (what it is about was created on another peer a moment ago)."""
        while True:
            result = await self.call(**params)
            text = str(result.get("text"))
            if result.get("is_error") and f"({code})" in text:
                return result
            if not (result.get("is_error") and any(f"({other})" in text for other in retry)):
                raise RequestFailed(f"{self.name}: {params.get('action')} should fail with {code}: {text}")
            await trio.sleep(0.02)

    async def ok_eventually(self, retry: frozenset[str], **params: object) -> Message:
        """A tool call that must succeed once replication has caught up: retried while it fails with a code in
        ``retry`` (the room or agent was created on another peer a moment ago)."""
        while True:
            result = await self.call(**params)
            text = str(result.get("text"))
            if not result.get("is_error"):
                return result
            if not any(f"({code})" in text for code in retry):
                raise RequestFailed(f"{self.name}: {params.get('action')} failed: {text}")
            await trio.sleep(0.02)

    async def wait_event(self, predicate: Callable[[Mapping[str, Any]], bool]) -> Message:
        """The first event line (``{"event", "text"}``) whose event matches ``predicate``, waiting for it."""
        return await self.group.wait_for(
            lambda: next((line for line in self.events if predicate(line["event"])), None), self
        )

    def _take(self, message: Message) -> None:
        kind = message.get("type")
        if kind == "ready" and self.ready is None:
            self.ready = message
            self.ready_at = trio.current_time()
        elif kind == "result" and isinstance(message.get("id"), int):
            self._results[message["id"]] = message
        elif kind == "event":
            self.events.append(message)
        elif kind == "error":
            request_id = message.get("id")
            if isinstance(request_id, int):
                self._results[request_id] = {"is_error": True, "text": message.get("text", "")}
            else:
                self.errors.append(str(message.get("text", "")))

    async def _read(self) -> None:
        stdout = self.process.stdout
        assert stdout is not None
        buffer = b""
        try:
            while chunk := await stdout.receive_some(1 << 16):
                buffer += chunk
                *lines, buffer = buffer.split(b"\n")
                for line in lines:
                    try:
                        message = json.loads(line)
                    except ValueError:
                        self.errors.append(f"unreadable output line: {line[:200]!r}")
                        continue
                    if isinstance(message, dict):
                        self._take(message)
                self.group.changed()
        except (trio.BrokenResourceError, trio.ClosedResourceError):
            pass
        with trio.move_on_after(STOP_GRACE):
            await self.process.wait()  # first, so describe_exit can tell a crash from an exit
        self.ended = True
        self.group.changed()


class Bridges:
    """The bridge processes of one mesh; create it with :func:`open_bridges`."""

    def __init__(self, nursery: trio.Nursery, root: Path, env: Mapping[str, str]) -> None:
        self.root = root
        self.env = dict(env)
        self.started: list[Bridge] = []
        self._nursery = nursery
        self._changed = trio.Event()

    def live(self) -> list[Bridge]:
        """The bridges whose process is still running."""
        return [bridge for bridge in self.started if bridge.process.returncode is None and not bridge.ended]

    def by_pid(self, pid: int) -> Bridge | None:
        """The bridge with this process id, if the demo started it."""
        return next((bridge for bridge in self.started if bridge.pid == pid), None)

    async def start(self, name: str) -> Bridge:
        """Start ``agent-comms bridge jsonl --name NAME`` in a working directory of its own (not yet ready)."""
        cwd = self.root / "agents" / name
        cwd.mkdir(parents=True, exist_ok=True)
        log = self.root / "logs" / f"{name}.log"
        log.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
        command = [sys.executable, "-m", "agent_comms", "bridge", "jsonl", "--name", name]
        # A new 0600 file, never through a link: whatever is in its place (an earlier run's log, a planted link)
        # is removed first, not followed or truncated.
        with contextlib.suppress(FileNotFoundError):
            log.unlink()
        stderr = create_private_file(log)
        try:
            process = await trio.lowlevel.open_process(
                command,
                cwd=cwd,
                env=self.env,
                stdin=subprocess.PIPE,
                stdout=subprocess.PIPE,
                stderr=stderr,
                start_new_session=True,  # a terminal's Ctrl-C reaches only the demo, which stops us in order
            )
        finally:
            os.close(stderr)
        bridge = Bridge(self, name, process, log)
        self.started.append(bridge)
        self._nursery.start_soon(bridge._read)
        return bridge

    def changed(self) -> None:
        """Wake everything waiting in :meth:`wait_for`."""
        self._changed.set()
        self._changed = trio.Event()

    async def wait_for(self, check: Callable[[], T | None], bridge: Bridge) -> T:
        """Wait until ``check()`` returns something; :class:`BridgeExited` if ``bridge`` (or any bridge that was
        not ended on purpose) ends first."""
        while True:
            value = check()
            if value is not None:
                return value
            if bridge.ended:
                raise BridgeExited(bridge.describe_exit())
            self.check()
            await self._changed.wait()

    def check(self) -> None:
        """Raise :class:`BridgeExited` if a bridge ended that the demo did not end on purpose."""
        for bridge in self.started:
            if bridge.ended and not bridge.expected_exit:
                raise BridgeExited(bridge.describe_exit())

    async def stop_all(self) -> None:
        """Stop every process: close its input (it leaves the mesh and exits), kill it after a grace period."""
        for bridge in self.started:
            if bridge.ready is None and bridge.process.returncode is None:
                bridge.process.terminate()  # still starting: it has not joined, so there is nothing to leave
            if bridge.process.stdin is not None:
                with trio.move_on_after(0.2):
                    await bridge.process.stdin.aclose()
        with trio.move_on_after(STOP_GRACE):
            for bridge in self.started:
                await bridge.process.wait()
        for bridge in self.started:
            if bridge.process.returncode is None:
                bridge.process.kill()
        for bridge in self.started:
            await bridge.process.wait()

    def kill(self, bridge: Bridge) -> None:
        """SIGKILL one bridge on purpose (a crash): waiting on the others goes on."""
        bridge.expected_exit = True
        os.kill(bridge.pid, signal.SIGKILL)


@asynccontextmanager
async def open_bridges(root: Path, env: Mapping[str, str]) -> AsyncIterator[Bridges]:
    """Start bridges in the block; all of them are stopped when it ends, however it ends."""
    async with trio.open_nursery() as nursery:
        bridges = Bridges(nursery, root, env)
        try:
            yield bridges
        finally:
            with trio.CancelScope(shield=True):
                await bridges.stop_all()
            nursery.cancel_scope.cancel()
