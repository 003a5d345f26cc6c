"""Scenario tests for the replicated mesh state (:mod:`agent_comms.protocol.state`) and the replica around it.

Agents (rules 2-4), bounded histories and receipts (rules 6-7), forgetting (rule 8), exactly-once delivery and
anti-entropy. Every scenario is deterministic: explicit replicas, explicit times, explicit delivery order.
"""

from __future__ import annotations

from dataclasses import dataclass

import msgspec
import pytest
from simnet import rebuild, receipt_body, visible_snapshot

from agent_comms.protocol.changes import AgentChanged, MessageAdded, ReceiptAdvanced
from agent_comms.protocol.ops import (
    AgentSuspect,
    AgentUpsert,
    DirectMessage,
    Membership,
    Op,
    Receipt,
    RoomCreate,
    RoomMessage,
    dm_conversation,
    op_id,
    op_key,
)
from agent_comms.protocol.replica import Replica, SeenSet, sync_order
from agent_comms.protocol.state import MeshState

# ------------------------------------------------------------------------------------------------------------- helpers


@dataclass(frozen=True)
class Agent:
    """An agent hosted on ``replica`` under claim ``(inc, replica.peer_id)``; ``record`` is its first upsert."""

    id: str
    replica: Replica
    inc: int
    record: Op


def record(agent_id: str, peer_id: str, incarnation: int, version: int = 0, **fields: object) -> AgentUpsert:
    values: dict[str, object] = {"name": agent_id, "harness": "t", "cwd": "/w", "pid": 1, "process_start": 1.0}
    values.update(fields)
    return AgentUpsert(agent_id=agent_id, peer_id=peer_id, incarnation=incarnation, version=version, **values)  # type: ignore[arg-type]


def register(replica: Replica, agent_id: str, now: int = 0, **fields: object) -> Agent:
    """Claim ``agent_id`` on ``replica`` (``now=0``: just after the replica's last stamp)."""
    inc = replica.hlc.tick(now)
    op, _ = replica.make(record(agent_id, replica.peer_id, inc, 0, **fields), now)
    return Agent(agent_id, replica, inc, op)


def update(agent: Agent, version: int, now: int = 0, **fields: object) -> Op:
    """The host publishes version ``version`` of the agent's record under its current claim."""
    op, _ = agent.replica.make(record(agent.id, agent.replica.peer_id, agent.inc, version, **fields), now)
    return op


def dm(agent: Agent, to: str, text: str = "hi", now: int = 0) -> Op:
    return agent.replica.make(DirectMessage(agent.id, agent.inc, to, text), now)[0]


def receipt(agent: Agent, message: Op, status: str = "read", now: int = 0) -> Op:
    """``agent`` (the recipient) reports ``message`` delivered or read."""
    body = message.body
    assert isinstance(body, DirectMessage)
    conversation = dm_conversation(body.author, body.recipient)
    return agent.replica.make(receipt_body(message, agent.id, agent.inc, status, conversation), now)[0]


def fresh(peer_id: str, ops: list[Op], history_limit: int = 1000) -> Replica:
    """A new replica that received ``ops`` in that order."""
    replica = Replica.create(peer_id, history_limit=history_limit)
    replica.receive_many(ops)
    return replica


def ids(ops: list[Op]) -> list[str]:
    return [op_id(op) for op in ops]


def online(replica: Replica, agent_id: str) -> bool:
    return replica.state.agents[agent_id].online


def upsert_of(op: Op) -> AgentUpsert:
    assert isinstance(op.body, AgentUpsert)
    return op.body


# ----------------------------------------------------------------------------------------------------- agents (rule 2)


def test_new_agent_is_reported_once() -> None:
    host = Replica.create("A")
    x = register(host, "X")
    target = Replica.create("R")
    assert target.receive(x.record) == [AgentChanged("X", upsert_of(x.record), True, None, False)]
    assert target.receive(x.record) == []  # duplicate
    entry = target.state.agents["X"]
    assert entry.record == x.record
    assert entry.claims == {(x.inc, "A"): x.record}
    assert entry.online


def test_upserts_merge_last_writer_wins_by_version() -> None:
    host = Replica.create("A")
    x = register(host, "X")
    v1 = update(x, 1, status="busy")
    v2 = update(x, 2, status="idle", online=False)
    target = fresh("R", [x.record])
    assert target.receive(v2) == [AgentChanged("X", upsert_of(v2), False, upsert_of(x.record), True)]
    assert target.receive(v1) == []  # older version arriving later: no effect, no change
    assert target.state.agents["X"].record == v2
    assert target.state.agents["X"].body.status == "idle"
    assert visible_snapshot(target.state) == visible_snapshot(fresh("S", [x.record, v1, v2]).state)


def test_agent_changed_only_when_record_or_online_state_changes() -> None:
    host = Replica.create("A")
    x = register(host, "X")
    target = fresh("R", [x.record])
    v1 = update(x, 1, status="busy")
    assert target.receive(v1) == [AgentChanged("X", upsert_of(v1), True, upsert_of(x.record), True)]
    # the host re-publishes the identical record (a new operation): it wins the tie by key, but nothing changed
    again = update(x, 1, status="busy")
    assert target.receive(again) == []
    assert target.state.agents["X"].record == again
    # going offline is a change of the online state
    v2 = update(x, 2, status="busy", online=False)
    assert target.receive(v2) == [AgentChanged("X", upsert_of(v2), False, upsert_of(v1), True)]


