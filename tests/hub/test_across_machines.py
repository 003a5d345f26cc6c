"""Two and three simulated machines (own home, own port, own mesh key) form one mesh through a real hub."""

from __future__ import annotations

import json

import trio

from agent_comms.mesh.hub_client import aio, connect
from agent_comms.mesh.hub_config import OPS_SUBJECT_ROOT, STREAM, HubFiles
from agent_comms.protocol.ops import op_id
from agent_comms.store import MeshStore
from agent_comms.tool import CommsTool

from .conftest import HubWorld, acli, eventually


def listed(tool: CommsTool) -> list[str]:
    result = tool.call({"action": "list_agents"})
    assert not result.is_error, result.text
    agents: list[str] = result.data["agents"]
    return agents


def history(tool: CommsTool, room: str) -> list[str]:
    store: MeshStore = tool.store
    room_id, _ = store.room(room, viewer=tool.agent_id)
    return [op.body.content for op in store.history(room_id)]  # type: ignore[union-attr]


async def test_an_agent_of_one_machine_is_listed_on_another_but_hidden_and_ghost_ones_are_not(
    world: HubWorld,
) -> None:
    a, b = world.machine("alpha"), world.machine("beta")
    async with (
        a.agent("alice") as alice,
        a.agent("shy", visibility="hidden"),
        a.agent("spook", visibility="ghost"),
        b.agent("bob") as bob,
    ):
        await eventually(lambda: "alice-id" in listed(bob) and "bob-id" in listed(alice))
        assert set(listed(bob)) == {"alice-id", "bob-id"}
        # the hidden and ghost agents reached beta, and are treated there as at home
        assert bob.store.online("shy-id")
        assert bob.store.online("spook-id")
        # agents of another machine are marked with it: in the tool, in `agents` and in `mesh --json`
        assert "alice@alpha (alice-id)" in bob.call({"action": "list_agents"}).text
        assert "bob (bob-id)" in bob.call({"action": "list_agents"}).text
        rows = json.loads(await acli(b.env, "agents", "--json"))
        assert {row["id"]: row["machine"] for row in rows} == {"alice-id": "alpha", "bob-id": None}
        assert "alice@alpha" in await acli(b.env, "agents")
        # the machines seen come from the gateway's presence checks (every second), which may not have seen alpha's
        # key yet when its agent is already listed
        with trio.fail_after(30):
            mesh = json.loads(await acli(b.env, "mesh", "--json"))
            while {"name": "alpha", "present": True} not in mesh["machines"]:
                await trio.sleep(0.2)
                mesh = json.loads(await acli(b.env, "mesh", "--json"))
        assert mesh["gateway"]["machine"] == "beta"
        assert mesh["gateway"]["connected"]


async def test_a_room_of_one_machine_carries_messages_both_ways_exactly_once_with_receipts(world: HubWorld) -> None:
    a, b = world.machine("alpha"), world.machine("beta")
    async with a.agent("alice") as alice, b.agent("bob") as bob:
        assert not alice.call({"action": "create_room", "room": "den"}).is_error
        await eventually(lambda: bob.store.state.room_id("den") is not None)
        assert not bob.call({"action": "join_room", "room": "den"}).is_error
        await eventually(lambda: "bob-id" in alice.store.room("den", viewer="alice-id")[1].members)
        sent = []
        for n in range(20):  # a conversation: each answers what it has seen, so the order is causal
            sender, other = (alice, bob) if n % 2 == 0 else (bob, alice)
            result = sender.call({"action": "send", "target": "den", "content": f"m{n}"})
            assert not result.is_error, result.text
            sent.append(result.data["message_id"])
            await eventually(lambda: len(history(other, "den")) == len(sent))  # noqa: B023 - awaited at once
        expected = [f"m{n}" for n in range(20)]
        assert history(alice, "den") == expected
        assert history(bob, "den") == expected
        # both read the room: every message gets an honest "read" receipt from the other side, across the hub
        alice.call({"action": "read_room", "room": "den"})
        bob.call({"action": "read_room", "room": "den"})

        def read_by_other(message_id: str) -> bool:
            author = alice if message_id in sent[0::2] else bob
            other = bob if author is alice else alice
            return author.store.state.receipt_status(message_id, other.agent_id) == "read"

        await eventually(lambda: all(read_by_other(m) for m in sent))
        for tool in (alice, bob):
            assert [op_id(op) for op in tool.store.history(tool.store.room("den", viewer=tool.agent_id)[0])] == sent
        assert alice.store.state.digest() == bob.store.state.digest()


