"""MCP's stdio transport for a server running under Trio, cancellable at any moment.

The wire is the SDK's: one JSON-RPC message per line, UTF-8, parsed with ``mcp.types.jsonrpc_message_adapter`` and
written with ``model_dump_json(by_alias=True, exclude_unset=True)``, exchanged with ``Server.run`` as
:class:`~mcp.shared.message.SessionMessage` items over anyio memory streams (``SessionMessage | Exception`` in,
``SessionMessage`` out), exactly what ``mcp.server.stdio.stdio_server`` yields.

Why not ``stdio_server`` itself: it reads stdin with ``anyio.wrap_file`` in a worker thread that cannot be
abandoned, so under Trio a cancelled server (SIGTERM, the harness gone) waits for the client's *next line* before
it can exit; with the client idle, that is until it is killed. Here stdin and stdout are Trio streams
(:func:`agent_comms.stdio.open_stdio`: polled pipes, sockets and terminals; files in abandonable threads),
so cancelling the bridge ends it at once and it still leaves the mesh gracefully.

At end of input the transport lets the server answer every request it has read before it tells the server the
input ended (the SDK's transports end at once, and in-flight requests get "Connection closed" errors), so a client
that sends a request and closes stdin, or a file piped in, gets every answer.

While serving, file descriptor 1 points at stderr (as the SDK's transport does), so a stray ``print`` cannot
corrupt the protocol; the wire is written on a private duplicate.
"""

from __future__ import annotations

import contextlib
import json
import os
import sys
from collections.abc import AsyncIterator, Callable, Iterator
from contextlib import asynccontextmanager
from functools import partial
from typing import Final

import anyio
import trio
from anyio.streams.memory import MemoryObjectReceiveStream, MemoryObjectSendStream
from mcp import types
from mcp.shared.message import ServerMessageMetadata, SessionMessage

from agent_comms.stdio import LineSplitter, open_stdio

__all__ = ["MAX_MESSAGE", "Refusal", "StdioStreams", "diverted_stdout", "open_stdio_transport", "parse_line"]

#: Longest message read, in bytes; a longer one is reported to the server as an exception and skipped.
MAX_MESSAGE: Final = 4 << 20
_CHUNK: Final = 65536
#: How long a closing transport waits for its last messages to be written.
_FLUSH_TIMEOUT: Final = 5.0
#: How long the end of input waits for the answers to the requests already read.
_ANSWER_TIMEOUT: Final = 10.0

StdioStreams = tuple[MemoryObjectReceiveStream[SessionMessage | Exception], MemoryObjectSendStream[SessionMessage]]


def parse_line(line: bytes | None) -> SessionMessage | Exception | None:
    """One line of input as the server reads it; ``None`` for a blank line (skipped)."""
    if line is None:
        return ValueError(f"a message longer than {MAX_MESSAGE} bytes was skipped")
    if not line.strip():
        return None
    try:
        message = types.jsonrpc_message_adapter.validate_json(line, by_name=False)
    except ValueError as exc:  # pydantic's ValidationError is a ValueError
        try:
            # Valid JSON that pydantic's parser refuses: a lone surrogate escape ("\\ud800") in an argument.
            # Parsed here, the request gets an answer (the tool names the offending parameter) instead of none.
            message = types.jsonrpc_message_adapter.validate_python(json.loads(line), by_name=False)
        except (ValueError, RecursionError):
            return exc
    return SessionMessage(message)


class _OpenRequests:
    """The requests read and not answered yet (a response or an error written, or settled without an answer)."""

    def __init__(self, on_unanswered: Callable[[types.RequestId], None] | None) -> None:
        self._open: set[types.RequestId] = set()
        self._none_open = trio.Event()
        self._none_open.set()
        self._on_unanswered = on_unanswered

    def read(self, item: SessionMessage) -> SessionMessage:
        """A request came in: track it (and ask the server to say if it settles without an answer)."""
        request = item.message
        if not isinstance(request, types.JSONRPCRequest):
            return item
        self._open.add(request.id)
        if self._none_open.is_set():
            self._none_open = trio.Event()
        return SessionMessage(request, ServerMessageMetadata(on_request_unanswered=partial(self._settled, request.id)))

    def answered(self, request_id: types.RequestId | None) -> None:
        self._open.discard(request_id)  # None (an error for an unknown id) is never open
        if not self._open:
            self._none_open.set()

    async def _settled(self, request_id: types.RequestId) -> None:
        """The server will not answer ``request_id`` (the client cancelled it)."""
        self.answered(request_id)
        if self._on_unanswered is not None:
            self._on_unanswered(request_id)
        await trio.lowlevel.checkpoint()

    async def wait_answered(self) -> None:
        await self._none_open.wait()


