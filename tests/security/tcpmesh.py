"""Two honest peers on real TCP (127.0.0.1, a free coordinator port) in the test process, with agents, and an
attacker that dials one of them: with the mesh key (an admitted link) or without.

The honest agents are the real stack (``CommsTool`` over ``MeshStore`` over ``MeshNode``), so hostile frames reach
everything a bridge would run: the peer, the replica, the store's delivery and the tool's formatting.
"""

from __future__ import annotations

import secrets
import socket
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Final

import attrs
import trio

from agent_comms.mesh.network import TcpNetwork
from agent_comms.mesh.node import MeshNode, open_node
from agent_comms.protocol.framing import FrameDecoder, encode_frames
from agent_comms.protocol.link import LinkHandshake
from agent_comms.protocol.peer import PeerConfig
from agent_comms.protocol.wire import Frame, PeerInfo
from agent_comms.store import MeshStore
from agent_comms.tool import CommsTool

#: Short timeouts, so that slow links are judged within a second or two.
FAST: Final = {"heartbeat_interval": 0.2, "link_timeout": 1.0, "handshake_timeout": 0.5}


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
    assert port != 19876
    return port


@attrs.define
class Attacker:
    """A raw TCP connection to a peer, as whatever program wants to."""

    stream: trio.SocketStream
    local_addr: str
    remote_addr: str
    decoder: FrameDecoder = attrs.field(factory=FrameDecoder)

    async def send(self, *frames: Frame) -> None:
        await self.stream.send_all(encode_frames(frames))

    async def frames(self, *, within: float = 2.0) -> list[Frame]:
        """Frames received until the other side is quiet for a moment, or ends the stream (``[]`` then)."""
        out: list[Frame] = []
        with trio.move_on_after(within):
            while True:
                data = await self.stream.receive_some(65536)
                if not data:
                    break
                self.decoder.feed(data)
                out += list(self.decoder.frames())
        return out

    async def closed_within(self, seconds: float) -> bool:
        """Whether the other side closes the connection within ``seconds`` (everything it sends is read)."""
        with trio.move_on_after(seconds):
            try:
                while await self.stream.receive_some(65536):
                    pass
            except (trio.BrokenResourceError, trio.ClosedResourceError):
                pass
            return True
        return False


async def connect(port: int) -> Attacker:
    stream = await trio.open_tcp_stream("127.0.0.1", port)
    sock = stream.socket
    local, remote = sock.getsockname(), sock.getpeername()
    return Attacker(stream, f"{local[0]}:{local[1]}", f"{remote[0]}:{remote[1]}")


async def admitted(port: int, key: bytes, peer_id: str = "m" * 16) -> Attacker:
    """A data link to the peer listening on ``port``, through the real handshake with ``key``.

    On a loaded machine the handshake may take longer than the short ``handshake_timeout`` the tests give the peer
    (it closes such a link, as it should); it is then tried again on a new connection."""
    for _ in range(4):
        try:
            return await _admitted_once(port, key, peer_id)
        except HandshakeCut:
            continue
    return await _admitted_once(port, key, peer_id)


class HandshakeCut(AssertionError):
    """The peer closed the link during the handshake."""


async def _admitted_once(port: int, key: bytes, peer_id: str) -> Attacker:
    attacker = await connect(port)
    handshake = LinkHandshake(
        dialer=True,
        key=key,
        nonce=secrets.token_bytes(16),
        local_addr=attacker.local_addr,
        remote_addr=attacker.remote_addr,
        identity=PeerInfo(peer_id, 1, 1.0, 0),
    )
    await attacker.send(*handshake.start())
    with trio.fail_after(5):
        while not handshake.is_open:
            try:
                data = await attacker.stream.receive_some(65536)
            except trio.BrokenResourceError:
                data = b""
            if not data:
                await attacker.stream.aclose()
                raise HandshakeCut("the peer closed the link during the handshake")
            attacker.decoder.feed(data)
            for frame in attacker.decoder.frames():
                if not handshake.is_open:
                    replies = handshake.receive(frame)
                    if replies:
                        await attacker.send(*replies)
    return attacker


@attrs.define
class TcpMesh:
    key: bytes
    port: int
    a: MeshNode
    b: MeshNode
    alice: CommsTool
    bob: CommsTool
    pings: int = 0

    def ok(self, tool: CommsTool, **params: object) -> str:
        result = tool.call(params)
        assert not result.is_error, result.text
        return result.text

    async def healthy(self, *, within: float = 5.0) -> None:
        """bob's new message in #lobby reaches alice's peer, and alice's tool shows it."""
        self.pings += 1
        text = f"ping {self.pings}"
        self.ok(self.bob, action="send", target="lobby", content=text)
        state = self.a.peer.replica.state
        with trio.fail_after(within):
            await self.a.wait_for(lambda: any(getattr(o.body, "content", "") == text for o in state.messages.values()))
        assert text in self.ok(self.alice, action="read_room", room="lobby")

    def links_of_a(self) -> set[str]:
        return set(self.a.peer.data_links)


@asynccontextmanager
async def tcp_mesh(**config: float) -> AsyncIterator[TcpMesh]:
    """alice on peer a (the coordinator) owns #lobby; bob on peer b is in it. Nothing else is on the port."""
    port = free_port()
    key = secrets.token_bytes(32)
    settings = PeerConfig(coordinator_port=port, **config)  # type: ignore[arg-type]
    network = TcpNetwork()
    async with (
        open_node(key, port=port, network=network, config=settings, probe_processes=False) as a,
        open_node(key, port=port, network=network, config=settings, probe_processes=False) as b,
    ):
        with trio.fail_after(10):
            await a.wait_for(lambda: b.peer_id in a.peer.data_links)
            await b.wait_for(lambda: a.peer_id in b.peer.data_links)
        alice = CommsTool(MeshStore(a), agent_id="alice", harness="test", cwd="/w", pid=0)
        bob = CommsTool(MeshStore(b), agent_id="bob", harness="test", cwd="/w", pid=0)
        mesh = TcpMesh(key, port, a, b, alice, bob)
        mesh.ok(alice, action="register", name="alice")
        mesh.ok(alice, action="create_room", room="lobby")
        mesh.ok(bob, action="register", name="bob")
        with trio.fail_after(10):
            await b.wait_for(lambda: b.peer.replica.state.room("lobby") is not None)
        mesh.ok(bob, action="join_room", room="lobby")
        await mesh.healthy()
        yield mesh