def test_version_decides_within_a_claim_not_the_stamp() -> None:
    """Within one claim the higher version wins even if it was stamped earlier (the merge is by the record)."""
    v2 = Op("A", 1, 100, record("X", "A", 7, 2, status="busy"))
    v1 = Op("A", 2, 200, record("X", "A", 7, 1, status="idle"))
    for order in ([v2, v1], [v1, v2]):
        state = MeshState()
        for op in order:
            state.apply(op)
        assert state.agents["X"].record == v2
        assert state.agents["X"].claims == {(7, "A"): v1}  # the newest record of the claim, by op key


def test_newer_claim_wins_over_a_higher_version_of_an_older_claim() -> None:
    old_host, new_host = Replica.create("A"), Replica.create("B")
    first = register(old_host, "X", now=1000)
    old_v5 = update(first, 5, status="busy")
    second = register(new_host, "X", now=2000)  # the bridge moved to peer B
    target = fresh("R", [first.record, second.record])
    assert target.receive(old_v5) == []
    entry = target.state.agents["X"]
    assert entry.record == second.record
    assert entry.claims == {(first.inc, "A"): old_v5, (second.inc, "B"): second.record}  # each claim's newest


def test_upsert_from_another_peer_is_rejected() -> None:
    host, rogue = Replica.create("A"), Replica.create("Z")
    x = register(host, "X")
    forged_new = rogue.make(record("Y", "A", 5), 0)[0]  # names peer A, comes from Z
    forged_edit = rogue.make(record("X", "A", x.inc, 99, name="forged", online=False), 0)[0]
    target = Replica.create("R")
    assert target.receive(forged_new) == []
    assert "Y" not in target.state.agents
    assert target.receive(forged_edit) == []
    assert "X" not in target.state.agents
    target.receive(x.record)
    entry = target.state.agents["X"]
    assert (entry.record, entry.body.name, entry.online) == (x.record, "X", True)
    assert entry.claims == {(x.inc, "A"): x.record}


# ------------------------------------------------------------------------------------------- offline verdicts (rule 3)


def test_suspect_marks_the_current_claim_offline() -> None:
    host, detector = Replica.create("A"), Replica.create("D")
    x = register(host, "X")
    detector.receive(x.record)
    verdict, changes = detector.make(AgentSuspect("X", x.inc, "A"), 0)
    body = upsert_of(x.record)
    assert changes == [AgentChanged("X", body, False, body, True)]
    assert host.receive(verdict) == [AgentChanged("X", body, False, body, True)]
    assert not online(host, "X")
    # a second verdict on the same claim changes nothing visible
    again, changes = detector.make(AgentSuspect("X", x.inc, "A"), 0)
    assert changes == []
    assert host.receive(again) == []


def test_suspect_of_an_older_claim_does_not_take_effect() -> None:
    host = Replica.create("A")
    first = register(host, "X", now=1000)
    second = register(host, "X", now=2000)  # the bridge restarted on the same peer
    detector = fresh("D", [first.record, second.record])
    verdict, changes = detector.make(AgentSuspect("X", first.inc, "A"), 0)
    assert changes == []
    assert online(detector, "X")
    assert host.receive(verdict) == []
    assert online(host, "X")


def test_host_refutes_a_verdict_with_a_new_claim() -> None:
    host, detector = Replica.create("A"), Replica.create("D")
    first = register(host, "X", now=1000)
    detector.receive(first.record)
    verdict, _ = detector.make(AgentSuspect("X", first.inc, "A"), 1500)
    host.receive(verdict)
    assert not online(host, "X")
    second = register(host, "X", now=2000)
    assert second.inc > first.inc
    assert detector.receive(second.record) == [
        AgentChanged("X", upsert_of(second.record), True, upsert_of(first.record), False)
    ]
    assert online(detector, "X")
    assert online(host, "X")
    # the old verdict, delivered again to a fresh replica in any order, does not cover the new claim
    for ops in ([first.record, verdict, second.record], [second.record, verdict, first.record]):
        assert fresh("R", ops).state.agents["X"].online


def test_suspect_before_the_record_takes_effect_when_it_arrives() -> None:
    host, detector = Replica.create("A"), Replica.create("D")
    x = register(host, "X")
    detector.receive(x.record)
    verdict, _ = detector.make(AgentSuspect("X", x.inc, "A"), 0)

    early = Replica.create("R")
    assert early.receive(verdict) == []
    assert early.state.agents["X"].record is None
    assert early.receive(x.record) == [AgentChanged("X", upsert_of(x.record), False, None, False)]
    assert not online(early, "X")

    late = fresh("S", [x.record, verdict])
    assert visible_snapshot(early.state) == visible_snapshot(late.state)
    assert early.state.digest() == late.state.digest()


# ----------------------------------------------------------------------------------------------------- claims (rule 4)


def test_dm_under_an_unpublished_claim_is_invisible() -> None:
    host, rogue = Replica.create("A"), Replica.create("Z")
    x = register(host, "X")
    genuine = dm(x, "Y", "hello")
    # the rogue speaks as X with X's real incarnation: the claim (inc, "Z") was never published
    forged = rogue.make(DirectMessage("X", x.inc, "Y", "forged"), 0)[0]
    conversation = dm_conversation("X", "Y")

    target = fresh("R", [x.record, genuine])
    assert target.state.message_visible(genuine)
    assert target.receive(forged) == []
    assert op_id(forged) in target.state.messages  # held, but it does not count
    assert not target.state.message_visible(forged)

    # before X's claim is known the forgery cannot be told apart; once it is, it stops counting
    early = Replica.create("S")
    assert early.receive(forged) == [MessageAdded(forged, conversation)]
    early.receive_many([x.record, genuine])
    assert not early.state.message_visible(forged)
    assert visible_snapshot(early.state) == visible_snapshot(target.state)
    assert visible_snapshot(target.state)["conversations"] == {conversation: [op_id(genuine)]}


