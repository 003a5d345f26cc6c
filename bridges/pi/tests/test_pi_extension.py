"""Tests for agent-comms-pi: the setup hooks with the real ``pi`` CLI, and the extension running in the real pi.

Testing policy: everything runs for real (the ``pi`` CLI from npm with a throwaway ``HOME``, the extension that
setup wrote, the ``agent-comms bridge pi`` it starts, a second agent as a ``agent-comms bridge jsonl`` process, a
mesh on a free port) except the model: ``fake_model.ts`` is a pi extension that registers a scripted model (pi-ai's
faux provider), because no real LLM can run here. pi is driven through its RPC mode (``--mode rpc``), the same
session loop as the terminal UI. Every test that does I/O runs under a deadline.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import agent_comms_pi
import pytest
import trio

from agent_comms.configure import BACKUP_SUFFIX, run_harness_cli
from agent_comms.hookspecs import Bridge, PushPath
from agent_comms.testing.harnesses import harness_cli
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

FAKE_MODEL = Path(__file__).with_name("fake_model.ts")

#: pi takes several seconds to start on a loaded 2-core machine.
DEADLINE = 120


@pytest.fixture
def pi_home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A throwaway home, and the real ``pi`` first on ``PATH`` (where the setup hooks look for it)."""
    pi = harness_cli("pi")
    monkeypatch.setenv("PATH", f"{pi.parent}{os.pathsep}{os.environ.get('PATH', '')}")
    home = tmp_path / "home"
    home.mkdir()
    return home


def pi_list(home: Path) -> str:
    result = run_harness_cli(["pi", "list"], home)
    assert result.returncode == 0, result.stderr
    return result.stdout


# ---------------------------------------------------------------- setup, status, remove


def test_setup_is_idempotent_reversible_and_keeps_the_users_settings(pi_home: Path) -> None:
    settings = pi_home / ".pi" / "agent" / "settings.json"
    settings.parent.mkdir(parents=True)
    user_package = pi_home / "mine.ts"
    user_package.write_text("export default function () {}\n")
    settings.write_text(json.dumps({"theme": "light", "packages": ["../../mine.ts"]}, indent=2) + "\n")
    extension = agent_comms_pi.extension_path(pi_home)

    detected = agent_comms_pi.detect(pi_home)
    assert detected is not None
    assert detected.installed, detected
    assert detected.detail.startswith("pi 0.")
    assert agent_comms_pi.status(pi_home) == "not configured"

    planned = agent_comms_pi.configure(pi_home, True)
    assert planned is not None
    assert len(planned) == 2
    assert not extension.exists()  # a dry run touches nothing
    assert str(extension) not in pi_list(pi_home)

    made = agent_comms_pi.configure(pi_home, False)
    assert made == planned
    assert agent_comms_pi.configure(pi_home, False) == []  # idempotent
    listed = pi_list(pi_home)
    assert str(extension) in listed
    assert str(user_package) in listed
    assert agent_comms_pi.status(pi_home) == f"configured: extension {extension}"
    source = extension.read_text()
    assert "/*AGENT_COMMS_CONFIG*/ {" in source
    assert '"bridge", "pi"]' in source
    kept = json.loads(settings.read_text())
    assert kept["theme"] == "light"
    assert "../../mine.ts" in kept["packages"]

    assert agent_comms_pi.remove(pi_home, True) is not None
    assert extension.exists()
    assert str(extension) in pi_list(pi_home)
    removed = agent_comms_pi.remove(pi_home, False)
    assert removed is not None
    assert len(removed) == 2
    assert agent_comms_pi.remove(pi_home, False) == []
    listed = pi_list(pi_home)
    assert str(extension) not in listed
    assert str(user_package) in listed
    assert not extension.exists()
    assert not extension.parent.exists()
    assert json.loads(settings.read_text()) == {"theme": "light", "packages": ["../../mine.ts"]}
    assert agent_comms_pi.status(pi_home) == "not configured"
    assert not list(extension.parent.parent.glob(f"*{BACKUP_SUFFIX}*"))  # pi's own CLI edited its settings


def test_the_plugin_registers_only_the_pi_bridge(tmp_path: Path) -> None:
    registered: list[Bridge] = []
    agent_comms_pi.register_bridges(registered.append)
    assert registered == [agent_comms_pi.BRIDGE]
    bridge = registered[0]
    assert (bridge.name, bridge.package, bridge.info.push) == ("pi", "agent-comms-pi", True)
    assert bridge.push_path == PushPath.RELAY | PushPath.CONTINUE_TURN | PushPath.TOOL_RESULTS
    setup = (bridge.detect, bridge.configure, bridge.status, bridge.remove)
    assert setup == (agent_comms_pi.detect, agent_comms_pi.configure, agent_comms_pi.status, agent_comms_pi.remove)
    assert not any(tmp_path.iterdir())


