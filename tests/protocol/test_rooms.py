"""Scenario tests for rooms: the rules of the fold (:mod:`agent_comms.protocol.rooms`) through the replicated state.

Every scenario is deterministic: operations are made on explicit replicas at explicit times and delivered in an
explicit order. Concurrency is modelled by two peers making operations neither has seen from the other, then
delivering them in both orders.
"""

from __future__ import annotations

from dataclasses import dataclass

import pytest
from simnet import receipt_body, visible_snapshot

from agent_comms.protocol.changes import AgentChanged, Change, MessageAdded, RoomChanged
from agent_comms.protocol.ops import (
    AgentUpsert,
    Membership,
    MembershipAction,
    Op,
    RoomCreate,
    RoomMessage,
    RoomType,
    op_id,
    op_key,
)
from agent_comms.protocol.replica import Replica
from agent_comms.protocol.rooms import RoomChange, RoomLog, RoomView

# ------------------------------------------------------------------------------------------------------------- helpers


@dataclass(frozen=True)
class Agent:
    """An agent hosted on ``replica`` under claim ``(inc, replica.peer_id)``; ``record`` is its first upsert."""

    id: str
    replica: Replica
    inc: int
    record: Op


def register(replica: Replica, agent_id: str, now: int = 0) -> Agent:
    """Claim ``agent_id`` on ``replica`` (``now=0``: just after the replica's last stamp)."""
    inc = replica.hlc.tick(now)
    body = AgentUpsert(
        agent_id=agent_id,
        peer_id=replica.peer_id,
        incarnation=inc,
        version=0,
        name=agent_id,
        harness="t",
        cwd="/w",
        pid=1,
        process_start=1.0,
    )
    op, _ = replica.make(body, now)
    return Agent(agent_id, replica, inc, op)


def create(agent: Agent, name: str, room_type: RoomType = "public", now: int = 0) -> tuple[Op, list[Change]]:
    body = RoomCreate(
        room_id=agent.replica.next_op_id(),
        name=name,
        room_type=room_type,
        description="a room",
        author=agent.id,
        author_inc=agent.inc,
    )
    return agent.replica.make(body, now)


def act(
    agent: Agent, room_id: str, action: MembershipAction, subject: str = "", reason: str = "", now: int = 0
) -> tuple[Op, list[Change]]:
    body = Membership(room_id, action, agent.id, agent.inc, subject=subject, reason=reason)
    return agent.replica.make(body, now)


def say(agent: Agent, room_id: str, text: str = "hi", now: int = 0) -> tuple[Op, list[Change]]:
    return agent.replica.make(RoomMessage(room_id, agent.id, agent.inc, text), now)


def changed(room_id: str, name: str, *changes: RoomChange) -> list[Change]:
    return [RoomChanged(room_id, name, c) for c in changes]


def view_of(replica: Replica, room_id: str) -> RoomView:
    view = replica.state.rooms[room_id].view
    assert view is not None
    return view


def fresh(peer_id: str, ops: list[Op]) -> Replica:
    """A new replica that received ``ops`` in that order."""
    replica = Replica.create(peer_id)
    replica.receive_many(ops)
    return replica


@pytest.fixture
def peer() -> Replica:
    return Replica.create("A")


@pytest.fixture
def trio(peer: Replica) -> tuple[Agent, Agent, Agent]:
    """Owner-to-be ``O`` and two more agents ``X``, ``Y``, all hosted on peer ``A``."""
    return register(peer, "O"), register(peer, "X"), register(peer, "Y")


# --------------------------------------------------------------------------------------------------------- basic rules


def test_creator_owns_the_room_and_is_its_first_member(peer: Replica, trio: tuple[Agent, Agent, Agent]) -> None:
    owner, _x, _y = trio
    op, changes = create(owner, "lobby", "private")
    rid = op_id(op)
    assert changes == changed(rid, "lobby", RoomChange("created", "O"), RoomChange("joined", "O"))
    view = peer.state.room("lobby")
    assert view is not None
    assert (view.creator, view.owner, view.room_type) == ("O", "O", "private")
    assert view.members == {"O": op_key(op)}
    assert view.created == op_key(op)
    assert peer.state.room_id("lobby") == rid


def test_join_public_room(peer: Replica, trio: tuple[Agent, Agent, Agent]) -> None:
    owner, x, _y = trio
    rid = op_id(create(owner, "lobby", "public")[0])
    join, changes = act(x, rid, "join")
    assert changes == changed(rid, "lobby", RoomChange("joined", "X"))
    assert view_of(peer, rid).members == {"O": view_of(peer, rid).created, "X": op_key(join)}
    # joining twice changes nothing
    assert act(x, rid, "join")[1] == []


def test_join_private_room_without_invite_has_no_effect(peer: Replica, trio: tuple[Agent, Agent, Agent]) -> None:
    owner, x, _y = trio
    rid = op_id(create(owner, "dev", "private")[0])
    assert act(x, rid, "join")[1] == []
    view = view_of(peer, rid)
    assert set(view.members) == {"O"}
    assert view.invited == {}


def test_invite_then_join_consumes_the_invite(peer: Replica, trio: tuple[Agent, Agent, Agent]) -> None:
    owner, x, _y = trio
    rid = op_id(create(owner, "dev", "private")[0])
    assert act(owner, rid, "invite", "X")[1] == changed(rid, "dev", RoomChange("invited", "X", by="O"))
    assert view_of(peer, rid).invited == {"X": "O"}
    # inviting again while the invite is outstanding changes nothing
    assert act(owner, rid, "invite", "X")[1] == []
    assert act(x, rid, "join")[1] == changed(rid, "dev", RoomChange("joined", "X"))
    view = view_of(peer, rid)
    assert set(view.members) == {"O", "X"}
    assert view.invited == {}
    # the invite was consumed: after leaving, X cannot come back uninvited
    assert act(x, rid, "leave")[1] == changed(rid, "dev", RoomChange("left", "X"))
    assert act(x, rid, "join")[1] == []
    assert set(view_of(peer, rid).members) == {"O"}


