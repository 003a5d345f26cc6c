"""Real agent processes for a bridge's tests: another agent on the mesh, as the user's harness would meet it.

::

    from agent_comms.testing.processes import free_port, mesh_env, open_peer

    async def test_my_bridge_gets_a_dm(tmp_path):
        env = mesh_env(tmp_path, free_port())  # a private mesh: its own home (key) and port
        async with open_peer("bob", env, tmp_path / "bob") as bob:  # `agent-comms bridge jsonl` as a process
            result = await bob.call(action="dm", target="me", content="hi")

:class:`Peer` drives the built-in JSON-lines bridge over its standard input and output (``call`` sends a tool call
and waits for its result; ``wait_for`` waits for an event line); the other helpers find and watch the processes a
harness starts (Linux ``/proc``).
"""

from __future__ import annotations

import json
import math
import os
import socket
import subprocess
import sys
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import trio

from agent_comms.liveness import process_alive

__all__ = [
    "Lines",
    "Peer",
    "alive",
    "children_of",
    "command_line",
    "free_port",
    "mesh_env",
    "open_peer",
    "wait_for_bridge_of",
    "wait_until_gone",
]


def free_port() -> int:
    """A free TCP port on 127.0.0.1 (never the real default 19876)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
    assert port != 19876
    return port


class Lines:
    """One JSON object per line from a process, kept in order; waits for the next one that matches.

    A task reads the process's output all the time (:meth:`read_all`), so the process never blocks on a full pipe
    (node writes to a pipe synchronously: a full pipe would freeze the harness).
    """

    def __init__(self, process: trio.Process) -> None:
        assert process.stdout is not None
        self.process = process
        self.stream = process.stdout
        self.seen: list[dict[str, Any]] = []
        self._send, self._receive = trio.open_memory_channel[dict[str, Any]](math.inf)

    async def read_all(self) -> None:
        buffer = b""
        async with self._send:
            while chunk := await self.stream.receive_some():
                buffer += chunk
                *lines, buffer = buffer.split(b"\n")
                for line in lines:
                    try:
                        message: dict[str, Any] = json.loads(line)
                    except ValueError:
                        message = {"type": "unparsed", "line": line.decode(errors="replace")}
                    self.seen.append(message)
                    self._send.send_nowait(message)

    async def _next(self) -> dict[str, Any]:
        try:
            return await self._receive.receive()
        except trio.EndOfChannel:
            raise EOFError("the output ended") from None

    async def wait_for(self, match: Callable[[dict[str, Any]], bool]) -> dict[str, Any]:
        while not match(message := await self._next()):
            pass
        return message

    async def send(self, message: dict[str, Any]) -> None:
        assert self.process.stdin is not None
        await self.process.stdin.send_all(json.dumps(message).encode() + b"\n")


class Peer(Lines):
    """A second agent: ``agent-comms bridge jsonl`` as a real process."""

    agent_id = ""
    _next_id = 0

    async def call(self, **params: Any) -> dict[str, Any]:
        self._next_id += 1
        request_id = self._next_id
        await self.send({"id": request_id, "params": params})
        return await self.wait_for(lambda m: m.get("type") == "result" and m.get("id") == request_id)

    async def online_agents(self) -> list[str]:
        agents: list[str] = (await self.call(action="list_agents"))["data"]["agents"]
        return agents

    async def wait_until(self, agent_id: str, *, online: bool, interval: float = 0.02) -> None:
        """Ask ``list_agents`` until ``agent_id`` is (or is no longer) listed."""
        while (agent_id in await self.online_agents()) != online:  # noqa: ASYNC110 - another process's state
            await trio.sleep(interval)


def mesh_env(tmp_path: Path, port: int) -> dict[str, str]:
    """This process's environment with a private mesh: ``AGENT_COMMS_HOME`` under ``tmp_path``, port ``port``."""
    return {
        **os.environ,
        "AGENT_COMMS_HOME": str(tmp_path / "agent-comms-home"),
        "AGENT_COMMS_PORT": str(port),
    }


@asynccontextmanager
async def open_peer(name: str, env: dict[str, str], cwd: Path) -> AsyncIterator[Peer]:
    """Run ``agent-comms bridge jsonl --name NAME`` in ``cwd`` until the block ends; the :class:`Peer`, registered."""
    await trio.Path(cwd).mkdir(parents=True, exist_ok=True)
    process = await trio.lowlevel.open_process(
        [sys.executable, "-m", "agent_comms", "bridge", "jsonl", "--name", name],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        env={**env, "AGENT_COMMS_LOAD_PLUGINS": ""},
        cwd=cwd,
    )
    try:
        async with trio.open_nursery() as nursery:
            peer = Peer(process)
            nursery.start_soon(peer.read_all)
            ready = await peer.wait_for(lambda m: m.get("type") == "ready")
            peer.agent_id = ready["agent"]["id"]
            yield peer
            nursery.cancel_scope.cancel()
    finally:
        if process.poll() is None:
            process.kill()
        with trio.move_on_after(5):
            await process.wait()


def children_of(pid: int) -> list[int]:
    """The child processes of ``pid`` (Linux)."""
    try:
        text = Path(f"/proc/{pid}/task/{pid}/children").read_text()
    except OSError:
        return []
    return [int(part) for part in text.split()]


def command_line(pid: int) -> str:
    """The command line of ``pid``, arguments joined by spaces (Linux); empty if it is gone."""
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
    except OSError:
        return ""


async def wait_until_gone(pid: int) -> None:
    """Wait until process ``pid`` has exited."""
    while alive(pid):  # noqa: ASYNC110 - another process: no event to wait on
        await trio.sleep(0.02)


async def wait_for_bridge_of(pid: int, harness: str) -> int:
    """The pid of the ``agent-comms bridge <harness>`` process that ``pid`` started."""
    while True:
        for child in children_of(pid):
            if f"bridge {harness}" in command_line(child):
                return child
        await trio.sleep(0.05)


def alive(pid: int) -> bool:
    """Whether process ``pid`` runs (a zombie counts as gone: :func:`~agent_comms.liveness.process_alive`)."""
    return process_alive(pid)
