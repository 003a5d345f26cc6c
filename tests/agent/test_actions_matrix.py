"""Every action of the ``agent_comms`` tool contract (DESIGN 2.3 and 2.4) on an in-memory multi-peer mesh.

Testing policy: each agent is on a peer of its own, so every rule is checked as the other peers see it after the
mesh settles. For each action: its success result (agents shown as ``name (id)``) and every error code it can give,
for each room type and each visibility. A rejected call is checked to change nothing: the caller's replica digest
is the same after the mesh settles and nobody has a new event. Events are drained after every step and compared
whole, so each is seen exactly once.
"""

from __future__ import annotations

import datetime as dt
import re
from collections.abc import AsyncIterator

import pytest
import trio

from agent_comms.agent import Agent
from agent_comms.events import DeliveryEvent, Member, format_delivery_event
from agent_comms.store import MeshStore
from agent_comms.testing import InMemoryMesh, open_in_memory_mesh
from agent_comms.tool import CommsTool

ROOM_TYPES = ["public", "private", "secret"]
VISIBILITIES = ["visible", "hidden", "ghost"]
ACTIONS = [
    "register",
    "update",
    "whoami",
    "list_agents",
    "create_room",
    "list_rooms",
    "join_room",
    "leave_room",
    "send",
    "dm",
    "read_room",
    "invite",
    "decline_invite",
    "kick",
    "destroy_room",
]


class Cast:
    """The agents of one test, each on its own peer of one in-memory mesh."""

    def __init__(self, mesh: InMemoryMesh) -> None:
        self.mesh = mesh
        self.agents: list[Agent] = []

    async def agent(self, harness: str, name: str, visibility: str = "visible") -> Agent:
        agent = await self.mesh.agent(harness, name=name, visibility=visibility)
        self.agents.append(agent)
        return agent

    async def settle(self) -> None:
        await self.mesh.settle()

    async def quiet(self) -> None:
        """Settle, drain everyone, settle again (the read receipts), and drain again: nothing left waiting."""
        for _ in range(2):
            await self.settle()
            for agent in self.agents:
                agent.drain()
        await self.settle()
        assert {a.name: a.pending_count() for a in self.agents} == {a.name: 0 for a in self.agents}


@pytest.fixture
async def cast() -> AsyncIterator[Cast]:
    async with open_in_memory_mesh() as mesh:
        yield Cast(mesh)


def label(agent: Agent, /) -> str:
    return f"{agent.name} ({agent.id})"


async def ok(agent: Agent, /, **params: object) -> str:
    result = await agent.call(params)
    assert not result.is_error, result.text
    return result.text


async def rejected(cast: Cast, agent: Agent, code: str, /, **params: object) -> str:
    """Call, expect ``Error: ... (<code>)``, and check that nothing changed anywhere."""
    await cast.settle()
    digest = agent.store.state.digest()
    waiting = {a.name: a.pending_count() for a in cast.agents}
    result = await agent.call(params)
    assert result.is_error, result.text
    assert result.text.startswith("Error: "), result.text
    assert result.text.endswith(f" ({code})"), result.text
    assert result.data == {"code": code}
    await cast.settle()
    assert agent.store.state.digest() == digest, f"the rejected call {params} changed the replicated state"
    assert {a.name: a.pending_count() for a in cast.agents} == waiting, f"the rejected call {params} told someone"
    return result.text


async def drained(cast: Cast, agent: Agent, /) -> list[DeliveryEvent]:
    await cast.settle()
    return agent.drain()


async def kinds(cast: Cast, agent: Agent, /) -> list[str]:
    return [event.type for event in await drained(cast, agent)]


async def admit(cast: Cast, owner: Agent, agent: Agent, /, room: str, room_type: str) -> None:
    """Get ``agent`` into ``room`` (with an invite from the owner unless the room is public)."""
    await cast.settle()
    if room_type != "public":
        await ok(owner, action="invite", room=room, agent=agent.id)
        await cast.settle()
    await ok(agent, action="join_room", room=room)
    await cast.settle()


#: (room type, visibility) of an agent let into the room: a ghost cannot be invited (see test_join_room), so it
#: is in public rooms only.
ADMITTED = [(r, v) for v in VISIBILITIES for r in ROOM_TYPES if v != "ghost" or r == "public"]


def outsider_code(room_type: str, public_private_code: str) -> str:
    """What an agent that is neither member, invitee nor owner gets: a secret room does not exist for it."""
    return "ROOM_NOT_FOUND" if room_type == "secret" else public_private_code


# ====================================================================== parameters: INVALID_PARAMS names the field

LONG_NAME = "n" * 65