def test_decline_removes_the_invite_and_names_the_inviter(peer: Replica, trio: tuple[Agent, Agent, Agent]) -> None:
    owner, x, _y = trio
    rid = op_id(create(owner, "dev", "private")[0])
    act(owner, rid, "invite", "X")
    assert act(x, rid, "decline", reason="busy")[1] == changed(
        rid, "dev", RoomChange("declined", "X", by="O", reason="busy")
    )
    view = view_of(peer, rid)
    assert view.invited == {}
    assert set(view.members) == {"O"}
    assert act(x, rid, "decline")[1] == []  # nothing left to decline
    assert act(x, rid, "join")[1] == []  # the invite is gone


def test_invite_of_a_member_has_no_effect(peer: Replica, trio: tuple[Agent, Agent, Agent]) -> None:
    owner, x, _y = trio
    rid = op_id(create(owner, "lobby", "public")[0])
    act(x, rid, "join")
    assert act(owner, rid, "invite", "X")[1] == []
    assert act(owner, rid, "invite", "")[1] == []
    assert view_of(peer, rid).invited == {}


@pytest.mark.parametrize(("action", "subject"), [("invite", "Y"), ("kick", "O"), ("kick", "Y"), ("destroy", "")])
def test_only_the_owner_invites_kicks_or_destroys(
    peer: Replica, trio: tuple[Agent, Agent, Agent], action: MembershipAction, subject: str
) -> None:
    owner, x, y = trio
    rid = op_id(create(owner, "lobby", "public")[0])
    act(x, rid, "join")
    act(y, rid, "join")
    before = view_of(peer, rid)
    snapshot = (before.owner, dict(before.members), dict(before.invited), set(before.banned), before.destroyed)
    assert act(x, rid, action, subject)[1] == []
    after = view_of(peer, rid)
    assert (after.owner, after.members, after.invited, after.banned, after.destroyed) == snapshot
    assert set(after.members) == {"O", "X", "Y"}
    assert peer.state.room("lobby") is not None


# ------------------------------------------------------------------------------------------------------ kicks and bans


def test_kick_bans_until_invited_again(peer: Replica, trio: tuple[Agent, Agent, Agent]) -> None:
    owner, x, _y = trio
    rid = op_id(create(owner, "lobby", "public")[0])
    act(x, rid, "join")
    assert act(owner, rid, "kick", "X", reason="spam")[1] == changed(
        rid, "lobby", RoomChange("kicked", "X", by="O", reason="spam")
    )
    view = view_of(peer, rid)
    assert set(view.members) == {"O"}
    assert view.banned == {"X"}
    # banned: joining the public room has no effect
    assert act(x, rid, "join")[1] == []
    assert set(view_of(peer, rid).members) == {"O"}
    # kicking someone who is neither member nor invitee changes nothing
    assert act(owner, rid, "kick", "X")[1] == []
    # a new invite lets X back in, and joining lifts the ban
    assert act(owner, rid, "invite", "X")[1] == changed(rid, "lobby", RoomChange("invited", "X", by="O"))
    assert act(x, rid, "join")[1] == changed(rid, "lobby", RoomChange("joined", "X"))
    view = view_of(peer, rid)
    assert set(view.members) == {"O", "X"}
    assert view.banned == set()
    assert view.invited == {}


def test_owner_cannot_be_kicked(peer: Replica, trio: tuple[Agent, Agent, Agent]) -> None:
    owner, x, _y = trio
    rid = op_id(create(owner, "lobby", "public")[0])
    act(x, rid, "join")
    assert act(owner, rid, "kick", "O")[1] == []
    view = view_of(peer, rid)
    assert (view.owner, set(view.members), view.banned) == ("O", {"O", "X"}, set())


def test_kicking_an_invitee_revokes_the_invite(peer: Replica, trio: tuple[Agent, Agent, Agent]) -> None:
    owner, x, _y = trio
    rid = op_id(create(owner, "dev", "private")[0])
    act(owner, rid, "invite", "X")
    assert act(owner, rid, "kick", "X")[1] == changed(rid, "dev", RoomChange("kicked", "X", by="O"))
    view = view_of(peer, rid)
    assert view.invited == {}
    assert view.banned == {"X"}
    assert act(x, rid, "join")[1] == []
    assert act(x, rid, "decline")[1] == []
    assert set(view_of(peer, rid).members) == {"O"}


# ----------------------------------------------------------------------------------------------------------- ownership


def test_owner_leaving_passes_ownership_to_the_earliest_joined_member(peer: Replica) -> None:
    owner = register(peer, "O")
    zed = register(peer, "zed")  # joins first, sorts last: the choice is by join time, not by name
    amy = register(peer, "amy")
    rid = op_id(create(owner, "lobby", "public")[0])
    act(zed, rid, "join")
    act(amy, rid, "join")
    assert act(owner, rid, "leave", reason="bye")[1] == changed(
        rid, "lobby", RoomChange("left", "O", reason="bye"), RoomChange("owner", "zed", by="O")
    )
    view = view_of(peer, rid)
    assert view.owner == "zed"
    assert set(view.members) == {"zed", "amy"}
    # the new owner has the owner's powers, the old one lost them
    assert act(owner, rid, "join")[1] == changed(rid, "lobby", RoomChange("joined", "O"))
    assert act(owner, rid, "kick", "amy")[1] == []
    assert act(zed, rid, "kick", "amy")[1] == changed(rid, "lobby", RoomChange("kicked", "amy", by="zed"))
    assert act(zed, rid, "kick", "zed")[1] == []


def test_rejoining_member_goes_to_the_back_of_the_succession(peer: Replica) -> None:
    owner, a, b = register(peer, "O"), register(peer, "a"), register(peer, "b")
    rid = op_id(create(owner, "lobby", "public")[0])
    act(a, rid, "join")
    act(b, rid, "join")
    act(a, rid, "leave")
    act(a, rid, "join")  # a's membership now starts after b's
    assert act(owner, rid, "leave")[1] == changed(
        rid, "lobby", RoomChange("left", "O"), RoomChange("owner", "b", by="O")
    )


