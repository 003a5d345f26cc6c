"""Tests for the generic MCP bridge, ``agent-comms-mcp``.

Testing policy: the bridge is driven the way an MCP client drives it, by the official ``mcp`` SDK's client
(``stdio_client`` + ``ClientSession``) over real stdio, started as its console entry point, on a free port with a
fresh ``AGENT_COMMS_HOME``; two bridges started in different directories are two agents. The plugin hooks, the
schema and the drain ledger are also tested in-process (the ledger on an in-memory mesh). Every test that does I/O
runs under a deadline.
"""

from __future__ import annotations

import inspect
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import AsyncExitStack, asynccontextmanager
from pathlib import Path
from typing import Any, TextIO

import jsonschema  # type: ignore[import-untyped]  # comes with the mcp SDK, which validates with it
import mcp.client.stdio
import pluggy
import pytest
import trio
from agent_comms_mcp import plugin
from agent_comms_mcp.jsonrpc import (
    Batch,
    ErrorResponse,
    Malformed,
    Notification,
    Request,
    Response,
    RpcError,
    find_id,
)
from agent_comms_mcp.server import INPUT_SCHEMA, TOOL_DESCRIPTION, DrainLedger
from agent_comms_mcp.stdio import parse_line
from mcp import ClientSession, StdioServerParameters, types
from mcp.client.stdio import stdio_client

from agent_comms.actions import PARAMETERS, build_action
from agent_comms.errors import CommsError
from agent_comms.hookspecs import BridgeOptions, HarnessInfo
from agent_comms.plugins import PluginError, find_bridge, find_harness, get_plugin_manager, list_plugins
from agent_comms.store import PRESENCE_QUIET_S
from agent_comms.testing import open_in_memory_mesh, said_receipt

#: Deadline of a whole test that starts bridge processes (each takes a second or two to import the SDK and join).
DEADLINE = 90
ERROR = re.compile(r"^Error: .+ \((?P<code>[A-Z_]+)\)$")


def _core_actions() -> list[str]:
    """The actions the core accepts, in its order (as its own error message lists them)."""
    with pytest.raises(CommsError) as excinfo:
        build_action({"action": "?"})
    return excinfo.value.message.split("one of: ", 1)[1].split(", ")


ACTIONS = _core_actions()


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
    assert port != 19876
    return port


def _entry_point() -> list[str]:
    """How to start ``agent-comms-mcp``: the installed console script, else ``python -m agent_comms_mcp``."""
    beside = Path(sys.executable).with_name("agent-comms-mcp")
    if beside.exists():
        return [str(beside)]
    found = shutil.which("agent-comms-mcp")
    return [found] if found else [sys.executable, "-m", "agent_comms_mcp"]


def _cli() -> list[str]:
    beside = Path(sys.executable).with_name("agent-comms")
    return [str(beside)] if beside.exists() else [sys.executable, "-m", "agent_comms"]


def text_of(result: types.CallToolResult) -> str:
    assert [block.type for block in result.content] == ["text"], result
    block = result.content[0]
    assert isinstance(block, types.TextContent)
    return block.text


class Bridge:
    """One ``agent-comms-mcp`` process and the MCP client session that drives it."""

    def __init__(self, session: ClientSession, stack: AsyncExitStack, name: str, errlog: Path) -> None:
        self.session = session
        self.stack = stack
        self.name = name
        self.errlog = errlog
        #: every tool result text this client has seen, oldest first (events come appended to them)
        self.seen: list[str] = []
        self.process: Any = None
        self.id = ""
        #: the server's instructions, from its answer to ``initialize``
        self.instructions = ""

    async def call(self, **params: Any) -> types.CallToolResult:
        result = await self.session.call_tool("agent_comms", params)
        assert isinstance(result, types.CallToolResult)
        self.seen.append(text_of(result))
        return result

    async def ok(self, **params: Any) -> str:
        """A call that must succeed; its text."""
        result = await self.call(**params)
        assert not result.is_error, (params, text_of(result))
        return text_of(result)

    async def error(self, code: str, **params: Any) -> str:
        """A call that must fail with ``code``; the first line of its text (events may follow)."""
        result = await self.call(**params)
        first = text_of(result).splitlines()[0]
        assert result.is_error, (params, text_of(result))
        match = ERROR.match(first)
        assert match is not None, (params, first)
        assert match["code"] == code, (params, first)
        return first

    async def until(self, check: Callable[[types.CallToolResult], bool], **params: Any) -> str:
        """Repeat a call until ``check`` accepts its result (the mesh replicates asynchronously); its text."""
        while not check(result := await self.call(**params)):  # noqa: ASYNC110 - polling the bridge is the test
            await trio.sleep(0.05)
        return text_of(result)

    async def close(self) -> None:
        """What an MCP client does when it is done: close the bridge's stdin (then, after 2 s, SIGTERM it).

        Only for the bridge started last (its client's task groups nest inside the earlier ones').
        """
        await self.stack.aclose()

    def saw(self, fragment: str) -> int:
        """How many results contained ``fragment``."""
        return sum(fragment in text for text in self.seen)

    def saw_receipt(self, message_id: str, status: str) -> bool:
        """Whether a result said that the message reached ``status``."""
        return any(said_receipt(text, message_id, status) for text in self.seen)


