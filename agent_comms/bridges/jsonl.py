"""The built-in ``jsonl`` bridge: the ``agent_comms`` tool as line-delimited JSON on stdin and stdout.

For harnesses that can spawn a process and relay through it (the pi and OpenCode extensions do), and for scripts:
``agent-comms bridge jsonl [--name NAME] [--option harness=pi]``. Every line is one JSON object (UTF-8, ``\\n``):

* out, first, once synced with the mesh and registered: ``{"type": "ready", "agent": {"id", "name", "harness"}}``,
  with ``"note"`` (one line) when another online agent already bears the name
  (lines written before it wait; the first one is answered on the mesh's state, see
  :func:`agent_comms.agent.open_agent`)
* in: ``{"id": <any JSON>, "params": {<agent_comms tool parameters>}}``, answered in order by
  ``{"type": "result", "id": <the same>, "text": str, "is_error": bool, "data": {...}}``
* out, whenever an event arrives: ``{"type": "event", "event": {<DeliveryEvent>}, "text": <one readable line>}``;
  the event counts as read (its sender gets a ``read`` receipt) once the line is written. ``event.streaming``
  carries the sender's ``streamingBehavior`` for the relay to honour.
* out, for a line that is not such an object: ``{"type": "error", "text": "Error: ... (INVALID_PARAMS)"}`` (with
  ``"id"`` when the line had one); the bridge keeps going.
* in: ``{"type": "shutdown"}``: leave the mesh now, as at the end of input.

Relays that can tell when the model has really seen an event (the pi and OpenCode extensions) start the bridge with
``--option ack=1``: then an event line does not count as read by itself; the relay answers it, once the event was
shown, with ``{"type": "shown", "ids": [<event id>, ...]}`` (no reply), and only then does the sender get its
``read`` receipt. An event the relay never acknowledges stays ``delivered``. Unknown or repeated ids are ignored, so
acknowledging twice is harmless. A relay that had to leave events aside (it keeps a bounded number waiting) asks
for them again with ``{"type": "resend"}`` (no reply): every event written but not yet acknowledged is written
again, oldest first, so a relay must expect an event id it already has (and show it once).

End of input ends the bridge: it leaves the mesh gracefully and exits 0. So does the exit of the harness process
named by ``--harness-pid`` (a harness that dies without closing the pipe). Standard input and output may be pipes,
terminals or files.
"""

from __future__ import annotations

import json
import sys
from collections.abc import Awaitable
from typing import TYPE_CHECKING, Any, Final

import attrs
import msgspec
import trio

from agent_comms.errors import CommsError, ErrorCode
from agent_comms.events import DeliveryEvent, format_delivery_event
from agent_comms.hookspecs import Bridge, BridgeOptions, PushPath, Register, Serve, hookimpl
from agent_comms.liveness import wait_for_exit
from agent_comms.stdio import CHUNK, MAX_LINE, LineSplitter, LineWriter, open_stdio

if TYPE_CHECKING:
    from agent_comms.agent import Agent
    from agent_comms.inbox import Inbox

__all__ = [
    "BRIDGE",
    "HARNESS",
    "MAX_UNACKED",
    "register_bridges",
    "run_bridge",
    "serve",
    "serving",
    "tool_schema",
]

HARNESS: Final = "jsonl"
#: How many written but unacknowledged events (``ack`` mode) are remembered per agent; the oldest are forgotten.
MAX_UNACKED: Final = 10_000
#: Exit status when the bridge cannot join the mesh (the CLI's configuration-error status).
_EXIT_CONFIG: Final = 3
_EXIT_BROKEN: Final = 1


class _Relay:
    """Where an agent's events go: its line writer; in ``ack`` mode the events written but not yet shown are held
    in the agent's :class:`~agent_comms.inbox.Inbox`, each under its event id, until the relay acknowledges them."""

    def __init__(self, writer: LineWriter, ack: bool, inbox: Inbox) -> None:
        self.writer = writer
        self.ack = ack
        self.inbox = inbox

    async def push(self, event: DeliveryEvent) -> bool:
        """The push function (:func:`~agent_comms.plugins.relay_deliveries`): write the event line; shown at once,
        unless the relay acknowledges."""
        if self.ack:
            self.inbox.hold(event.id, [event], keep=MAX_UNACKED)
        await self.writer.write({"type": "event", "event": event, "text": format_delivery_event(event)})
        return not self.ack  # in ack mode the relay says when it was shown

    def shown(self, ids: list[str]) -> None:
        """The relay showed these events: they count as read (unknown or repeated ids are ignored)."""
        for event_id in ids:
            self.inbox.settle(event_id)


