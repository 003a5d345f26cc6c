"""The visibility tables of the contract, on every surface of the tool, from every viewpoint.

=========  =======  ================  ===========================
agent      listed   can be DM'd       in a room's member list
=========  =======  ================  ===========================
visible    yes      yes               yes
hidden     no       yes, by id        to members only
ghost      no       no                no
=========  =======  ================  ===========================

=========  ========================  ============  ============
room       discovery                 join          read history
=========  ========================  ============  ============
public     listed                    anyone        anyone
private    name visible              invite only   members only
secret     invisible to non-members  invite only   members only
=========  ========================  ============  ============

Testing policy: the subject ``sam`` has each visibility and is in a room ``den`` of each type, once as its owner
and once as a plain member. Each surface (answers, listings, member lists, member counts, owner labels, events,
errors) is observed by ``sam`` itself, by a member of the room and by an outsider, and compared with an oracle
written from the tables above, not from the code. What a viewer may not see must answer word for word as what does
not exist. Each agent is on a peer of its own, so every rule is checked as the other peers see it.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Literal

import pytest
import trio

from agent_comms.agent import Agent
from agent_comms.events import DeliveryEvent
from agent_comms.testing import InMemoryMesh, open_in_memory_mesh

ROOM_TYPES = ["public", "private", "secret"]
VISIBILITIES = ["visible", "hidden", "ghost"]
Role = Literal["self", "member", "outsider"]


class Cast:
    """The agents of one test, each on its own peer of one in-memory mesh."""

    def __init__(self, mesh: InMemoryMesh) -> None:
        self.mesh = mesh
        self.agents: list[Agent] = []

    async def agent(self, harness: str, name: str, visibility: str = "visible") -> Agent:
        agent = await self.mesh.agent(harness, name=name, visibility=visibility)
        self.agents.append(agent)
        return agent

    async def quiet(self) -> None:
        """Settle and drain everyone twice (the read receipts come after the messages)."""
        for _ in range(2):
            await self.mesh.settle()
            for agent in self.agents:
                agent.drain()
        await self.mesh.settle()


@pytest.fixture
async def cast() -> AsyncIterator[Cast]:
    with trio.fail_after(30):
        async with open_in_memory_mesh() as mesh:
            yield Cast(mesh)


# ---------------------------------------------------------------------------------------------- the oracle


def sees_agent_in_room(visibility: str, role: Role) -> bool:
    """The agent table's last column (and whether a room exists for the viewer is checked apart)."""
    return role == "self" or visibility == "visible" or (visibility == "hidden" and role == "member")


def sees_room(room_type: str, role: Role) -> bool:
    """The room table's discovery column."""
    return room_type != "secret" or role != "outsider"


def listed(visibility: str, role: Role) -> bool:
    """The agent table's first column."""
    return role == "self" or visibility == "visible"


# ---------------------------------------------------------------------------------------------- helpers


async def ok(agent: Agent, /, **params: object) -> str:
    result = await agent.call(params)
    assert not result.is_error, result.text
    return result.text


async def same_as_missing(cast: Cast, agent: Agent, real: str, missing: str, /, **params: object) -> str:
    """Call with ``real`` (something the agent may not see) and with ``missing`` (something that does not exist) in
    its place: the answers must be the same, text, code and data, once the names are swapped back."""
    await cast.mesh.settle()
    digest = agent.store.state.digest()
    got = await agent.call(params)
    absent = await agent.call({k: missing if v == real else v for k, v in params.items()})
    assert got.is_error, got.text
    assert (got.text, got.is_error, got.data) == (absent.text.replace(missing, real), absent.is_error, absent.data)
    await cast.mesh.settle()
    assert agent.store.state.digest() == digest, f"the rejected call {params} changed the replicated state"
    return got.text


async def events(cast: Cast, agent: Agent) -> list[DeliveryEvent]:
    await cast.mesh.settle()
    return agent.drain()


def about(found: list[DeliveryEvent], agent_id: str) -> list[str]:
    """The events that name ``agent_id`` anywhere: as sender, subject, or in a member list."""
    return [e.type for e in found if agent_id in (e.sender, e.subject) or any(m.id == agent_id for m in e.members)]


async def let_in(cast: Cast, owner: Agent, agent: Agent, room_type: str, room: str = "den") -> None:
    await cast.mesh.settle()
    if room_type != "public":
        await ok(owner, action="invite", room=room, agent=agent.id)
        await cast.mesh.settle()
    assert (await ok(agent, action="join_room", room=room)).startswith(f"Joined #{room}.")
    await cast.mesh.settle()