class Mesh:
    """Bridges of one test on their own port and home; ``spawned`` records the processes the client starts."""

    def __init__(self, tmp_path: Path, stack: AsyncExitStack, spawned: list[Any]) -> None:
        self.tmp_path = tmp_path
        self.port = _free_port()
        self.env = {"AGENT_COMMS_HOME": str(tmp_path / "home"), "AGENT_COMMS_PORT": str(self.port)}
        self.stack = stack
        self.spawned = spawned
        self.bridges: list[Bridge] = []

    async def bridge(
        self, directory: str, *args: str, command: list[str] | None = None, env: dict[str, str] | None = None
    ) -> Bridge:
        """Start a bridge in ``tmp_path/directory`` (its identity) and initialize a client session with it."""
        cwd = self.tmp_path / directory
        cwd.mkdir(exist_ok=True)
        errlog = self.tmp_path / f"{directory}.stderr"
        stack = await self.stack.enter_async_context(AsyncExitStack())
        log: TextIO = stack.enter_context(errlog.open("w"))
        program, *rest = command or _entry_point()
        params = StdioServerParameters(
            command=program, args=[*rest, *args], env={**self.env, **(env or {})}, cwd=str(cwd)
        )
        before = len(self.spawned)
        read, write = await stack.enter_async_context(stdio_client(params, errlog=log))
        session = await stack.enter_async_context(ClientSession(read, write))
        initialized = await session.initialize()
        bridge = Bridge(session, stack, directory, errlog)
        bridge.instructions = initialized.instructions or ""
        bridge.process = self.spawned[before]
        whoami = await bridge.ok(action="whoami")
        match = re.match(r"You are (?P<name>.+) \((?P<id>[^()]+)\):", whoami)
        assert match is not None, whoami
        bridge.name, bridge.id = match["name"], match["id"]
        self.bridges.append(bridge)
        return bridge

    def stderr(self) -> str:
        return "\n".join(f"--- {b.errlog.name}\n{b.errlog.read_text()}" for b in self.bridges if b.errlog.exists())


@pytest.fixture
def spawned(monkeypatch: pytest.MonkeyPatch) -> list[Any]:
    """The processes ``stdio_client`` starts, in order: the tests need their pid and exit status, which the SDK keeps
    to itself, so its private spawn function is wrapped (if the SDK renames it, this fails loudly)."""
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
            print(mesh.stderr(), file=sys.stderr)  # the bridges' logs, for the failure report
            raise


async def wait_listed(observer: Bridge, agent: Bridge, listed: bool = True) -> None:
    """Until ``observer``'s list_agents shows (or no longer shows) ``agent``."""
    await observer.until(lambda r: (f"({agent.id})" in text_of(r)) == listed, action="list_agents")


# ---------------------------------------------------------------- the plugin and the schema, in-process


@pytest.fixture
def pm() -> pluggy.PluginManager:
    return get_plugin_manager(load="mcp")


def test_the_entry_point_registers_the_plugin(pm: pluggy.PluginManager) -> None:
    assert pm.get_plugin("mcp") is plugin
    [info] = [info for info in list_plugins(pm) if info.name == "mcp"]
    assert (info.distribution, info.harness, info.builtin) == ("agent-comms-mcp", "mcp", False)
    assert (info.hooks, info.push) == (("configure", "detect", "remove", "serve", "status"), ("tool-results",))
    harness = find_harness(pm, "mcp")
    assert harness == plugin.BRIDGE.info
    assert isinstance(harness, HarnessInfo)
    assert (harness.name, harness.push, harness.package) == ("mcp", False, "agent-comms-mcp")


def test_serve_is_registered_for_mcp_only_and_setup_hooks_edit_nothing(
    pm: pluggy.PluginManager, tmp_path: Path
) -> None:
    """The plugin serves only ``mcp``; its setup hooks say it is installed and what to add to a client, and edit
    nothing (configure and remove answer ``None``)."""
    options = BridgeOptions(name=None, cwd=str(tmp_path), harness_pid=None)
    bridge = find_bridge(pm, "mcp")
    with pytest.raises(PluginError, match="no installed plugin bridges the harness 'codex'"):
        find_bridge(pm, "codex")
    assert bridge.serve is not None
    running = bridge.serve(options)
    assert inspect.iscoroutine(running)
    running.close()  # a coroutine, not started: nothing ran
    assert bridge.detect is not None
    assert bridge.status is not None
    assert bridge.configure is not None
    assert bridge.remove is not None
    detected = bridge.detect(tmp_path)
    assert detected.installed
    assert detected.detail.startswith("agent-comms-mcp ")
    status = bridge.status(tmp_path)
    assert "adding agent-comms-mcp to that client's configuration" in status
    snippet = json.loads(status.split("mcpServers form: ", 1)[1])
    assert Path(snippet["mcpServers"]["agent-comms"]["command"]).name == "agent-comms-mcp"
    assert bridge.configure(tmp_path, False) is None
    assert bridge.remove(tmp_path, False) is None
    assert list(tmp_path.iterdir()) == []


