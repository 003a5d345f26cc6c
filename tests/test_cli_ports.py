"""A mesh is its port: two ``AGENT_COMMS_PORT`` values with one ``AGENT_COMMS_HOME`` are two meshes.

Real processes: agents behind ``agent-comms bridge jsonl`` on two ports sharing one home (so one mesh key and one
peer registry), and the reading commands run as a person would run them. Each command, on each port, sees its own
mesh only, and all of them agree on what that mesh is.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import Any

import trio
from test_cli_oneshot import Bridge, Cli, _process, free_port

DEADLINE = 90


async def _bridge_ready(bridge: Bridge) -> Bridge:
    ready = await bridge._line()
    assert ready["type"] == "ready", ready
    bridge.agent_id = ready["agent"]["id"]
    return bridge


async def _linked(cli: Cli, peers: int) -> dict[str, Any]:
    """The ``mesh --json`` of ``cli``'s port once it lists ``peers`` peers, each linked to (at least) the others."""
    while True:
        mesh: dict[str, Any] = await cli.json("mesh")
        views = mesh["peers"]
        if len(views) == peers and all(v["links"] is not None and len(v["links"]) >= peers - 1 for v in views):
            return mesh
        await trio.sleep(0.1)


async def test_two_ports_in_one_home_are_two_meshes_and_every_command_agrees(tmp_path: Path) -> None:
    home = tmp_path / "home"
    first, second = free_port(), free_port()
    while second == first:
        second = free_port()

    def env(port: int) -> dict[str, str]:
        return {
            **os.environ,
            "AGENT_COMMS_HOME": str(home),
            "AGENT_COMMS_PORT": str(port),
            "AGENT_COMMS_LOAD_PLUGINS": "",
        }

    def argv(name: str) -> list[str]:
        return [sys.executable, "-m", "agent_comms", "bridge", "jsonl", "--name", name]

    cli = {first: Cli(env(first), tmp_path / "desk"), second: Cli(env(second), tmp_path / "desk")}
    with trio.fail_after(DEADLINE):
        async with (
            _process(argv("one"), env(first), tmp_path / "one", tmp_path / "one.log") as one_process,
            _process(argv("two"), env(second), tmp_path / "two", tmp_path / "two.log") as two_process,
        ):
            one, two = await _bridge_ready(Bridge(one_process)), await _bridge_ready(Bridge(two_process))
            # A third agent on the first port starts after both: the registry lists the peers of both ports.
            async with _process(argv("three"), env(first), tmp_path / "three", tmp_path / "three.log") as third:
                three = await _bridge_ready(Bridge(third))
                await one.call(action="create_room", room="first-room")
                await one.call(action="send", target="first-room", content="hello first")
                await two.call(action="create_room", room="second-room")
                await two.call(action="send", target="second-room", content="hello second")

                meshes = {first: await _linked(cli[first], 2), second: await _linked(cli[second], 1)}
                expected = {first: {one.agent_id, three.agent_id}, second: {two.agent_id}}
                rooms = {first: "first-room", second: "second-room"}
                for port in (first, second):
                    mesh = meshes[port]
                    assert mesh["coordinator"]["port"] == port
                    peer_ids = {peer["peer_id"] for peer in mesh["peers"]}
                    for peer in mesh["peers"]:  # linked to the peers of its own mesh and to no other
                        assert set(peer["links"]) == peer_ids - {peer["peer_id"]}
                    hosted = {agent for peer in mesh["peers"] for agent in peer["agents"]}
                    assert hosted == expected[port]
                    assert all(peer["port"] == port for peer in mesh["peers"])
                    other_port, other_peers = (second, 1) if port == first else (first, 2)
                    assert mesh["other_meshes"] == [{"port": other_port, "peers": other_peers}]
                    table = (await cli[port]("mesh")).stdout.decode()
                    assert f"mesh on 127.0.0.1:{port}:" in table
                    assert f"other meshes in this home (another AGENT_COMMS_PORT): port {other_port} " in table
                    agents = await cli[port].json("agents")
                    assert {a["id"] for a in agents} == expected[port]
                    assert [r["name"] for r in await cli[port].json("rooms")] == [rooms[port]]
                    history = await cli[port].json("read", rooms[port])
                    assert [m["content"] for m in history] == [f"hello {rooms[port].split('-')[0]}"]
                    other = rooms[second if port == first else first]
                    missing = await cli[port]("read", other, "--json")
                    assert missing.returncode != 0
                    assert other in missing.stderr.decode()
                # The people of one mesh do not see the other's agent.
                listed = await three.call(action="list_agents")
                assert two.agent_id not in listed["text"]
                assert one.agent_id in listed["text"]
