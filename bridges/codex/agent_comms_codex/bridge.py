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

import os
import sys
import time
from typing import TYPE_CHECKING, Final

import trio
from agent_comms_mcp.lifecycle import harness_to_watch

from agent_comms.events import format_delivery_event
from agent_comms.private_files import UnsafePathError
from agent_comms_codex import HARNESS
from agent_comms_codex.inbox import MAX_LISTED, VERSION, Inbox, inbox_path, remove_inbox, write_inbox

if TYPE_CHECKING:
    from agent_comms_mcp.server import RunningBridge

    from agent_comms.agent import Agent
    from agent_comms.hookspecs import BridgeOptions

__all__ = ["PROGRAM", "InboxWriter", "inbox_snapshot", "keep_inbox", "serve"]

#: The program name in the bridge's log lines.
PROGRAM: Final = "agent-comms-codex"
#: At most this often the inbox file is rewritten while events keep arriving (seconds).
_INBOX_MIN_INTERVAL: Final = 0.05


def inbox_snapshot(agent: Agent, *, harness_pid: int | None, cwd: str) -> Inbox:
    """What the inbox file says now for ``agent``: every event waiting for it, those a result gave back (it never
    reached Codex) included."""
    pending = agent.store.inbox(agent.id).pending()
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
                    except (OSError, UnsafePathError) as exc:  # the hooks go quiet; the tool still drains
                        print(f"{PROGRAM}: cannot write {self.path}: {exc}", file=sys.stderr)
                await trio.sleep(_INBOX_MIN_INTERVAL)  # a burst of events is one write
        finally:
            remove_inbox(self.path)


async def serve(options: BridgeOptions) -> int:
    """Run the Codex bridge on stdin/stdout until Codex is done with it; the exit status.

    The MCP bridge's :func:`agent_comms_mcp.server.serve` (and its exit statuses: 0 when Codex closed stdin, on
    SIGINT/SIGTERM/SIGHUP, or when Codex exited, each time after leaving the mesh gracefully; 2 for a bad
    ``--option``; 3 if the agent could not join the mesh; 1 if stdout was closed), with the inbox file beside it.
    """
    from agent_comms_mcp.server import BridgeExtension
    from agent_comms_mcp.server import serve as serve_mcp

    return await serve_mcp(options, BridgeExtension(harness=HARNESS, program=PROGRAM, run=keep_inbox))


async def keep_inbox(bridge: RunningBridge) -> None:
    """Beside the MCP server: keep the inbox file in step with the events waiting for the agent."""
    watched = harness_to_watch(bridge.options.harness_pid)
    inbox = InboxWriter(bridge.agent, harness_pid=watched[0] if watched is not None else None, cwd=bridge.options.cwd)
    bridge.agent.store.add_delivery_callback(lambda event: inbox.poke())
    bridge.add_written_callback(lambda message: inbox.poke())  # the events a result carried are no longer waiting
    await inbox.run()
