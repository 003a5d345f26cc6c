"""Cross-machine chaos: two machines exchange DMs while their gateway peers are SIGKILLed and replaced and the hub
is stopped and started again; afterwards every DM is there exactly once, in order, and the replicas are equal.

``AGENT_COMMS_HUB_CHAOS_SECONDS`` sets the length of the chaos (default 8 s in the ``tests`` session;
``nox -s hub_chaos`` runs 60 s). ``AGENT_COMMS_HUB_CHAOS_SEED`` fixes the random choices.
"""

from __future__ import annotations

import os
import random

import trio

from .conftest import HubWorld, PeerProcess, dm_contents, eventually, spawn_peer


async def test_cross_machine_chaos_loses_and_duplicates_nothing(world: HubWorld) -> None:
    duration = float(os.environ.get("AGENT_COMMS_HUB_CHAOS_SECONDS", "8"))
    seed = int(os.environ.get("AGENT_COMMS_HUB_CHAOS_SEED", str(random.randrange(1 << 30))))
    rng = random.Random(seed)
    print(f"hub chaos: {duration} s, seed {seed}")
    a, b = world.machine("alpha"), world.machine("beta")
    # a peer process on each machine first, so the gateway lease is held by a process the chaos can kill
    peers: dict[str, list[PeerProcess]] = {"alpha": [await spawn_peer(a, "a-worker")], "beta": [await spawn_peer(b)]}
    events: list[str] = []
    try:
        async with a.agent("alice") as alice, b.agent("bob") as bob:
            await eventually(lambda: alice.store.online("bob-id") and bob.store.online("alice-id"), within=60)
            to_alice: list[str] = []
            to_bob: list[str] = []

            async def traffic() -> None:
                n = 0
                while True:
                    n += 1
                    if rng.random() < 0.5:
                        result = alice.call({"action": "dm", "target": "bob", "content": f"a{n}"})
                        to_bob.append(f"a{n}")
                    else:
                        result = bob.call({"action": "dm", "target": "alice", "content": f"b{n}"})
                        to_alice.append(f"b{n}")
                    assert not result.is_error, result.text
                    await trio.sleep(0.03)

            async def chaos() -> None:
                while True:
                    await trio.sleep(rng.uniform(0.5, 1.5))
                    roll = rng.random()
                    machine = rng.choice([a, b])
                    if roll < 0.6:  # kill the oldest peer process of a machine (the gateway, if it holds the lease)
                        if peers[machine.name]:
                            peers[machine.name].pop(0).kill()
                            events.append(f"kill a peer of {machine.name}")
                        peers[machine.name].append(await spawn_peer(machine))
                    elif roll < 0.8 and world.hub.process is not None:
                        await world.hub.stop()
                        events.append("hub stopped")
                        await trio.sleep(rng.uniform(0.2, 1.0))
                        await world.hub.start()
                        events.append("hub started")
                    else:
                        peers[machine.name].append(await spawn_peer(machine))
                        events.append(f"new peer on {machine.name}")

            with trio.move_on_after(duration):
                async with trio.open_nursery() as nursery:
                    nursery.start_soon(traffic)
                    nursery.start_soon(chaos)
            if world.hub.process is None:
                await world.hub.start()
            print(f"hub chaos: {len(to_alice) + len(to_bob)} DMs, events: {events}")

            def settled() -> bool:
                # The conversation keeps its newest ``history_limit`` DMs (a long run sends more): each direction
                # holds the newest of what was sent that way, exactly once and in order, and nothing newer is
                # missing (a lost DM would leave an older one held in its place).
                to_a, to_b = dm_contents(alice.store, "alice-id"), dm_contents(bob.store, "bob-id")
                return (
                    len(to_a) + len(to_b) == min(a.history_limit, len(to_alice) + len(to_bob))
                    and to_a == to_alice[len(to_alice) - len(to_a) :]
                    and to_b == to_bob[len(to_bob) - len(to_b) :]
                    and alice.store.state.digest() == bob.store.state.digest()
                )

            await eventually(settled, within=120)
    finally:
        for processes in peers.values():
            for process in processes:
                process.kill()
