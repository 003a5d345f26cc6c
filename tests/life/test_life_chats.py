"""Mid-morning: scripted chats and fresh bridges act the moment they start.

A person's scripted ``agent-comms chat`` joins a room, talks and DMs in its first breath; fresh bridges create
rooms and send at once, two of them racing for the same new name: every message whose send was acknowledged is in
the room's history for everyone, and nobody is told a room was destroyed.
"""

from __future__ import annotations

import json
from functools import partial
from pathlib import Path
from typing import Any

import trio
from life_helpers import EPOCH, Agent, Day, open_day, scale, settle_in, until

SCRIPT = b"/join general\nhello\n/dm alice hi\n"


async def test_a_scripted_chat_acts_at_once(tmp_path: Path) -> None:
    async with open_day(tmp_path, seconds=scale(120, 600)) as day:
        async with day.step("alice starts and opens #general"):
            alice = await day.agent("alice", "api")
            await alice.ok(action="create_room", room="general")
        for n in range(scale(1, 4)):
            async with day.step(
                f"printf '/join general\\nhello\\n/dm alice hi\\n' | agent-comms chat --name bot ({n})"
            ):
                done = await day.run("chat", ["chat", "--name", "bot"], cwd="bot", stdin=SCRIPT)
                shown = done.stdout.decode(errors="replace") + done.stderr.decode(errors="replace")
                assert done.returncode == 0, f"the chat exited {done.returncode}"
                for wrong in ("ROOM_NOT_FOUND", "not talking to anyone", "no agent named", "Error:"):
                    assert wrong not in shown, f"the chat answered {wrong!r}:\n{shown}"
            async with day.step(f"alice gets the chat's DM ({n})"):
                dm = await alice.event(lambda e: e.get("type") == "dm" and e.get("content") == "hi")
                bot = dm["sender"]
            async with day.step(f"the chat's hello is in #general's history ({n})"):
                hellos = await until(partial(_messages_from, day, "general", bot, "hello", n + 1))
                assert len(hellos) == n + 1, f"#general holds {len(hellos)} hello(s) after {n + 1} chat(s)"


async def _messages_from(day: Day, room: str, sender: str, content: str, count: int) -> list[dict[str, Any]]:
    """The messages ``content`` of ``sender`` in ``room`` (``agent-comms read``), once there are ``count``."""
    done = await day.run("read", ["read", room, "--json"])
    if done.returncode != 0:
        return []
    found = [m for m in json.loads(done.stdout) if m["from"] == sender and m["content"] == content]
    return found if len(found) >= count else []


async def test_fresh_bridges_create_rooms_and_send_at_once(tmp_path: Path) -> None:
    count = scale(2, 6)
    async with open_day(tmp_path, seconds=scale(120, 600)) as day:
        async with day.step("alice starts and opens #general"):
            alice = await day.agent("alice", "api")
            await alice.ok(action="create_room", room="general")
        fresh: list[Agent] = []
        sent: dict[str, list[str]] = {"general": [], "standup": []}
        async with day.step(f"{count} fresh bridges start together"), trio.open_nursery() as nursery:
            for n in range(count):

                async def start(n: int = n) -> None:
                    fresh.append(await day.agent(f"dev{n}", f"dev{n}"))

                nursery.start_soon(start)
        async with (
            day.step("at once, each creates #general (it exists) and the new #standup, and sends to both"),
            trio.open_nursery() as nursery,
        ):
            for agent in fresh:

                async def act(agent: Agent = agent) -> None:
                    for room in ("general", "standup"):
                        created = await agent.call(action="create_room", room=room)
                        if created["is_error"]:
                            assert created["text"].endswith("(ROOM_EXISTS)"), created["text"]
                            await agent.ok(action="join_room", room=room)
                        result = await agent.ok(action="send", target=room, content=f"{agent.name} in {room}")
                        sent[room].append(result["data"]["message_id"])

                nursery.start_soon(act)
        everyone = [alice, *fresh]
        async with day.step("every acknowledged message is in the history, for everyone"):
            await settle_in(alice, "standup", *fresh)
            for room, ids in sent.items():
                for agent in everyone:
                    await until(partial(_holds, agent, room, ids))
        async with day.step("one #general (alice's) and one #standup, and nobody was told a room was destroyed"):
            for agent in everyone:
                destroyed = agent.events(lambda e: e.get("type") == "room_destroyed")
                assert not destroyed, f"{agent.name} was told {destroyed}"
            rooms = [row for row in await day.rooms_listed() if row["name"] in ("general", "standup")]
            assert sorted(row["name"] for row in rooms) == ["general", "standup"], rooms
            [general] = [row for row in rooms if row["name"] == "general"]
            assert general["owner"] == alice.agent_id, f"#general is owned by {general['owner']}"
            for row in rooms:
                assert set(row["members"]) == {a.agent_id for a in everyone}, row


async def _holds(agent: Agent, room: str, ids: list[str]) -> bool:
    history = await agent.call(action="read_room", room=room, since=EPOCH)
    return not history["is_error"] and set(ids) <= set(history["data"]["messages"])