INVALID = [
    pytest.param(
        {"action": "frobnicate"}, "unknown action 'frobnicate'; one of: register, update", id="unknown-action"
    ),
    pytest.param({"action": 5}, "unknown action 5", id="action-not-a-string"),
    pytest.param({}, "missing 'action'", id="missing-action"),
    pytest.param({"room": "lobby"}, "missing 'action'", id="missing-action-with-params"),
    pytest.param({"action": "whoami", "colour": "blue"}, "unknown parameter 'colour'", id="unknown-parameter"),
    pytest.param({"action": "send", "target": "lobby", "contents": "x"}, "unknown parameter 'contents'", id="typo"),
    pytest.param({"action": "register"}, "missing 'name' for action 'register'", id="register-missing-name"),
    pytest.param({"action": "create_room"}, "missing 'room' for action 'create_room'", id="create-missing-room"),
    pytest.param({"action": "join_room"}, "missing 'room' for action 'join_room'", id="join-missing-room"),
    pytest.param({"action": "leave_room"}, "missing 'room' for action 'leave_room'", id="leave-missing-room"),
    pytest.param({"action": "read_room"}, "missing 'room' for action 'read_room'", id="read-missing-room"),
    pytest.param({"action": "destroy_room"}, "missing 'room' for action 'destroy_room'", id="destroy-missing-room"),
    pytest.param({"action": "decline_invite"}, "missing 'room' for action 'decline_invite'", id="decline-missing"),
    pytest.param({"action": "invite", "room": "lobby"}, "missing 'agent' for action 'invite'", id="invite-no-agent"),
    pytest.param({"action": "invite", "agent": "bob"}, "missing 'room' for action 'invite'", id="invite-no-room"),
    pytest.param({"action": "kick", "room": "lobby"}, "missing 'agent' for action 'kick'", id="kick-no-agent"),
    pytest.param({"action": "kick", "agent": "bob"}, "missing 'room' for action 'kick'", id="kick-no-room"),
    pytest.param({"action": "send", "content": "hi"}, "missing 'target' (or 'room') for action 'send'", id="send-to"),
    pytest.param({"action": "send", "target": "lobby"}, "missing 'content' for action 'send'", id="send-content"),
    pytest.param({"action": "dm", "content": "hi"}, "missing 'target' (or 'agent') for action 'dm'", id="dm-to"),
    pytest.param({"action": "dm", "target": "bob"}, "missing 'content' for action 'dm'", id="dm-content"),
    pytest.param({"action": "dm", "target": "bob", "content": 5}, "invalid 'content': expected a string", id="int"),
    pytest.param({"action": "dm", "target": "bob", "content": ["hi"]}, "invalid 'content'", id="content-list"),
    pytest.param({"action": "dm", "target": 7, "content": "hi"}, "invalid 'target': expected a string", id="tgt-int"),
    pytest.param({"action": "update", "tags": "x"}, "invalid 'tags': expected a list of strings", id="tags-str"),
    pytest.param({"action": "update", "tags": [1]}, "invalid 'tags': expected a list of strings", id="tags-ints"),
    pytest.param({"action": "update", "name": 3}, "invalid 'name': expected a string", id="name-int"),
    pytest.param({"action": "read_room", "room": "lobby", "since": True}, "invalid 'since'", id="since-bool"),
    pytest.param({"action": "read_room", "room": "lobby", "since": 1.5}, "invalid 'since'", id="since-float"),
    pytest.param({"action": "read_room", "room": "lobby", "since": "yesterday"}, "invalid 'since'", id="since-word"),
    pytest.param({"action": "create_room", "room": 7}, "invalid 'room': expected a string", id="room-int"),
    pytest.param({"action": "register", "name": LONG_NAME}, "invalid 'name': 65 characters long", id="name-long"),
    pytest.param({"action": "update", "name": LONG_NAME}, "invalid 'name': 65 characters long", id="rename-long"),
    pytest.param({"action": "update", "name": ""}, "invalid 'name': must not be empty", id="name-empty"),
    pytest.param({"action": "update", "name": "two\nlines"}, "invalid 'name'", id="name-newline"),
    pytest.param({"action": "update", "name": " padded"}, "invalid 'name'", id="name-padded"),
    pytest.param({"action": "create_room", "room": LONG_NAME}, "invalid 'room': 65 characters long", id="room-long"),
    pytest.param({"action": "create_room", "room": ""}, "invalid 'room': must not be empty", id="room-empty"),
    pytest.param({"action": "dm", "target": "bob", "content": ""}, "invalid 'content': must not be empty", id="empty"),
    pytest.param({"action": "send", "target": "lobby", "content": " \n "}, "invalid 'content'", id="blank"),
    pytest.param({"action": "send", "target": "lobby", "content": "x" * 32_001}, "invalid 'content'", id="huge"),
    pytest.param({"action": "update", "visibility": "invisible"}, "invalid 'visibility'", id="visibility"),
    pytest.param({"action": "register", "name": "a", "visibility": "ghostly"}, "invalid 'visibility'", id="reg-vis"),
    pytest.param({"action": "update", "status": "asleep"}, "invalid 'status'", id="status"),
    pytest.param({"action": "update", "status": 1}, "invalid 'status'", id="status-int"),
    pytest.param({"action": "create_room", "room": "r", "type": "open"}, "invalid 'type'", id="room-type"),
    pytest.param({"action": "create_room", "room": "r", "type": 2}, "invalid 'type'", id="room-type-int"),
    pytest.param(
        {"action": "create_room", "room": "r", "description": "d" * 501}, "invalid 'description'", id="description"
    ),
    pytest.param({"action": "decline_invite", "room": "lobby", "reason": "r" * 501}, "invalid 'reason'", id="reason"),
    pytest.param({"action": "update", "tags": ["t"] * 17}, "invalid 'tags': 17 tags", id="too-many-tags"),
    pytest.param({"action": "update", "tags": [""]}, "invalid 'tags'", id="empty-tag"),
    pytest.param(
        {"action": "dm", "target": "bob", "content": "hi", "streamingBehavior": "now"},
        "invalid 'streamingBehavior': must be one of 'steer', 'followUp', 'info'",
        id="dm-streaming",
    ),
    pytest.param(
        {"action": "send", "target": "lobby", "content": "hi", "streamingBehavior": "later"},
        "invalid 'streamingBehavior'",
        id="send-streaming",
    ),
    pytest.param({"action": "dm", "target": "bob", "content": "hi", "replyTo": 5}, "invalid 'replyTo'", id="reply"),
    pytest.param(
        {"action": "dm", "target": "bob", "content": "hi", "replyTo": "0-nope"}, "invalid 'replyTo'", id="reply-gone"
    ),
    pytest.param(
        {"action": "send", "target": "lobby", "content": "hi", "replyTo": "0-nope"}, "invalid 'replyTo'", id="reply-r"
    ),
    pytest.param({"action": "update"}, "update needs at least one of 'name', 'visibility', 'status', 'tags'", id="u0"),
    pytest.param(
        {"action": "update", "name": None, "room": "lobby"},
        "update needs at least one of 'name', 'visibility', 'status', 'tags'",
        id="update-nothing-relevant",
    ),
]


@pytest.mark.parametrize(("params", "fragment"), INVALID)
async def test_invalid_params_are_rejected_naming_the_field(
    cast: Cast, params: dict[str, object], fragment: str
) -> None:
    alice = await cast.agent("h1", "alice")
    bob = await cast.agent("h2", "bob")
    await ok(alice, action="create_room", room="lobby")
    await admit(cast, alice, bob, room="lobby", room_type="public")
    await ok(alice, action="send", target="lobby", content="earlier")
    await cast.quiet()
    text = await rejected(cast, alice, "INVALID_PARAMS", **params)
    assert fragment in text


@pytest.mark.parametrize(
    ("params", "field"),
    [
        pytest.param({"action": "send", "room": 5, "content": "hi"}, "room", id="send-room-int"),
        pytest.param({"action": "send", "room": LONG_NAME, "content": "hi"}, "room", id="send-room-long"),
        pytest.param({"action": "dm", "agent": 5, "content": "hi"}, "agent", id="dm-agent-int"),
        pytest.param({"action": "dm", "agent": "", "content": "hi"}, "agent", id="dm-agent-empty"),
    ],
)
async def test_an_invalid_alias_is_named_as_given(cast: Cast, params: dict[str, object], field: str) -> None:
    """send takes ``room`` for ``target`` and dm takes ``agent``: a bad value is reported under the name passed."""
    alice = await cast.agent("h1", "alice")
    text = await rejected(cast, alice, "INVALID_PARAMS", **params)
    assert f"'{field}'" in text


async def test_self_directed_and_ambiguous_calls_are_invalid(cast: Cast) -> None:
    alice = await cast.agent("h1", "alice")
    await cast.agent("h2", "twin")
    twin2 = await cast.agent("h3", "twin")
    await ok(alice, action="create_room", room="lobby")
    await rejected(cast, alice, "INVALID_PARAMS", action="dm", target="alice", content="me")
    await rejected(cast, alice, "INVALID_PARAMS", action="dm", target=alice.id, content="me")
    await rejected(cast, alice, "INVALID_PARAMS", action="kick", room="lobby", agent="alice")
    await rejected(cast, alice, "INVALID_PARAMS", action="invite", room="lobby", agent=alice.id)
    text = await rejected(cast, alice, "INVALID_PARAMS", action="dm", target="twin", content="which?")
    assert "several agents are called 'twin'" in text
    assert "use the id" in text
    await ok(alice, action="dm", target=twin2.id, content="this one")
    await rejected(cast, alice, "INVALID_PARAMS", action="invite", room="lobby", agent="twin")


async def test_every_action_but_register_needs_registration_first(cast: Cast) -> None:
    await cast.agent("h1", "alice")
    node, _scope = await cast.mesh.node()
    await cast.settle()
    tool = CommsTool(MeshStore(node), agent_id="h9-fresh", harness="h9", cwd="/work/fresh", pid=0)
    valid: dict[str, dict[str, object]] = {
        "update": {"status": "busy"},
        "whoami": {},
        "list_agents": {},
        "create_room": {"room": "mine"},
        "list_rooms": {},
        "join_room": {"room": "mine"},
        "leave_room": {"room": "mine"},
        "send": {"target": "mine", "content": "x"},
        "dm": {"target": "alice", "content": "x"},
        "read_room": {"room": "mine"},
        "invite": {"room": "mine", "agent": "alice"},
        "decline_invite": {"room": "mine"},
        "kick": {"room": "mine", "agent": "alice"},
        "destroy_room": {"room": "mine"},
    }
    assert sorted([*valid, "register"]) == sorted(ACTIONS)
    digest = node.peer.replica.state.digest()
    for action, params in valid.items():
        result = tool.call({"action": action, **params})
        assert result.is_error, action
        assert result.text == "Error: not registered yet: call action 'register' with a name (INVALID_PARAMS)"
    await cast.settle()
    assert node.peer.replica.state.digest() == digest
    assert not tool.registered


# ====================================================================== register, update, whoami, list_agents