# ---------------------------------------------------------------------------------------------- listings


@pytest.mark.parametrize("room_type", ROOM_TYPES)
@pytest.mark.parametrize("visibility", VISIBILITIES)
async def test_listings_of_an_owner(cast: Cast, room_type: str, visibility: str) -> None:
    """``list_agents``, ``list_rooms`` (owner label, member count), ``whoami`` and ``NOT_OWNER`` errors."""
    sam = await cast.agent("h1", "sam", visibility)
    mia = await cast.agent("h2", "mia")
    otto = await cast.agent("h3", "otto")
    await ok(sam, action="create_room", room="den", type=room_type)
    await let_in(cast, sam, mia, room_type)
    await cast.quiet()
    viewers: dict[Role, Agent] = {"self": sam, "member": mia, "outsider": otto}
    for role, viewer in viewers.items():
        agents = await viewer.call({"action": "list_agents"})
        assert (sam.id in agents.data["agents"]) is listed(visibility, role), (role, agents.text)
        assert (sam.id in agents.text) is listed(visibility, role), (role, agents.text)
        # The rooms shown beside the listed agents: a secret room's name only to those it exists for.
        assert ("#den" in agents.text) is sees_room(room_type, role), (role, agents.text)

        rooms = await ok(viewer, action="list_rooms")
        assert ("#den" in rooms) is sees_room(room_type, role), (role, rooms)
        if not sees_room(room_type, role):
            continue
        assert (sam.id in rooms) is sees_agent_in_room(visibility, role), (role, rooms)
        count = 1 + sees_agent_in_room(visibility, role)  # mia, and sam if shown
        assert f"({room_type}, {count} member(s)" in rooms, (role, rooms)

    # NOT_OWNER names the owner only to whom it is shown.
    text = (await mia.call({"action": "destroy_room", "room": "den"})).text
    assert (sam.id in text) is sees_agent_in_room(visibility, "member"), text
    if room_type != "secret":
        text = (await otto.call({"action": "kick", "room": "den", "agent": "mia"})).text
        assert text.endswith("(NOT_OWNER)"), text
        assert (sam.id in text) is sees_agent_in_room(visibility, "outsider"), text
    assert (await ok(sam, action="whoami")).endswith("rooms: #den")


@pytest.mark.parametrize("room_type", ROOM_TYPES)
@pytest.mark.parametrize("visibility", VISIBILITIES)
async def test_member_lists_when_joining_a_room_of_an_owner(cast: Cast, room_type: str, visibility: str) -> None:
    """``join_room``'s answer and the ``room_members`` event list the owner only as the table says."""
    sam = await cast.agent("h1", "sam", visibility)
    mia = await cast.agent("h2", "mia")
    await ok(sam, action="create_room", room="den", type=room_type)
    await cast.quiet()
    if room_type != "public":
        await ok(sam, action="invite", room="den", agent=mia.id)
        await cast.mesh.settle()
        invite = await events(cast, mia)
        # Inviting is an act: it names its actor, whatever its visibility.
        assert [(e.type, e.sender) for e in invite] == [("room_invite", sam.id)]
    answer = await ok(mia, action="join_room", room="den")
    shown = sees_agent_in_room(visibility, "member")
    assert (sam.id in answer) is shown, answer
    assert answer == (f"Joined #den. Members: sam ({sam.id})." if shown else "Joined #den. Members: just you.")
    # Nobody else it may see: no room_members at all, as for a room it joins alone.
    assert about(await events(cast, mia), sam.id) == (["room_members"] if shown else [])
    assert about(await events(cast, sam), mia.id) == ["member_joined"]


@pytest.mark.parametrize("room_type", ROOM_TYPES)
async def test_a_private_listing_names_no_hidden_member_to_outsiders(cast: Cast, room_type: str) -> None:
    olive = await cast.agent("h1", "olive")
    sam = await cast.agent("h2", "sam", "hidden")
    otto = await cast.agent("h3", "otto")
    await ok(olive, action="create_room", room="den", type=room_type)
    await let_in(cast, olive, sam, room_type)
    await cast.quiet()
    listing = await ok(otto, action="list_agents")
    assert sam.id not in listing
    rooms = await ok(otto, action="list_rooms")
    if room_type == "secret":
        assert "#den" not in rooms
    else:
        assert f"#den ({room_type}, 1 member(s), owner olive ({olive.id}))" in rooms  # sam is not counted
        assert f"#den ({room_type}, 2 member(s), owner olive" in await ok(olive, action="list_rooms")


