"""The ``agent-comms`` command line.

Exit codes scripts can rely on: 0 success, 1 no mesh is running, 2 usage error, 3 configuration error (the mesh
key or an environment variable is unusable; the message says how to fix it).
"""

from __future__ import annotations

import argparse
import json
import sys
from typing import Final

from agent_comms import __version__

__all__ = ["EXIT_CONFIG", "EXIT_NO_MESH", "EXIT_USAGE", "build_parser", "main"]

EXIT_NO_MESH: Final = 1
#: Exit status for a usage error, matching argparse's own convention.
EXIT_USAGE: Final = 2
EXIT_CONFIG: Final = 3


def build_parser() -> argparse.ArgumentParser:
    """Build the top-level argument parser and its sub-commands."""
    parser = argparse.ArgumentParser(
        prog="agent-comms",
        description="Peer-to-peer communication layer for LLM coding agents.",
    )
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    commands = parser.add_subparsers(dest="command", metavar="COMMAND", title="commands")
    mesh = commands.add_parser(
        "mesh",
        help="show the peers, the coordinator and the agents each peer hosts",
        description="Observe the mesh without joining it (no agent is registered).",
        epilog="example: agent-comms mesh --json | jq '.coordinator'",
    )
    mesh.add_argument("--json", action="store_true", help="print JSON instead of a table")
    return parser


def main(argv: list[str] | None = None) -> int:
    """Run the command line with ``argv`` (default: ``sys.argv[1:]``) and return the exit status.

    Without a sub-command, print the help to stdout and return 2 (a usage error).
    """
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.command is None:
        parser.print_help()
        return EXIT_USAGE
    if args.command == "mesh":
        return _mesh(as_json=args.json)
    parser.error(f"unknown command {args.command!r}")  # argparse rejects unknown commands before this


def _mesh(*, as_json: bool) -> int:
    import trio

    from agent_comms.mesh.keyfile import MeshKeyError, load_or_create_key
    from agent_comms.mesh.observe import NoMesh, observe_mesh
    from agent_comms.mesh.registry import PeerRegistry
    from agent_comms.mesh.settings import MeshSettings, SettingsError

    try:
        settings = MeshSettings.from_env()
        key = load_or_create_key(settings.home)
    except (MeshKeyError, SettingsError) as exc:
        print(f"agent-comms: {exc}", file=sys.stderr)
        return EXIT_CONFIG
    try:
        snapshot = trio.run(lambda: observe_mesh(key, port=settings.port, registry=PeerRegistry(settings.home)))
    except NoMesh as exc:
        if as_json:
            print(json.dumps({"coordinator": None, "peers": []}))
        print(f"agent-comms: {exc}", file=sys.stderr)
        return EXIT_NO_MESH
    data = snapshot.to_json()
    if as_json:
        print(json.dumps(data, indent=2))
        return 0
    coordinator = data["coordinator"]
    print(f"mesh on 127.0.0.1:{settings.port}, coordinator {coordinator['peer_id'] if coordinator else '(none)'}")
    for peer in data["peers"]:
        role = "coordinator" if peer["coordinator"] else "peer"
        agents = ", ".join(peer["agents"]) or "-"
        print(f"  {peer['peer_id']}  pid {peer['pid']:<7}  up {peer['uptime']:8.1f} s  {role:<11}  agents: {agents}")
    return 0