@pytest.mark.parametrize("visibility", VISIBILITIES)
async def test_register(cast: Cast, visibility: str) -> None:
    alice = await cast.agent("h1", "alice")
    bob = await cast.agent("h2", "bob")
    await cast.agent("h3", "shy", "hidden")
    await cast.agent("h4", "spook", "ghost")
    node, _scope = await cast.mesh.node()
    await cast.settle()
    tool = CommsTool(MeshStore(node), agent_id="h9-fresh", harness="h9", cwd="/work/fresh", pid=0)
    result = tool.call({"action": "register", "name": "newbie", "visibility": visibility, "tags": ["py"]})
    assert not result.is_error, result.text
    assert result.text == f"Registered as newbie (h9-fresh) ({visibility}). Online: {label(alice)}, {label(bob)}."
    assert result.data == {"id": "h9-fresh", "name": "newbie"}
    newbie = Agent(tool)
    cast.agents.append(newbie)
    await cast.settle()
    assert await ok(newbie, action="whoami") == (
        f"You are newbie (h9-fresh): active, {visibility}, harness h9, cwd /work/fresh; tags: py; rooms: none"
    )
    listed = (await alice.call({"action": "list_agents"})).data["agents"]
    assert ("h9-fresh" in listed) is (visibility == "visible")
    # Registering again renames (and may change visibility); the id stays.
    again = tool.call({"action": "register", "name": "oldie", "visibility": "visible"})
    assert again.text == f"Re-registered as oldie (h9-fresh) (visible). Online: {label(alice)}, {label(bob)}."
    await cast.settle()
    assert "h9-fresh" in (await alice.call({"action": "list_agents"})).data["agents"]
    await ok(alice, action="dm", target="oldie", content="welcome")
    await rejected(cast, alice, "AGENT_NOT_FOUND", action="dm", target="newbie", content="welcome")


@pytest.mark.parametrize("visibility", VISIBILITIES)
async def test_update_each_field(cast: Cast, visibility: str) -> None:
    amy = await cast.agent("h1", "amy", visibility)
    ben = await cast.agent("h2", "ben")
    assert await ok(amy, action="update", name="amelia") == f"Updated amelia ({amy.id}): name='amelia'."
    await cast.settle()
    # A hidden agent is reached by id only; a ghost not at all.
    if visibility == "visible":
        assert (await ok(ben, action="dm", target="amelia", content="hi")).startswith(f"Sent to amelia ({amy.id});")
    else:
        await rejected(cast, ben, "AGENT_NOT_FOUND", action="dm", target="amelia", content="hi")
    if visibility == "hidden":
        assert (await ok(ben, action="dm", target=amy.id, content="hi")).startswith(f"Sent to amelia ({amy.id});")
    await rejected(cast, ben, "AGENT_NOT_FOUND", action="dm", target="amy", content="hi")

    text = await ok(amy, action="update", status="busy", tags=["review", "py"])
    assert text.startswith(f"Updated amelia ({amy.id}): ")
    assert "status='busy'" in text
    assert "tags=" in text
    assert "'review'" in text
    assert await ok(amy, action="whoami") == (
        f"You are amelia ({amy.id}): busy, {visibility}, harness h1, cwd /work; tags: review, py; rooms: none"
    )
    await cast.settle()
    record = ben.store.record(amy.id)
    assert record is not None
    assert (record.name, record.status, record.tags, record.visibility) == (
        "amelia",
        "busy",
        ("review", "py"),
        visibility,
    )

    other = "hidden" if visibility == "visible" else "visible"
    assert await ok(amy, action="update", visibility=other) == f"Updated amelia ({amy.id}): visibility='{other}'."
    await cast.settle()
    assert (amy.id in (await ben.call({"action": "list_agents"})).data["agents"]) is (other == "visible")
    assert await ok(amy, action="update", tags=[]) == f"Updated amelia ({amy.id}): tags=()."
    assert (await ok(amy, action="whoami")).endswith("; tags: -; rooms: none")


@pytest.mark.parametrize("visibility", VISIBILITIES)
async def test_whoami_lists_rooms(cast: Cast, visibility: str) -> None:
    me = await cast.agent("h1", "me", visibility)
    assert await ok(me, action="whoami") == (
        f"You are me ({me.id}): active, {visibility}, harness h1, cwd /work; tags: -; rooms: none"
    )
    await ok(me, action="create_room", room="beta")
    await ok(me, action="create_room", room="alpha", type="secret")
    result = await me.call({"action": "whoami"})
    assert result.text.endswith("; rooms: #alpha, #beta")
    assert result.data == {"id": me.id, "name": "me", "rooms": ["alpha", "beta"]}


@pytest.mark.parametrize("visibility", VISIBILITIES)
async def test_list_agents_shows_visible_agents_and_yourself(cast: Cast, visibility: str) -> None:
    vera = await cast.agent("h1", "vera")
    sam = await cast.agent("h2", "sam", visibility)
    await ok(sam, action="create_room", room="den")
    await cast.settle()
    vera_line = f"- vera ({vera.id}) [active] h1 in /work; no rooms"
    sam_line = f"- sam ({sam.id}) [active] h2 in /work; #den"
    seen_by_vera = await vera.call({"action": "list_agents"})
    if visibility == "visible":
        assert (
            seen_by_vera.text
            == f"2 agent(s) online:\n{sam_line}\n- vera ({vera.id}) (you) [active] h1 in /work; no rooms"
        )
        assert seen_by_vera.data == {"agents": [sam.id, vera.id]}
    else:
        assert seen_by_vera.text == f"1 agent(s) online:\n- vera ({vera.id}) (you) [active] h1 in /work; no rooms"
        assert seen_by_vera.data == {"agents": [vera.id]}
    seen_by_sam = await sam.call({"action": "list_agents"})
    assert seen_by_sam.text == f"2 agent(s) online:\n- sam ({sam.id}) (you) [active] h2 in /work; #den\n{vera_line}"
    assert seen_by_sam.data == {"agents": [sam.id, vera.id]}
    # An agent that went offline is not listed.
    await cast.mesh.stop(vera)
    cast.agents.remove(vera)
    await cast.settle()
    assert (await sam.call({"action": "list_agents"})).data == {"agents": [sam.id]}


# ====================================================================== dm


@pytest.mark.parametrize("visibility", VISIBILITIES)
@pytest.mark.parametrize("by", ["name", "id"])
@pytest.mark.parametrize("param", ["target", "agent"])
async def test_dm_by_name_or_id(cast: Cast, visibility: str, by: str, param: str) -> None:
    sid = await cast.agent("h1", "sid")
    rita = await cast.agent("h2", "rita", visibility)
    ref = "rita" if by == "name" else rita.id
    if visibility == "ghost" or (visibility == "hidden" and by == "name"):
        # Word for word what an agent that does not exist gives.
        text = await rejected(cast, sid, "AGENT_NOT_FOUND", action="dm", content="boo", **{param: ref})
        assert text == f"Error: no agent named or with id {ref!r} (AGENT_NOT_FOUND)"
        return
    result = await sid.call({"action": "dm", param: ref, "content": "hello rita"})
    assert not result.is_error, result.text
    message_id = result.data["message_id"]
    assert result.text == f"Sent to rita ({rita.id}); message id {message_id}."
    assert result.data == {"message_id": message_id, "to": rita.id}
    [event] = await drained(cast, rita)
    assert (event.type, event.to, event.sender, event.sender_name) == ("dm", rita.id, sid.id, "sid")
    assert (event.content, event.message_id, event.id, event.streaming) == (
        "hello rita",
        message_id,
        message_id,
        "steer",
    )
    assert format_delivery_event(event) == f"[DM from sid ({sid.id})] hello rita  [id {message_id}]"
    receipts = await drained(cast, sid)
    assert [(e.type, e.status, e.message_id, e.sender, e.to) for e in receipts] == [
        ("delivery_status", "delivered", message_id, rita.id, sid.id),
        ("delivery_status", "read", message_id, rita.id, sid.id),
    ]
    assert format_delivery_event(receipts[1]) == f'your message {message_id} "hello rita": read by rita'
    assert await drained(cast, rita) == []
    assert await drained(cast, sid) == []


