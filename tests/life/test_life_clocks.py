"""Noon to afternoon: a laptop suspend, and a wall clock stepped back by a day.

A suspend stops the monotonic clock and moves the wall clock: the processes of the ``lid`` group jump 10 minutes
forward while those of the ``desk`` group are not moved; an agent started after the suspend must then talk with
the old ones in both directions. Then one process's wall clock is stepped back a day (a user, or NTP, setting the
time), and a session starts under that clock: the mesh stays one.
"""

from __future__ import annotations

from pathlib import Path

from life_helpers import open_day, scale, settle_in, talk

SUSPEND = 600.0
DAY = 86_400.0


async def test_a_suspend_does_not_split_the_mesh(tmp_path: Path) -> None:
    async with open_day(tmp_path, seconds=scale(120, 600)) as day:
        lid = day.clock("lid")
        async with day.step("alice (lid) and bob (desk) start and meet in #standup"):
            alice = await day.agent("alice", "api", clock="lid")
            await alice.ok(action="create_room", room="standup")
            bob = await day.agent("bob", "web", clock="desk")
            await settle_in(bob, "standup", alice)
            await talk([alice, bob], "before the suspend", "standup")
        old = [alice, bob]
        for n in range(scale(1, 3)):
            async with day.step(f"the lid closes: alice's wall clock jumps {SUSPEND:g} s, bob's does not ({n})"):
                lid.move(SUSPEND)
                await talk(old, f"after suspend {n}", "standup")
            async with day.step(f"a new agent starts after the suspend and joins #standup ({n})"):
                new = await day.agent(f"carol{n}", f"carol{n}", clock="lid")
                await settle_in(new, "standup", *old)
            async with day.step(f"DMs and room messages flow between the old agents and the new one ({n})"):
                await talk([*old, new], f"round {n}", "standup")
            old.append(new)


async def test_a_wall_clock_stepped_back_a_day(tmp_path: Path) -> None:
    async with open_day(tmp_path, seconds=scale(120, 600)) as day:
        ntp = day.clock("ntp")
        async with day.step("alice, bob (whose clock will be stepped) and carol meet in #ops"):
            alice = await day.agent("alice", "api")
            await alice.ok(action="create_room", room="ops")
            bob = await day.agent("bob", "web", clock="ntp")
            await settle_in(bob, "ops", alice)
            carol = await day.agent("carol", "docs")
            await settle_in(carol, "ops", alice, bob)
            await talk([alice, bob, carol], "in the morning", "ops")
        async with day.step("bob's wall clock is stepped back a day; everyone still talks"):
            ntp.move(-DAY)
            await talk([alice, bob, carol], "a day back", "ops")
        async with day.step("a session starts under the stepped-back clock and joins #ops"):
            erin = await day.agent("erin", "infra", clock="ntp")
            await settle_in(erin, "ops", alice, bob, carol)
        async with day.step("the stepped-back session talks with everyone, both ways"):
            await talk([alice, bob, carol, erin], "from yesterday", "ops")
        async with day.step("the clock is set right again; everyone still talks"):
            ntp.move(DAY)
            await talk([alice, bob, carol, erin], "set right", "ops")
