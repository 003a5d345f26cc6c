"""Tests for :mod:`agent_comms.private_files`: the checks on what lies under ``AGENT_COMMS_HOME`` and the creation of
private files, and the writers of the mesh's own files that use them. The tests run as root, so ``os.chown`` to
uid 65534 plays another user."""

from __future__ import annotations

import os
import socket
import stat
from collections.abc import Iterator
from pathlib import Path

import pytest

from agent_comms.identity import claim_identity
from agent_comms.mesh.keyfile import MeshKeyError, ensure_home
from agent_comms.mesh.registry import PeerRegistry
from agent_comms.private_files import (
    UnsafePathError,
    check_private_dir,
    check_private_socket,
    copy_private,
    create_private_file,
    read_private_file,
    write_private_file,
)
from agent_comms.protocol.wire import PeerInfo

#: Another user is played by chown to uid 65534, which needs root (CI runs the tests as root).
needs_root = pytest.mark.skipif(os.geteuid() != 0, reason="plays another user with chown, which needs root")


@pytest.fixture
def umask_0() -> Iterator[None]:
    old = os.umask(0)
    try:
        yield
    finally:
        os.umask(old)


def _mode(path: Path) -> int:
    return stat.S_IMODE(os.lstat(path).st_mode)


@needs_root
def test_folders_must_be_ours_closed_and_real(tmp_path: Path) -> None:
    folder = tmp_path / "home"
    folder.mkdir(mode=0o700)
    check_private_dir(folder)
    for mode in (0o770, 0o707, 0o701):
        folder.chmod(mode)
        with pytest.raises(UnsafePathError, match="accessible to other users"):
            check_private_dir(folder)
    folder.chmod(0o700)
    os.chown(folder, 65534, -1)
    with pytest.raises(UnsafePathError, match=r"belongs to another user \(uid 65534\)"):
        check_private_dir(folder)
    os.chown(folder, os.getuid(), -1)
    link = tmp_path / "link"
    link.symlink_to(folder)
    check_private_dir(link, follow=True)  # the home may be a link to a folder of ours
    with pytest.raises(UnsafePathError, match="symbolic link"):
        check_private_dir(link)  # below the home, never
    with pytest.raises(FileNotFoundError):
        check_private_dir(tmp_path / "missing")
    # the mesh's own check of its home is this one
    folder.chmod(0o755)
    with pytest.raises(MeshKeyError, match="accessible to other users"):
        ensure_home(folder)


@needs_root
def test_files_are_read_only_if_ours_and_not_writable_by_others(tmp_path: Path) -> None:
    path = tmp_path / "f.json"
    path.write_bytes(b"{}")
    path.chmod(0o644)
    assert read_private_file(path) == b"{}"
    path.chmod(0o664)
    with pytest.raises(UnsafePathError, match="writable by other users"):
        read_private_file(path)
    path.chmod(0o600)
    os.chown(path, 65534, -1)
    with pytest.raises(UnsafePathError, match="belongs to another user"):
        read_private_file(path)
    os.chown(path, os.getuid(), -1)
    link = tmp_path / "link.json"
    link.symlink_to(path)
    with pytest.raises(UnsafePathError, match="symbolic link"):
        read_private_file(link)
    fifo = tmp_path / "fifo"
    os.mkfifo(fifo, 0o600)
    with pytest.raises(UnsafePathError, match="not a regular file"):
        read_private_file(fifo)  # and it did not block


@needs_root
def test_sockets_must_be_ours(tmp_path: Path) -> None:
    folder = tmp_path / "s"
    folder.mkdir(mode=0o700)
    path = folder / "x.sock"
    with socket.socket(socket.AF_UNIX) as listener:
        listener.bind(str(path))
        path.chmod(0o600)
        check_private_socket(path)
        path.chmod(0o666)
        with pytest.raises(UnsafePathError, match="usable by other users"):
            check_private_socket(path)
        path.chmod(0o600)
        os.chown(path, 65534, -1)
        with pytest.raises(UnsafePathError, match="belongs to another user"):
            check_private_socket(path)
        os.chown(path, os.getuid(), -1)
        folder.chmod(0o777)
        with pytest.raises(UnsafePathError, match="accessible to other users"):
            check_private_socket(path)


def test_new_files_are_0600_from_their_creation_and_never_through_a_link(tmp_path: Path, umask_0: None) -> None:
    path = tmp_path / "new"
    fd = create_private_file(path)
    os.close(fd)
    assert _mode(path) == 0o600  # before any byte, with a umask of 0
    victim = tmp_path / "victim"
    planted = tmp_path / "planted"
    planted.symlink_to(victim)  # dangling: O_CREAT alone would create the victim
    with pytest.raises(FileExistsError):
        create_private_file(planted)
    with pytest.raises(FileExistsError):
        copy_private(path, planted)
    assert not victim.exists()
    source = tmp_path / "source"
    source.write_bytes(b"token")
    source.chmod(0o644)
    copy_private(source, tmp_path / "copy")
    assert (tmp_path / "copy").read_bytes() == b"token"
    assert _mode(tmp_path / "copy") == 0o600


def test_rewrites_are_atomic_and_leave_nothing_behind(tmp_path: Path, umask_0: None) -> None:
    path = tmp_path / "config"
    write_private_file(path, b"one")
    assert (path.read_bytes(), _mode(path)) == (b"one", 0o600)
    write_private_file(path, b"two", mode=0o644)
    assert (path.read_bytes(), _mode(path)) == (b"two", 0o644)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["config"]


def test_the_mesh_writes_its_registry_and_identities_through_new_private_files(tmp_path: Path, umask_0: None) -> None:
    """The peer registry and the identity records used fixed temporary names opened with O_TRUNC: a link planted
    there was followed."""
    home = tmp_path / "home"
    ensure_home(home)
    victim = tmp_path / "victim"
    registry = PeerRegistry(home)
    registry.directory.mkdir(mode=0o700)
    (registry.directory / "p1.tmp").symlink_to(victim)
    registry.publish(PeerInfo("p1", os.getpid(), 0.0, 1234))
    assert _mode(registry.directory / "p1.peer") == 0o600
    identity = claim_identity(home, "test", str(tmp_path))
    try:
        identity.path.with_suffix(".json.tmp").symlink_to(victim)
        identity.remember_name("bob")
        assert identity.last_name == "bob"
        assert _mode(identity.path.with_suffix(".json")) == 0o600
    finally:
        identity.release()
    assert not victim.exists()
