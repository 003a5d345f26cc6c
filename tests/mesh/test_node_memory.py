"""The Trio runtime over an in-memory network, under trio's autojump clock (virtual time).

Testing policy: nodes run as tasks of one trio.run on a MemoryNetwork; "crash" means the node's tasks are
cancelled without a goodbye (its streams close, its ports free), as a SIGKILL would do. Every test has a deadline
(``fail_after``) and asserts virtual times where timing is the point.
"""

from __future__ import annotations

import random
from collections.abc import Callable

import pytest
import trio
import trio.testing

from agent_comms.mesh.network import MemoryNetwork
from agent_comms.mesh.node import MeshNode, open_node
from agent_comms.protocol.changes import AgentChanged
from agent_comms.protocol.ops import AgentUpsert, RoomCreate, RoomMessage
from agent_comms.protocol.peer import PeerConfig

PORT = 40000
KEY = bytes(32)


@pytest.fixture
def autojump_clock() -> trio.testing.MockClock:
    return trio.testing.MockClock(autojump_threshold=0)


class Cluster:
    def __init__(self, nursery: trio.Nursery, network: MemoryNetwork) -> None:
        self.nursery = nursery
        self.network = network
        self.nodes: dict[str, tuple[MeshNode, trio.CancelScope]] = {}
        self.rng = random.Random(3)

    async def spawn(self, name: str, *, key: bytes = KEY) -> MeshNode:
        async def run(task_status: trio.TaskStatus[tuple[MeshNode, trio.CancelScope]]) -> None:
            with trio.CancelScope() as scope:
                async with open_node(
                    key,
                    port=PORT,
                    network=self.network.host(name),
                    config=PeerConfig(coordinator_port=PORT),
                    rng=random.Random(self.rng.getrandbits(64)),
                ) as node:
                    task_status.started((node, scope))
                    await trio.sleep_forever()

        node, scope = await self.nursery.start(run)
        self.nodes[name] = (node, scope)
        await trio.sleep(0.001)  # distinct start times rank the peers
        return node

    def node(self, name: str) -> MeshNode:
        return self.nodes[name][0]

    def crash(self, name: str) -> None:
        node, scope = self.nodes.pop(name)
        node.abort()
        scope.cancel()

    def stop_gracefully(self, name: str) -> None:
        _node, scope = self.nodes.pop(name)
        scope.cancel()

    def live(self) -> list[MeshNode]:
        return [node for node, _scope in self.nodes.values()]

    def one_mesh(self) -> bool:
        nodes = self.live()
        ids = {n.peer_id for n in nodes}
        coordinators = [n for n in nodes if n.peer.is_coordinator]
        return (
            len(coordinators) == 1
            and all(set(n.peer.data_links) == ids - {n.peer_id} for n in nodes)
            and all(n.peer.coordinator_id == coordinators[0].peer_id for n in nodes)
        )

    async def until(self, condition: Callable[[], bool]) -> None:
        """Poll a condition spanning several nodes (virtual time, so polling costs nothing real)."""
        while not condition():  # noqa: ASYNC110
            await trio.sleep(0.001)


def agent(agent_id: str) -> AgentUpsert:
    return AgentUpsert(agent_id, "", 0, 0, agent_id, "test", "/w", 0, 0.0)  # pid 0: no process to watch


async def test_peers_form_one_mesh_and_replicate(autojump_clock: trio.testing.MockClock) -> None:
    async with trio.open_nursery() as nursery:
        cluster = Cluster(nursery, MemoryNetwork())
        for name in "abcd":
            await cluster.spawn(name)
        with trio.fail_after(1):
            await cluster.until(cluster.one_mesh)
        a, d = cluster.node("a"), cluster.node("d")
        assert a.peer.is_coordinator
        claimed = d.host_agent(agent("reviewer"))
        room_id = d.peer.replica.next_op_id()
        d.submit(RoomCreate(room_id, "lobby", "public", "", "reviewer", claimed.incarnation))
        d.submit(RoomMessage(room_id, "reviewer", claimed.incarnation, "hello"))
        with trio.fail_after(1):
            await cluster.until(lambda: all(len(n.peer.replica.state.messages) == 1 for n in cluster.live()))
        assert len({n.peer.replica.state.digest() for n in cluster.live()}) == 1
        nursery.cancel_scope.cancel()


async def test_changes_reach_subscribers(autojump_clock: trio.testing.MockClock) -> None:
    async with trio.open_nursery() as nursery:
        cluster = Cluster(nursery, MemoryNetwork())
        a = await cluster.spawn("a")
        b = await cluster.spawn("b")
        await cluster.until(cluster.one_mesh)
        changes = a.subscribe()
        b.host_agent(agent("writer"))
        with trio.fail_after(1):
            change = await changes.receive()
        assert isinstance(change, AgentChanged)
        assert change.agent_id == "writer"
        assert change.online
        nursery.cancel_scope.cancel()


