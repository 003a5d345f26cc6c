"""The handshake of one link, as a small state machine (frames in, frames out, no I/O).

Both ends run a :class:`LinkHandshake`. The dialer speaks first::

    dialer                                   listener
    Hello(version, nonce_d, role)   ---->
                                    <----    Hello(version, nonce_l, role), Proof(listener)
    Proof(dialer), Identify(info)   ---->
                                    <----    Identify(info)

The listener proves first, so a dialer that reached something other than a mesh peer of its user (a squatter on
the coordinator port, say) notices before it has revealed anything but a random nonce. A listener that gets a bad
proof sends :class:`~.wire.Refuse` and closes. A version mismatch is refused by whichever side notices it, with a
message naming both versions, so both ends can say clearly what is wrong.

Both ends are peers of one mesh only if they serve the same coordinator port (``PeerInfo.port``; a mesh is its
port): each end checks the other's ``Identify`` and refuses a peer of another mesh with the reason ``mesh``.

Any violation raises :class:`~.errors.RemoteProtocolError`; the caller sends the frames in
:attr:`LinkHandshake.pending_refusal` (if any) and closes the link.

Until a link is open, nothing but these few small frames may arrive on it, so a reader caps every frame it takes
before the handshake at :data:`MAX_HANDSHAKE_FRAME` (the normal cap applies after): a connection that has not proved
the key cannot make a peer hold more than that.
"""

from __future__ import annotations

import enum
import hmac
import re
from typing import Final, NoReturn

import attrs

from .auth import NONCE_SIZE, Role, link_proof
from .errors import LocalProtocolError, RemoteProtocolError
from .wire import PROTOCOL_VERSION, Frame, Hello, Identify, LinkRole, PeerInfo, Proof, Refuse

__all__ = ["MAX_HANDSHAKE_FRAME", "HandshakeState", "LinkHandshake"]

#: Cap on the body of any frame received before the handshake finished (bytes). The real handshake frames are far
#: smaller: ``Hello`` about 30 bytes, ``Proof`` 35, ``Identify`` under 100 and ``Refuse`` a sentence of at most a
#: few hundred (``tests/protocol/test_peer_neighbours.py`` checks the largest of them against this cap).
MAX_HANDSHAKE_FRAME: Final = 1024

#: What a :class:`~.wire.Refuse` reason must look like to be passed on (anything else is reported as ``refused``).
_WORD = re.compile(r"[a-z][a-z0-9_-]{0,31}")


class HandshakeState(enum.Enum):
    """Where a link's handshake stands."""

    AWAIT_HELLO = "await-hello"
    AWAIT_PROOF = "await-proof"
    AWAIT_IDENTIFY = "await-identify"
    OPEN = "open"
    FAILED = "failed"


