"""The MCP server's protocol without a mesh: the session's answers, and the stdio connection over memory streams.

The session (:mod:`agent_comms_mcp.session`) is pure: requests in, results or errors out. The connection
(:mod:`agent_comms_mcp.stdio`) is driven over a Trio memory stream pair with a tool runner written here (the tool
itself, and the official client, are the other tests' business): it checks the JSON-RPC errors, that a slow tool
call does not hold up a ping, that ``notifications/cancelled`` cancels a call without an answer and reports it, and
that the end of input waits for the calls already read.
"""

from __future__ import annotations

import json
from typing import Any

import pytest
import trio
import trio.testing
from agent_comms_mcp.jsonrpc import Request, RequestId, RpcError
from agent_comms_mcp.session import HANDSHAKE_VERSIONS, LATEST_HANDSHAKE, McpSession, ServerInfo, ToolCall
from agent_comms_mcp.stdio import StdioConnection

DEADLINE = 30
TOOL = {"name": "echo", "description": "echo", "inputSchema": {"type": "object"}}
ENVELOPE = {"io.modelcontextprotocol/protocolVersion": "2026-07-28", "io.modelcontextprotocol/clientCapabilities": {}}


def session() -> McpSession:
    return McpSession(ServerInfo("srv", "1.0", "Srv", "use echo", [TOOL], {"claude/channel": {}}))


def initialize(version: str = "2025-06-18") -> Request:
    params = {"protocolVersion": version, "capabilities": {}, "clientInfo": {"name": "t", "version": "0"}}
    return Request(0, "initialize", params)


@pytest.mark.parametrize("version", HANDSHAKE_VERSIONS)
def test_initialize_answers_a_served_version_as_asked(version: str) -> None:
    answer = session().route(initialize(version))
    assert isinstance(answer, dict)
    assert answer["protocolVersion"] == version
    assert answer["capabilities"] == {"tools": {"listChanged": False}, "experimental": {"claude/channel": {}}}
    assert answer["serverInfo"] == {"name": "srv", "title": "Srv", "version": "1.0"}
    assert answer["instructions"] == "use echo"


def test_initialize_answers_the_latest_for_a_version_not_served() -> None:
    for version in ("2023-01-01", "2026-07-28", "next"):
        answer = session().route(initialize(version))
        assert isinstance(answer, dict)
        assert answer["protocolVersion"] == LATEST_HANDSHAKE


def test_handshake_requests_and_their_errors() -> None:
    mcp = session()
    early = mcp.route(Request(1, "tools/list"))
    assert isinstance(early, RpcError)
    assert early.code == -32600  # before initialize
    assert mcp.route(Request(2, "ping")) == {}  # ping is fine before it
    bad = mcp.route(Request(3, "initialize", {"protocolVersion": 5}))
    assert isinstance(bad, RpcError)
    assert bad.code == -32602
    assert isinstance(mcp.route(initialize()), dict)
    assert mcp.route(Request(4, "tools/list")) == {"tools": [TOOL]}
    assert mcp.route(Request(5, "tools/call", {"name": "echo", "arguments": {"a": 1}})) == ToolCall(
        "echo", {"a": 1}, stateless=False
    )
    for params in ({}, {"name": 5}, {"name": "echo", "arguments": [1]}):
        answer = mcp.route(Request(6, "tools/call", params))
        assert isinstance(answer, RpcError)
        assert answer.code == -32602, params
    unknown = mcp.route(Request(7, "resources/list"))
    assert unknown == RpcError(-32601, "Method not found", "resources/list")
    mcp.notified("notifications/initialized")
    assert mcp.initialized


def test_the_stateless_era_is_chosen_per_request_by_its_envelope() -> None:
    mcp = session()
    discovered = mcp.route(Request(1, "server/discover", {"_meta": ENVELOPE}))
    assert isinstance(discovered, dict)
    assert discovered["supportedVersions"] == ["2026-07-28"]
    assert discovered["resultType"] == "complete"
    assert discovered["_meta"]["io.modelcontextprotocol/serverInfo"]["name"] == "srv"
    listed = mcp.route(Request(2, "tools/list", {"_meta": ENVELOPE}))
    assert isinstance(listed, dict)
    assert listed["tools"] == [TOOL]  # no handshake needed
    call = mcp.route(Request(3, "tools/call", {"name": "echo", "_meta": ENVELOPE}))
    assert call == ToolCall("echo", None, stateless=True)
    assert isinstance(call, ToolCall)
    assert mcp.tool_result(call, "hi", is_error=False)["resultType"] == "complete"
    old = mcp.route(Request(4, "tools/list", {"_meta": {**ENVELOPE, "io.modelcontextprotocol/protocolVersion": "1"}}))
    assert old == RpcError(-32022, "Unsupported protocol version", {"supported": ["2026-07-28"], "requested": "1"})
    missing = mcp.route(Request(5, "tools/list", {"_meta": {"io.modelcontextprotocol/protocolVersion": "2026-07-28"}}))
    assert isinstance(missing, RpcError)
    assert missing.code == -32602
    ping = mcp.route(Request(6, "ping", {"_meta": ENVELOPE}))
    assert isinstance(ping, RpcError)
    assert ping.code == -32601  # the stateless revision removed ping


