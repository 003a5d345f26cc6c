"""A full inbox refills from what it refused, not from the whole history: once there is room, the messages it refused
come, oldest first, as the full backlog would give them, and a refill looks at no more messages than it has room
for. Real in-memory mesh nodes (Trio), no model."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest
import trio

import agent_comms.store
from agent_comms.agent import Agent
from agent_comms.deliveries import DeliveryPlanner
from agent_comms.events import DeliveryEvent
from agent_comms.protocol.ops import op_key
from agent_comms.protocol.state import MeshState
from agent_comms.store import MeshStore
from agent_comms.testing import InMemoryMesh, open_in_memory_mesh
from agent_comms.tool import CommsTool

DEADLINE = 60


def _counting(monkeypatch: pytest.MonkeyPatch, name: str, state: MeshState) -> list[str]:
    """Count calls of ``MeshState.<name>`` on ``state`` (the message id or op each was for)."""
    calls: list[str] = []
    real: Callable[..., Any] = getattr(MeshState, name)

    def wrapper(self: MeshState, *args: Any) -> Any:
        if self is state:
            calls.append(repr(args[0]))
        return real(self, *args)

    monkeypatch.setattr(MeshState, name, wrapper)
    return calls


async def _flooded(mesh: InMemoryMesh, limit: int, count: int) -> tuple[Agent, list[str]]:
    """bob, whose inbox holds ``limit`` events, sent ``count`` DMs by alice and carol in turn (two conversations):
    bob and the ids sent."""
    senders = [await mesh.agent("h1", name="alice"), await mesh.agent("h1", name="carol")]
    bob = await mesh.agent("h2", name="bob")
    bob.store.inbox(bob.id).limit = limit
    sent = []
    for n in range(count):
        result = await senders[n % 2].call({"action": "dm", "target": bob.id, "content": f"dm {n}"})
        assert not result.is_error, result.text
        sent.append(result.data["message_id"])
    await mesh.settle()
    assert len(bob.store.pending(bob.id)) == limit
    return bob, sent


def _oldest_first(state: MeshState, message_ids: list[str]) -> bool:
    """Whether the messages are in the history's order (the order a backlog gives them in)."""
    return message_ids == sorted(message_ids, key=lambda m: op_key(state.messages[m]))


def _full_backlog(bob: Agent, queued: set[str]) -> list[str]:
    """The event ids a walk over the whole history would queue for bob now (what was queued already is seen)."""
    store = bob.store
    planner = DeliveryPlanner(store.state, store.node.hosted, store.node.peer_id, 0)
    events = planner.backlog(bob.id, len(store.state.messages))
    return [e.id for e in events if isinstance(e, DeliveryEvent) and e.id not in queued]