def test_owner_leaving_an_empty_room_keeps_it_and_may_rejoin_a_private_room(
    peer: Replica, trio: tuple[Agent, Agent, Agent]
) -> None:
    owner, x, _y = trio
    rid = op_id(create(owner, "dev", "private")[0])
    assert act(owner, rid, "leave")[1] == changed(rid, "dev", RoomChange("left", "O"))
    view = view_of(peer, rid)
    assert view.owner == "O"
    assert view.members == {}
    assert peer.state.room("dev") is view  # an empty room still exists
    assert act(x, rid, "join")[1] == []  # still private
    join, changes = act(owner, rid, "join")
    assert changes == changed(rid, "dev", RoomChange("joined", "O"))
    assert view_of(peer, rid).members == {"O": op_key(join)}
    # the absent owner kept its powers
    act(owner, rid, "leave")
    assert act(owner, rid, "invite", "X")[1] == changed(rid, "dev", RoomChange("invited", "X", by="O"))


# ------------------------------------------------------------------------------------------------------------- destroy


def test_destroy_ends_the_room_and_nothing_after_it_is_visible(peer: Replica, trio: tuple[Agent, Agent, Agent]) -> None:
    owner, x, y = trio
    rid = op_id(create(owner, "lobby", "public")[0])
    act(x, rid, "join")
    message, changes = say(x, rid, "before")
    assert changes == [MessageAdded(message, rid)]
    assert rid in peer.state.histories

    destroy, changes = act(owner, rid, "destroy")
    assert changes == changed(rid, "lobby", RoomChange("destroyed", "O", by="O"))
    view = view_of(peer, rid)
    assert view.members == {}
    assert view.destroyed == op_key(destroy)
    assert view.destroyed_by == "O"
    # The bounded history is kept (a destroy may stop counting if a claim arrives late, rule 4 of state.py).
    assert peer.state.histories[rid].messages == [message]
    assert peer.state.room("lobby") is None
    assert peer.state.room_id("lobby") is None

    # nothing after the destroy takes effect
    assert act(y, rid, "join")[1] == []
    assert act(owner, rid, "join")[1] == []
    assert act(owner, rid, "invite", "Y")[1] == []
    assert act(owner, rid, "destroy")[1] == []
    late, changes = say(owner, rid, "after")
    assert changes == []
    assert not peer.state.message_visible(late)
    view = view_of(peer, rid)
    assert (view.members, view.invited, view.destroyed) == ({}, {}, op_key(destroy))

    # the name is free again: a new instance becomes the live room
    again, changes = create(y, "lobby", "private")
    new_rid = op_id(again)
    assert changes == changed(new_rid, "lobby", RoomChange("created", "Y"), RoomChange("joined", "Y"))
    assert peer.state.room_id("lobby") == new_rid
    live = peer.state.room("lobby")
    assert live is not None
    assert (live.owner, set(live.members), live.room_type) == ("Y", {"Y"}, "private")
    assert [v.room_id for v in peer.state.rooms_named("lobby")] == [rid, new_rid]
    message, changes = say(y, new_rid)
    assert changes == [MessageAdded(message, new_rid)]


def test_receipt_for_a_destroyed_rooms_message_converges() -> None:
    """A receipt that arrives after its room was destroyed ends up exactly like one that arrived before.

    (An earlier version dropped a destroyed room's messages and receipts, and a replica that heard of the destroy
    first kept a late receipt forever while the others did not; anti-entropy could not fix it since both had *seen*
    the same operations.)
    """
    a, b = Replica.create("A"), Replica.create("B")
    owner, x = register(a, "O"), register(b, "X")
    create_op, _ = create(owner, "lobby", "public")
    rid = op_id(create_op)
    b.receive_many([owner.record, create_op])
    join, _ = act(x, rid, "join")
    a.receive(join)
    message, _ = say(owner, rid, "hi")
    b.receive(message)
    receipt, _ = b.make(receipt_body(message, "X", x.inc, "read", rid), 0)
    destroy, _ = act(owner, rid, "destroy")

    base = [owner.record, x.record, create_op, join, message]
    receipt_first = fresh("R1", [*base, receipt, destroy])
    destroy_first = fresh("R2", [*base, destroy, receipt])

    assert receipt_first.state.receipt_status(op_id(message), "X") == "read"
    assert destroy_first.state.receipt_status(op_id(message), "X") == "read"
    assert visible_snapshot(destroy_first.state) == visible_snapshot(receipt_first.state)
    assert destroy_first.state.digest() == receipt_first.state.digest()


# ----------------------------------------------------------------------------------------------------- claims (rule 6)


def test_membership_under_an_unpublished_claim_has_no_effect() -> None:
    a, rogue = Replica.create("A"), Replica.create("Z")
    owner, x = register(a, "O"), register(a, "X")
    create_op, _ = create(owner, "lobby", "public")
    rid = op_id(create_op)
    join, _ = act(x, rid, "join")
    rogue.receive_many([owner.record, x.record, create_op, join])
    # the rogue peer speaks as the owner, under the owner's real incarnation (but its own peer id)
    forged, _ = rogue.make(Membership(rid, "kick", "O", owner.inc, subject="X"), 0)

    target = fresh("R", [owner.record, x.record, create_op, join])
    assert target.receive(forged) == []
    assert set(view_of(target, rid).members) == {"O", "X"}

    # before the owner's claim is known the forged kick counts; once it is known, the room is refolded
    early = fresh("R2", [create_op, x.record, join, forged])
    assert set(view_of(early, rid).members) == {"O"}
    changes = early.receive(owner.record)
    assert changes == [
        AgentChanged("O", owner.record.body, True, None, False),  # type: ignore[arg-type]
        *changed(rid, "lobby", RoomChange("joined", "X")),
    ]
    assert visible_snapshot(early.state) == visible_snapshot(target.state)


def test_forged_destroy_does_not_lose_history_once_the_claim_is_known() -> None:
    """Rule 4: whether an operation counts is judged from the final set of claims, whatever the arrival order.

    A rogue peer destroys a room in the owner's name. A replica that knows the owner's claim ignores it; one that
    learns the claim afterwards refolds the room back to life, and must end up holding the same messages.
    """
    a, rogue = Replica.create("A"), Replica.create("Z")
    owner = register(a, "O")
    create_op, _ = create(owner, "lobby", "public")
    rid = op_id(create_op)
    message, _ = say(owner, rid, "keep me")
    rogue.receive_many([owner.record, create_op, message])
    forged, _ = rogue.make(Membership(rid, "destroy", "O", owner.inc), 0)

    claim_first = fresh("R1", [owner.record, create_op, message, forged])
    claim_last = fresh("R2", [create_op, message, forged, owner.record])

    for replica in (claim_first, claim_last):
        assert replica.state.room_id("lobby") == rid
        assert view_of(replica, rid).destroyed is None
    assert [op_id(m) for m in claim_first.state.histories[rid].messages] == [op_id(message)]
    assert rid in claim_last.state.histories
    assert [op_id(m) for m in claim_last.state.histories[rid].messages] == [op_id(message)]
    assert claim_last.state.digest() == claim_first.state.digest()


