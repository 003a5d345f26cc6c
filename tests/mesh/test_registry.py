"""The peer registry trusts only entries that are this user's files alone."""

from __future__ import annotations

import logging
import os
from pathlib import Path

import msgspec
import pytest

from agent_comms.liveness import process_start_time
from agent_comms.mesh.registry import PeerRegistry
from agent_comms.protocol.wire import PeerInfo

PORT = 40123


def _entry(peer_id: str) -> PeerInfo:
    # This test's own pid: the entry's process is alive, so only the checks on the file can keep it out.
    return PeerInfo(peer_id, os.getpid(), 1.0, 50000, port=PORT)


def test_own_entries_are_read(tmp_path: Path) -> None:
    registry = PeerRegistry(tmp_path)
    registry.publish(_entry("mine"))
    assert [info.peer_id for info in registry.read(PORT)] == ["mine"]


def test_entries_writable_by_others_are_ignored_and_said_once(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    registry = PeerRegistry(tmp_path)
    registry.publish(_entry("mine"))
    planted = registry.directory / "planted.peer"
    planted.write_bytes(msgspec.json.encode(_entry("planted")))
    planted.chmod(0o666)
    with caplog.at_level(logging.WARNING, logger="agent_comms.mesh"):
        assert [info.peer_id for info in registry.read(PORT)] == ["mine"]
        assert registry.ports() == {PORT: 1}
    said = [r.getMessage() for r in caplog.records if "planted.peer" in r.getMessage()]
    assert len(said) == 1
    assert "writable by other users" in said[0]
    assert planted.exists()  # not ours to remove


@pytest.mark.skipif(os.getuid() != 0, reason="giving a file to another user needs root")
def test_entries_of_another_user_are_ignored(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    registry = PeerRegistry(tmp_path)
    registry.publish(_entry("mine"))
    planted = registry.directory / "planted.peer"
    planted.write_bytes(msgspec.json.encode(_entry("planted")))
    planted.chmod(0o600)
    os.chown(planted, 65534, 65534)
    with caplog.at_level(logging.WARNING, logger="agent_comms.mesh"):
        assert [info.peer_id for info in registry.read(PORT)] == ["mine"]
    assert any("belongs to another user" in r.getMessage() for r in caplog.records)


def test_a_link_in_the_registry_is_not_followed(tmp_path: Path) -> None:
    registry = PeerRegistry(tmp_path)
    target = tmp_path / "elsewhere.peer"
    target.write_bytes(msgspec.json.encode(_entry("linked")))
    target.chmod(0o600)
    registry.directory.mkdir(mode=0o700)
    (registry.directory / "linked.peer").symlink_to(target)
    assert registry.read(PORT) == []


def test_an_entry_whose_pid_was_reused_is_dropped(tmp_path: Path) -> None:
    """A pid names the peer's process only together with its start time: a newer process with that pid is not it."""
    registry = PeerRegistry(tmp_path)
    started = process_start_time(os.getpid())
    assert started > 0, "this test needs /proc (Linux)"
    live = PeerInfo("live", os.getpid(), 1.0, 50000, process_start=started, port=PORT)
    # The same pid (alive: this process) but a process that started an hour earlier: the peer that wrote the entry
    # exited and its pid went to this process.
    stale = PeerInfo("stale", os.getpid(), 1.0, 50001, process_start=started - 3600, port=PORT)
    registry.publish(live)
    registry.publish(stale)
    assert [info.peer_id for info in registry.read(PORT)] == ["live"]
    assert not (registry.directory / "stale.peer").exists()
    assert (registry.directory / "live.peer").exists()