def test_dm_by_an_unknown_agent_is_visible() -> None:
    stranger_host = Replica.create("Q")  # its record of "ghost" never reaches the target
    message = stranger_host.make(DirectMessage("ghost", 7, "Y", "boo"), 0)[0]
    target = Replica.create("R")
    assert target.receive(message) == [MessageAdded(message, dm_conversation("ghost", "Y"))]
    assert "ghost" not in target.state.agents
    assert target.state.message_visible(message)


# ------------------------------------------------------------------------- bounded histories and receipts (rules 6, 7)


@pytest.fixture
def five_dms() -> tuple[Agent, Agent, list[Op]]:
    """X on A sends Y on B five direct messages; the replicas keep 3 messages per conversation."""
    a, b = Replica.create("A", history_limit=3), Replica.create("B", history_limit=3)
    x, y = register(a, "X"), register(b, "Y")
    a.receive(y.record)
    b.receive(x.record)
    return x, y, [dm(x, "Y", f"m{i}") for i in range(1, 6)]


def test_history_keeps_the_newest_messages(five_dms: tuple[Agent, Agent, list[Op]]) -> None:
    x, y, messages = five_dms
    conversation = dm_conversation("X", "Y")
    target = fresh("R", [x.record, y.record], history_limit=3)
    # newest first: the last two are refused on arrival, since the history is full of newer ones
    changes = target.receive_many(list(reversed(messages)))
    assert changes == [MessageAdded(m, conversation) for m in reversed(messages[2:])]
    assert ids(target.state.histories[conversation].messages) == ids(messages[2:])
    assert sorted(target.state.messages) == sorted(ids(messages[2:]))
    assert ids(x.replica.state.histories[conversation].messages) == ids(messages[2:])
    assert target.state.digest() == x.replica.state.digest()


def test_receipts_of_evicted_messages_are_dropped(five_dms: tuple[Agent, Agent, list[Op]]) -> None:
    x, y, messages = five_dms
    target = fresh("R", [x.record, y.record, messages[0]], history_limit=3)
    first_read = receipt(y, messages[0])
    assert target.receive(first_read) == [ReceiptAdvanced(op_id(messages[0]), "Y", "read", first_read)]
    assert target.state.receipt_status(op_id(messages[0]), "Y") == "read"
    target.receive_many(messages[1:])
    assert op_id(messages[0]) not in target.state.messages
    assert op_id(messages[0]) not in target.state.receipts
    assert target.state.receipt_status(op_id(messages[0]), "Y") is None


def test_receipt_for_a_message_older_than_a_full_history_is_refused(
    five_dms: tuple[Agent, Agent, list[Op]],
) -> None:
    x, y, messages = five_dms
    target = fresh("R", [x.record, y.record, *messages], history_limit=3)
    late = receipt(y, messages[0])
    assert target.receive(late) == []
    assert op_id(messages[0]) not in target.state.receipts
    assert target.state.orphan_receipts == {}
    # a receipt for a message that is kept counts
    kept = receipt(y, messages[2], "delivered")
    assert target.receive(kept) == [ReceiptAdvanced(op_id(messages[2]), "Y", "delivered", kept)]


def test_receipt_before_its_message_is_kept_and_counts(five_dms: tuple[Agent, Agent, list[Op]]) -> None:
    x, y, messages = five_dms
    conversation = dm_conversation("X", "Y")
    newest = messages[-1]
    y.replica.receive(newest)
    read = receipt(y, newest)

    target = fresh("R", [x.record, y.record], history_limit=3)
    assert target.receive(read) == [ReceiptAdvanced(op_id(newest), "Y", "read", read)]
    assert target.state.orphan_receipts == {conversation: [(op_key(newest), op_id(newest))]}
    assert target.receive(newest) == [MessageAdded(newest, conversation)]
    assert target.state.receipt_status(op_id(newest), "Y") == "read"
    assert visible_snapshot(target.state)["receipts"] == {(op_id(newest), "Y"): "read"}

    in_order = fresh("S", [x.record, y.record, newest, read], history_limit=3)
    assert visible_snapshot(target.state) == visible_snapshot(in_order.state)
    assert target.state.digest() == in_order.state.digest()


def test_orphan_receipt_is_pruned_when_its_message_falls_out(five_dms: tuple[Agent, Agent, list[Op]]) -> None:
    x, y, messages = five_dms
    y.replica.receive(messages[0])
    first_read = receipt(y, messages[0])
    target = fresh("R", [x.record, y.record, first_read, *messages[1:]], history_limit=3)
    assert op_id(messages[0]) not in target.state.receipts
    assert target.state.orphan_receipts == {}
    assert target.receive(messages[0]) == []  # older than the full history: refused
    in_order = fresh("S", [x.record, y.record, messages[0], first_read, *messages[1:]], history_limit=3)
    assert target.state.digest() == in_order.state.digest()
    assert visible_snapshot(target.state) == visible_snapshot(in_order.state)


def test_receipt_status_only_grows(five_dms: tuple[Agent, Agent, list[Op]]) -> None:
    x, y, messages = five_dms
    message = messages[-1]
    y.replica.receive(message)
    read = receipt(y, message, "read")
    delivered = receipt(y, message, "delivered")  # issued later, but less advanced
    mid = op_id(message)

    read_first = fresh("R", [x.record, y.record, message])
    assert read_first.receive(read) == [ReceiptAdvanced(mid, "Y", "read", read)]
    assert read_first.receive(delivered) == []
    assert read_first.state.receipt_status(mid, "Y") == "read"

    delivered_first = fresh("S", [x.record, y.record, message])
    assert delivered_first.receive(delivered) == [ReceiptAdvanced(mid, "Y", "delivered", delivered)]
    assert delivered_first.receive(read) == [ReceiptAdvanced(mid, "Y", "read", read)]
    assert delivered_first.state.receipt_status(mid, "Y") == "read"
    assert delivered_first.state.digest() == read_first.state.digest()