class Client:
    """The client's end of a :class:`StdioConnection` over memory streams."""

    def __init__(self, send: trio.abc.SendStream, receive: trio.abc.ReceiveStream) -> None:
        self.send_stream = send
        self.receive_stream = receive
        self.buffer = b""

    async def send(self, message: dict[str, Any] | bytes) -> None:
        data = message if isinstance(message, bytes) else json.dumps(message).encode()
        await self.send_stream.send_all(data + b"\n")

    async def receive(self) -> dict[str, Any]:
        while b"\n" not in self.buffer:
            self.buffer += await self.receive_stream.receive_some(65536)
        line, self.buffer = self.buffer.split(b"\n", 1)
        answer: dict[str, Any] = json.loads(line)
        return answer


async def test_the_connection_over_memory_streams() -> None:
    to_server_send, to_server_receive = trio.testing.memory_stream_one_way_pair()
    to_client_send, to_client_receive = trio.testing.memory_stream_one_way_pair()
    connection = StdioConnection(to_server_receive, to_client_send, session())
    client = Client(to_server_send, to_client_receive)
    release = trio.Event()
    started: list[RequestId] = []
    unanswered: list[RequestId] = []
    written: list[object] = []
    connection.add_unanswered_callback(unanswered.append)
    connection.add_written_callback(written.append)

    async def run_tool(call: ToolCall, request_id: RequestId) -> tuple[str, bool]:
        started.append(request_id)
        if call.arguments and call.arguments.get("wait"):
            await release.wait()
        return f"echo {call.arguments}", call.name != "echo"

    with trio.fail_after(DEADLINE):
        async with trio.open_nursery() as nursery:
            served = trio.Event()

            async def serve() -> None:
                await connection.serve(run_tool)
                served.set()

            nursery.start_soon(serve)
            await client.send({"jsonrpc": "2.0", "id": 1, "method": "initialize", "params": initialize().params})
            assert (await client.receive())["result"]["protocolVersion"] == "2025-06-18"
            await client.send({"jsonrpc": "2.0", "method": "notifications/initialized"})
            await client.send(b"not json")  # logged, not answered
            await client.send({"jsonrpc": "2.0", "id": "bad", "method": 7})
            assert (await client.receive())["error"]["code"] == -32600
            # A slow call, then a ping: the ping is answered while the call waits.
            call = {"name": "echo", "arguments": {"wait": True}}
            await client.send({"jsonrpc": "2.0", "id": 2, "method": "tools/call", "params": call})
            await client.send({"jsonrpc": "2.0", "id": 3, "method": "ping"})
            assert await client.receive() == {"jsonrpc": "2.0", "id": 3, "result": {}}
            assert connection.initialized.is_set()
            # Cancelled: no answer, and the cancellation is reported.
            cancel = {"requestId": 2, "reason": "user"}
            await client.send({"jsonrpc": "2.0", "method": "notifications/cancelled", "params": cancel})
            await client.send({"jsonrpc": "2.0", "id": 4, "method": "tools/call", "params": {"name": "other"}})
            answer = await client.receive()
            assert answer["id"] == 4
            assert answer["result"] == {"content": [{"type": "text", "text": "echo None"}], "isError": True}
            assert unanswered == [2]
            # A call still running when the input ends is answered before the connection returns.
            await client.send({"jsonrpc": "2.0", "id": 5, "method": "tools/call", "params": call})
            while 5 not in started:
                await trio.testing.wait_all_tasks_blocked()
            await client.send_stream.aclose()
            await trio.testing.wait_all_tasks_blocked()
            assert not served.is_set()
            release.set()
            answer = await client.receive()
            assert answer["id"] == 5
            assert answer["result"]["isError"] is False
            await served.wait()
    assert [getattr(message, "id", None) for message in written] == [1, "bad", 3, 4, 5]
