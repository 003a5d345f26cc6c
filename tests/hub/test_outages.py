"""Machines keep working while the hub or another machine is away, and nothing is lost or duplicated after."""

from __future__ import annotations

import time

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
            async with a.agent("alice") as alice:
                assert alice.store.node.gateway is not None
                assert not alice.store.node.gateway.holds_lease
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
        await world.hub.stop()
        # both machines keep working locally while the hub is away
        assert not alice.call({"action": "send", "target": "den", "content": "hub away (alice)"}).is_error
        assert not bob.call({"action": "send", "target": "den", "content": "hub away (bob)"}).is_error
        world.hub.wipe()
        await world.hub.start()
        await eventually(lambda: alice.store.state.digest() == bob.store.state.digest(), within=60)
        # and a machine joining later gets everything from the refilled hub
        async with c.agent("carol") as carol:
            await eventually(lambda: carol.store.state.digest() == alice.store.state.digest(), within=60)
