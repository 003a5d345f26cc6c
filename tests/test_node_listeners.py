"""The node hands applied changes to its listeners in order, never re-entrantly, and ``submit`` returns its operation.

Two agents hosted by one node: a DM from one to the other makes the store queue it for the recipient and record
it as ``delivered``; the store's progress marker goes out at its next flush (after the scheduler pass), so its
changes reach the listeners in a later batch, never inside the message's.
"""

from __future__ import annotations

import msgspec
import trio
import trio.testing

from agent_comms.protocol.changes import Change, MarkAdvanced, MessageAdded
from agent_comms.protocol.ops import DirectMessage, op_id
from agent_comms.store import MeshStore
from agent_comms.testing import open_in_memory_mesh
from agent_comms.tool import CommsTool

DEADLINE = 30


async def test_listeners_are_never_entered_while_running_and_submit_returns_the_operation() -> None:
    with trio.fail_after(DEADLINE):
        async with open_in_memory_mesh() as mesh:
            node, _scope = await mesh.node()
            store = MeshStore(node)
            batches: list[tuple[Change, ...]] = []
            running = False
            reentered = False

            def watch(changes: tuple[Change, ...]) -> None:
                nonlocal running, reentered
                reentered = reentered or running
                running = True
                try:
                    batches.append(changes)
                finally:
                    running = False

            # The store's listener runs first (it was added first) and submits a receipt from inside its call;
            # this one must still see the message's batch before the receipt's.
            node.add_listener(watch)
            alice = CommsTool(store, agent_id="alice-1", harness="test", pid=0)
            bob = CommsTool(store, agent_id="bob-1", harness="test", pid=0)
            for tool, name in ((alice, "alice"), (bob, "bob")):
                assert not tool.call({"action": "register", "name": name}).is_error
            batches.clear()

            sent = alice.call({"action": "dm", "target": "bob", "content": "hello"})
            assert not sent.is_error, sent.text
            message_id = sent.data["message_id"]
            assert not reentered
            assert store.marking == 1  # bob's delivered marker waits for the end of the scheduler pass
            await trio.testing.wait_all_tasks_blocked()  # the flush ran
            assert store.marking == 0
            assert not reentered
            kinds = [type(change) for batch in batches for change in batch]
            # the message first, then (a later batch) bob's delivered marker that the store made on queueing it
            added = kinds.index(MessageAdded)
            advanced = kinds.index(MarkAdvanced)
            assert added < advanced
            assert not any(isinstance(c, MarkAdvanced) for c in batches[0]), "the marker came inside the batch"
            assert [e.message_id for e in store.pending("bob-1")] == [message_id]
            assert store.state.receipt_status(message_id, "bob-1") == "delivered"
            # alice, hosted here too, was told of the delivery (the store's listener got the receipt's batch)
            statuses = [(e.type, e.status) for e in store.pending("alice-1")]
            assert ("delivery_status", "delivered") in statuses

            inc = node.peer.hosted["alice-1"].incarnation
            body = DirectMessage("alice-1", inc, "bob-1", "again")
            op = node.submit(body)
            assert op.body == msgspec.structs.replace(body, n=2)  # numbered: the second DM from alice to bob here
            assert op.origin == node.peer_id
            assert store.state.messages[op_id(op)] == op
