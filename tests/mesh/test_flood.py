"""A mesh under a flood of operations stays linked, and anti-entropy does not add to the flood.

* An anti-entropy answer leaves out the operations its sender made since the link became the data link: they went
  out on that link live, ahead of the answer, so resending them would only double the load of a busy link (and an
  answer that large can overflow the link's write queue, closing it and forcing a full resync).
* Handshakes are not queued behind data: a node whose owner task has a backlog of received frames still completes
  the handshake of a new link at once.

* A caller that never yields (a tight loop of operations) still sends heartbeats, so its links stay open.

In-memory network where the test controls the timing (the order of frames on a link is the same as over TCP); a
real peer process over TCP for the caller that never yields.
"""

from __future__ import annotations

import time
from collections.abc import Callable

import trio
import trio.testing
from conftest import ProcessMesh

from agent_comms.mesh.node import MeshNode, open_node
from agent_comms.mesh.owner_events import FramesRead, OwnerEvent
from agent_comms.mesh.registry import PeerRegistry
from agent_comms.protocol.ops import AgentUpsert, DirectMessage, Op
from agent_comms.protocol.wire import Frame, SyncOps
from agent_comms.testing import open_in_memory_mesh

DEADLINE = 120
FLOOD = 2000


def _agent(name: str) -> AgentUpsert:
    return AgentUpsert(name, "", 0, 0, name, "test", "/test", 0, 0.0)


def _frames_from(node: MeshNode, other: str) -> list[Frame]:
    """Every frame ``node`` receives on its data link to peer ``other`` from now on, in order."""
    received: list[Frame] = []
    handle: Callable[[OwnerEvent], None] = node._handle

    def observed(event: OwnerEvent) -> None:
        if isinstance(event, FramesRead) and event.link_id == node.peer.data_links.get(other):
            received.extend(event.frames)
        handle(event)

    node._handle = observed  # type: ignore[method-assign]
    return received


async def test_an_answer_does_not_resend_what_the_link_carries_live() -> None:
    """``b`` asks for anti-entropy while a flood from ``a`` is on its way to it: the answer completes (it still
    confirms that ``b`` holds everything ``a`` made before the request) without one operation of the flood."""
    with trio.fail_after(DEADLINE):
        async with open_in_memory_mesh(history_limit=2 * FLOOD) as mesh:
            a, _ = await mesh.node()
            b, _ = await mesh.node()
            await a.wait_for(lambda: b.peer_id in a.peer.data_links and a.peer_id in b.peer.data_links)
            alice = a.host_agent(_agent("alice"))
            b.host_agent(_agent("bob"))
            await a.wait_for(lambda: "bob" in a.state.agents)
            await b.wait_for(lambda: "alice" in b.state.agents)
            received = _frames_from(b, a.peer_id)
            # In one scheduler pass: the flood leaves a, and b's request leaves b before b has read any of it.
            made = [a.submit(DirectMessage("alice", alice.incarnation, "bob", f"m{i}")) for i in range(FLOOD)]
            marks = b.request_sync()
            await b.wait_for(lambda: a.peer_id in b.peer.synced_with(marks))
            seen = b.peer.replica.seen.get(a.peer_id)
            assert seen is not None
            assert all(op.seq in seen for op in made), "answered before the flood arrived"
            flood = {(op.origin, op.seq) for op in made}
            resent: list[Op] = [
                op
                for frame in received
                if isinstance(frame, SyncOps)
                for op in frame.ops
                if (op.origin, op.seq) in flood
            ]
            assert not resent, f"{len(resent)} of {FLOOD} operations carried live were resent by anti-entropy"


