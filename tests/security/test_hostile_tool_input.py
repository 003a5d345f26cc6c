"""Hostile tool input through every way a model's parameters come in: ``CommsTool`` itself, the ``jsonl`` bridge
(line protocol over memory streams, as in-process as its own tests) and the MCP bridge (its ``tools/call`` handler
in-process, and the real ``agent-comms-mcp`` process fed raw JSON-RPC lines, so the SDK's own parsing is in the
path). The other bridges reuse these two.

Wrong types, unknown actions and parameters, huge strings, lone surrogates, NUL, right-to-left overrides and
1 MB contents each get an ``INVALID_PARAMS`` error that names the field, and nothing is stored: every peer's state
digest is unchanged and nobody receives an event. Right-to-left text is legitimate content and arrives unchanged.
"""

from __future__ import annotations

import json
import os
import shutil
import socket
import sys
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import pytest
import trio
import trio.testing
from hypothesis import given, settings
from hypothesis import strategies as st

from agent_comms.actions import PARAMETERS
from agent_comms.agent import Agent
from agent_comms.bridges.jsonl import run_bridge
from agent_comms.stdio import LineWriter
from agent_comms.testing import InMemoryMesh, open_in_memory_mesh

MB = 1_000_000
INITIALIZE = {"protocolVersion": "2025-06-18", "capabilities": {}, "clientInfo": {"name": "t", "version": "0"}}

#: (parameters, the parameter the error must name)
HOSTILE: list[tuple[Any, str]] = [
    ({}, "action"),
    ({"action": 7}, "action"),
    ({"action": "nuke_everything"}, "action"),
    ({"action": "\ud800"}, "action"),
    ({"action": "whoami", "sudo": True}, "sudo"),
    ({"action": "send", "target": "lobby", "content": 5}, "content"),
    ({"action": "send", "target": "lobby", "content": True}, "content"),
    ({"action": "send", "target": "lobby", "content": {"nested": "object"}}, "content"),
    ({"action": "send", "target": ["lobby"], "content": "x"}, "target"),
    ({"action": "send", "target": "lobby", "content": "\ud800 lone high surrogate"}, "content"),
    ({"action": "send", "target": "lobby", "content": "lone low \udfff"}, "content"),
    ({"action": "send", "target": "lobby", "content": "nul\x00inside"}, "content"),
    ({"action": "send", "target": "lobby", "content": "x" * MB}, "content"),
    ({"action": "send", "target": "lobby", "content": "é" * MB}, "content"),
    ({"action": "send", "target": "lobby", "content": "x", "replyTo": "\ud800"}, "replyTo"),
    ({"action": "send", "target": "lobby", "content": "x", "streamingBehavior": "now!"}, "streamingBehavior"),
    ({"action": "dm", "target": "bob", "content": "\ud83d"}, "content"),
    ({"action": "dm", "target": "bob", "content": "x" * MB}, "content"),
    ({"action": "dm", "target": "x" * MB, "content": "hi"}, "target"),
    ({"action": "register", "name": "\u202eevil"}, "name"),
    ({"action": "register", "name": "nul\x00"}, "name"),
    ({"action": "register", "name": "\ud800"}, "name"),
    ({"action": "register", "name": "x" * MB}, "name"),
    ({"action": "register", "name": "ok", "tags": "not-a-list"}, "tags"),
    ({"action": "register", "name": "ok", "tags": ["\ud800"]}, "tags"),
    ({"action": "register", "name": "ok", "tags": ["t"] * 100_000}, "tags"),
    ({"action": "register", "name": "ok", "visibility": "invisible"}, "visibility"),
    ({"action": "update"}, "update"),
    ({"action": "update", "status": "sleepy"}, "status"),
    ({"action": "create_room", "room": "x" * MB}, "room"),
    ({"action": "create_room", "room": "r", "description": "\ud800"}, "description"),
    ({"action": "create_room", "room": "r", "description": "d" * MB}, "description"),
    ({"action": "create_room", "room": "r", "type": "hidden"}, "type"),
    ({"action": "read_room", "room": "lobby", "since": 1.5}, "since"),
    ({"action": "read_room", "room": "lobby", "since": "\ud800"}, "since"),
    ({"action": "kick", "room": "lobby", "agent": 12}, "agent"),
    ({"action": "decline_invite", "room": "lobby", "reason": "r" * MB}, "reason"),
]