# --------------------------------------------------------------------------------------------------------- concurrency


@pytest.fixture
def two_peers() -> tuple[Agent, Agent, Op, list[Op]]:
    """Owner ``O`` on peer A, ``X`` on peer B, a public room ``lobby`` that X joined; both peers in sync.

    Returns the two agents, the creation, and every operation so far (in causal order).
    """
    a, b = Replica.create("A"), Replica.create("B")
    owner = register(a, "O", now=1000)
    x = register(b, "X", now=1000)
    a.receive(x.record)
    b.receive(owner.record)
    create_op, _ = create(owner, "lobby", "public", now=1001)
    b.receive(create_op)
    join, _ = act(x, op_id(create_op), "join", now=1002)
    a.receive(join)
    return owner, x, create_op, [owner.record, x.record, create_op, join]


def converge_both_orders(history: list[Op], first: Op, second: Op) -> tuple[Replica, Replica]:
    """Deliver the concurrent pair in both orders to fresh replicas; they must agree."""
    one = fresh("R1", [*history, first, second])
    two = fresh("R2", [*history, second, first])
    assert visible_snapshot(one.state) == visible_snapshot(two.state)
    assert one.state.digest() == two.state.digest()
    return one, two


@pytest.mark.parametrize(("send_ms", "visible"), [(2000, True), (2010, False)])
def test_concurrent_kick_and_send(two_peers: tuple[Agent, Agent, Op, list[Op]], send_ms: int, visible: bool) -> None:
    """O kicks X at 2005 on A while X posts on B: the message counts iff it is before the kick in total order."""
    owner, x, create_op, history = two_peers
    rid = op_id(create_op)
    kick, _ = act(owner, rid, "kick", "X", now=2005)
    message, sent = say(x, rid, now=send_ms)
    assert sent == [MessageAdded(message, rid)]  # on B, X is still a member
    assert (op_key(message) < op_key(kick)) is visible

    one, two = converge_both_orders(history, kick, message)
    owner.replica.receive(message)
    x.replica.receive(kick)
    for replica in (one, two, owner.replica, x.replica):
        view = view_of(replica, rid)
        assert set(view.members) == {"O"}
        assert view.banned == {"X"}
        assert replica.state.message_visible(message) is visible
        assert op_id(message) in replica.state.messages
    assert visible_snapshot(owner.replica.state) == visible_snapshot(one.state)
    assert visible_snapshot(x.replica.state) == visible_snapshot(one.state)


@pytest.mark.parametrize(("join_ms", "member"), [(2000, False), (2010, True)])
def test_concurrent_kick_and_rejoin(two_peers: tuple[Agent, Agent, Op, list[Op]], join_ms: int, member: bool) -> None:
    """X left; O kicks X at 2005 on A while X rejoins on B.

    Join first: X is a member when kicked, so it is out and banned. Kick first: X is neither member nor invitee,
    so the kick has no effect and the later join succeeds.
    """
    owner, x, create_op, history = two_peers
    rid = op_id(create_op)
    leave, _ = act(x, rid, "leave", now=1500)
    owner.replica.receive(leave)
    history = [*history, leave]
    kick, kick_changes = act(owner, rid, "kick", "X", now=2005)
    assert kick_changes == []  # on A, X is not in the room
    join, join_changes = act(x, rid, "join", now=join_ms)
    assert join_changes == changed(rid, "lobby", RoomChange("joined", "X"))

    one, two = converge_both_orders(history, kick, join)
    for replica in (one, two):
        view = view_of(replica, rid)
        assert ("X" in view.members) is member
        assert view.banned == (set() if member else {"X"})

    # the peers that made the operations reach the same verdict, reporting the difference as they learn of it
    on_a = owner.replica.receive(join)
    on_b = x.replica.receive(kick)
    if member:
        assert on_a == changed(rid, "lobby", RoomChange("joined", "X"))
        assert on_b == []
    else:
        assert on_a == []  # the join lands before the kick already held: a refold, with no net change
        assert on_b == changed(rid, "lobby", RoomChange("kicked", "X", by="O"))
    assert visible_snapshot(owner.replica.state) == visible_snapshot(one.state)
    assert visible_snapshot(x.replica.state) == visible_snapshot(one.state)


@pytest.mark.parametrize(("a_ms", "b_ms"), [(2000, 2005), (2005, 2000), (2000, 2000)])
def test_concurrent_creations_of_one_name_merge(a_ms: int, b_ms: int) -> None:
    """Both instances become one room: the first in total order gives its id and owner, and both creators stay
    members with their messages; nobody is told the room was destroyed."""
    a, b = Replica.create("A"), Replica.create("B")
    alice, bob = register(a, "alice", now=1000), register(b, "bob", now=1000)
    a.receive(bob.record)
    b.receive(alice.record)
    on_a, _ = create(alice, "lobby", "public", now=a_ms)
    on_b, _ = create(bob, "lobby", "public", now=b_ms)
    hello_a, _ = say(alice, op_id(on_a), "from alice", now=a_ms + 1)
    hello_b, _ = say(bob, op_id(on_b), "from bob", now=b_ms + 1)
    a_first = op_key(on_a) < op_key(on_b)
    assert a_first == (a_ms <= b_ms)  # equal stamps: origin "A" < "B" decides
    first, later = (on_a, on_b) if a_first else (on_b, on_a)
    first_replica, later_replica = (a, b) if a_first else (b, a)
    owner, joiner = ("alice", "bob") if a_first else ("bob", "alice")

    # the first creator's peer learns of the later instance: its creator joins the room
    assert first_replica.receive(later) == changed(op_id(first), "lobby", RoomChange("joined", joiner))
    # the later creator's peer learns that its room merged into the first one: it gains a member and an owner
    changes = later_replica.receive(first)
    assert set(changes) == set(changed(op_id(first), "lobby", RoomChange("joined", owner), RoomChange("owner", owner)))
    assert not any(isinstance(c, RoomChanged) and c.change.kind == "destroyed" for c in changes)
    a.receive(hello_b)
    b.receive(hello_a)
    for replica in (a, b):
        state = replica.state
        view = state.room("lobby")
        assert view is not None
        assert state.room_id("lobby") == op_id(first)
        assert [v.room_id for v in state.rooms_named("lobby")] == [op_id(first)]
        assert view.owner == owner
        assert set(view.members) == {"alice", "bob"}
        assert list(view.founders) == [op_id(first), op_id(later)]
        assert state.room_accepted(op_id(later))
        assert view_of(replica, op_id(later)) is view
        # the messages of both instances are in the one history, in the total order
        assert [op_id(m) for m in state.room_messages(op_id(first))] == [
            op_id(m) for m in sorted([hello_a, hello_b], key=op_key)
        ]
        assert state.room_messages(op_id(later)) == state.room_messages(op_id(first))
    assert visible_snapshot(a.state) == visible_snapshot(b.state)
    assert a.state.digest() == b.state.digest()


