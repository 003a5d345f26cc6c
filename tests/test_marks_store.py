"""The store reports progress as markers: one cumulative marker per (agent, conversation, status) per flush, never
one operation per message; a push that shows a message at once sends one ``read`` marker and no ``delivered`` one;
the senders are told one summary per message, as with receipts. Real in-memory mesh nodes (Trio), no model."""

from __future__ import annotations

import pytest
import trio

from agent_comms.protocol.changes import Change, MarkAdvanced
from agent_comms.protocol.commands import Command
from agent_comms.protocol.ops import DirectMessage, Mark, Op, Receipt, op_id
from agent_comms.protocol.peer import Peer
from agent_comms.protocol.wire import Frame, Ops
from agent_comms.testing import open_in_memory_mesh

DEADLINE = 30


async def test_a_drain_sends_one_read_marker_for_everything_it_showed() -> None:
    with trio.fail_after(DEADLINE):
        async with open_in_memory_mesh() as mesh:
            alice = await mesh.agent("test", name="alice")
            bob = await mesh.agent("test", name="bob", cwd="/elsewhere")
            await mesh.settle()
            made: list[Op] = []
            node = alice.store.node
            node.peer.replica.observer = lambda op: made.append(op) if isinstance(op.body, Mark) else None
            sent = []
            for i in range(5):
                result = await bob.call({"action": "dm", "target": "alice", "content": f"m{i}"})
                sent.append(result.data["message_id"])
            await mesh.settle()
            assert alice.pending_count() == 5
            delivered = [op for op in made if op.body.status == "delivered"]  # type: ignore[union-attr]
            assert delivered, "the messages were queued: delivered"
            made.clear()
            shown = alice.drain()
            assert [e.message_id for e in shown] == sent
            await mesh.settle()
            assert len(made) == 1  # one marker for the five messages
            body = made[0].body
            assert isinstance(body, Mark)
            assert (body.recipient, body.status) == (alice.id, "read")
            assert list(body.ranges.values()) == [(1, 5)]
            for state in (alice.store.state, bob.store.state):
                assert [state.receipt_status(m, alice.id) for m in sent] == ["read"] * 5
            # bob is told one summary per message: delivered, then read (ids as with receipts)
            told = [e for e in bob.drain() if e.type == "delivery_status"]
            assert sorted({e.id for e in told}) == sorted(
                f"{m}/{alice.id}/{s}" for m in sent for s in ("delivered", "read")
            )
            assert all(e.members[0].status in ("delivered", "read") for e in told)


async def test_a_message_shown_at_once_sends_a_single_read_marker() -> None:
    with trio.fail_after(DEADLINE):
        async with open_in_memory_mesh() as mesh:
            alice = await mesh.agent("test", name="alice")
            bob = await mesh.agent("test", name="bob", cwd="/elsewhere")
            await mesh.settle()
            changes: list[Change] = []
            bob.store.node.add_listener(lambda batch: changes.extend(c for c in batch if isinstance(c, MarkAdvanced)))
            made: list[Op] = []
            alice.store.node.peer.replica.observer = lambda op: made.append(op) if isinstance(op.body, Mark) else None

            def show_at_once(event: object) -> None:  # a push bridge: shown as it is queued
                alice.store.mark_read(alice.id, [event])  # type: ignore[list-item]

            alice.store.add_delivery_callback(show_at_once)
            await bob.call({"action": "dm", "target": "alice", "content": "now"})
            await mesh.settle()
            assert [op.body.status for op in made] == ["read"]  # type: ignore[union-attr]
            assert [c.status for c in changes] == ["read"]


async def _alice_shown_one_dm(mesh: object) -> tuple[object, object, str, list[Op]]:
    alice = await mesh.agent("test", name="alice")  # type: ignore[attr-defined]
    bob = await mesh.agent("test", name="bob", cwd="/elsewhere")  # type: ignore[attr-defined]
    await mesh.settle()  # type: ignore[attr-defined]
    made: list[Op] = []
    alice.store.node.peer.replica.observer = lambda op: made.append(op) if isinstance(op.body, Mark) else None
    sent = (await bob.call({"action": "dm", "target": "alice", "content": "hi"})).data["message_id"]
    await mesh.settle()  # type: ignore[attr-defined]
    made.clear()
    return alice, bob, sent, made


