"""Machines keep working while the hub or another machine is away, and nothing is lost or duplicated after."""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable
from typing import Any

import trio

from agent_comms.mesh.gateway import PRESENCE_REFRESH
from agent_comms.mesh.hub_client import PRESENCE_TTL

from .conftest import HubWorld, dm_contents, eventually, spawn_peer


async def test_a_dm_sent_while_the_recipients_machine_is_down_arrives_when_it_returns(world: HubWorld) -> None:
    a, b = world.machine("alpha"), world.machine("beta")
    async with b.agent("bob") as bob:
        async with a.agent("alice"):
            await eventually(lambda: bob.store.online("alice-id"))
        # alpha's whole mesh is gone (its only peer left)
        await eventually(lambda: not bob.store.online("alice-id"))
        result = bob.call({"action": "dm", "target": "alice", "content": "while you were away"})
        assert not result.is_error, result.text
        assert "offline" in result.text
        async with a.agent("alice") as alice:
            await eventually(lambda: dm_contents(alice.store, "alice-id") == ["while you were away"])
            await eventually(lambda: bob.store.online("alice-id"))
            # alpha lost everything when all its processes ended; the hub gave it back its own history too
            await eventually(lambda: alice.store.state.digest() == bob.store.state.digest())


async def test_killing_the_gateway_peer_loses_and_duplicates_nothing(world: HubWorld) -> None:
    a, b = world.machine("alpha"), world.machine("beta")
    first = await spawn_peer(a, "worker")  # started first: it takes the gateway lease
    try:
        async with b.agent("bob") as bob:
            await eventually(lambda: bob.store.online("worker"))
            lone_mark = a.home / "hub" / "lone-ack.json"
            await eventually(lone_mark.exists)  # the first peer, alone, acknowledged bob's operations
            async with a.agent("alice") as alice:
                assert alice.store.node.gateway is not None
                assert not alice.store.node.gateway.holds_lease
                # so each can address the other from the start (the records cross the hub independently)
                await eventually(lambda: bob.store.online("alice-id") and alice.store.online("bob-id"))
                # the first peer was alone and marked what it acknowledged; alice's peer now holds it all
                await eventually(lambda: not lone_mark.exists())
                sent = []
                for n in range(60):
                    if n == 20:
                        first.kill()  # SIGKILL: the lease is released by the kernel, alice's peer takes over
                    sender, target = (bob, "alice") if n % 2 else (alice, "bob")
                    result = sender.call({"action": "dm", "target": target, "content": f"dm {n}"})
                    assert not result.is_error, result.text
                    sent.append(f"dm {n}")
                    await trio.sleep(0.02)
                to_alice = [f"dm {n}" for n in range(60) if n % 2]
                to_bob = [f"dm {n}" for n in range(60) if not n % 2]
                try:
                    await eventually(
                        lambda: (
                            dm_contents(alice.store, "alice-id") == to_alice
                            and dm_contents(bob.store, "bob-id") == to_bob
                        ),
                        within=60,
                    )
                except trio.TooSlowError:
                    print("ALICE", dm_contents(alice.store, "alice-id"), dm_contents(bob.store, "alice-id"))
                    print("BOB", dm_contents(bob.store, "bob-id"), dm_contents(alice.store, "bob-id"))
                    print("GA", alice.store.node.gateway.status())
                    print("GB", bob.store.node.gateway.status())
                    raise
                assert alice.store.node.gateway.holds_lease
                await eventually(lambda: alice.store.state.digest() == bob.store.state.digest(), within=60)
    finally:
        first.kill()


async def test_all_processes_of_a_machine_killed_marks_its_agents_offline_elsewhere(world: HubWorld) -> None:
    a, b = world.machine("alpha"), world.machine("beta")
    peer = await spawn_peer(a, "worker")
    async with b.agent("bob") as bob:
        await eventually(lambda: bob.store.online("worker"))
        peer.kill()
        killed = time.monotonic()
        await eventually(lambda: not bob.store.online("worker"), within=60)
        took = time.monotonic() - killed
    # documented: within PRESENCE_TTL + PRESENCE_REFRESH seconds (a loaded machine gets a few more)
    assert took < PRESENCE_TTL + PRESENCE_REFRESH + 5, took


