"""How the runtime reaches other peers: real TCP on 127.0.0.1, or an in-memory network for tests.

Both give the runtime the same three things: listen on a port (exclusively: a second listener on a held port fails
with :class:`PortInUse`), connect to a port, and byte streams (any :class:`trio.abc.Stream`) with the addresses
each end sees, which the handshake binds into its proofs.
"""

from __future__ import annotations

import errno
import itertools
import math
import socket as stdlib_socket
from typing import Protocol

import attrs
import trio

__all__ = ["Connection", "Listener", "MemoryHost", "MemoryNetwork", "Network", "PortInUse", "TcpNetwork"]

HOST = "127.0.0.1"


class PortInUse(OSError):
    """Another process holds the port."""


@attrs.frozen
class Connection:
    """A connected byte stream and the two addresses as this end sees them (``host:port``)."""

    stream: trio.abc.Stream
    local_addr: str
    remote_addr: str


class Listener(Protocol):
    """A listening port."""

    port: int

    async def accept(self) -> Connection:
        """Wait for the next incoming connection."""
        ...

    async def aclose(self) -> None:
        """Stop listening and free the port."""
        ...


class Network(Protocol):
    """Where peers listen and connect."""

    async def listen(self, port: int) -> Listener:
        """Listen on ``port`` (0: any free port). Raises :class:`PortInUse` if it is held."""
        ...

    async def connect(self, port: int) -> Connection:
        """Connect to ``port``. Raises :class:`OSError` if nobody listens there."""
        ...


# ---------------------------------------------------------------------------------------------------------- TCP


#: ``accept`` errors that concern only the one connection (it was aborted before it was accepted): skip it.
_GONE_BEFORE_ACCEPTED = frozenset({errno.ECONNABORTED, errno.EPROTO, errno.EPERM})


def _addr(sockaddr: tuple[str, int]) -> str:
    return f"{sockaddr[0]}:{sockaddr[1]}"


class _TcpListener:
    def __init__(self, sock: trio.socket.SocketType) -> None:
        self._sock = sock
        self.port: int = sock.getsockname()[1]

    async def accept(self) -> Connection:
        while True:
            try:
                sock, _ = await self._sock.accept()
            except OSError as exc:
                if exc.errno in _GONE_BEFORE_ACCEPTED:
                    continue
                raise
            try:
                sock.setsockopt(stdlib_socket.IPPROTO_TCP, stdlib_socket.TCP_NODELAY, 1)
                addresses = _addr(sock.getsockname()), _addr(sock.getpeername())
            except OSError:  # reset by the other end already (ENOTCONN): nothing to serve
                sock.close()
                continue
            return Connection(trio.SocketStream(sock), *addresses)

    async def aclose(self) -> None:
        self._sock.close()
        await trio.lowlevel.checkpoint()


class TcpNetwork:
    """Real sockets on 127.0.0.1."""

    async def listen(self, port: int) -> Listener:
        sock = trio.socket.socket(trio.socket.AF_INET, trio.socket.SOCK_STREAM)
        # SO_REUSEADDR lets a new coordinator bind while old connections linger in TIME_WAIT; on Linux it never lets
        # two sockets listen on one port at once (that would take SO_REUSEPORT, which we never set).
        sock.setsockopt(trio.socket.SOL_SOCKET, trio.socket.SO_REUSEADDR, 1)
        try:
            await sock.bind((HOST, port))
            sock.listen(128)
        except OSError as exc:
            sock.close()
            if exc.errno == errno.EADDRINUSE:
                raise PortInUse(exc.errno, f"port {port} is in use") from None
            raise
        return _TcpListener(sock)

    async def connect(self, port: int) -> Connection:
        stream = await trio.open_tcp_stream(HOST, port)
        sock = stream.socket
        return Connection(stream, _addr(sock.getsockname()), _addr(sock.getpeername()))


# ---------------------------------------------------------------------------------------------------------- memory


