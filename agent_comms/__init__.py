"""agent-comms: a peer-to-peer communication layer for LLM coding agents.

Agents running on one machine (each inside its own harness: Claude Code, Codex, OpenCode, pi, or any MCP
client) join a mesh of peers over TCP on 127.0.0.1. There is no daemon: whichever peer holds the well-known
coordinator port only introduces newcomers to the others, and every peer keeps a replica of the shared state
(agents, rooms, messages) that converges.

Subpackages:

- :mod:`agent_comms.protocol`: the sans-IO core (wire types, framing, replicated state, peer state machine).
- :mod:`agent_comms.mesh`: the Trio runtime that drives the core over real sockets.

Importing this package is kept cheap on purpose: it must not import Trio or any other heavy dependency. The names
below are imported from their modules on first use (``from agent_comms import open_agent`` imports Trio then).

For bridge authors: :func:`open_agent` (the Trio entry point), the seed's building blocks (:class:`MeshStore`,
:class:`CommsTool`, :func:`build_action`, :func:`ensure_registered`, :func:`format_delivery_event`,
:func:`format_events`) and the plugin model (``hookimpl``, :class:`Bridge`, :class:`PushPath`, :class:`HarnessInfo`,
:class:`BridgeOptions`, :class:`Detection`; see :mod:`agent_comms.hookspecs`).
"""

from __future__ import annotations

from importlib import import_module

#: ``typing.TYPE_CHECKING`` without importing :mod:`typing` (type checkers take any name spelt so as true): the
#: command line's first moments, before it can take Ctrl-C quietly, stay as short as possible.
TYPE_CHECKING = False

if TYPE_CHECKING:
    __version__: str

    from agent_comms.actions import build_action
    from agent_comms.agent import Agent, AgentError, open_agent
    from agent_comms.events import DeliveryEvent, format_delivery_event, format_events
    from agent_comms.hookspecs import Bridge, BridgeOptions, Detection, HarnessInfo, PushPath, hookimpl
    from agent_comms.plugins import PluginError, get_plugin_manager
    from agent_comms.store import MeshStore
    from agent_comms.tool import CommsTool, ToolResult, ensure_registered, with_deliveries

#: Public name -> the module that defines it (imported lazily by ``__getattr__``).
_LAZY = {
    "Agent": "agent_comms.agent",
    "AgentError": "agent_comms.agent",
    "open_agent": "agent_comms.agent",
    "MeshStore": "agent_comms.store",
    "CommsTool": "agent_comms.tool",
    "ToolResult": "agent_comms.tool",
    "ensure_registered": "agent_comms.tool",
    "with_deliveries": "agent_comms.tool",
    "build_action": "agent_comms.actions",
    "DeliveryEvent": "agent_comms.events",
    "format_delivery_event": "agent_comms.events",
    "format_events": "agent_comms.events",
    "hookimpl": "agent_comms.hookspecs",
    "HarnessInfo": "agent_comms.hookspecs",
    "Bridge": "agent_comms.hookspecs",
    "PushPath": "agent_comms.hookspecs",
    "BridgeOptions": "agent_comms.hookspecs",
    "Detection": "agent_comms.hookspecs",
    "PluginError": "agent_comms.plugins",
    "get_plugin_manager": "agent_comms.plugins",
}

__all__ = [
    "Agent",
    "AgentError",
    "Bridge",
    "BridgeOptions",
    "CommsTool",
    "DeliveryEvent",
    "Detection",
    "HarnessInfo",
    "MeshStore",
    "PluginError",
    "PushPath",
    "ToolResult",
    "__version__",
    "build_action",
    "ensure_registered",
    "format_delivery_event",
    "format_events",
    "get_plugin_manager",
    "hookimpl",
    "open_agent",
    "with_deliveries",
]


def __getattr__(name: str) -> object:
    if name == "__version__":  # looked up on first use: the hooks of the harnesses import this package on every call
        return _version()
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'agent_comms' has no attribute {name!r}")
    value = getattr(import_module(module), name)
    globals()[name] = value  # later look-ups skip this function
    return value


def __dir__() -> list[str]:
    return sorted({*globals(), *__all__})


def _version() -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        found = version("agent-comms")
    except PackageNotFoundError:  # running from a source tree that was never installed
        found = "0.0.0"
    globals()["__version__"] = found
    return found
