"""Tests for the Codex bridge process, ``agent-comms bridge codex`` / ``agent-comms-codex``.

Testing policy: the bridge is driven the way Codex drives it, by an MCP client over real stdio (the official ``mcp``
SDK's ``stdio_client`` + ``ClientSession``), started as its console entry points, each test on its own free port
and ``AGENT_COMMS_HOME``; bridges started in different directories are different agents. The inbox file and the hook
are checked against what those real bridges write. Every test runs under a deadline.
"""

from __future__ import annotations

import json
import os
import re
import signal
import socket
import subprocess
import sys
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import AsyncExitStack, asynccontextmanager
from pathlib import Path
from typing import Any, TextIO

import mcp.client.stdio
import pytest
import trio
from agent_comms_codex.inbox import inbox_path, mesh_home, read_inbox
from mcp import ClientSession, StdioServerParameters, types
from mcp.client.stdio import stdio_client

from agent_comms.mesh.settings import MeshSettings

DEADLINE = 90
ERROR = re.compile(r"^Error: .+ \((?P<code>[A-Z_]+)\)$")
BIN = Path(sys.executable).parent


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
    assert port != 19876
    return port


def _program(name: str, module: str) -> list[str]:
    beside = BIN / name
    return [str(beside)] if beside.exists() else [sys.executable, "-m", module]


#: The two ways Codex can start the bridge: the CLI sub-command (what setup writes) and the package's own script.
VIA_CLI = [*_program("agent-comms", "agent_comms"), "bridge", "codex"]
VIA_SCRIPT = _program("agent-comms-codex", "agent_comms_codex")


def text_of(result: types.CallToolResult) -> str:
    assert [block.type for block in result.content] == ["text"], result
    block = result.content[0]
    assert isinstance(block, types.TextContent)
    return block.text


class Bridge:
    """One bridge process and the MCP client session driving it."""

    def __init__(self, session: ClientSession, directory: Path, errlog: Path, process: Any) -> None:
        self.session = session
        self.directory = directory
        self.errlog = errlog
        self.process = process
        self.name = ""
        self.id = ""

    async def call(self, **params: Any) -> types.CallToolResult:
        result = await self.session.call_tool("agent_comms", params)
        assert isinstance(result, types.CallToolResult)
        return result

    async def ok(self, **params: Any) -> str:
        result = await self.call(**params)
        assert not result.is_error, (params, text_of(result))
        return text_of(result)

    async def until(self, check: Callable[[str], bool], **params: Any) -> str:
        """Repeat a call until ``check`` accepts its text (the mesh replicates asynchronously)."""
        while not check(text := text_of(await self.call(**params))):  # noqa: ASYNC110 - polling the bridge is the test
            await trio.sleep(0.02)
        return text


class Mesh:
    def __init__(self, tmp_path: Path, stack: AsyncExitStack, spawned: list[Any]) -> None:
        self.tmp_path = tmp_path
        self.env = {"AGENT_COMMS_HOME": str(tmp_path / "home"), "AGENT_COMMS_PORT": str(_free_port())}
        self.stack = stack
        self.spawned = spawned
        self.bridges: list[Bridge] = []

    async def bridge(self, directory: str, command: list[str]) -> Bridge:
        cwd = self.tmp_path / directory
        cwd.mkdir(exist_ok=True)
        errlog = self.tmp_path / f"{directory}.stderr"
        stack = await self.stack.enter_async_context(AsyncExitStack())
        log: TextIO = stack.enter_context(errlog.open("w"))
        params = StdioServerParameters(command=command[0], args=command[1:], env=self.env, cwd=str(cwd))
        before = len(self.spawned)
        read, write = await stack.enter_async_context(stdio_client(params, errlog=log))
        session = await stack.enter_async_context(ClientSession(read, write))
        await session.initialize()
        bridge = Bridge(session, cwd, errlog, self.spawned[before])
        match = re.match(r"You are (?P<name>.+) \((?P<id>[^()]+)\):", await bridge.ok(action="whoami"))
        assert match is not None
        bridge.name, bridge.id = match["name"], match["id"]
        self.bridges.append(bridge)
        return bridge

    def stderr(self) -> str:
        return "\n".join(f"--- {b.errlog.name}\n{b.errlog.read_text()}" for b in self.bridges if b.errlog.exists())


@pytest.fixture
def spawned(monkeypatch: pytest.MonkeyPatch) -> list[Any]:
    """The processes ``stdio_client`` starts (the SDK keeps them private; its spawn function is wrapped, and if the
    SDK renames it this fails loudly)."""
    processes: list[Any] = []
    create: Callable[..., Awaitable[Any]] = mcp.client.stdio._create_platform_compatible_process

    async def recording(*args: Any, **kwargs: Any) -> Any:
        process = await create(*args, **kwargs)
        processes.append(process)
        return process

    monkeypatch.setattr(mcp.client.stdio, "_create_platform_compatible_process", recording)
    return processes