def _ids() -> list[str]:
    return [
        f"{i}-{p.get('action', 'none') if isinstance(p, dict) else 'x'}-{field}" for i, (p, field) in enumerate(HOSTILE)
    ]


def _digests(mesh: InMemoryMesh) -> list[bytes]:
    return [node.peer.replica.state.digest() for node in mesh.nodes]


@asynccontextmanager
async def two_agents() -> AsyncIterator[tuple[InMemoryMesh, Agent, Agent]]:
    """alice owns #lobby, bob is in it; both on their own peers of an in-memory mesh."""
    with trio.fail_after(30):
        async with open_in_memory_mesh() as mesh:
            alice = await mesh.agent("test", name="alice", cwd="/w/alice")
            bob = await mesh.agent("test", name="bob", cwd="/w/bob")
            assert not (await alice.call({"action": "create_room", "room": "lobby"})).is_error
            await mesh.settle()
            assert not (await bob.call({"action": "join_room", "room": "lobby"})).is_error
            await mesh.settle()
            alice.drain()
            bob.drain()
            yield mesh, alice, bob


def _assert_invalid(text: str, field: str) -> None:
    first = text.splitlines()[0]
    assert first.startswith("Error: "), text[:300]
    assert first.endswith("(INVALID_PARAMS)"), first[:300]
    assert field in first, first[:300]
    assert len(first) < 2000, "the error echoes the huge input back"


async def _nothing_changed(mesh: InMemoryMesh, before: list[bytes], *agents: Agent) -> None:
    await mesh.settle()
    assert _digests(mesh) == before
    for agent in agents:
        assert agent.drain() == []


# ------------------------------------------------------------------------------------------------ CommsTool


async def test_hostile_parameters_through_the_tool_are_invalid_params_and_store_nothing() -> None:
    async with two_agents() as (mesh, alice, bob):
        before = _digests(mesh)
        for params, field in HOSTILE:
            result = await alice.call(params)
            assert result.is_error, params
            _assert_invalid(result.text, field)
        result = alice.tool.call(["action", "whoami"])  # type: ignore[arg-type]
        assert result.is_error
        assert "must be an object" in result.text
        await _nothing_changed(mesh, before, alice, bob)


@settings(max_examples=60, deadline=None)
@given(
    params=st.dictionaries(
        st.sampled_from([*PARAMETERS, "x", ""]),
        st.one_of(
            st.text(max_size=40),
            st.integers(),
            st.floats(),
            st.booleans(),
            st.none(),
            st.lists(st.text(max_size=5), max_size=3),
            st.dictionaries(st.text(max_size=3), st.integers(), max_size=2),
            st.sampled_from(["\ud800", "\x00", "\u202e", "lobby", "bob", "alice", "send", "dm", "kick"]),
        ),
        max_size=6,
    )
)
async def test_random_parameters_never_raise_and_errors_store_nothing(params: dict[str, Any]) -> None:
    async with two_agents() as (mesh, alice, _bob):
        before = _digests(mesh)
        result = await alice.call(params)  # an exception here fails the test
        if result.is_error:
            await mesh.settle()
            assert _digests(mesh) == before, (params, result.text)


async def test_right_to_left_text_is_content_and_arrives_unchanged() -> None:
    text = "\u202eevil.exe \u05e9\u05dc\u05d5\u05dd \u0645\u0631\u062d\u0628\u0627 \U0001f600 \u200d\ufeff"
    async with two_agents() as (mesh, alice, bob):
        assert not (await alice.call({"action": "dm", "target": "bob", "content": text})).is_error
        await mesh.settle()
        contents = [e.content for e in bob.drain() if e.type == "dm"]
        assert contents == [text]