def test_merged_room_keeps_both_memberships_and_acts_on_either_id() -> None:
    """Members invited into the later instance stay members with their messages; operations addressed to either
    instance act on the one room; the merged room takes the most restrictive type."""
    a, b = Replica.create("A"), Replica.create("B")
    alice, dave = register(a, "alice", now=1000), register(a, "dave", now=1000)
    bob, carol = register(b, "bob", now=1000), register(b, "carol", now=1000)
    first, _ = create(alice, "dev", "public", now=2000)
    later, _ = create(bob, "dev", "private", now=2001)
    a_ops = [dave.record, alice.record, first, act(dave, op_id(first), "join", now=2002)[0]]
    a_ops.append(say(dave, op_id(first), "dave here", now=2003)[0])
    b_ops = [bob.record, carol.record, later, act(bob, op_id(later), "invite", "carol", now=2002)[0]]
    b_ops.append(act(carol, op_id(later), "join", now=2003)[0])
    b_ops.append(say(carol, op_id(later), "carol here", now=2004)[0])
    a.receive_many(b_ops)
    b.receive_many(a_ops)
    assert visible_snapshot(a.state) == visible_snapshot(b.state)
    view = view_of(a, op_id(first))
    assert (view.owner, view.room_type) == ("alice", "private")
    assert set(view.members) == {"alice", "bob", "carol", "dave"}
    assert [m.body.content for m in a.state.room_messages(op_id(first))] == ["dave here", "carol here"]
    # carol leaves through the id she knows; bob (a founder) invites and kicks through his own instance's id
    _leave, changes = act(carol, op_id(later), "leave", now=3000)
    assert changes == changed(op_id(first), "dev", RoomChange("left", "carol"))
    _kick, changes = act(bob, op_id(later), "kick", "dave", now=3001)
    assert changes == changed(op_id(first), "dev", RoomChange("kicked", "dave", by="bob"))
    # but not through the first instance's id, and never the owner
    assert act(bob, op_id(first), "invite", "carol", now=3002)[1] == []
    assert act(bob, op_id(later), "kick", "alice", now=3003)[1] == []
    # a founder's destroy of its own instance only makes it leave; the room lives on
    _destroy, changes = act(bob, op_id(later), "destroy", now=3004)
    assert changes == changed(op_id(first), "dev", RoomChange("left", "bob"))
    assert b.state.room("dev") is not None
    assert set(view_of(b, op_id(later)).members) == {"alice"}
    a.receive_many(b.state.stored_ops())
    assert visible_snapshot(a.state) == visible_snapshot(b.state)


def test_instance_created_after_the_destroy_is_a_new_room() -> None:
    """Reuse of a name: an instance created after the room was destroyed does not merge into it."""
    a = Replica.create("A")
    alice, bob = register(a, "alice"), register(a, "bob")
    first, _ = create(alice, "lobby")
    old_message, _ = say(alice, op_id(first), "old")
    act(alice, op_id(first), "destroy")
    second, changes = create(bob, "lobby")
    assert changes == changed(op_id(second), "lobby", RoomChange("created", "bob"), RoomChange("joined", "bob"))
    assert [v.room_id for v in a.state.rooms_named("lobby")] == [op_id(first), op_id(second)]
    assert a.state.room_id("lobby") == op_id(second)
    assert a.state.room_messages(op_id(second)) == []
    assert a.state.message_visible(old_message)  # the destroyed room keeps its history until the horizon


def test_late_creation_between_a_destroy_and_a_new_instance_regroups() -> None:
    """Arrival order does not matter: a late instance created before the first room's destroy merges into it."""
    a, b = Replica.create("A"), Replica.create("B")
    alice, bob = register(a, "alice", now=1000), register(b, "bob", now=1000)
    first, _ = create(alice, "lobby", now=2000)
    concurrent, _ = create(bob, "lobby", now=2001)
    bob_says, _ = say(bob, op_id(concurrent), "still here", now=2002)
    destroy, _ = act(alice, op_id(first), "destroy", now=2003)
    again, _ = create(alice, "lobby", now=2004)
    everything = [alice.record, bob.record, first, concurrent, bob_says, destroy, again]
    forward, backward = fresh("F", everything), fresh("R", everything[::-1])
    for replica in (forward, backward):
        assert [list(v.founders) for v in replica.state.rooms_named("lobby")] == [
            [op_id(first), op_id(concurrent)],
            [op_id(again)],
        ]
        assert replica.state.room_id("lobby") == op_id(again)
    assert visible_snapshot(forward.state) == visible_snapshot(backward.state)


