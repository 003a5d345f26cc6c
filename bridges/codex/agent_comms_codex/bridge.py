"""The Codex bridge: the agent-comms MCP server of :mod:`agent_comms_mcp`, registered as harness ``codex``, plus the
inbox file the Codex hooks read.

Codex has no way for an MCP server to push a message into a session, so events are *drained*: every
``agent_comms`` result carries the events waiting for the agent (the MCP bridge's :class:`DrainLedger` counts them
read once the result is written to Codex). Between tool calls, :class:`InboxWriter` keeps the inbox file
(:mod:`agent_comms_codex.inbox`) listing what waits, so the hooks can tell the model to look.

The lifecycle is the MCP bridge's: the bridge leaves the mesh and exits 0 when Codex closes its stdin, on SIGINT,
SIGTERM or SIGHUP, and when Codex (its parent process, or ``--harness-pid``) exits without closing anything.
"""

from __future__ import annotations

import gc
import os
import sys
import time
from typing import TYPE_CHECKING, Final

import trio
from agent_comms_mcp.lifecycle import SIGNALS, harness_to_watch, wait_for_signal, watch_harness
from agent_comms_mcp.server import DEFAULT_MAX_EVENTS, DrainLedger, build_server
from agent_comms_mcp.stdio import open_stdio_transport

from agent_comms.events import format_delivery_event
from agent_comms_codex import HARNESS
from agent_comms_codex.inbox import MAX_LISTED, VERSION, Inbox, inbox_path, remove_inbox, write_inbox

if TYPE_CHECKING:
    from mcp.shared.message import SessionMessage

    from agent_comms.agent import Agent
    from agent_comms.hookspecs import BridgeOptions

__all__ = ["InboxWriter", "inbox_snapshot", "serve"]

_EXIT_BROKEN: Final = 1
_EXIT_USAGE: Final = 2
_EXIT_CONFIG: Final = 3
#: At most this often the inbox file is rewritten while events keep arriving (seconds).
_INBOX_MIN_INTERVAL: Final = 0.05


def inbox_snapshot(agent: Agent, *, harness_pid: int | None, cwd: str) -> Inbox:
    """What the inbox file says now for ``agent``."""
    pending = agent.store.pending(agent.id)
    return {
        "version": VERSION,
        "pid": os.getpid(),
        "harness_pid": harness_pid,
        "agent_id": agent.id,
        "name": agent.name,
        "cwd": cwd,
        "updated": time.time(),
        "waiting": len(pending),
        "events": [
            {"id": event.id, "type": event.type, "streaming": event.streaming, "line": format_delivery_event(event)}
            for event in pending[:MAX_LISTED]
        ],
    }


class InboxWriter:
    """Keeps the inbox file of ``agent`` in step with what waits for it: :meth:`poke` after any change, :meth:`run`
    in a task (it removes the file when cancelled)."""

    def __init__(self, agent: Agent, *, harness_pid: int | None, cwd: str) -> None:
        self.agent = agent
        self.harness_pid = harness_pid
        self.cwd = cwd
        self.path = inbox_path(os.getpid())
        self._changed = trio.Event()
        self._changed.set()  # the first write: the file exists (empty) from the start

    def poke(self) -> None:
        """Something changed (an event arrived, a result carrying events was written); never blocks."""
        self._changed.set()

    async def run(self) -> None:
        last: tuple[object, ...] | None = None
        try:
            while True:
                await self._changed.wait()
                self._changed = trio.Event()
                snapshot = inbox_snapshot(self.agent, harness_pid=self.harness_pid, cwd=self.cwd)
                key = (snapshot["name"], snapshot["waiting"], *(event["id"] for event in snapshot["events"]))
                if key != last:
                    try:
                        write_inbox(self.path, snapshot)
                        last = key
                    except OSError as exc:  # the hooks go quiet; the tool still drains
                        print(f"agent-comms-codex: cannot write {self.path}: {exc}", file=sys.stderr)
                await trio.sleep(_INBOX_MIN_INTERVAL)  # a burst of events is one write
        finally:
            remove_inbox(self.path)


async def serve(options: BridgeOptions) -> int:
    """Run the Codex bridge on stdin/stdout until Codex is done with it; the exit status.

    0 when Codex closed stdin, on SIGINT/SIGTERM/SIGHUP, or when Codex exited (each time after leaving the mesh
    gracefully); 2 for a bad ``--option``; 3 if the agent could not join the mesh; 1 if stdout was closed.
    """
    from agent_comms.agent import AgentError, open_agent
    from agent_comms.identity import IdentityError
    from agent_comms.mesh.keyfile import MeshKeyError
    from agent_comms.mesh.settings import SettingsError

    harness = options.extra.get("harness") or HARNESS
    raw_max = options.extra.get("max_events")
    try:
        max_events = int(raw_max) if raw_max is not None else DEFAULT_MAX_EVENTS
        if max_events <= 0:
            raise ValueError
    except ValueError:
        print(
            f"agent-comms-codex: --option max_events= takes a positive whole number, not {raw_max!r}", file=sys.stderr
        )
        return _EXIT_USAGE
    watched = harness_to_watch(options.harness_pid)
    harness_pid = watched[0] if watched is not None else None
    status = 0
    with trio.open_signal_receiver(*SIGNALS) as signals:
        try:
            async with trio.open_nursery() as nursery:
                nursery.start_soon(wait_for_signal, signals, nursery.cancel_scope)
                if watched is not None:
                    nursery.start_soon(watch_harness, *watched, nursery.cancel_scope)
                async with open_agent(harness, options.name, cwd=options.cwd, pid=options.harness_pid) as agent:
                    print(
                        f"agent-comms-codex: on the mesh as {agent.store.label(agent.id)}, harness {harness}",
                        file=sys.stderr,
                    )
                    ledger = DrainLedger(agent)
                    inbox = InboxWriter(agent, harness_pid=harness_pid, cwd=options.cwd)
                    agent.store.add_delivery_callback(lambda event: inbox.poke())

                    def written(message: SessionMessage) -> None:
                        ledger.written(message)
                        inbox.poke()  # the events it carried are no longer waiting

                    async with trio.open_nursery() as inner:
                        inner.start_soon(inbox.run)
                        server = build_server(agent, ledger=ledger, max_events=max_events)
                        transport = open_stdio_transport(on_written=written, on_unanswered=ledger.unanswered)
                        async with transport as (read_stream, write_stream):
                            await server.run(read_stream, write_stream, server.create_initialization_options())
                        inner.cancel_scope.cancel()
                nursery.cancel_scope.cancel()  # Codex closed stdin: done
        except* (AgentError, IdentityError, MeshKeyError, SettingsError) as group:
            problem = "; ".join(str(exc) for exc in group.exceptions)
            print(f"agent-comms-codex: could not join the mesh: {problem}", file=sys.stderr)
            status = _EXIT_CONFIG
        except* (trio.BrokenResourceError, trio.ClosedResourceError):
            print("agent-comms-codex: standard output was closed", file=sys.stderr)
            status = _EXIT_BROKEN
    gc.freeze()  # skip the interpreter's last full collection of the SDK's object graph (a slow exit otherwise)
    return status
