"""The coordinator port held by another program (not a peer of the mesh): every command says so at once.

The holders are real processes on a free port: one that answers garbage, one that accepts and stays silent, one
that accepts and resets the connection at once. The commands run as processes, as a person would run them. Each is
timed against a command run just before it on a port where nothing listens (the cost of starting Python on this
machine at that moment): a holder may add at most the half second its handshake is given, where waiting for the
handshake of a peer cost 2 to 3.5 s more. On a loaded machine the smallest difference of three such pairs is what
the holder costs.
"""

from __future__ import annotations

import math
import os
import socket
import subprocess
import sys
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

import pytest
import trio

from agent_comms.mesh.keyfile import load_or_create_key
from agent_comms.mesh.port_holder import PortHolder, port_holder
from tests.test_cli_oneshot import Cli, _process, free_port

DEADLINE = 240
#: what a holder may add to a command (seconds): the half second its handshake is given, and the rest of a second
HOLDER_COST = 1.0

#: What each holder does with a connection it accepts.
HOLDERS = {
    "garbage": "c.sendall(b'HTTP/1.0 400 Bad Request\\r\\n\\r\\n'); held.append(c)",
    "silent": "held.append(c)",
    "reset": "c.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack('ii', 1, 0)); c.close()",
}

COMMANDS = [("agents",), ("rooms",), ("read", "review"), ("mesh",), ("send", "review", "hi"), ("dm", "bob", "hi")]


@asynccontextmanager
async def holding(port: int, kind: str, tmp: Path) -> AsyncIterator[trio.Process]:
    code = (
        "import socket, struct\n"
        "s = socket.socket(); s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)\n"
        f"s.bind(('127.0.0.1', {port})); s.listen(8); print('listening', flush=True)\n"
        "held = []\n"
        "while True:\n"
        f"    c, _ = s.accept(); {HOLDERS[kind]}\n"
    )
    async with _process([sys.executable, "-c", code], dict(os.environ), tmp, tmp / f"{kind}.log") as process:
        assert process.stdout is not None
        assert (await process.stdout.receive_some()).startswith(b"listening")
        yield process


async def timed(cli: Cli, *argv: str) -> tuple[subprocess.CompletedProcess[bytes], float]:
    start = time.monotonic()
    result = await cli(*argv)
    return result, time.monotonic() - start


@pytest.mark.parametrize("kind", list(HOLDERS))
@pytest.mark.parametrize("keyed", [False, True], ids=["fresh-home", "home-with-key"])
async def test_a_port_held_by_another_program_is_named_at_once(tmp_path: Path, kind: str, keyed: bool) -> None:
    port, home = free_port(), tmp_path / "home"
    if keyed:  # a mesh ran in this home before: the commands use the key and the peer registry
        load_or_create_key(home)
    env = {**os.environ, "AGENT_COMMS_HOME": str(home), "AGENT_COMMS_PORT": str(port), "AGENT_COMMS_LOAD_PLUGINS": ""}
    cli = Cli(env, tmp_path)
    # the same command where nothing listens (its own home, so that it creates nothing in the one under test)
    unheld = Cli({**env, "AGENT_COMMS_HOME": str(tmp_path / "unheld"), "AGENT_COMMS_PORT": str(free_port())}, tmp_path)
    with trio.fail_after(DEADLINE):
        async with holding(port, kind, tmp_path) as holder:
            for argv in COMMANDS:
                extra = math.inf
                for _ in range(3):  # the machine may be loaded: the smallest difference is what the holder costs
                    baseline = (await timed(unheld, "agents"))[1]
                    result, elapsed = await timed(cli, *argv)
                    extra = min(extra, elapsed - baseline)
                    if extra < HOLDER_COST:
                        break
                err = result.stderr.decode()
                assert result.returncode == 1, (argv, err)
                assert f"port {port} is held by another program, not a mesh peer of this user" in err, (argv, err)
                assert f"(pid {holder.pid}: " in err, (argv, err)
                assert "AGENT_COMMS_PORT" in err, (argv, err)
                assert "does not answer" not in err, (argv, err)
                assert "Traceback" not in err
                assert extra < HOLDER_COST, (argv, extra)
    assert keyed or not home.exists()  # looking created nothing


async def test_a_bridge_and_the_chat_warn_of_the_holder(tmp_path: Path) -> None:
    port, home = free_port(), tmp_path / "home"
    env = {**os.environ, "AGENT_COMMS_HOME": str(home), "AGENT_COMMS_PORT": str(port), "AGENT_COMMS_LOAD_PLUGINS": ""}
    with trio.fail_after(DEADLINE):
        async with holding(port, "silent", tmp_path) as holder:
            chat = await trio.run_process(
                [sys.executable, "-m", "agent_comms", "chat", "--name", "alice"],
                env=env,
                cwd=tmp_path,
                stdin=b"/quit\n",
                capture_stdout=True,
                capture_stderr=True,
                check=False,
            )
            bridge = await trio.run_process(
                [sys.executable, "-m", "agent_comms", "bridge", "jsonl", "--name", "bob"],
                env=env,
                cwd=tmp_path,
                stdin=b"",
                capture_stdout=True,
                capture_stderr=True,
                check=False,
            )
    for result in (chat, bridge):
        err = result.stderr.decode()
        assert f"port {port} is held by another program, not a mesh peer of this user (pid {holder.pid}: " in err
        assert "AGENT_COMMS_PORT" in err


