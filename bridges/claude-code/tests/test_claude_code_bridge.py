"""Tests for the Claude Code bridge as an MCP server: ``agent-comms-claude-code`` started as its console entry point
and driven by the official ``mcp`` client over real stdio (and, for the channel, by the TypeScript MCP SDK).

Testing policy: every bridge is a real process on a free port with a fresh ``AGENT_COMMS_HOME``; two bridges
started in different directories are two agents. Claude Code itself cannot run here (it needs a model and an
account), so the MCP clients stand in for it: they see exactly the bytes Claude Code would. Every test that does
I/O runs under a deadline.
"""

from __future__ import annotations

import inspect
import json
import os
import re
import signal
import subprocess
import sys
from pathlib import Path
from typing import Any

import pluggy
import pytest
import trio
from agent_comms_claude_code import plugin
from agent_comms_claude_code.channel import (
    channel_params,
    channels_requested,
    parse_channel_flags,
    wakes,
)
from agent_comms_claude_code.server import INSTRUCTIONS
from agent_comms_mcp.server import INPUT_SCHEMA, TOOL_DESCRIPTION
from claude_code_helpers import (
    DEADLINE,
    Bridge,
    free_port,
    message_id,
    open_mesh,
    program,
    record_spawned,
    text_of,
    wait_listed,
)

from agent_comms.actions import PARAMETERS
from agent_comms.events import DeliveryEvent
from agent_comms.hookspecs import BridgeOptions, HarnessInfo
from agent_comms.plugins import PluginError, find_bridge, find_harness, get_plugin_manager, list_plugins
from agent_comms.testing import said_receipt
from agent_comms.testing.harnesses import node_modules_dir

META_KEY = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")


@pytest.fixture
def spawned(monkeypatch: pytest.MonkeyPatch) -> list[Any]:
    return record_spawned(monkeypatch)


# ---------------------------------------------------------------- in-process: the plugin and the channel format


def test_the_entry_point_registers_the_plugin() -> None:
    pm = get_plugin_manager(load="claude-code")
    assert pm.get_plugin("claude-code") is plugin
    [info] = [info for info in list_plugins(pm) if info.name == "claude-code"]
    assert (info.distribution, info.harness, info.builtin) == ("agent-comms-claude-code", "claude-code", False)
    assert info.hooks == ("configure", "detect", "remove", "serve", "status")
    assert info.push == ("tool-results", "notification", "harness-hooks", "continue-turn")
    harness = find_harness(pm, "claude-code")
    assert isinstance(harness, HarnessInfo)
    assert (harness.name, harness.push, harness.package) == ("claude-code", True, "agent-comms-claude-code")


def test_the_registry_gives_the_claude_code_bridge_for_claude_code_only(tmp_path: Path) -> None:
    pm: pluggy.PluginManager = get_plugin_manager(load="claude-code")
    options = BridgeOptions(name=None, cwd=str(tmp_path), harness_pid=None)
    bridge = find_bridge(pm, "claude-code")
    assert bridge is plugin.BRIDGE
    with pytest.raises(PluginError, match="no installed plugin bridges the harness 'codex'"):
        find_bridge(pm, "codex")
    assert bridge.serve is not None
    running = bridge.serve(options)
    assert inspect.iscoroutine(running)
    running.close()  # a coroutine, not started
    assert list(tmp_path.iterdir()) == []


async def test_importing_the_plugin_and_the_hook_is_cheap() -> None:
    code = (
        "import sys, agent_comms_claude_code.plugin, agent_comms_claude_code.hook; "
        "print(sorted({'trio', 'mcp', 'anyio', 'agent_comms.store'} & set(sys.modules)))"
    )
    with trio.fail_after(60):
        result = await trio.run_process([sys.executable, "-c", code], capture_stdout=True, capture_stderr=True)
    assert result.stdout.decode().strip() == "[]"


def test_channel_flags_are_read_from_the_claude_command_line() -> None:
    flag = "--dangerously-load-development-channels"
    argv = ["claude", "--model", "x", flag, "server:agent-comms", "plugin:other@market", "--verbose"]
    assert parse_channel_flags(argv) == ["server:agent-comms", "plugin:other@market"]
    assert channels_requested(argv, "agent-comms")
    assert not channels_requested(argv, "other-server")
    assert channels_requested(["claude", f"{flag}=plugin:agent-comms@agent-comms"], "agent-comms")
    assert not channels_requested(["claude", "--channels", "server:agent-comms"], "agent-comms")  # allowlist only
    assert not channels_requested(["claude", "server:agent-comms"], "agent-comms")
    assert not channels_requested(["claude", flag, "--resume", "server:agent-comms"], "agent-comms")


