"""The ``agent_comms`` tool as an MCP server: its JSON Schema, its description, and the bridge that serves it.

:func:`build_session` describes the server for a connection (:class:`~agent_comms_mcp.session.McpSession`):
``tools/list`` answers one tool, :data:`TOOL`; ``tools/call`` runs the call through the agent's
:class:`~agent_comms.tool.CommsTool` and appends, with :func:`agent_comms.tool.with_deliveries`, the events waiting
for the agent (*drain* delivery: a generic MCP client cannot be pushed a message). Errors are results
(``isError: true`` on the wire), never exceptions.

An event counts as read (its sender gets a ``read`` receipt) once the tool result carrying it has been written to the
client, not before: :class:`DrainLedger` holds the drained events per request until the transport reports the
response written.

:func:`serve` is the whole bridge: join the mesh with :func:`agent_comms.agent.open_agent` (which waits until the
peer is synced with the mesh, then registers the agent under its previous name or ``<harness>-<directory>``), serve
MCP on stdio until the client closes stdin, then leave gracefully; SIGINT, SIGTERM, SIGHUP and the exit of the
harness process end it the same way. Stdin is read only once the agent is on the mesh, so ``initialize`` is answered
only once the bridge is synced (the wait is bounded: see :meth:`agent_comms.mesh.node.MeshNode.wait_synced`).

The protocol is served directly (:mod:`agent_comms_mcp.session`, :mod:`agent_comms_mcp.jsonrpc`,
:mod:`agent_comms_mcp.stdio`), not with the ``mcp`` SDK, whose package import alone took about a second: the
bridge's start is what a harness waits for.
"""

from __future__ import annotations

import logging
import os
import sys
from collections.abc import Awaitable, Callable, Hashable
from typing import TYPE_CHECKING, Any, Final

import attrs
import trio

from agent_comms import tool_schema
from agent_comms.errors import CommsError, ErrorCode
from agent_comms.tool import ToolResult, with_deliveries
from agent_comms_mcp import HARNESS
from agent_comms_mcp.jsonrpc import Notification, Outgoing, RequestId, Response
from agent_comms_mcp.lifecycle import SIGNALS, harness_to_watch, wait_for_signal, watch_harness
from agent_comms_mcp.session import INITIALIZED, McpSession, ServerInfo, ToolCall
from agent_comms_mcp.stdio import Refusal, StdioConnection, open_stdio_connection

if TYPE_CHECKING:
    from agent_comms.agent import Agent
    from agent_comms.events import DeliveryEvent
    from agent_comms.hookspecs import BridgeOptions

__all__ = [
    "DEFAULT_MAX_EVENTS",
    "HARNESS_ENV",
    "INITIALIZED",
    "INPUT_SCHEMA",
    "INSTRUCTIONS",
    "TOOL",
    "TOOL_DESCRIPTION",
    "TOOL_NAME",
    "BridgeExtension",
    "DrainLedger",
    "RunningBridge",
    "build_session",
    "call_tool",
    "serve",
    "tool_runner",
]

logger = logging.getLogger(__name__)

TOOL_NAME: Final = tool_schema.TOOL_NAME
#: The environment variable that names the harness of the agent's identity (``--option harness=`` wins over it).
HARNESS_ENV: Final = "AGENT_COMMS_HARNESS"
#: Events appended to one tool result at most; the rest wait for the next call (and the result says how many).
DEFAULT_MAX_EVENTS: Final = 50
#: Exit status when the bridge cannot join the mesh (the CLI's configuration-error status), and when stdout broke.
_EXIT_CONFIG: Final = 3
_EXIT_BROKEN: Final = 1
_EXIT_USAGE: Final = 2

#: The tool's input schema, generated from :mod:`agent_comms.actions` (:func:`agent_comms.tool_schema.input_schema`).
INPUT_SCHEMA: Final[dict[str, Any]] = tool_schema.input_schema()