def tool_schema() -> dict[str, Any]:
    """The ``agent_comms`` tool for a relay that registers it itself: ``{"name", "description", "parameters"}``.

    ``parameters`` is the tool's JSON Schema (:func:`agent_comms.tool_schema.input_schema`: every contract
    parameter, only ``action`` required); the bridge validates again and answers bad parameters with an
    ``INVALID_PARAMS`` result.
    """
    from agent_comms import tool_schema as schema

    usage = "\n".join(
        f"- {row.name}: {row.parameters + ': ' if row.parameters else ''}{row.about}" for row in schema.usage()
    )
    description = (
        "Talk with the other coding agents on this machine (agent-comms): who is online, rooms, room messages and "
        "direct messages, with read receipts. You are on the mesh under a default name; register to choose yours. "
        "Messages for you arrive by themselves, each once.\n"
        f"Set action and its parameters (* = required):\n{usage}\n"
        "Agents are named by name or id, rooms by name. Errors come back as 'Error: <message> (<CODE>)'."
    )
    return {"name": schema.TOOL_NAME, "description": description, "parameters": schema.input_schema()}


def _error(text: str, request_id: object = None) -> dict[str, object]:
    message: dict[str, object] = {"type": "error", "text": CommsError(ErrorCode.INVALID_PARAMS, text).text}
    if request_id is not None:
        message["id"] = request_id
    return message


class _Shutdown(Exception):
    """The relay asked the bridge to leave (``{"type": "shutdown"}``)."""


async def _answer(agent: Agent, relay: _Relay, line: bytes | None) -> dict[str, object] | None:
    """The reply to one input line (``None`` for a blank line or an acknowledgement)."""
    if line is None:
        return _error(f"line longer than {MAX_LINE} bytes; it was skipped")
    if not line.strip():
        return None
    try:
        request = msgspec.json.decode(line)
    except (msgspec.DecodeError, UnicodeDecodeError, RecursionError) as exc:  # bad UTF-8, nesting too deep
        try:
            # Valid JSON that msgspec refuses: a lone surrogate escape ("\\ud800"). Parsed here, the tool names
            # the field that holds it, and the answer carries the request's id.
            request = json.loads(line)
        except (ValueError, RecursionError):
            return _error(f"the line is not valid JSON ({exc})")
    shape = 'each line is {"id": ..., "params": {<agent_comms tool parameters>}}'
    if not isinstance(request, dict):
        return _error(f"{shape}, not a JSON {type(request).__name__}")
    request_id = request.get("id")
    kind = request.get("type", "call")
    if kind == "shown":
        return _acknowledge(relay, request)
    if kind == "resend":
        relay.inbox.give_back_all()
        return None
    if kind == "shutdown":
        raise _Shutdown
    if kind != "call":
        return _error(f"unknown line type {kind!r} (expected 'call', 'shown', 'resend' or 'shutdown')", request_id)
    params = request.get("params")
    if not isinstance(params, dict):
        problem = "missing 'params'" if params is None else f"'params' must be an object, not {type(params).__name__}"
        return _error(f"{problem}: {shape}", request_id)
    result = await agent.call(params)
    return {"type": "result", "id": request_id, "text": result.text, "is_error": result.is_error, "data": result.data}


def _acknowledge(relay: _Relay, request: dict[str, Any]) -> dict[str, object] | None:
    """Mark the events the relay has shown as read (``{"type": "shown", "ids": [...]}``)."""
    ids = request.get("ids")
    if not isinstance(ids, list) or not all(isinstance(event_id, str) for event_id in ids):
        return _error('\'ids\' must be a list of event ids: {"type": "shown", "ids": [...]}', request.get("id"))
    relay.shown(ids)
    return None


