"""Hostile or heavy neighbours: any process on the machine can connect to a peer's ports and say nothing, or send the
header of a huge frame, as often as it likes.

In-process tests (the in-memory network) check the exact rules: the cap on connections waiting for their handshake
and the frame cap before authentication. Real-process tests check what a user sees: a bridge limited to few file
descriptors survives a flood of idle connections that runs it out of them (``EMFILE``), keeps serving its agent
and recovers when the flood ends; many unauthenticated connections sending huge frame headers do not grow a peer's
memory; and a peer raises its soft limit on open files to the hard one. Every test has a deadline.
"""

from __future__ import annotations

import contextlib
import os
import resource
import subprocess
import sys
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import pytest
import trio
from conftest import free_port

from agent_comms.mesh.keyfile import load_or_create_key
from agent_comms.mesh.network import MemoryNetwork
from agent_comms.mesh.node import MAX_PENDING_LINKS, open_node
from agent_comms.mesh.observe import NoMesh, observe_mesh
from agent_comms.mesh.registry import PeerRegistry
from agent_comms.protocol.framing import DEFAULT_MAX_FRAME
from agent_comms.protocol.peer import PeerConfig
from agent_comms.testing.processes import Peer

PORT = 40007
KEY = bytes(32)
#: Long enough that no connection in these tests is closed for taking too long over its handshake.
PATIENT = PeerConfig(coordinator_port=PORT, handshake_timeout=60.0)


# ---------------------------------------------------------------- the rules, in process


async def test_connections_beyond_the_pending_cap_close_the_oldest_and_an_honest_peer_joins_meanwhile() -> None:
    net = MemoryNetwork()
    async with open_node(KEY, port=PORT, network=net.host("a"), config=PATIENT, probe_processes=False) as node:
        with trio.fail_after(10):
            port = node.peer.info.data_port
            first = [await net.connect(port) for _ in range(MAX_PENDING_LINKS)]
            await node.wait_for(lambda: node.pending_links() == MAX_PENDING_LINKS)
            later = [await net.connect(port) for _ in range(5)]
            for conn in first[:5]:  # the oldest made room (without the cap: closed after the handshake timeout)
                assert await conn.stream.receive_some() == b""
            await node.wait_for(lambda: node.pending_links() == MAX_PENDING_LINKS)
            # While the flood still holds every slot, an honest peer joins: its connection takes the oldest slot
            # and its handshake finishes long before a hundred more strangers could push it out.
            async with open_node(KEY, port=PORT, network=net.host("b"), config=PATIENT, probe_processes=False) as b:
                await node.wait_for(lambda: b.peer_id in node.peer.data_links)
            assert node.pending_links() <= MAX_PENDING_LINKS
            for conn in [*first, *later]:
                await conn.stream.aclose()
            await node.wait_for(lambda: node.pending_links() == 0)


async def test_a_huge_frame_header_before_authentication_closes_the_link_at_once(
    caplog: pytest.LogCaptureFixture,
) -> None:
    net = MemoryNetwork()
    async with open_node(KEY, port=PORT, network=net.host("a"), config=PATIENT, probe_processes=False) as node:
        with trio.fail_after(10):
            conn = await net.connect(node.peer.info.data_port)
            await conn.stream.send_all((DEFAULT_MAX_FRAME - 1).to_bytes(4, "big") + bytes(4096))
            assert await conn.stream.receive_some() == b""  # without the cap: buffered until the handshake timeout
            await node.wait_for(lambda: not node.peer.links)
    closes = [r.getMessage() for r in caplog.records if "closed" in r.getMessage()]
    assert any("oversized" in line and "1024" in line for line in closes), closes


# ---------------------------------------------------------------- real processes


def _limit_files(count: int, hard: int | None = None) -> Callable[[], None]:
    def limit() -> None:
        resource.setrlimit(resource.RLIMIT_NOFILE, (count, count if hard is None else hard))

    return limit


def _open_files_limits(pid: int) -> tuple[int, int]:
    for line in Path(f"/proc/{pid}/limits").read_text().splitlines():
        if line.startswith("Max open files"):
            soft, hard = line.split()[3:5]
            return int(soft), int(hard)
    raise AssertionError("no open-files limit in /proc/<pid>/limits")


