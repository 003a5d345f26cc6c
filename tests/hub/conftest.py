"""Machines joined through a real hub, on loopback.

The hub is ``agent-comms hub serve`` (the pinned ``nats-server`` from the ``hub`` extra) in a process of its own, on
a free 127.0.0.1 port. A machine is its own ``AGENT_COMMS_HOME`` (with its own mesh key and bundle) and coordinator
port; its peers run in this test process (``open_node`` with the machine's home, so each starts its part of the
gateway exactly as a bridge's peer does) or as real processes (``python -m agent_comms.mesh``) where a test kills
them. Without ``nats-server`` these tests are skipped, except under ``CI=true``, where that is a failure.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from pathlib import Path

import attrs
import pytest
import trio

from agent_comms.mesh.hub_config import HubError, nats_server_binary
from agent_comms.mesh.keyfile import load_or_create_key
from agent_comms.mesh.node import MeshNode, open_node
from agent_comms.mesh.registry import PeerRegistry
from agent_comms.protocol.peer import PeerConfig
from agent_comms.store import MeshStore
from agent_comms.tool import CommsTool


def _require_nats_server() -> None:
    try:
        nats_server_binary()
    except HubError as exc:
        if os.environ.get("CI"):
            pytest.fail(f"CI must have the hub's server (the 'hub' extra): {exc}")
        pytest.skip(str(exc))


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def cli(home: Path, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "AGENT_COMMS_HOME": str(home)}
    return subprocess.run(
        [sys.executable, "-m", "agent_comms", *args], env=env, capture_output=True, text=True, check=check, timeout=60
    )


async def acli(env: dict[str, str], *args: str) -> str:
    """Run the command line without blocking this process's peers (they must answer it); its standard output."""
    result = await trio.run_process(
        [sys.executable, "-m", "agent_comms", *args], env=env, capture_stdout=True, capture_stderr=True
    )
    return result.stdout.decode()


@attrs.define
class Hub:
    home: Path
    port: int
    process: trio.Process | None = None

    async def start(self) -> None:
        env = {**os.environ, "AGENT_COMMS_HOME": str(self.home)}
        self.process = await trio.lowlevel.open_process(
            [sys.executable, "-m", "agent_comms", "hub", "serve"],
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.DEVNULL,
        )
        assert self.process.stdout is not None
        buffer = b""
        with trio.fail_after(60):
            while b"hub ready" not in buffer:
                chunk = await self.process.stdout.receive_some()
                assert chunk, f"hub serve ended: {buffer!r}"
                buffer += chunk

    async def stop(self) -> None:
        if self.process is None:
            return
        self.process.send_signal(signal.SIGTERM)
        with trio.fail_after(30):
            code = await self.process.wait()
        assert code == 0, code
        self.process = None

    def kill(self) -> None:
        if self.process is not None and self.process.returncode is None:
            self.process.kill()

    def wipe(self) -> None:
        import shutil

        shutil.rmtree(self.home / "hub" / "server" / "jetstream", ignore_errors=True)


@attrs.define
class Machine:
    name: str
    home: Path
    port: int
    history_limit: int = 1000

    @property
    def key(self) -> bytes:
        return load_or_create_key(self.home)

    @property
    def env(self) -> dict[str, str]:
        return {**os.environ, "AGENT_COMMS_HOME": str(self.home), "AGENT_COMMS_PORT": str(self.port)}

    @asynccontextmanager
    async def node(self) -> AsyncIterator[MeshNode]:
        async with open_node(
            self.key,
            port=self.port,
            registry=PeerRegistry(self.home),
            config=PeerConfig(coordinator_port=self.port, history_limit=self.history_limit),
        ) as node:
            await node.wait_synced()
            yield node

    @asynccontextmanager
    async def agent(self, name: str, *, visibility: str = "visible") -> AsyncIterator[CommsTool]:
        async with self.node() as node:
            tool = CommsTool(MeshStore(node), agent_id=f"{name}-id", harness="test", cwd=f"/{name}", pid=0)
            result = tool.call({"action": "register", "name": name, "visibility": visibility})
            assert not result.is_error, result.text
            yield tool


@attrs.define
class HubWorld:
    hub: Hub
    machines: dict[str, Machine]

    def machine(self, name: str) -> Machine:
        return self.machines[name]


async def eventually(condition: Callable[[], bool], *, within: float = 30.0, what: str = "") -> None:
    """Wait (polling; conditions span several machines) until ``condition()`` holds."""
    with trio.fail_after(within):
        while not condition():  # noqa: ASYNC110 - a condition across machines and processes
            await trio.sleep(0.02)


@pytest.fixture
async def world(tmp_path: Path) -> AsyncIterator[HubWorld]:
    _require_nats_server()
    hub = Hub(tmp_path / "hub", free_port())
    cli(hub.home, "hub", "init", "--listen", f"127.0.0.1:{hub.port}")
    machines: dict[str, Machine] = {}
    for name in ("alpha", "beta", "gamma"):
        bundle = tmp_path / f"{name}.json"
        cli(hub.home, "hub", "add-machine", name, "--out", str(bundle))
        machine = Machine(name, tmp_path / name, free_port())
        cli(machine.home, "hub", "join", str(bundle))
        machines[name] = machine
    await hub.start()
    try:
        yield HubWorld(hub, machines)
    finally:
        if hub.process is not None:
            with trio.CancelScope(shield=True):
                await hub.stop()


@attrs.define
class PeerProcess:
    """A real peer process of a machine (``python -m agent_comms.mesh``), hosting agents."""

    process: trio.Process
    peer_id: str

    def kill(self) -> None:
        if self.process.returncode is None:
            self.process.kill()


async def spawn_peer(machine: Machine, *agents: str) -> PeerProcess:
    args = [sys.executable, "-m", "agent_comms.mesh"]
    for agent in agents:
        args += ["--agent", agent]
    process = await trio.lowlevel.open_process(args, env=machine.env, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL)
    assert process.stdout is not None
    buffer = b""
    with trio.fail_after(60):
        while b"\n" not in buffer:
            chunk = await process.stdout.receive_some()
            assert chunk, "the peer process ended before it was ready"
            buffer += chunk
    return PeerProcess(process, buffer.split()[1].decode())


def dm_contents(store: MeshStore, recipient: str) -> list[str]:
    """The contents of the direct messages to ``recipient`` this replica holds, oldest first."""
    from agent_comms.protocol.ops import DirectMessage, op_key

    ops = sorted(
        (
            op
            for op in store.state.stored_ops()
            if isinstance(op.body, DirectMessage) and op.body.recipient == recipient
        ),
        key=op_key,
    )
    return [op.body.content for op in ops]  # type: ignore[union-attr]
