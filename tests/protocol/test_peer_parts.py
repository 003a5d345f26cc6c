"""The parts a peer composes, each on its own and without a mesh: the link sweep, the hosted agents, the role and
the named deadlines."""

from __future__ import annotations

import random

import pytest

from agent_comms.protocol.changes import AgentChanged
from agent_comms.protocol.errors import LocalProtocolError
from agent_comms.protocol.hosting import Hosting
from agent_comms.protocol.link import HandshakeState, LinkHandshake
from agent_comms.protocol.links import HandshakeTimedOut, HeartbeatDue, LinkEntry, LinkSweep, Silent
from agent_comms.protocol.ops import AgentSuspect, AgentUpsert
from agent_comms.protocol.peer import Peer, PeerConfig, Role
from agent_comms.protocol.replica import Replica
from agent_comms.protocol.wire import PeerInfo

INFO = PeerInfo("p", 1, 0.0, 1000, 0.0, 4000)


def _entry(link_id: int, *, opened: bool, last_rx: float = 0.0, last_tx: float = 0.0) -> LinkEntry:
    handshake = LinkHandshake(
        dialer=True, key=b"k" * 32, nonce=b"n" * 16, local_addr="a", remote_addr="b", identity=INFO
    )
    if opened:
        handshake.state = HandshakeState.OPEN
    return LinkEntry(link_id, True, handshake, opened_at=0.0, last_rx=last_rx, last_tx=last_tx)


def test_the_sweep_runs_every_half_heartbeat_while_there_are_links() -> None:
    sweep = LinkSweep(heartbeat_interval=0.2, link_timeout=1.0, handshake_timeout=0.5)
    assert sweep.at is None
    sweep.link_added(1.0)
    sweep.link_added(1.05)  # already scheduled: unchanged
    assert sweep.at == pytest.approx(1.1)
    links = {1: _entry(1, opened=True)}
    assert not sweep.due(1.09, links)
    assert sweep.due(1.1, links)
    assert sweep.at == pytest.approx(1.2)
    assert sweep.due(1.3, {})
    assert sweep.at is None  # no links left: no more sweeps until one opens


def test_the_sweep_finds_what_each_link_needs() -> None:
    sweep = LinkSweep(heartbeat_interval=0.2, link_timeout=1.0, handshake_timeout=0.5)
    stuck = _entry(1, opened=False)
    silent = _entry(2, opened=True, last_rx=0.0, last_tx=0.9)
    idle = _entry(3, opened=True, last_rx=0.9, last_tx=0.7)
    fine = _entry(4, opened=True, last_rx=0.9, last_tx=0.95)
    links = {e.link_id: e for e in (stuck, silent, idle, fine)}
    assert list(sweep.verdicts(links, 1.0)) == [HandshakeTimedOut(stuck), Silent(silent), HeartbeatDue(idle)]


def test_a_link_closed_while_sweeping_is_skipped() -> None:
    sweep = LinkSweep(heartbeat_interval=0.2, link_timeout=1.0, handshake_timeout=0.5)
    links = {1: _entry(1, opened=False), 2: _entry(2, opened=False)}
    seen = []
    for verdict in sweep.verdicts(links, 1.0):
        seen.append(verdict.entry.link_id)
        links.pop(2, None)
    assert seen == [1]


def test_a_late_sweep_does_not_count_the_time_this_peer_stood_still_against_its_links() -> None:
    """A peer that stood still (a long step, a starved process) could not read what its links sent meanwhile: its
    late sweep closes nothing, and the links are timed from the end of the stall, so they are judged only on time the
    peer was watching (they still time out if they stay silent while it watches)."""
    sweep = LinkSweep(heartbeat_interval=0.2, link_timeout=1.0, handshake_timeout=0.5)
    sweep.link_added(0.0)
    handshaking = _entry(1, opened=False)
    quiet = _entry(2, opened=True, last_rx=0.0, last_tx=0.0)
    links = {1: handshaking, 2: quiet}
    assert sweep.due(0.1, links)
    assert list(sweep.verdicts(links, 0.1)) == []
    # the peer stood still from 0.1 to 5.0: the sweep due at 0.2 runs 4.8 s late
    assert sweep.due(5.0, links)
    assert [type(v) for v in sweep.verdicts(links, 5.0)] == [HeartbeatDue]
    assert (handshaking.opened_at, quiet.last_rx) == (pytest.approx(4.8), pytest.approx(4.8))
    # watched on time from then on, the silent link and the unfinished handshake time out as usual
    now = 5.0
    while now < 6.0:
        now += 0.1
        assert sweep.due(now, links)
        found = {type(v) for v in sweep.verdicts(links, now)}
        if now < 4.8 + 0.5 - 1e-9:
            assert HandshakeTimedOut not in found
        if now >= 4.8 + 1.0:
            assert Silent in found


