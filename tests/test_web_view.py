"""What the web page is sent (``agent_comms.web.view``, ``agent_comms.web.hub``), on an in-memory mesh.

Testing policy: the snapshot and the page's actions are checked in-process (fast, exact, no browser); the page
itself, the server and its guards are tested with real processes and chromium in ``tests/test_web.py``.
"""

from __future__ import annotations

import json
from typing import Any

import pytest

from agent_comms.testing import open_in_memory_mesh
from agent_comms.web.hub import ActionRefused, Hub
from agent_comms.web.view import snapshot


def _conversation(state: dict[str, Any], key: str) -> dict[str, Any]:
    return next(c for c in state["conversations"] if c["key"] == key)


async def test_snapshot_follows_the_persons_rules() -> None:
    async with open_in_memory_mesh() as mesh:
        alice = await mesh.agent("human", name="alice", cwd="/home/alice")
        bob = await mesh.agent("jsonl", name="bob", cwd="/work/bob")
        await mesh.agent("jsonl", name="shy", cwd="/work/shy", visibility="hidden")
        carol = await mesh.agent("jsonl", name="carol", cwd="/work/carol")
        await bob.call({"action": "create_room", "room": "review", "description": "diffs"})
        await bob.call({"action": "create_room", "room": "vault", "type": "secret"})
        await mesh.settle()
        assert not (await alice.call({"action": "join_room", "room": "review"})).is_error
        await mesh.settle()
        mesh.crash(carol)
        await mesh.settle()

        state = snapshot(alice.store, alice.id, [])
        assert state["me"] == {"id": alice.id, "name": "alice", "status": "active"}
        # Visible agents only, never oneself; an agent that went offline is listed as offline.
        assert [(a["name"], a["online"], a["status"]) for a in state["agents"]] == [
            ("bob", True, "active"),
            ("carol", False, "offline"),
        ]
        # A secret room only for its members.
        assert [(r["name"], r["joined"]) for r in state["rooms"]] == [("review", True)]
        assert [m["name"] for m in state["rooms"][0]["members"]] == ["alice", "bob"]
        assert json.loads(json.dumps(state)) == state  # plain JSON


async def test_snapshot_has_messages_dms_and_receipts_of_the_persons_own() -> None:
    async with open_in_memory_mesh() as mesh:
        alice = await mesh.agent("human", name="alice", cwd="/home/alice")
        bob = await mesh.agent("jsonl", name="bob", cwd="/work/bob")
        await alice.call({"action": "create_room", "room": "review"})
        await mesh.settle()
        assert not (await bob.call({"action": "join_room", "room": "review"})).is_error
        await mesh.settle()
        hostile = "<img src=x onerror=alert(1)>"
        await bob.call({"action": "send", "target": "review", "content": hostile})
        await mesh.settle()  # alice has bob's message before she answers: hers comes after it
        sent = await alice.call({"action": "send", "target": "review", "content": "thanks"})
        dm = await alice.call({"action": "dm", "target": "bob", "content": "a word"})
        await mesh.settle()
        state = snapshot(alice.store, alice.id, [])
        room = _conversation(state, "#review")
        assert [(m["from_name"], m["content"], m["mine"]) for m in room["messages"]] == [
            ("bob", hostile, False),  # the text as it is: the page shows it as text
            ("alice", "thanks", True),
        ]
        direct = _conversation(state, f"@{bob.id}")
        assert direct["name"] == "bob"
        assert [m["id"] for m in direct["messages"]] == [dm.data["message_id"]]

        bob.drain()  # bob's bridge shows everything to its model: read receipts
        await mesh.settle()
        state = snapshot(alice.store, alice.id, [])
        mine = _conversation(state, "#review")["messages"][1]
        assert mine["id"] == sent.data["message_id"]
        assert (mine["read"], mine["readers"]) == (1, 1)
        assert _conversation(state, f"@{bob.id}")["messages"][0]["read"] == 1


async def test_hub_takes_only_the_listed_actions() -> None:
    async with open_in_memory_mesh() as mesh:
        alice = await mesh.agent("human", name="alice", cwd="/home/alice")
        hub = Hub(alice)
        for request in (
            [],
            {"call": {"action": "register", "name": "mallory"}},
            {"call": {"action": "update", "visibility": "ghost"}},
            {"call": "send"},
            {"command": "join review"},
            {"nothing": 1},
        ):
            with pytest.raises(ActionRefused):
                await hub.act(request)
        assert alice.name == "alice"
        answer = await hub.act({"call": {"action": "create_room", "room": "review"}})
        assert answer["ok"] is True
        answer = await hub.act({"command": "/join nowhere"})
        assert answer["ok"] is False
        assert "no room #nowhere" in answer["text"]
        before = hub.version
        answer = await hub.act({"call": {"action": "send", "target": "review", "content": "hello"}})
        assert answer["ok"] is True
        assert hub.version > before
        state = json.loads(hub.snapshot_json())
        assert [m["content"] for m in _conversation(state, "#review")["messages"]] == ["hello"]
        assert [line["kind"] for line in state["activity"]] == ["error"]  # the failed /join, as the chat says it


async def test_agents_that_share_a_name_are_told_apart_on_the_page() -> None:
    """The page names agents by the rule the chat and the command line use: ``name (short id)`` where shared."""
    async with open_in_memory_mesh() as mesh:
        me = await mesh.agent("human", name="me", cwd="/home/me")
        one = await mesh.agent("jsonl", name="bob", cwd="/work/one")
        two = await mesh.agent("jsonl", name="bob", cwd="/work/two")
        await one.call({"action": "create_room", "room": "review"})
        await mesh.settle()
        for agent in (two, me):
            assert not (await agent.call({"action": "join_room", "room": "review"})).is_error
        await mesh.settle()
        await two.call({"action": "send", "target": "review", "content": "hello"})
        await mesh.settle()
        first, second = f"bob ({one.id[-6:]})", f"bob ({two.id[-6:]})"
        assert first != second
        state = snapshot(me.store, me.id, [])
        assert sorted(a["name"] for a in state["agents"]) == sorted([first, second])
        assert sorted(m["name"] for m in state["rooms"][0]["members"]) == sorted(["me", first, second])
        assert [m["from_name"] for m in _conversation(state, "#review")["messages"]] == [second]