async def test_the_hub_stopped_restarted_and_wiped_all_machines_converge_again(world: HubWorld) -> None:
    a, b, c = world.machine("alpha"), world.machine("beta"), world.machine("gamma")
    async with a.agent("alice") as alice, b.agent("bob") as bob:
        assert not alice.call({"action": "create_room", "room": "den"}).is_error
        await eventually(lambda: bob.store.state.room_id("den") is not None)
        assert not bob.call({"action": "join_room", "room": "den"}).is_error
        await eventually(lambda: alice.store.state.digest() == bob.store.state.digest())
        gateway = alice.store.node.gateway
        assert gateway is not None
        # the hub restarted with its store: only what it did not acknowledge is published again
        await world.hub.stop()
        await eventually(lambda: not gateway.connected)
        assert not alice.call({"action": "send", "target": "den", "content": "hub restarting"}).is_error
        await world.hub.start()
        await eventually(lambda: alice.store.state.digest() == bob.store.state.digest(), within=60)
        assert gateway.connected
        stored = len(gateway._local_stored())
        assert 1 <= gateway.resent < stored, (gateway.resent, stored)
        await world.hub.stop()
        # both machines keep working locally while the hub is away
        assert not alice.call({"action": "send", "target": "den", "content": "hub away (alice)"}).is_error
        assert not bob.call({"action": "send", "target": "den", "content": "hub away (bob)"}).is_error
        world.hub.wipe()
        held = len(gateway._local_stored())
        await world.hub.start()
        await eventually(lambda: alice.store.state.digest() == bob.store.state.digest(), within=60)
        assert gateway.resent >= held  # a new stream: everything of alpha's again
        # and a machine joining later gets everything from the refilled hub
        async with c.agent("carol") as carol:
            await eventually(lambda: carol.store.state.digest() == alice.store.state.digest(), within=60)


async def _acknowledged_by(world: HubWorld, machine: str) -> int:
    """The stream sequence up to which ``machine``'s durable consumer has acknowledged everything (as the admin)."""
    from agent_comms.mesh.hub_client import aio, connect
    from agent_comms.mesh.hub_config import CONSUMER_PREFIX, STREAM, HubFiles

    files = HubFiles(world.hub.home)
    settings = files.settings()
    nc = await connect(settings["url"], settings["admin_seed"], files.cert_path.read_text(), name="admin")
    try:
        info = await aio(nc.jetstream().consumer_info, STREAM, f"{CONSUMER_PREFIX}{machine}")
        return int(info.ack_floor.stream_seq or 0)
    finally:
        await aio(nc.close)


async def test_a_lone_gateway_killed_right_after_acknowledging_loses_nothing(world: HubWorld) -> None:
    """The gateway of alpha is alone (no other local peer holds what it applies) and acknowledges bob's DMs to the
    hub, then is SIGKILLed. The next gateway of alpha already holds some of beta's operations (as a peer does that
    synced part of the dead one's state before it died: here given to it directly, since which part a sync carries
    before a kill cannot be chosen from outside): it must not resume after the dead one's acknowledgements, which
    only the dead one's memory held."""
    import json

    from agent_comms.mesh.gateway import Gateway
    from agent_comms.mesh.node import open_node
    from agent_comms.mesh.registry import PeerRegistry
    from agent_comms.protocol.ops import AgentUpsert
    from agent_comms.protocol.peer import PeerConfig
    from agent_comms.store import MeshStore

    from .conftest import free_port

    a, b = world.machine("alpha"), world.machine("beta")
    first = await spawn_peer(a, "worker")  # alpha's gateway, with no other peer in its mesh
    try:
        async with b.agent("bob") as bob:
            await eventually(lambda: bob.store.online("worker"))
            # the next gateway: a peer of alpha's home that is not linked to the first (another coordinator port)
            port = free_port()
            async with open_node(
                a.key, port=port, registry=PeerRegistry(a.home), config=PeerConfig(coordinator_port=port)
            ) as later:
                await later.wait_synced()
                bob_upsert = [
                    op for op in bob.store.state.stored_ops() if isinstance(op.body, AgentUpsert)
                ]  # beta's: the later peer now holds some of the other machines' operations
                later.relay(bob_upsert)
                sent = [f"to the lone gateway {n}" for n in range(5)]
                for content in sent:
                    assert not bob.call({"action": "dm", "target": "worker", "content": content}).is_error
                gateway_b = bob.store.node.gateway
                assert gateway_b is not None
                await eventually(lambda: not gateway_b.queue and gateway_b.published > 0)
                published_up_to = gateway_b._hub_seq
                with trio.fail_after(60):  # the first gateway applied and acknowledged them all
                    while await _acknowledged_by(world, "alpha") < published_up_to:  # noqa: ASYNC110 - on the hub
                        await trio.sleep(0.1)
                marker = json.loads((a.home / "hub" / "lone-ack.json").read_text())
                assert marker["peer"] == first.peer_id
                first.kill()
                store = MeshStore(later)
                await eventually(lambda: isinstance(later.gateway, Gateway) and later.gateway.holds_lease, within=60)
                await eventually(lambda: dm_contents(store, "worker") == sent, within=60)
    finally:
        first.kill()