# ---------------------------------------------------------------------------------------------- events


@pytest.mark.parametrize("room_type", ROOM_TYPES)
@pytest.mark.parametrize("visibility", VISIBILITIES)
async def test_presence_events_of_a_member(cast: Cast, room_type: str, visibility: str) -> None:
    """member_joined, room_members, member_status, receipts, member_left, member_kicked: each as the table says,
    to the owner and a member (members) and to a later joiner; the subject's own events are whole."""
    olive = await cast.agent("h1", "olive")
    mia = await cast.agent("h2", "mia")
    sam = await cast.agent("h3", "sam", visibility)
    otto = await cast.agent("h4", "otto")
    await ok(olive, action="create_room", room="den", type=room_type)
    await let_in(cast, olive, mia, room_type)
    await cast.quiet()
    if visibility == "ghost" and room_type != "public":
        # A ghost cannot be invited: for the owner it does not exist.
        text = (await olive.call({"action": "invite", "room": "den", "agent": sam.id})).text
        assert text == f"Error: no agent named or with id {sam.id!r} (AGENT_NOT_FOUND)"
        return
    shown = sees_agent_in_room(visibility, "member")
    await let_in(cast, olive, sam, room_type)
    joined = [e for e in await events(cast, sam) if e.type != "room_invite"]
    assert about(joined, olive.id) == ["room_members"]  # it sees the others
    for member in (olive, mia):
        assert about(await events(cast, member), sam.id) == (["member_joined"] if shown else []), member.name

    # A later joiner: the join answer and room_members list sam only if shown.
    await let_in(cast, olive, otto, room_type)
    found = await events(cast, otto)
    assert about(found, sam.id) == (["room_members"] if shown else [])
    await cast.quiet()

    await ok(sam, action="update", status="busy")
    for member in (olive, mia, otto):
        assert about(await events(cast, member), sam.id) == (["member_status"] if shown else []), member.name

    # Receipts are presence too: the author hears of sam's only if it may see sam.
    await ok(olive, action="send", target="den", content="standup")
    await cast.quiet()
    message = (await ok(olive, action="send", target="den", content="again")).split("message id ")[1].rstrip(".")
    await cast.mesh.settle()
    for agent in (mia, sam, otto):
        await events(cast, agent)  # shown: receipts follow
    receipts = [e for e in await events(cast, olive) if e.type == "delivery_status" and e.message_id == message]
    assert sorted({e.sender for e in receipts}) == sorted({mia.id, otto.id, *([sam.id] if shown else [])})
    sent = await ok(olive, action="send", target="den", content="count")
    assert sent.startswith(f"Sent to #den ({2 + shown} other member(s))"), sent
    await cast.quiet()

    await ok(sam, action="leave_room", room="den")
    for member in (olive, mia, otto):
        assert about(await events(cast, member), sam.id) == (["member_left"] if shown else []), member.name
    assert await events(cast, sam) == []


async def test_a_ghost_joining_a_public_room_tells_nobody(cast: Cast) -> None:
    olive = await cast.agent("h1", "olive")
    spook = await cast.agent("h2", "spook", "ghost")
    await ok(olive, action="create_room", room="den")
    await cast.quiet()
    assert await ok(spook, action="join_room", room="den") == f"Joined #den. Members: olive ({olive.id})."
    assert await events(cast, olive) == []
    # Speaking is an act: the ghost is the author of what it says, and may be kicked for it (by id).
    await ok(spook, action="send", target="den", content="boo")
    [said] = await events(cast, olive)
    assert (said.type, said.sender) == ("room_message", spook.id)
    await cast.quiet()
    assert await ok(olive, action="kick", room="den", agent=spook.id) == (
        f"Kicked spook ({spook.id}) from #den; it needs a new invite."
    )


# ---------------------------------------------------------------------------------------------- errors


