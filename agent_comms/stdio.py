"""Lines of JSON over this process's standard input and output, with Trio: the stdio helpers of every bridge.

:func:`open_stdio` gives stdin and stdout as Trio streams whatever they are (pipes, sockets, terminals, regular
files); :class:`LineSplitter` cuts bytes into lines with a bound on their length; :class:`LineWriter` writes one JSON
object per line, whole lines only. The jsonl bridge, the MCP-family bridges' transport, the Claude Code hub and the
chat use them.
"""

from __future__ import annotations

import os
import stat
from collections.abc import AsyncIterator, Callable, Mapping
from contextlib import asynccontextmanager
from typing import Any, Final

import msgspec
import trio

__all__ = ["CHUNK", "MAX_LINE", "LineSplitter", "LineWriter", "open_stdio"]

#: Longest input line, in bytes; a longer one is answered with an error and skipped.
MAX_LINE: Final = 1 << 20
#: Bytes asked of a stream at a time.
CHUNK: Final = 65536

_encoder = msgspec.json.Encoder()


class LineSplitter:
    """Bytes in, lines out (without the newline); ``None`` stands for a line longer than ``max_line``.

    ``on_skip``, if given, is called with the first ``head`` bytes of each such line as its ``None`` is put out
    (so that a protocol can still answer it, if its start names the request).
    """

    def __init__(
        self, max_line: int = MAX_LINE, *, on_skip: Callable[[bytes], None] | None = None, head: int = 4096
    ) -> None:
        self.max_line = max_line
        self._on_skip = on_skip
        self._head = head
        self._buffer = bytearray()
        self._skipping = False  # inside an over-long line that was already reported

    def feed(self, data: bytes | bytearray) -> list[bytes | None]:
        """Add ``data``; return the lines it completed."""
        self._buffer += data
        lines: list[bytes | None] = []
        while (end := self._buffer.find(b"\n")) >= 0:
            line = bytes(self._buffer[:end])
            del self._buffer[: end + 1]
            if self._skipping:
                self._skipping = False
            elif len(line) <= self.max_line:
                lines.append(line)
            else:
                self._skipped(lines, line)
        if len(self._buffer) > self.max_line:
            if not self._skipping:
                self._skipped(lines, self._buffer)
                self._skipping = True
            self._buffer.clear()
        return lines

    def _skipped(self, lines: list[bytes | None], line: bytes | bytearray) -> None:
        lines.append(None)
        if self._on_skip is not None:
            self._on_skip(bytes(line[: self._head]))

    def close(self) -> list[bytes | None]:
        """End of input: the last line, if it had no newline."""
        rest, skipping = bytes(self._buffer), self._skipping
        self._buffer.clear()
        return [rest] if rest and not skipping else []


class LineWriter:
    """Writes one JSON object per line; whole lines only, whichever task writes."""

    def __init__(self, stream: trio.abc.SendStream) -> None:
        self._stream = stream
        self._lock = trio.Lock()

    async def write(self, message: Mapping[str, Any]) -> None:
        """Encode ``message`` and send its line; returns once the stream has taken all of it."""
        try:
            data = _encoder.encode(message)
        except (TypeError, msgspec.EncodeError):  # a tool result's data that JSON cannot carry: leave it out
            data = _encoder.encode({key: value for key, value in message.items() if key != "data"})
        async with self._lock:
            await self._stream.send_all(data + b"\n")


@asynccontextmanager
async def open_stdio() -> AsyncIterator[tuple[trio.abc.ReceiveStream, trio.abc.SendStream]]:
    """This process's stdin and stdout as Trio streams; their blocking mode is put back afterwards.

    Pipes, sockets and terminals are polled (:class:`trio.lowlevel.FdStream`, on a duplicate so closing it leaves
    fd 0 and 1 open); anything else (a regular file, ``/dev/null``) is read and written in a worker thread.
    """
    blocking = {fd: os.get_blocking(fd) for fd in (0, 1)}
    receive, send = _fd_stream(0), _fd_stream(1)
    try:
        yield receive, send
    finally:
        for stream in (receive, send):
            await stream.aclose()
        for fd, mode in blocking.items():
            os.set_blocking(fd, mode)


def _fd_stream(fd: int) -> trio.abc.Stream:
    mode = os.fstat(fd).st_mode
    if stat.S_ISFIFO(mode) or stat.S_ISSOCK(mode) or os.isatty(fd):
        return trio.lowlevel.FdStream(os.dup(fd))
    return _ThreadedFileStream(os.dup(fd))


class _ThreadedFileStream(trio.abc.Stream):
    """A file that cannot be polled (epoll refuses regular files), read and written in a worker thread."""

    def __init__(self, fd: int) -> None:
        self._fd = fd

    async def receive_some(self, max_bytes: int | None = None) -> bytes:
        return await trio.to_thread.run_sync(os.read, self._fd, max_bytes or CHUNK, abandon_on_cancel=True)

    async def send_all(self, data: bytes | bytearray | memoryview) -> None:
        view = memoryview(data)
        while view:
            written = await trio.to_thread.run_sync(os.write, self._fd, view)
            view = view[written:]

    async def wait_send_all_might_not_block(self) -> None:
        await trio.lowlevel.checkpoint()

    async def aclose(self) -> None:
        if self._fd >= 0:
            os.close(self._fd)
            self._fd = -1
        await trio.lowlevel.checkpoint()
