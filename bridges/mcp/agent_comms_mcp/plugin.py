"""The ``mcp`` plugin: registers the bridge behind ``agent-comms bridge mcp``.

Registered in the entry-point group ``agent_comms`` under the name ``mcp``. Cheap to import (no Trio, no SDK):
``agent-comms plugins`` and the setup commands import every plugin.

The setup hooks: there is no single configuration file for "any MCP client". Each client (Claude Desktop, Cursor,
Windsurf, VS Code...) keeps its MCP servers in its own file and format, so setup edits none of them: detect says the
plugin is installed (``agent-comms status`` lists it as such), status says how a client is configured (add
``agent-comms-mcp`` to that client's configuration) with the snippet for the common ``mcpServers`` form, and
configure and remove answer ``None`` (nothing to change, nothing to undo), which ``agent-comms setup mcp`` answers
with that same explanation. The harness-specific distributions (``agent-comms-claude-code``, ``agent-comms-codex``,
...) do real setup for their harnesses.

This is also the MCP family's pattern: a harness-specific distribution registers its own :class:`Bridge` whose
``serve`` runs :func:`agent_comms_mcp.server.serve` with a :class:`~agent_comms_mcp.server.BridgeExtension`.
"""

from __future__ import annotations

import json
from collections.abc import Awaitable
from pathlib import Path
from typing import Final

from agent_comms.hookspecs import Bridge, BridgeOptions, Detection, PushPath, Register, hookimpl
from agent_comms_mcp import HARNESS

__all__ = ["BRIDGE", "client_snippet", "register_bridges", "server_command"]


def serve(options: BridgeOptions) -> Awaitable[int]:
    """The MCP server on stdio (a coroutine for ``trio.run``)."""
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


def detect(home: Path) -> Detection:
    """Installed: this plugin is the harness (any MCP client can start ``agent-comms-mcp``)."""
    from agent_comms_mcp import __version__

    return Detection(installed=True, detail=f"agent-comms-mcp {__version__}, {server_command()}")


def configure(home: Path, dry_run: bool) -> list[str] | None:
    """``None``: no single configuration to write for every MCP client (the status line says what to add)."""
    return None


def status(home: Path) -> str:
    """How a generic MCP client is configured: the entry to add, as JSON."""
    return (
        "a generic MCP client is configured by adding agent-comms-mcp to that client's configuration (setup edits "
        f"no client's file); for the common mcpServers form: {client_snippet()}"
    )


def remove(home: Path, dry_run: bool) -> list[str] | None:
    """``None``: nothing this plugin configured to undo."""
    return None


#: The ``mcp`` harness: any MCP client that starts a stdio server.
BRIDGE: Final = Bridge(
    name=HARNESS,
    description="any MCP client: the agent_comms tool as an MCP server on stdio; events drained into results",
    package="agent-comms-mcp",
    push_path=PushPath.TOOL_RESULTS,
    serve=serve,
    detect=detect,
    configure=configure,
    status=status,
    remove=remove,
)


@hookimpl
def register_bridges(register: Register) -> None:
    """Register the ``mcp`` bridge."""
    register(BRIDGE)