# ---------------------------------------------------------------- the extension in the real pi


class Pi(Lines):
    """The real pi in RPC mode, with the scripted model."""

    _next_id = 0

    async def command(self, **command: Any) -> dict[str, Any]:
        self._next_id += 1
        request_id = f"req-{self._next_id}"
        await self.send({"id": request_id, **command})
        return await self.wait_for(lambda m: m.get("type") == "response" and m.get("id") == request_id)

    async def tool_call(self, **params: Any) -> dict[str, Any]:
        """Have the model call agent_comms with ``params``; the tool's result."""
        response = await self.command(type="prompt", message="CALL " + json.dumps(params))
        assert response["success"], response
        end = await self.wait_for(lambda m: m.get("type") == "tool_execution_end")
        await self.wait_for(lambda m: m.get("type") == "agent_end")
        result: dict[str, Any] = end["result"]
        result["isError"] = end["isError"]
        return result

    async def pushed(self) -> list[str]:
        """The texts of the agent-comms messages in the session, in order."""
        messages = (await self.command(type="get_messages"))["data"]["messages"]
        return [m["content"] for m in messages if m.get("role") == "custom" and m.get("customType") == "agent-comms"]


@asynccontextmanager
async def open_pi(home: Path, env: dict[str, str], cwd: Path, model_log: Path) -> AsyncIterator[Pi]:
    await trio.Path(cwd).mkdir(parents=True, exist_ok=True)
    argv = [str(harness_cli("pi")), "--mode", "rpc", "--no-session", "--offline"]
    argv += ["--provider", "fake", "--model", "scripted", "-e", str(FAKE_MODEL)]
    process = await trio.lowlevel.open_process(
        argv,
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        env={**env, "HOME": str(home), "FAKE_MODEL_LOG": str(model_log), "AGENT_COMMS_NAME": "pi-agent"},
        cwd=cwd,
    )
    try:
        async with trio.open_nursery() as nursery:
            pi = Pi(process)
            nursery.start_soon(pi.read_all)
            try:
                yield pi
            except BaseException:
                shown = [m for m in pi.seen if m.get("type") not in ("message_update", "message_start")][-20:]
                lines = [json.dumps(m)[:300] for m in shown]
                print("--- the last lines from pi ---", *lines, sep="\n", file=sys.stderr)
                raise
            nursery.cancel_scope.cancel()
    finally:
        if process.poll() is None:
            process.kill()
        with trio.move_on_after(10):
            await process.wait()


def model_saw(model_log: Path, needle: str) -> int:
    """How many model calls had ``needle`` in their newest message."""
    if not model_log.exists():
        return 0
    return sum(needle in json.loads(line)["text"] for line in model_log.read_text().splitlines())


async def wait_for_receipt(peer: Peer, message_id: str, status: str) -> None:
    await peer.wait_for(
        lambda m: (
            m.get("type") == "event"
            and m["event"]["type"] == "delivery_status"
            and m["event"]["message_id"] == message_id
            and m["event"]["status"] == status
        )
    )


