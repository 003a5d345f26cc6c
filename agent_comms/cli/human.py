"""The person at the keyboard as an agent of the mesh: harness ``human``, identity like any agent's.

Shared by the commands that act as the user (``send``, ``dm``, ``chat``): the agent's id is stable per working
directory (:mod:`agent_comms.identity`), so ``agent-comms send`` and ``agent-comms chat`` started in the same
directory are the same person, and its name is the one it had last time unless ``--name`` says otherwise.
:func:`open_human` returns only once the agent's peer is linked to the mesh and has its state, so what the
command checks (does the room exist? am I a member?) is what the mesh knows.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Final

import trio

from agent_comms.agent import Agent, open_agent
from agent_comms.mesh.node import MeshNode
from agent_comms.protocol.peer import Peer

__all__ = ["HUMAN_HARNESS", "NotJoined", "open_human", "wait_acknowledged", "wait_joined"]

#: The harness name of the human's agent.
HUMAN_HARNESS: Final = "human"


class NotJoined(Exception):
    """The agent's peer did not link up with the mesh in time (no mesh, or it went away meanwhile)."""


@asynccontextmanager
async def open_human(
    name: str | None = None, *, join_within: float = 10.0, tags: tuple[str, ...] = ()
) -> AsyncIterator[Agent]:
    """Put the user on the mesh as an agent of harness ``human`` (``name``: the name to register under, default
    the name it had last time; ``tags``: its tags, :data:`~agent_comms.deliveries.ONE_SHOT_TAG` for a one-shot
    command) and wait until it is linked and synced (:class:`NotJoined` after ``join_within``).

    Leaving the block takes the agent offline; messages sent to it meanwhile wait for its next start.
    """
    async with open_agent(HUMAN_HARNESS, name, tags=tags) as agent:
        node = agent.store.node
        with trio.move_on_after(join_within) as scope:
            await wait_joined(node)
        if scope.cancelled_caught:
            port = node.peer.config.coordinator_port
            raise NotJoined(f"could not link up with the mesh on port {port} within {join_within:g} s")
        yield agent


def _linked(peer: Peer) -> bool:
    """Linked to the mesh: a data link to at least one peer, and to every peer known so far.

    A coordinator is not required: while the one holding the port is stopped, peers still meet through the
    registry. One synced peer is enough to know what the mesh knows, since the replicas converge.
    """
    return bool(peer.data_links) and all(peer_id in peer.data_links for peer_id in peer.known)


async def wait_joined(node: MeshNode) -> None:
    """Wait until ``node`` is linked to every peer of the mesh it knows of and one of them has synced it."""
    await node.wait_for(lambda: _linked(node.peer))
    await wait_acknowledged(node, all_within=1.0)


async def wait_acknowledged(node: MeshNode, *, all_within: float = 1.0) -> list[str]:
    """Wait until linked peers hold everything ``node`` made so far; the ids of those that confirmed it.

    Waits up to ``all_within`` seconds for every linked peer, then for at least one (bound it with
    ``trio.move_on_after``). One is enough: anti-entropy brings the rest to every other peer.
    """
    peer = node.peer
    marks = node.request_sync()
    with trio.move_on_after(all_within):
        await node.wait_for(lambda: len(peer.synced_with(marks)) == len(marks))
    await node.wait_for(lambda: bool(peer.synced_with(marks)) or not marks)
    return peer.synced_with(marks)
