"""The short soak: steady traffic with churn on an in-memory mesh; every bounded structure stays within its limit.

Agents post to a room and DM each other as fast as the peers take it, while bridges crash and come back (new
claims, offline verdicts, redelivery) and rooms are created and destroyed. With a small history limit the
histories fill within the first second, so from then on the number of operations each peer stores must stay flat;
every few hundred messages the test samples every peer and checks each structure against its limit. The long
version with real processes and resident memory is ``nox -s soak`` (``soak.py`` beside this file).
"""

from __future__ import annotations

import random

import trio

from agent_comms.agent import Agent
from agent_comms.mesh.node import LINK_QUEUE_BYTES, MeshNode
from agent_comms.protocol.state import MAX_CLAIMS
from agent_comms.store import _SEEN_LIMIT, INBOX_LIMIT
from agent_comms.testing import InMemoryMesh, open_in_memory_mesh

HISTORY = 40
AGENTS = 4
ROUNDS = 30
MESSAGES_PER_ROUND = 60


def sizes(node: MeshNode) -> dict[str, int]:
    """What one peer holds, structure by structure."""
    state = node.peer.replica.state
    return {
        "stored_ops": len({(op.origin, op.seq) for op in state.stored_ops()}),
        "messages": len(state.messages),
        "largest_history": max((len(h) for h in state.histories.values()), default=0),
        "receipts": sum(len(slot) for slot in state.receipts.values()),
        "orphan_receipts": sum(len(heap) for heap in state.orphan_receipts.values()),
        "agents": len(state.agents),
        "most_claims": max((len(e.claims) for e in state.agents.values()), default=0),
        "seen_extra": sum(len(s.extra) for s in node.peer.replica.seen.values()),
        "seen_origins": len(node.peer.replica.seen),
        "queued_link_bytes": max((node.queued_bytes(link) for link in node.peer.links), default=0),
    }


async def test_bounded_structures_stay_within_limits_under_steady_traffic_and_churn() -> None:
    rng = random.Random(11)
    async with open_in_memory_mesh(seed=3, history_limit=HISTORY) as mesh:
        agents = [await mesh.agent("soak", name=f"s{i}", cwd=f"/w/{i}") for i in range(AGENTS)]
        await agents[0].call({"action": "create_room", "room": "main"})
        await mesh.settle()
        for agent in agents[1:]:
            await agent.call({"action": "join_room", "room": "main"})
        await mesh.settle()
        samples: list[dict[str, int]] = []
        sent = 0
        for round_number in range(ROUNDS):
            for _ in range(MESSAGES_PER_ROUND):
                sender = rng.choice(agents)
                if rng.random() < 0.5:
                    await sender.call({"action": "send", "target": "main", "content": f"m{sent}"})
                else:
                    target = rng.choice([a for a in agents if a is not sender])
                    await sender.call({"action": "dm", "target": target.id, "content": f"m{sent}"})
                sent += 1
            if round_number % 5 == 4:  # churn: a bridge crashes and comes back; a room lives and dies
                agents = await restart_one(mesh, agents, rng)
                room = f"tmp{round_number}"
                await agents[0].call({"action": "create_room", "room": room})
                await mesh.settle()
                await agents[0].call({"action": "destroy_room", "room": room})
            await mesh.settle()
            for agent in agents:
                agent.drain()  # the bridges show what arrived (read receipts)
            await mesh.settle()
            for node in mesh.nodes:
                size = sizes(node)
                samples.append(size)
                assert size["largest_history"] <= HISTORY
                assert size["most_claims"] <= MAX_CLAIMS
                assert size["queued_link_bytes"] <= LINK_QUEUE_BYTES
            for agent in agents:
                assert agent.pending_count() <= INBOX_LIMIT
                assert len(agent.store._seen.get(agent.id, ())) <= _SEEN_LIMIT
        assert sent == ROUNDS * MESSAGES_PER_ROUND
        # Flat: the stored operations of the last third are no more than those of the middle third allow for.
        third = len(samples) // 3
        middle = max(s["stored_ops"] for s in samples[third : 2 * third])
        last = max(s["stored_ops"] for s in samples[2 * third :])
        assert last <= middle * 1.25, (middle, last)
        conversations = 1 + AGENTS * (AGENTS - 1) // 2 + ROUNDS // 5
        assert max(s["messages"] for s in samples) <= conversations * HISTORY
        # Sequence numbers seen out of order wait for the gap before them to close; a gap left by an operation
        # that was superseded before it reached this peer closes at its next anti-entropy round (the answer's
        # floors), so after two rounds nothing is left however long the traffic ran.
        await trio.sleep(2 * mesh.nodes[0].peer.config.anti_entropy_interval + 0.5)
        for node in mesh.nodes:
            assert sizes(node)["seen_extra"] == 0, [
                (o, s.floor, len(s.extra)) for o, s in node.peer.replica.seen.items()
            ]


async def restart_one(mesh: InMemoryMesh, agents: list[Agent], rng: random.Random) -> list[Agent]:
    """Crash one bridge (not the room's owner) and bring its agent back on a new peer."""
    victim = rng.choice(agents[1:])
    index = agents.index(victim)
    agent_id, name = victim.id, victim.name
    mesh.crash(victim)
    await trio.sleep(0.05)
    back = await mesh.agent("soak", name=name, cwd=f"/w/{index}", agent_id=agent_id)
    return [*agents[:index], back, *agents[index + 1 :]]
