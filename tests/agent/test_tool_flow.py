"""The agent_comms tool end to end on an in-memory multi-peer mesh: actions, rules, events, receipts."""

from __future__ import annotations

import pytest

from agent_comms.agent import Agent
from agent_comms.events import DeliveryEvent, format_delivery_event
from agent_comms.testing import InMemoryMesh, open_in_memory_mesh

pytest_plugins = ["agent_comms.testing.fixtures"]


async def ok(agent: Agent, /, **params: object) -> str:
    result = await agent.call(params)
    assert not result.is_error, result.text
    return result.text


async def fails(agent: Agent, code: str, /, **params: object) -> str:
    result = await agent.call(params)
    assert result.is_error, result.text
    assert result.text.startswith("Error: ")
    assert result.text.endswith(f"({code})"), result.text
    return result.text


def types(events: list[DeliveryEvent]) -> list[str]:
    return [e.type for e in events]


async def test_dm_is_delivered_once_with_delivered_then_read_receipts(comms_mesh: InMemoryMesh) -> None:
    alice = await comms_mesh.agent("h1", name="alice")
    bob = await comms_mesh.agent("h2", name="bob")
    text = await ok(alice, action="dm", target="bob", content="review PR 7 please")
    assert "bob (" in text
    await comms_mesh.settle()
    [event] = bob.drain()
    assert event.type == "dm"
    assert event.sender == alice.id
    line = format_delivery_event(event)
    assert "alice" in line
    assert "review PR 7 please" in line
    await comms_mesh.settle()
    statuses = [e.status for e in alice.drain() if e.type == "delivery_status"]
    assert statuses == ["delivered", "read"]
    assert bob.drain() == []  # never twice


async def test_errors_are_results_with_codes(comms_mesh: InMemoryMesh) -> None:
    alice = await comms_mesh.agent("h1", name="alice")
    await fails(alice, "INVALID_PARAMS", action="frobnicate")
    text = await fails(alice, "INVALID_PARAMS", action="dm", target="bob", content=5)
    assert "'content'" in text
    await fails(alice, "AGENT_NOT_FOUND", action="dm", target="nobody", content="hi")
    await fails(alice, "ROOM_NOT_FOUND", action="join_room", room="nowhere")
    await ok(alice, action="create_room", room="lobby")
    await fails(alice, "ROOM_EXISTS", action="create_room", room="lobby")


async def test_room_rules_across_peers(comms_mesh: InMemoryMesh) -> None:
    owner = await comms_mesh.agent("h1", name="owner")
    guest = await comms_mesh.agent("h2", name="guest")
    other = await comms_mesh.agent("h3", name="other")
    await ok(owner, action="create_room", room="ops", type="private", description="on call")
    await comms_mesh.settle()
    await fails(guest, "NOT_INVITED", action="join_room", room="ops")
    await fails(guest, "NOT_OWNER", action="invite", room="ops", agent="other")
    await ok(owner, action="invite", room="ops", agent="guest")
    await comms_mesh.settle()
    assert types(guest.drain()) == ["room_invite"]
    await ok(guest, action="join_room", room="ops")
    await comms_mesh.settle()
    assert "member_joined" in types(owner.drain())
    await fails(other, "NOT_MEMBER", action="read_room", room="ops")
    await fails(other, "NOT_MEMBER", action="send", target="ops", content="let me in")
    await ok(guest, action="send", target="ops", content="hello")
    await comms_mesh.settle()
    assert [e.content for e in owner.drain() if e.type == "room_message"] == ["hello"]
    await ok(owner, action="kick", room="ops", agent="guest")
    await comms_mesh.settle()
    assert "member_kicked" in types(guest.drain())
    await fails(guest, "NOT_INVITED", action="join_room", room="ops")
    await ok(owner, action="destroy_room", room="ops")
    await comms_mesh.settle()
    await fails(guest, "ROOM_NOT_FOUND", action="join_room", room="ops")


async def test_secret_rooms_are_invisible_to_outsiders(comms_mesh: InMemoryMesh) -> None:
    owner = await comms_mesh.agent("h1", name="owner")
    outsider = await comms_mesh.agent("h2", name="outsider")
    await ok(owner, action="create_room", room="cabal", type="secret")
    await comms_mesh.settle()
    assert "cabal" not in await ok(outsider, action="list_rooms")
    await fails(outsider, "ROOM_NOT_FOUND", action="join_room", room="cabal")
    await fails(outsider, "ROOM_NOT_FOUND", action="read_room", room="cabal")
    await ok(owner, action="invite", room="cabal", agent="outsider")
    await comms_mesh.settle()
    assert "cabal" in await ok(outsider, action="list_rooms")