async def test_importing_the_plugin_imports_neither_trio_nor_the_sdk() -> None:
    code = "import sys, agent_comms_mcp.plugin; print(sorted({'trio', 'mcp', 'anyio'} & set(sys.modules)))"
    with trio.fail_after(60):
        result = await trio.run_process([sys.executable, "-c", code], capture_stdout=True, capture_stderr=True)
    assert result.stdout.decode().strip() == "[]"


def test_the_schema_lists_every_parameter_and_action() -> None:
    jsonschema.Draft202012Validator.check_schema(INPUT_SCHEMA)
    properties = INPUT_SCHEMA["properties"]
    assert list(properties) == list(PARAMETERS)
    assert INPUT_SCHEMA["required"] == ["action"]
    assert properties["action"]["enum"] == ACTIONS
    assert len(ACTIONS) == 15
    for name, schema in properties.items():
        assert schema.get("description"), name
        assert "type" in schema or "anyOf" in schema, name
    validator = jsonschema.Draft202012Validator(INPUT_SCHEMA)
    assert validator.is_valid({"action": "send", "target": "lobby", "content": "hi", "streamingBehavior": "info"})
    assert validator.is_valid({"action": "read_room", "room": "lobby", "since": 1_700_000_000_000})
    assert not validator.is_valid({"action": "fly"})
    assert not validator.is_valid({"action": "whoami", "colour": "blue"})
    for action in ACTIONS:
        assert f"\n- {action} " in TOOL_DESCRIPTION, action


def test_parse_line() -> None:
    assert parse_line(b'{"jsonrpc": "2.0", "id": 1, "method": "ping"}\r') == Request(1, "ping")
    assert parse_line(b'{"jsonrpc": "2.0", "method": "notifications/initialized"}') == Notification(
        "notifications/initialized"
    )
    assert parse_line(b"  ") is None
    # Malformed requests whose id can be read are answered "Invalid Request" (-32600) to that id.
    for line in (
        b'{"jsonrpc": "2.0", "id": "x", "method": 5}',
        b'{"jsonrpc": "2.0", "id": "x", "method": "tools/list", "params": [1]}',
        b'{"jsonrpc": "1.0", "id": "x", "method": "ping"}',
        b'{"jsonrpc": "2.0", "id": "x"}',
    ):
        malformed = parse_line(line)
        assert isinstance(malformed, Malformed), line
        assert (malformed.answer.id, malformed.answer.error.code) == ("x", -32600)
    # Without a readable id there is nobody to answer: the transport logs it.
    assert isinstance(parse_line(b'{"jsonrpc": "2.0", "id": true, "method": "ping"}'), ValueError)
    assert isinstance(parse_line(b"[]"), ValueError)  # an empty batch
    batch = parse_line(b'[{"jsonrpc": "2.0", "id": 1, "method": "ping"}, 5, {"jsonrpc": "2.0", "id": 2}]')
    assert isinstance(batch, Batch)
    assert batch.items[0] == Request(1, "ping")
    assert isinstance(batch.items[1], ValueError)
    assert isinstance(batch.items[2], Malformed)
    # The id of a line too long to read, from its first bytes: top-level only, a string or an integer, whole.
    assert find_id(b'{"jsonrpc": "2.0", "id": 12, "method": "tools/call", "params": {"x": "') == 12
    assert find_id(b'{"params": {"id": 5, "a": [1, {"id": 3}]}, "id": "a\\"b", "x') == 'a"b'
    assert find_id(b'{"method": "x", "params": {"id": 5, "text": "') is None
    assert find_id(b'{"id": 12') is None  # perhaps 123...
    assert find_id(b'{"id": true, "method"') is None
    assert find_id(b'[{"id": 1, "method"') is None
    assert isinstance(parse_line(b'{"a": ' + b"[" * 100_000 + b"]" * 100_000 + b"}"), ValueError)
    assert isinstance(parse_line(b"not json"), ValueError)
    assert isinstance(parse_line(None), ValueError)


