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

from agent_comms.cli.common import (
    EXIT_CONFIG,
    EXIT_NO_HARNESS,
    EXIT_NO_MESH,
    EXIT_NOT_FOUND,
    EXIT_REFUSED,
    EXIT_USAGE,
)

TYPE_CHECKING = False  # as typing's, without importing it: see agent_comms/__init__.py
if TYPE_CHECKING:
    import argparse

__all__ = [
    "EXIT_CONFIG",
    "EXIT_INTERRUPTED",
    "EXIT_NOT_FOUND",
    "EXIT_NO_HARNESS",
    "EXIT_NO_MESH",
    "EXIT_REFUSED",
    "EXIT_USAGE",
    "build_parser",
    "main",
]

#: Exit status after Ctrl-C (128 + SIGINT, as shells report it).
EXIT_INTERRUPTED = 130


def build_parser() -> argparse.ArgumentParser:
    """Build the top-level argument parser and its sub-commands."""
    import argparse

    from agent_comms import __version__
    from agent_comms.cli import bridge, chat, demo, hub, mesh, oneshot, plugins, setup, web

    # The sub-command modules, in the order ``--help`` lists them.
    commands_in_order = [demo, setup, chat, web, oneshot, mesh, hub, plugins, bridge]
    parser = argparse.ArgumentParser(
        prog="agent-comms",
        description="Peer-to-peer communication layer for LLM coding agents.",
    )
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    commands = parser.add_subparsers(dest="command", metavar="COMMAND", title="commands")
    for command in commands_in_order:
        command.register(commands)
    _name_usage(parser)
    return parser


def _name_usage(parser: argparse.ArgumentParser) -> None:
    """Let each (sub-)sub-command report an unknown argument with its own usage rather than the top-level one."""
    import argparse

    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for sub in action.choices.values():
                sub.set_defaults(usage_parser=sub)
                _name_usage(sub)


def main(argv: list[str] | None = None) -> int:
    """Run the command line with ``argv`` (default: ``sys.argv[1:]``) and return the exit status.

    Without a sub-command, print the help to stdout and return 2 (a usage error). Ctrl-C at any moment, even while
    the command is still starting, ends it quietly with 130 (each command handles it on its own once it is running:
    cleanup first, then the same status).
    """
    try:
        parser = build_parser()
        args, unknown = parser.parse_known_args(argv)
        if unknown:
            (getattr(args, "usage_parser", None) or parser).error(f"unrecognized arguments: {' '.join(unknown)}")
        if args.command is None:
            parser.print_help()
            return EXIT_USAGE
        status: int = args.handler(args)
        return status
    except KeyboardInterrupt:
        return _interrupted()
    except Exception as exc:
        if not _raised_by_ctrl_c(exc):
            raise
        return _interrupted()


def _interrupted() -> int:
    from agent_comms.cli.common import error

    error("interrupted by SIGINT")
    return EXIT_INTERRUPTED


def _raised_by_ctrl_c(exc: BaseException) -> bool:
    """Whether ``exc`` comes of a Ctrl-C: Python wraps some exceptions raised while it builds a class, a
    ``KeyboardInterrupt`` included, in another (a ``RuntimeError`` from ``__set_name__`` while a module imports)."""
    seen: set[int] = set()
    current: BaseException | None = exc
    while current is not None and id(current) not in seen:
        if isinstance(current, KeyboardInterrupt):
            return True
        seen.add(id(current))
        current = current.__cause__ or current.__context__
    return False