def test_channel_params_have_identifier_meta_keys_and_the_text() -> None:
    event = DeliveryEvent(
        id="m1", type="dm", to="me", sender="a-1", sender_name="alice", content="hi <b>", message_id="m1"
    )
    params = channel_params(event)
    assert params["content"] == "[DM from alice (a-1)] hi <b>  [id m1]"
    meta = params["meta"]
    assert isinstance(meta, dict)
    assert meta == {
        "event_id": "m1",
        "type": "dm",
        "from": "alice",
        "from_id": "a-1",
        "message_id": "m1",
        "streaming": "info",
    }
    assert all(META_KEY.match(key) and isinstance(value, str) for key, value in meta.items())
    assert not wakes(event)  # streaming info: no need to wake anyone
    assert wakes(DeliveryEvent(id="m2", type="dm", to="me", streaming="steer"))
    assert wakes(DeliveryEvent(id="i", type="room_invite", to="me"))
    assert not wakes(DeliveryEvent(id="j", type="member_joined", to="me"))


# ---------------------------------------------------------------- the console entry point over real stdio


async def test_initialize_declares_the_channel_and_gives_instructions(tmp_path: Path, spawned: list[Any]) -> None:
    with trio.fail_after(DEADLINE):
        async with open_mesh(tmp_path, spawned) as mesh:
            bridge = await mesh.bridge("solo")
            assert bridge.initialize is not None
            capabilities = bridge.initialize.capabilities
            assert capabilities.experimental == {"claude/channel": {}}
            assert capabilities.tools is not None
            assert bridge.initialize.instructions == INSTRUCTIONS
            assert '<channel source="agent-comms"' in INSTRUCTIONS
            [tool] = (await bridge.session.list_tools()).tools
            assert tool.name == "agent_comms"
            assert tool.description == TOOL_DESCRIPTION
            assert tool.input_schema == INPUT_SCHEMA
            assert list(tool.input_schema["properties"]) == list(PARAMETERS)
            assert tool.input_schema["required"] == ["action"]
            # Registered on start under the harness name claude-code: <harness>-<directory>.
            assert (bridge.name, bridge.id.split("-")[0]) == ("claude-code-solo", "claude")
            assert "harness claude-code" in await bridge.ok(action="whoami")
            log = bridge.errlog.read_text()
            assert "pushing messages through the hooks" in log  # no channel flag on the parent's command line


async def test_every_action_and_errors_as_is_error(tmp_path: Path, spawned: list[Any]) -> None:
    with trio.fail_after(DEADLINE):
        async with open_mesh(tmp_path, spawned) as mesh:
            a = await mesh.bridge("alpha")
            b = await mesh.bridge("beta")
            assert (await a.ok(action="register", name="alice")).startswith("Re-registered as alice (")
            await b.ok(action="register", name="bob", tags=["reviewer"])
            assert "busy" in await a.ok(action="update", status="busy")
            await b.until(lambda r: f"alice ({a.id})" in text_of(r), action="list_agents")
            await a.until(lambda r: f"bob ({b.id})" in text_of(r), action="list_agents")
            await a.ok(action="create_room", room="lobby", description="all hands")
            assert "#lobby" in await a.ok(action="list_rooms")
            await b.until(lambda r: not r.is_error, action="join_room", room="lobby")
            sent = await a.ok(action="send", target="lobby", content="hello room", streamingBehavior="info")
            await b.ok(action="send", room="lobby", content="hello alice", replyTo=message_id(sent))
            await a.until(lambda r: "hello alice" in text_of(r), action="read_room", room="lobby")
            assert "Left #lobby" in await b.ok(action="leave_room", room="lobby")
            await a.ok(action="create_room", room="ops", type="private")
            assert "Invited bob" in await a.ok(action="invite", room="ops", agent="bob")
            await b.until(lambda r: not r.is_error, action="decline_invite", room="ops", reason="busy elsewhere")
            await a.ok(action="invite", room="ops", agent=b.id)
            assert "Kicked bob" in await a.ok(action="kick", room="ops", agent="bob")
            assert "Destroyed #ops" in await a.ok(action="destroy_room", room="ops")
            assert "Sent to bob" in await a.ok(action="dm", target="bob", content="ping")
            # errors are results with is_error, never protocol errors
            assert "unknown action 'fly'" in await a.error("INVALID_PARAMS", action="fly")
            assert "missing 'room'" in await a.error("INVALID_PARAMS", action="join_room")
            await a.error("ROOM_NOT_FOUND", action="read_room", room="nowhere")
            await a.error("AGENT_NOT_FOUND", action="dm", target="nobody", content="hi")
            await a.error("ROOM_EXISTS", action="create_room", room="lobby")
            await b.error("NOT_OWNER", action="destroy_room", room="lobby")
            other = await a.session.call_tool("other_tool", {"action": "whoami"})
            assert other.is_error