async def test_drained_events_are_read_once_their_response_is_written_else_drained_again() -> None:
    async with open_in_memory_mesh() as mesh:
        alice = await mesh.agent("mcp", name="alice")
        bob = await mesh.agent("other", name="bob")
        ledger = DrainLedger(alice)
        sent = [await bob.call({"action": "dm", "target": "alice", "content": text}) for text in ("1", "2", "3")]
        one, two, three = (result.data["message_id"] for result in sent)
        await mesh.settle()

        def receipts() -> dict[str, str]:
            return {e.message_id: e.status for e in bob.drain() if e.type == "delivery_status"}

        assert set(receipts().values()) == {"delivered"}
        events, waiting = ledger.drain(1)
        assert ([e.content for e in events], waiting) == (["1"], 2)
        ledger.hold(7, events)
        events, waiting = ledger.drain(1)
        ledger.hold("eight", events)
        events, waiting = ledger.drain(5)
        assert ([e.content for e in events], waiting) == (["3"], 0)
        ledger.hold(9, events)
        assert ledger.held == 3
        await mesh.settle()
        assert receipts() == {}  # drained, but no result has gone out yet

        ledger.written(Response(7, {}))
        # An error response with the id of a call in progress (a request refused for reusing it) touches nothing.
        ledger.written(ErrorResponse("eight", RpcError(-32600, "in use")))
        assert ledger.held == 2
        ledger.unanswered("eight")  # its write was cut short as the bridge ended
        ledger.unanswered(9)  # the client cancelled that call
        assert ledger.held == 0
        await mesh.settle()
        assert receipts() == {one: "read"}  # only the event whose result reached the client
        # The others were not shown: they come first in the next result (in the order their results failed).
        events, waiting = ledger.drain(5)
        assert ([e.message_id for e in events], waiting) == ([two, three], 0)
        ledger.hold(10, events)
        ledger.written(Response(10, {}))
        await mesh.settle()
        assert receipts() == {two: "read", three: "read"}


# ---------------------------------------------------------------- the console entry point over real stdio


async def test_list_tools_gives_one_tool_with_the_full_schema(tmp_path: Path, spawned: list[Any]) -> None:
    with trio.fail_after(DEADLINE):
        async with open_mesh(tmp_path, spawned) as mesh:
            bridge = await mesh.bridge("solo")
            listing = await bridge.session.list_tools()
            [tool] = listing.tools
            assert tool.name == "agent_comms"
            assert tool.description == TOOL_DESCRIPTION
            schema = tool.input_schema
            assert schema["type"] == "object"
            assert list(schema["properties"]) == list(PARAMETERS)
            assert schema["required"] == ["action"]
            assert schema["properties"]["action"]["enum"] == ACTIONS
            assert schema["properties"]["visibility"]["enum"] == ["visible", "hidden", "ghost"]
            assert schema["properties"]["status"]["enum"] == ["active", "idle", "busy"]
            assert schema["properties"]["type"]["enum"] == ["public", "private", "secret"]
            assert schema["properties"]["streamingBehavior"]["enum"] == ["steer", "followUp", "info"]
            # Registered on start under the default name: <harness>-<directory>.
            assert (bridge.name, bridge.id.split("-")[0]) == ("mcp-solo", "mcp")


async def test_the_2026_protocol_era_is_served_too(tmp_path: Path, spawned: list[Any]) -> None:
    """The SDK's server serves both eras; a client that opens with ``server/discover`` gets the same tool."""
    with trio.fail_after(DEADLINE):
        async with open_mesh(tmp_path, spawned) as mesh:
            cwd = tmp_path / "modern"
            cwd.mkdir()
            params = StdioServerParameters(command=_entry_point()[0], args=_entry_point()[1:], env=mesh.env, cwd=cwd)
            with (tmp_path / "modern.stderr").open("w") as errlog:
                async with stdio_client(params, errlog=errlog) as (read, write), ClientSession(read, write) as session:
                    discovered = await session.discover()
                    assert discovered.supported_versions
                    [tool] = (await session.list_tools()).tools
                    assert tool.input_schema == INPUT_SCHEMA
                    result = await session.call_tool("agent_comms", {"action": "whoami"})
                    assert isinstance(result, types.CallToolResult)
                    assert not result.is_error
                    assert text_of(result).startswith("You are mcp-modern (")
                    result = await session.call_tool("agent_comms", {"action": "fly"})
                    assert isinstance(result, types.CallToolResult)
                    assert result.is_error
                    assert text_of(result).endswith("(INVALID_PARAMS)")


