"""The MCP server side of one stdio connection, without I/O: which requests it answers, and how.

Theory of operation:

1. Two protocol eras are served. The *handshake* era (revisions 2024-11-05, 2025-03-26, 2025-06-18 and
   2025-11-25) opens with ``initialize``: the server answers the client's version if it serves it, else its latest
   handshake revision (the client then decides whether to go on), and the client sends
   ``notifications/initialized``. The *stateless* era (2026-07-28) has no handshake: every request carries its
   protocol version and client capabilities in ``params._meta``, ``server/discover`` says what the server serves,
   and every result says ``resultType`` and carries the server's identity in its ``_meta``.
2. A request is served in the stateless era when its ``_meta`` carries the protocol-version key (and it is not
   ``initialize``), else in the handshake era. No era is remembered from an earlier request: the stateless era
   forbids inferring anything from one, and a handshake client never sends the envelope.
3. Every revision from 2024-11-05 on is served: the one tool uses nothing a revision added or removed (a tool with
   a name, a description, an input schema and text results). Older clients (Codex and OpenCode have sent 2025-03-26
   and 2025-06-18) get the version they asked for. ``title`` on the tool and the server info, new in 2025-06-18, is
   an extra member that older clients ignore. One change between revisions is the transport's, not the tool's:
   2025-03-26 (:data:`BATCH_VERSION`) requires a server to receive JSON-RPC batches, and 2025-06-18 removed them;
   the transport (:mod:`agent_comms_mcp.stdio`) serves a batch when 2025-03-26 was agreed, and refuses each of its
   requests (*Invalid Request*) otherwise.
4. Handshake-era requests other than ``initialize`` and ``ping`` before ``initialize`` are refused (*Invalid
   Request*): the client has not said which revision it speaks. ``ping`` is answered in the handshake era only
   (2026-07-28 removed it; unknown methods are *Method not found*).
5. ``tools/call`` is the one request that does work: :meth:`McpSession.route` returns a :class:`ToolCall` for the
   caller to run (it may take a while, and may be cancelled by ``notifications/cancelled``), then
   :meth:`McpSession.tool_result` shapes the answer for the request's era.

Errors are JSON-RPC errors for a broken protocol (unknown method, malformed params, a missing envelope); a tool
call that fails is a result with ``isError: true``, never an error response.
"""

from __future__ import annotations

from typing import Any, Final

import attrs

from agent_comms_mcp.jsonrpc import (
    INVALID_PARAMS,
    INVALID_REQUEST,
    METHOD_NOT_FOUND,
    Request,
    RpcError,
)

__all__ = [
    "BATCH_VERSION",
    "CANCELLED",
    "DISCOVER",
    "HANDSHAKE_VERSIONS",
    "INITIALIZED",
    "LATEST_HANDSHAKE",
    "STATELESS_VERSIONS",
    "UNSUPPORTED_PROTOCOL_VERSION",
    "McpSession",
    "ServerInfo",
    "ToolCall",
]

#: Handshake-era revisions served, oldest first; the last is answered to a client asking for one not served.
HANDSHAKE_VERSIONS: Final = ("2024-11-05", "2025-03-26", "2025-06-18", "2025-11-25")
LATEST_HANDSHAKE: Final = HANDSHAKE_VERSIONS[-1]
#: The one revision with JSON-RPC batches (a server must receive them; 2025-06-18 removed them).
BATCH_VERSION: Final = "2025-03-26"
#: Stateless-era revisions served.
STATELESS_VERSIONS: Final = ("2026-07-28",)
#: The stateless era's error for a protocol version the server does not serve.
UNSUPPORTED_PROTOCOL_VERSION: Final = -32022

INITIALIZED: Final = "notifications/initialized"
CANCELLED: Final = "notifications/cancelled"
DISCOVER: Final = "server/discover"

_VERSION_KEY: Final = "io.modelcontextprotocol/protocolVersion"
_CAPABILITIES_KEY: Final = "io.modelcontextprotocol/clientCapabilities"
_SERVER_INFO_KEY: Final = "io.modelcontextprotocol/serverInfo"


@attrs.frozen
class ServerInfo:
    """What the server says about itself: identity, instructions, its one tool and extra capabilities."""

    name: str
    version: str
    title: str
    instructions: str
    #: the ``tools/list`` entry of each tool, as sent
    tools: list[dict[str, Any]]
    #: experimental capabilities (e.g. ``{"claude/channel": {}}``), declared in the handshake era
    experimental: dict[str, dict[str, Any]] = attrs.field(factory=dict)


@attrs.frozen
class ToolCall:
    """A ``tools/call`` to run: the tool's name and arguments (``None``: none given), and the request's era."""

    name: str
    arguments: dict[str, Any] | None
    stateless: bool


class McpError(Exception):
    """A request refused with a JSON-RPC error."""

    def __init__(self, code: int, message: str, data: Any = None) -> None:
        super().__init__(message)
        self.error = RpcError(code, message, data)


