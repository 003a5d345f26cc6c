"""The ``codex`` plugin: the hooks that make ``agent-comms bridge codex`` run this bridge and ``agent-comms setup``
configure Codex.

Registered in the entry-point group ``agent_comms`` under the name ``codex``. Cheap to import (no Trio, no SDK,
no tomlkit): ``agent-comms plugins`` and the setup commands import every plugin.
"""

from __future__ import annotations

from collections.abc import Awaitable
from pathlib import Path

from agent_comms.hookspecs import BridgeOptions, Detection, HarnessInfo, hookimpl
from agent_comms_codex import HARNESS

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
    """The ``codex`` harness: OpenAI's Codex CLI."""
    return HarnessInfo(
        name=HARNESS,
        description=(
            "OpenAI Codex: MCP server in ~/.codex/config.toml; events drained into results; hooks announce them"
        ),
        push=False,
        package="agent-comms-codex",
    )


@hookimpl
def agent_comms_serve(harness: str, options: BridgeOptions) -> Awaitable[int] | None:
    """The MCP server on stdio for Codex (a coroutine for ``trio.run``); ``None`` for other harnesses."""
    if harness != HARNESS:
        return None
    from agent_comms_codex.bridge import serve

    return serve(options)


@hookimpl
def agent_comms_detect(harness: str, home: Path) -> Detection | None:
    """Whether Codex is installed for ``home`` (its CLI and version)."""
    if harness != HARNESS:
        return None
    from agent_comms_codex.config import detect

    return detect(home)


@hookimpl
def agent_comms_configure(harness: str, home: Path, dry_run: bool) -> list[str] | None:
    """Add the MCP server to ``~/.codex/config.toml`` and the hooks to ``~/.codex/hooks.json``."""
    if harness != HARNESS:
        return None
    from agent_comms_codex.config import configure

    return configure(home, dry_run)


@hookimpl
def agent_comms_status(harness: str, home: Path) -> str | None:
    """How Codex is configured."""
    if harness != HARNESS:
        return None
    from agent_comms_codex.config import status

    return status(home)


@hookimpl
def agent_comms_remove(harness: str, home: Path, dry_run: bool) -> list[str] | None:
    """Take the MCP server and the hooks out of Codex's configuration."""
    if harness != HARNESS:
        return None
    from agent_comms_codex.config import remove

    return remove(home, dry_run)