@pytest.fixture
def private_ops() -> tuple[Agent, Agent, Agent, Op, list[Op]]:
    """alice (peer A) owns private ``ops`` with members dave (A) and carol (peer B), then kicks carol; the two
    peers are in sync. Returns alice, carol, dave, the creation, and every operation so far (in causal order)."""
    a, b = Replica.create("A"), Replica.create("B")
    alice, dave = register(a, "alice", now=1000), register(a, "dave", now=1000)
    carol = register(b, "carol", now=1000)
    create_op, _ = create(alice, "ops", "private", now=2000)
    rid = op_id(create_op)
    ops = [alice.record, dave.record, carol.record, create_op]
    ops += [act(alice, rid, "invite", "dave", now=2001)[0], act(dave, rid, "join", now=2002)[0]]
    ops.append(act(alice, rid, "invite", "carol", now=2003)[0])
    b.receive_many(ops)
    join, _ = act(carol, rid, "join", now=2004)
    a.receive(join)
    ops += [join, say(alice, rid, "the plan", now=2005)[0], act(alice, rid, "kick", "carol", now=2006)[0]]
    a.receive_many(ops)
    b.receive_many(ops)
    assert visible_snapshot(a.state) == visible_snapshot(b.state)
    return alice, carol, dave, create_op, ops


def test_creating_a_live_rooms_name_later_does_not_take_it_over(
    private_ops: tuple[Agent, Agent, Agent, Op, list[Op]],
) -> None:
    """carol, kicked, creates ``ops`` again an hour later and acts through her instance: it merges, but she stays
    out and banned, reads nothing, and can neither kick nor invite; the room is as alice left it."""
    alice, carol, _dave, create_op, history = private_ops
    rid = op_id(create_op)
    hour = 3_600_000
    again, _ = create(carol, "ops", "private", now=2006 + hour)
    mine = op_id(again)
    later = [again]
    later.append(act(carol, mine, "kick", "dave", now=2007 + hour)[0])
    later.append(act(carol, mine, "invite", "mallory", now=2008 + hour)[0])
    later.append(act(carol, rid, "join", now=2009 + hour)[0])
    later.append(say(carol, mine, "I am back", now=2010 + hour)[0])
    on_a = alice.replica
    on_a.receive_many(later)
    for replica in (on_a, fresh("R", [*later, *history][::-1])):
        state = replica.state
        assert [list(v.founders) for v in state.rooms_named("ops")] == [[rid, mine]]
        view = state.room("ops")
        assert view is not None
        assert (view.owner, view.room_type) == ("alice", "private")
        assert set(view.members) == {"alice", "dave"}
        assert view.banned == {"carol"}
        assert view.invited == {}
        assert [m.body.content for m in state.room_messages(rid)] == ["the plan"]
    assert visible_snapshot(on_a.state) == visible_snapshot(fresh("S", [*history, *later]).state)


def test_a_creation_made_long_after_the_room_merges_and_keeps_its_messages() -> None:
    """Rule 7: a creation made in ignorance of a live room (a peer cut off for an hour) is never refused: its
    creator joins the room and what it posted meanwhile stays, on every peer alike."""
    a, b = Replica.create("A"), Replica.create("B")
    alice, bob = register(a, "alice", now=1000), register(b, "bob", now=1000)
    first, _ = create(alice, "lobby", now=2000)
    second, _ = create(bob, "lobby", now=2000 + 3_600_000)
    said, _ = say(bob, op_id(second), "made while cut off", now=2001 + 3_600_000)
    for ops in ([alice.record, bob.record, first, second, said], [said, second, bob.record, first, alice.record]):
        state = fresh("R", ops).state
        assert [list(v.founders) for v in state.rooms_named("lobby")] == [[op_id(first), op_id(second)]]
        view = state.room("lobby")
        assert view is not None
        assert set(view.members) == {"alice", "bob"}
        assert [m.body.content for m in state.room_messages(op_id(first))] == ["made while cut off"]


def test_a_merge_never_lifts_a_ban(private_ops: tuple[Agent, Agent, Agent, Op, list[Op]]) -> None:
    """carol, kicked, creates ``ops`` again: her instance merges but she stays out and banned, and
    neither she nor anyone else gets in through it."""
    alice, carol, dave, create_op, history = private_ops
    rid = op_id(create_op)
    mallory = register(carol.replica, "mallory", now=2007)
    again, _ = create(carol, "ops", "public", now=2008)
    mine = op_id(again)
    later = [mallory.record, again]
    later.append(act(carol, mine, "join", now=2009)[0])
    later.append(act(mallory, mine, "join", now=2010)[0])
    later.append(act(carol, mine, "kick", "dave", now=2011)[0])
    later.append(say(carol, mine, "I am back", now=2012)[0])
    for replica in (fresh("F", [*history, *later]), fresh("R", [*history, *later][::-1])):
        state = replica.state
        assert [list(v.founders) for v in state.rooms_named("ops")] == [[rid, mine]]
        view = state.room("ops")
        assert view is not None
        assert (view.owner, view.room_type) == ("alice", "private")
        assert set(view.members) == {"alice", "dave"}
        assert view.banned == {"carol"}
        assert [m.body.content for m in state.room_messages(rid)] == ["the plan"]
    del alice, dave


def test_a_kicked_founder_loses_its_rights_until_it_is_a_member_again() -> None:
    """bob's instance merged into alice's room; alice kicks bob: through his instance he can no longer kick,
    invite, nor let anyone in by its public type. Invited back and joined, he has them again."""
    a, b = Replica.create("A"), Replica.create("B")
    alice, carol = register(a, "alice", now=1000), register(a, "carol", now=1000)
    bob, mallory = register(b, "bob", now=1000), register(b, "mallory", now=1000)
    first, _ = create(alice, "dev", "private", now=2000)
    later, _ = create(bob, "dev", "public", now=2001)
    rid, his = op_id(first), op_id(later)
    ops = [alice.record, carol.record, bob.record, mallory.record, first, later]
    a.receive_many(ops)
    b.receive_many(ops)
    ops += [act(alice, rid, "invite", "carol", now=2002)[0], act(carol, rid, "join", now=2003)[0]]
    ops.append(act(alice, rid, "kick", "bob", now=2004)[0])
    b.receive_many(ops)
    assert act(bob, his, "kick", "carol", now=2005)[1] == []
    assert act(bob, his, "invite", "bob", now=2006)[1] == []
    assert act(bob, his, "join", now=2007)[1] == []
    assert act(mallory, his, "join", now=2008)[1] == []
    view = b.state.room("dev")
    assert view is not None
    assert set(view.members) == {"alice", "carol"}
    assert view.banned == {"bob"}
    assert view.invited == {}
    a.receive_many(b.state.stored_ops())
    assert visible_snapshot(a.state) == visible_snapshot(b.state)
    assert visible_snapshot(fresh("R", list(b.state.stored_ops())[::-1]).state) == visible_snapshot(b.state)
    # invited back, he is a founder again
    a.receive(act(alice, rid, "invite", "bob", now=3000)[0])
    b.receive_many(a.state.stored_ops())
    act(bob, his, "join", now=3001)
    assert act(bob, his, "kick", "carol", now=3002)[1] == changed(rid, "dev", RoomChange("kicked", "carol", by="bob"))


