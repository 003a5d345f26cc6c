"""The store reports progress as markers: one cumulative marker per (agent, conversation, status) per flush, never
one operation per message; a push that shows a message at once sends one ``read`` marker and no ``delivered`` one;
the senders are told one summary per message, as with receipts. Real in-memory mesh nodes (Trio), no model."""

from __future__ import annotations

import trio

from agent_comms.protocol.changes import Change, MarkAdvanced
from agent_comms.protocol.ops import Mark, Op
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