def _peak_rss_kib(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1])
    raise AssertionError("no VmHWM in /proc/<pid>/status")


@asynccontextmanager
async def _mesh_peer(home: Path, port: int, **options: Any) -> AsyncIterator[tuple[trio.Process, int]]:
    """``python -m agent_comms.mesh`` on ``port``; yields the process and its data port once it is ready."""
    env = {**os.environ, "AGENT_COMMS_HOME": str(home), "AGENT_COMMS_PORT": str(port)}
    process = await trio.lowlevel.open_process(
        [sys.executable, "-m", "agent_comms.mesh"], env=env, stdout=subprocess.PIPE, **options
    )
    try:
        assert process.stdout is not None
        line = b""
        while not line.endswith(b"\n"):
            chunk = await process.stdout.receive_some(1)
            assert chunk, f"the peer exited before it was ready (code {process.poll()})"
            line += chunk
        yield process, int(line.split()[2])
    finally:
        process.kill()
        with trio.move_on_after(5):
            await process.wait()


@pytest.mark.skipif(not Path("/proc/self/limits").exists(), reason="reads /proc")
async def test_a_peer_raises_its_soft_limit_on_open_files_to_the_hard_one(tmp_path: Path) -> None:
    with trio.fail_after(30):
        async with _mesh_peer(tmp_path / "home", free_port(), preexec_fn=_limit_files(256, 512)) as (process, _):
            assert _open_files_limits(process.pid) == (512, 512)


@pytest.mark.skipif(not Path("/proc/self/status").exists(), reason="reads /proc")
async def test_unauthenticated_connections_sending_huge_frame_headers_do_not_grow_a_peers_memory(
    tmp_path: Path,
) -> None:
    connections = 100  # without the cap, each made the peer buffer a 1 MiB frame: 100 MiB
    body = bytes(DEFAULT_MAX_FRAME - 2)  # one byte short of the frame its header announces
    with trio.fail_after(60):
        async with _mesh_peer(tmp_path / "home", free_port()) as (process, data_port):
            before = _peak_rss_kib(process.pid)

            async def flood() -> None:
                try:
                    stream = await trio.open_tcp_stream("127.0.0.1", data_port)
                except OSError:
                    return
                async with stream:
                    try:
                        await stream.send_all((DEFAULT_MAX_FRAME - 1).to_bytes(4, "big") + body)
                        while await stream.receive_some():  # until the peer closes the connection
                            pass
                    except (trio.BrokenResourceError, trio.ClosedResourceError):
                        pass

            async with trio.open_nursery() as nursery:
                for _ in range(connections):
                    nursery.start_soon(flood)
            grown_mib = (_peak_rss_kib(process.pid) - before) / 1024
            assert process.poll() is None
    assert grown_mib < 16, f"peak memory grew by {grown_mib:.0f} MiB"


class JsonlBridge(Peer):
    """An agent behind ``agent-comms bridge jsonl``, with the file its stderr goes to."""

    log: Path

    async def dm(self, target: str, content: str) -> None:
        """DM ``target`` (again, while this bridge's replica does not know it yet)."""
        while (result := await self.call(action="dm", target=target, content=content))["is_error"]:
            assert result["text"].endswith("(AGENT_NOT_FOUND)"), result["text"]
            await trio.sleep(0.05)

    async def wait_dm(self, content: str) -> None:
        def is_it(message: dict[str, Any]) -> bool:
            event = message.get("event") if message.get("type") == "event" else None
            return event is not None and event["type"] == "dm" and event.get("content") == content

        if not any(is_it(message) for message in self.seen):
            await self.wait_for(is_it)


