"""Which machine each operation origin (a peer id) belongs to, as this machine learned it from the hub.

The hub lets a machine publish only under its own subjects, so the first machine an origin is seen under (in the
stream's order, which every machine reads the same) is the machine that origin belongs to. Operations of that
origin under another machine's subjects are refused, as are operations under another machine's subjects claiming
an origin of this machine. The book is kept in ``<home>/hub/origins.json`` and written *before* the operations of a
new origin are applied, so every peer of the machine (the next gateway, the process probe that must not judge
another machine's processes) reads the same answer.
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable
from pathlib import Path

__all__ = ["OriginBook", "remote_machine_of"]


class OriginBook:
    """origin peer id -> machine name, persisted under ``<home>/hub``."""

    def __init__(self, home: Path) -> None:
        self.path = home / "hub" / "origins.json"
        self._origins: dict[str, str] = {}
        self._mtime: float | None = None
        self.reload()

    def reload(self) -> None:
        """Read the file again if it changed (cheap otherwise)."""
        try:
            mtime = os.stat(self.path).st_mtime_ns
        except FileNotFoundError:
            return
        if mtime == self._mtime:
            return
        try:
            data = json.loads(self.path.read_text(encoding="utf-8"))
        except (OSError, ValueError):
            return  # being replaced: the next reload reads it
        if isinstance(data, dict):
            self._origins.update({str(k): str(v) for k, v in data.items()})
        self._mtime = mtime

    def machine_of(self, origin: str) -> str | None:
        return self._origins.get(origin)

    def machines(self) -> set[str]:
        return set(self._origins.values())

    def origins_of(self, machine: str) -> set[str]:
        return {origin for origin, owner in self._origins.items() if owner == machine}

    def learn(self, entries: dict[str, str]) -> None:
        """Record new origins (and write the file, atomically) before their operations are applied."""
        new = {origin: machine for origin, machine in entries.items() if origin not in self._origins}
        if not new:
            return
        self.reload()
        self._origins.update({k: v for k, v in new.items() if k not in self._origins})
        from agent_comms.private_files import write_private_file

        self.path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
        write_private_file(self.path, json.dumps(self._origins, sort_keys=True).encode())
        self._mtime = os.stat(self.path).st_mtime_ns


def remote_machine_of(home: Path) -> Callable[[str], str | None]:
    """For labels (``alice@devbox``): the other machine a peer id belongs to, ``None`` for this machine's peers (or
    when this machine has not joined a hub)."""
    from .hub_config import bundle_path, load_bundle

    if not bundle_path(home).exists():
        return lambda _peer_id: None
    try:
        bundle = load_bundle(home)
    except Exception:
        return lambda _peer_id: None
    mine = None if bundle is None else bundle.machine
    book = OriginBook(home)

    def machine_of(peer_id: str) -> str | None:
        book.reload()
        owner = book.machine_of(peer_id)
        return None if owner == mine else owner

    return machine_of