def test_messages_through_a_merged_instance_after_a_concurrent_destroy_stay_visible() -> None:
    """alice destroys her ``ops`` while bob, cut off, goes on posting to his own ``ops``, which merges into hers.
    His messages stamped after her destroy stay visible to those who were members when the room ended; the room
    stays destroyed. Messages to the instance the destroy addressed still end with it."""
    a, b = Replica.create("A"), Replica.create("B")
    alice, dave = register(a, "alice", now=1000), register(a, "dave", now=1000)
    bob = register(b, "bob", now=1000)
    first, _ = create(alice, "ops", now=2000)
    rid = op_id(first)
    on_a = [alice.record, dave.record, first, act(dave, rid, "join", now=2001)[0]]
    later, _ = create(bob, "ops", now=2002)
    before, _ = say(bob, op_id(later), "before", now=2003)
    destroy, _ = act(alice, rid, "destroy", now=2004)
    after, sent = say(bob, op_id(later), "after", now=2005)
    assert sent == [MessageAdded(after, op_id(later))]  # acknowledged to bob
    too_late, _ = say(dave, rid, "too late", now=2006)  # made on A after the destroy: refused there already
    on_a += [destroy, too_late]
    on_b = [bob.record, later, before, after]
    a.receive_many(on_b)
    b.receive_many(on_a)
    for replica in (a, b, fresh("R", [*on_b, *on_a][::-1])):
        state = replica.state
        assert state.room("ops") is None
        view = view_of(replica, rid)
        assert view.destroyed == op_key(destroy)
        assert view.members == {}
        assert [m.body.content for m in state.room_messages(rid)] == ["before", "after"]
        assert view.was_member("dave", op_key(after), op_id(later))
        assert not state.message_visible(too_late)
    assert visible_snapshot(a.state) == visible_snapshot(b.state)


def test_late_membership_op_triggers_a_refold() -> None:
    """An invite delivered after the join it enabled: the refold lets the join take effect."""
    a = Replica.create("A")
    owner, x = register(a, "O"), register(a, "X")
    create_op, _ = create(owner, "dev", "private")
    rid = op_id(create_op)
    invite, _ = act(owner, rid, "invite", "X")
    join, _ = act(x, rid, "join")
    target = fresh("R", [owner.record, x.record, create_op])
    assert target.receive(join) == []  # no invite yet: no effect
    assert set(view_of(target, rid).members) == {"O"}
    assert target.receive(invite) == changed(rid, "dev", RoomChange("joined", "X"))
    view = view_of(target, rid)
    assert view.members == {"O": op_key(create_op), "X": op_key(join)}
    assert view.invited == {}
    assert visible_snapshot(target.state) == visible_snapshot(a.state)


def test_late_join_changes_the_succession_on_refold() -> None:
    """Y joined before X, but the replica hears of it only after the owner left: ownership moves to Y."""
    a = Replica.create("A")
    owner, x, y = register(a, "O"), register(a, "X"), register(a, "Y")
    create_op, _ = create(owner, "lobby", "public")
    rid = op_id(create_op)
    join_y, _ = act(y, rid, "join")
    join_x, _ = act(x, rid, "join")
    leave, _ = act(owner, rid, "leave")
    assert view_of(a, rid).owner == "Y"

    target = fresh("R", [owner.record, x.record, y.record, create_op, join_x])
    assert target.receive(leave) == changed(rid, "lobby", RoomChange("left", "O"), RoomChange("owner", "X", by="O"))
    assert target.receive(join_y) == changed(rid, "lobby", RoomChange("joined", "Y"), RoomChange("owner", "Y"))
    view = view_of(target, rid)
    assert view.owner == "Y"
    assert view.members == {"X": op_key(join_x), "Y": op_key(join_y)}
    assert visible_snapshot(target.state) == visible_snapshot(a.state)


def test_late_kick_before_a_destroy_and_ops_before_the_creation() -> None:
    """Everything arriving in reverse order still folds to the same room."""
    a = Replica.create("A")
    owner, x = register(a, "O"), register(a, "X")
    create_op, _ = create(owner, "lobby", "public")
    rid = op_id(create_op)
    join, _ = act(x, rid, "join")
    kick, _ = act(owner, rid, "kick", "X")
    rejoin, _ = act(x, rid, "join")  # banned: no effect
    destroy, _ = act(owner, rid, "destroy")
    ops = [create_op, join, kick, rejoin, destroy]
    target = fresh("R", [owner.record, x.record])
    for op in reversed(ops[1:]):
        assert target.receive(op) == []  # no creation yet: nothing to see
    assert target.state.rooms_named("lobby") == []
    assert target.receive(create_op) == changed(
        rid, "lobby", RoomChange("created", "O"), RoomChange("destroyed", "O", by="O")
    )
    view = view_of(target, rid)
    assert view.banned == {"X"}
    assert view.destroyed == op_key(destroy)
    assert view.intervals["X"] == [[op_key(join), op_key(kick)]]
    assert visible_snapshot(target.state) == visible_snapshot(a.state)


# ---------------------------------------------------------------------------------------------------------- visibility