async def test_what_was_made_before_the_link_is_still_answered() -> None:
    """Only what went out live is left out: operations made before the link existed come in the answer."""
    with trio.fail_after(DEADLINE):
        async with open_in_memory_mesh(history_limit=2 * FLOOD) as mesh:
            a, _ = await mesh.node()
            alice = a.host_agent(_agent("alice"))
            made = [a.submit(DirectMessage("alice", alice.incarnation, "bob", f"m{i}")) for i in range(50)]
            b, _ = await mesh.node()
            received = _frames_from(b, a.peer_id)
            await b.wait_synced()
            seen = b.peer.replica.seen.get(a.peer_id)
            assert seen is not None
            assert all(op.seq in seen for op in made)
            answered = {(op.origin, op.seq) for frame in received if isinstance(frame, SyncOps) for op in frame.ops}
            assert {(op.origin, op.seq) for op in made} <= answered


async def test_a_handshake_does_not_wait_behind_a_backlog_of_frames() -> None:
    """``a``'s owner task has a backlog of received frames that take it seconds to apply (simulated: each of these
    events keeps it busy for 10 ms, as a large frame of operations would): a peer dialing ``a`` meanwhile still
    completes its handshake while that backlog lasts, instead of timing out behind it."""
    with trio.fail_after(DEADLINE):
        async with open_in_memory_mesh() as mesh:
            a, _ = await mesh.node()
            await a.wait_synced()
            backlog = 400
            busy = FramesRead(10**9, [])  # a link id nobody has: nothing to apply but the time it takes
            handle: Callable[[OwnerEvent], None] = a._handle

            def slow(event: OwnerEvent) -> None:
                nonlocal backlog
                if event is busy:
                    time.sleep(0.01)
                    backlog -= 1
                    return
                handle(event)

            a._handle = slow  # type: ignore[method-assign]
            for _ in range(backlog):
                a._inbox_send.send_nowait(busy)
            b, _ = await mesh.node()

            def linked() -> bool:
                return any(entry.is_open and entry.peer_id == b.peer_id for entry in a.peer.links.values())

            await a.wait_for(lambda: linked() or not backlog)
            assert linked(), "the handshake waited until the whole backlog was applied"
            assert backlog > 0
            await b.wait_for(lambda: a.peer_id in b.peer.data_links)  # and the mesh forms once it is applied


async def test_a_caller_that_never_yields_keeps_its_links(process_mesh: ProcessMesh) -> None:
    """A loop of operations that never yields to the scheduler (an agent's tool called in a tight loop, each call
    after a millisecond of the caller's own work) holds up every task of its node for longer than the link timeout:
    the peer process at the other end of its links must still hear from it (heartbeats and operations written from
    the loop itself, as long as the sockets take them), and no link is closed."""
    mesh = process_mesh
    other = await mesh.spawn("other", "bob")
    registry = PeerRegistry(mesh.home)
    with trio.fail_after(DEADLINE):
        async with open_node(mesh.key, port=mesh.port, registry=registry, probe_processes=False) as node:
            # every link open first (a handshake cannot finish while its peer stands still)
            await node.wait_for(
                lambda: (
                    other.peer_id in node.peer.data_links
                    and node.peer.coordinator_link is not None
                    and all(entry.is_open for entry in node.peer.links.values())
                    and "bob" in node.state.agents
                )
            )
            links = dict(node.peer.links)
            alice = node.host_agent(_agent("alice"))
            stall = 2 * node.peer.config.link_timeout
            until = time.perf_counter() + stall
            made = 0
            while time.perf_counter() < until:  # never yields
                node.submit(DirectMessage("alice", alice.incarnation, "bob", f"m{made}"))
                made += 1
                busy = time.perf_counter() + 0.001  # the caller's own work between two calls
                while time.perf_counter() < busy:
                    pass
            data_link = links[node.peer.data_links[other.peer_id]]
            marks = node.request_sync()
            await node.wait_for(
                lambda: other.peer_id in node.peer.synced_with(marks) or data_link.link_id not in node.peer.links
            )
            closed = [entry for link_id, entry in links.items() if link_id not in node.peer.links]
            assert not closed, f"links closed after {made} operations in {stall} s without yielding: {closed}"