@asynccontextmanager
async def open_mesh(tmp_path: Path, spawned: list[Any]) -> AsyncIterator[Mesh]:
    async with AsyncExitStack() as stack:
        mesh = Mesh(tmp_path, stack, spawned)
        try:
            yield mesh
        except BaseException:
            print(mesh.stderr(), file=sys.stderr)
            raise


def listed(agent: Bridge) -> Callable[[str], bool]:
    return lambda text: f"({agent.id})" in text


def not_listed(agent: Bridge) -> Callable[[str], bool]:
    return lambda text: f"({agent.id})" not in text


def run_hook(event: str, payload: dict[str, Any], env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    """Run ``agent-comms-codex hook EVENT`` as Codex does: the JSON on stdin, the answer on stdout."""
    return subprocess.run(
        [*VIA_SCRIPT, "hook", event],
        input=json.dumps(payload),
        capture_output=True,
        text=True,
        env={**os.environ, **env},
        timeout=30,
        check=False,
    )


def post_tool_use(cwd: Path, tool: str = "exec_command") -> dict[str, Any]:
    """A PostToolUse input with every field Codex's schema requires."""
    return {
        "session_id": "0199-session",
        "transcript_path": None,
        "cwd": str(cwd),
        "hook_event_name": "PostToolUse",
        "model": "gpt-test",
        "permission_mode": "default",
        "turn_id": "turn-1",
        "tool_name": tool,
        "tool_use_id": "call-1",
        "tool_input": {"cmd": "ls"},
        "tool_response": "ok",
    }


# ---------------------------------------------------------------------------------------------------- tests


def test_the_inbox_lives_in_the_mesh_home_the_core_uses(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("AGENT_COMMS_HOME", str(tmp_path / "h"))
    assert mesh_home() == MeshSettings.from_env().home == tmp_path / "h"
    monkeypatch.delenv("AGENT_COMMS_HOME")
    assert mesh_home() == MeshSettings.from_env().home


async def test_the_tool_is_listed_with_its_schema_and_the_agent_is_a_codex_agent(
    tmp_path: Path, spawned: list[Any]
) -> None:
    with trio.fail_after(DEADLINE):
        async with open_mesh(tmp_path, spawned) as mesh:
            bridge = await mesh.bridge("web", VIA_CLI)
            [tool] = (await bridge.session.list_tools()).tools
            assert tool.name == "agent_comms"
            schema = tool.input_schema
            assert schema["required"] == ["action"]
            assert len(schema["properties"]["action"]["enum"]) == 15
            assert {"dm", "send", "read_room", "whoami"} <= set(schema["properties"]["action"]["enum"])
            for name in ("name", "room", "target", "content", "agent", "since", "replyTo", "streamingBehavior"):
                assert name in schema["properties"], name
            assert bridge.name == "codex-web"
            assert bridge.id.startswith("codex-")
            assert "harness codex" in await bridge.ok(action="whoami")


async def test_a_dm_arrives_in_the_next_result_and_the_hooks_announce_it_first(
    tmp_path: Path, spawned: list[Any]
) -> None:
    with trio.fail_after(DEADLINE):
        async with open_mesh(tmp_path, spawned) as mesh:
            alice = await mesh.bridge("alice", VIA_SCRIPT)
            bob = await mesh.bridge("bob", VIA_CLI)
            await alice.until(listed(bob), action="list_agents")
            bob_inbox = inbox_path(bob.process.pid, mesh.env)
            assert read_inbox(bob_inbox) is not None  # written from the start, empty

            await alice.ok(action="dm", target=bob.name, content="can you review the schema change?")
            # Between tool calls, the bridge lists the waiting DM in its inbox file ...
            with trio.fail_after(5):
                while not (inbox := read_inbox(bob_inbox)) or not inbox["waiting"]:  # noqa: ASYNC110
                    await trio.sleep(0.02)
            assert inbox["agent_id"] == bob.id
            assert inbox["cwd"] == str(bob.directory)
            [event] = inbox["events"]
            assert event["type"] == "dm"
            assert "can you review the schema change?" in event["line"]
            # ... which the real hook program reads and announces to the model.
            done = run_hook("PostToolUse", post_tool_use(bob.directory), mesh.env)
            assert done.returncode == 0, done.stderr
            context = json.loads(done.stdout)["hookSpecificOutput"]["additionalContext"]
            assert "can you review the schema change?" in context
            assert f"{bob.name} ({bob.id})" in context
            # The next tool result carries the DM, once.
            text = await bob.ok(action="whoami")
            assert "--- 1 new event(s) ---" in text
            assert f"[DM from {alice.name} ({alice.id})] can you review the schema change?" in text
            assert "can you review" not in await bob.ok(action="whoami")
            # Drained: the inbox is empty again, and the hook has nothing to say.
            with trio.fail_after(5):
                while (inbox := read_inbox(bob_inbox)) is None or inbox["waiting"]:  # noqa: ASYNC110
                    await trio.sleep(0.02)
            assert run_hook("UserPromptSubmit", {**post_tool_use(bob.directory), "prompt": "hi"}, mesh.env).stdout == ""
            # Alice learns it was read (the receipt is an event drained into her results).
            await alice.until(lambda text: "read" in text and bob.name in text, action="whoami")


def stop(cwd: Path, active: bool) -> dict[str, Any]:
    """A Stop input as Codex sends it when a turn ends (``active``: already continuing because of a Stop hook)."""
    payload = {
        **post_tool_use(cwd),
        "hook_event_name": "Stop",
        "stop_hook_active": active,
        "last_assistant_message": "ok",
    }
    for key in ("tool_name", "tool_use_id", "tool_input", "tool_response"):
        payload.pop(key)
    return payload


async def test_a_dm_waiting_when_the_turn_ends_continues_it_once_and_is_read_by_the_next_call(
    tmp_path: Path, spawned: list[Any]
) -> None:
    """The end of a turn as ``codex exec`` runs it (its custom providers get no MCP tools, so the tool is driven over
    stdio here): the Stop hook continues the turn for a DM, never twice and never for ``info``; the model's next
    call reads the DM and its sender gets ``read``."""
    with trio.fail_after(DEADLINE):
        async with open_mesh(tmp_path, spawned) as mesh:
            alice = await mesh.bridge("alice", VIA_SCRIPT)
            bob = await mesh.bridge("bob", VIA_CLI)
            await alice.until(listed(bob), action="list_agents")
            bob_inbox = inbox_path(bob.process.pid, mesh.env)

            await alice.ok(action="dm", target=bob.name, content="fyi only", streamingBehavior="info")
            with trio.fail_after(5):
                while not (inbox := read_inbox(bob_inbox)) or not inbox["waiting"]:  # noqa: ASYNC110
                    await trio.sleep(0.02)
            assert run_hook("Stop", stop(bob.directory, False), mesh.env).stdout == ""  # info: the turn ends

            sent = await alice.ok(action="dm", target=bob.name, content="one more thing before you stop")
            with trio.fail_after(5):
                while len((read_inbox(bob_inbox) or {}).get("events", [])) < 2:  # noqa: ASYNC110
                    await trio.sleep(0.02)
            assert run_hook("Stop", stop(bob.directory, True), mesh.env).stdout == ""  # already continuing
            done = run_hook("Stop", stop(bob.directory, False), mesh.env)
            assert done.returncode == 0, done.stderr
            answer = json.loads(done.stdout)
            assert answer["decision"] == "block"
            assert "one more thing before you stop" in answer["reason"]
            assert run_hook("Stop", stop(bob.directory, False), mesh.env).stdout == ""  # announced once

            text = await bob.ok(action="whoami")  # the continued turn's call
            assert "one more thing before you stop" in text
            assert "fyi only" in text
            message_id = sent.split("message id ", 1)[1].split(".")[0]
            await alice.until(lambda t: "read" in t and message_id in t, action="whoami")


async def test_errors_are_is_error_results(tmp_path: Path, spawned: list[Any]) -> None:
    with trio.fail_after(DEADLINE):
        async with open_mesh(tmp_path, spawned) as mesh:
            bridge = await mesh.bridge("solo", VIA_SCRIPT)
            for params, code in [
                ({"action": "fly"}, "INVALID_PARAMS"),
                ({"action": "dm", "target": "nobody-here", "content": "hi"}, "AGENT_NOT_FOUND"),
                ({"action": "join_room", "room": "nowhere"}, "ROOM_NOT_FOUND"),
                ({"action": "send"}, "INVALID_PARAMS"),
            ]:
                result = await bridge.call(**params)
                assert result.is_error, (params, text_of(result))
                match = ERROR.match(text_of(result).splitlines()[0])
                assert match is not None, (params, text_of(result))
                assert match["code"] == code, (params, text_of(result))
            other = await bridge.session.call_tool("something_else", {})
            assert other.is_error


async def test_sigkill_of_a_bridge_takes_its_agent_offline_within_a_second(tmp_path: Path, spawned: list[Any]) -> None:
    with trio.fail_after(DEADLINE):
        async with open_mesh(tmp_path, spawned) as mesh:
            observer = await mesh.bridge("observer", VIA_CLI)
            victim = await mesh.bridge("victim", VIA_SCRIPT)
            await observer.until(listed(victim), action="list_agents")
            victim_inbox = inbox_path(victim.process.pid, mesh.env)
            assert victim_inbox.exists()
            start = trio.current_time()
            victim.process.kill()
            await observer.until(not_listed(victim), action="list_agents")
            elapsed = trio.current_time() - start
            print(f"offline after SIGKILL in {elapsed * 1000:.0f} ms")
            assert elapsed < 1.0
            # The file a crashed bridge leaves behind is ignored (and cleared) by the hooks.
            await victim.process.wait()
            done = run_hook("PostToolUse", post_tool_use(victim.directory), mesh.env)
            assert (done.returncode, done.stdout) == (0, "")
            assert not victim_inbox.exists()


@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGHUP, signal.SIGINT])
async def test_a_signal_leaves_the_mesh_at_once_and_exits_0(
    tmp_path: Path, spawned: list[Any], signum: signal.Signals
) -> None:
    with trio.fail_after(DEADLINE):
        async with open_mesh(tmp_path, spawned) as mesh:
            observer = await mesh.bridge("observer", VIA_SCRIPT)
            leaver = await mesh.bridge("leaver", VIA_CLI)
            await observer.until(listed(leaver), action="list_agents")
            leaver_inbox = inbox_path(leaver.process.pid, mesh.env)
            leaver.process.send_signal(signum)
            with trio.fail_after(3):
                await observer.until(not_listed(leaver), action="list_agents")
                while leaver.process.returncode is None:  # noqa: ASYNC110 - the SDK's client reaps it
                    await trio.sleep(0.01)
            assert leaver.process.returncode == 0, leaver.errlog.read_text()
            assert not leaver_inbox.exists()


