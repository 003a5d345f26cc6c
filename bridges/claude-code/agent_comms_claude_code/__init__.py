"""agent-comms for Claude Code: the ``agent_comms`` MCP server, with messages pushed into the session.

Claude Code starts ``agent-comms-claude-code`` (or ``agent-comms bridge claude-code``) as an MCP server: it is the
server of ``agent-comms-mcp`` (the one tool, its schema, the stdio transport, the lifecycle) under the harness name
``claude-code``, plus two ways of bringing an agent's messages before the model without waiting for a tool call:

* **channels**: the server declares the experimental capability ``claude/channel`` and sends each message as a
  ``notifications/claude/channel`` notification. Claude Code only listens when it was started with
  ``--dangerously-load-development-channels server:agent-comms`` (it drops them silently otherwise), so the bridge
  pushes only when it sees that flag on its parent's command line (``--option channel=on|off`` overrides that);
* **hooks**: a Claude Code plugin (inside this package, see :mod:`agent_comms_claude_code.configure`) runs
  ``agent-comms-claude-code-hook`` on ``UserPromptSubmit`` and ``PostToolUse`` (the events are added as
  ``additionalContext``) and on ``Stop`` as an ``asyncRewake`` hook that waits for a message and wakes the idle
  session with it. The hooks are separate processes; they fetch the events from the bridge of their session
  through a Unix socket the bridge serves (:mod:`agent_comms_claude_code.hub`).

Every event goes out one way only (channel, hook or tool result), once; it counts as read when it was written to
Claude Code (the notification, the hook's output, the tool result).

Modules: :mod:`~agent_comms_claude_code.plugin` (the pluggy hooks, cheap to import), :mod:`~.server` (the
bridge), :mod:`~.hub` (the socket the hooks talk to, and the channel push), :mod:`~.channel` (the channel's wire
format and whether Claude Code listens), :mod:`~.hook` (the hook program), :mod:`~.configure` (setup with the
``claude`` CLI). Importing this package is cheap: Trio and the server are imported when the bridge runs.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any, Final

if TYPE_CHECKING:
    import argparse

__all__ = ["HARNESS", "SERVER_NAME", "__version__", "build_parser", "main"]

#: The harness name: ``agent-comms bridge claude-code``, and the harness of the agent's identity.
HARNESS: Final = "claude-code"
#: The name the MCP server is registered under in Claude Code (``claude mcp add ... agent-comms``).
SERVER_NAME: Final = "agent-comms"


def __getattr__(name: str) -> str:
    # ``__version__`` is looked up on first use: the plugin and the hook import this package, and must stay cheap.
    if name != "__version__":
        raise AttributeError(f"module 'agent_comms_claude_code' has no attribute {name!r}")
    from importlib.metadata import PackageNotFoundError, version

    try:
        found = version("agent-comms-claude-code")
    except PackageNotFoundError:  # a source tree that was never installed
        found = "0.0.0"
    globals()["__version__"] = found
    return found


def build_parser() -> argparse.ArgumentParser:
    """The command line of ``agent-comms-claude-code``: the options of ``agent-comms bridge claude-code``."""
    import argparse

    parser = argparse.ArgumentParser(
        prog="agent-comms-claude-code",
        description=(
            "Run the agent-comms MCP server for Claude Code on stdin/stdout (what Claude Code starts). It joins the "
            "agent-comms mesh as an agent, serves the agent_comms tool and pushes messages into the session."
        ),
        epilog="set up: agent-comms setup claude-code; push through channels: "
        f"claude --dangerously-load-development-channels server:{SERVER_NAME}",
    )

    class Version(argparse.Action):  # looks the version up only when asked: importlib.metadata costs a start
        def __call__(
            self,
            parser: argparse.ArgumentParser,
            namespace: argparse.Namespace,
            values: str | Sequence[Any] | None,
            option_string: str | None = None,
        ) -> None:
            parser.exit(message=f"{parser.prog} {__getattr__('__version__')}\n")

    parser.add_argument("--version", action=Version, nargs=0, help="show program's version number and exit")
    parser.add_argument("--name", help="the agent name to register (default: the name it had last time)")
    parser.add_argument(
        "--harness-pid",
        type=int,
        metavar="PID",
        help="the Claude Code process: the agent goes offline when it exits (default: the parent process)",
    )
    parser.add_argument(
        "--option",
        action="append",
        default=[],
        type=_key_value,
        metavar="KEY=VALUE",
        help="a setting (repeatable): channel=auto|on|off (push through Claude Code channels; auto: when Claude "
        "Code was started with the development-channels flag naming this server); server_name=NAME (the name of "
        f"this server in Claude Code, default {SERVER_NAME}); max_events=N; harness=NAME",
    )
    return parser


def _key_value(text: str) -> tuple[str, str]:
    import argparse

    key, sep, value = text.partition("=")
    if not sep or not key:
        raise argparse.ArgumentTypeError(f"expected KEY=VALUE, got {text!r}")
    return key, value


def main(argv: Sequence[str] | None = None) -> int:
    """``agent-comms-claude-code``: serve MCP on stdio until Claude Code closes it; the exit status."""
    import trio

    from agent_comms.hookspecs import BridgeOptions
    from agent_comms_claude_code.server import serve

    args = build_parser().parse_args(argv)
    options = BridgeOptions(name=args.name, cwd=os.getcwd(), harness_pid=args.harness_pid, extra=dict(args.option))
    status: int = trio.run(serve, options)
    return status
