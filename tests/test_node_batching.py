"""Operations made in one scheduler pass leave in one ``Ops`` frame per link, in order, behind nothing they follow.

Two nodes over real TCP on 127.0.0.1 (the first operation of a pass on an idle link is written straight to the
socket, the rest of the pass follows in one frame) and over the in-memory network (no socket: the whole pass in one
frame). The receiving node's frames are observed where it hands them to its peer.
"""

from __future__ import annotations

import contextlib
import socket
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager

import trio
import trio.testing

from agent_comms.mesh.node import MeshNode, open_node
from agent_comms.mesh.owner_events import FramesRead, OwnerEvent, TimerDue
from agent_comms.protocol.commands import Command, Send
from agent_comms.protocol.framing import FrameDecoder, encode_op
from agent_comms.protocol.ops import AgentUpsert, DirectMessage, Op
from agent_comms.protocol.peer import PeerConfig
from agent_comms.protocol.wire import Frame, Ops, SyncRequest
from agent_comms.store import MeshStore
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


async def test_the_read_marker_and_the_reply_that_follows_it_leave_in_one_frame_over_tcp() -> None:
    """An agent shown a DM answers at once: its ``read`` marker goes first and the reply with it, in one frame
    (one write: the marker alone would take the idle socket and leave the reply to the writer task)."""
    with trio.fail_after(DEADLINE):
        async with _two_tcp_nodes() as (a, b):
            alice_store, bob_store = MeshStore(a), MeshStore(b)
            alice_store.host(_agent("alice"))
            bob = bob_store.host(_agent("bob"))
            await a.wait_for(lambda: "bob" in a.state.agents)
            await b.wait_for(lambda: "alice" in b.state.agents)
            frames = _watch_ops_frames(b)
            for i in range(5):
                question = bob_store.dm(bob.agent_id, "alice", f"question {i}")
                # alice's bridge has it, and bob has been told so (that marker is not the one looked at)
                await b.wait_for(lambda: b.state.receipt_status(question, "alice") == "delivered")  # noqa: B023
                start = len(frames)
                shown = alice_store.take("alice")
                assert [event.message_id for event in shown if event.type == "dm"] == [question], shown
                alice_store.mark_read("alice", shown)
                reply = alice_store.dm("alice", "bob", f"answer {i}")
                await b.wait_for(lambda: reply in b.state.messages)  # noqa: B023 - awaited here
                kinds = [[type(op.body).__name__ for op in frame] for frame in frames[start:]]
                assert kinds == [["Mark", "DirectMessage"]]


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


async def test_a_frame_of_several_operations_held_for_a_link_arrives_whole() -> None:
    """Operations handed to a link in one ``Ops`` frame (several at once, as anti-entropy and relays make them)
    go out as exactly those operations: each is counted in the frame it travels in, and the link stays up."""
    with trio.fail_after(DEADLINE):
        async with open_in_memory_mesh() as mesh:
            a, _ = await mesh.node()
            b, _ = await mesh.node()
            await a.wait_for(lambda: b.peer_id in a.peer.data_links and a.peer_id in b.peer.data_links)
            alice = a.host_agent(_agent("alice"))
            await b.wait_for(lambda: "alice" in b.state.agents)
            frames = _watch_ops_frames(b)
            link = a.peer.data_links[b.peer_id]
            made = tuple(
                a.peer.replica.make(DirectMessage("alice", alice.incarnation, "bob", f"m{i}"), 0)[0] for i in range(3)
            )
            a._execute([Send(link, (Ops(made),))])
            await b.wait_for(lambda: all(op.seq in b.peer.replica.seen.get(a.peer_id, ()) for op in made))
            assert frames == [made]
            assert a.peer.data_links.get(b.peer_id) == link


class _LosingPeer:
    """Stands in for the peer where only the node's writing is under test: losing a link makes it broadcast one
    operation (as the real peer does when the agents reached through the link go offline)."""

    def __init__(self, tell: list[int], made: Callable[[int], Op]) -> None:
        self.config = PeerConfig(coordinator_port=0)
        self.links: dict[int, object] = {}
        self.peer_id = "writer"
        self._tell = tell
        self._made = made
        self.lost: list[int] = []

    def get_timer(self) -> None:
        return None

    def link_closed(self, link_id: int, now: float, reason: str) -> list[Command]:
        self.lost.append(link_id)
        return [Send(other, (Ops((self._made(99),)),)) for other in self._tell]


