""":mod:`agent_comms.views`: what ``agents``, ``rooms`` and ``read`` show of a replica, built by real agents on the
in-memory mesh (the process-level tests in test_cli_oneshot.py cover the commands end to end)."""

from __future__ import annotations

import datetime as dt

import pytest

from agent_comms.protocol.hlc import hlc_wall_ms
from agent_comms.testing import open_in_memory_mesh
from agent_comms.views import (
    SinceError,
    agent_rows,
    marked,
    message_rows,
    room_history,
    room_rows,
    select_messages,
)


async def test_agents_rooms_and_messages_as_the_cli_shows_them() -> None:
    async with open_in_memory_mesh() as mesh:
        alice = await mesh.agent("claude-code", "alice", cwd="/a")
        bob = await mesh.agent("codex", "bob", cwd="/b", tags=("reviewer",))
        await mesh.agent("pi", "shy", cwd="/c", visibility="hidden")
        await mesh.agent("pi", "spook", cwd="/d", visibility="ghost")
        gone = await mesh.agent("pi", "gone", cwd="/e")
        for call in (
            {"action": "create_room", "room": "review", "description": "code review"},
            {"action": "create_room", "room": "plots", "type": "secret"},
            {"action": "invite", "room": "plots", "agent": "bob"},
            {"action": "send", "target": "review", "content": "one"},
        ):
            assert not (await alice.call(call)).is_error
        await mesh.settle()
        assert not (await bob.call({"action": "join_room", "room": "review"})).is_error
        first = (await bob.call({"action": "send", "target": "review", "content": "two"})).data["message_id"]
        await mesh.settle()
        reply = {"action": "send", "target": "review", "content": "three", "replyTo": first}
        assert not (await alice.call(reply)).is_error
        await mesh.stop(gone)
        await mesh.settle()
        state = alice.store.state

        rows = agent_rows(state)
        assert [(r["name"], r["status"], r["rooms"]) for r in rows] == [
            ("alice", "active", ["plots", "review"]),
            ("bob", "active", ["review"]),
        ]
        assert rows[1]["tags"] == ["reviewer"]
        assert (rows[1]["harness"], rows[1]["cwd"], rows[1]["visibility"]) == ("codex", "/b", "visible")
        everyone = {r["name"]: (r["status"], r["visibility"], r["online"]) for r in agent_rows(state, everyone=True)}
        assert everyone == {
            "alice": ("active", "visible", True),
            "bob": ("active", "visible", True),
            "gone": ("offline", "visible", False),
            "shy": ("active", "hidden", True),
            "spook": ("active", "ghost", True),
        }

        rooms = {r["name"]: r for r in room_rows(state)}
        assert list(rooms) == ["plots", "review"]  # the owner of the mesh sees secret rooms too
        assert (rooms["plots"]["type"], rooms["plots"]["invited"]) == ("secret", [bob.id])
        assert rooms["review"]["members"] == sorted([alice.id, bob.id])
        assert (rooms["review"]["owner"], rooms["review"]["owner_name"]) == (alice.id, "alice")
        assert (rooms["review"]["description"], rooms["review"]["messages"]) == ("code review", 3)

        history = room_history(state, "review")
        assert history is not None
        assert room_history(state, "nope") is None
        shown = message_rows(state, history)
        assert [(m["content"], m["from_name"], m["reply_to"]) for m in shown] == [
            ("one", "alice", None),
            ("two", "bob", None),
            ("three", "alice", first),
        ]
        assert shown[1]["id"] == first
        assert shown[0]["time"] == dt.datetime.fromtimestamp(shown[0]["timestamp"] / 1000, dt.UTC).isoformat(
            timespec="milliseconds"
        )


async def test_since_and_limit() -> None:
    async with open_in_memory_mesh() as mesh:
        alice = await mesh.agent("test", "alice")
        await alice.call({"action": "create_room", "room": "r"})
        for text in ("a", "b", "c", "d"):
            await alice.call({"action": "send", "target": "r", "content": text})
        history = room_history(alice.store.state, "r")
        assert history is not None

        def contents(**narrow: object) -> str:
            return "".join(op.body.content for op in select_messages(history, **narrow))  # type: ignore[union-attr, arg-type]

        ids = [row["id"] for row in message_rows(alice.store.state, history)]
        assert contents() == "abcd"
        assert contents(limit=2) == "cd"
        assert contents(limit=0) == ""
        assert contents(since=ids[1]) == "cd"
        assert contents(since=ids[1], limit=1) == "d"
        assert contents(since=ids[-1]) == ""
        stamp = hlc_wall_ms(history[0].hlc)
        assert contents(since=str(stamp - 1)) == "abcd"
        when = dt.datetime.fromtimestamp((stamp - 1) / 1000, dt.UTC)
        assert contents(since=when.isoformat()) == "abcd"
        assert contents(since=when.replace(tzinfo=None).isoformat()) == "abcd"  # naive: UTC
        assert contents(since="2999-01-01T00:00:00Z") == ""
        with pytest.raises(SinceError, match="'soon' is neither a message id"):
            select_messages(history, since="soon")


async def test_the_person_sees_hidden_and_ghost_agents_marked() -> None:
    """The command line observes without being an agent: it shows every member and owner, marked."""
    async with open_in_memory_mesh() as mesh:
        spook = await mesh.agent("pi", "spook", visibility="ghost")
        shy = await mesh.agent("pi", "shy", visibility="hidden")
        alice = await mesh.agent("pi", "alice")
        assert not (await spook.call({"action": "create_room", "room": "den", "type": "secret"})).is_error
        for agent in (shy, alice):
            assert not (await spook.call({"action": "invite", "room": "den", "agent": agent.id})).is_error
            await mesh.settle()
            assert not (await agent.call({"action": "join_room", "room": "den"})).is_error
        await mesh.settle()
        [row] = room_rows(alice.store.state)
        assert row["owner_label"] == "spook [ghost]"
        assert row["owner_name"] == "spook"
        by_id = dict(zip(row["members"], row["member_labels"], strict=True))
        assert by_id == {spook.id: "spook [ghost]", shy.id: "shy [hidden]", alice.id: "alice"}
        labels = {r["name"]: marked(r["name"], r["visibility"]) for r in agent_rows(alice.store.state, everyone=True)}
        assert labels == {"alice": "alice", "shy": "shy [hidden]", "spook": "spook [ghost]"}