def _usage() -> str:
    rows = tool_schema.usage()
    width = max(len(row.name) for row in rows)
    lines = []
    for row in rows:
        params = f"{row.parameters}. " if row.parameters else ""
        lines.append(f"- {row.name.ljust(width)}  {params}{row.about[0].upper()}{row.about[1:]}.")
    return "\n".join(lines)


TOOL_DESCRIPTION: Final = f"""\
Talk with the other coding agents on this machine (agent-comms): see who is online, join rooms, send room messages \
and direct messages (DMs), with read receipts.

You are already on the mesh under a default name; call register with a name to choose yours. Messages and other \
events for you come appended to the result of every agent_comms call, after a line "--- N new event(s) ---", each \
one once; if more are waiting, the result says how many. To check for new messages, call whoami.

Set "action" and the parameters it takes (* = required):
{_usage()}

Agents are named by name or id (results show "name (id)"); rooms by name. streamingBehavior (send, dm): steer = \
act on it now, followUp = when idle, info = no action needed. Errors come back as "Error: <message> (<CODE>)", \
codes AGENT_NOT_FOUND, ROOM_EXISTS, ROOM_NOT_FOUND, NOT_INVITED, NOT_OWNER, NOT_MEMBER, INVALID_PARAMS."""

#: The one tool this server lists, as ``tools/list`` sends it.
TOOL: Final[dict[str, Any]] = {
    "name": TOOL_NAME,
    "title": "Agent comms",
    "description": TOOL_DESCRIPTION,
    "inputSchema": INPUT_SCHEMA,
}

#: The server's instructions (MCP clients may add them to the model's context).
INSTRUCTIONS: Final = (
    "agent-comms connects you with the other coding agents on this machine. Use the agent_comms tool to see who "
    "is online, talk in rooms and send direct messages. Messages for you arrive appended to agent_comms results; "
    "call agent_comms with action whoami to check for new ones."
)


class DrainLedger:
    """The drain of one agent's events into tool results, and when they count as read.

    :meth:`drain` gives a result its events; they count as read (their senders get ``read`` receipts) once the
    transport has written the response carrying them (:meth:`written`, the transport's ``on_written``). Events of a
    result that never reached the client (a call the client cancelled, a write cut short as the bridge ended: the
    transport's :meth:`unanswered`) stay unread and come first in the next result. An error response touches
    nothing: the transport answers no ``tools/call`` with one, and refuses a request reusing the id of one in
    progress. The events themselves, waiting or held, are
    the agent's :class:`~agent_comms.inbox.Inbox`'s; this maps MCP's responses onto it.
    """

    def __init__(self, agent: Agent) -> None:
        self.agent = agent
        # Held under JSON-RPC request ids; other ways of showing events (a harness's hooks) use keys of their own.
        self.inbox = agent.store.inbox(agent.id)

    def drain(self, limit: int) -> tuple[list[DeliveryEvent], int]:
        """Up to ``limit`` events for a tool result, oldest first, and how many more are waiting."""
        events = self.inbox.take(limit)
        return events, len(self.inbox)

    def pending(self) -> list[DeliveryEvent]:
        """The events waiting to be drained, oldest first (they stay waiting)."""
        return self.inbox.pending()

    def hold(self, request_id: Hashable | None, events: list[DeliveryEvent]) -> None:
        """``events`` go out in the response to ``request_id`` (or another showing, named by any hashable key)."""
        if not events:
            return
        if request_id is None:  # no response to wait for (not a request on this transport): shown now
            self.agent.store.mark_read(self.agent.id, events)
            return
        self.inbox.hold(request_id, events)

    def written(self, message: Outgoing) -> None:
        """The transport wrote ``message``: a response's events are now in front of the model."""
        if isinstance(message, Response):
            self.settle(message.id)

    def settle(self, key: Hashable) -> list[DeliveryEvent]:
        """The events held under ``key`` are in front of the model: mark them read; the events."""
        return self.inbox.settle(key)

    def unanswered(self, request_id: Hashable) -> None:
        """The result for ``request_id`` never reached the client: its events wait for the next result."""
        self.inbox.give_back(request_id)

    @property
    def held(self) -> int:
        """How many events wait for their response to be written."""
        return self.inbox.held


