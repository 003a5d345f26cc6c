"""Afternoon: a neighbour floods the mesh's ports with idle connections.

Another user of the machine (or a broken program) opens hundreds of idle TCP connections to a bridge's data port
(data ports are visible in ``/proc/net/tcp``) and to the coordinator port, while the bridges run with 256 file
descriptors (macOS's default soft limit, here the hard limit too). The bridges survive, and DMs and room messages
still flow, during the flood and after it; a new agent still joins through the coordinator port.
"""

from __future__ import annotations

from pathlib import Path

import trio
from life_helpers import Agent, Day, open_day, raise_file_limit, scale, settle_in, talk, until

FILES = 256


class Flood:
    """Idle connections to some ports: each one watched, to count those the bridge closed."""

    def __init__(self) -> None:
        self.sockets: list[trio.socket.SocketType] = []
        self.closed = 0
        self.refused = 0

    async def open(self, nursery: trio.Nursery, port: int, count: int) -> None:
        for _ in range(count):
            sock = trio.socket.socket()
            try:
                await sock.connect(("127.0.0.1", port))
            except OSError:
                sock.close()
                self.refused += 1
                continue
            self.sockets.append(sock)
            nursery.start_soon(self._watch, sock)

    async def _watch(self, sock: trio.socket.SocketType) -> None:
        try:
            while await sock.recv(4096):
                pass  # a handshake nonce, say: the flood never answers it
        except (OSError, trio.ClosedResourceError):
            pass
        self.closed += 1

    def close(self) -> None:
        for sock in self.sockets:
            sock.close()


async def test_a_neighbours_connection_flood(tmp_path: Path) -> None:
    count = scale(300, 1000)
    raise_file_limit(2 * count)
    async with open_day(tmp_path, seconds=scale(120, 600)) as day:
        async with day.step(f"alice (the coordinator) and bob start with {FILES} file descriptors, in #ops"):
            alice = await day.agent("alice", "api", nofile=FILES)
            await alice.ok(action="create_room", room="ops")
            bob = await day.agent("bob", "web", nofile=FILES)
            await settle_in(bob, "ops", alice)
            await talk([alice, bob], "before the flood", "ops")
        async with day.step("agent-comms mesh names alice's process as the coordinator and her data port"):
            mesh = await day.mesh()
            assert mesh["coordinator"]["pid"] == alice.pid, f"the coordinator is {mesh['coordinator']}"
            [peer] = [p for p in mesh["peers"] if p["pid"] == alice.pid]
            data_port = int(peer["data_port"])
        flood = Flood()
        async with trio.open_nursery() as watchers:
            async with day.step(f"{count} idle connections to alice's data port and {count} to the coordinator port"):
                await flood.open(watchers, data_port, count)
                await flood.open(watchers, day.port, count)
                await until(lambda: _met(flood, alice, bob))
                _alive(alice, bob)
            async with day.step("during the flood, alice and bob still talk"):
                await talk([alice, bob], "during the flood", "ops")
                _alive(alice, bob)
            watchers.cancel_scope.cancel()
        flood.close()
        async with day.step("after the flood: the bridges live, talk, and a new agent joins through the port"):
            _alive(alice, bob)
            await talk([alice, bob], "after the flood", "ops")
            carol = await day.agent("carol", "docs", nofile=FILES)
            await settle_in(carol, "ops", alice, bob)
            await talk([alice, bob, carol], "with carol", "ops")
        await _end(day, alice, bob, carol)


async def _met(flood: Flood, *agents: Agent) -> bool:
    """The bridges met the flood: they dropped some of its connections, or one of them ended."""
    return flood.closed > 0 or any(agent.process.poll() is not None for agent in agents)


def _alive(*agents: Agent) -> None:
    for agent in agents:
        status = agent.process.poll()
        assert status is None, f"{agent.name}'s bridge ended (status {status}) under the flood"


async def _end(day: Day, *agents: Agent) -> None:
    async with day.step("the sessions end, each with status 0"):
        for agent in agents:
            await day.leave(agent)