# ------------------------------------------------------------------------------------------------ jsonl bridge


class JsonlBridge:
    def __init__(self, agent: Agent) -> None:
        self.agent = agent
        self.input, self.receive = trio.testing.memory_stream_one_way_pair()
        self.output_send, self.output = trio.testing.memory_stream_one_way_pair()
        self.buffer = b""

    async def run(self) -> None:
        await run_bridge(self.agent, self.receive, LineWriter(self.output_send))

    async def line(self) -> dict[str, Any]:
        while b"\n" not in self.buffer:
            chunk = await self.output.receive_some()
            assert chunk, "the bridge's output ended"
            self.buffer += chunk
        line, _, self.buffer = self.buffer.partition(b"\n")
        answer: dict[str, Any] = json.loads(line)
        return answer

    async def answer(self, raw: bytes) -> dict[str, Any]:
        """The bridge's reply to one raw input line (events pushed meanwhile are skipped)."""
        await self.input.send_all(raw + b"\n")
        while (reply := await self.line())["type"] == "event":
            pass
        return reply


async def test_hostile_lines_through_the_jsonl_bridge_are_invalid_params_and_store_nothing() -> None:
    async with two_agents() as (mesh, alice, bob), trio.open_nursery() as nursery:
        bridge = JsonlBridge(alice)
        nursery.start_soon(bridge.run)
        assert (await bridge.line())["type"] == "ready"
        before = _digests(mesh)
        for n, (params, field) in enumerate(HOSTILE):
            # json.dumps writes lone surrogates as \\ud800 escapes, as a harness's JSON encoder would.
            reply = await bridge.answer(json.dumps({"id": n, "params": params}).encode())
            if "longer than" not in reply["text"]:  # an over-long line is skipped unread: no id to give back
                assert reply.get("id") == n, (n, reply)
            assert reply["type"] in ("result", "error"), reply
            assert reply.get("is_error", True)
            if reply["type"] == "error":  # refused before the tool: the line itself (JSON the decoder rejects)
                assert reply["text"].endswith("(INVALID_PARAMS)"), reply
            else:
                _assert_invalid(reply["text"], field)
        for raw in [
            b'{"id": "bytes", "params": {"action": "dm", "target": "bob", "content": "\xff\xfe"}}',
            b'{"id": "nul", "params": {"action": "dm", "target": "bob", "content": "a\\u0000b"}}',
            b'{"id": "deep", "params": ' + b"[" * 10_000 + b"]" * 10_000 + b"}",
            b'{"id": "big", "params": {"action": "dm", "target": "bob", "content": "' + b"x" * MB + b'"}}',
            b'["not", "an", "object"]',
            b"\x00\x00\x00",
        ]:
            reply = await bridge.answer(raw)
            assert reply["type"] in ("result", "error"), reply
            text = reply["text"]
            assert text.startswith("Error: "), text[:300]
            assert text.endswith("(INVALID_PARAMS)"), text[:300]
        await _nothing_changed(mesh, before, bob)
        assert (await bridge.answer(b'{"id": "ok", "params": {"action": "whoami"}}'))["is_error"] is False
        await bridge.input.aclose()


# ------------------------------------------------------------------------------------------------ MCP bridge


async def test_hostile_arguments_through_the_mcp_tool_handler_are_invalid_params_and_store_nothing() -> None:
    server = pytest.importorskip("agent_comms_mcp.server", reason="the MCP bridge (bridges/mcp) is not installed")
    async with two_agents() as (mesh, alice, bob):
        before = _digests(mesh)
        for params, field in HOSTILE:
            result = await server.call_tool(alice, "agent_comms", params)
            assert result.is_error
            _assert_invalid(result.text, field)
        result = await server.call_tool(alice, "rm -rf", {"action": "whoami"})
        assert result.is_error
        assert "unknown tool" in result.text
        await _nothing_changed(mesh, before, bob)


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
    assert port != 19876
    return port