async def call_tool(agent: Agent, name: str, arguments: dict[str, Any] | None) -> ToolResult:
    """One ``tools/call`` of the tool ``name`` as a :class:`ToolResult` (never an exception)."""
    if name != TOOL_NAME:
        error = CommsError(ErrorCode.INVALID_PARAMS, f"unknown tool {name!r}; this server has one tool, {TOOL_NAME!r}")
        return ToolResult(error.text, is_error=True, data={"code": str(error.code)})
    try:
        return await agent.call(arguments if arguments is not None else {})
    except Exception as exc:  # a bug in the tool: the model gets an error result, the log the traceback
        logger.exception("agent_comms tool call failed")
        text = f"Error: the agent_comms bridge failed on this call: {type(exc).__name__}: {exc}"
        return ToolResult(text, is_error=True)


def build_session(*, instructions: str = INSTRUCTIONS, experimental: dict[str, Any] | None = None) -> McpSession:
    """A connection's MCP session: the server's identity, ``instructions``, ``experimental`` capabilities and its
    one tool, :data:`TOOL`."""
    from agent_comms_mcp import __version__

    info = ServerInfo(
        name="agent-comms",
        version=__version__,
        title="agent-comms",
        instructions=instructions,
        tools=[TOOL],
        experimental=dict(experimental or {}),
    )
    return McpSession(info)


def tool_runner(
    agent: Agent, ledger: DrainLedger, max_events: int = DEFAULT_MAX_EVENTS
) -> Callable[[ToolCall, RequestId], Awaitable[tuple[str, bool]]]:
    """What runs a ``tools/call``: the call, then up to ``max_events`` events drained into its result."""

    async def run(call: ToolCall, request_id: RequestId) -> tuple[str, bool]:
        result = await call_tool(agent, call.name, call.arguments)
        # No checkpoint from here to the return: the events drained are in the result this request returns.
        events, waiting = ledger.drain(max_events)
        shown = with_deliveries(result, events, waiting=waiting)
        ledger.hold(request_id, events)
        return shown.text, shown.is_error

    return run


def _positive(value: str | None, default: int, what: str) -> int:
    if value is None:
        return default
    try:
        number = int(value)
    except ValueError:
        number = 0
    if number <= 0:
        raise ValueError(f"--option {what}= takes a positive whole number, not {value!r}")
    return number


@attrs.define(eq=False)
class RunningBridge:
    """A bridge while it serves: what a :class:`BridgeExtension` works with.

    ``ledger`` is the one queue of the agent's events for every way of showing them (tool results, a push, a
    harness's hooks), so no event is shown twice. :meth:`notify` sends the client a notification of any method.
    """

    agent: Agent
    ledger: DrainLedger
    options: BridgeOptions
    harness: str
    #: set once the client has sent ``notifications/initialized`` (notifications before it may be dropped)
    initialized: trio.Event
    connection: StdioConnection

    async def notify(self, method: str, params: dict[str, Any]) -> bool:
        """Send the notification ``method`` with ``params``; ``True`` once it is written, ``False`` if the
        transport has closed."""
        try:
            await self.connection.send(Notification(method, params))
        except (trio.BrokenResourceError, trio.ClosedResourceError):
            return False
        return True

    def add_written_callback(self, callback: Callable[[Outgoing], None]) -> None:
        """Call ``callback`` with every message the transport has written (e.g. a tool result that carried
        events: they are no longer waiting). It runs in the writing task, so it must not block."""
        self.connection.add_written_callback(callback)


@attrs.frozen
class BridgeExtension:
    """What a harness-specific distribution adds to this MCP bridge (``agent-comms-claude-code`` adds push).

    ``run(bridge)``, if given, runs beside the MCP server while it serves and is cancelled when it ends.
    """

    #: the harness name of the agent's identity unless ``--option harness=`` or ``$AGENT_COMMS_HARNESS`` say else
    harness: str
    #: the program name in log lines
    program: str = "agent-comms-mcp"
    instructions: str = INSTRUCTIONS
    #: the server's experimental capabilities, e.g. ``{"claude/channel": {}}``
    experimental: dict[str, dict[str, Any]] = attrs.field(factory=dict)
    run: Callable[[RunningBridge], Awaitable[None]] | None = None
    #: answers some requests with an error before the server sees them (see :func:`open_stdio_transport`)
    refuse: Refusal | None = None


