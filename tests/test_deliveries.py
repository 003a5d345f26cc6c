"""The delivery planner on its own: replicated state in, what each hosted agent is told out (no Trio, no node)."""

from __future__ import annotations

import subprocess
import sys

from agent_comms.deliveries import DeliveryPlanner, ReadElsewhere
from agent_comms.events import DeliveryEvent
from agent_comms.protocol.ops import AgentUpsert, DirectMessage, Mark, Op, Receipt, dm_conversation, op_id, op_key
from agent_comms.protocol.replica import Replica

NOW_MS = 1_700_000_000_000


def _host(replica: Replica, agent_id: str) -> tuple[AgentUpsert, Op]:
    """Claim ``agent_id`` on ``replica``: the claimed record (what the peer's ``hosted`` holds) and its operation."""
    inc = replica.hlc.tick(0)
    record = AgentUpsert(agent_id, replica.peer_id, inc, 0, agent_id, "test", "/w", 0, 0.0)
    return record, replica.make(record, 0)[0]


def _planner(replica: Replica, *hosted: AgentUpsert) -> DeliveryPlanner:
    return DeliveryPlanner(replica.state, {r.agent_id: r for r in hosted}, replica.peer_id, NOW_MS)


def test_a_dm_is_planned_for_its_recipient_and_its_read_receipt_for_its_author() -> None:
    a, b = Replica.create("peer-a"), Replica.create("peer-b")
    (alice, alice_op), (bob, bob_op) = _host(a, "alice"), _host(b, "bob")
    a.receive(bob_op)
    b.receive(alice_op)
    message, _ = b.make(DirectMessage("bob", bob.incarnation, "alice", "hi"), 0)

    planned = _planner(a, alice).plan(a.receive(message))
    assert planned == [_planner(a, alice).message_event(message, "alice")]
    event = planned[0]
    assert isinstance(event, DeliveryEvent)
    assert (event.type, event.to, event.sender, event.content) == ("dm", "alice", "bob", "hi")
    assert _planner(a, alice).backlog("alice", 10) == planned  # unread: it waits for alice's next bridge
    assert _planner(a).plan(a.receive(message)) == []  # nothing for a peer that hosts nobody (and a duplicate)

    read, _ = a.make(
        Receipt(op_id(message), dm_conversation("bob", "alice"), op_key(message), "alice", alice.incarnation, "read"),
        0,
    )
    told = _planner(b, bob).plan(b.receive(read))
    assert [(e.type, e.to, e.sender, e.status) for e in told if isinstance(e, DeliveryEvent)] == [
        ("delivery_status", "bob", "alice", "read")
    ]
    assert _planner(a, alice).backlog("alice", 10) == []  # read: not shown again


def test_a_marker_is_told_as_one_summary_per_message_it_newly_covers() -> None:
    a, b = Replica.create("peer-a"), Replica.create("peer-b")
    (alice, alice_op), (bob, bob_op) = _host(a, "alice"), _host(b, "bob")
    a.receive(bob_op)
    b.receive(alice_op)
    sent = [b.make(DirectMessage("bob", bob.incarnation, "alice", f"m{i}"), 0)[0] for i in range(3)]
    a.receive_many(sent)
    conversation = dm_conversation("bob", "alice")
    read, _ = a.make(Mark(conversation, "alice", alice.incarnation, "read", {"peer-b": (1, 2)}), 0)
    told = _planner(b, bob).plan(b.receive(read))
    assert [(e.id, e.status) for e in told if isinstance(e, DeliveryEvent)] == [
        (f"{op_id(m)}/alice/read", "read") for m in sent[:2]
    ]
    assert all(e.members[0].status == "read" for e in told if isinstance(e, DeliveryEvent))
    # the same marker seen by a later bridge of alice (another peer): those messages leave its inbox
    c = Replica.create("peer-c")
    c.receive_many([alice_op, bob_op, *sent])
    later = AgentUpsert("alice", "peer-c", c.hlc.tick(0), 0, "alice", "test", "/w", 0, 0.0)
    c.make(later, 0)
    assert _planner(c, later).plan(c.receive(read)) == [ReadElsewhere("alice", op_id(m)) for m in sent[:2]]
    # delivered for all three: only the third one changes (the first two are read already)
    delivered, _ = a.make(Mark(conversation, "alice", alice.incarnation, "delivered", {"peer-b": (1, 3)}), 0)
    told = _planner(b, bob).plan(b.receive(delivered))
    assert [(e.id, e.status) for e in told if isinstance(e, DeliveryEvent)] == [
        (f"{op_id(sent[2])}/alice/delivered", "delivered")
    ]


def test_the_planner_needs_no_trio() -> None:
    code = "import sys, agent_comms.deliveries; print('trio' in sys.modules)"
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=60)
    assert done.stdout.strip() == "False"


def test_a_bridge_catching_up_over_several_sync_frames_is_not_given_what_it_read() -> None:
    """Alice read forty DMs on peer a; her bridge restarts on peer c and catches up through an anti-entropy answer
    cut into frames of a few operations (as long histories are). Every frame is applied and planned on its own: no
    message she read is planned for her again, whichever frame carries it."""
    a, b = Replica.create("peer-a"), Replica.create("peer-b")
    (alice, alice_op), (bob, bob_op) = _host(a, "alice"), _host(b, "bob")
    a.receive(bob_op)
    b.receive(alice_op)
    sent = [b.make(DirectMessage("bob", bob.incarnation, "alice", f"m{i}"), 0)[0] for i in range(40)]
    a.receive_many(sent)
    a.make(Mark(dm_conversation("bob", "alice"), "alice", alice.incarnation, "read", {"peer-b": (1, 40)}), 0)
    c = Replica.create("peer-c")
    later = AgentUpsert("alice", "peer-c", c.hlc.tick(0), 0, "alice", "test", "/w", 0, 0.0)
    c.make(later, 0)
    answer = a.sync_answer(c.sync_request())
    planned = []
    for start in range(0, len(answer), 5):
        planned += _planner(c, later).plan(c.receive_many(answer[start : start + 5]))
    assert [e for e in planned if isinstance(e, DeliveryEvent) and e.type == "dm"] == []
    assert [c.state.receipt_status(op_id(m), "alice") for m in sent] == ["read"] * 40
