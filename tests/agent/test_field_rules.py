"""Nothing a local agent submits is refused by peers: the store and the tool refuse it first, naming the field.

Every operation the store makes goes through :func:`agent_comms.protocol.fields.check_body`, the check peers'
decoding amounts to plus the text rules the tool's parameters follow; a refused operation is never made, so the
links stay up and the mesh converges.
"""

from __future__ import annotations

from collections.abc import Callable

import pytest

from agent_comms.agent import Agent
from agent_comms.errors import CommsError
from agent_comms.protocol.ops import AgentUpsert
from agent_comms.testing import InMemoryMesh

pytest_plugins = ["agent_comms.testing.fixtures"]


def _refused(field: str, act: Callable[[], object]) -> None:
    with pytest.raises(CommsError) as caught:
        act()
    assert str(caught.value.code) == "INVALID_PARAMS"
    assert f"invalid '{field}'" in caught.value.text


async def _still_linked(mesh: InMemoryMesh, alice: Agent, bob: Agent) -> None:
    """Nothing was made: the peers stay linked, agree, and alice is as she was."""
    await mesh.settle()
    record = bob.store.record(alice.id)
    assert record is not None
    assert (record.name, record.status, record.tags) == ("alice", "active", ("ok",))
    result = await alice.call({"action": "dm", "target": "bob", "content": "still here"})
    assert not result.is_error, result.text
    await mesh.settle()
    assert [e.content for e in bob.drain() if e.type == "dm"] == ["still here"]


async def test_the_store_refuses_agent_records_peers_would_refuse(comms_mesh: InMemoryMesh) -> None:
    alice = await comms_mesh.agent("h1", name="alice", tags=("ok",))
    bob = await comms_mesh.agent("h2", name="bob")
    store = alice.store
    _refused("status", lambda: store.update(alice.id, status="busy\x1b[31m"))
    _refused("visibility", lambda: store.update(alice.id, visibility="invisible"))
    _refused("tags", lambda: store.update(alice.id, tags=("ok", 5)))
    _refused("tags", lambda: store.update(alice.id, tags=("ok", "red\x1b[31m")))
    _refused("name", lambda: store.update(alice.id, name="alice\nbob"))
    fresh = AgentUpsert("other", "", 0, 0, "carol", "test", "/work", 0, 0.0, status="away")  # type: ignore[arg-type]
    _refused("status", lambda: store.host(fresh))
    assert not store.is_hosted("other")
    await _still_linked(comms_mesh, alice, bob)


async def test_the_store_refuses_room_and_message_fields_peers_would_refuse(comms_mesh: InMemoryMesh) -> None:
    alice = await comms_mesh.agent("h1", name="alice", tags=("ok",))
    bob = await comms_mesh.agent("h2", name="bob")
    store = alice.store
    _refused("type", lambda: store.create_room(alice.id, "lobby", "open", ""))  # type: ignore[arg-type]
    _refused("room", lambda: store.create_room(alice.id, "lob\x1bby", "public", ""))
    _refused("description", lambda: store.create_room(alice.id, "lobby", "public", "bell\x07"))
    assert store.state.room("lobby") is None
    room_id = store.create_room(alice.id, "lobby", "public", "")
    _refused("action", lambda: store.change_membership(alice.id, room_id, "promote"))  # type: ignore[arg-type]
    _refused("reason", lambda: store.change_membership(alice.id, room_id, "leave", reason="\x1b]0;x\x07"))
    _refused("streamingBehavior", lambda: store.send(alice.id, room_id, "hi", streaming="now"))  # type: ignore[arg-type]
    _refused("replyTo", lambda: store.dm(alice.id, bob.id, "hi", reply_to="x" * 100_000))
    _refused("content", lambda: store.dm(alice.id, bob.id, "nul\x00"))
    await _still_linked(comms_mesh, alice, bob)


async def test_the_tool_refuses_tags_with_control_characters(comms_mesh: InMemoryMesh) -> None:
    alice = await comms_mesh.agent("h1", name="alice", tags=("ok",))
    bob = await comms_mesh.agent("h2", name="bob")
    for params in (
        {"action": "update", "tags": ["ok", "red\x1b[31m"]},
        {"action": "update", "tags": ["two\nlines"]},
        {"action": "register", "name": "alice", "tags": ["\x07"]},
    ):
        result = await alice.call(params)
        assert result.is_error, params
        assert "invalid 'tags'" in result.text
        assert result.text.endswith("(INVALID_PARAMS)")
    await _still_linked(comms_mesh, alice, bob)