def _seqs(data: bytes) -> list[int]:
    decoder = FrameDecoder()
    decoder.feed(data)
    return [op.seq for frame in decoder.frames() if isinstance(frame, Ops) for op in frame.ops]


async def test_a_link_found_full_while_writing_is_closed_after_what_was_being_written() -> None:
    """Link 1's other end does not keep up; link 2 is idle. An operation held for both is flushed: link 1
    overflows, and what its loss makes the peer send (operation 99) reaches link 2 after operation 1, never
    before it; the node's bookkeeping is clean afterwards (the next operation wakes link 2's writer)."""

    def made(seq: int) -> Op:
        return Op("0" * 16, seq, 1000 + seq, DirectMessage("a", 1, "b", f"op{seq}"))

    with trio.fail_after(DEADLINE):
        for order in ([1, 2], [2, 1]):
            async with trio.open_nursery() as nursery:
                peer = _LosingPeer([2], made)
                node = MeshNode(peer, None, nursery, None)  # type: ignore[arg-type]
                node.link_queue_bytes = 1000
                slow, _slow_queue = trio.open_memory_channel[tuple[bytes, bool]](100)
                idle, idle_queue = trio.open_memory_channel[tuple[bytes, bool]](100)
                node._writers.update({1: slow, 2: idle})
                ours, theirs = socket.socketpair()
                with ours, theirs:
                    ours.setblocking(False)
                    theirs.setblocking(False)
                    node._fds[2] = ours.fileno()
                    # held, operation 1 fits within link 1's limit; framed for the write, it does not
                    node._queued[1] = node.link_queue_bytes - len(encode_op(made(1)))
                    for link in (1, 2):  # both links had their direct write of this pass: the rest is held
                        node._direct_pass[link] = node._passes.passes
                    frame = Ops((made(1),))
                    for link in order:
                        node._hold_ops(link, frame)
                    await trio.lowlevel.checkpoint()  # a writer runs in a later pass (a direct write is allowed again)
                    node._flush_outbox()
                    assert peer.lost == [1]
                    node._flush_outbox()  # what the loss made, held meanwhile, as link 2's writer writes it next
                    written = b""
                    with contextlib.suppress(BlockingIOError):
                        written = theirs.recv(1 << 20)
                    queued = b"".join(chunk for chunk, _ in _drain(idle_queue))
                    assert _seqs(written + queued) == [1, 99], order
                    assert not node._outbox
                    assert not node._held
                    assert not node._woken
                    await (
                        trio.lowlevel.checkpoint()
                    )  # a new pass: operation 100 is held, and link 2's writer is woken for it
                    node._direct_pass[2] = node._passes.passes
                    node._hold_ops(2, Ops((made(100),)))
                    assert _drain(idle_queue) == [(b"", True)]
                nursery.cancel_scope.cancel()


def _drain(queue: trio.MemoryReceiveChannel[tuple[bytes, bool]]) -> list[tuple[bytes, bool]]:
    chunks = []
    while True:
        try:
            chunks.append(queue.receive_nowait())
        except trio.WouldBlock:
            return chunks


async def test_frames_wait_behind_an_event_handed_to_the_owner() -> None:
    """Frames read from a link are applied in the reader's task only while the owner task waits with nothing
    handed to it: an event handed over (the end of a link, say) is handled before them."""
    with trio.fail_after(DEADLINE):
        async with open_in_memory_mesh() as mesh:
            node, _ = await mesh.node()
            await trio.testing.wait_all_tasks_blocked()
            assert node._owner_idle()
            node._inbox_send.send_nowait(TimerDue())  # handed to the waiting owner, not yet handled
            assert not node._owner_idle()
            await trio.testing.wait_all_tasks_blocked()
            assert node._owner_idle()


async def test_a_loop_of_tool_calls_alone_still_lets_deadlines_expire() -> None:
    async with open_in_memory_mesh() as mesh:
        agent = await mesh.agent(name="poller")
        calls = 0
        with trio.move_on_after(0.2) as scope:
            while calls < 200_000:  # (bounded: a loop that never yields would otherwise run forever)
                await agent.call({"action": "whoami"})
                calls += 1
        assert scope.cancelled_caught, f"{calls} calls and the deadline never expired"
