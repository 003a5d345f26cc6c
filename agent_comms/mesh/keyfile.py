"""The per-user mesh key: 32 random bytes in ``AGENT_COMMS_HOME/mesh.key``.

Knowing the key is what admits a process to the mesh (:mod:`agent_comms.protocol.auth`). The file is created
with mode 0600 in a directory of mode 0700, and refused if it is readable by anyone but its owner, owned by another
user, or not exactly 32 bytes: a key others can read admits them. Any process of the same user can read the key;
that is the trust boundary.
"""

from __future__ import annotations

import contextlib
import os
import secrets
import stat
from pathlib import Path
from typing import Final

from agent_comms.private_files import UnsafePathError, ensure_private_dir
from agent_comms.protocol.auth import KEY_SIZE

__all__ = ["KEY_FILE", "MeshKeyError", "ensure_home", "load_or_create_key"]

KEY_FILE: Final = "mesh.key"


class MeshKeyError(Exception):
    """The mesh key (or its directory) is unsafe or unusable; the message says what to do."""


def ensure_home(home: Path) -> Path:
    """Create ``home`` (mode 0700) if needed and check that it belongs to us and nobody else can enter it (the
    check of :func:`agent_comms.private_files.check_private_dir`, which the hooks of the harnesses apply too)."""
    try:
        ensure_private_dir(home, follow=True)
    except UnsafePathError as exc:
        raise MeshKeyError(str(exc)) from exc
    except OSError as exc:
        raise MeshKeyError(_unusable(home, exc)) from exc
    return home


def load_or_create_key(home: Path) -> bytes:
    """The mesh key of this user, created on first use. Raises :class:`MeshKeyError` if it is unsafe."""
    ensure_home(home)
    path = home / KEY_FILE
    if path.exists():
        return _read_key(path)
    # Written whole under a name of our own, then linked into place (which fails if another process was first):
    # a process starting at the same moment reads either no key or the whole key, never a file still empty.
    tmp = home / f".{KEY_FILE}.{os.getpid()}.{secrets.token_hex(4)}"
    try:
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o600)
        try:
            os.write(fd, secrets.token_bytes(KEY_SIZE))
            os.fsync(fd)
        finally:
            os.close(fd)
        with contextlib.suppress(FileExistsError):  # another process made the key first: use that one
            os.link(tmp, path)
    except OSError as exc:
        raise MeshKeyError(_unusable(path, exc)) from exc
    finally:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
    return _read_key(path)


def _unusable(path: Path, exc: OSError) -> str:
    return f"cannot use {path}: {exc.strerror or exc}; set AGENT_COMMS_HOME to a directory of your own"


def _read_key(path: Path) -> bytes:
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW)
    except OSError as exc:
        raise MeshKeyError(_unusable(path, exc)) from exc
    try:
        info = os.fstat(fd)
        if info.st_uid != os.getuid():
            raise MeshKeyError(f"{path} belongs to another user (uid {info.st_uid}); refusing to use it")
        mode = stat.S_IMODE(info.st_mode)
        if mode & 0o077:
            raise MeshKeyError(f"{path} is readable by other users (mode {mode:04o}); run: chmod 600 {path}")
        data = os.read(fd, KEY_SIZE + 1)
    finally:
        os.close(fd)
    if len(data) != KEY_SIZE:
        # A racing creator may not have written it yet; an empty file that stays empty is corrupt.
        raise MeshKeyError(f"{path} holds {len(data)} bytes, not {KEY_SIZE}; delete it to make a new key")
    return data