class _GatedStream(trio.abc.Stream):
    """A memory stream that stops moving bytes while its owner is frozen (a stand-in for SIGSTOP)."""

    def __init__(self, inner: trio.abc.Stream, network: MemoryNetwork, owner: str | None) -> None:
        self._inner = inner
        self._network = network
        self._owner = owner

    async def send_all(self, data: bytes | bytearray | memoryview) -> None:
        await self._network.wait_thawed(self._owner)
        await self._inner.send_all(data)

    async def wait_send_all_might_not_block(self) -> None:
        await self._inner.wait_send_all_might_not_block()

    async def receive_some(self, max_bytes: int | None = None) -> bytes | bytearray:
        await self._network.wait_thawed(self._owner)
        data = await self._inner.receive_some(max_bytes)
        await self._network.wait_thawed(self._owner)  # bytes that arrived while frozen wait for the thaw
        return data

    async def aclose(self) -> None:
        await self._inner.aclose()


class _MemoryListener:
    def __init__(self, network: MemoryNetwork, port: int, owner: str | None) -> None:
        self._network = network
        self.port = port
        self.owner = owner
        self._send, self._receive = trio.open_memory_channel[Connection](math.inf)

    async def accept(self) -> Connection:
        await self._network.wait_thawed(self.owner)
        conn = await self._receive.receive()
        await self._network.wait_thawed(self.owner)
        return conn

    async def aclose(self) -> None:
        if self._network.listeners.get(self.port) is self:
            del self._network.listeners[self.port]
        self._send.close()
        await trio.lowlevel.checkpoint()


@attrs.define
class MemoryNetwork:
    """An in-memory network for tests (trio's fake network has no TCP): ports, listeners, stream pairs.

    Give each node its own :meth:`host` view: then :meth:`freeze` stops that node's sockets from moving any bytes
    (as SIGSTOP would; connections to it still "connect") and :meth:`thaw` lets them move again.
    """

    listeners: dict[int, _MemoryListener] = attrs.field(factory=dict)
    _ports: itertools.count[int] = attrs.field(factory=lambda: itertools.count(50000))
    _frozen: dict[str, trio.Event] = attrs.field(factory=dict)

    def host(self, name: str) -> MemoryHost:
        """The network as seen by the node called ``name``."""
        return MemoryHost(self, name)

    def freeze(self, name: str) -> None:
        """Stop every socket of host ``name``."""
        self._frozen.setdefault(name, trio.Event())

    def thaw(self, name: str) -> None:
        """Let the sockets of host ``name`` move again."""
        event = self._frozen.pop(name, None)
        if event is not None:
            event.set()

    async def wait_thawed(self, name: str | None) -> None:
        """Return at once unless host ``name`` is frozen; then wait for the thaw."""
        while name is not None and (event := self._frozen.get(name)) is not None:
            await event.wait()

    async def listen(self, port: int, owner: str | None = None) -> Listener:
        await trio.lowlevel.checkpoint()
        if port == 0:
            port = next(self._ports)
        if port in self.listeners:
            raise PortInUse(errno.EADDRINUSE, f"port {port} is in use")
        listener = self.listeners[port] = _MemoryListener(self, port, owner)
        return listener

    async def connect(self, port: int, owner: str | None = None) -> Connection:
        await trio.lowlevel.checkpoint()
        listener = self.listeners.get(port)
        if listener is None:
            raise ConnectionRefusedError(errno.ECONNREFUSED, f"nothing listens on port {port}")
        from trio.testing import memory_stream_pair  # imported here: it pulls in pytest, which real peers never need

        ours, theirs = memory_stream_pair()
        ephemeral = next(self._ports)
        local, remote = f"{HOST}:{ephemeral}", f"{HOST}:{port}"
        try:
            listener._send.send_nowait(Connection(_GatedStream(theirs, self, listener.owner), remote, local))
        except trio.ClosedResourceError:
            raise ConnectionRefusedError(errno.ECONNREFUSED, f"nothing listens on port {port}") from None
        return Connection(_GatedStream(ours, self, owner), local, remote)


@attrs.frozen
class MemoryHost:
    """One node's view of a :class:`MemoryNetwork` (so the network knows whose sockets are whose)."""

    network: MemoryNetwork
    name: str

    async def listen(self, port: int) -> Listener:
        return await self.network.listen(port, self.name)

    async def connect(self, port: int) -> Connection:
        return await self.network.connect(port, self.name)