def _mcp_entry_point() -> list[str] | None:
    beside = Path(sys.executable).with_name("agent-comms-mcp")
    if beside.exists():
        return [str(beside)]
    found = shutil.which("agent-comms-mcp")
    return [found] if found else None


async def test_hostile_json_rpc_lines_to_the_mcp_bridge_process(tmp_path: Path) -> None:
    """The real ``agent-comms-mcp`` on a pipe: raw lines with lone-surrogate escapes, invalid UTF-8, wrong types
    and a 1 MB content. Each call is answered with an error result (or a JSON-RPC error for a line the SDK cannot
    parse), the bridge keeps going, and the mesh holds nothing but the bridge's own agent."""
    stdio = pytest.importorskip("agent_comms_mcp.stdio", reason="the MCP bridge (bridges/mcp) is not installed")
    command = _mcp_entry_point()
    if command is None:
        pytest.skip("agent-comms-mcp is not installed (bridges/mcp)")
    home = tmp_path / "home"
    env = {**os.environ, "AGENT_COMMS_HOME": str(home), "AGENT_COMMS_PORT": str(_free_port())}

    def call(n: int, arguments: Any) -> bytes:
        message = {"jsonrpc": "2.0", "id": n, "method": "tools/call", "params": {"name": "agent_comms"}}
        message["params"]["arguments"] = arguments  # type: ignore[index]
        return json.dumps(message).encode()

    lines = [
        json.dumps(
            {
                "jsonrpc": "2.0",
                "id": 0,
                "method": "initialize",
                "params": {
                    "protocolVersion": "2025-06-18",
                    "capabilities": {},
                    "clientInfo": {"name": "t", "version": "0"},
                },
            }
        ).encode(),
        b'{"jsonrpc": "2.0", "method": "notifications/initialized"}',
        *(call(n + 1, params) for n, (params, _field) in enumerate(HOSTILE) if isinstance(params, dict)),
        b'{"jsonrpc": "2.0", "id": 900, "method": "tools/call", "params": {"name": "agent_comms", '
        b'"arguments": {"action": "create_room", "room": "\xff\xfe"}}}',
        b'{"jsonrpc": "2.0", "id": 901, "method": "tools/call", "params": {"name": "agent_comms", "arguments": 5}}',
        b'{"jsonrpc": "2.0", "id": 903, "method": "tools/call", "params": ' + b"[" * 10_000 + b"]" * 10_000 + b"}",
        call(902, {"action": "create_room", "room": "fine"}),
    ]
    with trio.fail_after(90):
        result = await trio.run_process(
            command, stdin=b"\n".join(lines) + b"\n", capture_stdout=True, capture_stderr=True, env=env, cwd=tmp_path
        )
    assert result.returncode == 0, result.stderr[-2000:]
    answers = {a.get("id"): a for a in map(json.loads, result.stdout.splitlines())}
    for n, (params, field) in enumerate(HOSTILE):
        answer = answers.get(n + 1)
        if len(call(n + 1, params)) > stdio.MAX_MESSAGE:
            continue  # the transport skips a message over its size cap unread (documented): no id to answer
        assert answer is not None, (n, params)
        if "error" in answer:  # the SDK refused the message itself
            continue
        content = answer["result"]["content"][0]["text"]
        assert answer["result"]["isError"] is True, content[:300]
        _assert_invalid(content, field)
    assert "result" not in answers.get(900, {}) or answers[900]["result"]["isError"]
    assert "result" not in answers.get(901, {}) or answers[901]["result"]["isError"]
    # The bridge kept going: the last, valid call worked, and it is the only thing the bridge created.
    assert answers[902]["result"]["isError"] is False, answers[902]
    assert b"Traceback" not in result.stderr, result.stderr[-3000:]