async def test_the_real_pi_sends_receives_and_is_woken_once_per_message(pi_home: Path, tmp_path: Path) -> None:
    """Tool calls both ways, a pushed DM wakes the idle session exactly once, read only once shown, quit = offline."""
    assert agent_comms_pi.configure(pi_home, False)
    env, model_log = mesh_env(tmp_path, free_port()), tmp_path / "model.jsonl"
    with trio.fail_after(DEADLINE):
        async with (
            open_peer("bob", env, tmp_path / "bob") as bob,
            open_pi(pi_home, env, tmp_path / "project", model_log) as pi,
        ):
            whoami = await pi.tool_call(action="whoami")
            assert not whoami["isError"]
            pi_id = whoami["details"]["data"]["id"]
            assert whoami["content"][0]["text"].startswith(f"You are pi-agent ({pi_id}): active, visible, harness pi")
            assert pi_id.startswith("pi-")

            # send: the model's DM reaches bob
            while True:
                sent = await pi.tool_call(action="dm", target="bob", content="hello bob")
                if not sent["isError"]:
                    break
                assert "(AGENT_NOT_FOUND)" in sent["content"][0]["text"]  # pi's replica is still catching up
            dm = await bob.wait_for(lambda m: m.get("type") == "event" and m["event"]["type"] == "dm")
            assert (dm["event"]["sender"], dm["event"]["content"]) == (pi_id, "hello bob")

            # the bridge's errors are error results in pi (and pi's own schema check stops what is no action)
            bad = await pi.tool_call(action="join_room", room="nowhere")
            assert bad["isError"]
            assert bad["content"][0]["text"].endswith("(ROOM_NOT_FOUND)")
            invalid = await pi.tool_call(action="teleport")
            assert invalid["isError"]
            assert "teleport" in invalid["content"][0]["text"]

            # receive: bob's DM is pushed into the idle session, wakes the model, and is read only once shown
            message_id = (await bob.call(action="dm", target=pi_id, content="please review #7"))["data"]["message_id"]
            await wait_for_receipt(bob, message_id, "read")
            await pi.wait_for(lambda m: m.get("type") == "agent_end")  # the turn the DM triggered
            pushed = await pi.pushed()
            assert [text for text in pushed if "please review #7" in text] == [
                f"[DM from bob ({bob.agent_id})] please review #7  [id {message_id}]"
            ]
            assert model_saw(model_log, "please review #7") == 1

            # once and only once: a second DM later, and the first is still there once
            second = (await bob.call(action="dm", target=pi_id, content="second note"))["data"]["message_id"]
            await wait_for_receipt(bob, second, "read")
            await pi.wait_for(lambda m: m.get("type") == "agent_end")
            pushed = await pi.pushed()
            assert sum("please review #7" in text for text in pushed) == 1
            assert sum("second note" in text for text in pushed) == 1
            assert model_saw(model_log, "please review #7") == 1

            # pi quits (end of its input): session_shutdown takes the agent offline at once
            assert pi_id in await bob.online_agents()
            bridge = await wait_for_bridge_of(pi.process.pid, "pi")
            assert pi.process.stdin is not None
            await pi.process.stdin.aclose()
            assert await pi.process.wait() == 0
            started = time.monotonic()
            await bob.wait_until(pi_id, online=False)
            assert time.monotonic() - started < 1.0
            assert not alive(bridge)


async def test_killed_bridge_is_offline_within_a_second_and_restarts(pi_home: Path, tmp_path: Path) -> None:
    """SIGKILL of the bridge: others see the agent offline within 1 s; pi's next tool call starts a new bridge.

    Then SIGKILL of pi itself: its bridge notices (``--harness-pid``) and leaves the mesh.
    """
    assert agent_comms_pi.configure(pi_home, False)
    env, model_log = mesh_env(tmp_path, free_port()), tmp_path / "model.jsonl"
    with trio.fail_after(DEADLINE):
        async with (
            open_peer("bob", env, tmp_path / "bob") as bob,
            open_pi(pi_home, env, tmp_path / "project", model_log) as pi,
        ):
            pi_id = (await pi.tool_call(action="whoami"))["details"]["data"]["id"]
            await bob.wait_until(pi_id, online=True)
            bridge = await wait_for_bridge_of(pi.process.pid, "pi")
            os.kill(bridge, signal.SIGKILL)
            started = time.monotonic()
            await bob.wait_until(pi_id, online=False)
            offline_after = time.monotonic() - started
            assert offline_after < 1.0, f"offline after {offline_after:.2f} s"

            again = await pi.tool_call(action="whoami")  # a new bridge, the same identity
            assert not again["isError"], again
            assert again["details"]["data"]["id"] == pi_id
            await bob.wait_until(pi_id, online=True)

            new_bridge = await wait_for_bridge_of(pi.process.pid, "pi")
            assert new_bridge != bridge
            pi.process.kill()
            await pi.process.wait()
            await bob.wait_until(pi_id, online=False)
            await wait_until_gone(new_bridge)


# ---------------------------------------------------------------- a message pi did not take


PI_HOST = Path(__file__).with_name("pi_host.mjs")


async def refusing(host: Lines, value: bool) -> None:
    """Make the host's sendMessage throw (or take messages again), and wait until that is in force: the events the
    extension gets come on another pipe than the host's commands, so without the wait an event sent after the
    command may still meet the old setting."""
    await host.send({"cmd": "refuse", "value": value})
    await host.wait_for(lambda m: m.get("type") == "refusing" and m["value"] is value)


