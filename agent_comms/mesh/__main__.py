"""``python -m agent_comms.mesh``: run one mesh peer until signalled (used by the real-process tests and demo).

Prints one line ``ready <peer_id> <data_port>`` on standard output once it listens, then, with ``--agent NAME``
(repeatable), hosts those agents. SIGINT, SIGTERM and SIGHUP make it leave gracefully (agents offline, coordinator
role handed over); SIGKILL is, of course, a crash.
"""

from __future__ import annotations

import argparse
import logging
import os
import signal
import sys

import trio

from agent_comms.protocol.ops import AgentUpsert

from .keyfile import MeshKeyError, load_or_create_key
from .node import open_node
from .registry import PeerRegistry
from .settings import MeshSettings, SettingsError


async def _main(args: argparse.Namespace) -> int:
    settings = MeshSettings.from_env()
    key = load_or_create_key(settings.home)
    with trio.open_signal_receiver(signal.SIGINT, signal.SIGTERM, signal.SIGHUP) as signals:
        async with open_node(key, port=settings.port, registry=PeerRegistry(settings.home)) as node:
            print(f"ready {node.peer_id} {node.peer.info.data_port}", flush=True)
            for name in args.agent:
                node.host_agent(AgentUpsert(name, "", 0, 0, name, "mesh-peer", str(settings.home), 0, 0.0))
            async for signum in signals:
                print(f"leaving on {signal.Signals(signum).name}", flush=True)
                break
    return 0


def main(argv: list[str] | None = None) -> int:
    """Entry point."""
    parser = argparse.ArgumentParser(prog="python -m agent_comms.mesh", description=__doc__)
    parser.add_argument("--agent", action="append", default=[], help="host an agent with this id (repeatable)")
    args = parser.parse_args(argv)
    level = os.environ.get("AGENT_COMMS_LOG", "WARNING").upper()
    logging.basicConfig(level=level, format="agent-comms %(levelname)s %(message)s", stream=sys.stderr)
    try:
        return trio.run(_main, args)
    except (MeshKeyError, SettingsError) as exc:
        print(f"agent-comms: {exc}", file=sys.stderr)
        return 3


if __name__ == "__main__":
    sys.exit(main())