async def test_without_the_channel_events_are_drained_into_results_once(tmp_path: Path, spawned: list[Any]) -> None:
    """Also: ``agent-comms bridge claude-code`` runs the same bridge as the console script."""
    with trio.fail_after(DEADLINE):
        async with open_mesh(tmp_path, spawned) as mesh:
            a = await mesh.bridge("alpha")
            b = await mesh.bridge("beta", "bridge", "claude-code", command=program("agent-comms"))
            assert b.initialize is not None
            assert b.initialize.capabilities.experimental == {"claude/channel": {}}
            await wait_listed(a, b)
            sent = await a.ok(action="dm", target=b.id, content="are you there, beta?")
            shown = await b.until(lambda r: "are you there, beta?" in text_of(r), action="whoami")
            assert f"[DM from claude-code-alpha ({a.id})] are you there, beta?  [id {message_id(sent)}]" in shown
            assert "are you there" not in await b.ok(action="whoami")
            assert b.channel == []  # no channel: nothing was pushed
            await a.until(lambda r: said_receipt(text_of(r), message_id(sent), "read"), action="whoami")


async def test_a_dm_arrives_as_a_channel_notification(tmp_path: Path, spawned: list[Any]) -> None:
    with trio.fail_after(DEADLINE):
        async with open_mesh(tmp_path, spawned) as mesh:
            a = await mesh.bridge("alpha")
            b = await mesh.bridge("beta", "--option", "channel=on")
            await wait_listed(a, b)
            sent = await a.ok(action="dm", target=b.id, content="channel check", streamingBehavior="steer")
            [pushed] = await b.wait_channel(1)
            assert pushed.content == f"[DM from claude-code-alpha ({a.id})] channel check  [id {message_id(sent)}]"
            assert pushed.meta is not None
            assert all(META_KEY.match(key) for key in pushed.meta)
            assert pushed.meta["type"] == "dm"
            assert pushed.meta["from_id"] == a.id
            assert pushed.meta["message_id"] == message_id(sent)
            assert pushed.meta["event_id"] == message_id(sent)
            assert pushed.meta["streaming"] == "steer"
            # Pushed once: not drained into a result again, and the sender hears it was read.
            await a.until(lambda r: said_receipt(text_of(r), message_id(sent), "read"), action="whoami")
            assert "channel check" not in await b.ok(action="whoami")
            # An info message does not wake the model: it waits for the next result instead.
            info = await a.ok(action="dm", target=b.id, content="fyi only", streamingBehavior="info")
            await b.until(lambda r: "fyi only" in text_of(r), action="whoami")
            assert len(b.channel) == 1
            await a.until(lambda r: said_receipt(text_of(r), message_id(info), "read"), action="whoami")
            assert "channel and the hooks" in b.errlog.read_text()


async def test_the_channel_is_on_when_claude_was_started_with_the_flag(tmp_path: Path, spawned: list[Any]) -> None:
    """``--harness-pid`` names a process whose command line carries Claude Code's development-channels flag."""
    with trio.fail_after(DEADLINE):
        stand_in = await trio.lowlevel.open_process(
            [
                sys.executable,
                "-c",
                "import time; time.sleep(600)",
                "--dangerously-load-development-channels",
                "server:agent-comms",
            ],
        )
        try:
            async with open_mesh(tmp_path, spawned) as mesh:
                a = await mesh.bridge("alpha")
                b = await mesh.bridge("beta", "--harness-pid", str(stand_in.pid))
                await wait_listed(a, b)
                await a.ok(action="dm", target=b.id, content="flag check")
                [pushed] = await b.wait_channel(1)
                assert "flag check" in pushed.content
                assert "channel and the hooks" in b.errlog.read_text()
        finally:
            stand_in.kill()
            await stand_in.wait()