def test_receipt_under_an_unpublished_claim_does_not_count(five_dms: tuple[Agent, Agent, list[Op]]) -> None:
    x, y, messages = five_dms
    message = messages[-1]
    rogue = Replica.create("Z")
    rogue.receive_many([x.record, y.record, message])
    forged = rogue.make(receipt_body(message, "Y", y.inc, "read", dm_conversation("X", "Y")), 0)[0]
    target = fresh("R", [x.record, y.record, message])
    assert target.receive(forged) == []
    assert target.state.receipt_status(op_id(message), "Y") is None


def test_held_messages_share_one_copy_of_their_origin_author_and_recipient() -> None:
    """Two DMs decoded from the wire each bring their own copies of these strings; once held they share one."""
    alice_peer = Replica.create("peer-a" + "x" * 20)
    alice = register(alice_peer, "alice-" + "y" * 20)
    bob = register(Replica.create("peer-b"), "bob-" + "z" * 20)
    first, second = (dm(alice, bob.id, text) for text in ("one", "two"))
    decoded = [msgspec.msgpack.decode(msgspec.msgpack.encode(op), type=Op) for op in (first, second)]
    assert decoded[0].origin is not decoded[1].origin  # the decoder gave each its own copy
    member = fresh("peer-b", [alice.record, bob.record, *decoded])
    held = [member.state.messages[op_id(op)] for op in decoded]
    assert held == [first, second]  # equal to what was made: only the copies are shared
    a, b = held[0], held[1]
    assert isinstance(a.body, DirectMessage)
    assert isinstance(b.body, DirectMessage)
    assert a.origin is b.origin
    assert a.body.author is b.body.author
    assert a.body.recipient is b.body.recipient
    keys = member.state.histories[dm_conversation(a.body.author, a.body.recipient)].keys
    assert all(origin is a.origin for _hlc, origin, _seq in keys)  # the history's keys too


# ------------------------------------------------------------------------------------------------- forgetting (rule 8)

HORIZON_MS = 5_000


@pytest.fixture
def gc_scene() -> dict[str, Op]:
    """Agents on A: X and Y went offline at ~1000 ms, Z is online since 1000 ms, W went offline at 9000 ms.

    X and Y exchanged a DM (Y read it), X sent Z a DM. Returns the operations by name.
    """
    a = Replica.create("A")
    x, y, z, w = (register(a, name, now=1000) for name in "XYZW")
    ops = {"X": x.record, "Y": y.record, "Z": z.record, "W": w.record}
    ops["x2y"] = dm(x, "Y", now=1100)
    ops["y_read"] = receipt(y, ops["x2y"], now=1200)
    ops["x2z"] = dm(x, "Z", now=1300)
    ops["X_off"] = update(x, 1, now=2000, online=False)
    ops["Y_off"] = update(y, 1, now=2000, online=False)
    ops["W_off"] = update(w, 1, now=9000, online=False)
    return ops


def test_collect_garbage_forgets_long_offline_agents(gc_scene: dict[str, Op]) -> None:
    target = fresh("R", list(gc_scene.values()))
    target.state.collect_garbage(HORIZON_MS)
    state = target.state
    assert sorted(state.agents) == ["W", "Z"]  # W went offline after the horizon, Z is online
    assert state.horizon == HORIZON_MS << 16
    # conversations stay, even between two forgotten agents, with their receipts: they come back to them
    assert ids(state.histories[dm_conversation("X", "Y")].messages) == [op_id(gc_scene["x2y"])]
    assert state.message_visible(gc_scene["x2y"])
    assert state.receipt_status(op_id(gc_scene["x2y"]), "Y") == "read"
    assert ids(state.histories[dm_conversation("X", "Z")].messages) == [op_id(gc_scene["x2z"])]
    # the horizon never moves back
    state.collect_garbage(HORIZON_MS - 1000)
    assert state.horizon == HORIZON_MS << 16


def test_old_operations_of_a_forgotten_agent_go_again_at_the_next_collection(gc_scene: dict[str, Op]) -> None:
    """An old operation of a forgotten agent that anti-entropy brings back (from a replica that has not collected
    yet) is forgotten again at the next collection, whatever the order it came in."""
    state = MeshState()
    state.apply(gc_scene["X_off"])
    state.collect_garbage(HORIZON_MS)
    assert state.agents == {}
    state.apply(suspect_of(gc_scene["X"]))
    state.apply(gc_scene["X"])
    state.collect_garbage(HORIZON_MS)
    assert state.agents == {}
    # a record stamped after the horizon stays: a host re-stamping a live agent
    x = upsert_of(gc_scene["X"])
    newer = Op("A", 99, (HORIZON_MS + 1) << 16, record("X", "A", x.incarnation, 7))
    assert state.apply(newer) == [AgentChanged("X", upsert_of(newer), True, None, False)]
    state.collect_garbage(HORIZON_MS)
    assert list(state.agents) == ["X"]


def suspect_of(upsert: Op) -> Op:
    """A failure detector's verdict on ``upsert``'s claim, stamped right after it."""
    body = upsert_of(upsert)
    return Op("D", 1, upsert.hlc + 1, AgentSuspect(body.agent_id, body.incarnation, body.peer_id))


