"""Helpers for the tests of ``agent-comms-claude-code``: bridges started as their console entry point and driven
by the official ``mcp`` client over real stdio, each test on a free port with a fresh ``AGENT_COMMS_HOME``."""

from __future__ import annotations

import json
import os
import re
import shutil
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
from mcp import ClientSession, StdioServerParameters, types
from mcp.client.extension import NotificationBinding
from mcp.client.stdio import stdio_client
from pydantic import BaseModel

#: Deadline of a whole test that starts bridge processes (each takes a second or two to import the SDK and join).
DEADLINE = 120
ERROR = re.compile(r"^Error: .+ \((?P<code>[A-Z_]+)\)$")
CHANNEL_METHOD = "notifications/claude/channel"


class ChannelParams(BaseModel):
    """The params of ``notifications/claude/channel``, as Claude Code validates them."""

    content: str
    meta: dict[str, str] | None = None


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
    assert port != 19876
    return port


def program(name: str) -> list[str]:
    """How to start the console script ``name`` of this environment."""
    beside = Path(sys.executable).with_name(name)
    if beside.exists():
        return [str(beside)]
    found = shutil.which(name)
    assert found is not None, f"{name} is not installed (pip install -e bridges/claude-code)"
    return [found]


def text_of(result: types.CallToolResult) -> str:
    assert [block.type for block in result.content] == ["text"], result
    block = result.content[0]
    assert isinstance(block, types.TextContent)
    return block.text


class Bridge:
    """One bridge process and the MCP client session that drives it."""

    def __init__(self, session: ClientSession, name: str, errlog: Path) -> None:
        self.session = session
        self.name = name
        self.errlog = errlog
        self.seen: list[str] = []
        #: channel notifications received, in order
        self.channel: list[ChannelParams] = []
        self.channel_changed = trio.Event()
        self.process: Any = None
        self.id = ""
        self.initialize: types.InitializeResult | None = None

    async def on_channel(self, params: ChannelParams) -> None:
        self.channel.append(params)
        self.channel_changed.set()
        self.channel_changed = trio.Event()

    async def wait_channel(self, count: int) -> list[ChannelParams]:
        while len(self.channel) < count:
            await self.channel_changed.wait()
        return self.channel

    async def call(self, **params: Any) -> types.CallToolResult:
        result = await self.session.call_tool("agent_comms", params)
        assert isinstance(result, types.CallToolResult)
        self.seen.append(text_of(result))
        return result

    async def ok(self, **params: Any) -> str:
        result = await self.call(**params)
        assert not result.is_error, (params, text_of(result))
        return text_of(result)

    async def error(self, code: str, **params: Any) -> str:
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

    def saw(self, fragment: str) -> int:
        return sum(fragment in text for text in self.seen)


class Mesh:
    """Bridges of one test on their own port and home."""

    def __init__(self, tmp_path: Path, stack: AsyncExitStack, spawned: list[Any]) -> None:
        self.tmp_path = tmp_path
        self.port = free_port()
        self.home = tmp_path / "home"
        self.env = {"AGENT_COMMS_HOME": str(self.home), "AGENT_COMMS_PORT": str(self.port)}
        self.stack = stack
        self.spawned = spawned
        self.bridges: list[Bridge] = []

    async def bridge(
        self, directory: str, *args: str, command: list[str] | None = None, env: dict[str, str] | None = None
    ) -> Bridge:
        """Start a bridge in ``tmp_path/directory`` (its identity) and initialize a client session with it."""
        cwd = self.tmp_path / directory
        cwd.mkdir(exist_ok=True)
        errlog = self.tmp_path / f"{directory}-{len(self.bridges) + 1}.stderr"
        stack = await self.stack.enter_async_context(AsyncExitStack())
        log: TextIO = stack.enter_context(errlog.open("w"))
        first, *rest = command or program("agent-comms-claude-code")
        params = StdioServerParameters(
            command=first, args=[*rest, *args], env={**self.env, **(env or {})}, cwd=str(cwd)
        )
        before = len(self.spawned)
        read, write = await stack.enter_async_context(stdio_client(params, errlog=log))
        holder: list[Bridge] = []

        async def on_channel(params: ChannelParams) -> None:
            await holder[0].on_channel(params)

        binding = NotificationBinding(method=CHANNEL_METHOD, params_type=ChannelParams, handler=on_channel)
        session = await stack.enter_async_context(ClientSession(read, write, notification_bindings=[binding]))
        bridge = Bridge(session, directory, errlog)
        holder.append(bridge)
        bridge.initialize = await session.initialize()
        bridge.process = self.spawned[before]
        whoami = await bridge.ok(action="whoami")
        match = re.match(r"You are (?P<name>.+) \((?P<id>[^()]+)\):", whoami)
        assert match is not None, whoami
        bridge.name, bridge.id = match["name"], match["id"]
        self.bridges.append(bridge)
        return bridge

    def stderr(self) -> str:
        return "\n".join(f"--- {b.errlog.name}\n{b.errlog.read_text()}" for b in self.bridges if b.errlog.exists())


