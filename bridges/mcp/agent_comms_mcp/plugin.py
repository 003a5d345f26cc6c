"""The ``mcp`` plugin: registers the bridge behind ``agent-comms bridge mcp``.

Registered in the entry-point group ``agent_comms`` under the name ``mcp``. Cheap to import (no Trio, no SDK):
``agent-comms plugins`` and the setup commands import every plugin.

The bridge has no setup hooks: there is no single configuration file for "any MCP client". Each client (Claude
Desktop, Cursor, Windsurf, VS Code...) keeps its MCP servers in its own file and format, so the one entry to add
(command ``agent-comms-mcp``) is documented in the README instead, and the harness-specific distributions
(``agent-comms-claude-code``, ``agent-comms-codex``, ...) do real setup for their harnesses.

This is also the MCP family's pattern: a harness-specific distribution registers its own :class:`Bridge` whose
``serve`` runs :func:`agent_comms_mcp.server.serve` with a :class:`~agent_comms_mcp.server.BridgeExtension`.
"""

from __future__ import annotations

from collections.abc import Awaitable
from typing import Final

from agent_comms.hookspecs import Bridge, BridgeOptions, PushPath, Register, hookimpl
from agent_comms_mcp import HARNESS

__all__ = ["BRIDGE", "register_bridges"]


def serve(options: BridgeOptions) -> Awaitable[int]:
    """The MCP server on stdio (a coroutine for ``trio.run``)."""
    from agent_comms_mcp.server import serve  # the SDK is imported only when the bridge runs

    return serve(options)


#: The ``mcp`` harness: any MCP client that starts a stdio server.
BRIDGE: Final = Bridge(
    name=HARNESS,
    description="any MCP client: the agent_comms tool as an MCP server on stdio; events drained into results",
    package="agent-comms-mcp",
    push_path=PushPath.TOOL_RESULTS,
    serve=serve,
)


@hookimpl
def register_bridges(register: Register) -> None:
    """Register the ``mcp`` bridge."""
    register(BRIDGE)
