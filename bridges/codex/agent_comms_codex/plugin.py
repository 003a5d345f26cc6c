"""The ``codex`` plugin: registers the bridge that ``agent-comms bridge codex`` runs and ``agent-comms setup``
configures Codex for.

Registered in the entry-point group ``agent_comms`` under the name ``codex``. Cheap to import (no Trio, no SDK,
no tomlkit): ``agent-comms plugins`` and the setup commands import every plugin.

An MCP-family bridge that drains: events come with the results of the model's ``agent_comms`` calls; the MCP
bridge's extension keeps an inbox file beside the server, from which Codex's hooks tell the model what waits (and
continue a turn that would end with a message waiting).
"""

from __future__ import annotations

from collections.abc import Awaitable
from pathlib import Path
from typing import Final

from agent_comms.hookspecs import Bridge, BridgeOptions, Detection, PushPath, Register, hookimpl
from agent_comms_codex import HARNESS

__all__ = ["BRIDGE", "register_bridges"]


def serve(options: BridgeOptions) -> Awaitable[int]:
    """The MCP server on stdio for Codex (a coroutine for ``trio.run``)."""
    from agent_comms_codex.bridge import serve

    return serve(options)


def detect(home: Path) -> Detection:
    """Whether Codex is installed for ``home`` (its CLI and version)."""
    from agent_comms_codex.config import detect

    return detect(home)


def configure(home: Path, dry_run: bool) -> list[str]:
    """Add the MCP server to ``~/.codex/config.toml`` and the hooks to ``~/.codex/hooks.json``."""
    from agent_comms_codex.config import configure

    return configure(home, dry_run)


def status(home: Path) -> str:
    """How Codex is configured."""
    from agent_comms_codex.config import status

    return status(home)


def remove(home: Path, dry_run: bool) -> list[str]:
    """Take the MCP server and the hooks out of Codex's configuration."""
    from agent_comms_codex.config import remove

    return remove(home, dry_run)


#: The ``codex`` harness: OpenAI's Codex CLI.
BRIDGE: Final = Bridge(
    name=HARNESS,
    description="OpenAI Codex: MCP server in ~/.codex/config.toml; events drained into results; hooks announce them",
    package="agent-comms-codex",
    push_path=PushPath.TOOL_RESULTS | PushPath.HARNESS_HOOKS | PushPath.CONTINUE_TURN,
    serve=serve,
    detect=detect,
    configure=configure,
    status=status,
    remove=remove,
)


@hookimpl
def register_bridges(register: Register) -> None:
    """Register the ``codex`` bridge."""
    register(BRIDGE)
