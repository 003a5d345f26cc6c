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
from agent_comms_mcp.jsonrpc import Notification, Request, RequestId, RpcError
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


class Served:
    """A :class:`StdioConnection` served over memory streams (output ``lockstep``: written only as it is read),
    with a tool runner that waits for ``release`` when the call's arguments say ``wait``."""

    def __init__(self, *, lockstep: bool = False) -> None:
        to_server_send, to_server_receive = trio.testing.memory_stream_one_way_pair()
        if lockstep:
            to_client_send, to_client_receive = trio.testing.lockstep_stream_one_way_pair()
        else:
            to_client_send, to_client_receive = trio.testing.memory_stream_one_way_pair()
        self.connection = StdioConnection(to_server_receive, to_client_send, session())
        self.client = Client(to_server_send, to_client_receive)
        self.release = trio.Event()
        self.built: list[RequestId] = []
        self.unanswered: list[RequestId] = []
        self.written: list[object] = []
        self.connection.add_unanswered_callback(self.unanswered.append)
        self.connection.add_written_callback(self.written.append)

    async def run_tool(self, call: ToolCall, request_id: RequestId) -> tuple[str, bool]:
        if call.arguments and call.arguments.get("wait"):
            await self.release.wait()
        self.built.append(request_id)
        return f"echo {call.arguments}", False

    async def initialize(self, version: str) -> None:
        params = initialize(version).params
        await self.client.send({"jsonrpc": "2.0", "id": 0, "method": "initialize", "params": params})
        assert (await self.client.receive())["result"]["protocolVersion"] == version
        await self.client.send({"jsonrpc": "2.0", "method": "notifications/initialized"})

    async def receive_line(self) -> Any:
        while b"\n" not in self.client.buffer:
            self.client.buffer += await self.client.receive_stream.receive_some(65536)
        line, self.client.buffer = self.client.buffer.split(b"\n", 1)
        return json.loads(line)


def call(request_id: RequestId, **arguments: Any) -> dict[str, Any]:
    params = {"name": "echo", "arguments": arguments}
    return {"jsonrpc": "2.0", "id": request_id, "method": "tools/call", "params": params}


async def test_a_result_write_nobody_reads_is_abandoned_once_the_connection_is_cancelled() -> None:
    """The client keeps stdout open but no longer reads it: cancelling the connection (SIGTERM) still ends it, within
    the write's 2 s grace, and the result not written is reported unanswered (its events stay unread)."""
    served = Served(lockstep=True)
    with trio.fail_after(DEADLINE):
        async with trio.open_nursery() as nursery:
            nursery.start_soon(served.connection.serve, served.run_tool)
            await served.client.send({**call(1), "params": {"name": "echo", "_meta": ENVELOPE}})
            while 1 not in served.built:
                await trio.testing.wait_all_tasks_blocked()
            await trio.testing.wait_all_tasks_blocked()  # the result's write is blocked: nobody reads
            start = trio.current_time()
            nursery.cancel_scope.cancel()
        assert trio.current_time() - start < 5
    assert served.unanswered == [1]
    assert served.written == []


async def test_batches_are_served_in_2025_03_26_and_refused_in_the_other_revisions() -> None:
    served = Served()
    with trio.fail_after(DEADLINE):
        async with trio.open_nursery() as nursery:
            nursery.start_soon(served.connection.serve, served.run_tool)
            await served.initialize("2025-03-26")
            batch = [
                {"jsonrpc": "2.0", "id": 1, "method": "ping"},
                call(2, text="a"),
                {"jsonrpc": "2.0", "method": "notifications/progress", "params": {}},
                {"jsonrpc": "2.0", "id": 3, "method": "resources/list"},
                {"jsonrpc": "2.0", "id": 4, "method": 5},
                call("five", text="b"),
            ]
            await served.client.send(json.dumps(batch).encode())
            answers = await served.receive_line()  # one array, once every request of the batch is answered
            assert isinstance(answers, list)
            by_id = {answer["id"]: answer for answer in answers}
            assert sorted(by_id, key=str) == [1, 2, 3, 4, "five"]
            assert by_id[1]["result"] == {}
            assert by_id[2]["result"]["content"][0]["text"] == "echo {'text': 'a'}"
            assert by_id["five"]["result"]["content"][0]["text"] == "echo {'text': 'b'}"
            assert by_id[3]["error"]["code"] == -32601
            assert by_id[4]["error"]["code"] == -32600
            # A batch of notifications only: nothing to answer. Then a single request is answered alone.
            await served.client.send(json.dumps([{"jsonrpc": "2.0", "method": "notifications/progress"}]).encode())
            await served.client.send({"jsonrpc": "2.0", "id": 6, "method": "ping"})
            assert await served.receive_line() == {"jsonrpc": "2.0", "id": 6, "result": {}}
            nursery.cancel_scope.cancel()

    for version in ("2025-06-18", "2025-11-25"):
        served = Served()
        with trio.fail_after(DEADLINE):
            async with trio.open_nursery() as nursery:
                nursery.start_soon(served.connection.serve, served.run_tool)
                await served.initialize(version)
                batch = [{"jsonrpc": "2.0", "id": 1, "method": "ping"}, {"jsonrpc": "2.0", "method": "x"}, call(2)]
                await served.client.send(json.dumps(batch).encode())
                # Each request refused on a line of its own: that revision's client reads single messages only.
                for request_id in (1, 2):
                    answer = await served.receive_line()
                    assert answer["id"] == request_id
                    assert answer["error"]["code"] == -32600
                    assert "batches are not part of MCP " + version in answer["error"]["message"]
                nursery.cancel_scope.cancel()
        assert served.built == []


