"""The peer state machine: links, introductions, coordinator succession, heartbeats and anti-entropy.

Theory of operation
===================

A peer is one process in the mesh. It listens on a data port of its own; at most one peer at a time also holds the
well-known coordinator port. The rules, each implemented by the method named:

1. **Meeting** (:meth:`Peer.start`). A new peer first tries to bind the coordinator port. If it wins it is the
   coordinator. Otherwise it dials the port, proves the mesh key, and sends :class:`~.wire.Introduce`; the
   coordinator answers with :class:`~.wire.PeerList` and the newcomer dials a data link to every listed peer. The
   coordinator only introduces: operations never pass through it unless it is a peer like any other. In parallel
   the newcomer reads the peer registry (rule 7) and dials the peers listed there, so it joins in one round trip
   even while the coordinator role is changing hands; the coordinator's list fills any gap the registry leaves.
2. **One link per pair.** If two peers dial each other at once, both links open; both ends keep the one dialed by
   the smaller peer id and close the other, so they agree without talking.
3. **Anti-entropy on every new data link** (and periodically on one link): each side sends a
   :class:`~.wire.SyncRequest`; see :mod:`~.replica`. A peer that was away therefore catches up on everything.
   Every request is answered exactly once, after everything sent before it on that link was handled, so an
   answer also confirms that the other peer holds what this one made before asking (:meth:`Peer.request_sync`).
   An answer leaves out what this peer made since the link became the data link to the asker: that went out on
   the link live, ahead of the answer, so a busy link never carries it twice (:meth:`Peer._sync_frames`).
4. **Succession, graceful** (:meth:`Peer.close`). A leaving coordinator names the longest-running other peer
   (smallest ``(started_at, peer_id)``) in :class:`~.wire.Handover`, releases the port and says goodbye. The
   successor binds the port (retrying while the old one lets go); the others dial it and introduce themselves.
5. **Succession, crash.** When the coordinator link closes without a handover, each survivor waits
   ``rank * bind_stagger`` (rank among the peers it is linked to, by ``(started_at, peer_id)``) and tries to bind.
   The operating system lets exactly one win; it announces itself on its data links
   (:class:`~.wire.CoordinatorAt`), and every peer still without a coordinator dials it at once instead of waiting
   for its own turn. Those that tried anyway fail to bind and dial the winner. A newcomer arriving meanwhile either
   binds the port itself or reaches the winner, so there is only ever one mesh.
6. **Liveness.** Every link carries a heartbeat when idle; a link silent for ``link_timeout`` is closed, as is one
   whose handshake does not finish in ``handshake_timeout``. When a data link closes without a goodbye, the
   peer marks the other peer's agents offline (:class:`~.ops.AgentSuspect`); if that peer is in fact alive, it
   refutes by claiming its agents again with a higher incarnation.
7. **The second way to meet.** If the coordinator port is held but the handshake times out (a stopped process),
   the peer reads the peer registry beside the mesh key (:class:`~.commands.ReadPeerRegistry`) and links to the
   peers listed there directly, so newcomers still join the existing mesh.
8. **Repair** (:meth:`Peer._repair_links`, with every anti-entropy round). A data link can close while both ends
   live on (it timed out while one of them was stopped, or its write queue overflowed). The coordinator dials
   every introduced peer it has no data link to; every other peer asks the coordinator for the peer list again
   and dials the peers it lacks, so the mesh is whole again within an anti-entropy interval.
9. **Synced** (:attr:`Peer.synced`). A peer acts only on the mesh's state, so it is ready once its first
   anti-entropy round is done: it has met the mesh (bound the coordinator port, received the coordinator's
   :class:`~.wire.PeerList`, or lost the coordinator link, after which the registry is the way to meet) and every
   data link it dialed or accepted meanwhile has answered its first sync request (or closed; a dial has failed).
   Links dialed or accepted later (repairs, newcomers) are not part of that round. Alone on the mesh that is at
   once. A stopped peer accepts a connection but never finishes the handshake, so ``handshake_timeout`` cuts it
   off; ``ready_timeout`` bounds whatever else could stall the round.

Inputs are method calls named for facts (``link_opened``, ``frame_received``, ``link_closed``, ...); each returns
the :mod:`~.commands` to carry out. Time is passed in as ``now`` (seconds, any monotonic origin); :meth:`get_timer`
says when :meth:`handle_timer` wants to run next.

Parts
=====

* :attr:`Peer.role` is what the peer is to the mesh (:class:`Role`): joining, a member linked to the coordinator,
  the coordinator, or closed (rules 1, 4 and 5).
* Each deadline has its name: ``_bind_at`` (rules 4 and 5), ``_anti_entropy_at`` (rules 3 and 8), ``_gc_at``
  (forgetting), ``_ready_at`` (rule 9's bound) and ``_sync_answer_at`` (per link, coalesced sync answers), with the
  links' sweep (:class:`~.links.LinkSweep`, rule 6's heartbeats and timeouts). :meth:`Peer.get_timer` is the
  earliest of them; :meth:`Peer.handle_timer` runs those that have passed.
* A dial on its way is for a :data:`~.links.DialTarget`: the coordinator port or one peer's data port.
* The hosted agents (claims, refutation, offline verdicts) are :class:`~.hosting.Hosting`'s; the peer makes the
  operations it decides.

Two clocks
==========

``now`` is monotonic: every timer, timeout and interval is measured on it, so a wall clock set back or forward
never fires or holds up a heartbeat. Wall-clock time is needed only for the stamps of operations (the hybrid
clock), for the check of received stamps, and for the forgetting horizon. It is read *when used*, through
:attr:`Peer.wall_clock`, a callable the runtime injects (``time.time``) as it injects randomness (``rng``): the peer
imports no clock, and a test injects a fake one. Passing the wall time in with every input instead would add an
argument to every input method for the four places that need it, and a value read when the input arrived rather
than when the stamp is made. It is not derived from ``now`` plus an offset fixed at start: the monotonic clock
does not advance while the machine is suspended, so such a peer would stamp in the past after every suspend, and
refuse the operations of peers started after it.

The wall clock may jump either way (a suspend, NTP, a user setting the time). The hybrid clock keeps stamps
increasing across a step back; received stamps are refused only beyond ``max_clock_ahead`` (a year) past the
highest wall-clock reading this peer has made, a bound that no real step reaches and that still keeps a poisoned
stamp (``2**64 - 1``) from pushing the hybrid clock out of range (see :meth:`Peer._check_clocks`).
"""