@pytest.mark.parametrize("visibility", VISIBILITIES)
async def test_any_agent_can_dm_and_reply(cast: Cast, visibility: str) -> None:
    writer = await cast.agent("h1", "writer", visibility)
    reader = await cast.agent("h2", "reader")
    first = (await writer.call({"action": "dm", "target": "reader", "content": "ping"})).data["message_id"]
    await cast.settle()
    reply = await reader.call({"action": "dm", "target": writer.id, "content": "pong", "replyTo": first})
    if visibility == "ghost":
        assert reply.text == f"Error: no agent named or with id {writer.id!r} (AGENT_NOT_FOUND)"
        return
    assert not reply.is_error, reply.text
    events = [e for e in await drained(cast, writer) if e.type == "dm"]
    assert [(e.content, e.reply_to) for e in events] == [("pong", first)]
    assert format_delivery_event(events[0]) == (
        f"[DM from reader ({reader.id})] (reply to {first}) pong  [id {reply.data['message_id']}]"
    )


async def test_dm_errors(cast: Cast) -> None:
    alice = await cast.agent("h1", "alice")
    bob = await cast.agent("h2", "bob")
    text = await rejected(cast, alice, "AGENT_NOT_FOUND", action="dm", target="nobody", content="hi")
    assert text == "Error: no agent named or with id 'nobody' (AGENT_NOT_FOUND)"
    await rejected(cast, alice, "AGENT_NOT_FOUND", action="dm", agent="h2-unknown", content="hi")
    await cast.mesh.stop(bob)
    cast.agents.remove(bob)
    await cast.settle()
    text = await ok(alice, action="dm", target="bob", content="for later")
    assert text.endswith(". It is offline; it gets the message when it returns.")
    assert text.startswith(f"Sent to bob ({bob.id}); message id ")


# ====================================================================== create_room, list_rooms


@pytest.mark.parametrize("room_type", ROOM_TYPES)
async def test_create_room(cast: Cast, room_type: str) -> None:
    olive = await cast.agent("h1", "olive")
    otto = await cast.agent("h2", "otto")
    result = await olive.call({"action": "create_room", "room": "den", "type": room_type, "description": "our den"})
    assert result.text == f"Created #den ({room_type}); you own it and are its first member."
    room_id = result.data["room_id"]
    await cast.settle()
    assert otto.store.state.room_id("den") == room_id
    assert await ok(olive, action="list_rooms") == (
        f"1 room(s):\n- #den ({room_type}, 1 member(s), owner {label(olive)}) [joined]: our den"
    )
    assert (await ok(olive, action="whoami")).endswith("rooms: #den")
    assert await kinds(cast, olive) == []  # nobody to tell about a room's creation
    text = await rejected(cast, olive, "ROOM_EXISTS", action="create_room", room="den", type=room_type)
    assert text == "Error: room #den already exists (ROOM_EXISTS)"
    await rejected(cast, otto, "ROOM_EXISTS", action="create_room", room="den")
    await rejected(cast, otto, "ROOM_EXISTS", action="create_room", room="den", type="secret")


async def test_create_room_defaults_to_public(cast: Cast) -> None:
    olive = await cast.agent("h1", "olive")
    assert await ok(olive, action="create_room", room="den") == (
        "Created #den (public); you own it and are its first member."
    )
    assert (
        await ok(olive, action="list_rooms")
        == f"1 room(s):\n- #den (public, 1 member(s), owner {label(olive)}) [joined]"
    )


@pytest.mark.parametrize("room_type", ROOM_TYPES)
async def test_list_rooms(cast: Cast, room_type: str) -> None:
    olive = await cast.agent("h1", "olive")
    otto = await cast.agent("h2", "otto")
    assert await ok(otto, action="list_rooms") == "No rooms yet; create one with create_room."
    await ok(olive, action="create_room", room="den", type=room_type)
    await ok(otto, action="create_room", room="attic")
    await cast.settle()
    line = f"- #den ({room_type}, 1 member(s), owner {label(olive)})"
    attic = f"- #attic (public, 1 member(s), owner {label(otto)}) [joined]"
    if room_type == "secret":
        assert await ok(otto, action="list_rooms") == f"1 room(s):\n{attic}"
    else:
        assert await ok(otto, action="list_rooms") == f"2 room(s):\n{attic}\n{line}"
    await ok(olive, action="invite", room="den", agent="otto")
    await cast.settle()
    assert await ok(otto, action="list_rooms") == f"2 room(s):\n{attic}\n{line} [invited]"
    await ok(otto, action="join_room", room="den")
    await cast.settle()
    assert await ok(otto, action="list_rooms") == (
        f"2 room(s):\n{attic}\n- #den ({room_type}, 2 member(s), owner {label(olive)}) [joined]"
    )


# ====================================================================== join_room, leave_room


@pytest.mark.parametrize("room_type", ROOM_TYPES)
@pytest.mark.parametrize("visibility", VISIBILITIES)
async def test_join_room(cast: Cast, room_type: str, visibility: str) -> None:
    olive = await cast.agent("h1", "olive")
    gabe = await cast.agent("h2", "gabe", visibility)
    await ok(olive, action="create_room", room="den", type=room_type)
    await rejected(cast, gabe, "ROOM_NOT_FOUND", action="join_room", room="nowhere")
    if room_type == "public":
        pass
    elif room_type == "private":
        text = await rejected(cast, gabe, "NOT_INVITED", action="join_room", room="den")
        assert text == "Error: #den is private: you need an invite (NOT_INVITED)"
    else:
        text = await rejected(cast, gabe, "ROOM_NOT_FOUND", action="join_room", room="den")
        assert text == "Error: no room #den (ROOM_NOT_FOUND)"
    if room_type != "public":
        if visibility == "ghost":  # a ghost cannot be invited: it does not exist for the owner
            await rejected(cast, olive, "AGENT_NOT_FOUND", action="invite", room="den", agent=gabe.id)
            return
        await ok(olive, action="invite", room="den", agent=gabe.id)
        await cast.settle()
        assert await kinds(cast, gabe) == ["room_invite"]
    assert await ok(gabe, action="join_room", room="den") == f"Joined #den. Members: {label(olive)}."
    assert await ok(gabe, action="join_room", room="den") == "You are already in #den."
    await cast.settle()
    assert olive.store.state.room("den").members.keys() == {olive.id, gabe.id}  # type: ignore[union-attr]
    assert await kinds(cast, gabe) == ["room_members"]
    joined = await drained(cast, olive)
    if visibility == "ghost":  # nobody is told a ghost joined
        assert joined == []
        return
    assert [(e.type, e.sender) for e in joined] == [("member_joined", gabe.id)]
    assert format_delivery_event(joined[0]) == f"[#den] gabe ({gabe.id}) joined"


@pytest.mark.parametrize("room_type", ROOM_TYPES)
async def test_leave_room(cast: Cast, room_type: str) -> None:
    olive = await cast.agent("h1", "olive")
    wanda = await cast.agent("h2", "wanda")
    otto = await cast.agent("h3", "otto")
    ivy = await cast.agent("h4", "ivy")
    await ok(olive, action="create_room", room="den", type=room_type)
    await admit(cast, olive, wanda, room="den", room_type=room_type)
    await ok(olive, action="invite", room="den", agent="ivy")
    await cast.quiet()
    await rejected(cast, otto, "ROOM_NOT_FOUND", action="leave_room", room="nowhere")
    text = await rejected(cast, otto, outsider_code(room_type, "NOT_MEMBER"), action="leave_room", room="den")
    if room_type != "secret":
        assert text == "Error: you are not a member of #den (NOT_MEMBER)"
    await rejected(cast, ivy, "NOT_MEMBER", action="leave_room", room="den")  # invited is not a member
    assert await ok(wanda, action="leave_room", room="den") == "Left #den."
    left = await drained(cast, olive)
    assert [(e.type, e.sender) for e in left] == [("member_left", wanda.id)]
    assert format_delivery_event(left[0]) == f"[#den] wanda ({wanda.id}) left"
    assert await kinds(cast, wanda) == []
    assert olive.store.state.room("den").members.keys() == {olive.id}  # type: ignore[union-attr]
    await rejected(cast, wanda, outsider_code(room_type, "NOT_MEMBER"), action="leave_room", room="den")