@pytest.mark.parametrize("visibility", ["hidden", "ghost"])
@pytest.mark.parametrize("by", ["name", "id"])
@pytest.mark.parametrize("action", ["dm", "invite", "kick"])
async def test_an_agent_one_may_not_name_answers_as_an_unknown_one(
    cast: Cast, visibility: str, by: str, action: str
) -> None:
    olive = await cast.agent("h1", "olive")
    sam = await cast.agent("h2", "sam", visibility)
    await ok(olive, action="create_room", room="den")
    await cast.mesh.settle()
    await ok(sam, action="join_room", room="den")
    await ok(sam, action="leave_room", room="den")  # not in a member list olive sees
    await cast.quiet()
    ref = "sam" if by == "name" else sam.id
    params: dict[str, object] = {"action": action}
    params |= {"target": ref, "content": "hi"} if action == "dm" else {"room": "den", "agent": ref}
    result = await olive.call(params)
    if visibility == "hidden" and by == "id":  # reachable by id
        assert not result.is_error or result.text.endswith("(NOT_MEMBER)"), result.text
        return
    text = await same_as_missing(cast, olive, ref, "nobody-at-all", **params)
    assert text.endswith("(AGENT_NOT_FOUND)"), text


async def test_a_name_shared_with_a_ghost_finds_the_visible_agent(cast: Cast) -> None:
    olive = await cast.agent("h1", "olive")
    twin = await cast.agent("h2", "twin")
    spook = await cast.agent("h3", "twin", "ghost")
    await ok(olive, action="create_room", room="den", type="private")
    await cast.quiet()
    for params in (
        {"action": "dm", "target": "twin", "content": "hi"},
        {"action": "invite", "room": "den", "agent": "twin"},
    ):
        text = await ok(olive, **params)
        assert twin.id in text
        assert spook.id not in text


@pytest.mark.parametrize("room_type", ["private", "secret"])
@pytest.mark.parametrize("action", ["send", "dm"])
async def test_reply_to_a_room_message_one_cannot_read_answers_as_an_unknown_id(
    cast: Cast, room_type: str, action: str
) -> None:
    olive = await cast.agent("h1", "olive")
    mia = await cast.agent("h2", "mia")
    otto = await cast.agent("h3", "otto")
    await ok(olive, action="create_room", room="den", type=room_type)
    await ok(otto, action="create_room", room="lobby")
    await cast.mesh.settle()
    await ok(olive, action="join_room", room="lobby")
    await let_in(cast, olive, mia, room_type)
    message = (await olive.call({"action": "send", "target": "den", "content": "plans"})).data["message_id"]
    await cast.quiet()
    params: dict[str, object] = {"action": action, "target": "lobby" if action == "send" else "olive"}
    params |= {"content": "re", "replyTo": message}
    text = await same_as_missing(cast, otto, message, "0000000000000000-nothing/0", **params)
    assert text.endswith("(INVALID_PARAMS)"), text
    # A member may reply to it anywhere.
    await ok(mia, **{**params, "target": "den" if action == "send" else "olive"})


@pytest.mark.parametrize("action", ["send", "dm"])
async def test_reply_to_someone_elses_dm_answers_as_an_unknown_id(cast: Cast, action: str) -> None:
    olive = await cast.agent("h1", "olive")
    mia = await cast.agent("h2", "mia")
    otto = await cast.agent("h3", "otto")
    await ok(otto, action="create_room", room="lobby")
    message = (await olive.call({"action": "dm", "target": "mia", "content": "secret"})).data["message_id"]
    await cast.quiet()
    params: dict[str, object] = {"action": action, "target": "lobby" if action == "send" else "mia"}
    params |= {"content": "re", "replyTo": message}
    await same_as_missing(cast, otto, message, "0000000000000000-nothing/0", **params)
    # Its two ends may.
    await ok(mia, action="dm", target="olive", content="re", replyTo=message)
    await ok(olive, action="dm", target="mia", content="re", replyTo=message)


async def test_a_public_room_message_may_be_replied_to_by_anyone(cast: Cast) -> None:
    olive = await cast.agent("h1", "olive")
    otto = await cast.agent("h2", "otto")
    await ok(olive, action="create_room", room="den")
    message = (await olive.call({"action": "send", "target": "den", "content": "hello"})).data["message_id"]
    await cast.quiet()
    await ok(otto, action="dm", target="olive", content="re", replyTo=message)


