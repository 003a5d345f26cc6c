"""agent-comms for any MCP client: the ``agent_comms`` tool as an MCP server on stdio.

An MCP client starts ``agent-comms-mcp`` (or ``agent-comms bridge mcp``); the bridge joins the agent-comms mesh as
an agent of harness ``mcp``, registers under a default name, and serves one tool, ``agent_comms``, built on the
official ``mcp`` SDK's low-level server and run under Trio. Generic MCP clients have no way to be pushed a message,
so the bridge *drains*: every tool result carries the events waiting for the agent and says how many more wait.

Modules: :mod:`agent_comms_mcp.plugin` (the pluggy hooks, cheap to import), :mod:`agent_comms_mcp.server` (the
tool, its JSON Schema, the MCP server and the bridge's ``serve`` coroutine), :mod:`agent_comms_mcp.stdio` (a
cancellable stdio transport for Trio), :mod:`agent_comms_mcp.lifecycle` (signals and the harness process).

Importing this package is cheap: Trio and the server are imported when the bridge runs.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from typing import TYPE_CHECKING, Final

if TYPE_CHECKING:
    import argparse

__all__ = ["HARNESS", "__version__", "build_parser", "main"]

#: The harness name: ``agent-comms bridge mcp``, and the default harness of the agent's identity.
HARNESS: Final = "mcp"

# The distribution's version (pyproject.toml reads it from here), also the server's version in ``initialize``:
# written out, because looking it up with importlib.metadata costs a start 15-80 ms.
__version__ = "0.1.0"


def build_parser() -> argparse.ArgumentParser:
    """The command line of ``agent-comms-mcp``: the options of ``agent-comms bridge mcp``."""
    import argparse

    parser = argparse.ArgumentParser(
        prog="agent-comms-mcp",
        description=(
            "Run the agent-comms MCP server on stdin/stdout (what an MCP client starts). It joins the agent-comms "
            "mesh as an agent and serves the one tool, agent_comms."
        ),
        epilog='example MCP client config: {"mcpServers": {"agent-comms": {"command": "agent-comms-mcp"}}}',
    )
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    parser.add_argument("--name", help="the agent name to register (default: the name it had last time)")
    parser.add_argument(
        "--harness-pid",
        type=int,
        metavar="PID",
        help="the harness process: the agent goes offline when it exits (default: the parent process)",
    )
    parser.add_argument(
        "--option",
        action="append",
        default=[],
        type=_key_value,
        metavar="KEY=VALUE",
        help="a setting (repeatable): harness=NAME registers under another harness name (default: mcp, or "
        "$AGENT_COMMS_HARNESS); max_events=N caps the events appended to one tool result",
    )
    return parser


def _key_value(text: str) -> tuple[str, str]:
    import argparse

    key, sep, value = text.partition("=")
    if not sep or not key:
        raise argparse.ArgumentTypeError(f"expected KEY=VALUE, got {text!r}")
    return key, value


def main(argv: Sequence[str] | None = None) -> int:
    """``agent-comms-mcp``: serve MCP on stdio until the client closes it; the exit status."""
    import trio

    from agent_comms.hookspecs import BridgeOptions
    from agent_comms_mcp.server import serve

    args = build_parser().parse_args(argv)
    options = BridgeOptions(name=args.name, cwd=os.getcwd(), harness_pid=args.harness_pid, extra=dict(args.option))
    status: int = trio.run(serve, options)
    return status