def test_room_message_visibility_follows_membership(peer: Replica, trio: tuple[Agent, Agent, Agent]) -> None:
    owner, x, _y = trio
    rid = op_id(create(owner, "lobby", "public")[0])
    outsider, changes = say(x, rid, "not a member yet")
    assert changes == []
    assert op_id(outsider) in peer.state.messages  # held, but not visible
    assert not peer.state.message_visible(outsider)

    act(x, rid, "join")
    inside, changes = say(x, rid, "now a member")
    assert changes == [MessageAdded(inside, rid)]
    assert peer.state.message_visible(inside)

    act(owner, rid, "kick", "X")
    after_kick, changes = say(x, rid, "kicked")
    assert changes == []
    assert not peer.state.message_visible(after_kick)
    assert peer.state.message_visible(inside)  # what X said as a member stays visible
    held = [op_id(m) for m in peer.state.histories[rid].messages]
    assert held == [op_id(outsider), op_id(inside), op_id(after_kick)]
    assert visible_snapshot(peer.state)["conversations"][rid] == [op_id(inside)]


def test_message_before_the_room_exists_becomes_visible_with_it() -> None:
    a = Replica.create("A")
    owner = register(a, "O")
    create_op, _ = create(owner, "lobby", "public")
    rid = op_id(create_op)
    message, _ = say(owner, rid)
    target = fresh("R", [owner.record])
    assert target.receive(message) == []
    assert not target.state.message_visible(message)
    target.receive(create_op)
    assert target.state.message_visible(message)


# ---------------------------------------------------------------------------------------------------- RoomLog directly


def known(_agent: str, _incarnation: int, _peer: str, _stamp: int) -> bool:
    return True


def room_op(seq: int, body: RoomCreate | Membership, origin: str = "p") -> Op:
    """An operation stamped ``seq`` (its HLC too), so the total order is the order of ``seq``."""
    return Op(origin, seq, seq, body)


def member(seq: int, action: MembershipAction, author: str, subject: str = "") -> Op:
    return room_op(seq, Membership("p-1", action, author, 1, subject=subject))


def folded(log: RoomLog) -> RoomView:
    assert log.view is not None
    return log.view


CREATE = room_op(1, RoomCreate("p-1", "r", "private", "", "O", 1))


def test_roomlog_fold_in_order() -> None:
    log = RoomLog("p-1")
    assert log.add(CREATE, known) == [RoomChange("created", "O"), RoomChange("joined", "O")]
    assert log.add(member(2, "invite", "O", "X"), known) == [RoomChange("invited", "X", by="O")]
    assert log.add(member(3, "join", "X"), known) == [RoomChange("joined", "X")]
    assert log.add(member(3, "join", "X"), known) == []  # duplicate
    assert log.add(member(4, "leave", "O"), known) == [RoomChange("left", "O"), RoomChange("owner", "X", by="O")]
    assert log.view is not None
    assert (log.view.owner, log.view.members) == ("X", {"X": (3, "p", 3)})
    assert log.view.intervals == {"O": [[(1, "p", 1), (4, "p", 4)]], "X": [[(3, "p", 3), None]]}
    assert log.view.was_member("O", (3, "p", 3))
    assert not log.view.was_member("O", (4, "p", 4))
    assert [op.seq for op in log.stored_ops()] == [1, 2, 3, 4]


def test_roomlog_ops_before_the_creation_wait_for_it() -> None:
    log = RoomLog("p-1")
    assert log.add(member(3, "join", "X"), known) == []
    assert log.add(member(2, "invite", "O", "X"), known) == []
    assert log.view is None
    changes = log.add(CREATE, known)
    # a refold reports the difference; the joins come from a set difference, so their order is not fixed
    assert changes[0] == RoomChange("created", "O")
    assert sorted(changes[1:], key=lambda c: c.agent) == [RoomChange("joined", "O"), RoomChange("joined", "X")]
    assert set(folded(log).members) == {"O", "X"}
    assert log.add(CREATE, known) == []  # a second creation of the same instance is ignored


def test_roomlog_refold_on_out_of_order_kick() -> None:
    log = RoomLog("p-1")
    log.add(CREATE, known)
    log.add(member(2, "invite", "O", "X"), known)
    log.add(member(4, "join", "X"), known)
    # a kick stamped between the invite and the join revokes the invite: the join never took effect
    assert log.add(member(3, "kick", "O", "X"), known) == [RoomChange("kicked", "X")]
    assert log.view is not None
    assert (set(log.view.members), log.view.invited, log.view.banned) == ({"O"}, {}, {"X"})


def test_roomlog_ignores_authors_without_a_known_claim() -> None:
    def only_owner(agent: str, _incarnation: int, _peer: str, _stamp: int) -> bool:
        return agent == "O"

    log = RoomLog("p-1")
    log.add(CREATE, only_owner)
    log.add(member(2, "invite", "O", "X"), only_owner)
    assert log.add(member(3, "join", "X"), only_owner) == []
    assert folded(log).invited == {"X": "O"}
    # the claim becomes known: a refold lets the join count
    assert log.refold(known) == [RoomChange("joined", "X")]
    assert folded(log).invited == {}
    assert set(folded(log).members) == {"O", "X"}

    stranger = RoomLog("p-1")
    assert stranger.add(CREATE, lambda *_: False) == []
    assert stranger.view is None


def test_each_change_names_the_operation_that_made_it_in_order_and_by_refold() -> None:
    log = RoomLog("p-1")
    log.add(CREATE, known)
    [invited] = log.add(member(2, "invite", "O", "X"), known)
    [kicked] = log.add(member(3, "kick", "O", "X"), known)
    [again] = log.add(member(4, "invite", "O", "X"), known)
    assert (invited.key, kicked.key, again.key) == ((2, "p", 2), (3, "p", 3), (4, "p", 4))
    assert folded(log).invite_keys == {"X": (4, "p", 4)}
    [joined] = log.add(member(6, "join", "X"), known)
    assert joined.key == (6, "p", 6)
    assert folded(log).invite_keys == {}
    # a kick stamped between the second invite and the join lands late: the refold undoes the join, and the change
    # is named by the join it undid (one per join, the same on every peer)
    [undone] = log.add(member(5, "kick", "O", "X"), known)
    assert (undone.kind, undone.key) == ("kicked", (6, "p", 6))
    log.add(member(7, "invite", "O", "X"), known)
    [rejoined] = log.add(member(8, "join", "X"), known)
    assert rejoined.key == (8, "p", 8)
    [destroyed] = log.add(member(9, "destroy", "O"), known)
    assert destroyed.key == (9, "p", 9)