#: Decides, for a request read, to answer it with this error instead of passing it to the server (``None``: pass).
Refusal = Callable[[types.JSONRPCRequest], types.ErrorData | None]


async def _read(
    receive: trio.abc.ReceiveStream,
    sink: MemoryObjectSendStream[SessionMessage | Exception],
    requests: _OpenRequests,
    on_read: Callable[[SessionMessage], None] | None = None,
    refuse: tuple[Refusal, MemoryObjectSendStream[SessionMessage]] | None = None,
) -> None:
    """Lines from ``receive`` to the server until end of input (which closes ``sink``: the server's cue to end)."""
    splitter = LineSplitter(MAX_MESSAGE)

    async def forward(line: bytes | None) -> None:
        item = parse_line(line)
        if isinstance(item, SessionMessage):
            if on_read is not None:
                on_read(item)
            if refuse is not None and isinstance(item.message, types.JSONRPCRequest):
                error = refuse[0](item.message)
                if error is not None:
                    await refuse[1].send(
                        SessionMessage(types.JSONRPCError(jsonrpc="2.0", id=item.message.id, error=error))
                    )
                    return
            await sink.send(requests.read(item))
        elif item is not None:
            await sink.send(item)

    async with sink:
        try:
            while data := await receive.receive_some(_CHUNK):
                for line in splitter.feed(data):
                    await forward(line)
            for line in splitter.close():
                await forward(line)
            with trio.move_on_after(_ANSWER_TIMEOUT):
                await requests.wait_answered()
        except (anyio.BrokenResourceError, anyio.ClosedResourceError):
            pass  # the server stopped reading: it is ending anyway


async def _write(
    send: trio.abc.SendStream,
    source: MemoryObjectReceiveStream[SessionMessage],
    requests: _OpenRequests,
    on_written: Callable[[SessionMessage], None] | None,
    done: trio.Event,
) -> None:
    """The server's messages to ``send``, one line each, until the server closes its end."""
    try:
        async with source:
            async for message in source:
                data = message.message.model_dump_json(by_alias=True, exclude_unset=True)
                await send.send_all(data.encode() + b"\n")
                if isinstance(message.message, types.JSONRPCResponse | types.JSONRPCError):
                    requests.answered(message.message.id)
                if on_written is not None:
                    on_written(message)
    finally:
        done.set()


@asynccontextmanager
async def open_stdio_transport(
    on_written: Callable[[SessionMessage], None] | None = None,
    on_unanswered: Callable[[types.RequestId], None] | None = None,
    on_read: Callable[[SessionMessage], None] | None = None,
    refuse: Refusal | None = None,
) -> AsyncIterator[StdioStreams]:
    """This process's stdin and stdout as the stream pair for ``Server.run``.

    ``refuse(request)`` may answer a request with an error before the server sees it (the Claude Code bridge
    refuses ``server/discover`` so that the client opens the connection with ``initialize``).

    ``on_read(message)`` is called with each message read, before the server sees it; ``on_written(message)`` once
    each outgoing message has been written to stdout in full (the bridge marks the events of a tool result read
    then); ``on_unanswered(request_id)`` when the server settles a request without answering it (the client
    cancelled it). Leaving the block waits a little for the last messages to be
    written, then stops; a broken stdout raises :class:`trio.BrokenResourceError` out of the block.
    """
    async with open_stdio() as (receive, send):
        read_sink, read_stream = anyio.create_memory_object_stream[SessionMessage | Exception](0)
        write_stream, write_source = anyio.create_memory_object_stream[SessionMessage](0)
        requests = _OpenRequests(on_unanswered)
        written = trio.Event()
        with diverted_stdout():
            async with trio.open_nursery() as nursery:
                refusing = None if refuse is None else (refuse, write_stream.clone())
                nursery.start_soon(_read, receive, read_sink, requests, on_read, refusing)
                nursery.start_soon(_write, send, write_source, requests, on_written, written)
                try:
                    yield read_stream, write_stream
                    await write_stream.aclose()  # the server closes it when it ends; closing twice is fine
                    if refusing is not None:
                        await refusing[1].aclose()
                    with trio.move_on_after(_FLUSH_TIMEOUT):
                        await written.wait()
                finally:
                    nursery.cancel_scope.cancel()


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
