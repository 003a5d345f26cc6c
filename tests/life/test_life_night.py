"""The night: an agent goes home, the clocks run past the offline retention, and it comes back in the morning.

While it is away the others' wall clocks jump further than ``offline_retention`` (an hour; no setting shortens it),
so they forget its record. It returns with the same identity (the same harness in the same directory): its rooms,
its ownership and its messages are all still there, for everyone, and it talks with the others again.

Two nights: the machine *paused* (a virtual machine, say: the monotonic clock jumps with the wall clock, so
forgetting runs at once) in every run, and the laptop *asleep* (a suspend: only the wall clock jumps, and
forgetting waits for its next round, up to half a minute) in the long day.
"""

from __future__ import annotations

from functools import partial
from pathlib import Path

import pytest
from life_helpers import Agent, Day, long_day, open_day, scale, settle_in, talk, until

#: Further than the default ``offline_retention`` (3600 s).
NIGHT = 10 * 3600.0


ASLEEP = pytest.param(
    "asleep",
    marks=pytest.mark.skipif(not long_day(), reason="the long day only (AGENT_COMMS_LIFE=long): up to 30 s more"),
)


@pytest.mark.parametrize("night", ["paused", ASLEEP])
async def test_a_night_away_and_a_return(tmp_path: Path, night: str) -> None:
    async with open_day(tmp_path, seconds=scale(120, 600)) as day:
        day.clock("night", paused=night == "paused")
        async with day.step("alice, bob and owl meet; owl opens #nightshift and the private #den"):
            alice = await day.agent("alice", "api", clock="night")
            bob = await day.agent("bob", "web", clock="night")
            owl = await day.agent("owl", "owl", clock="night")
            await until(lambda: _knows(owl, alice, bob))
            await owl.ok(action="create_room", room="nightshift", description="while the others sleep")
            await owl.ok(action="create_room", room="den", type="private")
            await owl.ok(action="invite", room="den", agent=bob.agent_id)
            await settle_in(alice, "nightshift", owl)
            await settle_in(bob, "nightshift", owl)
            await settle_in(bob, "den", owl)
            await talk([alice, bob, owl], "in the evening", "nightshift")
            await talk([bob, owl], "in the den", "den")
            before = {room: await owl.history(room) for room in ("nightshift", "den")}
        owl_id = owl.agent_id
        den = {bob.agent_id, owl_id}
        for n in range(scale(1, 3)):
            async with day.step(f"owl goes home ({n})"):
                await day.leave(owl)
                await until(lambda: _offline(alice, owl_id))
            async with day.step(f"the night: the clocks jump {NIGHT:g} s, past the offline retention ({n})"):
                day.clock("night").move(NIGHT)
            async with day.step(f"the others forget owl ({n})", seconds=scale(30, 60)):
                await until(lambda: _forgotten(day, owl_id), interval=0.25)
            async with day.step(f"owl comes back in work/owl with its identity ({n})"):
                owl = await day.agent("owl", "owl", clock="night")
                assert owl.agent_id == owl_id, f"owl came back as {owl.agent_id}, not {owl_id}"
            async with day.step(f"owl's rooms, ownership and messages are all still there, for owl ({n})"):
                rooms = (await owl.ok(action="whoami"))["data"]["rooms"]
                assert sorted(rooms) == ["den", "nightshift"], f"owl is in {rooms}"
                listed = (await owl.ok(action="list_rooms"))["text"]
                for room in ("nightshift", "den"):
                    [line] = [line for line in listed.splitlines() if line.startswith(f"- #{room} (")] or [listed]
                    assert f"owner owl ({owl_id})) [joined]" in line, listed
                    history = await owl.history(room)
                    assert set(before[room]) <= set(history), f"#{room} lost {set(before[room]) - set(history)}"
            async with day.step(f"... and for everyone ({n})"):
                for agent in (alice, bob):
                    history = await agent.history("nightshift")
                    assert set(before["nightshift"]) <= set(history), f"{agent.name} lost messages of #nightshift"
                assert set(before["den"]) <= set(await bob.history("den")), "bob lost messages of #den"
                rows = {row["name"]: row for row in await day.rooms_listed(clock="night")}
                for room, members in (("nightshift", {alice.agent_id, bob.agent_id, owl_id}), ("den", den)):
                    assert room in rows, f"agent-comms rooms does not list #{room}: {sorted(rows)}"
                    assert rows[room]["owner"] == owl_id, f"#{room} is owned by {rows[room]['owner']}"
                    assert set(rows[room]["members"]) == members, rows[room]
            async with day.step(f"owl still owns its rooms and talks with the others ({n})"):
                if alice.agent_id in den:  # an owner's action each morning: kick alice, or invite her in
                    await owl.ok(action="kick", room="den", agent=alice.agent_id)
                    den.discard(alice.agent_id)
                else:
                    await owl.ok(action="invite", room="den", agent=alice.agent_id)
                    await until(partial(_joins, alice, "den"))  # once the invite reached her replica
                    den.add(alice.agent_id)
                await talk([alice, bob, owl], f"the morning after night {n}", "nightshift")
                before = {room: await owl.history(room) for room in ("nightshift", "den")}


async def _joins(agent: Agent, room: str) -> bool:
    joined = await agent.call(action="join_room", room=room)
    if joined["is_error"] and not joined["text"].endswith("(NOT_INVITED)"):
        raise AssertionError(f"{agent.name} could not join #{room}: {joined['text']}")
    return not joined["is_error"]


async def _knows(agent: Agent, *others: Agent) -> bool:
    online = await agent.online()
    return all(other.agent_id in online for other in others)


async def _offline(observer: Agent, agent_id: str) -> bool:
    return agent_id not in await observer.online()


async def _forgotten(day: Day, agent_id: str) -> bool:
    return all(row["id"] != agent_id for row in await day.agents_listed(clock="night"))