def record_spawned(monkeypatch: pytest.MonkeyPatch) -> list[Any]:
    """The processes ``stdio_client`` starts, in order (the SDK keeps them to itself, so its private spawn function
    is wrapped; if the SDK renames it, this fails loudly)."""
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


def message_id(sent: str) -> str:
    """The message id in the result of a send or dm."""
    return sent.split("message id ", 1)[1].split(".")[0]


def hook_env(mesh: Mesh, **extra: str) -> dict[str, str]:
    """The environment a hook process gets: the test's mesh home, nothing from the outer session."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("CLAUDE", "AGENT_COMMS"))}
    return {**env, **mesh.env, **extra}


#: The program of :class:`StandInClaude`: runs the commands it is sent (one JSON object a line: ``id``, ``argv``,
#: ``env``, ``stdin``) as its children, each in a thread, and answers each with a JSON line once it has exited.
_STAND_IN = r"""
import json, subprocess, sys, threading
lock = threading.Lock()
def run(request):
    done = subprocess.run(request["argv"], input=request["stdin"].encode(), capture_output=True, env=request["env"])
    answer = {"id": request["id"], "returncode": done.returncode, "stdout": done.stdout.decode(),
              "stderr": done.stderr.decode()}
    with lock:
        sys.stdout.write(json.dumps(answer) + "\n")
        sys.stdout.flush()
for line in sys.stdin:
    threading.Thread(target=run, args=(json.loads(line),)).start()
"""


class StandInClaude:
    """A process playing one Claude Code process: a bridge started with ``--harness-pid`` :attr:`pid` belongs to
    its session, and the hooks it runs are its children, as Claude Code's are. Two of them are two sessions."""

    def __init__(self, process: trio.Process) -> None:
        self.process = process
        self.pid = process.pid
        self._next = 0
        self._answers: dict[int, dict[str, Any]] = {}
        self._changed = trio.Event()

    async def _read(self) -> None:
        assert self.process.stdout is not None
        buffer = b""
        async for data in self.process.stdout:
            buffer += data
            while b"\n" in buffer:
                line, _, buffer = buffer.partition(b"\n")
                answer = json.loads(line)
                self._answers[answer["id"]] = answer
                self._changed.set()
                self._changed = trio.Event()

    async def run(self, argv: list[str], stdin: bytes, env: dict[str, str]) -> subprocess.CompletedProcess[bytes]:
        """Run ``argv`` as a child of this process; its outcome."""
        assert self.process.stdin is not None
        self._next += 1
        number = self._next
        request = {"id": number, "argv": argv, "env": env, "stdin": stdin.decode()}
        await self.process.stdin.send_all(json.dumps(request).encode() + b"\n")
        while (answer := self._answers.pop(number, None)) is None:
            await self._changed.wait()
        return subprocess.CompletedProcess(
            argv, answer["returncode"], answer["stdout"].encode(), answer["stderr"].encode()
        )


@asynccontextmanager
async def stand_in_claude() -> AsyncIterator[StandInClaude]:
    """A :class:`StandInClaude` for the duration of the block (it is killed after: open the bridges of its session
    inside the block, so that they end first)."""
    process = await trio.lowlevel.open_process(
        [sys.executable, "-c", _STAND_IN], stdin=subprocess.PIPE, stdout=subprocess.PIPE
    )
    claude = StandInClaude(process)
    try:
        async with trio.open_nursery() as nursery:
            nursery.start_soon(claude._read)
            yield claude
            nursery.cancel_scope.cancel()
    finally:
        process.kill()
        await process.wait()


def hooks_connected(path: str) -> int:
    """How many connections the Unix socket at ``path`` has accepted and still holds (from ``/proc/net/unix``)."""
    with open("/proc/net/unix", encoding="utf-8") as table:
        return sum(1 for line in table if line.split()[5:6] == ["03"] and line.rstrip("\n").endswith(" " + path))