from __future__ import annotations

import enum
import random
from collections.abc import Callable, Iterable
from typing import Final, assert_never

import attrs
import msgspec

from .changes import AgentChanged, Change
from .commands import (
    BindCoordinatorPort,
    CloseLink,
    Command,
    Deliver,
    Dial,
    Notice,
    ReadPeerRegistry,
    ReleaseCoordinatorPort,
    Send,
)
from .errors import LocalProtocolError, RemoteProtocolError
from .framing import DEFAULT_MAX_FRAME
from .hlc import COUNTER_BITS, hlc_wall_ms
from .hosting import Hosting
from .link import LinkHandshake
from .links import (
    DialCoordinator,
    DialPeer,
    DialTarget,
    HandshakeTimedOut,
    HeartbeatDue,
    LinkEntry,
    LinkSweep,
    Silent,
)
from .ops import AgentUpsert, Body, Op
from .replica import Replica
from .wire import (
    CoordinatorAt,
    Frame,
    Goodbye,
    Handover,
    Heartbeat,
    Introduce,
    LinkRole,
    Ops,
    PeerInfo,
    PeerList,
    PeerStatus,
    SyncOps,
    SyncRequest,
)

__all__ = ["LinkEntry", "Peer", "PeerConfig", "Role"]

_encoder: Final = msgspec.msgpack.Encoder()


@attrs.frozen
class PeerConfig:
    """Tunables of one peer (seconds unless noted)."""

    coordinator_port: int
    heartbeat_interval: float = 0.25
    link_timeout: float = 1.5
    handshake_timeout: float = 1.0
    bind_stagger: float = 0.015
    retry_interval: float = 0.1
    #: after a graceful handover, how long the others wait for the successor before binding themselves
    handover_grace: float = 0.25
    max_retry_interval: float = 2.0
    anti_entropy_interval: float = 2.0
    #: how often the runtime checks that the processes of known agents still exist
    probe_interval: float = 5.0
    history_limit: int = 1000
    #: bytes of operations per anti-entropy frame (kept well under the frame cap)
    sync_chunk_bytes: int = DEFAULT_MAX_FRAME // 4
    #: operations stamped further ahead of the highest wall-clock reading of this peer are refused (the link that
    #: sent them is closed): far beyond any real clock step, and still far from overflowing the hybrid clock
    max_clock_ahead: float = 366 * 24 * 3600.0
    #: a peer whose clock is this far behind the newest stamp it holds says so (once, until its clock catches up)
    clock_notice: float = 60.0
    #: a link's sync requests are answered at most once per this interval (an answer can be the whole state, so
    #: a flood of requests must not turn into a flood of answers); honest peers ask once per link and round
    sync_answer_interval: float = 0.2
    #: how long an agent stays known after it went offline (then it is forgotten, rule 8 of the state)
    offline_retention: float = 3600.0
    #: how often forgetting runs (and hosted agents are re-stamped, so they stay well inside the horizon)
    gc_interval: float = 30.0
    #: the longest the first anti-entropy round may keep a peer from being synced (rule 9); a stopped peer is cut
    #: off by ``handshake_timeout`` before that, so this only bounds a stall nothing else detects
    ready_timeout: float = 2.0


#: sync requests a link may have waiting for their (coalesced) answer before it is closed as a flood
MAX_DEFERRED_SYNCS = 64


class Role(enum.Enum):
    """What a peer is to the mesh (rules 1, 4 and 5)."""

    #: no coordinator known: binding the coordinator port, dialing it, or waiting for its turn to bind
    JOINING = "joining"
    #: linked to the coordinator, another peer
    MEMBER = "member"
    #: holding the coordinator port (alone on the mesh, or introducing the others)
    COORDINATOR = "coordinator"
    #: left the mesh (:meth:`Peer.close`): nothing is started any more
    CLOSED = "closed"


def _rank_key(info: PeerInfo) -> tuple[float, str]:
    return (info.started_at, info.peer_id)