def test_late_dm_and_receipt_between_forgotten_agents_are_kept(gc_scene: dict[str, Op]) -> None:
    """A direct conversation does not depend on whether a replica still held its parties' records when it
    collected: a DM and its receipt delivered after the collection are kept like on a replica that had them."""
    everything = fresh("R1", list(gc_scene.values()))
    everything.state.collect_garbage(HORIZON_MS)
    late = fresh("R2", [op for name, op in gc_scene.items() if name not in ("x2y", "y_read")])
    late.state.collect_garbage(HORIZON_MS)
    late.receive(gc_scene["x2y"])
    late.receive(gc_scene["y_read"])
    late.state.collect_garbage(HORIZON_MS)
    assert ids(late.state.histories[dm_conversation("X", "Y")].messages) == [op_id(gc_scene["x2y"])]
    assert late.state.receipt_status(op_id(gc_scene["x2y"]), "Y") == "read"
    assert late.state.digest() == everything.state.digest()
    assert visible_snapshot(late.state) == visible_snapshot(everything.state)


def test_an_agent_returning_after_it_was_forgotten_keeps_its_rooms_and_messages() -> None:
    """X creates a room, invites Y, both speak, X receives a DM and reads it; X goes offline and is forgotten; the
    same identity comes back on another peer. Its room, ownership, memberships, messages and receipts are as they
    were, on the replica that forgot it and on one that never knew it, and stay so as the horizon keeps moving."""
    a, b = Replica.create("A"), Replica.create("B")
    x, y = register(a, "X", now=1000), register(a, "Y", now=1000)
    room, _ = a.make(RoomCreate(a.next_op_id(), "lobby", "private", "", "X", x.inc), 1100)
    room_id = op_id(room)
    a.make(Membership(room_id, "invite", "X", x.inc, "Y"), 1150)
    a.make(Membership(room_id, "join", "Y", y.inc), 1160)
    said = [a.make(RoomMessage(room_id, who.id, who.inc, "hello"), 1200 + i)[0] for i, who in enumerate((x, y))]
    to_x = dm(y, "X", now=1300)
    receipt(x, to_x, now=1400)
    update(x, 1, now=2000, online=False)

    def looks_as_before(state: MeshState) -> None:
        view = state.room("lobby")
        assert view is not None, "the returning agent's room vanished"
        assert view.owner == "X"
        assert set(view.members) == {"X", "Y"}
        assert ids(state.room_messages(room_id)) == ids(said)
        assert state.message_visible(to_x)
        assert state.receipt_status(op_id(to_x), "X") == "read"

    a.state.collect_garbage(HORIZON_MS)
    assert "X" not in a.state.agents  # forgotten (Y is still online)
    looks_as_before(a.state)
    # the same identity comes back, on another peer, with a new claim
    back = register(b, "X", now=HORIZON_MS + 1000)
    a.receive(back.record)
    looks_as_before(a.state)
    # a replica that never knew the old claims (it joined after the forgetting) sees the same
    newcomer = fresh("N", [op for op in a.state.stored_ops() if op.origin != "B"])
    newcomer.receive(back.record)
    newcomer.state.collect_garbage(HORIZON_MS)
    looks_as_before(newcomer.state)
    assert visible_snapshot(newcomer.state) == visible_snapshot(a.state)
    # much later, with the returned agent still on its new claim: still there
    for state in (a.state, newcomer.state):
        state.collect_garbage(HORIZON_MS * 10)
        looks_as_before(state)
    # the agent goes on where it left off: it still owns the room
    b.state.collect_garbage(HORIZON_MS * 10)  # a peer moves its horizon when it starts, then periodically
    b.receive_many(a.state.stored_ops())
    b.make(Membership(room_id, "kick", "X", back.inc, "Y"), HORIZON_MS * 10 + 1)
    view = b.state.room("lobby")
    assert view is not None
    assert set(view.members) == {"X"}


def test_a_new_replica_gets_a_live_room_older_than_its_horizon() -> None:
    """A room created before the horizon and still alive reaches a replica that never held it (a new peer, whose
    horizon is set when it starts), with its messages; a destroyed one that comes back goes at the next collection."""
    a = Replica.create("A")
    owner = register(a, "O", now=1000)
    live, _ = a.make(RoomCreate(a.next_op_id(), "lobby", "public", "", "O", owner.inc), 1100)
    said, _ = a.make(RoomMessage(op_id(live), "O", owner.inc, "still here"), 1200)
    gone, _ = a.make(RoomCreate(a.next_op_id(), "old", "public", "", "O", owner.inc), 1300)
    a.make(Membership(op_id(gone), "destroy", "O", owner.inc), 1400)
    update(owner, 1, now=HORIZON_MS + 500)  # its host re-stamps the live agent
    newcomer = Replica.create("N")
    newcomer.state.collect_garbage(HORIZON_MS)
    newcomer.receive_many(sorted(a.state.stored_ops(), key=sync_order))
    assert newcomer.state.room("lobby") is not None
    assert ids(newcomer.state.room_messages(op_id(live))) == [op_id(said)]
    a.state.collect_garbage(HORIZON_MS)
    newcomer.state.collect_garbage(HORIZON_MS)
    assert op_id(gone) not in newcomer.state.rooms
    assert newcomer.state.digest() == a.state.digest()


#: ``offline_retention`` of the replicas collecting at ``HORIZON_MS`` below (their clocks read the sum)
RETENTION_MS = 4_500


def collect(replica: Replica, horizon_ms: int = HORIZON_MS) -> None:
    """A peer's periodic collection: forget before the horizon, keep an origin's floors for twice the retention."""
    replica.collect_garbage(horizon_ms, horizon_ms - RETENTION_MS)


def sync(requester: Replica, responder: Replica) -> None:
    """One anti-entropy exchange: ``responder`` answers ``requester``'s request."""
    requester.receive_many(responder.sync_answer(requester.sync_request()))