async def run_bridge(agent: Agent, receive: trio.abc.ReceiveStream, writer: LineWriter, *, ack: bool = False) -> None:
    """Bridge ``agent`` over the streams until ``receive`` ends; events go out as event lines as they arrive.

    With ``ack``, an event counts as read only once the relay acknowledges it (``{"type": "shown", ...}``).
    """
    from agent_comms.plugins import relay_deliveries

    ready: dict[str, Any] = {
        "type": "ready",
        "agent": {"id": agent.id, "name": agent.name, "harness": agent.tool.harness},
    }
    if agent.name_note is not None:
        ready["note"] = agent.name_note  # the name was already in use: one line to tell the agent so
    await writer.write(ready)
    relay = _Relay(writer, ack, agent.store.inbox(agent.id))
    async with trio.open_nursery() as nursery:
        nursery.start_soon(relay_deliveries, relay.push, agent)
        splitter = LineSplitter()
        try:
            while data := await receive.receive_some(CHUNK):
                for line in splitter.feed(data):
                    await _reply(agent, relay, line)
            for line in splitter.close():
                await _reply(agent, relay, line)
        except _Shutdown:
            pass
        nursery.cancel_scope.cancel()


async def _reply(agent: Agent, relay: _Relay, line: bytes | None) -> None:
    answer = await _answer(agent, relay, line)
    if answer is not None:
        await relay.writer.write(answer)


async def serve(options: BridgeOptions) -> int:
    """Run the ``jsonl`` bridge on stdin and stdout; the exit status (0 at end of input)."""
    from agent_comms.agent import AgentError, open_agent
    from agent_comms.identity import IdentityError
    from agent_comms.mesh.keyfile import MeshKeyError
    from agent_comms.mesh.settings import SettingsError

    harness = options.extra.get("harness", HARNESS)
    ack = options.extra.get("ack", "0").lower() in ("1", "true", "yes", "on")
    status = 0
    async with open_stdio() as (receive, send):
        writer = LineWriter(send)
        try:
            async with (
                open_agent(harness, options.name, cwd=options.cwd, pid=options.harness_pid) as agent,
                trio.open_nursery() as nursery,
            ):
                if options.harness_pid is not None:
                    nursery.start_soon(_leave_when_gone, options.harness_pid, nursery.cancel_scope)
                await run_bridge(agent, receive, writer, ack=ack)
                nursery.cancel_scope.cancel()
        except* (AgentError, IdentityError, MeshKeyError, SettingsError) as group:
            problem = "; ".join(str(exc) for exc in _leaves(group))
            print(f"agent-comms bridge jsonl: {problem}", file=sys.stderr)
            await writer.write({"type": "error", "text": f"Error: could not join the mesh: {problem}"})
            status = _EXIT_CONFIG
        except* (trio.BrokenResourceError, trio.ClosedResourceError):
            print("agent-comms bridge jsonl: standard output was closed", file=sys.stderr)
            status = _EXIT_BROKEN
    return status


async def _leave_when_gone(pid: int, cancel_scope: trio.CancelScope) -> None:
    """Cancel the bridge once the harness process ``pid`` has exited (it may die without closing our stdin)."""
    await wait_for_exit(pid)
    print(f"agent-comms bridge: the harness process (pid {pid}) is gone; leaving the mesh", file=sys.stderr)
    cancel_scope.cancel()


def _leaves(error: BaseException) -> list[BaseException]:
    if isinstance(error, BaseExceptionGroup):
        return [leaf for inner in error.exceptions for leaf in _leaves(inner)]
    return [error]


def serving(harness: str, *, ack: bool = True) -> Serve:
    """The ``serve`` of a bridge of the JSON-lines family: this bridge, with its agent registered under ``harness``
    and, with ``ack`` (the default), reads counted only once the relay acknowledges them.

    A harness whose extension starts ``agent-comms bridge NAME`` and relays through it registers
    ``Bridge(name=NAME, push_path=PushPath.RELAY, serve=serving(NAME), ...)`` (the pi and OpenCode bridges do).
    """

    def serve_harness(options: BridgeOptions) -> Awaitable[int]:
        extra = {**options.extra, "harness": harness, **({"ack": "1"} if ack else {})}
        return serve(attrs.evolve(options, extra=extra))

    return serve_harness


#: The built-in bridge, as :func:`register_bridges` registers it.
BRIDGE: Final = Bridge(
    name=HARNESS,
    description="line-delimited JSON on stdin/stdout, for harnesses that spawn a process and relay through it",
    package="agent-comms",
    push_path=PushPath.RELAY,
    serve=serve,
)


@hookimpl
def register_bridges(register: Register) -> None:
    """The ``jsonl`` harness: any program that speaks the line protocol above."""
    register(BRIDGE)
