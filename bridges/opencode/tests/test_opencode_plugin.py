"""Tests for agent-comms-opencode: the setup hooks with the real ``opencode`` CLI, and the plugin under node.

Testing policy: setup is checked with the real ``opencode`` CLI and a throwaway ``HOME`` (``opencode debug config``
lists the plugins it loads, ``opencode debug agent build`` the tools an agent gets). OpenCode needs a model to
call a tool, so for the relay ``opencode_host.mjs`` stands in for OpenCode: it loads the real plugin file that
setup wrote into node, checks tool arguments with the plugin's zod schema as OpenCode does, and records what the
plugin sends to ``client.session.promptAsync``. Everything else is real: the ``agent-comms bridge opencode`` the
plugin starts, a second agent as an ``agent-comms bridge jsonl`` process, a mesh on a free port. Every test that
does I/O runs under a deadline.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
import urllib.request
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import agent_comms_opencode
import pytest
import trio

from agent_comms.hookspecs import Bridge, PushPath
from agent_comms.testing.harnesses import harness_cli, node_modules_dir
from agent_comms.testing.processes import (
    Lines,
    Peer,
    alive,
    free_port,
    mesh_env,
    open_peer,
    wait_for_bridge_of,
    wait_until_gone,
)

DEADLINE = 120
#: An npm registry that refuses every connection: OpenCode run offline.
OFFLINE = "http://127.0.0.1:9/"
HOST = Path(__file__).with_name("opencode_host.mjs")


@pytest.fixture
def home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A throwaway home, and the real ``opencode`` first on ``PATH`` (where the setup hooks look for it)."""
    opencode = harness_cli("opencode")
    monkeypatch.setenv("PATH", f"{opencode.parent}{os.pathsep}{os.environ.get('PATH', '')}")
    home = tmp_path / "home"
    home.mkdir()
    return home


