"""Where a peer's runtime meets the hub: start the gateway when this machine has joined one.

Kept apart from :mod:`.gateway` so that a peer of a machine that never joined a hub pays one ``stat`` and imports
nothing of the hub client.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

import trio

from .hub_config import bundle_path

if TYPE_CHECKING:
    from .node import MeshNode

__all__ = ["start_hub_gateway"]


def start_hub_gateway(node: MeshNode, home: Path, nursery: trio.Nursery) -> None:
    """If ``home`` holds a hub bundle: tell the process probe which peers are other machines', and run this peer's
    part of the gateway (:func:`.gateway.run_gateway`) in ``nursery``."""
    if not bundle_path(home).exists():
        return
    from .gateway import run_gateway
    from .hub_config import load_bundle
    from .hub_origins import OriginBook

    book = OriginBook(home)
    try:
        bundle = load_bundle(home)
    except Exception:  # noqa: BLE001 - run_gateway says what is wrong with it
        bundle = None
    machine = None if bundle is None else bundle.machine

    def foreign(peer_id: str) -> bool:
        book.reload()
        owner = book.machine_of(peer_id)
        return owner is not None and owner != machine

    node.foreign_peer = foreign
    nursery.start_soon(run_gateway, node, home)
