"""The ``claude-code`` plugin: the hooks behind ``agent-comms bridge / setup / status / remove claude-code``.

Registered in the entry-point group ``agent_comms`` under the name ``claude-code``. Cheap to import (no Trio, no
SDK): ``agent-comms plugins`` and the setup commands import every plugin.

The push hook answers ``None``: this bridge pushes by itself, from inside its MCP server (the channel
notification needs the server's session), and through the hooks of its Claude Code plugin.
"""

from __future__ import annotations

from collections.abc import Awaitable
from pathlib import Path

from agent_comms.hookspecs import BridgeOptions, Detection, HarnessInfo, hookimpl
from agent_comms_claude_code import HARNESS

__all__ = [
    "agent_comms_configure",
    "agent_comms_detect",
    "agent_comms_harness",
    "agent_comms_remove",
    "agent_comms_serve",
    "agent_comms_status",
]


@hookimpl
def agent_comms_harness() -> HarnessInfo:
    """The ``claude-code`` harness: Claude Code, with push through channels and hooks."""
    return HarnessInfo(
        name=HARNESS,
        description="Claude Code: the agent_comms MCP server; messages pushed through a channel or the plugin's hooks",
        push=True,
        package="agent-comms-claude-code",
    )


@hookimpl
def agent_comms_serve(harness: str, options: BridgeOptions) -> Awaitable[int] | None:
    """The MCP server on stdio (a coroutine for ``trio.run``); ``None`` for other harnesses."""
    if harness != HARNESS:
        return None
    from agent_comms_claude_code.server import serve  # Trio and the SDK are imported only when the bridge runs

    return serve(options)


@hookimpl
def agent_comms_detect(harness: str, home: Path) -> Detection | None:
    """``claude --version`` for ``home``."""
    if harness != HARNESS:
        return None
    from agent_comms_claude_code.configure import detect

    return detect(home)


@hookimpl
def agent_comms_configure(harness: str, home: Path, dry_run: bool) -> list[str] | None:
    """Add the MCP server and install the plugin with the ``claude`` CLI (idempotent)."""
    if harness != HARNESS:
        return None
    from agent_comms_claude_code.configure import configure

    return configure(home, dry_run)


@hookimpl
def agent_comms_status(harness: str, home: Path) -> str | None:
    """One line: the MCP server and the plugin, as the ``claude`` CLI reports them."""
    if harness != HARNESS:
        return None
    from agent_comms_claude_code.configure import status

    return status(home)


@hookimpl
def agent_comms_remove(harness: str, home: Path, dry_run: bool) -> list[str] | None:
    """Remove the MCP server, the plugin and its marketplace with the ``claude`` CLI."""
    if harness != HARNESS:
        return None
    from agent_comms_claude_code.configure import remove

    return remove(home, dry_run)