@attrs.define
class Peer:
    """The protocol state of one peer. See the module docstring for the rules."""

    info: PeerInfo
    key: bytes
    config: PeerConfig
    rng: random.Random
    replica: Replica
    #: the agents this peer hosts, and what it writes about agents (claims, refutations, offline verdicts)
    hosting: Hosting
    #: when the links are next checked for heartbeats and timeouts
    sweep: LinkSweep
    links: dict[int, LinkEntry] = attrs.field(factory=dict)
    #: peer id -> link id of the open data link to that peer
    data_links: dict[str, int] = attrs.field(factory=dict)
    #: every peer we have heard of and not seen leave
    known: dict[str, PeerInfo] = attrs.field(factory=dict)
    role: Role = Role.JOINING
    #: the coordinator's peer id (ours when :attr:`role` is ``COORDINATOR``; ``None`` while joining)
    coordinator_id: str | None = None
    coordinator_link: int | None = None
    #: when coordinator: peers introduced to us, by the link they introduced themselves on
    introduced: dict[int, PeerInfo] = attrs.field(factory=dict)
    successor: str | None = None
    #: when we were named successor (our bind retries stop ``handover_grace`` later)
    _successor_since: float = 0.0
    _next_link: int = 1
    #: the deadlines this peer keeps (``None``: not set); :meth:`get_timer` is the earliest of them and the sweep's
    #: rules 4 and 5: when to try to bind the coordinator port
    _bind_at: float | None = None
    #: rule 3: the next periodic anti-entropy round (and rule 8's repair)
    _anti_entropy_at: float | None = None
    #: forgetting, and re-stamping hosted agents (:meth:`collect_garbage`)
    _gc_at: float | None = None
    #: rule 9's bound on the first anti-entropy round
    _ready_at: float | None = None
    #: link id -> when that link's deferred sync request is answered (``sync_answer_interval`` after the last answer)
    _sync_answer_at: dict[int, float] = attrs.field(factory=dict)
    _binding: bool = False
    _anti_entropy_turn: int = 0
    #: link id -> whom a dial on its way is for
    _pending_dials: dict[int, DialTarget] = attrs.field(factory=dict)
    #: the wall clock (seconds since the epoch), read each time wall time is needed (see "Two clocks" above)
    wall_clock: Callable[[], float] | None = None
    #: without :attr:`wall_clock` (simulations under one virtual clock), the wall time is ``now + wall_offset``
    wall_offset: float = 0.0
    #: the highest wall-clock reading so far (ms): a clock set back does not narrow what this peer accepts
    _wall_high: int = 0
    #: whether this peer has said that its clock is behind the stamps it holds (said once, until it catches up)
    _clock_behind_noted: bool = False
    #: consecutive attempts to reach the coordinator that failed before the handshake finished (for back-off)
    _coordinator_failures: int = 0
    #: rule 9: the links of the first anti-entropy round are those with a smaller id (0: the mesh is not met yet)
    _first_round_end: int = 0
    _synced: bool = False

    @classmethod
    def create(
        cls,
        *,
        key: bytes,
        config: PeerConfig,
        rng: random.Random,
        pid: int,
        started_at: float,
        data_port: int,
        process_start: float = 0.0,
        wall_clock: Callable[[], float] | None = None,
        wall_offset: float = 0.0,
    ) -> Peer:
        """A new peer with a fresh random id. ``started_at`` ranks it for succession (earlier goes first).

        ``wall_clock`` is read whenever wall time is needed (the runtime passes ``time.time``); without it the wall
        time is ``now + wall_offset`` (one virtual clock, for simulations)."""
        peer_id = f"{rng.getrandbits(64):016x}"
        info = PeerInfo(peer_id, pid, started_at, data_port, process_start, config.coordinator_port)
        replica = Replica.create(peer_id, history_limit=config.history_limit)
        hosting = Hosting(peer_id)
        sweep = LinkSweep(config.heartbeat_interval, config.link_timeout, config.handshake_timeout)
        return cls(info, key, config, rng, replica, hosting, sweep, wall_clock=wall_clock, wall_offset=wall_offset)

    @property
    def peer_id(self) -> str:
        """This peer's id."""
        return self.info.peer_id

    @property
    def is_coordinator(self) -> bool:
        """Whether this peer holds the coordinator port."""
        return self.role is Role.COORDINATOR

    @property
    def closed(self) -> bool:
        """Whether this peer has left the mesh."""
        return self.role is Role.CLOSED

    @property
    def hosted(self) -> dict[str, AgentUpsert]:
        """Agent id -> the record we last wrote for each agent we host."""
        return self.hosting.hosted

    # ------------------------------------------------------------------ meeting and succession

    def start(self, now: float) -> list[Command]:
        """Rule 1: begin by trying to become the coordinator, and by linking to the peers in the registry."""
        self._anti_entropy_at = now + self.config.anti_entropy_interval
        self._gc_at = now + self.config.gc_interval
        self._ready_at = now + self.config.ready_timeout
        # The horizon from the start: what forgotten agents did under old claims counts at once (state rule 8).
        return [*self.collect_garbage(now), *self._try_bind(), ReadPeerRegistry()]

    @property
    def synced(self) -> bool:
        """Rule 9: the first anti-entropy round with the mesh is done (or ``ready_timeout`` passed); stays true."""
        if not self._synced and self._first_round_end and self._first_round_done():
            self._synced = True
            self._ready_at = None
        return self._synced

    def _met(self) -> None:
        """Rule 9: the mesh is met; the data links dialed or accepted so far make up the first round."""
        if not self._first_round_end:
            self._first_round_end = self._next_link

    def _first_round_done(self) -> bool:
        """Every data link of the first round has answered our sync request (or is gone: closed, dial failed)."""
        end = self._first_round_end
        if any(link_id < end and isinstance(target, DialPeer) for link_id, target in self._pending_dials.items()):
            return False
        return all(
            entry.syncs_answered > 0
            for entry in self.links.values()
            if entry.link_id < end and entry.purpose == "data" and (entry.outbound or entry.is_open)
        )

    def coordinator_bound(self, now: float) -> list[Command]:
        """The coordinator port is ours."""
        self._binding = False
        if not self.closed:  # a bind that finished after this peer left: its listener is the runtime's to close
            self.role = Role.COORDINATOR
        self._met()
        self.coordinator_id = self.peer_id
        self.successor = None
        self._bind_at = None
        commands: list[Command] = []
        if self.coordinator_link is not None:
            commands.append(CloseLink(self.coordinator_link, "this peer is the coordinator now"))
        announce = CoordinatorAt(self.peer_id)
        for link_id in self.data_links.values():
            commands += self._send(self.links[link_id], [announce], now)
        return commands

    def coordinator_bind_failed(self, now: float) -> list[Command]:
        """Someone else holds the coordinator port: reach it (unless a link to it is already on its way)."""
        self._binding = False
        if self.closed or self.is_coordinator:
            return []
        if self.successor == self.peer_id and now - self._successor_since < self.config.handover_grace:
            # We were named successor but the old coordinator has not let go yet: try again shortly.
            self._bind_at = now + self.config.bind_stagger
            return []
        if self.successor == self.peer_id:
            self.successor = None  # someone else took the port (a newcomer, say): follow it like everyone else
        return self._dial_coordinator()

    def _try_bind(self) -> list[Command]:
        if self._binding or self.is_coordinator or self.closed:
            return []
        self._binding = True
        return [BindCoordinatorPort()]

    def _dial_coordinator(self) -> list[Command]:
        target = DialCoordinator()
        if self.coordinator_link is not None or target in self._pending_dials.values():
            return []
        link_id = self._new_link_id()
        self._pending_dials[link_id] = target
        return [Dial(link_id, self.config.coordinator_port, "coordinator")]

    def _dial_peer(self, info: PeerInfo) -> list[Command]:
        if info.peer_id == self.peer_id or info.peer_id in self.data_links or info.data_port <= 0:
            return []
        if any(
            info.peer_id in (entry.peer_id, entry.expected_peer) and entry.purpose == "data"
            for entry in self.links.values()
        ):
            return []
        target = DialPeer(info.peer_id)
        if target in self._pending_dials.values():
            return []
        link_id = self._new_link_id()
        self._pending_dials[link_id] = target
        return [Dial(link_id, info.data_port, "data", info.peer_id)]

    def _new_link_id(self) -> int:
        link_id = self._next_link
        self._next_link += 1
        return link_id

    def _rank(self, excluding: str | None = None) -> int:
        """Our place among the peers we are linked to, longest-running first (rule 5).

        Total: it ranks by what each data link's handshake identified, which every open data link has.
        """
        mine = _rank_key(self.info)
        rank = 0
        for peer_id, link_id in self.data_links.items():
            entry = self.links.get(link_id)
            remote = None if entry is None else entry.handshake.remote
            if peer_id != excluding and remote is not None and _rank_key(remote) < mine:
                rank += 1
        return rank

    def _same_mesh(self, info: PeerInfo) -> bool:
        """Whether ``info`` names a peer of our mesh: the same coordinator port (0: unknown, an older peer)."""
        return info.port in (0, self.config.coordinator_port)

    def peers_discovered(self, peers: Iterable[PeerInfo], now: float) -> list[Command]:
        """Rule 7: peers read from the registry (or learnt some other way); link to those we lack (peers of
        another mesh, one with another coordinator port, are ignored)."""
        commands: list[Command] = []
        for info in peers:
            if info.peer_id != self.peer_id and info.peer_id not in self.data_links and self._same_mesh(info):
                commands += self._dial_peer(info)
        return commands

    # ------------------------------------------------------------------ links

    def accept(self, now: float, *, local_addr: str, remote_addr: str) -> tuple[int, list[Command]]:
        """A connection arrived on one of our listeners; returns its link id and the commands."""
        link_id = self._new_link_id()
        self._open_entry(link_id, now, outbound=False, local_addr=local_addr, remote_addr=remote_addr)
        return link_id, []

    def link_opened(self, link_id: int, now: float, *, local_addr: str, remote_addr: str) -> list[Command]:
        """A dial we asked for connected."""
        target = self._pending_dials.pop(link_id, None)
        if link_id in self.links:
            raise LocalProtocolError(f"link {link_id} opened twice")
        role: LinkRole = "coordinator" if isinstance(target, DialCoordinator) else "data"
        entry = self._open_entry(link_id, now, outbound=True, local_addr=local_addr, remote_addr=remote_addr)
        entry.purpose = role
        if isinstance(target, DialPeer):
            entry.expected_peer = target.peer_id
        entry.handshake.role = role
        if role == "coordinator":
            self.coordinator_link = link_id
        return self._send(entry, entry.handshake.start(), now)

    def dial_failed(self, link_id: int, now: float, reason: str) -> list[Command]:
        """A dial we asked for could not connect (nobody listening, typically)."""
        match self._pending_dials.pop(link_id, None):
            case DialCoordinator():
                # Nobody holds the port: take it (rule 5), after our stagger so the longest-running peer goes first.
                self._bind_at = now + self._rank() * self.config.bind_stagger
            case DialPeer(peer_id):
                if peer_id not in self.data_links:  # it may have dialed us meanwhile: then we still know it
                    self.known.pop(peer_id, None)
            case None:
                pass
            case target:
                assert_never(target)
        return []

    def _open_entry(self, link_id: int, now: float, *, outbound: bool, local_addr: str, remote_addr: str) -> LinkEntry:
        handshake = LinkHandshake(
            dialer=outbound,
            key=self.key,
            nonce=self.rng.getrandbits(128).to_bytes(16, "big"),
            local_addr=local_addr,
            remote_addr=remote_addr,
            identity=self.info,
            coordinator=self.is_coordinator,
        )
        entry = LinkEntry(link_id, outbound, handshake, opened_at=now, last_rx=now, last_tx=now)
        self.links[link_id] = entry
        self.sweep.link_added(now)
        return entry

    def frame_received(self, link_id: int, frame: Frame, now: float) -> list[Command]:
        """One frame arrived on a link. A protocol violation closes that link (returned as a command)."""
        entry = self.links.get(link_id)
        if entry is None:
            return []  # already closed on our side; late frames are moot
        entry.last_rx = now
        try:
            if not entry.is_open:
                return self._handshake(entry, frame, now)
            return self._on_frame(entry, frame, now)
        except RemoteProtocolError as exc:
            refusal = entry.handshake.pending_refusal
            commands: list[Command] = [Send(link_id, tuple(refusal))] if refusal else []
            reason = f"{exc.reason}: {exc}"
            if entry.outbound and entry.purpose == "coordinator" and self._coordinator_failures > 0:
                reason = f"still: {reason}"  # the same stranger on the port again: said loudly the first time only
            return commands + self._close(entry, now, reason)

    def link_heard(self, link_id: int, now: float) -> None:
        """Whole frames arrived on a link and wait, unhandled, behind other work of this peer: the link is not
        silent (rule 6)."""
        entry = self.links.get(link_id)
        if entry is not None:
            entry.last_rx = now

    def link_closed(self, link_id: int, now: float, reason: str) -> list[Command]:
        """A link is gone (EOF, reset, or a read error the runtime saw)."""
        entry = self.links.get(link_id)
        if entry is None:
            return []
        return self._forget_link(entry, now, reason)

    def _handshake(self, entry: LinkEntry, frame: Frame, now: float) -> list[Command]:
        replies = entry.handshake.receive(frame)
        if not entry.outbound:
            entry.purpose = entry.handshake.role
            if entry.purpose == "coordinator" and not self.is_coordinator:
                raise RemoteProtocolError("introduction asked of a peer that is not the coordinator", reason="role")
        commands = self._send(entry, replies, now)
        if entry.is_open:
            commands += self._on_open(entry, now)
        return commands

    def _on_open(self, entry: LinkEntry, now: float) -> list[Command]:
        remote = entry.handshake.remote
        assert remote is not None
        entry.peer_id = remote.peer_id
        if entry.purpose == "coordinator":
            if entry.outbound:
                if not entry.handshake.remote_coordinator:
                    raise RemoteProtocolError("the peer on the coordinator port is not the coordinator", reason="role")
                self.coordinator_id = remote.peer_id
                self.role = Role.MEMBER
                self._coordinator_failures = 0
                self.successor = None
                self.known[remote.peer_id] = remote
                return self._send(entry, [Introduce(self.info)], now)
            return []  # inbound: wait for Introduce
        if entry.purpose == "observer":
            # A read-only client (the CLI): the coordinator tells it who is in the mesh; any peer answers its sync.
            status = PeerStatus(
                self.info, tuple(sorted(self.data_links)), self.coordinator_id or "", self.replica.state.digest()
            )
            return self._send(entry, [self._peer_list(), status] if self.is_coordinator else [status], now)
        if remote.peer_id == self.peer_id:
            raise RemoteProtocolError("linked to ourselves", reason="self")
        self.known[remote.peer_id] = remote
        existing = self.data_links.get(remote.peer_id)
        if existing is not None:
            keep = self._preferred(existing, entry)
            drop = entry if keep is self.links[existing] else self.links[existing]
            drop.duplicate = True
            if keep is entry:
                self._carry_live(entry)
            self.data_links[remote.peer_id] = keep.link_id
            commands = self._close(drop, now, "duplicate link")
            return commands if keep is not entry else commands + self._start_sync(entry, now)
        self._carry_live(entry)
        self.data_links[remote.peer_id] = entry.link_id
        return self._start_sync(entry, now)

    def _carry_live(self, entry: LinkEntry) -> None:
        """``entry`` becomes the data link to its peer: every operation made here from now on goes out on it live
        (:meth:`make`), so its anti-entropy answers leave those out (:meth:`_sync_frames`)."""
        entry.live_from = self.replica.seq + 1

    def _preferred(self, existing_id: int, new: LinkEntry) -> LinkEntry:
        """Rule 2: of two links between the same pair, keep the one dialed by the smaller peer id (and, if one
        peer dialed twice, the one from the smaller dialer address): both ends know both, so both keep the same."""
        old = self.links[existing_id]

        def rank(e: LinkEntry) -> tuple[str, str]:
            handshake = e.handshake
            if e.outbound:
                return (self.peer_id, handshake.local_addr)
            return (e.peer_id or "", handshake.remote_addr)

        return min((old, new), key=rank)

    def _start_sync(self, entry: LinkEntry, now: float) -> list[Command]:
        entry.syncs_sent += 1
        return self._send(entry, [self.replica.sync_request()], now)

    def request_sync(self, now: float) -> tuple[dict[int, int], list[Command]]:
        """Ask every linked peer for anti-entropy now; returns marks for :meth:`synced_with`, and the commands.

        A peer handles the frames of a link in the order they were sent and answers every request, so a peer that
        has answered this request holds every operation this peer made before the call (and this peer holds every
        operation that peer held when it answered): how a one-shot command knows its message reached the mesh.
        """
        marks: dict[int, int] = {}
        commands: list[Command] = []
        for link_id in self.data_links.values():
            entry = self.links[link_id]
            commands += self._start_sync(entry, now)
            marks[link_id] = entry.syncs_sent
        return marks, commands

    def synced_with(self, marks: dict[int, int]) -> list[str]:
        """The peers that have answered the requests of :meth:`request_sync` (``marks``) on links still open."""
        answered = []
        for link_id, mark in marks.items():
            entry = self.links.get(link_id)
            if entry is not None and entry.peer_id is not None and entry.syncs_answered >= mark:
                answered.append(entry.peer_id)
        return sorted(answered)

    def _on_frame(self, entry: LinkEntry, frame: Frame, now: float) -> list[Command]:
        if isinstance(frame, Heartbeat):
            return []
        if isinstance(frame, Ops):
            for op in frame.ops:
                if op.origin != entry.peer_id:
                    raise RemoteProtocolError(
                        f"live operation from {op.origin} on the link of {entry.peer_id}", reason="authority"
                    )
            notices = self._check_clocks(frame.ops, now)
            return notices + self._deliver(self.replica.receive_many(frame.ops), now)
        if isinstance(frame, SyncRequest):
            if now - entry.last_sync_answer < self.config.sync_answer_interval:
                # Asked again too soon: coalesced, so a flood of requests cannot become a flood of whole-state
                # answers; still answered (later), because a one-shot command waits for its answer.
                entry.deferred_syncs += 1
                if entry.deferred_syncs > MAX_DEFERRED_SYNCS:
                    return self._close(entry, now, f"flooded with sync requests (over {MAX_DEFERRED_SYNCS} waiting)")
                entry.deferred_sync = frame
                self._sync_answer_at[entry.link_id] = entry.last_sync_answer + self.config.sync_answer_interval
                return []
            entry.last_sync_answer = now
            return self._send(entry, self._sync_frames(entry, frame), now)
        if isinstance(frame, SyncOps):
            if frame.done:
                entry.syncs_answered += 1
            notices = self._check_clocks(frame.ops, now)
            delivered = self._deliver(self.replica.receive_many(frame.ops), now)
            if frame.done:
                self.replica.adopt_floors(frame.floors)
            return notices + delivered
        if isinstance(frame, Introduce):
            if not (self.is_coordinator and entry.purpose == "coordinator"):
                raise RemoteProtocolError("Introduce sent to a peer that is not the coordinator", reason="role")
            self.introduced[entry.link_id] = frame.peer
            self.known[frame.peer.peer_id] = frame.peer
            return self._send(entry, [self._peer_list()], now)
        if isinstance(frame, PeerList):
            commands: list[Command] = []
            for info in frame.peers:
                if info.peer_id != self.peer_id and self._same_mesh(info):
                    self.known[info.peer_id] = info
                    commands += self._dial_peer(info)
            self._met()  # after the dials: they are part of the first round
            return commands
        if isinstance(frame, Handover):
            self.successor = frame.successor
            if frame.successor == self.peer_id:
                self._successor_since = now
                return self._try_bind()
            return []
        if isinstance(frame, CoordinatorAt):
            if self.is_coordinator or self.coordinator_link is not None or self.closed:
                return []
            self._bind_at = None
            return self._dial_coordinator()
        if isinstance(frame, Goodbye):
            entry.said_goodbye = True
            return []
        raise RemoteProtocolError(f"unexpected {type(frame).__name__} frame on an open link", reason="unexpected")

    def _check_clocks(self, ops: tuple[Op, ...], now: float) -> list[Command]:
        """Refuse operations stamped before the epoch or beyond ``max_clock_ahead`` past this peer's clock: adopting
        such a stamp would push the hybrid clock (and every later stamp, up to overflow) out of range.

        The bound is taken from the highest wall-clock reading this peer has made, never from a received stamp (a
        peer could otherwise raise it step by step): stamps anywhere in the mesh stay within ``max_clock_ahead`` of
        some peer's real clock, so a poisoned stamp moves clocks by at most that, and never near overflow. Honest
        stamps are ahead of this peer's clock only by a clock step (a peer stepped forward, or this one stepped
        back while others stamp after what they have seen): days at most, well inside the bound, so they are
        accepted and said once (:meth:`_note_clock`)."""
        wall_ms = self._wall_ms(now)
        limit = (self._wall_high + int(self.config.max_clock_ahead * 1000) + 1) << COUNTER_BITS
        newest = 0
        for op in ops:
            body = op.body
            stamps = (op.hlc, body.incarnation) if isinstance(body, AgentUpsert) else (op.hlc,)
            if min(stamps) < 0:
                raise RemoteProtocolError(f"operation {op.origin}-{op.seq} is stamped before 1970", reason="clock")
            if max(stamps) >= limit:
                ahead = (hlc_wall_ms(max(stamps)) - wall_ms) / 1000
                raise RemoteProtocolError(
                    f"operation {op.origin}-{op.seq} is stamped {ahead:.0f} s ahead of this peer's clock "
                    f"(at most {self.config.max_clock_ahead:.0f} s is accepted)",
                    reason="clock",
                )
            newest = max(newest, op.hlc)
        return self._note_clock(wall_ms, newest)

    def _wall_ms(self, now: float) -> int:
        """The wall clock now, in milliseconds (read when used, see "Two clocks" in the module docstring)."""
        return self._wall_us(now) // 1000

    def _wall_us(self, now: float) -> int:
        """The wall clock now, in microseconds (what a stamp is made of: :mod:`~.hlc`)."""
        wall = self.wall_clock() if self.wall_clock is not None else now + self.wall_offset
        wall_us = int(wall * 1_000_000)
        if wall_us // 1000 > self._wall_high:
            self._wall_high = wall_us // 1000
        return wall_us

    def _note_clock(self, wall_ms: int, stamp: int) -> list[Command]:
        """Say once that this peer's clock is behind a stamp it holds (it was set back, or another peer's clock is
        ahead), and again only after it has caught up: the hybrid clock carries on after the newest stamp."""
        newest_ms = max(hlc_wall_ms(stamp), hlc_wall_ms(self.replica.hlc.last))
        behind = (newest_ms - wall_ms) / 1000
        if behind <= self.config.clock_notice:
            if behind <= 0:
                self._clock_behind_noted = False
            return []
        if self._clock_behind_noted:
            return []
        self._clock_behind_noted = True
        return [
            Notice(
                f"clock: this peer's wall clock is {behind:.0f} s behind the newest stamp it holds (the clock was set "
                "back, or another peer's clock is ahead); operations are accepted and stamped after the newest "
                "until the clock catches up"
            )
        ]

    def _peer_list(self) -> PeerList:
        peers = tuple(sorted({self.info, *self.introduced.values()}, key=_rank_key))
        return PeerList(peers, self.peer_id)

    def _sync_frames(self, entry: LinkEntry, request: SyncRequest) -> list[Frame]:
        """Anti-entropy answer on ``entry``, cut into frames that stay well under the frame cap.

        No redundant resend while the link carries live traffic: the operations made here since the link became
        the data link to its peer went out on it live, before this answer and in order (a link is ordered, and what
        is held for it is flushed before any other frame), so the asker holds them once it reads the answer and
        they are left out. Under a flood these are most of what the asker lacks when it asks: resent, they would
        double the link's load exactly when it is busiest."""
        ops = self.replica.sync_answer(request)
        live_from = entry.live_from
        if live_from is not None:
            own = self.peer_id
            ops = [op for op in ops if op.origin != own or op.seq < live_from]
        chunks = self._chunks(ops)
        last = chunks.pop() if chunks else ()
        # always one final frame, so the asker knows it is done; it carries our floors (see SyncOps)
        return [
            *(SyncOps(chunk, done=False) for chunk in chunks),
            SyncOps(last, done=True, floors=self.replica.floors()),
        ]

    def ops_frames(self, ops: Iterable[Op]) -> list[Ops]:
        """Operations made here, as ``Ops`` frames that stay well under the frame cap (in order)."""
        return [Ops(chunk) for chunk in self._chunks(ops)]

    def _chunks(self, ops: Iterable[Op]) -> list[tuple[Op, ...]]:
        """``ops`` cut into runs that stay well under the frame cap (in order; none empty)."""
        chunks: list[tuple[Op, ...]] = []
        chunk: list[Op] = []
        size = 0
        for op in ops:
            op_size = len(_encoder.encode(op))
            if chunk and size + op_size > self.config.sync_chunk_bytes:
                chunks.append(tuple(chunk))
                chunk, size = [], 0
            chunk.append(op)
            size += op_size
        if chunk:
            chunks.append(tuple(chunk))
        return chunks

    def _close(self, entry: LinkEntry, now: float, reason: str) -> list[Command]:
        remote = entry.peer_id or entry.handshake.remote_addr
        return [CloseLink(entry.link_id, reason, remote), *self._forget_link(entry, now, reason)]

    def _forget_link(self, entry: LinkEntry, now: float, reason: str) -> list[Command]:
        del self.links[entry.link_id]
        self._sync_answer_at.pop(entry.link_id, None)
        commands: list[Command] = []
        self.introduced.pop(entry.link_id, None)
        peer_id = entry.peer_id
        if entry.link_id == self.coordinator_link:
            self.coordinator_link = None
            self._met()  # no peer list from it: the peers of the registry are those to sync with
            if not self.closed and not self.is_coordinator:
                commands += self._coordinator_lost(now, reached=entry.is_open)
        elif peer_id is not None and self.data_links.get(peer_id) == entry.link_id:
            del self.data_links[peer_id]
            if not entry.said_goodbye and not self.closed:
                commands += self._suspect_agents_of(peer_id, now)
            self.known.pop(peer_id, None)
        if entry.outbound and entry.purpose == "coordinator" and not entry.is_open and not self.closed:
            # The coordinator port accepted but never finished the handshake: it may be stopped (rule 7).
            commands.append(ReadPeerRegistry())
        return commands

    def _coordinator_lost(self, now: float, *, reached: bool) -> list[Command]:
        """Rules 4 and 5: the coordinator link closed (``reached``: after a finished handshake)."""
        if self.successor == self.peer_id:
            return self._try_bind()
        lost = self.coordinator_id
        rank = self._rank(excluding=lost)
        # After a graceful handover the successor binds and announces itself; binding ourselves is only the
        # fallback in case it died too.
        delay = self.config.handover_grace if self.successor else rank * self.config.bind_stagger
        if not reached:
            # Whatever holds the port did not complete a handshake (stopped, or not one of our peers):
            # back off exponentially instead of hammering it.
            self._coordinator_failures += 1
            backoff = self.config.retry_interval * 2 ** min(self._coordinator_failures - 1, 5)
            delay = max(delay, min(backoff, self.config.max_retry_interval))
        self._bind_at = now + delay
        self.coordinator_id = None
        self.role = Role.JOINING
        return []

    def _suspect_agents_of(self, peer_id: str, now: float) -> list[Command]:
        """Rule 6: the agents hosted by a peer whose link dropped are offline."""
        commands: list[Command] = []
        for suspect in self.hosting.suspects_of(self.replica.state, peer_id):
            commands += self.submit(suspect, now)
        return commands

    # ------------------------------------------------------------------ operations

    def submit(self, body: Body, now: float) -> list[Command]:
        """Make a local operation, apply it, broadcast it on every data link."""
        return self.make(body, now)[1]

    def make(self, body: Body, now: float) -> tuple[Op, list[Command]]:
        """:meth:`submit` that also returns the operation it made."""
        ops, commands = self.make_all((body,), now)
        return ops[0], commands

    def make_all(self, bodies: Iterable[Body], now: float) -> tuple[list[Op], list[Command]]:
        """Make several local operations in order, apply each, and broadcast them together in one ``Ops`` frame
        per data link (an agent's acknowledgements and the reply that follows them travel as one)."""
        wall_ms, micros = divmod(self._wall_us(now), 1000)
        ops: list[Op] = []
        changes: list[Change] = []
        commands: list[Command] = []
        for body in bodies:
            op, made = self.replica.make(body, wall_ms, micros)
            commands += self._note_clock(wall_ms, op.hlc)
            ops.append(op)
            changes += made
        frame = Ops(tuple(ops))
        for link_id in self.data_links.values():
            commands += self._send(self.links[link_id], [frame], now)
        if changes:
            commands.append(Deliver(tuple(changes)))
        return ops, commands

    def relay(self, ops: Iterable[Op], now: float) -> list[Command]:
        """Operations of other machines, brought by this machine's gateway: applied exactly as if received on a
        link (the clock check, then every rule of the state), and those new here passed on to every data link (as
        anti-entropy, the frame that may carry any origin's operations)."""
        ops = tuple(ops)
        notices = self._check_clocks(ops, now)
        fresh = tuple(op for op in ops if op.seq not in self.replica.seen.get(op.origin, ()))
        commands = notices + self._deliver(self.replica.receive_many(fresh), now)
        frames: list[Frame] = [SyncOps(chunk, done=False) for chunk in self._chunks(fresh)]
        for link_id in self.data_links.values():
            commands += self._send(self.links[link_id], frames, now)
        return commands

    # ------------------------------------------------------------------ hosted agents (see :mod:`~.hosting`)

    def host_agent(self, record: AgentUpsert, now: float) -> list[Command]:
        """Start hosting an agent: claim it with an incarnation above every claim known for it."""
        tick = self.replica.hlc.tick(*divmod(self._wall_us(now), 1000))
        return self.submit(self.hosting.claim(record, tick, self.replica.state), now)

    def update_agent(self, agent_id: str, now: float, **changes: object) -> list[Command]:
        """Change fields of a hosted agent's record (a new version of the same claim)."""
        return self.submit(self.hosting.update(agent_id, **changes), now)

    def release_agent(self, agent_id: str, now: float) -> list[Command]:
        """Stop hosting an agent; the mesh sees it offline."""
        return self.submit(self.hosting.release(agent_id), now)

    def processes_exited(self, agent_ids: Iterable[str], now: float) -> list[Command]:
        """The runtime's process probe found these agents' processes gone: hosted ones are released, others
        are declared offline for the whole mesh."""
        commands: list[Command] = []
        for body in self.hosting.exited(self.replica.state, agent_ids):
            commands += self.submit(body, now)
        return commands

    def _deliver(self, changes: list[Change], now: float) -> list[Command]:
        """Changes applied from other peers, for the runtime; a hosted agent they mark offline is claimed again
        (rule 6)."""
        commands: list[Command] = [Deliver(tuple(changes))] if changes else []
        hosted = self.hosting.hosted
        for change in changes:
            if isinstance(change, AgentChanged) and change.agent_id in hosted:
                refuted = self.hosting.refutation(change)
                if refuted is not None:
                    commands += self.host_agent(refuted, now)
        return commands

    # ------------------------------------------------------------------ time

    def get_timer(self) -> float | None:
        """The earliest deadline this peer keeps, when :meth:`handle_timer` should next run (``None``: nothing
        scheduled). Cheap: called very often."""
        due = self.sweep.at if self.links else None
        for at in (self._bind_at, self._ready_at, self._anti_entropy_at, self._gc_at):
            if at is not None and (due is None or at < due):
                due = at
        if self._sync_answer_at:
            at = min(self._sync_answer_at.values())
            if due is None or at < due:
                due = at
        return due

    def handle_timer(self, now: float) -> list[Command]:
        """Run everything due at ``now``: heartbeats and timeouts (the sweep), then each named deadline that has
        passed: the bind, rule 9's bound, deferred sync answers, periodic anti-entropy, forgetting."""
        commands: list[Command] = []
        if self.sweep.due(now, self.links):
            commands += self._sweep(now)
        live = not self.closed
        if self._bind_at is not None and self._bind_at <= now:
            self._bind_at = None
            if live:
                commands += self._try_bind()
        if self._ready_at is not None and self._ready_at <= now:
            self._ready_at = None
            if live:
                self._synced = True  # rule 9's bound: whatever still stalls the first round, act on what is here
        if self._sync_answer_at:
            for link_id, at in list(self._sync_answer_at.items()):
                if at <= now and self._sync_answer_at.pop(link_id, None) is not None and live:
                    commands += self._answer_deferred_sync(link_id, now)
        if self._anti_entropy_at is not None and self._anti_entropy_at <= now:
            self._anti_entropy_at = None
            if live:
                self._anti_entropy_at = now + self.config.anti_entropy_interval
                commands += self._anti_entropy(now)
        if self._gc_at is not None and self._gc_at <= now:
            self._gc_at = None
            if live:
                self._gc_at = now + self.config.gc_interval
                commands += self.collect_garbage(now)
        return commands

    def heartbeats(self, now: float) -> list[Command]:
        """Rule 6's heartbeats alone, without its timeouts: for a runtime kept from running its timers (its caller
        does not yield), so that the other peers do not judge this one silent meanwhile."""
        commands: list[Command] = []
        for verdict in self.sweep.heartbeats_due(self.links, now):
            commands += self._send(verdict.entry, [Heartbeat()], now)
        return commands

    def _sweep(self, now: float) -> list[Command]:
        """Rule 6: act on what the sweep finds on each link."""
        commands: list[Command] = []
        for verdict in self.sweep.verdicts(self.links, now):
            match verdict:
                case HandshakeTimedOut(entry):
                    commands += self._close(entry, now, self._handshake_timeout_reason(entry))
                case Silent(entry):
                    commands += self._close(entry, now, f"silent for {self.config.link_timeout:g} s")
                case HeartbeatDue(entry):
                    commands += self._send(entry, [Heartbeat()], now)
                case _:
                    assert_never(verdict)
        return commands

    def _handshake_timeout_reason(self, entry: LinkEntry) -> str:
        if entry.outbound and entry.purpose == "coordinator" and self._coordinator_failures == 0:
            # Said loudly once per outage (the retries that follow say it quietly): this is what a user sees when
            # a stopped peer, or a process that is not a mesh peer of theirs, holds the port.
            return (
                f"squatter? the process holding the coordinator port {self.config.coordinator_port} did not complete "
                f"the handshake within {self.config.handshake_timeout:g} s (a stopped peer, or a process that is "
                "not a mesh peer of this user); nothing but a nonce was sent to it; meeting peers through the registry"
            )
        return "handshake timed out"

    def _anti_entropy(self, now: float) -> list[Command]:
        """Rule 3's periodic round, on one data link in turn, after rule 8's repair."""
        commands = self._repair_links(now)
        open_links = sorted(self.data_links.values())
        if not open_links:
            return commands
        self._anti_entropy_turn = (self._anti_entropy_turn + 1) % len(open_links)
        return commands + self._start_sync(self.links[open_links[self._anti_entropy_turn]], now)

    def collect_garbage(self, now: float) -> list[Command]:
        """Forget agents offline for longer than ``offline_retention`` (and what only they held), and re-stamp
        hosted agents whose record is older than a quarter of it, so a live agent is never older than the horizon.

        Also forgets the sequence bookkeeping of origins that this replica has held nothing of for a retention, is
        not linked to, and has seen nothing from for twice the retention (peers that left long ago), so restarts of
        peers do not accumulate it; kept that long, it refuses what this replica forgot when a replica collecting
        later offers it again (:meth:`~.replica.Replica.collect_garbage`).
        """
        now_ms = self._wall_ms(now)
        retention_ms = int(self.config.offline_retention * 1000)
        self.replica.collect_garbage(now_ms - retention_ms, now_ms - 2 * retention_ms, keep=self.data_links.keys())
        commands: list[Command] = []
        for agent_id in self.hosting.stale(self.replica.state, now_ms - retention_ms // 4):
            commands += self.update_agent(agent_id, now)
        return commands

    def _repair_links(self, now: float) -> list[Command]:
        """Rule 8: dial again the live peers we lost a data link to (the coordinator: every introduced peer; the
        others: whoever the coordinator's answer to an idempotent :class:`~.wire.Introduce` lists)."""
        if self.closed:
            return []
        if self.is_coordinator:
            commands: list[Command] = []
            for info in list(self.introduced.values()):
                commands += self._dial_peer(info)
            return commands
        link = self.links.get(self.coordinator_link) if self.coordinator_link is not None else None
        if link is None or not link.is_open:
            return []
        return self._send(link, [Introduce(self.info)], now)

    def _answer_deferred_sync(self, link_id: int, now: float) -> list[Command]:
        entry = self.links.get(link_id)
        if entry is None or entry.deferred_sync is None:
            return []
        request, count = entry.deferred_sync, entry.deferred_syncs
        entry.deferred_sync, entry.deferred_syncs = None, 0
        entry.last_sync_answer = now
        empty = SyncOps((), done=True)
        return self._send(entry, [*self._sync_frames(entry, request), *([empty] * (count - 1))], now)

    def _send(self, entry: LinkEntry, frames: Iterable[Frame], now: float) -> list[Command]:
        frames = tuple(frames)
        if not frames:
            return []
        entry.last_tx = now
        return [Send(entry.link_id, frames)]

    # ------------------------------------------------------------------ leaving

    def close(self, now: float) -> list[Command]:
        """Rule 4: leave gracefully: agents offline, hand the coordinator role over, say goodbye, close links."""
        commands: list[Command] = []
        for released in self.hosting.releases():
            commands += self.submit(released, now)
        was_coordinator = self.is_coordinator
        self.role = Role.CLOSED
        if was_coordinator:
            candidates = [info for info in self.known.values() if info.peer_id in self.data_links]
            candidates += list(self.introduced.values())
            successor = min(candidates, key=_rank_key).peer_id if candidates else None
            if successor is not None:
                handover = Handover(successor)
                for entry in self.links.values():
                    if entry.is_open and entry.purpose in ("coordinator", "data"):
                        commands += self._send(entry, [handover], now)
            commands.append(ReleaseCoordinatorPort())
        for entry in list(self.links.values()):
            if entry.is_open and entry.purpose == "data":
                commands += self._send(entry, [Goodbye("shutting down")], now)
            commands.append(CloseLink(entry.link_id, "peer shutting down"))
        self.links.clear()
        self.data_links.clear()
        self.coordinator_link = None
        self._bind_at = self._anti_entropy_at = self._gc_at = self._ready_at = None
        self._sync_answer_at.clear()
        self.sweep.stop()
        return commands