# ====================================================================== owner leaving


@pytest.mark.parametrize("room_type", ROOM_TYPES)
async def test_owner_leaving_passes_ownership_to_the_earliest_joined_member(cast: Cast, room_type: str) -> None:
    olive = await cast.agent("h1", "olive")
    # The earliest joiner sorts last by name and by id, so only the join order can pick it.
    zed = await cast.agent("hz", "zed")
    amy = await cast.agent("ha", "amy")
    otto = await cast.agent("h5", "otto")
    await ok(olive, action="create_room", room="den", type=room_type)
    await admit(cast, olive, zed, room="den", room_type=room_type)
    await admit(cast, olive, amy, room="den", room_type=room_type)
    await cast.quiet()
    assert await ok(olive, action="leave_room", room="den") == f"Left #den. {label(zed)} owns it now."
    await cast.settle()
    for agent in (zed, amy):
        assert [(e.type, e.sender) for e in await drained(cast, agent)] == [("member_left", olive.id)]
    assert amy.store.state.room("den").owner == zed.id  # type: ignore[union-attr]
    assert await ok(amy, action="list_rooms") == (
        f"1 room(s):\n- #den ({room_type}, 2 member(s), owner {label(zed)}) [joined]"
    )
    # The old owner has no rights left; the new one has them all.
    old_owner_code = outsider_code(room_type, "NOT_OWNER")
    await rejected(cast, olive, old_owner_code, action="kick", room="den", agent="amy")
    await rejected(cast, olive, old_owner_code, action="invite", room="den", agent="otto")
    await rejected(cast, olive, old_owner_code, action="destroy_room", room="den")
    text = await rejected(cast, amy, "NOT_OWNER", action="kick", room="den", agent="zed")
    assert text == f"Error: only the owner of #den ({label(zed)}) can (NOT_OWNER)"
    assert await ok(zed, action="invite", room="den", agent="otto") == f"Invited {label(otto)} to #den."
    assert await ok(zed, action="kick", room="den", agent="amy") == (
        f"Kicked {label(amy)} from #den; it needs a new invite."
    )
    await ok(zed, action="invite", room="den", agent="olive")
    await cast.settle()
    await ok(olive, action="join_room", room="den")
    await cast.settle()
    await rejected(cast, olive, "NOT_OWNER", action="kick", room="den", agent="zed")


@pytest.mark.parametrize("room_type", ROOM_TYPES)
async def test_owner_leaving_an_empty_room_keeps_it(cast: Cast, room_type: str) -> None:
    olive = await cast.agent("h1", "olive")
    gabe = await cast.agent("h2", "gabe")
    otto = await cast.agent("h3", "otto")
    await ok(olive, action="create_room", room="den", type=room_type)
    assert await ok(olive, action="leave_room", room="den") == (
        "Left #den. It is empty; you still own it and may come back."
    )
    await cast.settle()
    view = otto.store.state.room("den")
    assert view is not None
    assert (view.owner, dict(view.members)) == (olive.id, {})
    assert (
        await ok(olive, action="list_rooms") == f"1 room(s):\n- #den ({room_type}, 0 member(s), owner {label(olive)})"
    )
    if room_type == "secret":
        await rejected(cast, otto, "ROOM_NOT_FOUND", action="join_room", room="den")
    assert await ok(olive, action="invite", room="den", agent="gabe") == f"Invited {label(gabe)} to #den."
    await cast.settle()
    assert await ok(gabe, action="join_room", room="den") == "Joined #den. Members: just you."
    await cast.settle()
    assert await ok(olive, action="join_room", room="den") == f"Joined #den. Members: {label(gabe)}."
    await cast.settle()
    assert gabe.store.state.room("den").owner == olive.id  # type: ignore[union-attr]
    await ok(olive, action="kick", room="den", agent="gabe")


# ====================================================================== send, read_room


@pytest.mark.parametrize(("room_type", "visibility"), ADMITTED)
async def test_send(cast: Cast, room_type: str, visibility: str) -> None:
    olive = await cast.agent("h1", "olive")
    gabe = await cast.agent("h2", "gabe", visibility)
    otto = await cast.agent("h3", "otto")
    await ok(olive, action="create_room", room="den", type=room_type)
    await admit(cast, olive, gabe, room="den", room_type=room_type)
    await cast.quiet()
    result = await gabe.call({"action": "send", "target": "den", "content": "hello den"})
    message_id = result.data["message_id"]
    assert result.text == f"Sent to #den (1 other member(s)); message id {message_id}."
    [event] = await drained(cast, olive)
    assert (event.type, event.to, event.sender, event.sender_name, event.room) == (
        "room_message",
        olive.id,
        gabe.id,
        "gabe",
        "den",
    )
    assert (event.content, event.message_id, event.streaming) == ("hello den", message_id, "followUp")
    assert format_delivery_event(event) == f"[#den] gabe ({gabe.id}): hello den  [id {message_id}]"
    receipts = await drained(cast, gabe)
    assert [(e.type, e.status, e.sender) for e in receipts] == [
        ("delivery_status", "delivered", olive.id),
        ("delivery_status", "read", olive.id),
    ]
    # The original's alias: room instead of target; and a reply.
    reply = await olive.call({"action": "send", "room": "den", "content": "hi gabe", "replyTo": message_id})
    assert not reply.is_error, reply.text
    [answer] = await drained(cast, gabe)
    assert (answer.content, answer.reply_to) == ("hi gabe", message_id)
    assert format_delivery_event(answer) == (
        f"[#den] olive ({olive.id}) (reply to {message_id}): hi gabe  [id {reply.data['message_id']}]"
    )
    await cast.quiet()
    await rejected(cast, gabe, "ROOM_NOT_FOUND", action="send", target="nowhere", content="x")
    text = await rejected(cast, otto, outsider_code(room_type, "NOT_MEMBER"), action="send", target="den", content="x")
    if room_type != "secret":
        assert text == "Error: you are not a member of #den; join_room first (NOT_MEMBER)"
    await rejected(cast, gabe, "INVALID_PARAMS", action="send", target="den", content="x", replyTo="nope")
    assert await drained(cast, otto) == []


@pytest.mark.parametrize("room_type", ROOM_TYPES)
async def test_read_room_access(cast: Cast, room_type: str) -> None:
    olive = await cast.agent("h1", "olive")
    wanda = await cast.agent("h2", "wanda")
    otto = await cast.agent("h3", "otto")
    ivy = await cast.agent("h4", "ivy")
    await ok(olive, action="create_room", room="den", type=room_type)
    await admit(cast, olive, wanda, room="den", room_type=room_type)
    first = (await olive.call({"action": "send", "target": "den", "content": "first"})).data["message_id"]
    second = (await olive.call({"action": "send", "target": "den", "content": "second"})).data["message_id"]
    await ok(olive, action="invite", room="den", agent="ivy")
    await cast.quiet()
    line = re.compile(r"\[\d\d:\d\d:\d\d\] (.*)")
    result = await wanda.call({"action": "read_room", "room": "den"})
    header, *lines = result.text.split("\n")
    assert header == "#den: last 2 of 2 message(s):"
    assert [line.fullmatch(text).group(1) for text in lines] == [  # type: ignore[union-attr]
        f"{label(olive)}: first  [id {first}]",
        f"{label(olive)}: second  [id {second}]",
    ]
    assert result.data == {"messages": [first, second], "total": 2}
    await rejected(cast, otto, "ROOM_NOT_FOUND", action="read_room", room="nowhere")
    if room_type == "public":
        assert (await otto.call({"action": "read_room", "room": "den"})).data == result.data
        assert (await ivy.call({"action": "read_room", "room": "den"})).data == result.data
    else:
        text = await rejected(cast, otto, outsider_code(room_type, "NOT_MEMBER"), action="read_room", room="den")
        if room_type == "private":
            assert text == "Error: #den is private: only members read it (NOT_MEMBER)"
        text = await rejected(cast, ivy, "NOT_MEMBER", action="read_room", room="den")
        assert text == f"Error: #den is {room_type}: only members read it (NOT_MEMBER)"