async def test_a_request_too_large_is_answered_when_its_start_names_its_id() -> None:
    served = Served()
    filler = "x" * (5 << 20)
    with trio.fail_after(DEADLINE):
        async with trio.open_nursery() as nursery:
            nursery.start_soon(served.connection.serve, served.run_tool)
            await served.initialize("2025-06-18")
            await served.client.send(json.dumps(call(0, text=filler)).encode())
            answer = await served.receive_line()
            assert (answer["id"], answer["error"]["code"]) == (0, -32600)
            # The top-level id counts, after an inner one.
            too_large = {"method": "tools/call", "params": {"a": {"id": 3}}, "id": "big", "b": filler, "jsonrpc": "2.0"}
            await served.client.send(json.dumps(too_large).encode())
            assert await served.receive_line() == {
                "jsonrpc": "2.0",
                "id": "big",
                "error": {"code": -32600, "message": "Invalid request: message too large (limit 4 MiB)"},
            }
            # Its id past the first bytes: nobody to answer (logged); the next request is served.
            late = {"jsonrpc": "2.0", "method": "tools/call", "params": {"b": filler}, "id": 4}
            await served.client.send(json.dumps(late).encode())
            await served.client.send({"jsonrpc": "2.0", "id": 5, "method": "ping"})
            assert await served.receive_line() == {"jsonrpc": "2.0", "id": 5, "result": {}}
            nursery.cancel_scope.cancel()
    assert served.built == []


async def test_a_cancel_read_before_the_result_is_written_keeps_it_unwritten() -> None:
    """The result is built, but another message is being written: a cancel read meanwhile drops the result (its
    events go back), though the call itself had returned."""
    served = Served(lockstep=True)
    with trio.fail_after(DEADLINE):
        async with trio.open_nursery() as nursery:
            nursery.start_soon(served.connection.serve, served.run_tool)
            notified = trio.Event()

            async def notify() -> None:  # holds the writer's turn until the client reads it
                await served.connection.send(Notification("notifications/message", {"data": "hello"}))
                notified.set()

            nursery.start_soon(notify)
            await trio.testing.wait_all_tasks_blocked()
            await served.client.send({**call(1), "params": {"name": "echo", "_meta": ENVELOPE}})
            while 1 not in served.built:
                await trio.testing.wait_all_tasks_blocked()
            cancel = {"jsonrpc": "2.0", "method": "notifications/cancelled", "params": {"requestId": 1}}
            await served.client.send(cancel)
            await trio.testing.wait_all_tasks_blocked()
            assert (await served.receive_line())["method"] == "notifications/message"
            await notified.wait()
            await served.client.send({"jsonrpc": "2.0", "id": 2, "method": "ping", "params": {}})
            assert await served.receive_line() == {"jsonrpc": "2.0", "id": 2, "result": {}}  # nothing for 1
            await trio.testing.wait_all_tasks_blocked()
            nursery.cancel_scope.cancel()
    assert served.unanswered == [1]
    assert [getattr(message, "id", None) for message in served.written] == [None, 2]


async def test_a_request_reusing_the_id_of_a_call_in_progress_is_refused() -> None:
    served = Served()
    with trio.fail_after(DEADLINE):
        async with trio.open_nursery() as nursery:
            nursery.start_soon(served.connection.serve, served.run_tool)
            await served.initialize("2025-06-18")
            await served.client.send(call(7, wait=True))
            await trio.testing.wait_all_tasks_blocked()
            for reuse in ({"jsonrpc": "2.0", "id": 7, "method": "ping"}, call(7, text="again")):
                await served.client.send(reuse)
                answer = await served.receive_line()
                assert answer["id"] == 7
                assert answer["error"]["code"] == -32600
                assert "in use by a request in progress" in answer["error"]["message"]
            served.release.set()
            answer = await served.receive_line()
            assert answer["result"]["content"][0]["text"] == "echo {'wait': True}"
            nursery.cancel_scope.cancel()
    assert served.built == [7]  # the second call was never run
    assert served.unanswered == []  # the errors touched nothing the call held
