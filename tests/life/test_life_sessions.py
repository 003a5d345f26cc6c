"""The day begins: sessions start and end in their directories.

Two sessions in one directory are two agents; each acts the moment its bridge says ``ready`` (the mesh's state has
arrived by then); a session that ends and starts again in its directory is the same agent, and gets what was sent
to it while it was down.
"""

from __future__ import annotations

from functools import partial
from pathlib import Path

from life_helpers import Agent, open_day, scale, until


async def test_sessions_start_and_end_in_their_directories(tmp_path: Path) -> None:
    rounds = scale(1, 5)
    async with open_day(tmp_path, seconds=scale(120, 600)) as day:
        async with day.step("alice starts in work/api"):
            alice = await day.agent("alice", "api")
        async with day.step("bob starts in work/web and, at once, finds alice and DMs her"):
            bob = await day.agent("bob", "web")
            assert alice.agent_id in await bob.online(), "bob's first list_agents does not show alice"
            await bob.ok(action="dm", target="alice", content="morning, alice")
            await alice.dm_from(bob, "morning, alice")
        async with day.step("a second session in work/web gets an id of its own and, at once, DMs bob"):
            rev = await day.agent("reviewer", "web")
            assert rev.agent_id not in (bob.agent_id, alice.agent_id), f"{rev.agent_id} is taken"
            await rev.ok(action="dm", target=bob.agent_id, content="I review your branch")
            await bob.dm_from(rev, "I review your branch")
        for n in range(rounds):
            note = f"are you back? ({n})"
            async with day.step(f"bob ends his session (round {n})"):
                await day.leave(bob)
                await until(partial(_gone, alice, bob.agent_id))
            async with day.step(f"alice DMs bob while he is away (round {n})"):
                await alice.ok(action="dm", target=bob.agent_id, content=note)
            async with day.step(f"bob starts again in work/web: his identity back, the reviewer keeps hers ({n})"):
                old = bob
                bob = await day.agent("bob", "web")
                assert bob.agent_id == old.agent_id, f"bob came back as {bob.agent_id}, not {old.agent_id}"
                assert rev.agent_id in await bob.online(), "bob's first list_agents does not show the reviewer"
            async with day.step(f"bob gets the DM kept while he was down ({n})"):
                await bob.dm_from(alice, note)
        async with day.step("the sessions end, each with status 0"):
            for agent in (rev, bob, alice):
                await day.leave(agent)
        async with day.step("nobody was shown an event twice"):
            for agent in (alice, bob, rev):
                ids = [event["id"] for event in agent.events()]
                assert len(ids) == len(set(ids)), f"{agent.name} was shown an event twice"


async def _gone(observer: Agent, agent_id: str) -> bool:
    return agent_id not in await observer.online()
