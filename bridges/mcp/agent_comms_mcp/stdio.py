"""MCP's stdio transport for Trio: JSON-RPC lines in on stdin, out on stdout, requests served as they come.

:class:`StdioConnection` reads lines (:mod:`agent_comms_mcp.jsonrpc`), answers each request through an
:class:`~agent_comms_mcp.session.McpSession`, runs each ``tools/call`` in a task of its own (so a slow call does not
hold up a ``ping``, and ``notifications/cancelled`` can cancel it), and writes whole lines, one writer at a time.

Stdin and stdout are Trio streams (:func:`agent_comms.stdio.open_stdio`: polled pipes, sockets and terminals; files
in abandonable threads), so cancelling the bridge (SIGTERM, the harness gone) ends it at once, and it still leaves
the mesh gracefully.

At end of input the connection lets every request it has read be answered (for up to ``_ANSWER_TIMEOUT``) before
it returns, so a client that sends a request and closes stdin, or a file piped in, gets every answer.

While serving, file descriptor 1 points at stderr, so a stray ``print`` cannot corrupt the protocol; the wire is
written on a private duplicate.
"""

from __future__ import annotations

import contextlib
import os
import sys
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from contextlib import asynccontextmanager
from typing import Final

import trio

from agent_comms.stdio import LineSplitter, open_stdio
from agent_comms_mcp.jsonrpc import (
    MAX_MESSAGE,
    ErrorResponse,
    Malformed,
    Notification,
    Outgoing,
    Request,
    RequestId,
    Response,
    RpcError,
    encode,
    parse_line,
)
from agent_comms_mcp.session import CANCELLED, McpSession, ToolCall

__all__ = [
    "MAX_MESSAGE",
    "Refusal",
    "StdioConnection",
    "ToolRunner",
    "diverted_stdout",
    "open_stdio_connection",
    "parse_line",
]

_CHUNK: Final = 65536
#: How long the end of input waits for the answers to the requests already read.
_ANSWER_TIMEOUT: Final = 10.0

#: Decides, for a request read, to answer it with this error instead of serving it (``None``: serve it).
Refusal = Callable[[Request], RpcError | None]
#: Runs a tool call for the request with this id: the result's text and whether it is an error.
ToolRunner = Callable[[ToolCall, RequestId], Awaitable[tuple[str, bool]]]


