"""A read-only look at the mesh, for the CLI: coordinator, peers, their links and agents, without joining.

The observer dials the coordinator port with the ``observer`` role and proves the mesh key like any peer. The
coordinator answers with its peer list and its own status, and with a full anti-entropy answer from which the
observer rebuilds the replicated state. With ``each_peer=True`` the observer then asks every listed peer for its
status the same way (links, the coordinator it follows, its state digest). It never registers an agent and never
becomes a peer, so it shows up in no listing. If the coordinator port does not answer in time (a stopped
process), it asks the peers in the registry instead; if the port is held by a program that looks like it is not a
peer (:func:`~agent_comms.mesh.port_holder.foreign_holder`), it gives it only :data:`FOREIGN_ATTEMPT` to answer
(a peer in another pid namespace looks foreign too) and then names it.
"""

from __future__ import annotations

import os
import secrets
import time
from typing import Any, Final

import attrs
import trio

from agent_comms.protocol.errors import RemoteProtocolError
from agent_comms.protocol.framing import DEFAULT_MAX_FRAME, FrameDecoder, encode_frames
from agent_comms.protocol.link import MAX_HANDSHAKE_FRAME, LinkHandshake
from agent_comms.protocol.peer import PeerConfig
from agent_comms.protocol.state import MeshState
from agent_comms.protocol.wire import PeerInfo, PeerList, PeerStatus, SyncOps, SyncRequest

from .network import Network, TcpNetwork
from .port_holder import foreign_holder, foreign_port_message, port_holder
from .registry import PeerRegistry

__all__ = ["MeshSnapshot", "NoMesh", "PeerView", "explain_no_mesh", "observe_mesh", "peer_status"]


#: Seconds a holder of the coordinator port that looks like another program (:func:`foreign_holder`) gets to answer
#: the handshake before it is named as such: a peer answers in milliseconds, another program never.
FOREIGN_ATTEMPT: Final = 0.5

#: What "that place did not answer" looks like: refused, reset, too slow, or not speaking our protocol.
_UNANSWERED = (OSError, trio.TooSlowError, trio.BrokenResourceError, trio.ClosedResourceError, RemoteProtocolError)


class NoMesh(Exception):
    """No mesh answered: nothing on the coordinator port and no live peer in the registry.

    ``foreign``: what to tell a person when the port is held by a program that is not a peer (it did not answer
    the handshake and the socket table names it), so that nobody asks it again."""

    def __init__(self, message: str, foreign: str | None = None) -> None:
        super().__init__(message)
        self.foreign = foreign


@attrs.frozen
class PeerView:
    """What one peer told the observer about itself (``None`` fields: it did not answer)."""

    info: PeerInfo
    links: tuple[str, ...] | None = None
    coordinator: str | None = None
    digest: bytes | None = None


@attrs.frozen
class MeshSnapshot:
    """What an observer saw."""

    port: int
    coordinator: PeerInfo | None
    peers: tuple[PeerView, ...]
    state: MeshState
    #: what is wrong with the coordinator port, when the peer holding it did not answer as a mesh peer of ours
    port_problem: str | None = None

    def to_json(self) -> dict[str, Any]:
        """The ``agent-comms mesh --json`` shape."""
        now = time.time()
        coordinator = None
        if self.coordinator is not None:
            coordinator = {"peer_id": self.coordinator.peer_id, "pid": self.coordinator.pid, "port": self.port}
        peers = []
        for view in self.peers:
            info = view.info
            agents = sorted(
                agent_id
                for agent_id, entry in self.state.agents.items()
                if entry.record is not None and entry.online and entry.body.peer_id == info.peer_id
            )
            peers.append(
                {
                    "peer_id": info.peer_id,
                    "pid": info.pid,
                    "started_at": info.started_at,
                    "uptime": max(0.0, now - info.started_at),
                    "data_port": info.data_port,
                    "port": info.port,
                    "coordinator": self.coordinator is not None and info.peer_id == self.coordinator.peer_id,
                    "agents": agents,
                    "links": None if view.links is None else list(view.links),
                    "follows": view.coordinator,
                    "digest": None if view.digest is None else view.digest.hex(),
                }
            )
        return {"coordinator": coordinator, "peers": peers, "coordinator_port_problem": self.port_problem}