async def test_releasing_an_agent_sends_what_it_was_shown_first() -> None:
    with trio.fail_after(DEADLINE):
        async with open_in_memory_mesh() as mesh:
            alice, bob, sent, made = await _alice_shown_one_dm(mesh)
            alice.store.mark_read(alice.id, alice.store.take(alice.id))  # type: ignore[attr-defined]
            alice.store.release(alice.id)  # type: ignore[attr-defined]  # in the same pass: before any flush
            assert [op.body.status for op in made] == ["read"]  # type: ignore[union-attr]
            await mesh.settle()
            assert bob.store.state.receipt_status(sent, alice.id) == "read"  # type: ignore[attr-defined]
            assert alice.store.marking == 0  # type: ignore[attr-defined]


async def test_an_agent_released_by_its_node_still_sends_what_it_was_shown() -> None:
    """Its process exited (the node releases it, not the store) between the drain and the flush."""
    with trio.fail_after(DEADLINE):
        async with open_in_memory_mesh() as mesh:
            alice, bob, sent, made = await _alice_shown_one_dm(mesh)
            alice.store.mark_read(alice.id, alice.store.take(alice.id))  # type: ignore[attr-defined]
            alice.store.node.release_agent(alice.id)  # type: ignore[attr-defined]
            await mesh.settle()
            assert [op.body.status for op in made] == ["read"]  # type: ignore[union-attr]
            assert bob.store.state.receipt_status(sent, alice.id) == "read"  # type: ignore[attr-defined]
            assert not alice.store._progress  # type: ignore[attr-defined]  # nothing kept for the released agent


async def test_a_message_of_protocol_version_1_gets_a_receipt() -> None:
    """A message without a number (made by version 1, brought back by a hub that kept it) cannot be named by a
    marker: reading it sends the receipt that version reads, and its sender is told."""
    with trio.fail_after(DEADLINE):
        async with open_in_memory_mesh() as mesh:
            alice, bob, _sent, _made = await _alice_shown_one_dm(mesh)
            alice.drain()  # type: ignore[attr-defined]
            await mesh.settle()  # its marker made
            receipts: list[Op] = []
            alice.store.node.peer.replica.observer = (  # type: ignore[attr-defined]
                lambda op: receipts.append(op) if isinstance(op.body, Receipt | Mark) else None
            )
            claim = bob.store.node.hosted[bob.id]  # type: ignore[attr-defined]
            old = Op(
                bob.store.node.peer_id,  # type: ignore[attr-defined]
                10_000,
                bob.store.node.peer.replica.hlc.tick(0),  # type: ignore[attr-defined]
                DirectMessage(bob.id, claim.incarnation, alice.id, "from version 1"),  # type: ignore[attr-defined]
            )
            alice.store.node.relay([old])  # type: ignore[attr-defined]
            await mesh.settle()
            shown = alice.drain()  # type: ignore[attr-defined]
            assert [e.content for e in shown] == ["from version 1"]
            await mesh.settle()
            assert [(type(op.body), op.body.status) for op in receipts] == [  # type: ignore[union-attr]
                (Receipt, "delivered"),
                (Receipt, "read"),
            ]
            assert alice.store.state.receipt_status(op_id(old), alice.id) == "read"  # type: ignore[attr-defined]


async def test_a_reply_made_at_once_goes_out_after_the_read_marker_of_what_it_answers(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The others learn that the agent read the message before they get its reply (the example's order), and the
    two travel together."""
    with trio.fail_after(DEADLINE):
        async with open_in_memory_mesh() as mesh:
            alice, bob, _sent, _made = await _alice_shown_one_dm(mesh)
            ops: list[Op] = []
            alice.store.node.peer.replica.observer = ops.append  # type: ignore[attr-defined]
            frames: list[object] = []
            bobs = bob.store.node.peer  # type: ignore[attr-defined]
            received = Peer.frame_received

            def record(peer: Peer, link_id: int, frame: Frame, now: float) -> list[Command]:
                if peer is bobs and isinstance(frame, Ops):
                    frames.append([type(op.body).__name__ for op in frame.ops])
                return received(peer, link_id, frame, now)

            monkeypatch.setattr(Peer, "frame_received", record)
            alice.drain()  # type: ignore[attr-defined]
            await alice.call({"action": "dm", "target": "bob", "content": "on it"})  # type: ignore[attr-defined]
            kinds = [type(op.body).__name__ for op in ops]
            assert kinds == ["Mark", "DirectMessage"], kinds
            await mesh.settle()
            assert frames == [["Mark", "DirectMessage"]]  # together: one frame, one write
            told = [e.type for e in bob.drain()]  # type: ignore[attr-defined]
            assert told[-1] == "dm", told