async def test_every_action_through_call_tool(tmp_path: Path, spawned: list[Any]) -> None:
    with trio.fail_after(DEADLINE):
        async with open_mesh(tmp_path, spawned) as mesh:
            a = await mesh.bridge("alpha")
            b = await mesh.bridge("beta")
            done: set[str] = {"whoami"}

            async def ok(bridge: Bridge, **params: Any) -> str:
                done.add(params["action"])
                return await bridge.ok(**params)

            assert (await ok(a, action="register", name="alice")).startswith("Re-registered as alice (")
            assert "You are alice (" in await ok(a, action="whoami")
            await ok(b, action="register", name="bob", tags=["reviewer"])
            assert "busy" in await ok(a, action="update", status="busy")
            done.add("list_agents")
            await b.until(lambda r: f"alice ({a.id})" in text_of(r), action="list_agents")
            await a.until(lambda r: f"bob ({b.id})" in text_of(r), action="list_agents")

            assert (await ok(a, action="create_room", room="lobby", description="all hands")).startswith(
                "Created #lobby (public)"
            )
            assert "#lobby" in await ok(a, action="list_rooms")
            done.add("join_room")
            await b.until(lambda r: not r.is_error, action="join_room", room="lobby")
            await a.until(lambda r: "2 member(s)" in text_of(r), action="list_rooms")
            sent = await ok(a, action="send", target="lobby", content="hello room", streamingBehavior="info")
            message_id = sent.rsplit("message id ", 1)[1].rstrip(".")
            await ok(b, action="send", room="lobby", content="hello alice", replyTo=message_id)
            history = await a.until(lambda r: "hello alice" in text_of(r), action="read_room", room="lobby")
            assert "hello room" in history
            assert await ok(a, action="read_room", room="lobby", since=message_id)
            assert "Left #lobby" in await ok(b, action="leave_room", room="lobby")

            await ok(a, action="create_room", room="ops", type="private")
            assert "Invited bob" in await ok(a, action="invite", room="ops", agent="bob")
            done.add("decline_invite")
            await b.until(lambda r: not r.is_error, action="decline_invite", room="ops", reason="busy elsewhere")
            await a.until(lambda r: "declined your invite: busy elsewhere" in text_of(r), action="whoami")
            await ok(a, action="invite", room="ops", agent=b.id)
            assert "Kicked bob" in await ok(a, action="kick", room="ops", agent="bob")
            assert "Destroyed #ops" in await ok(a, action="destroy_room", room="ops")

            assert "Sent to bob" in await ok(a, action="dm", target="bob", content="ping")
            assert "Sent to alice" in await ok(b, action="dm", agent=a.id, content="pong")
            await a.until(lambda r: "pong" in text_of(r), action="whoami")
            assert sorted(done) == sorted(ACTIONS)


async def test_errors_are_is_error_results(tmp_path: Path, spawned: list[Any]) -> None:
    with trio.fail_after(DEADLINE):
        async with open_mesh(tmp_path, spawned) as mesh:
            a = await mesh.bridge("alpha")
            b = await mesh.bridge("beta")
            assert "unknown action 'fly'" in await a.error("INVALID_PARAMS", action="fly")
            assert "missing 'action'" in await a.error("INVALID_PARAMS")
            assert "missing 'room'" in await a.error("INVALID_PARAMS", action="join_room")
            assert "'content'" in await a.error("INVALID_PARAMS", action="dm", target="x", content=5)
            assert "unknown parameter 'colour'" in await a.error("INVALID_PARAMS", action="whoami", colour="blue")
            assert "'visibility'" in await a.error("INVALID_PARAMS", action="register", name="x", visibility="loud")
            await a.error("ROOM_NOT_FOUND", action="read_room", room="nowhere")
            await a.error("AGENT_NOT_FOUND", action="dm", target="nobody", content="hi")
            await a.ok(action="create_room", room="mine", type="private")
            await a.error("ROOM_EXISTS", action="create_room", room="mine")
            await b.until(lambda r: "ROOM_NOT_FOUND" not in text_of(r), action="join_room", room="mine")
            await b.error("NOT_INVITED", action="join_room", room="mine")
            await b.error("NOT_OWNER", action="destroy_room", room="mine")
            await b.error("NOT_MEMBER", action="leave_room", room="mine")
            # A tool this server does not have: also an is_error result, not a protocol error.
            other = await a.session.call_tool("other_tool", {"action": "whoami"})
            assert other.is_error
            expected = "Error: unknown tool 'other_tool'; this server has one tool, 'agent_comms' (INVALID_PARAMS)"
            assert text_of(other) == expected
            assert "You are" in await a.ok(action="whoami")  # and the bridge carries on


async def test_events_are_drained_into_the_next_result_once(tmp_path: Path, spawned: list[Any]) -> None:
    with trio.fail_after(DEADLINE):
        async with open_mesh(tmp_path, spawned) as mesh:
            a = await mesh.bridge("alpha")
            b = await mesh.bridge("beta")
            await wait_listed(a, b)
            sent = await a.ok(action="dm", target=b.id, content="are you there, beta?")
            message_id = sent.split("message id ", 1)[1].split(".")[0]
            shown = await b.until(lambda r: "are you there, beta?" in text_of(r), action="whoami")
            assert shown.startswith("You are mcp-beta")
            assert "\n\n--- 1 new event(s) ---\n" in shown
            assert f"[DM from mcp-alpha ({a.id})] are you there, beta?  [id {message_id}]" in shown
            assert "waiting" not in shown
            assert "are you there" not in await b.ok(action="whoami")  # shown once only
            assert b.saw("are you there, beta?") == 1
            # The read receipt reaches the sender once the result carrying the DM went out.
            await a.until(lambda r: said_receipt(text_of(r), message_id, "read"), action="whoami")