@attrs.define
class McpSession:
    """One connection's MCP state: what :meth:`route` answers, and whether the handshake happened."""

    info: ServerInfo
    #: the revision agreed by ``initialize`` (``None``: no handshake yet)
    protocol_version: str | None = None
    #: set once the client sent ``notifications/initialized``
    initialized: bool = False

    def route(self, request: Request) -> dict[str, Any] | ToolCall | RpcError:
        """The answer to ``request``: a result, a :class:`ToolCall` to run, or an error."""
        try:
            return self._route(request)
        except McpError as exc:
            return exc.error

    def notified(self, method: str) -> None:
        """The client sent the notification ``method`` (cancellation is the transport's business)."""
        if method == INITIALIZED:
            self.initialized = True

    def tool_result(self, call: ToolCall, text: str, *, is_error: bool) -> dict[str, Any]:
        """The ``tools/call`` result for ``call``: one text block."""
        result: dict[str, Any] = {"content": [{"type": "text", "text": text}], "isError": is_error}
        return self._stamped(result) if call.stateless else result

    def _route(self, request: Request) -> dict[str, Any] | ToolCall:
        method, params = request.method, request.params or {}
        meta = params.get("_meta")
        if method != "initialize" and isinstance(meta, dict) and _VERSION_KEY in meta:
            return self._stateless(method, params, meta)
        if method == "initialize":
            return self._initialize(params)
        if method == "ping":
            return {}
        if method not in ("tools/list", "tools/call"):
            raise McpError(METHOD_NOT_FOUND, "Method not found", method)
        if self.protocol_version is None:
            raise McpError(INVALID_REQUEST, f"Invalid request: {method} before initialize")
        if method == "tools/list":
            return {"tools": self.info.tools}
        return _tool_call(params, stateless=False)

    def _initialize(self, params: dict[str, Any]) -> dict[str, Any]:
        requested = params.get("protocolVersion")
        if not isinstance(requested, str):
            raise McpError(INVALID_PARAMS, "Invalid params: initialize needs protocolVersion, a string")
        for key in ("capabilities", "clientInfo"):
            if not isinstance(params.get(key), dict):
                raise McpError(INVALID_PARAMS, f"Invalid params: initialize needs {key}, an object")
        self.protocol_version = requested if requested in HANDSHAKE_VERSIONS else LATEST_HANDSHAKE
        capabilities: dict[str, Any] = {"tools": {"listChanged": False}}
        if self.info.experimental:
            capabilities["experimental"] = self.info.experimental
        return {
            "protocolVersion": self.protocol_version,
            "capabilities": capabilities,
            "serverInfo": self._server_info(),
            "instructions": self.info.instructions,
        }

    def _stateless(self, method: str, params: dict[str, Any], meta: dict[str, Any]) -> dict[str, Any] | ToolCall:
        if _CAPABILITIES_KEY not in meta:
            raise McpError(INVALID_PARAMS, f"params._meta is missing the required envelope key(s): {_CAPABILITIES_KEY}")
        version = meta[_VERSION_KEY]
        if not isinstance(version, str):
            raise McpError(INVALID_PARAMS, "the protocol-version envelope value must be a string")
        if version not in STATELESS_VERSIONS:
            data = {"supported": list(STATELESS_VERSIONS), "requested": version}
            raise McpError(UNSUPPORTED_PROTOCOL_VERSION, "Unsupported protocol version", data)
        if method == DISCOVER:
            return self._stamped(
                {
                    "supportedVersions": list(STATELESS_VERSIONS),
                    "capabilities": {"tools": {"listChanged": False}},
                    "instructions": self.info.instructions,
                    "cacheScope": "private",
                    "ttlMs": 0,
                }
            )
        if method == "tools/list":
            return self._stamped({"tools": self.info.tools, "cacheScope": "private", "ttlMs": 0})
        if method == "tools/call":
            return _tool_call(params, stateless=True)
        raise McpError(METHOD_NOT_FOUND, "Method not found", method)

    def _server_info(self) -> dict[str, Any]:
        return {"name": self.info.name, "title": self.info.title, "version": self.info.version}

    def _stamped(self, result: dict[str, Any]) -> dict[str, Any]:
        return {**result, "resultType": "complete", "_meta": {_SERVER_INFO_KEY: self._server_info()}}


def _tool_call(params: dict[str, Any], *, stateless: bool) -> ToolCall:
    name = params.get("name")
    if not isinstance(name, str):
        raise McpError(INVALID_PARAMS, "Invalid params: tools/call needs name, a string")
    arguments = params.get("arguments")
    if arguments is not None and not isinstance(arguments, dict):
        raise McpError(INVALID_PARAMS, "Invalid params: the arguments of tools/call must be an object")
    return ToolCall(name, arguments, stateless)
