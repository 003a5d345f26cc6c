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
    """If ``home`` holds a hub bundle: tell the node which peers are other machines' (the process probe must not
    judge their processes; labels name their machine), and run this peer's part of the gateway
    (:func:`.gateway.run_gateway`) in ``nursery``."""
    if not bundle_path(home).exists():
        return
    from .gateway import run_gateway
    from .hub_origins import remote_machine_of

    node.remote_machine_of = remote_machine_of(home)
    nursery.start_soon(run_gateway, node, home)
