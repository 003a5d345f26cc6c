"""The ``agent-comms`` command line.

Only ``--version`` and ``--help`` exist so far; sub-commands are registered in :func:`build_parser` as they
arrive.
"""

from __future__ import annotations

import argparse

from agent_comms import __version__

__all__ = ["build_parser", "main"]

#: Exit status for a usage error, matching argparse's own convention.
EXIT_USAGE = 2


def build_parser() -> argparse.ArgumentParser:
    """Build the top-level argument parser with its (currently empty) set of sub-commands."""
    parser = argparse.ArgumentParser(
        prog="agent-comms",
        description="Peer-to-peer communication layer for LLM coding agents.",
    )
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    parser.add_subparsers(dest="command", metavar="COMMAND", title="commands")
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
    # Unreachable until the first sub-command is added; argparse rejects unknown commands itself.
    parser.error(f"unknown command {args.command!r}")
