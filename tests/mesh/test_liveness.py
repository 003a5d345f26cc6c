"""Process liveness: pid plus start time, the pidfd watch of a hosted agent's process, and the periodic probe."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Callable

import pytest
import trio

from agent_comms.liveness import process_alive, process_start_time
from agent_comms.mesh.network import MemoryNetwork
from agent_comms.mesh.node import MeshNode, open_node
from agent_comms.protocol.ops import AgentUpsert
from agent_comms.protocol.peer import PeerConfig

PORT = 40001
KEY = bytes(32)


def test_this_process_is_alive_with_its_own_start_time() -> None:
    start = process_start_time(os.getpid())
    assert start > 0
    assert process_alive(os.getpid(), start)
    assert process_alive(os.getpid())  # start time unknown: the pid alone decides


def test_a_reused_pid_is_not_the_old_process() -> None:
    start = process_start_time(os.getpid())
    assert not process_alive(os.getpid(), start - 100.0)


def test_an_exited_process_is_not_alive() -> None:
    child = subprocess.Popen([sys.executable, "-c", "pass"])
    start = process_start_time(child.pid)
    child.wait()
    assert not process_alive(child.pid, start)
    assert not process_alive(0)
    assert not process_alive(-5)


def test_a_process_of_another_user_counts_as_alive() -> None:
    if os.getuid() == 0:
        pytest.skip("root may signal every process, so EPERM cannot happen")
    assert process_alive(1)  # init belongs to root; signalling it gives EPERM


def test_eperm_from_the_signal_check_means_alive(monkeypatch: pytest.MonkeyPatch) -> None:
    """What a process of another user looks like to a non-root peer (simulated, since CI runs as root)."""

    def refuse(pid: int, signum: int) -> None:
        raise PermissionError(1, "Operation not permitted")

    monkeypatch.setattr(os, "kill", refuse)
    assert process_alive(os.getpid(), process_start_time(os.getpid()))


async def _wait(condition: Callable[[], bool]) -> None:
    while not condition():  # noqa: ASYNC110 - the condition spans two nodes
        await trio.sleep(0.01)


async def _pair(nursery: trio.Nursery, config: PeerConfig) -> tuple[MeshNode, MeshNode]:
    network = MemoryNetwork()
    nodes: list[MeshNode] = []

    async def run(task_status: trio.TaskStatus[MeshNode]) -> None:
        async with open_node(KEY, port=PORT, network=network, config=config) as node:
            task_status.started(node)
            await trio.sleep_forever()

    for _ in range(2):
        nodes.append(await nursery.start(run))
    a, b = nodes
    await _wait(lambda: b.peer_id in a.peer.data_links and a.peer_id in b.peer.data_links)
    return a, b


async def test_hosted_agent_goes_offline_the_moment_its_process_exits() -> None:
    child = await trio.lowlevel.open_process([sys.executable, "-c", "import time; time.sleep(60)"])
    record = AgentUpsert("harnessed", "", 0, 0, "harnessed", "test", "/w", child.pid, process_start_time(child.pid))
    async with trio.open_nursery() as nursery:
        a, b = await _pair(nursery, PeerConfig(coordinator_port=PORT, probe_interval=3600))
        a.host_agent(record)
        await _wait(lambda: "harnessed" in b.peer.replica.state.agents)
        assert b.peer.replica.state.agents["harnessed"].online
        child.kill()
        await child.wait()
        killed = trio.current_time()
        with trio.fail_after(2):
            await _wait(lambda: not b.peer.replica.state.agents["harnessed"].online)
        assert trio.current_time() - killed < 1.0  # the pidfd, not the hour-long probe
        assert "harnessed" not in a.peer.hosted
        nursery.cancel_scope.cancel()


async def test_probe_marks_agents_of_vanished_processes_offline() -> None:
    child = await trio.lowlevel.open_process([sys.executable, "-c", "import time; time.sleep(0.2)"])
    start = process_start_time(child.pid)
    await child.wait()
    async with trio.open_nursery() as nursery:
        a, b = await _pair(nursery, PeerConfig(coordinator_port=PORT, probe_interval=0.2))
        # A record naming a process that no longer exists, as left behind by a host that died with it.
        a.peer.hosted.clear()
        a.submit(AgentUpsert("orphan", a.peer_id, 5, 0, "orphan", "test", "/w", child.pid, start))
        await _wait(lambda: "orphan" in b.peer.replica.state.agents)
        with trio.fail_after(2):
            await _wait(lambda: not b.peer.replica.state.agents["orphan"].online)
        nursery.cancel_scope.cancel()
