"""Wire frames: everything two peers say to each other over one link.

All frames are frozen, ``array_like`` msgspec Structs in the tagged union :data:`Frame`, encoded with msgpack and
decoded by one typed decoder built once (:mod:`agent_comms.protocol.framing`). The same evolution rule as for
operations holds: new fields go at the end of a struct, with a default.

A link goes through three phases (see :mod:`agent_comms.protocol.link`):

1. ``Hello`` both ways: protocol version and a fresh nonce. Nothing about the peer is revealed yet.
2. ``Proof`` both ways: an HMAC, keyed by the per-user mesh key, over both nonces, both socket addresses and the
   prover's role. The listener proves first, so a dialer that finds a squatter on the port sends it nothing more.
3. ``Identify`` both ways, then the data frames: heartbeats, introductions, live operations and anti-entropy.
"""

from __future__ import annotations

from typing import Final, Literal

import msgspec

from .ops import Op

__all__ = [
    "PROTOCOL_VERSION",
    "CoordinatorAt",
    "Frame",
    "Goodbye",
    "Handover",
    "Heartbeat",
    "Hello",
    "Identify",
    "Introduce",
    "LinkRole",
    "Ops",
    "PeerInfo",
    "PeerList",
    "PeerStatus",
    "Proof",
    "Refuse",
    "SyncOps",
    "SyncRequest",
]

#: Bumped on any change an older peer cannot understand. Compatible additions (new trailing fields with defaults,
#: new frame types that older peers never receive) do not bump it. Version 2: the progress marker
#: (:class:`~.ops.Mark`), a body version 1 cannot decode.
PROTOCOL_VERSION: Final = 2

LinkRole = Literal["coordinator", "data", "observer"]
"""What a dialer wants from a link: an introduction by the coordinator, a data link between two peers, or a
read-only view of the mesh (the CLI's observing commands)."""


class PeerInfo(msgspec.Struct, frozen=True, array_like=True):
    """What the mesh knows about a peer: where to reach it and how long it has been running.

    ``port`` is the coordinator port of the peer's mesh (``AGENT_COMMS_PORT``): a mesh is its port, so peers meet
    only peers of the same port. 0 means unknown (a peer of an older version, which did not say).
    """

    peer_id: str
    pid: int
    started_at: float
    data_port: int
    process_start: float = 0.0
    port: int = 0


class Hello(msgspec.Struct, frozen=True, array_like=True, tag="hello"):
    """First frame in each direction: the protocol version spoken and a fresh random nonce."""

    version: int
    nonce: bytes
    role: LinkRole = "data"


class Proof(msgspec.Struct, frozen=True, array_like=True, tag="proof"):
    """Proof of knowledge of the mesh key (see :func:`agent_comms.protocol.auth.link_proof`)."""

    mac: bytes


class Refuse(msgspec.Struct, frozen=True, array_like=True, tag="refuse"):
    """The sender refuses the link and will close it; ``reason`` is a word, ``detail`` a sentence."""

    reason: str
    detail: str


class Identify(msgspec.Struct, frozen=True, array_like=True, tag="identify"):
    """After mutual proof: who the sender is. ``coordinator`` is true if it holds the coordinator port."""

    peer: PeerInfo
    coordinator: bool = False


class Heartbeat(msgspec.Struct, frozen=True, array_like=True, tag="beat"):
    """Sent on an idle link so the other side knows this peer still answers."""


class Introduce(msgspec.Struct, frozen=True, array_like=True, tag="introduce"):
    """To the coordinator: here I am; please list the peers I should link to."""

    peer: PeerInfo


class PeerList(msgspec.Struct, frozen=True, array_like=True, tag="peers"):
    """From the coordinator: every peer it knows (the receiver links to those it has no link with)."""

    peers: tuple[PeerInfo, ...]
    coordinator: str


class Handover(msgspec.Struct, frozen=True, array_like=True, tag="handover"):
    """The coordinator is leaving gracefully; ``successor`` takes the port next."""

    successor: str


class PeerStatus(msgspec.Struct, frozen=True, array_like=True, tag="status"):
    """To an observer: the sender's view of the mesh (its links, the coordinator it follows, its state digest)."""

    peer: PeerInfo
    links: tuple[str, ...]
    coordinator: str
    digest: bytes


class CoordinatorAt(msgspec.Struct, frozen=True, array_like=True, tag="coord"):
    """On data links: ``peer_id`` holds the coordinator port now; peers without a coordinator dial it at once."""

    peer_id: str


class Goodbye(msgspec.Struct, frozen=True, array_like=True, tag="bye"):
    """The sender is shutting down on purpose; its agents go offline now rather than after a timeout."""

    reason: str = ""


class Ops(msgspec.Struct, frozen=True, array_like=True, tag="ops"):
    """Live operations made by the sending peer (``origin`` must be the link's authenticated peer)."""

    ops: tuple[Op, ...]


class SyncRequest(msgspec.Struct, frozen=True, array_like=True, tag="sync?"):
    """Anti-entropy, step one: a digest of the sender's state and how far it has seen each origin's ops.

    A receiver whose digest differs answers with :class:`SyncOps` carrying the operations the sender lacks.
    """

    digest: bytes
    seen: dict[str, int]


class SyncOps(msgspec.Struct, frozen=True, array_like=True, tag="sync!"):
    """Anti-entropy, step two: operations the receiver lacks (possibly relayed from other origins).

    The last frame (``done``) carries the sender's ``floors``: per origin, the sequence number up to which it has
    seen everything. What it saw but no longer stores (evicted, superseded) is dominated by what it sent, so the
    receiver may count those as seen too (:meth:`~.replica.Replica.adopt_floors`); otherwise such gaps would keep
    its own floor down for good and every later operation of that origin would be remembered one by one.
    """

    ops: tuple[Op, ...]
    done: bool = True
    floors: dict[str, int] = {}


Frame = (
    Hello
    | Proof
    | Refuse
    | Identify
    | Heartbeat
    | Introduce
    | PeerList
    | Handover
    | CoordinatorAt
    | PeerStatus
    | Goodbye
    | Ops
    | SyncRequest
    | SyncOps
)