@attrs.define
class LinkHandshake:
    """The handshake of one link from one end's point of view.

    ``local_addr`` and ``remote_addr`` are the socket addresses as this end sees them (``host:port``); they are
    bound into the proofs. ``identity`` is what this end reveals once the other end has proved the key.
    """

    dialer: bool
    key: bytes
    nonce: bytes
    local_addr: str
    remote_addr: str
    identity: PeerInfo
    role: LinkRole = "data"
    coordinator: bool = False
    state: HandshakeState = HandshakeState.AWAIT_HELLO
    remote_nonce: bytes = b""
    remote: PeerInfo | None = None
    remote_coordinator: bool = False
    pending_refusal: list[Frame] = attrs.field(factory=list)

    def __attrs_post_init__(self) -> None:
        if len(self.nonce) != NONCE_SIZE:
            raise LocalProtocolError(f"a handshake nonce must be {NONCE_SIZE} bytes")

    @property
    def is_open(self) -> bool:
        """Whether both ends are authenticated and identified."""
        return self.state is HandshakeState.OPEN

    def start(self) -> list[Frame]:
        """Frames to send as soon as the connection exists (the dialer's Hello; nothing for the listener)."""
        return [Hello(PROTOCOL_VERSION, self.nonce, self.role)] if self.dialer else []

    def receive(self, frame: Frame) -> list[Frame]:
        """Feed one received frame; return the frames to send. Raises :class:`RemoteProtocolError`."""
        if isinstance(frame, Refuse):
            self.state = HandshakeState.FAILED
            # The words come from the other side: the reason is passed on only if it is one plain word, and the
            # detail is quoted, so that a stranger cannot make up log lines.
            reason = frame.reason if _WORD.fullmatch(frame.reason) else "refused"
            raise RemoteProtocolError(f"the other side refused the link: {frame.detail!r}", reason=reason)
        state = self.state
        if state is HandshakeState.AWAIT_HELLO and isinstance(frame, Hello):
            return self._on_hello(frame)
        if state is HandshakeState.AWAIT_PROOF and isinstance(frame, Proof):
            return self._on_proof(frame)
        if state is HandshakeState.AWAIT_IDENTIFY and isinstance(frame, Identify):
            self._check_mesh(frame.peer)
            self.remote = frame.peer
            self.remote_coordinator = frame.coordinator
            self.state = HandshakeState.OPEN
            return []
        self._fail(f"unexpected {type(frame).__name__} frame during the handshake ({state.value})", "unexpected")

    def _on_hello(self, hello: Hello) -> list[Frame]:
        if hello.version != PROTOCOL_VERSION:
            detail = (
                f"incompatible protocol version: this peer speaks version {PROTOCOL_VERSION}, "
                f"the other side speaks version {hello.version}"
            )
            self.pending_refusal = [Refuse("version", detail)]
            self._fail(detail, "version")
        if len(hello.nonce) != NONCE_SIZE:
            self._fail("handshake nonce of the wrong size", "malformed")
        self.remote_nonce = hello.nonce
        self.state = HandshakeState.AWAIT_PROOF
        if self.dialer:
            return []
        self.role = hello.role
        proof = self._proof("listener")
        return [Hello(PROTOCOL_VERSION, self.nonce, hello.role), Proof(proof)]

    def _on_proof(self, proof: Proof) -> list[Frame]:
        theirs: Role = "listener" if self.dialer else "dialer"
        if not hmac.compare_digest(self._proof(theirs), proof.mac):
            if self.dialer:
                detail = (
                    f"the listener at {self.remote_addr} cannot prove the mesh key: it is not a mesh peer of this "
                    "user (another user's process holding the port?); nothing was sent to it"
                )
            else:
                self.pending_refusal = [Refuse("auth", "wrong mesh key proof")]
                detail = f"the dialer from {self.remote_addr} cannot prove the mesh key"
            self._fail(detail, "auth")
        self.state = HandshakeState.AWAIT_IDENTIFY
        identify = Identify(self.identity, self.coordinator)
        if self.dialer:
            return [Proof(self._proof("dialer")), identify]
        return [identify]

    def _check_mesh(self, remote: PeerInfo) -> None:
        """Refuse a peer of another mesh: one whose coordinator port differs from ours (0: unknown, accepted)."""
        mine, theirs = self.identity.port, remote.port
        if mine and theirs and mine != theirs:
            detail = (
                f"the other side belongs to the mesh of port {theirs}, this peer to the mesh of port {mine} "
                "(AGENT_COMMS_PORT): one home may hold several meshes, and their peers do not link"
            )
            self.pending_refusal = [Refuse("mesh", detail)]
            self._fail(detail, "mesh")

    def _proof(self, role: Role) -> bytes:
        if self.dialer:
            dialer_nonce, listener_nonce = self.nonce, self.remote_nonce
            dialer_addr, listener_addr = self.local_addr, self.remote_addr
        else:
            dialer_nonce, listener_nonce = self.remote_nonce, self.nonce
            dialer_addr, listener_addr = self.remote_addr, self.local_addr
        return link_proof(
            self.key,
            role,
            dialer_nonce=dialer_nonce,
            listener_nonce=listener_nonce,
            dialer_addr=dialer_addr,
            listener_addr=listener_addr,
        )

    def _fail(self, message: str, reason: str) -> NoReturn:
        self.state = HandshakeState.FAILED
        raise RemoteProtocolError(message, reason=reason)