async def test_hidden_and_ghost_agents(comms_mesh: InMemoryMesh) -> None:
    seer = await comms_mesh.agent("h1", name="seer")
    shy = await comms_mesh.agent("h2", name="shy", visibility="hidden")
    await comms_mesh.agent("h3", name="spook", visibility="ghost")
    listing = await ok(seer, action="list_agents")
    assert "shy" not in listing
    assert "spook" not in listing
    await ok(seer, action="dm", target=shy.id, content="found you")
    await fails(seer, "AGENT_NOT_FOUND", action="dm", target="shy", content="by name it is not found")
    await fails(seer, "AGENT_NOT_FOUND", action="dm", target="spook", content="boo")


async def test_a_restarted_agent_gets_what_was_sent_while_it_was_away() -> None:
    async with open_in_memory_mesh() as mesh:
        alice = await mesh.agent("h1", name="alice")
        bob = await mesh.agent("h2", name="bob")
        bob_id = bob.id
        await mesh.stop(bob)
        await mesh.settle()
        await ok(alice, action="dm", target=bob_id, content="while you were out")
        await ok(alice, action="dm", target=bob_id, content="and again")
        await mesh.settle()
        back = await mesh.agent("h2", name="bob", agent_id=bob_id)
        assert back.id == bob_id
        await mesh.settle()
        assert [e.content for e in back.drain()] == ["while you were out", "and again"]
        await mesh.settle()
        assert back.drain() == []
        statuses = [(e.status, e.content) for e in alice.drain() if e.type == "delivery_status"]
        assert ("read", "and again") in statuses


@pytest.mark.parametrize("visibility", ["visible", "hidden"])
async def test_read_room_shows_the_last_fifty_and_counts_the_rest(comms_mesh: InMemoryMesh, visibility: str) -> None:
    writer = await comms_mesh.agent("h1", name="writer", visibility=visibility)
    reader = await comms_mesh.agent("h2", name="reader")
    await ok(writer, action="create_room", room="log")
    for i in range(60):
        await ok(writer, action="send", target="log", content=f"line {i}")
    await comms_mesh.settle()
    text = await ok(reader, action="read_room", room="log")
    assert "last 50 of 60" in text
    assert "10 earlier" in text
    assert "line 59" in text
    assert "line 9 " not in text


async def test_direct_messages_to_an_absent_agent_are_bounded_and_the_sender_told_of_drops() -> None:
    async with open_in_memory_mesh(history_limit=3) as mesh:
        alice = await mesh.agent("h1", name="alice")
        bob = await mesh.agent("h2", name="bob")
        bob_id = bob.id
        await mesh.stop(bob)
        await mesh.settle()
        alice.drain()
        for i in range(5):
            await ok(alice, action="dm", target=bob_id, content=f"note {i}")
        await mesh.settle()
        dropped = [e for e in alice.drain() if e.type == "delivery_status" and e.status == "dropped"]
        assert [e.content for e in dropped] == ["note 0", "note 1"]
        assert "dropped undelivered" in format_delivery_event(dropped[0])
        back = await mesh.agent("h2", name="bob", agent_id=bob_id)
        await mesh.settle()
        assert [e.content for e in back.drain()] == ["note 2", "note 3", "note 4"]


async def test_open_agent_remembers_a_rename_for_the_next_start(tmp_path, monkeypatch) -> None:  # type: ignore[no-untyped-def]
    import socket as _socket

    from agent_comms.agent import open_agent

    with _socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        monkeypatch.setenv("AGENT_COMMS_PORT", str(sock.getsockname()[1]))
    monkeypatch.setenv("AGENT_COMMS_HOME", str(tmp_path / "home"))
    async with open_agent("renamer", cwd=str(tmp_path), probe_processes=False) as agent:
        first = agent.name
        await ok(agent, action="register", name="new-name")
    async with open_agent("renamer", cwd=str(tmp_path), probe_processes=False) as again:
        assert again.id == agent.id
        assert again.name == "new-name"
    assert first != "new-name"