async def _admin_js_call(world: HubWorld, call: Callable[[Any], Awaitable[Any]]) -> Any:
    """``call(js)`` with the JetStream context of the hub's admin (a trio function using :func:`aio`)."""
    from agent_comms.mesh.hub_client import aio, connect
    from agent_comms.mesh.hub_config import HubFiles

    files = HubFiles(world.hub.home)
    settings = files.settings()
    nc = await connect(settings["url"], settings["admin_seed"], files.cert_path.read_text(), name="admin")
    try:
        return await call(nc.jetstream())
    finally:
        await aio(nc.close)


async def test_acknowledged_operations_the_hub_lost_are_published_again_on_reconnect(world: HubWorld) -> None:
    """JetStream acknowledges before its disk has the message, so a crash of the hub's host can lose acknowledged
    messages of a machine and keep the stream (its creation time). The loss is made here with the JetStream API
    (the last messages of alpha are deleted, the stream kept), then beta publishes, so the stream's last sequence
    grows past everything alpha saw acknowledged. After alpha's gateway reconnects, the lost operations are on
    the hub again: a machine joining later gets all of alpha's state."""
    from agent_comms.mesh.hub_client import aio
    from agent_comms.mesh.hub_config import OPS_SUBJECT_ROOT, STREAM

    a, b, c = world.machine("alpha"), world.machine("beta"), world.machine("gamma")
    async with a.agent("alice") as alice, b.agent("bob") as bob:
        assert not alice.call({"action": "create_room", "room": "den"}).is_error
        sent = [f"kept only by alpha {n}" for n in range(3)]
        for content in sent:
            assert not alice.call({"action": "send", "target": "den", "content": content}).is_error
        gateway = alice.store.node.gateway
        assert gateway is not None
        await eventually(lambda: alice.store.state.digest() == bob.store.state.digest(), within=60)
        await eventually(lambda: not gateway.queue)
        published, acknowledged = gateway.published, gateway._hub_seq

        async def lose_alphas_last(js: Any) -> list[int]:
            lost = []
            for _ in sent:
                last = await aio(js.get_last_msg, STREAM, f"{OPS_SUBJECT_ROOT}.alpha.>")
                await aio(js.delete_msg, STREAM, last.seq)
                lost.append(int(last.seq))
            return lost

        lost = await _admin_js_call(world, lose_alphas_last)
        assert max(lost) == acknowledged  # the loss includes the last operation alpha saw acknowledged
        assert not bob.call({"action": "create_room", "room": "elsewhere"}).is_error
        for n in range(len(sent) + 2):
            assert not bob.call({"action": "send", "target": "elsewhere", "content": f"beta {n}"}).is_error
        gateway_b = bob.store.node.gateway
        assert gateway_b is not None
        await eventually(lambda: not gateway_b.queue and gateway_b._hub_seq > acknowledged)
        assert gateway.published == published  # alpha published nothing after the loss: it cannot know of it

        await world.hub.stop()  # the same store: the same stream, its creation time kept
        await eventually(lambda: not gateway.connected)
        await world.hub.start()
        await eventually(lambda: gateway.connected and not gateway.queue, within=60)
        assert gateway.resent == len(gateway._local_stored())  # everything of alpha's again
        async with c.agent("carol") as carol:
            await eventually(lambda: carol.store.state.digest() == alice.store.state.digest(), within=60)
