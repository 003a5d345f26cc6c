"""The ``agent-comms`` command line.

Every sub-command is a module of this package with ``register(commands)``, which adds its parser and sets
``handler`` (a function of the parsed arguments returning the exit status). Modules import what they need inside the
handler, so ``agent-comms --help`` stays fast.

Exit codes scripts can rely on (:mod:`agent_comms.cli.common`): 0 success, 1 no mesh is running, 2 usage error,
3 configuration error (the mesh key or an environment variable is unusable, a plugin failed to load, a setup hook
failed; the message says how to fix it), 4 what the command names does not exist (a room, an agent, a harness's
plugin), 5 no installed harness found (``setup``, ``status``, ``remove``), 6 the mesh refused the action (a
private room without an invite), 128 + N when ended by signal N. ``bridge`` ends with the bridge's own status (0 when
the harness closed it normally).
"""

from __future__ import annotations

import argparse

from agent_comms import __version__
from agent_comms.cli import bridge, chat, demo, hub, mesh, oneshot, plugins, setup, web
from agent_comms.cli.common import (
    EXIT_CONFIG,
    EXIT_NO_HARNESS,
    EXIT_NO_MESH,
    EXIT_NOT_FOUND,
    EXIT_REFUSED,
    EXIT_USAGE,
)

__all__ = [
    "EXIT_CONFIG",
    "EXIT_NOT_FOUND",
    "EXIT_NO_HARNESS",
    "EXIT_NO_MESH",
    "EXIT_REFUSED",
    "EXIT_USAGE",
    "build_parser",
    "main",
]

#: The sub-command modules, in the order ``--help`` lists them.
COMMANDS = [demo, setup, chat, web, oneshot, mesh, hub, plugins, bridge]


def build_parser() -> argparse.ArgumentParser:
    """Build the top-level argument parser and its sub-commands."""
    parser = argparse.ArgumentParser(
        prog="agent-comms",
        description="Peer-to-peer communication layer for LLM coding agents.",
    )
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    commands = parser.add_subparsers(dest="command", metavar="COMMAND", title="commands")
    for command in COMMANDS:
        command.register(commands)
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
    status: int = args.handler(args)
    return status