@asynccontextmanager
async def _bridge(name: str, tmp_path: Path, env: dict[str, str], **options: Any) -> AsyncIterator[JsonlBridge]:
    cwd, log = tmp_path / name, tmp_path / f"{name}.log"
    cwd.mkdir(parents=True, exist_ok=True)
    with log.open("wb") as stderr:
        process = await trio.lowlevel.open_process(
            [sys.executable, "-m", "agent_comms", "bridge", "jsonl", "--name", name],
            env=env,
            cwd=cwd,
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=stderr,
            **options,
        )
    bridge = JsonlBridge(process)
    bridge.log = log
    try:
        async with trio.open_nursery() as nursery:
            nursery.start_soon(bridge.read_all)
            try:
                ready = await bridge.wait_for(lambda m: True)
                assert ready["type"] == "ready", ready
                bridge.agent_id = ready["agent"]["id"]
                yield bridge
            except EOFError:
                raise EOFError(f"the bridge's output ended; its log:\n{log.read_text(errors='replace')}") from None
            nursery.cancel_scope.cancel()
    finally:
        if process.poll() is None:
            process.kill()
        with trio.move_on_after(5):
            await process.wait()


def _raise_own_file_limit(wanted: int) -> None:
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft != resource.RLIM_INFINITY and soft < wanted:
        resource.setrlimit(
            resource.RLIMIT_NOFILE, (wanted if hard == resource.RLIM_INFINITY else min(wanted, hard), hard)
        )


async def _flood(port: int, sockets: list[trio.socket.SocketType], most: int) -> None:
    """Open idle connections to ``port`` until one is not accepted in time (the backlog is full) or ``most``."""
    for _ in range(most):
        sock = trio.socket.socket()
        sockets.append(sock)
        with trio.move_on_after(0.25) as waited:
            try:
                await sock.connect(("127.0.0.1", port))
            except OSError:
                return  # nothing listens there any more (the checks that follow say why)
        if waited.cancelled_caught:
            return


@pytest.mark.skipif(sys.platform != "linux", reason="Linux: reads /proc and needs its socket semantics")
async def test_a_bridge_limited_in_descriptors_survives_a_flood_of_idle_connections(tmp_path: Path) -> None:
    """A neighbour opens idle connections to both ports of a bridge limited to 100 descriptors until the bridge
    runs out of them: it goes on serving its agent (a DM still flows both ways) and takes new peers afterwards."""
    port = free_port()
    home = tmp_path / "home"
    env = {**os.environ, "AGENT_COMMS_HOME": str(home), "AGENT_COMMS_PORT": str(port), "AGENT_COMMS_LOAD_PLUGINS": ""}
    sockets: list[trio.socket.SocketType] = []
    with trio.fail_after(90):
        async with (
            _bridge("alice", tmp_path, env, preexec_fn=_limit_files(100)) as alice,
            _bridge("bob", tmp_path, env) as bob,
        ):
            await bob.dm("alice", "before the flood")
            await alice.wait_dm("before the flood")
            snapshot = await observe_mesh(load_or_create_key(home), port=port, registry=PeerRegistry(home))
            [alice_data_port] = [v.info.data_port for v in snapshot.peers if v.info.pid == alice.process.pid]
            _raise_own_file_limit(4096)
            try:
                # Until alice says she ran out of descriptors (she closes idle connections after the handshake
                # timeout, so on a slow machine it may take more than one round).
                while "cannot accept connections" not in alice.log.read_text():
                    assert alice.process.poll() is None, alice.log.read_text()
                    assert len(sockets) < 3000, "the flood never ran the bridge out of descriptors"
                    await _flood(port, sockets, 200)
                    await _flood(alice_data_port, sockets, 200)
                await bob.dm("alice", "during the flood")
                await alice.wait_dm("during the flood")
                await alice.dm("bob", "an answer during the flood")
                await bob.wait_dm("an answer during the flood")
            finally:
                for sock in sockets:
                    sock.close()
            assert alice.process.poll() is None
            async with _bridge("carol", tmp_path, env) as carol:  # after the flood: new peers link to alice
                await carol.dm("alice", "after the flood")
                await alice.wait_dm("after the flood")
                while True:
                    with contextlib.suppress(NoMesh):
                        snapshot = await observe_mesh(load_or_create_key(home), port=port, registry=PeerRegistry(home))
                        if len(snapshot.peers) == 3 and all(
                            v.links is not None and len(v.links) == 2 for v in snapshot.peers
                        ):
                            break
                    await trio.sleep(0.1)
    text = alice.log.read_text()
    assert text.count("cannot accept connections") <= 4, text  # once per burst, not once per failed accept