async def test_a_bridge_whose_name_is_in_use_says_so_once(tmp_path: Path, spawned: list[Any]) -> None:
    """Two bridges named alice: the second is told, in its instructions, in its log, and in a register answer."""
    with trio.fail_after(DEADLINE):
        async with open_mesh(tmp_path, spawned) as mesh:
            first = await mesh.bridge("one", "--name", "alice")
            second = await mesh.bridge("two", "--name", "alice")
            assert "already in use" not in first.instructions
            note = "Note: the name alice is already in use by 1 other agent(s); "
            note += f"people see you as alice ({second.id[-6:]})"
            assert second.instructions.count(note) == 1, second.instructions
            assert note in second.errlog.read_text()
            assert note not in first.errlog.read_text()
            assert note in await second.ok(action="register", name="alice")
            assert "Note:" not in await second.ok(action="register", name="alice-two")


async def test_a_result_says_how_many_more_events_wait(tmp_path: Path, spawned: list[Any]) -> None:
    with trio.fail_after(DEADLINE):
        async with open_mesh(tmp_path, spawned) as mesh:
            a = await mesh.bridge("alpha")
            b = await mesh.bridge("beta", "--option", "max_events=1")
            await wait_listed(a, b)
            ids = []
            for n in range(3):
                sent = await a.ok(action="dm", target=b.id, content=f"note {n}")
                ids.append(sent.split("message id ", 1)[1].split(".")[0])
            # Wait until all three reached beta's bridge (alpha gets a "delivered" receipt for each).
            while not all(a.saw_receipt(i, "delivered") for i in ids):
                await a.ok(action="whoami")
                await trio.sleep(0.05)
            first = await b.ok(action="whoami")
            assert "--- 1 new event(s) ---" in first
            assert "note 0" in first
            assert "(2 more event(s) waiting; they come with your next agent_comms call)" in first
            second = await b.ok(action="list_rooms")
            assert "note 1" in second
            assert "(1 more event(s) waiting" in second
            third = await b.ok(action="whoami")
            assert "note 2" in third
            assert "waiting" not in third


async def test_closing_stdin_ends_the_bridge_gracefully(tmp_path: Path, spawned: list[Any]) -> None:
    with trio.fail_after(DEADLINE):
        async with open_mesh(tmp_path, spawned) as mesh:
            observer = await mesh.bridge("observer")
            leaver = await mesh.bridge("leaver")  # the last one opened: closing it alone keeps the nesting
            await wait_listed(observer, leaver)
            start = trio.current_time()
            await leaver.close()  # (a cancel scope around it would not nest with the client's task groups)
            assert trio.current_time() - start < 2  # within the client's grace period: no signal was needed
            assert leaver.process.returncode == 0
            assert "leaving the mesh" not in leaver.errlog.read_text()  # no signal, no lost parent
            await wait_listed(observer, leaver, listed=False)


async def test_sigterm_leaves_the_mesh_and_exits_0(tmp_path: Path, spawned: list[Any]) -> None:
    with trio.fail_after(DEADLINE):
        async with open_mesh(tmp_path, spawned) as mesh:
            leaver = await mesh.bridge("leaver")
            observer = await mesh.bridge("observer")
            await wait_listed(observer, leaver)
            leaver.process.send_signal(signal.SIGTERM)
            with trio.fail_after(2):
                await wait_listed(observer, leaver, listed=False)
                while leaver.process.returncode is None:  # noqa: ASYNC110 - the SDK's client reaps it
                    await trio.sleep(0.01)
            assert leaver.process.returncode == 0
            assert "SIGTERM; leaving the mesh" in leaver.errlog.read_text()


