"""Operations made in one scheduler pass leave in one ``Ops`` frame per link, in order, behind nothing they follow.

Two nodes over real TCP on 127.0.0.1 (the first operation of a pass on an idle link is written straight to the
socket, the rest of the pass follows in one frame) and over the in-memory network (no socket: the whole pass in one
frame). The receiving node's frames are observed where it hands them to its peer.
"""

from __future__ import annotations

import socket
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager

import trio

from agent_comms.mesh.node import MeshNode, open_node
from agent_comms.mesh.owner_events import FramesRead, OwnerEvent
from agent_comms.protocol.ops import AgentUpsert, DirectMessage, Op
from agent_comms.protocol.peer import PeerConfig
from agent_comms.protocol.wire import Frame, Ops, SyncRequest
from agent_comms.testing import open_in_memory_mesh

DEADLINE = 60
KEY = bytes(range(32))


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
    return port


def _agent(name: str) -> AgentUpsert:
    return AgentUpsert(name, "", 0, 0, name, "test", "/test", 0, 0.0)


def _watch_ops_frames(node: MeshNode) -> list[tuple[Op, ...]]:
    """The ``Ops`` frames ``node`` receives from now on (each as its operations), in order."""
    frames: list[tuple[Op, ...]] = []
    handle: Callable[[OwnerEvent], None] = node._handle

    def observed(event: OwnerEvent) -> None:
        if isinstance(event, FramesRead):
            frames.extend(frame.ops for frame in event.frames if isinstance(frame, Ops))
        handle(event)

    node._handle = observed  # type: ignore[method-assign]
    return frames


@asynccontextmanager
async def _two_tcp_nodes() -> AsyncIterator[tuple[MeshNode, MeshNode]]:
    port = _free_port()
    # sync requests answered at once (not coalesced), so that an answer follows the request's place on the link
    config = PeerConfig(coordinator_port=port, sync_answer_interval=0.0)
    async with trio.open_nursery() as nursery:

        async def run(task_status: trio.TaskStatus[MeshNode]) -> None:
            async with open_node(KEY, port=port, config=config, probe_processes=False) as node:
                task_status.started(node)
                await trio.sleep_forever()

        a: MeshNode = await nursery.start(run)
        b: MeshNode = await nursery.start(run)
        await a.wait_for(lambda: b.peer_id in a.peer.data_links and a.peer_id in b.peer.data_links)
        await b.wait_for(lambda: a.peer_id in b.peer.data_links)
        yield a, b
        nursery.cancel_scope.cancel()


async def _send_in_one_pass(a: MeshNode, b: MeshNode, count: int) -> tuple[list[tuple[Op, ...]], list[Op]]:
    alice = a.host_agent(_agent("alice"))
    b.host_agent(_agent("bob"))
    await b.wait_for(lambda: "alice" in b.state.agents)
    await a.wait_for(lambda: "bob" in a.state.agents)
    frames = _watch_ops_frames(b)
    made = [a.submit(DirectMessage("alice", alice.incarnation, "bob", f"m{i}")) for i in range(count)]
    await b.wait_for(lambda: all(op.seq in b.peer.replica.seen.get(a.peer_id, ()) for op in made))
    return frames, made


async def test_a_pass_of_operations_leaves_in_at_most_two_frames_over_tcp() -> None:
    with trio.fail_after(DEADLINE):
        async with _two_tcp_nodes() as (a, b):
            frames, made = await _send_in_one_pass(a, b, 200)
            received = [op for frame in frames for op in frame]
            assert received == made, "every operation arrives once, in the order it was made"
            # the first one straight to the idle socket, the other 199 in one frame (all 200 in one frame if the
            # link was busy, with a heartbeat say, when the pass began)
            assert [len(frame) for frame in frames] in ([1, 199], [200])


async def test_a_pass_of_operations_leaves_in_one_frame_in_memory() -> None:
    with trio.fail_after(DEADLINE):
        async with open_in_memory_mesh() as mesh:
            a, _ = await mesh.node()
            b, _ = await mesh.node()
            await a.wait_for(lambda: b.peer_id in a.peer.data_links and a.peer_id in b.peer.data_links)
            frames, made = await _send_in_one_pass(a, b, 50)
            assert frames == [tuple(made)]


async def test_held_operations_go_out_before_a_later_sync_request() -> None:
    """A sync answer confirms that the other end holds what was made before asking (rule 3 of the peer): the
    operations held for the pass must reach the link before the request made after them."""
    with trio.fail_after(DEADLINE):
        async with _two_tcp_nodes() as (a, b):
            alice = a.host_agent(_agent("alice"))
            b.host_agent(_agent("bob"))
            await a.wait_for(lambda: "bob" in a.state.agents)
            await b.wait_for(lambda: "alice" in b.state.agents)
            received: list[Frame] = []
            handle: Callable[[OwnerEvent], None] = b._handle

            def observed(event: OwnerEvent) -> None:
                if isinstance(event, FramesRead) and event.link_id == b.peer.data_links.get(a.peer_id):
                    received.extend(event.frames)
                handle(event)

            b._handle = observed  # type: ignore[method-assign]
            for _ in range(5):
                received.clear()
                made = [a.submit(DirectMessage("alice", alice.incarnation, "bob", f"m{i}")) for i in range(30)]
                marks = a.request_sync()
                await a.wait_for(lambda: b.peer_id in a.peer.synced_with(marks))  # noqa: B023 - awaited here
                before: list[Op] = []
                for frame in received:
                    if isinstance(frame, SyncRequest):
                        break
                    if isinstance(frame, Ops):
                        before.extend(frame.ops)
                assert before == made, "the request overtook operations made before it"