async def test_a_message_pi_did_not_take_comes_with_the_next_tool_result(pi_home: Path, tmp_path: Path) -> None:
    """When pi.sendMessage throws, the DM stays unread and is appended, once, to the next agent_comms result; only
    then does its sender get read. pi offers no way to make sendMessage fail, so ``pi_host.mjs`` stands in for pi
    around the real extension file (loaded with pi's own jiti); the bridge, the mesh and the sender are real."""
    extension = agent_comms_pi.extension_path(pi_home)
    extension.parent.mkdir(parents=True)
    extension.write_text(agent_comms_pi.extension_source())
    pi_package = harness_cli("pi").resolve().parents[1] / "package.json"
    env = mesh_env(tmp_path, free_port())
    project = tmp_path / "project"
    project.mkdir()
    with trio.fail_after(DEADLINE):
        async with open_peer("bob", env, tmp_path / "bob") as bob:
            process = await trio.lowlevel.open_process(
                ["node", str(PI_HOST), str(extension), str(pi_package)],
                stdin=subprocess.PIPE, stdout=subprocess.PIPE, env={**env, "AGENT_COMMS_NAME": "pi-agent"}, cwd=project,
            )  # fmt: skip
            try:
                async with trio.open_nursery() as nursery:
                    host = Lines(process)
                    nursery.start_soon(host.read_all)
                    await host.send({"cmd": "start", "cwd": str(project)})
                    await host.wait_for(lambda m: m.get("type") == "started")

                    async def call(number: int, **params: Any) -> str:
                        await host.send({"cmd": "call", "id": number, "params": params})
                        answer = await host.wait_for(lambda m: m.get("type") == "result" and m["id"] == number)
                        assert not answer["isError"], answer
                        text: str = answer["text"]
                        return text

                    whoami = await call(1, action="whoami")
                    pi_id = whoami.split("(", 1)[1].split(")", 1)[0]
                    await bob.wait_until(pi_id, online=True)
                    await refusing(host, True)
                    sent = await bob.call(action="dm", target=pi_id, content="did you get this?")
                    message_id = sent["data"]["message_id"]
                    refused = await host.wait_for(lambda m: m.get("type") == "refused")
                    assert "did you get this?" in refused["text"]
                    await wait_for_receipt(bob, message_id, "delivered")

                    await refusing(host, False)
                    text = await call(2, action="whoami")
                    assert "--- 1 new event(s) ---" in text, text
                    assert f"[DM from bob ({bob.agent_id})] did you get this?  [id {message_id}]" in text
                    await wait_for_receipt(bob, message_id, "read")
                    assert "did you get this?" not in await call(3, action="whoami")  # once
                    assert not [m for m in host.seen if m.get("type") == "sent" and "did you get" in m["text"]]

                    await host.send({"cmd": "shutdown"})
                    await host.wait_for(lambda m: m.get("type") == "stopped")
                    nursery.cancel_scope.cancel()
            finally:
                process.kill()
                await process.wait()


def waiting_limit() -> int:
    """The extension's documented bound on the events it keeps for the next tool result."""
    source = (Path(agent_comms_pi.__file__).parent / "extension.ts").read_text()
    return int(source.split("export const WAITING_LIMIT = ", 1)[1].split(";", 1)[0])


@asynccontextmanager
async def open_host(pi_home: Path, env: dict[str, str], project: Path) -> AsyncIterator[Lines]:
    """``pi_host.mjs`` (a stand-in for pi whose sendMessage can be made to throw) around the real extension."""
    extension = agent_comms_pi.extension_path(pi_home)
    extension.parent.mkdir(parents=True)
    extension.write_text(agent_comms_pi.extension_source())
    pi_package = harness_cli("pi").resolve().parents[1] / "package.json"
    await trio.Path(project).mkdir()
    process = await trio.lowlevel.open_process(
        ["node", str(PI_HOST), str(extension), str(pi_package)],
        stdin=subprocess.PIPE, stdout=subprocess.PIPE, env={**env, "AGENT_COMMS_NAME": "pi-agent"}, cwd=project,
    )  # fmt: skip
    try:
        async with trio.open_nursery() as nursery:
            host = Lines(process)
            nursery.start_soon(host.read_all)
            await host.send({"cmd": "start", "cwd": str(project)})
            await host.wait_for(lambda m: m.get("type") == "started")
            try:
                yield host
            except BaseException:
                lines = [json.dumps(m)[:300] for m in host.seen[-60:]]
                print("--- the last lines from the host ---", *lines, sep="\n", file=sys.stderr)
                raise
            await host.send({"cmd": "shutdown"})
            await host.wait_for(lambda m: m.get("type") == "stopped")
            nursery.cancel_scope.cancel()
    finally:
        process.kill()
        await process.wait()