class StdioConnection:
    """One MCP client on a pair of Trio streams (this process's stdin and stdout in the bridge)."""

    def __init__(
        self,
        receive: trio.abc.ReceiveStream,
        send: trio.abc.SendStream,
        session: McpSession,
        *,
        program: str = "agent-comms-mcp",
        refuse: Refusal | None = None,
    ) -> None:
        self.session = session
        self.program = program
        self._receive = receive
        self._send = send
        self._refuse = refuse
        self._lock = trio.StrictFIFOLock()
        self._calls: dict[RequestId, trio.CancelScope] = {}
        self._none_open = trio.Event()
        self._none_open.set()
        self._on_written: list[Callable[[Outgoing], None]] = []
        self._on_unanswered: list[Callable[[RequestId], None]] = []
        #: set once the client has sent ``notifications/initialized``
        self.initialized = trio.Event()

    def add_written_callback(self, callback: Callable[[Outgoing], None]) -> None:
        """Call ``callback`` with each message once it has been written in full (in the writer's task)."""
        self._on_written.append(callback)

    def add_unanswered_callback(self, callback: Callable[[RequestId], None]) -> None:
        """Call ``callback`` with the id of each request the client cancelled before it was answered."""
        self._on_unanswered.append(callback)

    async def send(self, message: Outgoing) -> None:
        """Write ``message`` as one line; raises :class:`trio.BrokenResourceError` if stdout is gone."""
        data = encode(message)
        async with self._lock:
            await self._send.send_all(data)
        for callback in self._on_written:
            callback(message)

    async def serve(self, run_tool: ToolRunner) -> None:
        """Answer requests until end of input and until the requests read are answered (or a timeout)."""
        splitter = LineSplitter(MAX_MESSAGE)
        async with trio.open_nursery() as nursery:
            while data := await self._receive.receive_some(_CHUNK):
                for line in splitter.feed(data):
                    await self._handle(line, nursery, run_tool)
            for line in splitter.close():
                await self._handle(line, nursery, run_tool)
            with trio.move_on_after(_ANSWER_TIMEOUT):
                await self._none_open.wait()
            nursery.cancel_scope.cancel()

    async def _handle(self, line: bytes | None, nursery: trio.Nursery, run_tool: ToolRunner) -> None:
        message = parse_line(line, MAX_MESSAGE)
        if message is None:
            return
        if isinstance(message, ValueError):
            print(f"{self.program}: skipped a message: {message}", file=sys.stderr)
        elif isinstance(message, Request):
            await self._request(message, nursery, run_tool)
        elif isinstance(message, Notification):
            self._notification(message)
        elif isinstance(message, Malformed):
            await self.send(message.answer)
        # A client's response or error response: this server sends no requests, so nothing waits for one.

    async def _request(self, request: Request, nursery: trio.Nursery, run_tool: ToolRunner) -> None:
        refused = self._refuse(request) if self._refuse is not None else None
        answer = refused if refused is not None else self.session.route(request)
        if isinstance(answer, RpcError):
            await self.send(ErrorResponse(request.id, answer))
        elif isinstance(answer, ToolCall):
            scope = trio.CancelScope()
            self._calls[request.id] = scope
            self._none_open = trio.Event() if self._none_open.is_set() else self._none_open
            nursery.start_soon(self._call, request.id, answer, run_tool, scope)
        else:
            await self.send(Response(request.id, answer))

    async def _call(self, request_id: RequestId, call: ToolCall, run_tool: ToolRunner, scope: trio.CancelScope) -> None:
        try:
            shown: tuple[str, bool] | None = None
            with scope:
                shown = await run_tool(call, request_id)
            if shown is None:  # cancelled by the client: no answer (whatever the call held goes back)
                for callback in self._on_unanswered:
                    callback(request_id)
                return
            text, is_error = shown
            with trio.CancelScope(shield=True):  # the result is built (its events drained): write it whole
                await self.send(Response(request_id, self.session.tool_result(call, text, is_error=is_error)))
        finally:
            if self._calls.get(request_id) is scope:
                del self._calls[request_id]
            if not self._calls:
                self._none_open.set()

    def _notification(self, notification: Notification) -> None:
        if notification.method == CANCELLED:
            request_id = (notification.params or {}).get("requestId")
            scope = self._calls.get(request_id) if isinstance(request_id, str | int) else None
            if scope is not None:
                scope.cancel()
            return
        self.session.notified(notification.method)
        if self.session.initialized:
            self.initialized.set()


@asynccontextmanager
async def open_stdio_connection(
    session: McpSession, *, program: str = "agent-comms-mcp", refuse: Refusal | None = None
) -> AsyncIterator[StdioConnection]:
    """This process's stdin and stdout as a :class:`StdioConnection` (fd 1 diverted to stderr meanwhile).

    ``refuse(request)`` may answer a request with an error before the session sees it (the Claude Code bridge
    refuses ``server/discover`` so that the client opens the connection with ``initialize``).
    """
    async with open_stdio() as (receive, send):
        with diverted_stdout():
            yield StdioConnection(receive, send, session, program=program, refuse=refuse)


@contextlib.contextmanager
def diverted_stdout() -> Iterator[None]:
    """Point file descriptor 1 at stderr for the duration (the wire has its own duplicate of stdout)."""
    with contextlib.suppress(OSError, ValueError):
        sys.stdout.flush()
    try:
        saved = os.dup(1)
    except OSError:  # no stdout at all: nothing to protect
        yield
        return
    try:
        os.dup2(2, 1)
    except OSError:  # no stderr to divert to: leave stdout as it is
        os.close(saved)
        yield
        return
    try:
        yield
    finally:
        with contextlib.suppress(OSError, ValueError):
            sys.stdout.flush()
        os.dup2(saved, 1)
        os.close(saved)