def opencode_json(home: Path, *args: str) -> dict[str, Any]:
    """The JSON that ``opencode debug <args>`` prints (after any log lines), run in a project under ``home``."""
    project = home / "project"
    project.mkdir(exist_ok=True)
    result = subprocess.run(
        [str(harness_cli("opencode")), "debug", *args],
        capture_output=True,
        text=True,
        timeout=DEADLINE,
        cwd=project,
        # OpenCode starts the plugin, and the plugin its bridge: on a mesh of this test's own
        # and with no npm registry reachable: setup installed what OpenCode would download, so none is needed
        env={**mesh_env(home.parent, free_port()), "HOME": str(home), "npm_config_registry": OFFLINE},
        stdin=subprocess.DEVNULL,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    parsed: dict[str, Any] = json.loads(result.stdout[result.stdout.index("{") :])
    return parsed


# ---------------------------------------------------------------- setup, status, remove


def test_setup_is_idempotent_reversible_and_keeps_the_users_config(home: Path) -> None:
    config = home / ".config" / "opencode"
    (config / "plugins").mkdir(parents=True)
    # with the $schema line OpenCode adds to a config file without one
    user_config = '{\n  "$schema": "https://opencode.ai/config.json",\n  // mine\n  "username": "alice"\n}\n'
    (config / "opencode.jsonc").write_text(user_config)
    user_plugin = config / "plugins" / "mine.js"
    user_plugin.write_text("export const Mine = async () => ({})\n")
    plugin = agent_comms_opencode.plugin_path(home)

    detected = agent_comms_opencode.detect(home)
    assert detected is not None
    assert detected.installed, detected
    assert detected.detail.startswith("opencode 1.")
    assert agent_comms_opencode.status(home) == "not configured"
    version = detected.detail.removeprefix("opencode ")
    planned = agent_comms_opencode.configure(home, True)
    assert planned is not None
    assert planned[0] == f"wrote the agent-comms plugin {plugin}"
    assert planned[1].startswith(f"install @opencode-ai/plugin@{version} into {config} ")
    assert len(planned) == 2, planned
    assert not plugin.exists()  # a dry run touches nothing
    assert not (config / "node_modules").exists()

    assert agent_comms_opencode.configure(home, False) == planned
    assert agent_comms_opencode.configure(home, False) == []  # idempotent
    assert agent_comms_opencode.status(home) == (
        f"configured: plugin {plugin}; @opencode-ai/plugin {version} installed (works offline)"
    )

    # The real OpenCode loads it, next to the user's plugin, with the user's settings, and gives agents the tool.
    resolved = opencode_json(home, "config")
    assert plugin.as_uri() in resolved["plugin"]
    assert user_plugin.as_uri() in resolved["plugin"]
    assert resolved["username"] == "alice"
    tools = opencode_json(home, "agent", "build")["tools"]
    assert tools.get("agent_comms") is True

    deleted = [f"deleted the agent-comms plugin {plugin}"]
    assert agent_comms_opencode.remove(home, True) == deleted
    assert plugin.exists()
    assert agent_comms_opencode.remove(home, False) == [f"deleted the agent-comms plugin {plugin}"]
    assert agent_comms_opencode.remove(home, False) == []
    resolved = opencode_json(home, "config")
    assert plugin.as_uri() not in resolved["plugin"]
    assert user_plugin.as_uri() in resolved["plugin"]
    assert "agent_comms" not in opencode_json(home, "agent", "build")["tools"]
    assert (config / "opencode.jsonc").read_text() == user_config
    assert user_plugin.exists()
    assert agent_comms_opencode.status(home) == "not configured"


def test_without_the_helper_opencode_offline_has_no_tool_and_status_says_why(home: Path) -> None:
    """What setup's npm install prevents: OpenCode cannot download @opencode-ai/plugin, and starts without the
    plugin's tool, silently. Status names what is missing."""
    plugin = agent_comms_opencode.plugin_path(home)
    plugin.parent.mkdir(parents=True)
    plugin.write_text(agent_comms_opencode.plugin_source())
    line = agent_comms_opencode.status(home) or ""
    assert "@opencode-ai/plugin not installed" in line, line
    assert "agent-comms setup opencode installs it" in line
    assert "agent_comms" not in opencode_json(home, "agent", "build")["tools"]


def test_the_plugin_registers_only_the_opencode_bridge(tmp_path: Path) -> None:
    registered: list[Bridge] = []
    agent_comms_opencode.register_bridges(registered.append)
    assert registered == [agent_comms_opencode.BRIDGE]
    bridge = registered[0]
    assert (bridge.name, bridge.package, bridge.info.push) == ("opencode", "agent-comms-opencode", True)
    assert bridge.push_path == PushPath.RELAY | PushPath.CONTINUE_TURN | PushPath.TOOL_RESULTS
    setup = (bridge.detect, bridge.configure, bridge.status, bridge.remove)
    assert setup == (
        agent_comms_opencode.detect,
        agent_comms_opencode.configure,
        agent_comms_opencode.status,
        agent_comms_opencode.remove,
    )
    assert not any(tmp_path.iterdir())


# ---------------------------------------------------------------- the plugin, relaying


class Host(Lines):
    """``opencode_host.mjs`` with the real plugin loaded."""

    _next_id = 0

    async def call(self, session: str = "ses_1", **params: Any) -> str:
        self._next_id += 1
        request_id = self._next_id
        await self.send({"cmd": "call", "id": request_id, "session": session, "params": params})
        result = await self.wait_for(lambda m: m.get("type") == "result" and m.get("id") == request_id)
        text: str = result["text"]
        return text

    def prompted(self, needle: str) -> list[dict[str, Any]]:
        return [m for m in self.seen if m.get("type") == "prompted" and needle in m["body"]["parts"][0]["text"]]


@asynccontextmanager
async def open_host(home: Path, env: dict[str, str], cwd: Path) -> AsyncIterator[Host]:
    """The plugin as setup wrote it, loaded by the host, with the ``@opencode-ai/plugin`` helper it imports."""
    assert agent_comms_opencode.configure(home, False) is not None
    helper = node_modules_dir() / "@opencode-ai" / "plugin"
    if not helper.exists():
        pytest.fail(f"{helper} is missing: run `npm install` in tests/harnesses", pytrace=False)
    modules = agent_comms_opencode.config_dir(home) / "node_modules"
    if not modules.exists():
        modules.symlink_to(node_modules_dir(), target_is_directory=True)
    await trio.Path(cwd).mkdir(parents=True, exist_ok=True)
    process = await trio.lowlevel.open_process(
        ["node", str(HOST), str(agent_comms_opencode.plugin_path(home))],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        env={**env, "HOME": str(home), "AGENT_COMMS_NAME": "oc-agent"},
        cwd=cwd,
    )
    try:
        async with trio.open_nursery() as nursery:
            host = Host(process)
            nursery.start_soon(host.read_all)
            try:
                loaded = await host.wait_for(lambda m: m.get("type") == "loaded")
                assert loaded["tool"] == "agent_comms"
                yield host
            except BaseException:
                print("--- the host's lines ---", *map(json.dumps, host.seen[-20:]), sep="\n", file=sys.stderr)
                raise
            nursery.cancel_scope.cancel()
    finally:
        if process.poll() is None:
            process.kill()
        with trio.move_on_after(10):
            await process.wait()


def receipts(peer: Peer, message_id: str) -> list[str]:
    return [
        m["event"]["status"]
        for m in peer.seen
        if m.get("type") == "event"
        and m["event"]["type"] == "delivery_status"
        and m["event"]["message_id"] == message_id
    ]


async def wait_for_receipt(peer: Peer, message_id: str, status: str) -> None:
    await peer.wait_for(
        lambda m: (
            m.get("type") == "event"
            and m["event"]["type"] == "delivery_status"
            and m["event"]["message_id"] == message_id
            and m["event"]["status"] == status
        )
    )


async def test_tool_calls_pushes_once_receipts_after_shown_and_dispose(home: Path, tmp_path: Path) -> None:
    env = mesh_env(tmp_path, free_port())
    with trio.fail_after(DEADLINE):
        async with open_peer("bob", env, tmp_path / "bob") as bob, open_host(home, env, tmp_path / "project") as oc:
            # A DM before OpenCode has a session to push into waits, unread, for the next tool result.
            while not (ids := [a for a in await bob.online_agents() if a.startswith("opencode-")]):  # noqa: ASYNC110
                await trio.sleep(0.05)
            oc_id = ids[0]
            early = (await bob.call(action="dm", target=oc_id, content="early bird"))["data"]["message_id"]
            await wait_for_receipt(bob, early, "delivered")
            assert oc.prompted("early bird") == []
            text = await oc.call(action="whoami")
            assert text.startswith(f"You are oc-agent ({oc_id}): active, visible, harness opencode")
            if "early bird" in text:
                assert "--- 1 new event(s) ---" in text
                assert f"[DM from bob ({bob.agent_id})] early bird  [id {early}]" in text
            elif not oc.prompted("early bird"):  # its line reached the plugin just after the call began: then it
                # goes into the call's session, perhaps while the call waited for its result (which passed over it)
                await oc.wait_for(lambda m: m.get("type") == "prompted" and "early bird" in str(m["body"]))
            await wait_for_receipt(bob, early, "read")

            # send
            sent = await oc.call(action="dm", target="bob", content="hello bob")
            assert sent.startswith("Sent to bob"), sent
            dm = await bob.wait_for(lambda m: m.get("type") == "event" and m["event"]["type"] == "dm")
            assert (dm["event"]["sender"], dm["event"]["content"]) == (oc_id, "hello bob")
            assert (await oc.call(action="join_room", room="nowhere")).endswith("(ROOM_NOT_FOUND)")
            assert (await oc.call(action="teleport")).startswith("invalid arguments")  # zod stops it first

            # push: into the session that used the tool, waking it (a reply is wanted), read once accepted
            pushed = (await bob.call(action="dm", target=oc_id, content="please review #7"))["data"]["message_id"]
            prompt = await oc.wait_for(lambda m: m.get("type") == "prompted" and "#7" in str(m["body"]))
            assert prompt["session"] == "ses_1"
            assert prompt["body"]["noReply"] is False
            assert prompt["body"]["parts"] == [
                {"type": "text", "text": f"[DM from bob ({bob.agent_id})] please review #7  [id {pushed}]"}
            ]
            await wait_for_receipt(bob, pushed, "read")

            # OpenCode refuses a prompt: the event stays unread and comes with the next tool result instead
            await oc.send({"cmd": "refuse_prompts", "value": True})
            refused = (await bob.call(action="dm", target=oc_id, content="try later"))["data"]["message_id"]
            await wait_for_receipt(bob, refused, "delivered")
            await bob.call(action="whoami")  # a round trip through bob: the push attempt had time to happen
            await trio.sleep(0.5)
            assert "read" not in receipts(bob, refused)
            assert oc.prompted("try later") == []
            await oc.send({"cmd": "refuse_prompts", "value": False})
            text = await oc.call(action="whoami")
            assert "try later" in text
            await wait_for_receipt(bob, refused, "read")

            # once and only once, whichever way it came
            later = (await bob.call(action="dm", target=oc_id, content="last one"))["data"]["message_id"]
            await wait_for_receipt(bob, later, "read")
            results = [m["text"] for m in oc.seen if m.get("type") == "result"]
            for words in ("early bird", "please review #7", "try later", "last one"):
                shown = len(oc.prompted(words)) + sum(words in text for text in results)
                assert shown == 1, (words, shown)
            assert oc.prompted("try later") == []
            text = await oc.call(action="whoami")
            assert all(word not in text for word in ("early bird", "please review", "try later", "last one"))

            # informational events are added without waking the session
            await oc.call(action="create_room", room="review")
            while (await bob.call(action="join_room", room="review"))["is_error"]:  # noqa: ASYNC110 - catching up
                await trio.sleep(0.05)
            joined = await oc.wait_for(lambda m: m.get("type") == "prompted" and "joined" in str(m["body"]))
            assert joined["body"]["noReply"] is True

            # dispose: the bridge leaves the mesh at once
            bridge = await wait_for_bridge_of(oc.process.pid, "opencode")
            await oc.send({"cmd": "dispose"})
            await oc.wait_for(lambda m: m.get("type") == "disposed")
            started = time.monotonic()
            await bob.wait_until(oc_id, online=False)
            assert time.monotonic() - started < 1.0
            await wait_until_gone(bridge)


async def test_killed_bridge_is_offline_within_a_second_and_restarts(home: Path, tmp_path: Path) -> None:
    """SIGKILL of the bridge: others see the agent offline within 1 s; the next tool call starts a new bridge.

    Then SIGKILL of the host (OpenCode's process): its bridge notices (``--harness-pid``) and leaves the mesh.
    """
    env = mesh_env(tmp_path, free_port())
    with trio.fail_after(DEADLINE):
        async with open_peer("bob", env, tmp_path / "bob") as bob, open_host(home, env, tmp_path / "project") as oc:
            text = await oc.call(action="whoami")
            oc_id = text.split("(", 1)[1].split(")", 1)[0]
            await bob.wait_until(oc_id, online=True)
            bridge = await wait_for_bridge_of(oc.process.pid, "opencode")
            os.kill(bridge, signal.SIGKILL)
            started = time.monotonic()
            await bob.wait_until(oc_id, online=False)
            offline_after = time.monotonic() - started
            assert offline_after < 1.0, f"offline after {offline_after:.2f} s"

            assert (await oc.call(action="whoami")).startswith(f"You are oc-agent ({oc_id})")
            await bob.wait_until(oc_id, online=True)
            new_bridge = await wait_for_bridge_of(oc.process.pid, "opencode")
            assert new_bridge != bridge
            oc.process.kill()
            await oc.process.wait()
            await bob.wait_until(oc_id, online=False)
            await wait_until_gone(new_bridge)
            assert not alive(new_bridge)


# ---------------------------------------------------------------- the plugin in the real OpenCode server


def http_json(url: str, method: str = "GET", body: dict[str, Any] | None = None) -> Any:
    data = None if body is None else json.dumps(body).encode()
    request = urllib.request.Request(url, data=data, method=method, headers={"content-type": "application/json"})
    with urllib.request.urlopen(request, timeout=10) as response:
        return json.loads(response.read())


async def test_the_real_opencode_server_gets_the_push_once_and_the_bridge_leaves_with_it(
    home: Path, tmp_path: Path
) -> None:
    """No model needed: a pushed DM becomes one user message in a session of the real server (which then cannot
    answer: no model); SIGTERM of the server takes its bridge and agent off the mesh.
    """
    assert agent_comms_opencode.configure(home, False)
    env, port = mesh_env(tmp_path, free_port()), free_port()
    project = tmp_path / "project"
    project.mkdir()
    base = f"http://127.0.0.1:{port}"
    server = await trio.lowlevel.open_process(
        [str(harness_cli("opencode")), "serve", "--port", str(port), "--hostname", "127.0.0.1"],
        env={**env, "HOME": str(home), "AGENT_COMMS_NAME": "oc-server"},
        cwd=project,
        stdin=subprocess.DEVNULL,
        stdout=subprocess.DEVNULL,
    )
    try:
        with trio.fail_after(DEADLINE):
            async with open_peer("bob", env, tmp_path / "bob") as bob:
                while True:
                    try:
                        session = await trio.to_thread.run_sync(http_json, f"{base}/session", "POST", {})
                        break
                    except OSError:  # not listening yet
                        await trio.sleep(0.2)
                while not (ids := [a for a in await bob.online_agents() if a.startswith("opencode-")]):  # noqa: ASYNC110
                    await trio.sleep(0.05)
                message_id = (await bob.call(action="dm", target=ids[0], content="hello server"))["data"]["message_id"]
                await wait_for_receipt(bob, message_id, "read")

                async def user_texts() -> list[str]:
                    """The user messages of every session of the server (the plugin picks the session)."""
                    sessions = await trio.to_thread.run_sync(http_json, f"{base}/session")
                    assert session["id"] in [s["id"] for s in sessions]
                    texts = []
                    for each in sessions:
                        messages = await trio.to_thread.run_sync(http_json, f"{base}/session/{each['id']}/message")
                        texts += [
                            part.get("text", "")
                            for message in messages
                            if message["info"]["role"] == "user"
                            for part in message["parts"]
                        ]
                    return texts

                while not await user_texts():  # noqa: ASYNC110 - OpenCode stores an accepted prompt a moment later
                    await trio.sleep(0.1)
                await bob.call(action="whoami")  # a little time for a second copy to show up, if there were one
                assert await user_texts() == [f"[DM from bob ({bob.agent_id})] hello server  [id {message_id}]"]

                bridge = await wait_for_bridge_of(server.pid, "opencode")
                server.send_signal(signal.SIGTERM)
                await server.wait()
                await bob.wait_until(ids[0], online=False)
                await wait_until_gone(bridge)
    finally:
        if server.poll() is None:
            server.kill()
        await server.wait()