async def test_a_refill_queues_what_the_full_backlog_would_and_looks_at_no_more_than_it_has_room_for(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    with trio.fail_after(DEADLINE):
        async with open_in_memory_mesh() as mesh:
            limit, count = 10, 60
            bob, sent = await _flooded(mesh, limit, count)
            store, inbox = bob.store, bob.store.inbox(bob.id)
            visible = _counting(monkeypatch, "message_visible", store.state)
            queued = {e.id for e in inbox.pending()}
            shown: list[str] = []
            for room in (3, 7, 1, 10, 4, 10, 10, 10, 10):
                expected = _full_backlog(bob, queued)[:room]
                visible.clear()
                taken = store.take(bob.id, room)  # makes room: the refill runs now
                shown += [e.message_id for e in taken]
                store.mark_read(bob.id, taken)
                assert [e.id for e in inbox.pending() if e.id not in queued] == expected
                assert len(visible) <= room, f"the refill looked at {len(visible)} messages for {room} places"
                queued |= {e.id for e in inbox.pending()}
                await mesh.settle()
            shown += [e.message_id for e in store.take(bob.id)]
            assert sorted(shown) == sorted(sent)  # each once


async def test_a_refused_message_read_meanwhile_is_not_queued() -> None:
    with trio.fail_after(DEADLINE):
        async with open_in_memory_mesh() as mesh:
            bob, sent = await _flooded(mesh, 5, 12)
            store, state = bob.store, bob.store.state
            planner = DeliveryPlanner(state, store.node.hosted, store.node.peer_id, 0)
            waiting = {e.message_id for e in store.pending(bob.id)}
            read = [m for m in sent if m not in waiting][1:3]  # refused, then read (as by an earlier bridge of bob)
            store.mark_read(bob.id, [planner.message_event(state.messages[m], bob.id) for m in read])
            store.flush_marks()
            assert [state.receipt_status(m, bob.id) for m in read] == ["read", "read"]
            shown = []
            while taken := store.take(bob.id, 2):
                shown += [e.message_id for e in taken]
                store.mark_read(bob.id, taken)
                await mesh.settle()
            assert sorted(shown) == sorted(m for m in sent if m not in read)
            assert _oldest_first(state, shown[5:])  # what was refused comes in the history's order


@pytest.mark.parametrize("remembered", [1, 4, 13])
async def test_more_refused_than_remembered_is_still_queued_in_order(
    monkeypatch: pytest.MonkeyPatch, remembered: int
) -> None:
    """Past ``_REFUSED_LIMIT`` remembered messages, a refill walks the history: nothing is lost, none twice, and
    each refill queues what the full backlog would."""
    monkeypatch.setattr(agent_comms.store, "_REFUSED_LIMIT", remembered)
    with trio.fail_after(DEADLINE):
        async with open_in_memory_mesh() as mesh:
            bob, sent = await _flooded(mesh, 6, 40)
            store, inbox = bob.store, bob.store.inbox(bob.id)
            queued = {e.id for e in inbox.pending()}
            shown = []
            while True:
                expected = _full_backlog(bob, queued)[:5]
                taken = store.take(bob.id, 5)
                if not taken:
                    break
                assert [e.id for e in inbox.pending() if e.id not in queued] == expected
                queued |= {e.id for e in inbox.pending()}
                shown += [e.message_id for e in taken]
                store.mark_read(bob.id, taken)
                await mesh.settle()
            assert sorted(shown) == sorted(sent)
            assert _oldest_first(store.state, shown[6:])


async def test_a_queued_message_asks_the_state_how_far_the_agent_got_once(monkeypatch: pytest.MonkeyPatch) -> None:
    """Queuing a message (and acknowledging it as delivered) reads its receipt status once on the recipient's node:
    when it is planned, not again when the store records its ``delivered`` marker or applies it."""
    with trio.fail_after(DEADLINE):
        async with open_in_memory_mesh() as mesh:
            alice = await mesh.agent("h1", name="alice")
            bob = await mesh.agent("h2", name="bob")
            await mesh.settle()
            asked = _counting(monkeypatch, "receipt_status", bob.store.state)
            for n in range(20):
                await alice.call({"action": "dm", "target": bob.id, "content": f"dm {n}"})
            await mesh.settle()
            assert bob.pending_count() == 20
            assert len(asked) == 20, asked


async def test_an_agent_hosted_again_gets_the_newest_that_fit_then_the_older_ones() -> None:
    """More waits for an agent hosted again than its inbox holds: the newest that fit come first (the backlog), the
    older ones once there is room, oldest first, each once (they were refused, not lost)."""
    with trio.fail_after(DEADLINE):
        async with open_in_memory_mesh() as mesh:
            alice = await mesh.agent("h1", name="alice")
            bob = await mesh.agent("h2", name="bob")
            await mesh.settle()
            await mesh.stop(bob)
            await mesh.settle()
            sent = []
            for n in range(12):
                result = await alice.call({"action": "dm", "target": bob.id, "content": f"dm {n}"})
                sent.append(result.data["message_id"])
            node, _scope = await mesh.node()
            store = MeshStore(node, inbox_limit=5)
            mesh.stores.append(store)
            await mesh.settle()
            registered = CommsTool(store, agent_id=bob.id, harness="h2", cwd="/work", pid=0).call(
                {"action": "register", "name": "bob"}
            )
            assert not registered.is_error, registered.text
            history = sorted(sent, key=lambda m: op_key(store.state.messages[m]))
            assert [e.message_id for e in store.pending(bob.id)] == history[-5:]
            shown = []
            while taken := store.take(bob.id, 2):
                shown += [e.message_id for e in taken if e.type == "dm"]
                store.mark_read(bob.id, taken)
                await mesh.settle()
            assert shown == history[-5:] + history[:-5]