async def test_a_late_machine_gets_exactly_the_newest_history_of_a_room(world: HubWorld) -> None:
    a, c = world.machine("alpha"), world.machine("gamma")
    a.history_limit = c.history_limit = 15
    async with a.agent("alice") as alice:
        assert not alice.call({"action": "create_room", "room": "den"}).is_error
        for n in range(40):
            assert not alice.call({"action": "send", "target": "den", "content": f"m{n}"}).is_error
        expected = [f"m{n}" for n in range(25, 40)]
        assert history(alice, "den") == expected
        gateway = alice.store.node.gateway
        await eventually(lambda: gateway.connected and not gateway.queue)
        async with c.agent("carol") as carol:
            await eventually(lambda: carol.store.state.room_id("den") is not None)
            assert not carol.call({"action": "join_room", "room": "den"}).is_error
            await eventually(lambda: history(carol, "den") == expected)
            await eventually(lambda: carol.store.state.digest() == alice.store.state.digest())


async def test_a_private_room_refuses_an_agent_of_another_machine_until_invited(world: HubWorld) -> None:
    a, b = world.machine("alpha"), world.machine("beta")
    async with a.agent("alice") as alice, b.agent("bob") as bob:
        assert not alice.call({"action": "create_room", "room": "vault", "type": "private"}).is_error
        assert not alice.call({"action": "send", "target": "vault", "content": "secret plans"}).is_error
        await eventually(lambda: bob.store.state.room_id("vault") is not None)
        refused = bob.call({"action": "join_room", "room": "vault"})
        assert refused.is_error
        assert refused.data["code"] == "NOT_INVITED", refused.text
        assert bob.call({"action": "read_room", "room": "vault"}).is_error
        await eventually(lambda: alice.store.online("bob-id"))
        assert not alice.call({"action": "invite", "room": "vault", "agent": "bob"}).is_error
        await eventually(lambda: not bob.call({"action": "join_room", "room": "vault"}).is_error)
        await eventually(lambda: "alice-id" in bob.store.room("vault", viewer="bob-id")[1].members)
        await eventually(lambda: "bob-id" in alice.store.room("vault", viewer="alice-id")[1].members)
        assert history(bob, "vault") == ["secret plans"]


async def _hub_subjects(world: HubWorld, subjects: str) -> dict[str, int]:
    """Messages the hub's stream holds per subject matching ``subjects`` (asked as the hub's admin)."""
    files = HubFiles(world.hub.home)
    settings = files.settings()
    nc = await connect(settings["url"], settings["admin_seed"], files.cert_path.read_text(), name="admin")
    try:
        info = await aio(nc.jetstream().stream_info, STREAM, subjects)
        return dict(info.state.subjects or {})
    finally:
        await aio(nc.close)


async def test_read_markers_replace_each_other_in_the_hub_and_reach_a_late_machine(world: HubWorld) -> None:
    """Alice reads bob's DMs one by one across the hub: each read sends a newer cumulative marker, which replaces
    the older one in the hub's stream too (one message per marker subject), and a machine that comes later learns
    from the hub that every one of them was read."""
    a, b, c = world.machine("alpha"), world.machine("beta"), world.machine("gamma")
    async with a.agent("alice") as alice, b.agent("bob") as bob:
        await eventually(lambda: "alice-id" in listed(bob) and "bob-id" in listed(alice))
        sent: list[str] = []
        for n in range(4):
            result = bob.call({"action": "dm", "target": "alice-id", "content": f"m{n}"})
            assert not result.is_error, result.text
            sent.append(result.data["message_id"])
            await eventually(lambda: any(e.message_id == sent[-1] for e in alice.store.pending("alice-id")))
            alice.store.mark_read("alice-id", alice.store.take("alice-id"))
            await eventually(lambda: bob.store.state.receipt_status(sent[-1], "alice-id") == "read")
        gateway = alice.store.node.gateway
        assert gateway is not None
        await eventually(lambda: gateway.connected and not gateway.queue)
        marks = await _hub_subjects(world, f"{OPS_SUBJECT_ROOT}.alpha.mark.>")
        assert marks, "alice's markers reached the hub"
        assert set(marks.values()) == {1}, marks  # each subject holds its newest marker only
        async with c.agent("carol") as carol:
            await eventually(lambda: all(carol.store.state.receipt_status(m, "alice-id") == "read" for m in sent))
