"""``rooms.refusal``: the one statement of who may do what in a room, asked by the fold and by the tool."""

from __future__ import annotations

import pytest

from agent_comms.protocol.ops import MembershipAction, RoomType
from agent_comms.protocol.rooms import Refusal, RoomView, refusal

KEY = (1, "p", 1)


def _room(room_type: RoomType = "public", **fields: object) -> RoomView:
    view = RoomView(
        name="den",
        room_type=room_type,
        description="",
        creator="olive",
        created=KEY,
        owner="olive",
        founders={"r1": "olive"},
        created_as={"r1": room_type},
    )
    view.members["olive"] = KEY
    for name, value in fields.items():
        setattr(view, name, value)
    return view


@pytest.mark.parametrize(
    ("room_type", "actor", "extra", "expected"),
    [
        ("public", "wanda", {}, None),
        ("private", "wanda", {}, Refusal.NEEDS_INVITE),
        ("secret", "wanda", {"invited": {"wanda": "olive"}}, None),
        ("public", "wanda", {"banned": {"wanda"}}, Refusal.BANNED),
        ("private", "wanda", {"banned": {"wanda"}, "invited": {"wanda": "olive"}}, None),
        ("public", "olive", {}, Refusal.ALREADY_MEMBER),
    ],
)
def test_join(room_type: RoomType, actor: str, extra: dict[str, object], expected: Refusal | None) -> None:
    assert refusal(_room(room_type, **extra), actor, "join") is expected


@pytest.mark.parametrize("action", ["invite", "kick", "destroy"])
def test_the_owners_actions(action: MembershipAction) -> None:
    view = _room(invited={"wanda": "olive"})
    assert refusal(view, "bob", action) is Refusal.NOT_OWNER
    assert refusal(view, "olive", action) is None


def test_subjects_of_invite_and_kick() -> None:
    view = _room(invited={"wanda": "olive"})
    view.members["bob"] = KEY
    assert refusal(view, "olive", "invite", "bob") is Refusal.SUBJECT_MEMBER
    assert refusal(view, "olive", "invite", "wanda") is Refusal.SUBJECT_INVITED
    assert refusal(view, "olive", "invite", "carl") is None
    assert refusal(view, "olive", "invite", "") is Refusal.NO_SUBJECT
    assert refusal(view, "olive", "kick", "olive") is Refusal.SUBJECT_OWNER
    assert refusal(view, "olive", "kick", "carl") is Refusal.SUBJECT_ABSENT
    assert refusal(view, "olive", "kick", "wanda") is None  # revokes the invite
    assert refusal(view, "olive", "kick", "bob") is None


def test_leave_decline_and_a_destroyed_room() -> None:
    view = _room(invited={"wanda": "olive"})
    assert refusal(view, "olive", "leave") is None
    assert refusal(view, "wanda", "leave") is Refusal.NOT_MEMBER
    assert refusal(view, "wanda", "decline") is None
    assert refusal(view, "bob", "decline") is Refusal.NO_INVITE
    view.destroyed = (2, "p", 2)
    assert refusal(view, "olive", "leave") is Refusal.DESTROYED


def test_a_merged_founder_through_its_own_instance_and_the_room_as_it_stands() -> None:
    """Rule 9 for the fold (``through``); a tool asks about the room as it stands: owner's rights, merged type."""
    view = _room("private", founders={"r1": "olive", "r2": "bob"}, created_as={"r1": "public", "r2": "private"})
    view.members["bob"] = KEY
    assert refusal(view, "bob", "invite", "carl", through="r2") is None
    assert refusal(view, "bob", "invite", "carl", through="r1") is Refusal.NOT_OWNER
    assert refusal(view, "bob", "invite", "carl") is Refusal.NOT_OWNER
    # a join addressed to the first instance is judged by the type it was created with; the tool, by the room's
    assert refusal(view, "carl", "join", through="r1") is None
    assert refusal(view, "carl", "join") is Refusal.NEEDS_INVITE