def test_a_destroyed_room_stays_destroyed_when_replicas_collect_out_of_phase() -> None:
    """Bob creates #ops on B and speaks there; B exits; bob comes back on R and destroys the room. P collects
    before Q does: Q's anti-entropy offers P the room's creation and message again (B's operations, of which P
    holds nothing any more), and P refuses them, as it saw them before."""
    b, r = Replica.create("B"), Replica.create("R")
    bob = register(b, "bob", now=1000)
    room, _ = b.make(RoomCreate(b.next_op_id(), "ops", "public", "", "bob", bob.inc), 1100)
    said, _ = b.make(RoomMessage(op_id(room), "bob", bob.inc, "old news"), 1200)
    r.receive_many(list(b.state.stored_ops()))
    back = register(r, "bob", now=1300)
    r.make(Membership(op_id(room), "destroy", "bob", back.inc), 1400)
    update(back, 1, now=HORIZON_MS + 100)  # its host re-stamps the live agent
    everything = sorted(r.state.stored_ops(), key=sync_order)
    p, q = fresh("P", everything), fresh("Q", everything)
    collect(p)
    assert op_id(room) not in p.state.rooms
    assert not any(op.origin == "B" for op in p.state.stored_ops())
    sync(p, q)  # Q has not collected yet
    assert op_id(room) not in p.state.rooms, "the destroyed room came back"
    assert op_id(said) not in p.state.messages
    collect(q)
    sync(q, p)
    sync(p, q)
    assert op_id(room) not in q.state.rooms
    assert p.state.digest() == q.state.digest()


def test_a_forgotten_agent_stays_forgotten_when_replicas_collect_out_of_phase() -> None:
    """X went offline on B long ago and B left. P and Q collect out of phase; each offers the other what the
    other forgot before collecting itself; neither takes it back, and their stored operations end up equal
    (instead of handing the record back and forth at every anti-entropy round)."""
    b = Replica.create("B")
    x = register(b, "X", now=1000)
    update(x, 1, now=1100, online=False)
    p, q = fresh("P", list(b.state.stored_ops())), fresh("Q", list(b.state.stored_ops()))
    collect(p)
    assert "X" not in p.state.agents
    sync(p, q)
    assert "X" not in p.state.agents, "a forgotten agent came back"
    collect(q)
    sync(q, p)
    sync(p, q)
    assert "X" not in p.state.agents
    assert "X" not in q.state.agents
    assert p.state.digest() == q.state.digest()
    assert q.sync_answer(p.sync_request()) == []


def test_the_floors_of_a_departed_origin_go_once_every_replica_forgot_what_it_made() -> None:
    """The bookkeeping of an origin nothing is held of is kept while a replica collecting later may offer its
    forgotten operations: twice the retention after its last operation, and a retention after this replica first
    found nothing of it held (what it made may outlive it). Then it goes, so peers that come and go do not
    accumulate it."""
    b = Replica.create("B")
    x = register(b, "X", now=1000)
    update(x, 1, now=1100, online=False)
    p = fresh("P", list(b.state.stored_ops()))
    collect(p)
    assert "X" not in p.state.agents
    assert "B" in p.seen  # its last operation is younger than twice the retention
    collect(p, horizon_ms=1100 + RETENTION_MS)
    assert "B" in p.seen
    collect(p, horizon_ms=1101 + RETENTION_MS)
    assert "B" in p.seen  # old enough, but only now found empty: another replica may still offer X
    collect(p, horizon_ms=1101 + 2 * RETENTION_MS)
    assert "B" in p.seen
    collect(p, horizon_ms=1102 + 2 * RETENTION_MS)
    assert "B" not in p.seen
    assert "B" not in p.last_stamp
    assert p.empty_since == {}


def test_the_floors_of_an_origin_stay_while_what_it_made_is_held_after_it_left() -> None:
    """An agent's record outlives its host: another peer's offline verdict keeps it a while longer. A replica that
    forgets it must go on refusing the host's operations until replicas collecting later have forgotten them too,
    however long ago the host's last operation was."""
    b = Replica.create("B")
    x = register(b, "X", now=1000)
    verdict = Op("C", 1, (1000 + 2 * RETENTION_MS) << 16, AgentSuspect("X", x.inc, "B"))
    p = fresh("P", [*b.state.stored_ops(), verdict])
    q = fresh("Q", [*b.state.stored_ops(), verdict])
    horizon = 1001 + 2 * RETENTION_MS
    collect(p, horizon_ms=horizon)  # P forgets X; B's last operation is older than twice the retention
    assert "X" not in p.state.agents
    assert "X" in q.state.agents  # Q collects later
    assert p.receive_many(list(q.state.stored_ops())) == []  # what Q offers is refused as seen
    assert "X" not in p.state.agents
    collect(q, horizon_ms=horizon)
    collect(p, horizon_ms=horizon + RETENTION_MS)
    assert "B" in p.seen
    collect(p, horizon_ms=horizon + RETENTION_MS + 1)
    assert "B" not in p.seen


def test_operations_for_a_room_whose_creation_never_came_go_once_older_than_the_horizon() -> None:
    """A replica that joined late holds a room operation and a message whose room it never got (the room was
    forgotten elsewhere): once they are older than the horizon they go, as a replica at that horizon refuses them."""
    state = MeshState()
    state.apply(Op("B", 1, 6000 << 16, Membership("B-0", "kick", "X", 1, "Y")))
    state.apply(Op("B", 2, 6001 << 16, RoomMessage("B-0", "X", 1, "late")))
    state.collect_garbage(HORIZON_MS)
    assert "B-0" in state.rooms
    assert "B-0" in state.histories
    state.collect_garbage(7000)
    assert "B-0" not in state.rooms
    assert "B-0" not in state.histories
    assert list(state.stored_ops()) == []