async def host_call(host: Lines, number: int, **params: Any) -> str:
    await host.send({"cmd": "call", "id": number, "params": params})
    answer = await host.wait_for(lambda m: m.get("type") == "result" and m["id"] == number)
    assert not answer["isError"], answer
    text: str = answer["text"]
    return text


def times_seen(host: Lines, kind: str, needle: str) -> int:
    return sum(1 for m in host.seen if m.get("type") == kind and needle in m["text"])


async def test_the_events_pi_did_not_take_are_bounded_and_the_rest_come_next(pi_home: Path, tmp_path: Path) -> None:
    """More DMs than the limit while pi refuses them: the next tool result carries exactly the limit, says more
    wait, and the rest come after it (pushed, as pi takes messages again); every DM reaches the model once and is
    read. (pi_host.mjs stands in for pi: pi has no way to make sendMessage fail.)"""
    limit = waiting_limit()
    count = limit + 5
    env = mesh_env(tmp_path, free_port())
    with trio.fail_after(DEADLINE * 2):
        async with (
            open_peer("bob", env, tmp_path / "bob") as bob,
            open_host(pi_home, env, tmp_path / "project") as host,
        ):
            pi_id = (await host_call(host, 1, action="whoami")).split("(", 1)[1].split(")", 1)[0]
            await bob.wait_until(pi_id, online=True)
            await refusing(host, True)
            notes = [f"note {number:03d}." for number in range(count)]
            ids = [(await bob.call(action="dm", target=pi_id, content=note))["data"]["message_id"] for note in notes]
            await host.wait_for(
                lambda _: all(times_seen(host, "refused", note) + times_seen(host, "sent", note) for note in notes)
            )
            assert not [note for note in notes if times_seen(host, "sent", note)], "pi took a DM while refusing"

            await refusing(host, False)
            text = await host_call(host, 2, action="whoami")
            assert f"--- {limit} new event(s) ---" in text, text
            assert "(more events wait: they come next)" in text
            in_result = [note for note in notes if note in text]
            assert len(in_result) >= limit - 2, text  # bob's presence may take a place or two
            rest = [note for note in notes if note not in in_result]
            await host.wait_for(lambda _: all(times_seen(host, "sent", note) for note in rest))
            for message_id in ids:
                await wait_for_receipt(bob, message_id, "read")
            later = await host_call(host, 3, action="whoami")
            for note in notes:  # each reached the model exactly once
                assert (text + later).count(note) + times_seen(host, "sent", note) == 1, note


async def test_an_event_written_again_waits_once(pi_home: Path, tmp_path: Path) -> None:
    """A new bridge writes the unread DMs again: the extension keeps each once, and the next tool result carries
    each once. (pi_host.mjs stands in for pi: pi has no way to make sendMessage fail.)"""
    env = mesh_env(tmp_path, free_port())
    with trio.fail_after(DEADLINE * 2):
        async with (
            open_peer("bob", env, tmp_path / "bob") as bob,
            open_host(pi_home, env, tmp_path / "project") as host,
        ):
            pi_id = (await host_call(host, 1, action="whoami")).split("(", 1)[1].split(")", 1)[0]
            await bob.wait_until(pi_id, online=True)
            await refusing(host, True)
            notes = ["first note.", "second note.", "third note."]
            ids = [(await bob.call(action="dm", target=pi_id, content=note))["data"]["message_id"] for note in notes]
            await host.wait_for(lambda _: all(times_seen(host, "refused", note) == 1 for note in notes))

            bridge = await wait_for_bridge_of(host.process.pid, "pi")
            os.kill(bridge, signal.SIGKILL)
            await wait_until_gone(bridge)
            await bob.wait_until(pi_id, online=False)
            while True:  # session_start starts a bridge once the extension has seen the old one exit
                await host.send({"cmd": "start", "cwd": str(tmp_path / "project")})
                await host.wait_for(lambda m: m.get("type") == "started")
                with trio.move_on_after(2):
                    if await wait_for_bridge_of(host.process.pid, "pi") != bridge:
                        break
            await host.wait_for(lambda _: all(times_seen(host, "refused", note) == 2 for note in notes))

            await refusing(host, False)
            text = await host_call(host, 2, action="whoami")
            for note in notes:
                assert text.count(note) == 1, text
            for message_id in ids:
                await wait_for_receipt(bob, message_id, "read")