def _running(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except FileNotFoundError:
        return False
    except OSError:
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return False
        return True
    return state not in ("Z", "X")


async def test_the_bridge_exits_when_codex_dies(tmp_path: Path, spawned: list[Any]) -> None:
    """Codex killed (SIGKILL) without closing the bridge's stdin: the bridge notices its parent is gone and leaves."""
    with trio.fail_after(DEADLINE):
        async with open_mesh(tmp_path, spawned) as mesh:
            observer = await mesh.bridge("observer", VIA_CLI)
            pid_file = tmp_path / "bridge.pid"
            codex_stand_in = (
                "import subprocess, sys; "
                f"bridge = subprocess.Popen({VIA_SCRIPT!r}); "
                f"open({str(pid_file)!r}, 'w').write(str(bridge.pid)); "
                "bridge.wait()"
            )
            (tmp_path / "orphan").mkdir()
            with (tmp_path / "orphan.stderr").open("w") as errlog:
                parent = await trio.lowlevel.open_process(
                    [sys.executable, "-c", codex_stand_in],
                    stdin=subprocess.PIPE,  # held open: no end of input for the bridge
                    stdout=subprocess.DEVNULL,
                    stderr=errlog,
                    cwd=tmp_path / "orphan",
                    env={**os.environ, **mesh.env},
                )
                try:
                    await observer.until(lambda text: "codex-orphan (" in text, action="list_agents")
                    bridge_pid = int(pid_file.read_text())
                    parent.kill()
                    await parent.wait()
                    with trio.fail_after(10):
                        await observer.until(lambda text: "codex-orphan (" not in text, action="list_agents")
                        while _running(bridge_pid):  # noqa: ASYNC110 - another process's state
                            await trio.sleep(0.05)
                finally:
                    if parent.returncode is None:
                        parent.kill()
                    if pid_file.exists() and _running(pid := int(pid_file.read_text())):
                        os.kill(pid, signal.SIGKILL)
            assert "its parent process" in (tmp_path / "orphan.stderr").read_text()
            assert not inbox_path(bridge_pid, mesh.env).exists()


async def test_bad_arguments_are_usage_errors(tmp_path: Path) -> None:
    env = {**os.environ, "AGENT_COMMS_HOME": str(tmp_path / "home"), "AGENT_COMMS_PORT": str(_free_port())}
    for args in (["--bogus"], ["--option", "novalue"], ["--harness-pid", "abc"], ["--option", "max_events=0"]):
        done = await trio.run_process(
            [*VIA_SCRIPT, *args],
            stdin=subprocess.DEVNULL,
            capture_stdout=True,
            capture_stderr=True,
            env=env,
            check=False,
        )
        assert done.returncode == 2, (args, done.stderr)
        assert b"agent-comms-codex" in done.stderr
