"""The peer registry: one small file per running peer in ``AGENT_COMMS_HOME/peers/``.

It is the mesh's second way to meet (rule 7 of :mod:`agent_comms.protocol.peer`): when the coordinator port is
held by a process that does not answer (stopped, hung), a newcomer reads the registry and links to the listed
peers directly. Entries of dead processes are skipped and removed; a stale entry costs at most a refused dial.

One home may hold several meshes, one per coordinator port (``AGENT_COMMS_PORT``): each entry records its peer's
port, and :meth:`PeerRegistry.read` lists only the peers of the port asked for, so a peer never meets, and an
observer never counts, a peer of another mesh through the registry.

An entry is read only if it is this user's regular file that nobody else can write
(:func:`~agent_comms.private_files.read_private_file`): one planted by another user, or made writable by others,
is ignored (and said once in the log), never trusted and never removed.
"""

from __future__ import annotations

import contextlib
import logging
from pathlib import Path

import msgspec

from agent_comms.liveness import process_alive
from agent_comms.private_files import UnsafePathError, read_private_file, write_private_file
from agent_comms.protocol.wire import PeerInfo

__all__ = ["PeerRegistry"]

logger = logging.getLogger("agent_comms.mesh")


class PeerRegistry:
    """Read and write the registry directory."""

    def __init__(self, home: Path) -> None:
        self.directory = home / "peers"
        self._refused: set[Path] = set()

    def publish(self, info: PeerInfo) -> None:
        """Record this peer (atomically: a new 0600 temporary file, then renamed into place)."""
        self.directory.mkdir(mode=0o700, parents=True, exist_ok=True)
        write_private_file(self.directory / f"{info.peer_id}.peer", msgspec.json.encode(info))

    def withdraw(self, peer_id: str) -> None:
        """Remove this peer's entry (on shutdown; an entry that cannot be removed is skipped once its process is
        gone)."""
        with contextlib.suppress(OSError):
            (self.directory / f"{peer_id}.peer").unlink()

    def ports(self) -> dict[int, int]:
        """How many live registered peers each coordinator port has (each port is a mesh of its own)."""
        counts: dict[int, int] = {}
        for info in self._live():
            counts[info.port] = counts.get(info.port, 0) + 1
        return counts

    def read(self, port: int) -> list[PeerInfo]:
        """Every registered peer of the mesh on coordinator ``port`` whose process still exists (entries of dead
        processes are removed, whatever their port; entries without a port, of older versions, are skipped)."""
        return [info for info in self._live() if info.port == port]

    def live(self) -> list[PeerInfo]:
        """Every registered peer whose process still exists, of every port."""
        return self._live()

    def _live(self) -> list[PeerInfo]:
        peers: list[PeerInfo] = []
        try:
            paths = sorted(self.directory.glob("*.peer"))
        except OSError:
            return peers
        for path in paths:
            try:
                info = msgspec.json.decode(read_private_file(path), type=PeerInfo)
            except UnsafePathError as exc:
                if path not in self._refused:  # said once per entry, not on every read
                    self._refused.add(path)
                    logger.warning("peer registry: ignoring an entry: %s", exc)
                continue
            except (OSError, msgspec.DecodeError):
                continue
            if process_alive(info.pid, info.process_start):  # a reused pid is not the peer that wrote the entry
                peers.append(info)
            else:
                with contextlib.suppress(OSError):
                    path.unlink()
        return peers