def test_a_sweep_late_by_less_than_its_period_counts_every_second() -> None:
    sweep = LinkSweep(heartbeat_interval=0.2, link_timeout=1.0, handshake_timeout=0.5)
    sweep.link_added(0.0)
    quiet = _entry(1, opened=True, last_rx=0.0, last_tx=0.95)
    links = {1: quiet}
    while sweep.at is not None and sweep.at < 1.0:
        assert sweep.due(sweep.at + 0.05, links)  # each one late by half a period
    assert quiet.last_rx == 0.0
    assert list(sweep.verdicts(links, 1.05)) == [Silent(quiet)]


def _record(agent_id: str = "x") -> AgentUpsert:
    return AgentUpsert(agent_id, "", 0, 0, "name", "h", "/", 0, 0.0)


def test_a_claim_is_above_every_known_claim_and_a_release_forgets_the_agent() -> None:
    replica = Replica.create("q", history_limit=10)
    other = Hosting("q")
    replica.make(other.claim(_record(), 500, replica.state), 1)
    hosting = Hosting("p")
    claimed = hosting.claim(_record(), 7, replica.state)
    assert (claimed.peer_id, claimed.incarnation, claimed.version, claimed.online) == ("p", 501, 0, True)
    updated = hosting.update("x", status="busy")
    assert (updated.version, updated.status) == (1, "busy")
    released = hosting.release("x")
    assert (released.version, released.online) == (2, False)
    assert hosting.hosted == {}
    with pytest.raises(LocalProtocolError):
        hosting.update("x")


def test_refutation_only_for_a_hosted_agent_marked_offline() -> None:
    hosting = Hosting("p")
    mine = hosting.claim(_record(), 10, Replica.create("p", history_limit=10).state)
    offline = AgentChanged("x", mine, online=False, previous=mine, was_online=True)
    assert hosting.refutation(offline) == mine
    assert hosting.refutation(AgentChanged("x", mine, online=True, previous=None, was_online=False)) is None
    other = AgentChanged("y", mine, online=False, previous=None, was_online=False)
    assert hosting.refutation(other) is None


def test_offline_verdicts_see_the_operations_made_before_them() -> None:
    replica, other = Replica.create("p", history_limit=10), Replica.create("q", history_limit=10)
    replica.receive(other.make(Hosting("q").claim(_record("y"), 3, other.state), 1)[0])
    assert list(Hosting.suspects_of(replica.state, "q")) == [AgentSuspect("y", 3, "q")]
    hosting = Hosting("p")
    replica.make(hosting.claim(_record("x"), 5, replica.state), 2)
    verdicts = []
    for body in hosting.exited(replica.state, ["x", "y", "y"]):
        verdicts.append(body)
        replica.make(body, 3)
    assert [type(b).__name__ for b in verdicts] == ["AgentUpsert", "AgentSuspect"]  # y once: then it is offline
    assert isinstance(verdicts[1], AgentSuspect)
    assert list(Hosting.suspects_of(replica.state, "q")) == []


def _role(peer: Peer) -> Role:
    return peer.role  # read afresh after each input (the type checker would keep the first reading)


def test_role_and_deadlines_of_a_peer_that_binds_then_leaves() -> None:
    peer = Peer.create(
        key=b"k" * 32,
        config=PeerConfig(coordinator_port=4000),
        rng=random.Random(1),
        pid=1,
        started_at=0.0,
        data_port=1,
    )
    assert _role(peer) is Role.JOINING
    peer.start(0.0)
    assert peer.get_timer() == pytest.approx(peer.config.ready_timeout)
    peer.coordinator_bound(0.0)
    assert _role(peer) is Role.COORDINATOR
    assert peer.is_coordinator
    assert peer.synced
    assert peer.get_timer() == pytest.approx(peer.config.anti_entropy_interval)
    peer.close(0.1)
    assert _role(peer) is Role.CLOSED
    assert peer.closed
    assert peer.get_timer() is None
    assert peer.handle_timer(100.0) == []
