"""Test helpers for bridge authors: a whole mesh in memory, no sockets.

::

    from agent_comms.testing import open_in_memory_mesh

    async def test_my_bridge_relays_a_dm():
        async with open_in_memory_mesh() as mesh:
            alice = await mesh.agent("my-harness", name="alice")
            bob = await mesh.agent("other", name="bob")
            await alice.call({"action": "dm", "target": "bob", "content": "hi"})
            await mesh.settle()
            assert [e.content for e in bob.drain()] == ["hi"]

Every agent gets a peer of its own, linked to the others over an in-memory network by the real protocol and
runtime, so what passes here passes over TCP. With pytest, ``pytest_plugins = ["agent_comms.testing.fixtures"]``
in a ``conftest.py`` provides the ``comms_mesh`` fixture (pytest-trio).
"""

from __future__ import annotations

import random
import re
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager

import trio

from agent_comms.agent import Agent
from agent_comms.identity import base_id
from agent_comms.mesh.network import MemoryNetwork
from agent_comms.mesh.node import MeshNode, open_node
from agent_comms.protocol.peer import PeerConfig
from agent_comms.store import MeshStore
from agent_comms.tool import CommsTool

__all__ = ["InMemoryMesh", "open_in_memory_mesh", "said_receipt"]

_PORT = 19999  # a port number on the in-memory network only; nothing real is bound


class InMemoryMesh:
    """Agents, each on its own peer, on an in-memory network inside the current Trio run."""

    def __init__(
        self, nursery: trio.Nursery, *, seed: int = 0, history_limit: int = 1000, presence_quiet_s: float = 0.1
    ) -> None:
        self.history_limit = history_limit
        #: the stores' quiet window for status changes (shorter than a real bridge's, so that tests run quickly)
        self.presence_quiet_s = presence_quiet_s
        self.stores: list[MeshStore] = []
        self.network = MemoryNetwork()
        self.nodes: list[MeshNode] = []
        self._nursery = nursery
        self._rng = random.Random(seed)
        self._scopes: dict[str, trio.CancelScope] = {}
        self._ids: set[str] = set()
        self._key = bytes(self._rng.getrandbits(8) for _ in range(32))

    async def node(self) -> tuple[MeshNode, trio.CancelScope]:
        """Start one more peer (without an agent)."""

        async def run(task_status: trio.TaskStatus[tuple[MeshNode, trio.CancelScope]]) -> None:
            with trio.CancelScope() as scope:
                async with open_node(
                    self._key,
                    port=_PORT,
                    network=self.network,
                    config=PeerConfig(coordinator_port=_PORT, history_limit=self.history_limit),
                    rng=random.Random(self._rng.getrandbits(64)),
                    probe_processes=False,
                ) as node:
                    task_status.started((node, scope))
                    await trio.sleep_forever()

        node, scope = await self._nursery.start(run)
        self.nodes.append(node)
        return node, scope

    async def agent(
        self,
        harness: str = "test",
        name: str | None = None,
        *,
        cwd: str = "/work",
        visibility: str = "visible",
        tags: tuple[str, ...] = (),
        agent_id: str | None = None,
    ) -> Agent:
        """A registered agent on a new peer. Reusing ``agent_id`` models a bridge restarting in the same slot."""
        node, scope = await self.node()
        if agent_id is None:
            agent_id = base_id(harness, cwd)
            slot = 1
            while agent_id in self._ids:
                slot += 1
                agent_id = f"{base_id(harness, cwd)}-{slot}"
        self._ids.add(agent_id)
        store = MeshStore(node, presence_quiet_s=self.presence_quiet_s)
        self.stores.append(store)
        tool = CommsTool(store, agent_id=agent_id, harness=harness, cwd=cwd, pid=0)
        await self.settle()
        result = tool.call(
            {"action": "register", "name": name or agent_id, "visibility": visibility, "tags": list(tags)}
        )
        if result.is_error:
            raise AssertionError(result.text)
        self._scopes[agent_id] = scope
        await self.settle()
        return Agent(tool, on_close=self._closer(agent_id))

    def _closer(self, agent_id: str) -> Callable[[], None]:
        def close() -> None:
            self._ids.discard(agent_id)

        return close

    def crash(self, agent: Agent) -> None:
        """Kill the agent's peer abruptly (no goodbye), as a SIGKILL of its bridge would."""
        node = agent.store.node
        node.abort()
        self._scopes.pop(agent.id).cancel()
        self.nodes.remove(node)
        self._ids.discard(agent.id)

    async def stop(self, agent: Agent) -> None:
        """Stop the agent's bridge gracefully: it goes offline at once."""
        node = agent.store.node
        agent.close()
        await node.aclose()
        self._scopes.pop(agent.id).cancel()
        self.nodes.remove(node)

    async def settle(self) -> None:
        """Wait until every peer is linked to every other, all replicas are equal, no status change waits out
        its quiet window and no progress marker waits for its flush."""
        with trio.fail_after(10):
            while not self._settled():  # noqa: ASYNC110 - a condition across all the peers
                await trio.sleep(0.001)

    def _settled(self) -> bool:
        nodes = self.nodes
        ids = {n.peer_id for n in nodes}
        if any(set(n.peer.data_links) != ids - {n.peer_id} for n in nodes):
            return False
        if any(store.quieting or store.marking for store in self.stores if store.node in nodes):
            return False
        return len({n.state.digest() for n in nodes}) <= 1


@asynccontextmanager
async def open_in_memory_mesh(
    *, seed: int = 0, history_limit: int = 1000, presence_quiet_s: float = 0.1
) -> AsyncIterator[InMemoryMesh]:
    """An in-memory mesh for the duration of the block (``history_limit``: messages kept per conversation;
    ``presence_quiet_s``: how long a status change waits before it is told, unless changed back meanwhile)."""
    async with trio.open_nursery() as nursery:
        mesh = InMemoryMesh(nursery, seed=seed, history_limit=history_limit, presence_quiet_s=presence_quiet_s)
        try:
            yield mesh
        finally:
            nursery.cancel_scope.cancel()


def said_receipt(text: str, message_id: str, status: str) -> bool:
    """Whether ``text`` (what a model was shown) says the message reached ``status`` for some recipient: the
    message's receipt line (``your message <id> "...": read by bob; delivered to carol``) names it ``read``, or
    ``delivered`` (a message read is delivered too)."""
    wanted = "read by" if status == "read" else "(?:read by|delivered to)"
    return re.search(rf"^your message {re.escape(message_id)} .*?{wanted}", text, re.MULTILINE) is not None
