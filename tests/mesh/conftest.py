"""Fixtures for tests that run mesh peers as real operating-system processes on a free port."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
from collections.abc import AsyncIterator
from pathlib import Path

import attrs
import pytest
import trio

from agent_comms.mesh.keyfile import load_or_create_key
from agent_comms.mesh.observe import MeshSnapshot, NoMesh, observe_mesh
from agent_comms.mesh.registry import PeerRegistry


def free_port() -> int:
    """A port nobody listens on right now (never the real default 19876)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
    assert port != 19876
    return port


@attrs.define
class PeerProcess:
    name: str
    process: trio.Process
    peer_id: str
    data_port: int

    @property
    def pid(self) -> int:
        return self.process.pid

    def signal(self, signum: int) -> None:
        self.process.send_signal(signum)


@attrs.define
class ProcessMesh:
    """Peers as separate processes sharing one ``AGENT_COMMS_HOME`` and a free coordinator port."""

    home: Path
    port: int
    processes: dict[str, PeerProcess] = attrs.field(factory=dict)

    @property
    def env(self) -> dict[str, str]:
        return {**os.environ, "AGENT_COMMS_HOME": str(self.home), "AGENT_COMMS_PORT": str(self.port)}

    @property
    def key(self) -> bytes:
        return load_or_create_key(self.home)

    async def spawn(self, name: str, *agents: str, home: Path | None = None) -> PeerProcess:
        env = self.env if home is None else {**self.env, "AGENT_COMMS_HOME": str(home)}
        command = [sys.executable, "-m", "agent_comms.mesh", *[arg for a in agents for arg in ("--agent", a)]]
        process = await trio.lowlevel.open_process(command, env=env, stdout=subprocess.PIPE)
        assert process.stdout is not None
        line = b""
        with trio.fail_after(20):
            while not line.endswith(b"\n"):
                chunk = await process.stdout.receive_some(1)
                if not chunk:
                    raise AssertionError(f"peer {name} exited before it was ready (code {process.poll()})")
                line += chunk
        word, peer_id, data_port = line.decode().split()
        assert word == "ready"
        peer = self.processes[name] = PeerProcess(name, process, peer_id, int(data_port))
        return peer

    def live(self) -> list[PeerProcess]:
        return [p for p in self.processes.values() if p.process.poll() is None]

    async def observe(self) -> MeshSnapshot:
        return await observe_mesh(self.key, port=self.port, registry=PeerRegistry(self.home), attempt_seconds=1.0)

    def is_one_mesh(self, snapshot: MeshSnapshot, names: list[str]) -> bool:
        """Exactly these peers, one coordinator that all follow, everyone linked to everyone, equal states."""
        expected = {self.processes[n].peer_id for n in names}
        views = {v.info.peer_id: v for v in snapshot.peers}
        if snapshot.coordinator is None or set(views) != expected:
            return False
        for peer_id, view in views.items():
            if view.links is None or set(view.links) != expected - {peer_id}:
                return False
            if view.coordinator != snapshot.coordinator.peer_id:
                return False
        return len({v.digest for v in views.values()}) == 1

    async def wait_one_mesh(self, names: list[str], *, within: float = 10.0) -> MeshSnapshot:
        last: MeshSnapshot | None = None
        with trio.move_on_after(within):
            while True:
                try:
                    last = await self.observe()
                except NoMesh:
                    last = None
                if last is not None and self.is_one_mesh(last, names):
                    return last
                await trio.sleep(0.05)
        raise AssertionError(f"no single mesh of {names} within {within} s; last seen: {last and last.to_json()}")

    def kill_all(self) -> None:
        for peer in self.processes.values():
            if peer.process.poll() is None:
                peer.process.send_signal(signal.SIGCONT)
                peer.process.kill()


@pytest.fixture
async def process_mesh(tmp_path: Path) -> AsyncIterator[ProcessMesh]:
    mesh = ProcessMesh(tmp_path / "home", free_port())
    try:
        yield mesh
    finally:
        mesh.kill_all()
        for peer in mesh.processes.values():
            with trio.move_on_after(5):
                await peer.process.wait()
