"""The ``mcp`` plugin: the hooks that make ``agent-comms bridge mcp`` run this bridge.

Registered in the entry-point group ``agent_comms`` under the name ``mcp``. Cheap to import (no Trio, no SDK):
``agent-comms plugins`` and the setup commands import every plugin.

The setup hooks: there is no single configuration file for "any MCP client". Each client (Claude Desktop, Cursor,
Windsurf, VS Code...) keeps its MCP servers in its own file and format, so setup edits none of them: detect says the
plugin is installed (``agent-comms status`` lists it as such), status says how a client is configured (add
``agent-comms-mcp`` to that client's configuration) with the snippet for the common ``mcpServers`` form, and
configure and remove answer ``None`` (nothing to change, nothing to undo), which ``agent-comms setup mcp`` answers
with that same explanation. The harness-specific distributions (``agent-comms-claude-code``, ``agent-comms-codex``,
...) do real setup for their harnesses.
"""

from __future__ import annotations

import json
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
    "client_snippet",
    "server_command",
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


def server_command() -> str:
    """The ``agent-comms-mcp`` program of this installation, by absolute path when it can be found (a client started
    from a desktop launcher has no virtualenv on its ``PATH``)."""
    import shutil
    import sys

    beside = Path(sys.executable).parent / "agent-comms-mcp"
    if beside.exists():
        return str(beside)
    return shutil.which("agent-comms-mcp") or "agent-comms-mcp"


def client_snippet() -> str:
    """The entry to add to an MCP client's configuration, in the common ``mcpServers`` form (one line of JSON)."""
    return json.dumps({"mcpServers": {"agent-comms": {"command": server_command()}}})


@hookimpl
def agent_comms_detect(harness: str, home: Path) -> Detection | None:
    """Installed: this plugin is the harness (any MCP client can start ``agent-comms-mcp``)."""
    if harness != HARNESS:
        return None
    from agent_comms_mcp import __version__

    return Detection(installed=True, detail=f"agent-comms-mcp {__version__}, {server_command()}")


@hookimpl
def agent_comms_configure(harness: str, home: Path, dry_run: bool) -> list[str] | None:
    """``None``: no single configuration to write for every MCP client (the status line says what to add)."""
    return None


@hookimpl
def agent_comms_status(harness: str, home: Path) -> str | None:
    """How a generic MCP client is configured: the entry to add, as JSON."""
    if harness != HARNESS:
        return None
    return (
        "a generic MCP client is configured by adding agent-comms-mcp to that client's configuration (setup edits "
        f"no client's file); for the common mcpServers form: {client_snippet()}"
    )


@hookimpl
def agent_comms_remove(harness: str, home: Path, dry_run: bool) -> list[str] | None:
    """``None``: nothing this plugin configured to undo."""
    return None
