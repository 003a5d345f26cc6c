"""A bridge that crashes and restarts catches up without showing its model what it had already read.

A real bridge registers its agent as soon as its process starts, before anti-entropy has brought it the mesh's
state; everything it then catches up on arrives as new operations. Messages it had read before the crash arrive
together with its own ``read`` receipts and must not be shown again; messages it never read must be.
"""

from __future__ import annotations

from agent_comms.agent import Agent
from agent_comms.store import MeshStore
from agent_comms.testing import InMemoryMesh, open_in_memory_mesh
from agent_comms.tool import CommsTool


async def ok(agent: Agent, /, **params: object) -> None:
    result = await agent.call(params)
    assert not result.is_error, result.text


async def restart_before_sync(mesh: InMemoryMesh, agent_id: str) -> Agent:
    """The bridge of ``agent_id`` comes back on a fresh peer and registers before it has synced anything."""
    node, scope = await mesh.node()
    tool = CommsTool(MeshStore(node), agent_id=agent_id, harness="h2", cwd="/work", pid=0)
    result = tool.call({"action": "register", "name": "bob"})
    assert not result.is_error, result.text
    mesh._scopes[agent_id] = scope
    return Agent(tool)


async def test_a_restarted_bridge_shows_only_what_it_had_not_read() -> None:
    async with open_in_memory_mesh() as mesh:
        alice = await mesh.agent("h1", name="alice")
        bob = await mesh.agent("h2", name="bob")
        await ok(alice, action="create_room", room="lobby")
        await mesh.settle()
        await ok(bob, action="join_room", room="lobby")
        await mesh.settle()
        for n in range(30):
            await ok(alice, action="dm", target=bob.id, content=f"read dm {n}")
            await ok(alice, action="send", target="lobby", content=f"read post {n}")
        await mesh.settle()
        assert len([e for e in bob.drain() if e.type in ("dm", "room_message")]) == 60
        await mesh.settle()  # the read receipts reach alice's peer
        bob_id = bob.id
        mesh.crash(bob)
        await ok(alice, action="dm", target=bob_id, content="unread dm")
        await ok(alice, action="send", target="lobby", content="unread post")
        await mesh.settle()
        back = await restart_before_sync(mesh, bob_id)
        await mesh.settle()
        shown = [e.content for e in back.drain() if e.type in ("dm", "room_message")]
        assert sorted(shown) == ["unread dm", "unread post"]
