"""The ``mcp`` plugin: the hooks that make ``agent-comms bridge mcp`` run this bridge.

Registered in the entry-point group ``agent_comms`` under the name ``mcp``. Cheap to import (no Trio, no SDK):
``agent-comms plugins`` and the setup commands import every plugin.

The setup hooks (detect, configure, status, remove) answer ``None``: there is no single configuration file for
"any MCP client". Each client (Claude Desktop, Cursor, Windsurf, VS Code...) keeps its MCP servers in its own file
and format, so the one entry to add (command ``agent-comms-mcp``) is documented in the README instead, and the
harness-specific distributions (``agent-comms-claude-code``, ``agent-comms-codex``, ...) do real setup for their
harnesses. Answering ``None`` leaves the harness to those plugins, as ``firstresult`` hooks expect.
"""

from __future__ import annotations

from collections.abc import Awaitable
from pathlib import Path

from agent_comms.hookspecs import BridgeOptions, Detection, HarnessInfo, hookimpl
from agent_comms_mcp import HARNESS

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
    """The ``mcp`` harness: any MCP client that starts a stdio server."""
    return HarnessInfo(
        name=HARNESS,
        description="any MCP client: the agent_comms tool as an MCP server on stdio; events drained into results",
        push=False,
        package="agent-comms-mcp",
    )


@hookimpl
def agent_comms_serve(harness: str, options: BridgeOptions) -> Awaitable[int] | None:
    """The MCP server on stdio (a coroutine for ``trio.run``); ``None`` for other harnesses."""
    if harness != HARNESS:
        return None
    from agent_comms_mcp.server import serve  # the SDK is imported only when the bridge runs

    return serve(options)


@hookimpl
def agent_comms_detect(harness: str, home: Path) -> Detection | None:
    """``None``: a generic MCP client has no one installation to detect (see the module docstring)."""
    return None


@hookimpl
def agent_comms_configure(harness: str, home: Path, dry_run: bool) -> list[str] | None:
    """``None``: no single configuration to write for every MCP client; the README shows the entry to add."""
    return None


@hookimpl
def agent_comms_status(harness: str, home: Path) -> str | None:
    """``None``: nothing this plugin configured to report on."""
    return None


@hookimpl
def agent_comms_remove(harness: str, home: Path, dry_run: bool) -> list[str] | None:
    """``None``: nothing this plugin configured to undo."""
    return None