async def serve(options: BridgeOptions, extension: BridgeExtension | None = None) -> int:
    """Run the bridge on this process's stdin and stdout until the client is done; the exit status.

    0 when the client closed stdin, on SIGINT/SIGTERM/SIGHUP, or when the harness process is gone (each time after
    leaving the mesh gracefully); 2 for a bad ``--option``; 3 if the agent could not join the mesh; 1 if stdout was
    closed under the bridge. ``extension`` adapts the bridge to a harness (see :class:`BridgeExtension`).
    """
    from agent_comms.agent import AgentError, open_agent
    from agent_comms.identity import IdentityError
    from agent_comms.mesh.keyfile import MeshKeyError
    from agent_comms.mesh.settings import SettingsError

    extension = BridgeExtension(harness=HARNESS) if extension is None else extension
    program = extension.program
    harness = options.extra.get("harness") or os.environ.get(HARNESS_ENV) or extension.harness
    try:
        max_events = _positive(options.extra.get("max_events"), DEFAULT_MAX_EVENTS, "max_events")
    except ValueError as exc:
        print(f"{program}: {exc}", file=sys.stderr)
        return _EXIT_USAGE
    watched = harness_to_watch(options.harness_pid)
    status = 0
    with trio.open_signal_receiver(*SIGNALS) as signals:
        try:
            async with trio.open_nursery() as nursery:
                nursery.start_soon(wait_for_signal, signals, nursery.cancel_scope, program)
                if watched is not None:
                    nursery.start_soon(watch_harness, *watched, nursery.cancel_scope, program)
                async with open_agent(harness, options.name, cwd=options.cwd, pid=options.harness_pid) as agent:
                    print(
                        f"{program}: on the mesh as {agent.store.label(agent.id)}, harness {harness}", file=sys.stderr
                    )
                    await _serve_agent(agent, options, extension, harness, max_events)
                nursery.cancel_scope.cancel()  # the client closed stdin: done
        except* (AgentError, IdentityError, MeshKeyError, SettingsError) as group:
            problem = "; ".join(str(exc) for exc in _leaves(group))
            print(f"{program}: could not join the mesh: {problem}", file=sys.stderr)
            status = _EXIT_CONFIG
        except* (trio.BrokenResourceError, trio.ClosedResourceError):
            print(f"{program}: standard output was closed", file=sys.stderr)
            status = _EXIT_BROKEN
    return status


async def _serve_agent(
    agent: Agent, options: BridgeOptions, extension: BridgeExtension, harness: str, max_events: int
) -> None:
    """Serve MCP for ``agent`` on stdio, with the extension's task beside the server, until the client is done."""
    ledger = DrainLedger(agent)
    instructions = extension.instructions
    if agent.name_note is not None:  # its name was already in use: the client learns it with the instructions
        instructions = f"{instructions}\n\n{agent.name_note}" if instructions else agent.name_note
    session = build_session(instructions=instructions, experimental=extension.experimental)
    async with open_stdio_connection(session, program=extension.program, refuse=extension.refuse) as connection:
        connection.add_written_callback(ledger.written)
        connection.add_unanswered_callback(ledger.unanswered)
        bridge = RunningBridge(agent, ledger, options, harness, connection.initialized, connection)
        async with trio.open_nursery() as beside:
            if extension.run is not None:
                beside.start_soon(extension.run, bridge)
            await connection.serve(tool_runner(agent, ledger, max_events))
            beside.cancel_scope.cancel()


def _leaves(error: BaseException) -> list[BaseException]:
    if isinstance(error, BaseExceptionGroup):
        return [leaf for inner in error.exceptions for leaf in _leaves(inner)]
    return [error]