@attrs.frozen
class _Answer:
    remote: PeerInfo
    remote_coordinator: bool
    peer_list: PeerList | None
    status: PeerStatus | None
    state: MeshState


async def observe_mesh(
    key: bytes,
    *,
    port: int,
    registry: PeerRegistry | None = None,
    network: Network | None = None,
    each_peer: bool = True,
    attempt_seconds: float = 2.0,
) -> MeshSnapshot:
    """Observe the mesh on ``port``, giving each place asked ``attempt_seconds``. Raises :class:`NoMesh`."""
    network = TcpNetwork() if network is None else network
    answer: _Answer | None = None
    problem: str | None = None
    foreign = None if registry is None or not isinstance(network, TcpNetwork) else foreign_holder(port, registry)
    try:
        # A holder that looks foreign is still asked, briefly: a peer in another pid namespace looks foreign too.
        with trio.fail_after(attempt_seconds if foreign is None else min(attempt_seconds, FOREIGN_ATTEMPT)):
            answer = await _ask(network, key, port, port)
    except ConnectionRefusedError:
        pass  # nobody holds the port (between coordinators, say): not a problem in itself
    except RemoteProtocolError as exc:
        problem = (
            f"the process holding port {port} is not a mesh peer of this user: {exc}"
            if foreign is None
            else f"{foreign_port_message(port, foreign)} ({exc})"
        )
    except _UNANSWERED as exc:
        if foreign is not None:
            problem = foreign_port_message(port, foreign)
        elif isinstance(exc, trio.TooSlowError):
            problem = (
                f"the process holding port {port} did not answer the handshake within {attempt_seconds:g} s "
                "(a stopped peer, or a process that is not a mesh peer of this user squatting on the port)"
            )
        else:
            problem = f"the process holding port {port} closed the connection without a handshake ({exc})"
    candidates: list[PeerInfo] = []
    if answer is not None and answer.peer_list is not None:
        candidates = list(answer.peer_list.peers)
        coordinator = next((p for p in candidates if p.peer_id == answer.peer_list.coordinator), None)
    else:
        # Nobody answered on the coordinator port: the registry lists who should be running.
        candidates = [] if registry is None else registry.read(port)
        coordinator = None
    views: dict[str, PeerView] = {}
    if answer is not None and answer.status is not None:
        views[answer.remote.peer_id] = _view(answer.remote, answer.status)
    state = answer.state if answer is not None else None
    for info in candidates:
        if info.port not in (0, port):
            continue  # a peer of another mesh (another coordinator port) is not part of this one
        if info.peer_id in views or (not each_peer and state is not None):
            continue
        try:
            with trio.fail_after(attempt_seconds):
                reply = await _ask(network, key, info.data_port, port)
        except _UNANSWERED:
            views[info.peer_id] = PeerView(info)
            continue
        views[info.peer_id] = _view(info, reply.status)
        if state is None:
            state = reply.state
    if state is None:
        raise NoMesh(f"no mesh answers on port {port}", problem if foreign is not None else None)
    ordered = tuple(sorted(views.values(), key=lambda v: (v.info.started_at, v.info.peer_id)))
    return MeshSnapshot(port, coordinator, ordered, state, problem)


async def peer_status(key: bytes, data_port: int, *, network: Network | None = None) -> PeerView:
    """Ask one peer, on its data port, for its status (raises ``OSError`` or a trio stream error if it fails)."""
    network = TcpNetwork() if network is None else network
    answer = await _ask(network, key, data_port)
    return _view(answer.remote, answer.status)


def _view(info: PeerInfo, status: PeerStatus | None) -> PeerView:
    if status is None:
        return PeerView(info)
    return PeerView(status.peer, status.links, status.coordinator or None, status.digest)