@pytest.mark.parametrize("reader", ["outsider", "later-member"])
async def test_reading_history_one_was_not_sent_gives_its_author_no_receipt(cast: Cast, reader: str) -> None:
    """Receipts are per recipient: reading a public room's history as a non-recipient tells the author nothing."""
    olive = await cast.agent("h1", "olive")
    otto = await cast.agent("h2", "otto")
    await ok(olive, action="create_room", room="den")
    await ok(olive, action="send", target="den", content="before you came")
    await cast.quiet()
    if reader == "later-member":
        await admit(cast, olive, otto, room="den", room_type="public")
        await cast.quiet()
    result = await otto.call({"action": "read_room", "room": "den"})
    assert result.data["total"] == 1
    assert await drained(cast, olive) == []


async def test_read_room_of_an_empty_room(cast: Cast) -> None:
    olive = await cast.agent("h1", "olive")
    await ok(olive, action="create_room", room="den")
    result = await olive.call({"action": "read_room", "room": "den"})
    assert (result.text, result.data) == ("#den: last 0 of 0 message(s).", {"messages": [], "total": 0})


def _iso(ms: int, suffix: str) -> str:
    stamp = dt.datetime.fromtimestamp(ms // 1000, dt.UTC)
    if suffix == "+02:00":
        stamp = stamp.astimezone(dt.timezone(dt.timedelta(hours=2)))
    return stamp.strftime("%Y-%m-%dT%H:%M:%S") + f".{ms % 1000:03d}{suffix}"


@pytest.mark.parametrize("kind", ["message-id", "iso-z", "iso-offset", "iso-naive", "epoch-ms", "epoch-ms-text"])
async def test_read_room_since(cast: Cast, kind: str) -> None:
    olive = await cast.agent("h1", "olive")
    wanda = await cast.agent("h2", "wanda")
    await ok(olive, action="create_room", room="den")
    await admit(cast, olive, wanda, room="den", room_type="public")
    await cast.quiet()
    ids = []
    for text in ("one", "two", "three"):
        ids.append((await olive.call({"action": "send", "target": "den", "content": text})).data["message_id"])
        await trio.sleep(0.005)  # distinct wall-clock milliseconds, so a time can fall between two messages
    events = await drained(cast, wanda)
    stamps = [e.timestamp for e in events]
    assert [e.message_id for e in events] == ids
    assert stamps == sorted(set(stamps))
    since: str | int = {
        "message-id": ids[0],
        "iso-z": _iso(stamps[0], "Z"),
        "iso-offset": _iso(stamps[0], "+02:00"),
        "iso-naive": _iso(stamps[0], ""),
        "epoch-ms": stamps[0],
        "epoch-ms-text": str(stamps[0]),  # as the command line's --since takes it
    }[kind]
    result = await wanda.call({"action": "read_room", "room": "den", "since": since})
    assert not result.is_error, result.text
    assert result.data == {"messages": ids[1:], "total": 3}
    assert result.text.startswith(f"#den: 2 message(s) since {since}:\n")
    assert "] olive" in result.text
    assert "two" in result.text
    assert "three" in result.text
    assert ": one  [" not in result.text
    last: str | int = ids[2] if kind == "message-id" else stamps[2]
    if kind == "epoch-ms-text":
        last = str(stamps[2])
    after = await wanda.call({"action": "read_room", "room": "den", "since": last})
    assert (after.text, after.data) == (f"#den: 0 message(s) since {last}.", {"messages": [], "total": 3})
    text = await rejected(cast, wanda, "INVALID_PARAMS", action="read_room", room="den", since="not-a-time")
    assert text == (
        "Error: invalid 'since': 'not-a-time' is neither a message id here nor an ISO time (INVALID_PARAMS)"
    )


# ====================================================================== invite, decline_invite


@pytest.mark.parametrize("room_type", ROOM_TYPES)
@pytest.mark.parametrize("visibility", VISIBILITIES)
@pytest.mark.parametrize("by", ["name", "id"])
async def test_invite(cast: Cast, room_type: str, visibility: str, by: str) -> None:
    olive = await cast.agent("h1", "olive")
    gabe = await cast.agent("h2", "gabe", visibility)
    wanda = await cast.agent("h3", "wanda")
    otto = await cast.agent("h4", "otto")
    await ok(olive, action="create_room", room="den", type=room_type)
    await admit(cast, olive, wanda, room="den", room_type=room_type)
    await cast.quiet()
    ref = "gabe" if by == "name" else gabe.id
    if visibility == "ghost" or (visibility == "hidden" and by == "name"):
        # Not found, word for word as an agent that does not exist: a hidden agent is named by id, a ghost never.
        text = await rejected(cast, olive, "AGENT_NOT_FOUND", action="invite", room="den", agent=ref)
        assert text == f"Error: no agent named or with id {ref!r} (AGENT_NOT_FOUND)"
        return
    assert await ok(olive, action="invite", room="den", agent=ref) == f"Invited {label(gabe)} to #den."
    [event] = await drained(cast, gabe)
    assert (event.type, event.sender, event.room, event.to) == ("room_invite", olive.id, "den", gabe.id)
    assert format_delivery_event(event) == (
        f"[#den] olive ({olive.id}) invited you; join_room to accept or decline_invite to refuse"
    )
    assert await ok(olive, action="invite", room="den", agent=ref) == f"{label(gabe)} is already invited to #den."
    assert await drained(cast, gabe) == []
    assert await drained(cast, wanda) == []

    text = await rejected(cast, wanda, "NOT_OWNER", action="invite", room="den", agent="otto")
    assert text == f"Error: only the owner of #den ({label(olive)}) can (NOT_OWNER)"
    await rejected(cast, otto, outsider_code(room_type, "NOT_OWNER"), action="invite", room="den", agent="otto")
    await rejected(cast, olive, "ROOM_NOT_FOUND", action="invite", room="nowhere", agent=ref)
    text = await rejected(cast, olive, "AGENT_NOT_FOUND", action="invite", room="den", agent="nobody")
    assert text == "Error: no agent named or with id 'nobody' (AGENT_NOT_FOUND)"
    text = await rejected(cast, olive, "INVALID_PARAMS", action="invite", room="den", agent="wanda")
    assert text == f"Error: {label(wanda)} is already a member (INVALID_PARAMS)"

    await ok(gabe, action="join_room", room="den")
    await cast.settle()
    view = wanda.store.state.room("den")
    assert view is not None
    assert (set(view.members), dict(view.invited)) == ({olive.id, wanda.id, gabe.id}, {})


@pytest.mark.parametrize("room_type", ROOM_TYPES)
@pytest.mark.parametrize("reason", ["busy with PR 42", ""])
async def test_decline_invite(cast: Cast, room_type: str, reason: str) -> None:
    olive = await cast.agent("h1", "olive")
    gabe = await cast.agent("h2", "gabe")
    wanda = await cast.agent("h3", "wanda")
    otto = await cast.agent("h4", "otto")
    await ok(olive, action="create_room", room="den", type=room_type)
    await admit(cast, olive, wanda, room="den", room_type=room_type)
    await ok(olive, action="invite", room="den", agent="gabe")
    await cast.quiet()
    await rejected(cast, gabe, "ROOM_NOT_FOUND", action="decline_invite", room="nowhere")
    text = await rejected(cast, otto, outsider_code(room_type, "NOT_INVITED"), action="decline_invite", room="den")
    if room_type != "secret":
        assert text == "Error: you have no invite to #den (NOT_INVITED)"
    await rejected(cast, wanda, "NOT_INVITED", action="decline_invite", room="den")  # a member has no invite
    params: dict[str, object] = {"reason": reason} if reason else {}
    assert await ok(gabe, action="decline_invite", room="den", **params) == (
        f"Declined the invite to #den; {label(olive)} is told."
    )
    [event] = await drained(cast, olive)
    assert (event.type, event.sender, event.reason, event.room) == ("invite_declined", gabe.id, reason, "den")
    told = f"[#den] gabe ({gabe.id}) declined your invite"
    assert format_delivery_event(event) == (f"{told}: {reason}" if reason else told)
    assert await drained(cast, wanda) == []
    assert await drained(cast, gabe) == []
    # The invite is gone.
    await rejected(cast, gabe, outsider_code(room_type, "NOT_INVITED"), action="decline_invite", room="den")
    if room_type == "public":
        await ok(gabe, action="join_room", room="den")
    else:
        await rejected(cast, gabe, outsider_code(room_type, "NOT_INVITED"), action="join_room", room="den")


# ====================================================================== kick


@pytest.mark.parametrize(("room_type", "visibility"), ADMITTED)
@pytest.mark.parametrize("by", ["name", "id"])
async def test_kick(cast: Cast, room_type: str, visibility: str, by: str) -> None:
    olive = await cast.agent("h1", "olive")
    gabe = await cast.agent("h2", "gabe", visibility)
    wanda = await cast.agent("h3", "wanda")
    otto = await cast.agent("h4", "otto")
    await ok(olive, action="create_room", room="den", type=room_type)
    await admit(cast, olive, gabe, room="den", room_type=room_type)
    await admit(cast, olive, wanda, room="den", room_type=room_type)
    await cast.quiet()
    ref = "gabe" if by == "name" else gabe.id
    if visibility == "ghost":
        # A ghost does not exist for the owner until it shows itself by posting in the room (then by id only).
        await rejected(cast, olive, "AGENT_NOT_FOUND", action="kick", room="den", agent=ref)
        await ok(gabe, action="send", target="den", content="boo")
        await cast.quiet()
        if by == "name":
            await rejected(cast, olive, "AGENT_NOT_FOUND", action="kick", room="den", agent=ref)
            return
        await ok(olive, action="kick", room="den", agent=ref)
        await cast.settle()
        assert [(e.type, e.subject) for e in await drained(cast, gabe)] == [("member_kicked", gabe.id)]
        assert await drained(cast, wanda) == []  # its presence is not told, its leaving neither
        return

    text = await rejected(cast, wanda, "NOT_OWNER", action="kick", room="den", agent=ref)
    assert text == f"Error: only the owner of #den ({label(olive)}) can (NOT_OWNER)"
    await rejected(cast, otto, outsider_code(room_type, "NOT_OWNER"), action="kick", room="den", agent=ref)
    await rejected(cast, olive, "ROOM_NOT_FOUND", action="kick", room="nowhere", agent=ref)
    await rejected(cast, olive, "AGENT_NOT_FOUND", action="kick", room="den", agent="nobody")
    text = await rejected(cast, olive, "NOT_MEMBER", action="kick", room="den", agent="otto")
    assert text == f"Error: {label(otto)} is not in #den (NOT_MEMBER)"
    text = await rejected(cast, olive, "INVALID_PARAMS", action="kick", room="den", agent="olive")
    assert text == "Error: you cannot kick yourself; leave_room or destroy_room instead (INVALID_PARAMS)"

    assert await ok(olive, action="kick", room="den", agent=ref) == (
        f"Kicked {label(gabe)} from #den; it needs a new invite."
    )
    await cast.settle()
    events = {agent.name: await drained(cast, agent) for agent in (olive, gabe, wanda, otto)}
    assert {name: [(e.type, e.sender, e.subject) for e in got] for name, got in events.items()} == {
        "olive": [("member_kicked", olive.id, gabe.id)],
        "gabe": [("member_kicked", olive.id, gabe.id)],
        "wanda": [("member_kicked", olive.id, gabe.id)],
        "otto": [],
    }
    assert format_delivery_event(events["gabe"][0]) == f"[#den] you were kicked by olive ({olive.id})"
    assert format_delivery_event(events["wanda"][0]) == f"[#den] gabe ({gabe.id}) was kicked by olive ({olive.id})"
    view = wanda.store.state.room("den")
    assert view is not None
    assert set(view.members) == {olive.id, wanda.id}

    text = await rejected(cast, gabe, outsider_code(room_type, "NOT_INVITED"), action="join_room", room="den")
    if room_type == "public":
        assert text == "Error: you were kicked from #den: you need a new invite (NOT_INVITED)"
    await rejected(cast, gabe, outsider_code(room_type, "NOT_MEMBER"), action="send", target="den", content="x")
    # Out of the room, a hidden agent is found by id only.
    gone = "AGENT_NOT_FOUND" if (visibility, by) == ("hidden", "name") else "NOT_MEMBER"
    await rejected(cast, olive, gone, action="kick", room="den", agent=ref)
    if room_type == "secret":
        assert "#den" not in await ok(gabe, action="list_rooms")
    # A new invite lets it back in.
    await ok(olive, action="invite", room="den", agent=gabe.id)
    await cast.settle()
    await ok(gabe, action="join_room", room="den")


@pytest.mark.parametrize("room_type", ROOM_TYPES)
async def test_kick_revokes_an_invite(cast: Cast, room_type: str) -> None:
    olive = await cast.agent("h1", "olive")
    ivy = await cast.agent("h2", "ivy")
    await ok(olive, action="create_room", room="den", type=room_type)
    await ok(olive, action="invite", room="den", agent="ivy")
    await cast.quiet()
    assert await ok(olive, action="kick", room="den", agent=ivy.id) == (
        f"Kicked {label(ivy)} from #den; it needs a new invite."
    )
    assert [(e.type, e.subject) for e in await drained(cast, ivy)] == [("member_kicked", ivy.id)]
    await rejected(cast, ivy, outsider_code(room_type, "NOT_INVITED"), action="join_room", room="den")
    await rejected(cast, ivy, outsider_code(room_type, "NOT_INVITED"), action="decline_invite", room="den")


# ====================================================================== destroy_room


@pytest.mark.parametrize(("room_type", "visibility"), ADMITTED)
async def test_destroy_room(cast: Cast, room_type: str, visibility: str) -> None:
    olive = await cast.agent("h1", "olive")
    gabe = await cast.agent("h2", "gabe", visibility)
    wanda = await cast.agent("h3", "wanda")
    otto = await cast.agent("h4", "otto")
    await ok(olive, action="create_room", room="den", type=room_type)
    await admit(cast, olive, gabe, room="den", room_type=room_type)
    await admit(cast, olive, wanda, room="den", room_type=room_type)
    await cast.quiet()
    text = await rejected(cast, gabe, "NOT_OWNER", action="destroy_room", room="den")
    assert text == f"Error: only the owner of #den ({label(olive)}) can (NOT_OWNER)"
    await rejected(cast, otto, outsider_code(room_type, "NOT_OWNER"), action="destroy_room", room="den")
    await rejected(cast, olive, "ROOM_NOT_FOUND", action="destroy_room", room="nowhere")

    assert (await ok(olive, action="destroy_room", room="den")).startswith("Destroyed #den; its ")
    await cast.settle()
    events = {agent.name: await drained(cast, agent) for agent in (olive, gabe, wanda, otto)}
    assert {name: [(e.type, e.sender) for e in got] for name, got in events.items()} == {
        "olive": [],
        "gabe": [("room_destroyed", olive.id)],
        "wanda": [("room_destroyed", olive.id)],
        "otto": [],
    }
    assert format_delivery_event(events["gabe"][0]) == f"[#den] the room was destroyed by olive ({olive.id})"
    for agent in (olive, gabe):
        await rejected(cast, agent, "ROOM_NOT_FOUND", action="join_room", room="den")
        await rejected(cast, agent, "ROOM_NOT_FOUND", action="leave_room", room="den")
        await rejected(cast, agent, "ROOM_NOT_FOUND", action="send", target="den", content="x")
        await rejected(cast, agent, "ROOM_NOT_FOUND", action="read_room", room="den")
        await rejected(cast, agent, "ROOM_NOT_FOUND", action="decline_invite", room="den")
        await rejected(cast, agent, "ROOM_NOT_FOUND", action="destroy_room", room="den")
    await rejected(cast, olive, "ROOM_NOT_FOUND", action="invite", room="den", agent="otto")
    await rejected(cast, olive, "ROOM_NOT_FOUND", action="kick", room="den", agent="gabe")
    assert await ok(gabe, action="list_rooms") == "No rooms yet; create one with create_room."
    assert (await ok(gabe, action="whoami")).endswith("rooms: none")
    # The name is free again.
    assert (
        await ok(otto, action="create_room", room="den")
        == "Created #den (public); you own it and are its first member."
    )


@pytest.mark.parametrize("others", [0, 1, 2])
async def test_destroy_room_result_counts_the_other_members(cast: Cast, others: int) -> None:
    olive = await cast.agent("h1", "olive")
    members = [await cast.agent(f"h{i + 2}", f"member{i}") for i in range(others)]
    await ok(olive, action="create_room", room="den")
    for member in members:
        await admit(cast, olive, member, room="den", room_type="public")
    assert (
        await ok(olive, action="destroy_room", room="den") == f"Destroyed #den; its {others} other member(s) are told."
    )


# ====================================================================== secret rooms


async def test_secret_rooms_do_not_exist_for_outsiders(cast: Cast) -> None:
    olive = await cast.agent("h1", "olive")
    otto = await cast.agent("h2", "otto")
    await ok(olive, action="create_room", room="cabal", type="secret")
    await ok(olive, action="send", target="cabal", content="psst")
    await cast.quiet()
    assert await ok(otto, action="list_rooms") == "No rooms yet; create one with create_room."
    for params in (
        {"action": "join_room", "room": "cabal"},
        {"action": "read_room", "room": "cabal"},
        {"action": "send", "target": "cabal", "content": "hello?"},
        {"action": "leave_room", "room": "cabal"},
        {"action": "decline_invite", "room": "cabal"},
        {"action": "invite", "room": "cabal", "agent": "otto"},
        {"action": "kick", "room": "cabal", "agent": "olive"},
        {"action": "destroy_room", "room": "cabal"},
    ):
        text = await rejected(cast, otto, "ROOM_NOT_FOUND", **params)
        assert text == "Error: no room #cabal (ROOM_NOT_FOUND)"
        # Word for word what a room that does not exist gives.
        missing = {key: "nowhere" if value == "cabal" else value for key, value in params.items()}
        assert await rejected(cast, otto, "ROOM_NOT_FOUND", **missing) == "Error: no room #nowhere (ROOM_NOT_FOUND)"


# ====================================================================== member events


@pytest.mark.parametrize(("room_type", "visibility"), ADMITTED)
async def test_member_events(cast: Cast, room_type: str, visibility: str) -> None:
    olive = await cast.agent("h1", "olive")
    wanda = await cast.agent("h3", "wanda")
    gabe = await cast.agent("h2", "gabe", visibility)
    await ok(olive, action="create_room", room="den", type=room_type)
    await admit(cast, olive, wanda, room="den", room_type=room_type)
    await ok(wanda, action="update", status="busy")
    if room_type != "public":
        await ok(olive, action="invite", room="den", agent=gabe.id)
    await cast.quiet()
    # A ghost's presence (joined, status, left) is told to nobody; a hidden agent's to the members.
    told = visibility != "ghost"

    # room_members to the joiner: the others, with their status; member_joined to the others.
    await ok(gabe, action="join_room", room="den")
    [members] = await drained(cast, gabe)
    assert members.type == "room_members"
    assert members.members == (Member(olive.id, "olive", "active"), Member(wanda.id, "wanda", "busy"))
    assert format_delivery_event(members) == (
        f"[#den] you joined (via gabe ({gabe.id})); members: olive ({olive.id}) [active], wanda ({wanda.id}) [busy]"
    )
    for agent in (olive, wanda):
        if not told:
            assert await drained(cast, agent) == []
            continue
        [joined] = await drained(cast, agent)
        assert (joined.type, joined.sender, joined.sender_name, joined.room) == (
            "member_joined",
            gabe.id,
            "gabe",
            "den",
        )

    # member_status when a member changes its status (not for other changes).
    await ok(gabe, action="update", status="idle")
    for agent in (olive, wanda) if told else ():
        [status] = await drained(cast, agent)
        assert (status.type, status.sender, status.status) == ("member_status", gabe.id, "idle")
        assert format_delivery_event(status) == f"[#den] gabe ({gabe.id}) is now idle"
    assert await drained(cast, gabe) == []
    await ok(gabe, action="update", status="idle", tags=["x"])
    await ok(gabe, action="update", name="gabriel")
    assert [await kinds(cast, agent) for agent in (olive, wanda, gabe)] == [[], [], []]

    # member_left to the others.
    await ok(gabe, action="leave_room", room="den")
    for agent in (olive, wanda) if told else ():
        [left] = await drained(cast, agent)
        assert (left.type, left.sender, left.sender_name) == ("member_left", gabe.id, "gabriel")
    assert await drained(cast, gabe) == []

    # A member whose bridge stops shows as offline to the others.
    await cast.mesh.stop(wanda)
    cast.agents.remove(wanda)
    [offline] = await drained(cast, olive)
    assert (offline.type, offline.sender, offline.status) == ("member_status", wanda.id, "offline")
    await cast.quiet()


async def test_room_members_for_the_first_joiner_of_an_empty_room(cast: Cast) -> None:
    olive = await cast.agent("h1", "olive")
    gabe = await cast.agent("h2", "gabe")
    await ok(olive, action="create_room", room="den")
    await ok(olive, action="leave_room", room="den")
    await cast.quiet()
    await ok(gabe, action="join_room", room="den")
    await cast.settle()
    assert await drained(cast, gabe) == []  # nobody there to list
    assert await drained(cast, olive) == []  # not a member: not told


# ====================================================================== delivery_status and streamingBehavior


@pytest.mark.parametrize("room_type", ROOM_TYPES)
async def test_room_message_receipts_per_recipient(cast: Cast, room_type: str) -> None:
    olive = await cast.agent("h1", "olive")
    gabe = await cast.agent("h2", "gabe")
    wanda = await cast.agent("h3", "wanda")
    await ok(olive, action="create_room", room="den", type=room_type)
    await admit(cast, olive, gabe, room="den", room_type=room_type)
    await admit(cast, olive, wanda, room="den", room_type=room_type)
    await cast.quiet()
    message_id = (await olive.call({"action": "send", "target": "den", "content": "standup"})).data["message_id"]
    await cast.settle()
    delivered = await drained(cast, olive)
    assert sorted((e.type, e.status, e.sender, e.message_id) for e in delivered) == sorted(
        [("delivery_status", "delivered", gabe.id, message_id), ("delivery_status", "delivered", wanda.id, message_id)]
    )
    assert [e.content for e in await drained(cast, gabe)] == ["standup"]
    assert [(e.type, e.status, e.sender) for e in await drained(cast, olive)] == [("delivery_status", "read", gabe.id)]
    # Reading the history counts as read too, once.
    await ok(wanda, action="read_room", room="den")
    assert [(e.type, e.status, e.sender) for e in await drained(cast, olive)] == [("delivery_status", "read", wanda.id)]
    assert [e.content for e in await drained(cast, wanda)] == ["standup"]  # still shown once as an event
    assert await drained(cast, olive) == []


@pytest.mark.parametrize("action", ["send", "dm"])
@pytest.mark.parametrize("streaming", [None, "steer", "followUp", "info"])
async def test_streaming_behavior_arrives_in_the_event(cast: Cast, action: str, streaming: str | None) -> None:
    olive = await cast.agent("h1", "olive")
    gabe = await cast.agent("h2", "gabe")
    await ok(olive, action="create_room", room="den")
    await admit(cast, olive, gabe, room="den", room_type="public")
    await cast.quiet()
    params: dict[str, object] = {"action": action, "target": "den" if action == "send" else "gabe", "content": "go"}
    if streaming is not None:
        params["streamingBehavior"] = streaming
    await ok(olive, **params)
    [event] = await drained(cast, gabe)
    expected = streaming or ("followUp" if action == "send" else "steer")
    assert (event.type, event.content, event.streaming) == (
        "room_message" if action == "send" else "dm",
        "go",
        expected,
    )
