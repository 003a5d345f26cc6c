"""MCP's stdio transport for Trio: JSON-RPC lines in on stdin, out on stdout, requests served as they come.

:class:`StdioConnection` reads lines (:mod:`agent_comms_mcp.jsonrpc`), answers each request through an
:class:`~agent_comms_mcp.session.McpSession`, runs each ``tools/call`` in a task of its own (so a slow call does not
hold up a ``ping``, and ``notifications/cancelled`` can cancel it), and writes whole lines, one writer at a time.

Stdin and stdout are Trio streams (:func:`agent_comms.stdio.open_stdio`: polled pipes, sockets and terminals; files
in abandonable threads), so cancelling the bridge (SIGTERM, the harness gone) ends it at once, and it still leaves
the mesh gracefully.

At end of input the connection lets every request it has read be answered (for up to ``_ANSWER_TIMEOUT``) before
it returns, so a client that sends a request and closes stdin, or a file piped in, gets every answer.

A tool result is written at most once, whole, and reported (``on_written``: its events are read) once written; a
result not written is reported unanswered (its events go back). That holds except when a cancel crosses the answer
in the pipe: the client cancels a call whose result is already being written, and ignores the result that counts as
read. A cancel read before the result's turn to be written comes drops it. A result's write is shielded from
cancellation while the connection serves; once it ends (SIGTERM, end of input) the write gets ``_WRITE_GRACE`` more,
so a client that keeps stdout open but stops reading cannot keep the bridge from leaving the mesh.

A JSON-RPC batch is served (one array answers it) when the session agreed 2025-03-26, the revision that requires it;
otherwise each of its requests is answered *Invalid Request* on a line of its own. A request reusing the id of a
``tools/call`` in progress is refused (that id's events are the call's). A line too long to read is answered
*Invalid Request* if its first bytes name its id (:func:`~agent_comms_mcp.jsonrpc.find_id`).

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
    INVALID_REQUEST,
    MAX_MESSAGE,
    Batch,
    ErrorResponse,
    Incoming,
    Malformed,
    Notification,
    Outgoing,
    Request,
    RequestId,
    Response,
    RpcError,
    encode,
    encode_batch,
    find_id,
    parse_line,
    too_large,
)
from agent_comms_mcp.session import BATCH_VERSION, CANCELLED, McpSession, ToolCall

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
#: How long a tool result being written may still take once the connection ends (SIGTERM, end of input): a client
#: that keeps stdout open but no longer reads it must not keep the bridge from leaving the mesh.
_WRITE_GRACE: Final = 2.0
#: Bytes kept of the start of a line too long to read, to find the id to answer.
_HEAD: Final = 4096

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
        self._skipped: list[bytes] = []  # the heads of the lines too long to read, in order
        self._writes: set[trio.CancelScope] = set()  # the shielded writes of built results
        self._closing = False
        #: set once the client has sent ``notifications/initialized``
        self.initialized = trio.Event()

    def add_written_callback(self, callback: Callable[[Outgoing], None]) -> None:
        """Call ``callback`` with each message once it has been written in full (in the writer's task)."""
        self._on_written.append(callback)

    def add_unanswered_callback(self, callback: Callable[[RequestId], None]) -> None:
        """Call ``callback`` with the id of each ``tools/call`` whose result was not written (the client cancelled
        it, or the write was cut short as the connection ended)."""
        self._on_unanswered.append(callback)

    async def send(self, message: Outgoing) -> None:
        """Write ``message`` as one line; raises :class:`trio.BrokenResourceError` if stdout is gone."""
        await self._write([message])

    async def _write(
        self, messages: list[Outgoing], *, array: bool = False, dropped: Callable[[Outgoing], bool] | None = None
    ) -> list[Outgoing]:
        """Write ``messages`` (one, or a batch's answer as one JSON array) but those ``dropped`` says (asked once
        the writer's turn has come); the messages written."""
        async with self._lock:
            if dropped is not None:
                messages = [message for message in messages if not dropped(message)]
            if not messages:
                return []
            await self._send.send_all(encode_batch(messages) if array else encode(messages[0]))
        for message in messages:
            for callback in self._on_written:
                callback(message)
        return messages

    async def serve(self, run_tool: ToolRunner) -> None:
        """Answer requests until end of input and until the requests read are answered (or a timeout)."""
        splitter = LineSplitter(MAX_MESSAGE, on_skip=self._skipped.append, head=_HEAD)
        async with trio.open_nursery() as nursery:
            try:
                while data := await self._receive.receive_some(_CHUNK):
                    for line in splitter.feed(data):
                        await self._handle(line, nursery, run_tool)
                for line in splitter.close():
                    await self._handle(line, nursery, run_tool)
                with trio.move_on_after(_ANSWER_TIMEOUT):
                    await self._none_open.wait()
                nursery.cancel_scope.cancel()
            finally:  # ending (or cancelled): a result still being written gets a little longer, no more
                self._closing = True
                for scope in self._writes:
                    scope.deadline = min(scope.deadline, trio.current_time() + _WRITE_GRACE)

    async def _handle(self, line: bytes | None, nursery: trio.Nursery, run_tool: ToolRunner) -> None:
        message = parse_line(line, MAX_MESSAGE)
        if message is None:
            return
        if isinstance(message, ValueError):
            print(f"{self.program}: skipped a message: {message}", file=sys.stderr)
            if line is None:
                ident = find_id(self._skipped.pop(0)) if self._skipped else None
                if ident is not None:
                    await self.send(too_large(ident, MAX_MESSAGE))
        elif isinstance(message, Batch):
            await self._batch(message.items, nursery, run_tool)
        elif isinstance(message, Request):
            answer = self._answer(message)
            if isinstance(answer, ToolCall):
                self._start([(message.id, answer)], [], nursery, run_tool, array=False)
            else:
                await self.send(answer)
        elif isinstance(message, Notification):
            self._notification(message)
        elif isinstance(message, Malformed):
            await self.send(message.answer)
        # A client's response or error response: this server sends no requests, so nothing waits for one.

    def _answer(self, request: Request) -> Outgoing | ToolCall:
        """The answer to ``request``, or the tool call to run for it (registered under its id)."""
        if request.id in self._calls:  # the ledger holds that id's events: an error for this one, and no ledger
            problem = f"Invalid request: the id {request.id!r} is in use by a request in progress"
            return ErrorResponse(request.id, RpcError(INVALID_REQUEST, problem))
        refused = self._refuse(request) if self._refuse is not None else None
        answer = refused if refused is not None else self.session.route(request)
        if isinstance(answer, RpcError):
            return ErrorResponse(request.id, answer)
        if isinstance(answer, ToolCall):
            self._calls[request.id] = trio.CancelScope()
            self._none_open = trio.Event() if self._none_open.is_set() else self._none_open
            return answer
        return Response(request.id, answer)

    async def _batch(
        self, items: list[Incoming | Malformed | ValueError], nursery: trio.Nursery, run_tool: ToolRunner
    ) -> None:
        """A JSON-RPC batch: served, and answered with one array, in 2025-03-26; else each request refused."""
        served = self.session.protocol_version == BATCH_VERSION
        answers: list[Outgoing] = []
        calls: list[tuple[RequestId, ToolCall]] = []
        for item in items:
            if isinstance(item, ValueError):
                print(f"{self.program}: skipped a message of a batch: {item}", file=sys.stderr)
            elif isinstance(item, Malformed):
                answers.append(item.answer)
            elif isinstance(item, Request) and not served:
                version = self.session.protocol_version
                problem = f"JSON-RPC batches are not part of MCP {version}" if version else "a batch before initialize"
                problem = f"Invalid request: {problem}"
                answers.append(ErrorResponse(item.id, RpcError(INVALID_REQUEST, problem)))
            elif isinstance(item, Request):
                answer = self._answer(item)
                if isinstance(answer, ToolCall):
                    calls.append((item.id, answer))
                else:
                    answers.append(answer)
            elif isinstance(item, Notification) and served:
                self._notification(item)
        if not served:  # a client of a revision without batches reads single messages only
            for answer in answers:
                await self.send(answer)
        elif calls:
            self._start(calls, answers, nursery, run_tool, array=True)
        elif answers:
            await self._write(answers, array=True)

    def _start(
        self,
        calls: list[tuple[RequestId, ToolCall]],
        answers: list[Outgoing],
        nursery: trio.Nursery,
        run_tool: ToolRunner,
        *,
        array: bool,
    ) -> None:
        scopes = {request_id: self._calls[request_id] for request_id, _ in calls}
        nursery.start_soon(self._calls_answered, calls, scopes, answers, run_tool, array)

    async def _calls_answered(
        self,
        calls: list[tuple[RequestId, ToolCall]],
        scopes: dict[RequestId, trio.CancelScope],
        answers: list[Outgoing],
        run_tool: ToolRunner,
        array: bool,
    ) -> None:
        """Run ``calls`` (together), then write their results (with ``answers``, as one array if ``array``).

        A result is written at most once, and not if its call was cancelled before its turn to be written came:
        then, or if the write is cut short as the connection ends, the call is reported unanswered.
        """
        built: dict[RequestId, Response] = {}
        written: list[Outgoing] = []
        try:
            async with trio.open_nursery() as runs:
                for request_id, call in calls:
                    runs.start_soon(self._run, request_id, call, scopes[request_id], run_tool, built)

            def cancelled(message: Outgoing) -> bool:  # the client cancelled it after its result was built
                return isinstance(message, Response) and message.id in built and scopes[message.id].cancel_called

            with trio.CancelScope(shield=True) as shield:  # the results are built (events drained): write them whole
                if self._closing:
                    shield.deadline = trio.current_time() + _WRITE_GRACE
                self._writes.add(shield)
                try:
                    written = await self._write([*answers, *built.values()], array=array, dropped=cancelled)
                finally:
                    self._writes.discard(shield)
        finally:
            sent = {message.id for message in written if isinstance(message, Response)}
            for request_id in [request_id for request_id in scopes if request_id not in sent]:
                for callback in self._on_unanswered:
                    callback(request_id)
            for request_id, scope in scopes.items():
                if self._calls.get(request_id) is scope:
                    del self._calls[request_id]
            if not self._calls:
                self._none_open.set()

    async def _run(
        self,
        request_id: RequestId,
        call: ToolCall,
        scope: trio.CancelScope,
        run_tool: ToolRunner,
        built: dict[RequestId, Response],
    ) -> None:
        with scope:
            text, is_error = await run_tool(call, request_id)
            # No checkpoint from the return to here: a result built is in ``built``, whatever comes next.
            built[request_id] = Response(request_id, self.session.tool_result(call, text, is_error=is_error))

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