async def test_the_bridge_leaves_when_its_parent_process_is_gone(tmp_path: Path, spawned: list[Any]) -> None:
    """The harness dies without closing the bridge's stdin (SIGKILL): the bridge notices and leaves the mesh."""
    with trio.fail_after(DEADLINE):
        async with open_mesh(tmp_path, spawned) as mesh:
            observer = await mesh.bridge("observer")
            pid_file = tmp_path / "bridge.pid"
            harness_code = (
                "import subprocess, sys; "
                f"bridge = subprocess.Popen({_entry_point()!r}); "  # inherits our stdin, stdout and stderr
                f"open({str(pid_file)!r}, 'w').write(str(bridge.pid)); "
                "bridge.wait()"
            )
            (tmp_path / "orphan").mkdir()
            with (tmp_path / "orphan.stderr").open("w") as errlog:
                harness = await trio.lowlevel.open_process(
                    [sys.executable, "-c", harness_code],
                    stdin=subprocess.PIPE,  # held open by the test: no end of input for the bridge
                    stdout=subprocess.DEVNULL,
                    stderr=errlog,
                    cwd=tmp_path / "orphan",
                    env={**os.environ, **mesh.env},
                )
                try:
                    await observer.until(lambda r: "mcp-orphan (" in text_of(r), action="list_agents")
                    bridge_pid = int(pid_file.read_text())
                    harness.kill()
                    await harness.wait()
                    with trio.fail_after(10):
                        await observer.until(lambda r: "mcp-orphan (" not in text_of(r), action="list_agents")
                        while _running(bridge_pid):  # noqa: ASYNC110 - another process's state
                            await trio.sleep(0.05)
                finally:
                    if harness.returncode is None:
                        harness.kill()
                    if pid_file.exists() and _running(pid := int(pid_file.read_text())):
                        os.kill(pid, signal.SIGKILL)
            assert "its parent process" in (tmp_path / "orphan.stderr").read_text()


def _running(pid: int) -> bool:
    """Whether ``pid`` runs (a zombie left to a non-reaping init does not count)."""
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


async def test_agent_comms_bridge_mcp_and_the_harness_name(tmp_path: Path, spawned: list[Any]) -> None:
    """``agent-comms bridge mcp`` runs the same bridge; ``--option harness=`` and $AGENT_COMMS_HARNESS rename it."""
    with trio.fail_after(DEADLINE):
        async with open_mesh(tmp_path, spawned) as mesh:
            cli = await mesh.bridge(
                "via-cli", "bridge", "mcp", "--name", "from-cli", "--option", "harness=codex", command=_cli()
            )
            assert cli.name == "from-cli"
            assert "harness codex" in await cli.ok(action="whoami")
            env = await mesh.bridge("via-env", env={"AGENT_COMMS_HARNESS": "opencode"})
            assert env.name == "opencode-via-env"
            assert "harness opencode" in await env.ok(action="whoami")
            [tool] = (await cli.session.list_tools()).tools
            assert tool.name == "agent_comms"


async def test_piped_requests_are_all_answered_before_the_bridge_ends(tmp_path: Path) -> None:
    """A client may send requests and close stdin at once (or a file is piped in): every request is answered."""
    env = {**os.environ, "AGENT_COMMS_HOME": str(tmp_path / "home"), "AGENT_COMMS_PORT": str(_free_port())}
    messages: list[dict[str, Any]] = [
        {
            "jsonrpc": "2.0",
            "id": 1,
            "method": "initialize",
            "params": {
                "protocolVersion": "2025-06-18",
                "capabilities": {},
                "clientInfo": {"name": "pipe", "version": "0"},
            },
        },
        {"jsonrpc": "2.0", "method": "notifications/initialized"},
        {"jsonrpc": "2.0", "id": 2, "method": "tools/list"},
        {"jsonrpc": "2.0", "id": 3, "method": "tools/call", "params": {"name": "agent_comms", "arguments": {}}},
        {
            "jsonrpc": "2.0",
            "id": 4,
            "method": "tools/call",
            "params": {"name": "agent_comms", "arguments": {"action": "whoami"}},
        },
    ]
    lines = [json.dumps(m) for m in messages]
    piped = "\n".join([*lines[:3], "this line is not JSON", *lines[3:]]) + "\n"
    with trio.fail_after(60):
        result = await trio.run_process(
            _entry_point(), stdin=piped.encode(), capture_stdout=True, capture_stderr=True, env=env, cwd=tmp_path
        )
    assert result.returncode == 0, result.stderr
    answers = {answer["id"]: answer for answer in map(json.loads, result.stdout.splitlines())}
    assert sorted(answers) == [1, 2, 3, 4]
    assert answers[1]["result"]["serverInfo"]["name"] == "agent-comms"
    assert [tool["name"] for tool in answers[2]["result"]["tools"]] == ["agent_comms"]
    assert answers[3]["result"]["isError"] is True
    assert answers[3]["result"]["content"][0]["text"].startswith("Error: missing 'action'")
    assert answers[4]["result"]["isError"] is False
    assert answers[4]["result"]["content"][0]["text"].startswith("You are mcp-")


async def test_bad_max_events_is_a_usage_error(tmp_path: Path) -> None:
    env = {**os.environ, "AGENT_COMMS_HOME": str(tmp_path / "home"), "AGENT_COMMS_PORT": str(_free_port())}
    with trio.fail_after(60):
        result = await trio.run_process(
            [*_entry_point(), "--option", "max_events=lots"],
            stdin=b"",
            capture_stdout=True,
            capture_stderr=True,
            env=env,
            check=False,
        )
    assert result.returncode == 2, result.stderr
    assert b"--option max_events= takes a positive whole number, not 'lots'" in result.stderr