async def test_a_subscriber_that_closed_its_channel_is_dropped(autojump_clock: trio.testing.MockClock) -> None:
    async with trio.open_nursery() as nursery:
        cluster = Cluster(nursery, MemoryNetwork())
        a = await cluster.spawn("a")
        b = await cluster.spawn("b")
        await cluster.until(cluster.one_mesh)
        gone = a.subscribe()
        kept = a.subscribe()
        await gone.aclose()
        b.host_agent(agent("writer"))
        with trio.fail_after(1):
            change = await kept.receive()  # the node kept running and still feeds the other subscriber
        assert isinstance(change, AgentChanged)
        assert len(a._subscribers) == 1
        nursery.cancel_scope.cancel()


async def test_crash_of_the_coordinator_fails_over_and_newcomers_join_the_same_mesh(
    autojump_clock: trio.testing.MockClock,
) -> None:
    async with trio.open_nursery() as nursery:
        cluster = Cluster(nursery, MemoryNetwork())
        for name in "abcdefgh":
            await cluster.spawn(name)
        await cluster.until(cluster.one_mesh)
        cluster.node("a").host_agent(agent("on-a"))
        await cluster.until(lambda: all("on-a" in n.peer.replica.state.agents for n in cluster.live()))
        crashed_at = trio.current_time()
        cluster.crash("a")
        with trio.fail_after(1):
            await cluster.until(cluster.one_mesh)
        failover = trio.current_time() - crashed_at
        assert cluster.node("b").peer.is_coordinator  # the longest-running survivor
        assert failover < 0.05
        with trio.fail_after(1):
            await cluster.until(lambda: all(not n.peer.replica.state.agents["on-a"].online for n in cluster.live()))
        await cluster.spawn("late")
        with trio.fail_after(1):
            await cluster.until(cluster.one_mesh)
        nursery.cancel_scope.cancel()


async def test_graceful_shutdown_hands_over_without_losing_messages(autojump_clock: trio.testing.MockClock) -> None:
    async with trio.open_nursery() as nursery:
        cluster = Cluster(nursery, MemoryNetwork())
        for name in "abc":
            await cluster.spawn(name)
        await cluster.until(cluster.one_mesh)
        b, c = cluster.node("b"), cluster.node("c")
        claim = b.host_agent(agent("talker"))
        cluster.stop_gracefully("a")
        for i in range(100):  # messages in flight between survivors during the handover
            b.submit(RoomMessage("r", "talker", claim.incarnation, f"m{i}"))
        with trio.fail_after(2):
            await cluster.until(cluster.one_mesh)
            await cluster.until(lambda: len(c.peer.replica.state.messages) == 100)
        assert b.peer.is_coordinator
        nursery.cancel_scope.cancel()


async def test_a_node_with_a_foreign_key_is_kept_out(autojump_clock: trio.testing.MockClock) -> None:
    async with trio.open_nursery() as nursery:
        cluster = Cluster(nursery, MemoryNetwork())
        await cluster.spawn("a")
        await cluster.spawn("b")
        intruder = await cluster.spawn("intruder", key=b"\x07" * 32)
        await trio.sleep(1.0)
        assert not intruder.peer.data_links
        assert intruder.peer_id not in cluster.node("a").peer.known
        del cluster.nodes["intruder"]
        assert cluster.one_mesh()
        nursery.cancel_scope.cancel()


async def test_a_hung_peer_is_found_out_by_heartbeats_and_rejoins_when_it_resumes(
    autojump_clock: trio.testing.MockClock,
) -> None:
    """A peer whose sockets stop moving (as under SIGSTOP): the others close their links to it after the link
    timeout (virtual time) and mark its agent offline; once it resumes, it rejoins and refutes the verdict."""
    async with trio.open_nursery() as nursery:
        network = MemoryNetwork()
        cluster = Cluster(nursery, network)
        for name in "abc":
            await cluster.spawn(name)
        await cluster.until(cluster.one_mesh)
        c = cluster.node("c")
        c.host_agent(agent("on-c"))
        a = cluster.node("a")
        await cluster.until(lambda: "on-c" in a.peer.replica.state.agents)
        config = a.peer.config
        frozen_at = trio.current_time()
        network.freeze("c")
        with trio.fail_after(10):
            await cluster.until(lambda: not a.peer.replica.state.agents["on-c"].online)
        detected = trio.current_time() - frozen_at
        # Nothing heard for link_timeout, noticed at the next sweep (every half heartbeat interval).
        assert config.link_timeout <= detected <= config.link_timeout + config.heartbeat_interval / 2 + 0.01
        assert c.peer_id not in a.peer.data_links
        network.thaw("c")
        with trio.fail_after(5):
            await cluster.until(cluster.one_mesh)
            await cluster.until(lambda: a.peer.replica.state.agents["on-c"].online)
        nursery.cancel_scope.cancel()