async def test_every_room_change_is_an_event_of_its_own(comms_mesh: InMemoryMesh) -> None:
    owner = await comms_mesh.agent("h1", name="owner")
    guest = await comms_mesh.agent("h2", name="guest")
    await ok(owner, action="create_room", room="ops", type="private")
    seen: dict[str, list[str]] = {"owner": [], "guest": []}

    async def step(actor: Agent, /, **params: object) -> None:
        await ok(actor, **params)
        await comms_mesh.settle()
        seen["owner"] += [f"{e.type} {e.id}" for e in owner.drain()]
        seen["guest"] += [f"{e.type} {e.id}" for e in guest.drain()]

    for _ in range(2):  # the same changes twice: an invite revoked by a kick, a leave, and all of it again
        await step(owner, action="invite", room="ops", agent="guest")
        await step(owner, action="kick", room="ops", agent="guest")
        await step(owner, action="invite", room="ops", agent="guest")
        await step(guest, action="join_room", room="ops")
        await step(guest, action="leave_room", room="ops")
    guest_types = [line.split()[0] for line in seen["guest"]]
    assert guest_types.count("room_invite") == 4
    assert guest_types.count("member_kicked") == 2
    owner_types = [line.split()[0] for line in seen["owner"]]
    assert owner_types.count("member_joined") == 2
    assert owner_types.count("member_left") == 2
    for lines in seen.values():
        assert len({line.split()[1] for line in lines}) == len(lines)  # no two events share an id


async def test_an_event_keeps_its_id_when_a_restarted_bridge_gets_it_again() -> None:
    async with open_in_memory_mesh() as mesh:
        owner = await mesh.agent("h1", name="owner")
        guest = await mesh.agent("h2", name="guest")
        guest_id = guest.id
        await ok(owner, action="create_room", room="ops", type="private")
        await ok(owner, action="invite", room="ops", agent="guest")
        await mesh.settle()
        [live] = guest.store.pending(guest_id)  # shown to nobody yet: the bridge stops before the model reads it
        await mesh.stop(guest)
        await mesh.settle()
        back = await mesh.agent("h2", name="guest", agent_id=guest_id)
        await mesh.settle()
        [again] = back.drain()
        assert again.type == live.type == "room_invite"
        assert again.id == live.id


async def test_one_room_name_created_on_two_peers_at_once_keeps_both_creators_and_messages(
    comms_mesh: InMemoryMesh,
) -> None:
    alice = await comms_mesh.agent("h1", name="alice")
    bob = await comms_mesh.agent("h2", name="bob")
    await comms_mesh.settle()
    # neither peer has seen the other's creation yet: both are accepted, and both creators speak at once
    await ok(alice, action="create_room", room="general")
    await ok(bob, action="create_room", room="general")
    await ok(alice, action="send", target="general", content="alice here")
    await ok(bob, action="send", target="general", content="bob here")
    await comms_mesh.settle()
    for agent in (alice, bob):
        events = agent.drain()
        assert "room_destroyed" not in types(events), events
        text = await ok(agent, action="read_room", room="general")
        assert "alice here" in text
        assert "bob here" in text
    listing = await ok(bob, action="list_rooms")
    assert listing.count("#general") == 1
    assert "2 member(s)" in listing


async def test_a_message_posted_through_either_merged_instance_of_a_room_can_be_replied_to(
    comms_mesh: InMemoryMesh,
) -> None:
    """Two creations of one public room name at once merge into one room: a message posted through either instance
    is in its history, so an agent that joined later (and reads the history) may reply to both."""
    alice = await comms_mesh.agent("h1", name="alice")
    bob = await comms_mesh.agent("h2", name="bob")
    carol = await comms_mesh.agent("h3", name="carol")
    await comms_mesh.settle()
    await ok(alice, action="create_room", room="general")
    await ok(bob, action="create_room", room="general")
    said = {}
    for agent, text in ((alice, "alice here"), (bob, "bob here")):
        result = await agent.call({"action": "send", "target": "general", "content": text})
        assert not result.is_error, result.text
        said[text] = result.data["message_id"]
    await comms_mesh.settle()
    await ok(carol, action="join_room", room="general")
    await comms_mesh.settle()
    history = await ok(carol, action="read_room", room="general")
    for text, message_id in said.items():
        assert text in history
        await ok(carol, action="send", target="general", content=f"re: {text}", replyTo=message_id)
