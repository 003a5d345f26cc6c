"""The links one peer tracks: each link's entry, what a dial is for, and the sweep that keeps links alive.

The :class:`~.peer.Peer` owns the table of :class:`LinkEntry`; this module holds what is about links alone:

* :class:`DialCoordinator` and :class:`DialPeer`, the targets of the dials on their way (:data:`DialTarget`);
* :class:`LinkSweep`, the one deadline on which every link is checked (rule 6 of :mod:`~.peer`): a link whose
  handshake has not finished in ``handshake_timeout`` or that has been silent for ``link_timeout`` is closed, an
  idle one gets a heartbeat. Links are swept every half heartbeat interval rather than each on its own deadline,
  so the peer's next deadline stays cheap to compute on a busy peer; heartbeats and timeouts are late by at most
  one sweep. A sweep that runs late (by more than a sweep's period) means that this peer itself stood still
  meanwhile (a long step, a starved process, a loaded machine): it could not read what its links brought, so that
  time is not counted against them (:meth:`LinkSweep.due`). Timeouts measure only the time this peer was watching.
"""

from __future__ import annotations

import math
from collections.abc import Iterator, Mapping

import attrs

from .link import LinkHandshake
from .wire import LinkRole, SyncRequest

__all__ = [
    "DialCoordinator",
    "DialPeer",
    "DialTarget",
    "HandshakeTimedOut",
    "HeartbeatDue",
    "LinkEntry",
    "LinkSweep",
    "LinkVerdict",
    "Silent",
]


@attrs.frozen
class DialCoordinator:
    """A dial to the coordinator port (whoever holds it)."""


@attrs.frozen
class DialPeer:
    """A dial for a data link to the peer ``peer_id`` (at the data port it announced)."""

    peer_id: str


DialTarget = DialCoordinator | DialPeer


@attrs.define
class LinkEntry:
    """One link as the peer tracks it."""

    link_id: int
    outbound: bool
    handshake: LinkHandshake
    #: when the link opened, and when it last received anything (both moved later by the time this peer stood
    #: still, see :meth:`LinkSweep.due`): the handshake and silence timeouts count from them
    opened_at: float
    last_rx: float
    last_tx: float
    #: what the link is for: set by the dialer's Hello on inbound links
    purpose: LinkRole = "data"
    peer_id: str | None = None
    #: on a data link we dialed: who we expect to answer (known before the handshake finishes)
    expected_peer: str | None = None
    said_goodbye: bool = False
    duplicate: bool = False
    #: anti-entropy requests sent on this link, and final answers (``SyncOps`` with ``done``) received: the other
    #: end answers every request exactly once, in the order the frames came (see :meth:`Peer.request_sync`)
    syncs_sent: int = 0
    syncs_answered: int = 0
    #: when a sync request on this link was last answered
    last_sync_answer: float = -math.inf
    #: the latest request that came too soon after the last answer, and how many came: answered when the interval
    #: has passed (the answer to the latest covers the earlier ones, which get an empty final frame each)
    deferred_sync: SyncRequest | None = None
    deferred_syncs: int = 0
    #: the sequence number of the first operation made here that went out on this link live (``None``: none does,
    #: it is not the data link to its peer); its anti-entropy answers leave out that one and those after it
    live_from: int | None = None

    @property
    def is_open(self) -> bool:
        """Whether the handshake has finished."""
        return self.handshake.is_open


@attrs.frozen
class HandshakeTimedOut:
    """The link's handshake did not finish in ``handshake_timeout``: close it."""

    entry: LinkEntry


@attrs.frozen
class Silent:
    """The open link has received nothing for ``link_timeout``: close it."""

    entry: LinkEntry


@attrs.frozen
class HeartbeatDue:
    """The open link has sent nothing for ``heartbeat_interval``: send a heartbeat."""

    entry: LinkEntry


LinkVerdict = HandshakeTimedOut | Silent | HeartbeatDue


@attrs.define
class LinkSweep:
    """When the links are next checked, and what each check finds (pure: the peer acts on the verdicts)."""

    heartbeat_interval: float
    link_timeout: float
    handshake_timeout: float
    #: the sweep's deadline (``None`` while there are no links)
    at: float | None = None

    def link_added(self, now: float) -> None:
        """A link was opened: start sweeping if nothing was swept yet."""
        if self.at is None:
            self.at = now + self.heartbeat_interval / 2

    def stop(self) -> None:
        """No more sweeps (the peer left)."""
        self.at = None

    def due(self, now: float, links: Mapping[int, LinkEntry]) -> bool:
        """Whether a sweep is due at ``now``; if so the next one is scheduled (none once there are no links).

        A sweep late by more than its period finds a peer that stood still: what its links sent meanwhile may be
        waiting unread, so the time it stood still is credited to every link (its silence and its handshake are
        timed from that much later, never beyond ``now``) instead of closing links that were never listened to."""
        at = self.at
        if at is None or now < at:
            return False
        period = self.heartbeat_interval / 2
        self.at = now + period if links else None
        stood_still = now - at
        if stood_still > period:
            for entry in links.values():
                entry.last_rx = min(entry.last_rx + stood_still, now)
                entry.opened_at = min(entry.opened_at + stood_still, now)
        return True

    def heartbeats_due(self, links: Mapping[int, LinkEntry], now: float) -> Iterator[HeartbeatDue]:
        """The open links that have sent nothing for ``heartbeat_interval`` (no timeouts judged)."""
        for entry in list(links.values()):
            if entry.is_open and now >= entry.last_tx + self.heartbeat_interval:
                yield HeartbeatDue(entry)

    def verdicts(self, links: Mapping[int, LinkEntry], now: float) -> Iterator[LinkVerdict]:
        """What each link needs now, link by link. Lazy: a link closed while acting on an earlier verdict is
        skipped."""
        for entry in list(links.values()):
            if entry.link_id not in links:
                continue
            if not entry.is_open:
                if now >= entry.opened_at + self.handshake_timeout:
                    yield HandshakeTimedOut(entry)
            elif now >= entry.last_rx + self.link_timeout:
                yield Silent(entry)
            elif now >= entry.last_tx + self.heartbeat_interval:
                yield HeartbeatDue(entry)
