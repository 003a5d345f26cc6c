"""The ``claude-code`` plugin: registers the bridge behind ``agent-comms bridge / setup / status / remove
claude-code``.

Registered in the entry-point group ``agent_comms`` under the name ``claude-code``. Cheap to import (no Trio, no
SDK): ``agent-comms plugins`` and the setup commands import every plugin.

An MCP-family bridge: ``serve`` runs the MCP bridge with an extension that pushes each event, as it arrives, as a
``claude/channel`` notification (when Claude Code listens to the channel) and hands the events to the hooks of its
Claude Code plugin, which add them to the model's context and wake or continue the session; whatever neither showed
comes with the next tool result.
"""

from __future__ import annotations

from collections.abc import Awaitable
from pathlib import Path
from typing import Final

from agent_comms.hookspecs import Bridge, BridgeOptions, Detection, PushPath, Register, hookimpl
from agent_comms_claude_code import HARNESS

__all__ = ["BRIDGE", "register_bridges"]


def serve(options: BridgeOptions) -> Awaitable[int]:
    """The MCP server on stdio (a coroutine for ``trio.run``)."""
    from agent_comms_claude_code.server import serve  # Trio and the SDK are imported only when the bridge runs

    return serve(options)


def detect(home: Path) -> Detection:
    """``claude --version`` for ``home``."""
    from agent_comms_claude_code.configure import detect

    return detect(home)


def configure(home: Path, dry_run: bool) -> list[str]:
    """Add the MCP server and install the plugin with the ``claude`` CLI (idempotent)."""
    from agent_comms_claude_code.configure import configure

    return configure(home, dry_run)


def status(home: Path) -> str:
    """One line: the MCP server and the plugin, as the ``claude`` CLI reports them."""
    from agent_comms_claude_code.configure import status

    return status(home)


def remove(home: Path, dry_run: bool) -> list[str]:
    """Remove the MCP server, the plugin and its marketplace with the ``claude`` CLI."""
    from agent_comms_claude_code.configure import remove

    return remove(home, dry_run)


#: The ``claude-code`` harness: Claude Code, with push through channels and hooks.
BRIDGE: Final = Bridge(
    name=HARNESS,
    description="Claude Code: the agent_comms MCP server; messages pushed through a channel or the plugin's hooks",
    package="agent-comms-claude-code",
    push_path=PushPath.NOTIFICATION | PushPath.HARNESS_HOOKS | PushPath.CONTINUE_TURN | PushPath.TOOL_RESULTS,
    serve=serve,
    detect=detect,
    configure=configure,
    status=status,
    remove=remove,
)


@hookimpl
def register_bridges(register: Register) -> None:
    """Register the ``claude-code`` bridge."""
    register(BRIDGE)
