"""Hostile links against a running peer on real TCP (127.0.0.1) in the test process: oversized and malformed
frames, frames that break the rules, slow-loris links (one byte now and then) and floods from one link.

Each test runs two honest peers with agents (``tcpmesh.tcp_mesh``), attacks one of them (``a``) from a raw socket,
and then checks that the attacked link was closed with a logged reason, that ``a`` is still running and that the
honest link still carries messages both ways. Timeouts are configured short (``FAST``) so that slow links are
judged within a second or two.
"""

from __future__ import annotations

import logging
import resource

import pytest
import trio
from hostile import Link, Victim, healthy_peer
from tcpmesh import FAST, admitted, connect, tcp_mesh

from agent_comms.mesh import node as node_module
from agent_comms.mesh.node import LINK_QUEUE_FRAMES
from agent_comms.protocol.framing import encode_frames
from agent_comms.protocol.ops import AgentUpsert, Op, RoomMessage
from agent_comms.protocol.peer import MAX_DEFERRED_SYNCS
from agent_comms.protocol.wire import PROTOCOL_VERSION, Heartbeat, Hello, Introduce, Ops, PeerInfo, SyncOps, SyncRequest


def _warnings(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [r.getMessage() for r in caplog.records if r.name == "agent_comms.mesh" and r.levelno >= logging.WARNING]


@pytest.mark.parametrize(
    ("what", "reason"),
    [
        ("oversized", "oversized"),
        ("garbage", "malformed"),
        ("foreign-origin", "authority"),
        ("introduce-to-a-peer", "role"),
    ],
)
async def test_a_violation_on_an_admitted_link_closes_it_with_a_logged_reason(
    what: str, reason: str, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="agent_comms.mesh")
    async with tcp_mesh(**FAST) as mesh:
        target = mesh.b if mesh.a.peer.is_coordinator else mesh.a  # Introduce is only for the coordinator
        attacker = await admitted(target.peer.info.data_port, mesh.key)
        if what == "oversized":
            await attacker.stream.send_all((2**31).to_bytes(4, "big") + b"x" * 100)
        elif what == "garbage":
            await attacker.stream.send_all(b"\x00\x00\x00\x05\xc1\xc1\xc1\xc1\xc1")
        elif what == "foreign-origin":
            op = Op("b" * 16, 1, 1, AgentUpsert("x", "b" * 16, 1, 0, "x", "t", "/", 0, 0.0))
            await attacker.send(Ops((op,)))
        else:
            await attacker.send(Introduce(PeerInfo("m" * 16, 1, 1.0, 0)))
        assert await attacker.closed_within(3.0)
        with trio.fail_after(3):  # the peer forgets the link just after closing the socket
            await target.wait_for(lambda: all(e.peer_id != "m" * 16 for e in target.peer.links.values()))
        logged = [m for m in _warnings(caplog) if f"closed: {reason}" in m]
        assert logged, _warnings(caplog)
        assert "m" * 16 in logged[0]  # names the link's authenticated peer
        assert mesh.b.peer_id in mesh.a.peer.data_links
        await mesh.healthy()


async def test_a_slow_loris_that_never_finishes_the_handshake_is_cut_off() -> None:
    async with tcp_mesh(**FAST) as mesh:
        attacker = await connect(mesh.a.peer.info.data_port)
        hello = encode_frames([Hello(PROTOCOL_VERSION, b"n" * 16, "data")])
        started = trio.current_time()
        closed = False
        with trio.move_on_after(5.0):
            for byte in hello:
                try:
                    await attacker.stream.send_all(bytes([byte]))
                except (trio.BrokenResourceError, trio.ClosedResourceError):
                    closed = True
                    break
                await trio.sleep(0.2)
        closed = closed or await attacker.closed_within(2.0)
        assert closed, "a link that dribbles its handshake was not closed"
        # handshake_timeout is 0.5 s and links are swept every 0.1 s: well within 2 s.
        assert trio.current_time() - started < 4.0
        await mesh.healthy()


async def test_a_slow_loris_on_an_admitted_link_is_cut_off(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger="agent_comms.mesh")
    async with tcp_mesh(**FAST) as mesh:
        attacker = await admitted(mesh.a.peer.info.data_port, mesh.key)
        # A frame announced as 1,000 bytes whose body then comes one byte every 0.3 s.
        dribble = (1000).to_bytes(4, "big") + encode_frames([Heartbeat()]) * 250
        started = trio.current_time()
        with trio.move_on_after(6.0):
            for byte in dribble:
                try:
                    await attacker.stream.send_all(bytes([byte]))
                except (trio.BrokenResourceError, trio.ClosedResourceError):
                    break
                await trio.sleep(0.3)
        assert await attacker.closed_within(1.0)
        # link_timeout is 1.0 s: the link goes silent (no whole frame) at once and is closed soon after.
        assert trio.current_time() - started < 5.0
        assert any("silent" in m for m in (r.getMessage() for r in caplog.records)), caplog.text
        await mesh.healthy()


def _rss_mb() -> float:
    with open("/proc/self/statm") as statm:
        return int(statm.read().split()[1]) * resource.getpagesize() / 2**20


async def test_a_flood_of_sync_requests_from_a_reader_that_never_reads_is_bounded() -> None:
    """Each SyncRequest asks for every operation the asker lacks: the one frame that makes a peer send a lot. An
    attacker that floods them and never reads must not make the peer queue answers without bound."""
    async with tcp_mesh(**FAST) as mesh:
        for n in range(300):  # a state worth sending: 300 messages of 2,000 characters
            mesh.ok(mesh.alice, action="send", target="lobby", content=f"{n:04d}" + "y" * 1996)
        await mesh.healthy()
        attacker = await admitted(mesh.a.peer.info.data_port, mesh.key)
        before = _rss_mb()
        request = encode_frames([SyncRequest(b"\x00" * 16, {})])
        sent = 0
        with trio.move_on_after(8.0):
            try:
                while sent < 5000:
                    await attacker.stream.send_all(request * 50)
                    sent += 50
            except (trio.BrokenResourceError, trio.ClosedResourceError):
                pass
        grown = _rss_mb() - before
        await mesh.healthy()
        # 5,000 answers of ~600 kB would be 3 GB: requests that come too fast go unanswered.
        assert grown < 150, f"resident memory grew by {grown:.0f} MB under a sync-request flood ({sent} sent)"


async def test_a_link_that_does_not_read_is_closed_when_its_write_queue_is_full(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    """The queue of unsent bytes per link is bounded (32 MiB; 1 MiB here, to see it happen in a second)."""
    caplog.set_level(logging.INFO, logger="agent_comms.mesh")
    monkeypatch.setattr(node_module, "LINK_QUEUE_BYTES", 1 << 20)
    async with tcp_mesh(**FAST, sync_answer_interval=0.0) as mesh:
        for n in range(100):
            mesh.ok(mesh.alice, action="send", target="lobby", content=f"{n:04d}" + "y" * 1996)
        attacker = await admitted(mesh.a.peer.info.data_port, mesh.key)
        request = encode_frames([SyncRequest(b"\x00" * 16, {})])
        with trio.move_on_after(5.0):
            try:
                while True:  # never reads a byte
                    await attacker.stream.send_all(request * 10)
                    await trio.sleep(0.01)
            except (trio.BrokenResourceError, trio.ClosedResourceError):
                pass
        assert "m" * 16 not in mesh.a.peer.data_links
        assert any("write queue full" in m and "m" * 16 in m for m in _warnings(caplog)), caplog.text
        await mesh.healthy()


async def test_a_flood_of_operations_from_one_link_does_not_stop_the_others() -> None:
    async with tcp_mesh(**FAST) as mesh:
        attacker = await admitted(mesh.a.peer.info.data_port, mesh.key)
        me = "m" * 16
        inc = 1 << 40
        hello = Ops((Op(me, 1, inc, AgentUpsert("mallory", me, inc, 0, "mallory", "t", "/", 0, 0.0)),))
        await attacker.send(hello)
        room = mesh.a.peer.replica.state.room_id("lobby")
        assert room is not None
        flood_done = trio.Event()
        seq = 1

        async def flood() -> None:
            nonlocal seq
            try:
                while not flood_done.is_set():
                    batch = []
                    for _ in range(200):
                        seq += 1
                        batch.append(Op(me, seq, inc + seq, RoomMessage(room, "mallory", inc, "spam" * 20)))
                    await attacker.send(Ops(tuple(batch)))
            except (trio.BrokenResourceError, trio.ClosedResourceError):
                pass

        async with trio.open_nursery() as nursery:
            nursery.start_soon(flood)
            await trio.sleep(0.5)
            for _ in range(3):
                await mesh.healthy(within=5.0)  # the honest link is served while the flood goes on
            flood_done.set()
        assert seq > 1000, "the flood did not get going"
        # mallory is not a member of #lobby: its spam is stored nowhere visible, and history stays bounded.
        text = mesh.ok(mesh.alice, action="read_room", room="lobby")
        assert "spam" not in text
        history = mesh.a.peer.replica.state.histories[room]
        assert len(history) <= mesh.a.peer.config.history_limit
        assert LINK_QUEUE_FRAMES > 0


def test_sync_requests_on_one_link_are_answered_at_most_once_per_interval() -> None:
    """The sans-IO rule behind the flood bound: requests inside ``sync_answer_interval`` are coalesced into one
    answer when the interval has passed (each still gets its final frame, empty but for the first, because a
    one-shot command waits for the answer to its request); other links are not affected; a link with more than
    ``MAX_DEFERRED_SYNCS`` requests waiting is closed as a flood."""
    victim = Victim.create()
    honest, _ = healthy_peer(victim)
    mallory = victim.admit("m" * 16, 41003)
    interval = victim.peer.config.sync_answer_interval

    def answers(link: Link) -> int:
        return sum(isinstance(f, SyncOps) and f.done for f in link.received)

    def full_answers(link: Link) -> int:
        return sum(isinstance(f, SyncOps) and bool(f.ops) for f in link.received)

    request = SyncRequest(b"\x00" * 16, {})
    victim.feed_frame(mallory, request)
    assert answers(mallory) == 1
    assert full_answers(mallory) == 1
    for _ in range(10):
        victim.feed_frame(mallory, request)
    assert answers(mallory) == 1, "answered inside the interval"
    victim.feed_frame(honest, request)
    assert answers(honest) == 1
    victim.now += interval + 0.001
    victim.run(victim.peer.handle_timer(victim.now))
    assert answers(mallory) == 11, "every request gets its final frame"
    assert full_answers(mallory) == 2, "the ten waiting requests share one answer"
    assert victim.is_open(mallory)
    for _ in range(MAX_DEFERRED_SYNCS + 2):
        victim.feed_frame(mallory, request)
    assert not victim.is_open(mallory)
    assert victim.is_open(honest)