async def test_the_channel_notification_reaches_the_typescript_sdk(tmp_path: Path) -> None:
    """The TypeScript MCP SDK (the client library Claude Code is built on) receives the channel notification."""
    node_modules = node_modules_dir()
    if not (node_modules / "@modelcontextprotocol" / "sdk").is_dir():
        pytest.skip(f"the TypeScript MCP SDK is not installed in {node_modules}")
    port = free_port()
    env = {**os.environ, "AGENT_COMMS_HOME": str(tmp_path / "home"), "AGENT_COMMS_PORT": str(port)}
    client = Path(__file__).with_name("channel_client.mjs")
    sender_code = (
        "import sys, trio, agent_comms\n"
        "async def main():\n"
        "    async with agent_comms.open_agent('test', 'sender') as agent:\n"
        "        while True:\n"
        "            result = await agent.call({'action': 'dm', 'target': 'ts-receiver', 'content': 'hello ts'})\n"
        "            if not result.is_error:\n"
        "                print(result.text, flush=True)\n"
        "                break\n"
        "            await trio.sleep(0.1)\n"
        "        await trio.sleep(30)\n"
        "trio.run(main)\n"
    )
    (tmp_path / "receiver").mkdir()
    with trio.fail_after(DEADLINE):
        async with trio.open_nursery() as nursery:
            result: list[subprocess.CompletedProcess[bytes]] = []

            async def run_client() -> None:
                done = await trio.run_process(
                    [
                        "node",
                        str(client),
                        *program("agent-comms-claude-code"),
                        "--name",
                        "ts-receiver",
                        "--option",
                        "channel=on",
                    ],
                    env={**env, "NODE_PATH": str(node_modules)},
                    cwd=tmp_path / "receiver",
                    capture_stdout=True,
                    capture_stderr=True,
                    check=False,
                )
                result.append(done)
                nursery.cancel_scope.cancel()

            async def run_sender() -> None:
                await trio.run_process([sys.executable, "-c", sender_code], env=env, capture_stdout=True)

            nursery.start_soon(run_client)
            nursery.start_soon(run_sender)
    [done] = result
    assert done.returncode == 0, done.stderr.decode()
    report = json.loads(done.stdout.decode().strip().splitlines()[-1])
    assert report["capabilities"]["experimental"] == {"claude/channel": {}}
    assert report["notification"]["method"] == "notifications/claude/channel"
    params = report["notification"]["params"]
    assert "hello ts" in params["content"]
    assert params["meta"]["type"] == "dm"
    assert all(META_KEY.match(key) for key in params["meta"])


async def test_a_killed_bridge_goes_offline_for_the_others_within_a_second(tmp_path: Path, spawned: list[Any]) -> None:
    with trio.fail_after(DEADLINE):
        async with open_mesh(tmp_path, spawned) as mesh:
            observer = await mesh.bridge("observer")
            victim: Bridge = await mesh.bridge("victim")
            await wait_listed(observer, victim)
            os.kill(victim.process.pid, signal.SIGKILL)
            start = trio.current_time()
            with trio.fail_after(1.0):
                await wait_listed(observer, victim, listed=False)
            assert trio.current_time() - start < 1.0


async def test_the_2026_era_probe_is_refused_so_claude_code_opens_with_initialize(tmp_path: Path) -> None:
    """Claude Code 2.1 sends ``server/discover`` first and then ``initialize``, and registers channels only on an
    ``initialize`` connection: the bridge answers the probe "method not found" and serves the handshake."""
    env = {**os.environ, "AGENT_COMMS_HOME": str(tmp_path / "home"), "AGENT_COMMS_PORT": str(free_port())}
    envelope = {"io.modelcontextprotocol/protocolVersion": "2026-07-28"}
    messages: list[dict[str, Any]] = [
        {"jsonrpc": "2.0", "id": "probe", "method": "server/discover", "params": {"_meta": envelope}},
        {
            "jsonrpc": "2.0",
            "id": 0,
            "method": "initialize",
            "params": {
                "protocolVersion": "2025-11-25",
                "capabilities": {"roots": {"listChanged": True}},
                "clientInfo": {"name": "claude-code", "version": "2.1.332"},
            },
        },
        {"jsonrpc": "2.0", "method": "notifications/initialized"},
        {"jsonrpc": "2.0", "id": 1, "method": "tools/list"},
    ]
    piped = "".join(json.dumps(message) + "\n" for message in messages)
    with trio.fail_after(60):
        result = await trio.run_process(
            program("agent-comms-claude-code"),
            stdin=piped.encode(),
            capture_stdout=True,
            capture_stderr=True,
            env=env,
            cwd=tmp_path,
        )
    assert result.returncode == 0, result.stderr
    answers = {answer["id"]: answer for answer in map(json.loads, result.stdout.splitlines())}
    assert answers["probe"]["error"]["code"] == -32601
    assert answers[0]["result"]["protocolVersion"] == "2025-11-25"
    assert answers[0]["result"]["capabilities"]["experimental"] == {"claude/channel": {}}
    assert answers[0]["result"]["instructions"] == INSTRUCTIONS
    assert [tool["name"] for tool in answers[1]["result"]["tools"]] == ["agent_comms"]