def test_the_holder_is_unknown_where_the_socket_table_says_too_little(tmp_path: Path) -> None:
    """``/proc`` as another system may show it: no table, a table without a listener, a listener without a process."""
    assert port_holder(4242, proc=tmp_path) is None
    (tmp_path / "net").mkdir()
    header = "  sl  local_address rem_address   st tx_queue rx_queue tr tm->when retrnsmt   uid  timeout inode\n"
    listener = (
        f"   0: 0100007F:1092 00000000:0000 0A 00000000:00000000 00:00000000 00000000  {os.getuid()}  0 999999999\n"
    )
    (tmp_path / "net" / "tcp").write_text(header + "garbage line\n")
    assert port_holder(4242, proc=tmp_path) is None
    (tmp_path / "net" / "tcp").write_text(header + listener)
    holder = port_holder(4242, proc=tmp_path)
    assert holder == PortHolder(os.getuid())
    assert holder.describe() == "unknown"


@pytest.mark.skipif(not socket.has_ipv6, reason="no IPv6 on this system")
@pytest.mark.parametrize("keyed", [False, True], ids=["fresh-home", "home-with-key"])
async def test_an_ipv6_only_listener_on_the_port_is_not_a_holder_of_127_0_0_1(tmp_path: Path, keyed: bool) -> None:
    """A program listening on [::]:PORT with IPV6_V6ONLY does not hold 127.0.0.1:PORT: the commands say no mesh
    runs, not that another program holds the port."""
    port, home = free_port(), tmp_path / "home"
    if keyed:
        load_or_create_key(home)
    env = {**os.environ, "AGENT_COMMS_HOME": str(home), "AGENT_COMMS_PORT": str(port), "AGENT_COMMS_LOAD_PLUGINS": ""}
    cli = Cli(env, tmp_path)
    with socket.socket(socket.AF_INET6, socket.SOCK_STREAM) as listener:
        listener.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
        try:
            listener.bind(("::", port))
        except OSError as exc:  # pragma: no cover - IPv6 disabled in the kernel
            pytest.skip(f"cannot listen on [::]: {exc}")
        listener.listen(8)
        assert port_holder(port) is None
        with trio.fail_after(DEADLINE):
            for argv in (("agents",), ("mesh",)):
                result = await cli(*argv)
                err = result.stderr.decode()
                assert result.returncode == 1, (argv, err)
                assert "no mesh is running" in err, (argv, err)
                assert "held by another program" not in err, (argv, err)


def test_the_user_and_process_of_a_holder_come_from_one_socket(tmp_path: Path) -> None:
    """Two listeners reach 127.0.0.1:PORT (one on 127.0.0.1, one on 0.0.0.0, of another user): the holder named is
    the one on 127.0.0.1, with its own user and process."""
    (tmp_path / "net").mkdir()
    header = "  sl  local_address rem_address   st tx_queue rx_queue tr tm->when retrnsmt   uid  timeout inode\n"
    other_uid = os.getuid() + 1
    tcp = (
        f"   0: 00000000:1092 00000000:0000 0A 00000000:00000000 00:00000000 00000000  {other_uid}  0 111\n"
        f"   1: 0100007F:1092 00000000:0000 0A 00000000:00000000 00:00000000 00000000  {os.getuid()}  0 222\n"
    )
    (tmp_path / "net" / "tcp").write_text(header + tcp)
    for pid, inode in ((41, 111), (42, 222)):
        (tmp_path / str(pid) / "fd").mkdir(parents=True)
        (tmp_path / str(pid) / "fd" / "3").symlink_to(f"socket:[{inode}]")
        (tmp_path / str(pid) / "cmdline").write_bytes(f"holder\0{inode}\0".encode())
    assert port_holder(4242, proc=tmp_path) == PortHolder(os.getuid(), 42, "holder 222")


async def test_a_peer_that_looks_foreign_is_still_asked(tmp_path: Path) -> None:
    """A peer whose registry entry names another pid (as in another pid namespace) looks like another program from
    the socket table, yet answers the handshake: the observer uses its answer, and names no foreign holder."""
    from agent_comms.mesh.node import open_node
    from agent_comms.mesh.observe import observe_mesh
    from agent_comms.mesh.port_holder import foreign_holder
    from agent_comms.mesh.registry import PeerRegistry
    from agent_comms.protocol.peer import PeerConfig

    port, home = free_port(), tmp_path / "home"
    key = load_or_create_key(home)
    registry = PeerRegistry(home)
    with trio.fail_after(DEADLINE):
        async with open_node(
            key, port=port, registry=registry, config=PeerConfig(coordinator_port=port), pid=os.getppid()
        ) as node:
            await node.wait_synced()
            assert foreign_holder(port, registry) is not None  # its socket is this process's, not the registered one
            snapshot = await observe_mesh(key, port=port, registry=registry)
            assert snapshot.port_problem is None, snapshot.port_problem
            assert snapshot.coordinator is not None
            assert snapshot.coordinator.peer_id == node.peer_id