def test_receipts_for_a_room_not_held_go_once_older_than_the_horizon() -> None:
    """A replica that forgot a room (or never held it) took a receipt for one of its messages while its horizon was
    still before the receipt; a replica collecting at a later horizon refuses it. At that horizon it goes here too,
    and the two hold the same."""
    receipt = Op("B", 1, 6000 << 16, Receipt("B-7", "B-0", (5500 << 16, "B", 7), "Y", 1, "delivered"))
    early = MeshState()
    early.collect_garbage(5000)
    early.apply(receipt)
    assert "B-7" in early.receipts
    late = MeshState()
    late.collect_garbage(7000)
    late.apply(receipt)
    assert "B-7" not in late.receipts
    early.collect_garbage(7000)
    assert "B-7" not in early.receipts
    assert early.orphan_receipts == {}
    assert early.digest() == late.digest()


def test_claims_known_only_grow_with_the_horizon() -> None:
    """Rule 4 with rule 8: a claim older than the horizon and than the agent's newest claim counts as known for an
    operation made under it before that newest claim, and nothing known stops being known as the horizon or the
    claims grow (receipts rely on it)."""
    state = MeshState()
    old, current = (1000 << 16, "A"), (9000 << 16, "B")
    made = old[0] + 5  # an operation made under the old claim, before the horizon
    assert not state.claim_known("Z", *old, made, strict=True)  # an agent never seen: its receipts do not count...
    state.collect_garbage(5000)
    assert state.claim_known("Z", *old, made, strict=True)  # ...unless made before the horizon (forgotten)
    assert not state.claim_known("Z", *old, 6000 << 16, strict=True)  # not one stamped since
    state = MeshState()
    state.apply(Op("B", 1, current[0], record("X", "B", current[0])))
    assert not state.claim_known("X", *old, made)
    state.collect_garbage(5000)
    assert state.claim_known("X", *old, made)
    assert state.claim_known("X", *old, made, strict=True)
    # a claim that is not older than the newest one is never taken on trust: acting as X now needs a public claim
    assert not state.claim_known("X", current[0], "R", current[0] + 1)
    # nor is an old claim for an operation stamped since the newest claim: it was not made under the old claim
    assert not state.claim_known("X", *old, current[0] + 1)
    assert not state.claim_known("X", old[0], "R", made - 10)  # nor for one stamped before the claim it names
    state.collect_garbage(20000)
    assert state.claim_known("X", *old, made)
    assert not state.claim_known("X", current[0], "R", current[0] + 1)
    assert not state.claim_known("X", current[0] + 1, "R", current[0] + 2)
    assert not state.claim_known("X", *old, 20000 << 16)


def _forgery_scene() -> tuple[Replica, Agent, Agent, str, Op]:
    """X (hosted on A since long before the horizon) owns room "lobby" with member Y and got a DM from Y; peer A
    has moved its horizon (as every peer does when it starts), so X's first claim is older than it."""
    a = Replica.create("A")
    x, y = register(a, "X", now=1000), register(a, "Y", now=1000)
    room, _ = a.make(RoomCreate(a.next_op_id(), "lobby", "public", "", "X", x.inc), 1100)
    a.make(Membership(op_id(room), "join", "Y", y.inc), 1160)
    to_x = dm(y, "X", now=1300)
    # X restarts on A, later: a newer claim, so its first claim is now an old one
    register(a, "X", now=HORIZON_MS + 1000)
    a.state.collect_garbage(HORIZON_MS)
    assert a.state.horizon > x.inc
    return a, x, y, op_id(room), to_x


@pytest.mark.parametrize("action", ["kick", "destroy"])
def test_another_peer_cannot_act_in_a_room_under_an_old_claim_of_an_agent(action: str) -> None:
    """Rule 4: peer M, which never hosted X, sends a kick or a destroy as X under X's first (old) claim, stamped
    now. It is refused: an old claim is taken on trust only for an operation stamped before the agent's newest
    claim, and this one is not."""
    a, x, _y, room_id, _to_x = _forgery_scene()
    now = (HORIZON_MS + 2000) << 16
    a.receive(Op("M", 1, now, Membership(room_id, action, "X", x.inc, "Y" if action == "kick" else "")))  # type: ignore[arg-type]
    view = a.state.room("lobby")
    assert view is not None, "a forged destroy took effect"
    assert set(view.members) == {"X", "Y"}, "a forged kick took effect"


def test_another_peer_cannot_send_a_dm_or_a_read_receipt_under_an_old_claim_of_an_agent() -> None:
    """Rule 4 and rule 7: a DM as X, and a read receipt as X (strict), forged by peer M under X's old claim and
    stamped now, do not count."""
    a, x, _y, _room_id, to_x = _forgery_scene()
    now = (HORIZON_MS + 2000) << 16
    forged_dm = Op("M", 1, now, DirectMessage("X", x.inc, "Y", "forged"))
    a.receive(forged_dm)
    assert not a.state.message_visible(forged_dm)
    forged = receipt_body(to_x, "X", x.inc, "read", dm_conversation("Y", "X"))
    a.receive(Op("M", 2, now + 1, forged))
    assert a.state.receipt_status(op_id(to_x), "X") is None


def test_messages_under_a_trimmed_claim_made_after_the_horizon_stay_visible() -> None:
    """An agent that ran under one claim for longer than the retention and then restarted: the collection trims
    the old claim (rule 8), and what it said under it after the horizon still counts (it was said before the
    newest claim)."""
    a = Replica.create("A")
    x, y = register(a, "X", now=1000), register(a, "Y", now=1000)
    late = dm(x, "Y", now=HORIZON_MS + 500)
    register(a, "X", now=HORIZON_MS + 1000)
    a.state.collect_garbage(HORIZON_MS)
    assert (x.inc, "A") not in a.state.agents["X"].claims
    assert a.state.message_visible(late)
    assert y.id in a.state.agents