async def test_a_fresh_bridge_registers_seeing_the_agents_online(tmp_path: Path, spawned: list[Any]) -> None:
    """The bridge answers ``initialize`` only once synced with the mesh: its first call already sees the others."""
    with trio.fail_after(DEADLINE):
        async with open_mesh(tmp_path, spawned) as mesh:
            alice = await mesh.bridge("alice")
            cwd = tmp_path / "fresh"
            cwd.mkdir()
            params = StdioServerParameters(command=_entry_point()[0], args=_entry_point()[1:], env=mesh.env, cwd=cwd)
            with (tmp_path / "fresh.stderr").open("w") as errlog:
                async with stdio_client(params, errlog=errlog) as (read, write), ClientSession(read, write) as session:
                    await session.initialize()
                    result = await session.call_tool("agent_comms", {"action": "register", "name": "fresh"})
                    assert isinstance(result, types.CallToolResult)
                    assert not result.is_error
                    assert f"Online: {alice.name} ({alice.id})" in text_of(result), text_of(result)


async def test_a_health_check_announces_no_agent(tmp_path: Path, spawned: list[Any]) -> None:
    """A client that starts the bridge and goes away at once (``claude mcp list``) is not told to anyone: its
    coming and going falls within the quiet window of status changes."""
    with trio.fail_after(DEADLINE):
        async with open_mesh(tmp_path, spawned) as mesh:
            a = await mesh.bridge("alpha")
            b = await mesh.bridge("beta")
            await wait_listed(a, b)
            await a.ok(action="create_room", room="dev")
            await b.until(lambda r: not r.is_error, action="join_room", room="dev")
            await b.close()  # beta's session ends: alpha is told, once the quiet window has passed
            await a.until(lambda r: "beta" in text_of(r) and "is now offline" in text_of(r), action="whoami")
            check = await mesh.bridge("beta")  # the health check, in beta's directory: the same agent
            await wait_listed(a, check)  # alpha knows it is online (and its model calls the tool meanwhile)
            await check.close()
            await wait_listed(a, check, listed=False)
            # Nothing can be waited for that says a status was not told: wait well past the window, then look.
            await trio.sleep(2 * PRESENCE_QUIET_S)
            await a.ok(action="whoami")
            told = [line for text in a.seen for line in text.splitlines() if "beta" in line and "is now" in line]
            assert [line.rsplit(" ", 1)[-1] for line in told] == ["offline"], told


async def test_sigterm_ends_a_bridge_whose_stdout_nobody_reads(tmp_path: Path, spawned: list[Any]) -> None:
    """A client that keeps the bridge's stdout open but stops reading it, with a tool result half written: SIGTERM
    still ends the bridge within seconds (the write is abandoned), and the agent leaves the mesh."""
    with trio.fail_after(DEADLINE):
        async with open_mesh(tmp_path, spawned) as mesh:
            observer = await mesh.bridge("observer")
            (tmp_path / "stuck").mkdir()
            errlog_path = tmp_path / "stuck.stderr"
            with errlog_path.open("w") as errlog:
                stuck = await trio.lowlevel.open_process(
                    _entry_point(),
                    stdin=subprocess.PIPE,
                    stdout=subprocess.PIPE,
                    stderr=errlog,
                    cwd=tmp_path / "stuck",
                    env={**os.environ, **mesh.env},
                )
                assert stuck.stdin is not None
                assert stuck.stdout is not None
                try:
                    params = {"protocolVersion": "2025-06-18", "capabilities": {}, "clientInfo": {"name": "t"}}
                    # A tool name the result echoes: a result far larger than a pipe holds (64 KiB).
                    call = {"name": "x" * 300_000, "arguments": {"action": "whoami"}}
                    lines = [
                        {"jsonrpc": "2.0", "id": 1, "method": "initialize", "params": params},
                        {"jsonrpc": "2.0", "method": "notifications/initialized"},
                        {"jsonrpc": "2.0", "id": 2, "method": "tools/call", "params": call},
                    ]
                    await stuck.stdin.send_all(b"".join(json.dumps(line).encode() + b"\n" for line in lines))
                    received = b""
                    while b'"id":2' not in received.partition(b"\n")[2]:  # the result has begun: stop reading
                        received += await stuck.stdout.receive_some(4096)
                    assert json.loads(received.partition(b"\n")[0])["id"] == 1
                    await observer.until(lambda r: "mcp-stuck (" in text_of(r), action="list_agents")
                    stuck.send_signal(signal.SIGTERM)
                    with trio.fail_after(15):  # the result's write gets 2 s, then leaving the mesh
                        await stuck.wait()
                        await observer.until(lambda r: "mcp-stuck (" not in text_of(r), action="list_agents")
                finally:
                    if stuck.returncode is None:
                        stuck.kill()
                        await stuck.wait()
            assert stuck.returncode == 0, errlog_path.read_text()
            assert "SIGTERM; leaving the mesh" in errlog_path.read_text()