async def _ask(network: Network, key: bytes, dial_port: int, mesh_port: int = 0) -> _Answer:
    conn = await network.connect(dial_port)
    stream = conn.stream
    try:
        # The mesh port in our identity makes a peer of another mesh refuse us (reason ``mesh``) rather than answer.
        identity = PeerInfo(f"observer-{secrets.token_hex(4)}", os.getpid(), time.time(), 0, port=mesh_port)
        handshake = LinkHandshake(
            dialer=True,
            key=key,
            nonce=secrets.token_bytes(16),
            local_addr=conn.local_addr,
            remote_addr=conn.remote_addr,
            identity=identity,
            role="observer",
        )
        await stream.send_all(encode_frames(handshake.start()))
        decoder = FrameDecoder(MAX_HANDSHAKE_FRAME)  # lifted once the other side has proved the key
        state = MeshState()
        _collect(state)  # the horizon first: claims older than it count as known while the ops arrive (rule 8)
        peer_list: PeerList | None = None
        status: PeerStatus | None = None
        while True:
            data = await stream.receive_some(1 << 16)
            if not data:
                raise OSError("the peer closed the connection")
            decoder.feed(data)
            for frame in decoder.frames():
                if not handshake.is_open:
                    replies = handshake.receive(frame)
                    if _opened(handshake):
                        decoder.max_frame = DEFAULT_MAX_FRAME
                        replies = [*replies, SyncRequest(b"", {})]
                    if replies:
                        await stream.send_all(encode_frames(replies))
                elif isinstance(frame, PeerList):
                    peer_list = frame
                elif isinstance(frame, PeerStatus):
                    status = frame
                elif isinstance(frame, SyncOps):
                    for op in frame.ops:
                        state.apply(op)
                    if frame.done:
                        _collect(state)
                        remote = handshake.remote
                        assert remote is not None
                        return _Answer(remote, handshake.remote_coordinator, peer_list, status, state)
    finally:
        await trio.aclose_forcefully(stream)


def _collect(state: MeshState) -> None:
    """Forget, as a peer starting now would, what went offline before the horizon (state rule 8): a returning
    agent's old rooms and messages then count on the observer as on every peer."""
    state.collect_garbage(int((time.time() - PeerConfig(coordinator_port=0).offline_retention) * 1000))


def _opened(handshake: LinkHandshake) -> bool:
    return handshake.is_open  # a call, so the type checker does not carry the narrowing across receive()


#: How a person starts a mesh: any agent does.
START_HINT = (
    "start an agent first: join it yourself with `agent-comms chat`, or open a harness set up with "
    "`agent-comms setup` (its bridge starts the mesh)"
)


async def explain_no_mesh(
    key: bytes | None,
    port: int,
    *,
    network: Network | None = None,
    registry: PeerRegistry | None = None,
    wait: float = 1.0,
) -> str:
    """Why no mesh answers on ``port``, in a sentence for a person: nothing listens there, or what holds it.

    With ``registry``, a holder known not to be a peer is named at once, without asking it anything. Without a
    ``key`` (none was ever made in this home, so no peer of this user ran there), whatever holds the port is another
    program.
    """
    network = TcpNetwork() if network is None else network
    foreign = None
    if registry is not None and isinstance(network, TcpNetwork):
        foreign = foreign_holder(port, registry)
    try:
        with trio.fail_after(wait):
            conn = await network.connect(port)
        await trio.aclose_forcefully(conn.stream)
    except (OSError, trio.TooSlowError) as exc:
        if foreign is not None and not isinstance(exc, ConnectionRefusedError):
            return foreign_port_message(port, foreign)  # accepted, then reset at once
        return f"no mesh is running: nothing listens on 127.0.0.1:{port} (AGENT_COMMS_PORT); {START_HINT}"
    if key is None:
        return foreign_port_message(port, foreign or port_holder(port))  # the socket table is read once
    try:
        # A holder that looks foreign is still asked, briefly: a peer in another pid namespace looks foreign too.
        with trio.fail_after(wait if foreign is None else min(wait, FOREIGN_ATTEMPT)):
            await _ask(network, key, port, port)
    except RemoteProtocolError as exc:
        if exc.reason == "version":
            return f"the mesh on port {port}{_holder(port)} speaks another protocol version: {exc}"
        return f"{foreign_port_message(port, foreign or port_holder(port))} ({exc})"
    except _UNANSWERED as exc:
        if foreign is not None:
            return foreign_port_message(port, foreign)
        if isinstance(exc, OSError):
            return f"{foreign_port_message(port, port_holder(port))} ({exc})"
        return (
            f"the process holding port {port}{_holder(port)} does not answer (stopped or hung?) "
            "and no other peer of the mesh is running"
        )
    return f"the mesh on port {port} answered only now; try again"


def _holder(port: int) -> str:
    holder = port_holder(port)
    return "" if holder is None else f" ({holder.describe()})"