# ------------------------------------------------------------------------------------------------------------- replica


def test_seen_set_floor_and_extra() -> None:
    seen = SeenSet()
    assert seen.add(1)
    assert (seen.floor, seen.extra) == (1, set())
    assert seen.add(3)
    assert seen.add(5)
    assert (seen.floor, seen.extra) == (1, {3, 5})
    assert 3 in seen
    assert 2 not in seen
    assert not seen.add(3)
    assert not seen.add(1)
    assert seen.add(2)  # fills the gap: the floor runs up through 3
    assert (seen.floor, seen.extra) == (3, {5})
    assert seen.add(4)
    assert (seen.floor, seen.extra) == (5, set())
    assert all(n in seen for n in range(6))
    assert 6 not in seen


def test_duplicates_are_ignored() -> None:
    host = Replica.create("A")
    x = register(host, "X")
    message = dm(x, "Y")
    target = Replica.create("R")
    assert target.receive(x.record) != []
    assert target.receive(message) == [MessageAdded(message, dm_conversation("X", "Y"))]
    digest = target.state.digest()
    assert target.receive(message) == []
    assert target.receive_many([x.record, message]) == []
    assert target.state.digest() == digest
    assert target.seen["A"] == SeenSet(2, set())


def test_receive_advances_the_clock_past_what_it_saw() -> None:
    a, b = Replica.create("A"), Replica.create("B")
    x = register(a, "X", now=5000)
    b.receive(x.record)
    y = register(b, "Y", now=1000)  # b's wall clock is behind
    assert op_key(y.record) > op_key(x.record)


@pytest.fixture
def busy_peer() -> tuple[Replica, list[Op]]:
    """Peer A with two agents, a few DMs, an update and a receipt; returns it with its operations in order."""
    a = Replica.create("A")
    x, y = register(a, "X"), register(a, "Y")
    ops = [x.record, y.record]
    ops.append(dm(x, "Y", "one"))
    ops.append(dm(y, "X", "two"))
    ops.append(update(x, 1, status="busy"))
    ops.append(receipt(y, ops[2]))
    ops.append(dm(x, "Y", "three"))
    return a, ops


def test_sync_answer_catches_up_a_replica_that_missed_ops(busy_peer: tuple[Replica, list[Op]]) -> None:
    source, ops = busy_peer
    behind = fresh("B", [ops[0], ops[1], ops[3]])  # saw 1, 2 and 4: floor 2, extra {4}
    assert behind.sync_request().seen == {"A": 2}
    answer = source.sync_answer(behind.sync_request())
    # agents first, then by age with each receipt right after its message
    assert [op.seq for op in answer] == [5, 3, 6, 4, 7]
    assert answer == sorted(answer, key=sync_order)
    behind.receive_many(answer)
    assert behind.state.digest() == source.state.digest()
    assert visible_snapshot(behind.state) == visible_snapshot(source.state)
    assert source.sync_answer(behind.sync_request()) == []
    assert behind.sync_answer(source.sync_request()) == []


def test_sync_answer_is_in_sync_order_across_origins(busy_peer: tuple[Replica, list[Op]]) -> None:
    source, ops = busy_peer
    other = Replica.create("B")
    other.receive_many(ops)
    z = register(other, "Z", now=1)
    note = dm(z, "X", "from B")
    source.receive_many([z.record, note])
    answer = source.sync_answer(Replica.create("C").sync_request())
    assert answer == sorted(answer, key=sync_order)
    # X's first record is superseded by a newer record of its claim (not stored, not sent)
    assert {(op.origin, op.seq) for op in answer} == {(op.origin, op.seq) for op in [*ops[1:], z.record, note]}
    assert len(answer) == len(ops) + 1  # each operation once, though the state may store one twice


def test_sync_answer_is_empty_when_digests_agree(busy_peer: tuple[Replica, list[Op]]) -> None:
    source, ops = busy_peer
    twin = fresh("B", ops)
    assert twin.state.digest() == source.state.digest()
    assert source.sync_answer(twin.sync_request()) == []
    # even with a floor that claims nothing was seen: equal digests mean there is nothing to send
    request = twin.sync_request()
    assert source.sync_answer(type(request)(request.digest, {})) == []


# -------------------------------------------------------------------------------------------------------------- digest


def test_digest_is_independent_of_arrival_order(busy_peer: tuple[Replica, list[Op]]) -> None:
    source, ops = busy_peer
    forward = fresh("F", ops)
    backward = fresh("B", list(reversed(ops)))
    shuffled = fresh("S", [ops[i] for i in (4, 0, 6, 2, 5, 1, 3)])
    assert forward.state.digest() == backward.state.digest() == shuffled.state.digest() == source.state.digest()
    assert visible_snapshot(backward.state) == visible_snapshot(forward.state)
    assert visible_snapshot(shuffled.state) == visible_snapshot(forward.state)
    assert rebuild(source.state, reverse=True).digest() == source.state.digest()


def test_digest_differs_when_an_op_is_missing(busy_peer: tuple[Replica, list[Op]]) -> None:
    source, ops = busy_peer
    stored = {op_id(op) for op in source.state.stored_ops()}
    # X's first record is superseded by a newer one of the same claim, which is all a replica keeps
    assert [index for index, op in enumerate(ops) if op_id(op) not in stored] == [0]
    for missing in range(1, len(ops)):
        partial = fresh("P", ops[:missing] + ops[missing + 1 :])
        assert partial.state.digest() != source.state.digest(), f"op {missing} missing went unnoticed"