@pytest.mark.parametrize(
    "params",
    [
        {"action": "join_room", "room": "cabal"},
        {"action": "read_room", "room": "cabal"},
        {"action": "send", "target": "cabal", "content": "x"},
        {"action": "leave_room", "room": "cabal"},
        {"action": "decline_invite", "room": "cabal"},
        {"action": "invite", "room": "cabal", "agent": "otto"},
        {"action": "kick", "room": "cabal", "agent": "olive"},
        {"action": "destroy_room", "room": "cabal"},
    ],
    ids=lambda p: str(p["action"]),
)
async def test_a_secret_room_answers_outsiders_as_a_missing_room(cast: Cast, params: dict[str, object]) -> None:
    olive = await cast.agent("h1", "olive")
    otto = await cast.agent("h2", "otto")
    await ok(olive, action="create_room", room="cabal", type="secret")
    await cast.quiet()
    await same_as_missing(cast, otto, "cabal", "nowhere", **params)


async def test_creating_a_taken_name_answers_alike_whatever_the_room(cast: Cast) -> None:
    """The one bit a single name space cannot hide without losing data: the name is taken. Nothing more: the
    answer is the same for a secret room as for a public one (see docs/security.md)."""
    olive = await cast.agent("h1", "olive")
    otto = await cast.agent("h2", "otto")
    await ok(olive, action="create_room", room="cabal", type="secret")
    await ok(olive, action="create_room", room="square", type="public")
    await cast.quiet()
    for room_type in ROOM_TYPES:
        secret = await otto.call({"action": "create_room", "room": "cabal", "type": room_type})
        public = await otto.call({"action": "create_room", "room": "square", "type": room_type})
        assert (secret.text, secret.data) == (public.text.replace("square", "cabal"), public.data)
        assert "secret" not in secret.text


async def test_a_hidden_member_is_named_by_name_where_it_is_shown(cast: Cast) -> None:
    """A member sees a hidden member in the member list, name and id: it may name it either way."""
    olive = await cast.agent("h1", "olive")
    sam = await cast.agent("h2", "sam", "hidden")
    otto = await cast.agent("h3", "otto")
    await ok(olive, action="create_room", room="den")
    await let_in(cast, olive, sam, "public")
    await cast.quiet()
    assert (await ok(olive, action="dm", target="sam", content="hi")).startswith(f"Sent to sam ({sam.id});")
    await same_as_missing(cast, otto, "sam", "nobody-at-all", action="dm", target="sam", content="hi")


async def test_a_former_member_may_reply_to_what_it_was_sent(cast: Cast) -> None:
    olive = await cast.agent("h1", "olive")
    mia = await cast.agent("h2", "mia")
    await ok(olive, action="create_room", room="den", type="secret")
    await let_in(cast, olive, mia, "secret")
    message = (await olive.call({"action": "send", "target": "den", "content": "last words"})).data["message_id"]
    await cast.quiet()
    await ok(olive, action="destroy_room", room="den")
    await cast.quiet()
    await ok(mia, action="dm", target="olive", content="noted", replyTo=message)


@pytest.mark.parametrize("visibility", VISIBILITIES)
async def test_owner_labels_in_decline_and_leave_answers(cast: Cast, visibility: str) -> None:
    sam = await cast.agent("h1", "sam", visibility)
    mia = await cast.agent("h2", "mia")
    await ok(sam, action="create_room", room="den", type="private")
    await ok(sam, action="invite", room="den", agent=mia.id)
    await cast.quiet()
    # An invitee is not a member: it sees a visible owner only (the invite itself named the inviter).
    declined = await ok(mia, action="decline_invite", room="den")
    owner = f"sam ({sam.id})" if sees_agent_in_room(visibility, "outsider") else "the owner"
    assert declined == f"Declined the invite to #den; {owner} is told."

    olive = await cast.agent("h3", "olive")
    await ok(olive, action="create_room", room="hall")
    await let_in(cast, olive, sam, "public", room="hall")
    await cast.quiet()
    left = await ok(olive, action="leave_room", room="hall")  # sam, the earliest joiner, owns it now
    if sees_agent_in_room(visibility, "member"):
        assert left == f"Left #hall. sam ({sam.id}) owns it now."
    else:
        assert left == "Left #hall. You no longer own it."


async def test_a_ghost_always_sees_and_names_itself(cast: Cast) -> None:
    spook = await cast.agent("h1", "spook", "ghost")
    await ok(spook, action="create_room", room="den", type="secret")
    assert f"spook ({spook.id}) (you)" in await ok(spook, action="list_agents")
    assert f"#den (secret, 1 member(s), owner spook ({spook.id})) [joined]" in await ok(spook, action="list_rooms")
    text = (await spook.call({"action": "kick", "room": "den", "agent": spook.id})).text
    assert text == "Error: you cannot kick yourself; leave_room or destroy_room instead (INVALID_PARAMS)"
