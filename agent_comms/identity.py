"""Stable agent identities: one id per (harness, working directory), kept across bridge restarts.

The id is derived from the harness name and the real path of the working directory, so a bridge that restarts in
the same place is the same agent (and receives what was sent to it meanwhile). A bridge holds its identity by an
exclusive lock on a file in ``AGENT_COMMS_HOME/identities/``; the operating system drops the lock when the process
ends, however it ends. A second live bridge in the same slot finds the lock taken and gets the next slot's id
(``<id>-2``, ``<id>-3``, ...) instead of stealing the first one's.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import json
import os
import re
from pathlib import Path, PurePath
from typing import Final

import attrs

from agent_comms.mesh.keyfile import ensure_home
from agent_comms.private_files import write_private_file

__all__ = ["Identity", "IdentityError", "base_id", "claim_identity", "default_name"]

MAX_SLOTS: Final = 64


class IdentityError(Exception):
    """No identity could be claimed (every slot taken, or the directory is unusable)."""


@attrs.define
class Identity:
    """A claimed identity; hold it for the bridge's lifetime and :meth:`release` it at the end."""

    agent_id: str
    slot: int
    harness: str
    cwd: str
    path: Path
    _fd: int | None = None

    @property
    def last_name(self) -> str | None:
        """The name this identity was last registered under, if any."""
        try:
            data = json.loads(self.path.with_suffix(".json").read_text())
        except (OSError, ValueError):
            return None
        name = data.get("name")
        return name if isinstance(name, str) and name else None

    def remember_name(self, name: str) -> None:
        """Persist the current name (used as the default name on the next start)."""
        record = {"agent_id": self.agent_id, "harness": self.harness, "cwd": self.cwd, "name": name}
        write_private_file(self.path.with_suffix(".json"), json.dumps(record).encode())

    def release(self) -> None:
        """Give the identity up (also happens by itself when the process ends)."""
        if self._fd is not None:
            with contextlib.suppress(OSError):
                fcntl.flock(self._fd, fcntl.LOCK_UN)
            os.close(self._fd)
            self._fd = None


def _slug(text: str) -> str:
    return re.sub(r"[^a-z0-9]+", "-", text.lower()).strip("-")[:24] or "agent"


def default_name(harness: str, cwd: str) -> str:
    """A readable default agent name: ``<harness>-<directory name>`` (within the name rules)."""
    directory = _slug(PurePath(cwd).name) if PurePath(cwd).name else "root"
    return f"{_slug(harness)}-{directory}"[:64]


def base_id(harness: str, cwd: str, machine: str | None = None, slot: int = 1) -> str:
    """The id of slot ``slot`` for a harness in a directory. On a machine joined to a hub the id ends with
    ``@<machine>``: two machines have directories of the same path and their agents are not one, and the other
    machines take claims on such an id only from that machine (:mod:`agent_comms.mesh.gateway`)."""
    digest = hashlib.sha256(os.path.realpath(cwd).encode()).hexdigest()[:10]
    agent_id = f"{_slug(harness)}-{digest}" if slot == 1 else f"{_slug(harness)}-{digest}-{slot}"
    return agent_id if machine is None else f"{agent_id}@{machine}"


def _machine(home: Path) -> str | None:
    """The name this machine joined a hub under, if it has joined one."""
    from agent_comms.mesh.hub_config import HubError, load_bundle

    try:
        bundle = load_bundle(home)
    except (OSError, HubError):
        return None  # unreadable: the gateway says so; identities stay those of a machine on its own
    return None if bundle is None else bundle.machine


def claim_identity(home: Path, harness: str, cwd: str) -> Identity:
    """Claim the first free slot for (harness, cwd). Raises :class:`IdentityError` if all are taken."""
    directory = ensure_home(home) / "identities"
    directory.mkdir(mode=0o700, exist_ok=True)
    machine = _machine(home)
    for slot in range(1, MAX_SLOTS + 1):
        agent_id = base_id(harness, cwd, machine, slot)
        path = directory / f"{agent_id}.lock"
        fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            continue
        return Identity(agent_id, slot, harness, os.path.realpath(cwd), path, fd)
    raise IdentityError(f"all {MAX_SLOTS} identities of {harness} in {cwd} are in use by live bridges")
