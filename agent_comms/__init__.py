"""agent-comms: a peer-to-peer communication layer for LLM coding agents.

Agents running on one machine (each inside its own harness: Claude Code, Codex, OpenCode, pi, or any MCP
client) join a mesh of peers over TCP on 127.0.0.1. There is no daemon: whichever peer holds the well-known
coordinator port only introduces newcomers to the others, and every peer keeps a replica of the shared state
(agents, rooms, messages) that converges.

Subpackages:

- :mod:`agent_comms.protocol`: the sans-IO core (wire types, framing, replicated state, peer state machine).
- :mod:`agent_comms.mesh`: the Trio runtime that drives the core over real sockets.

Importing this package is kept cheap on purpose: it must not import Trio or any other heavy dependency.
"""

from importlib.metadata import PackageNotFoundError, version

__all__ = ["__version__"]

try:
    __version__: str = version("agent-comms")
except PackageNotFoundError:  # running from a source tree that was never installed
    __version__ = "0.0.0"
