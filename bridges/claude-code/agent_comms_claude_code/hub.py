"""The bridge's side of the push: the channel, and the Unix socket its session's hooks fetch events from.

Theory of operation:

1. There is one queue of events per agent, :class:`agent_comms_mcp.server.DrainLedger`: tool results, channel
   notifications and hooks all take from it, so each event is taken once. Whoever takes events *holds* them under a
   key until they were shown (then they are *settled*: marked read, the sender gets a ``read`` receipt) or could
   not be (then they go back to the front of the queue, for the next taker).
2. Channel (only when Claude Code listens, see :mod:`agent_comms_claude_code.channel`): whenever the queue holds
   an event that :func:`~agent_comms_claude_code.channel.wakes` the model, every event up to the last such one is
   sent as one notification each, in order; an event counts as shown once its notification has been written to
   Claude Code. Informational events (joins, receipts...) wait for the next tool result or hook.
3. Hooks (separate processes; :mod:`agent_comms_claude_code.hook`) connect to the socket and send one request
   line: ``{"op": "take"}`` (UserPromptSubmit, PostToolUse) is answered at once with the text of up to
   ``limit`` events ``{"text": ..., "count": k, "ids": [...]}`` (or ``{"count": 0}``); ``{"op": "wait"}`` (the Stop
   hook of an idle session) is answered the same way once an event that wakes the model is waiting, or with
   ``{"superseded": true}`` when the session got busy again (a UserPromptSubmit), a newer Stop hook took over, or
   the channel does the waking; ``{"op": "check"}`` (the Stop hook of a ``claude -p`` turn, which must not wait) is
   answered at once like take when an event that wakes the model is waiting, else with ``{"count": 0}``. The hook
   prints the text and then sends ``{"op": "shown"}``: only then are the events settled. A hook that dies first
   (a timeout, a kill) closes the connection: its events go back.
4. The socket is ``<AGENT_COMMS_HOME>/claude-code/<pid>.sock`` (or, if that path is too long for a Unix socket, in
   a private temporary folder), mode 0600 in a 0700 folder: only this user's processes reach it, as for the mesh
   key. The folder is refused (the hooks are not served, the tool still works) unless it is this user's alone,
   and hooks check the folder and the socket the same way before they connect. The registration beside it
   (:mod:`agent_comms_claude_code.sessions`) tells hooks where it is; both are removed when the bridge ends.
"""

from __future__ import annotations

import contextlib
import itertools
import json
import logging
import os
import shutil
import socket as stdlib_socket
import sys
import tempfile
import time
from collections.abc import Hashable
from pathlib import Path
from typing import Any, Final

import attrs
import trio
from agent_comms_mcp.server import RunningBridge

from agent_comms.events import DeliveryEvent, format_events
from agent_comms.private_files import UnsafePathError, ensure_private_dir
from agent_comms.stdio import LineSplitter
from agent_comms_claude_code.channel import METHOD, channel_params, wakes
from agent_comms_claude_code.sessions import MAX_SOCKET_PATH, write_registration

__all__ = ["TOOL_STARTING", "Hub", "HubConfig", "render"]

logger = logging.getLogger(__name__)

#: Longest request line a hook may send.
_MAX_REQUEST: Final = 4096
#: How long a hook may take to send its request, and to confirm it printed the events.
_REQUEST_TIMEOUT: Final = 5.0
_SHOWN_TIMEOUT: Final = 10.0


@attrs.frozen
class HubConfig:
    """How the hub of one bridge runs."""

    #: the folder of registrations (``<AGENT_COMMS_HOME>/claude-code``)
    directory: Path
    #: push through the channel (Claude Code listens)
    channel: bool
    #: the Claude Code process that started the bridge
    harness_pid: int
    #: Claude Code's session id, if it said (``CLAUDE_CODE_SESSION_ID``)
    session_id: str | None
    cwd: str
    #: events given to one hook at most
    max_events: int = 50


#: Said when Claude Code has not connected to the server yet (``claude -p`` sends its first request without waiting
#: for MCP servers), so the model may not have the tool in this request.
TOOL_STARTING: Final = (
    "(The agent_comms tool is still starting in this session: if it is not among your tools yet, it will be in a "
    "moment. These messages are already delivered to you here.)"
)


def render(events: list[DeliveryEvent], waiting: int, who: str, *, tool_ready: bool = True) -> str:
    """The text a hook shows the model for ``events`` (``waiting``: how many more wait; ``tool_ready``: whether
    Claude Code has connected to the server, so that the model has the tool)."""
    shown = format_events(events)
    lines = [f"agent-comms: {len(shown)} new event(s) for you ({who}), from other agents on this machine:"]
    lines += shown
    if waiting:
        lines.append(f"({waiting} more event(s) waiting; they come with your next agent_comms call)")
    if any(event.type in ("dm", "room_message") for event in events):
        lines.append(
            'Reply with the agent_comms tool: action "dm" with target <the sender\'s id> for a DM, action "send" '
            "with target <the room> for a room message (replyTo: the message id). Your text output does not reach "
            "them. steer = act on it now, followUp = when your current task is done, info = no action needed."
        )
    if not tool_ready:
        lines.append(TOOL_STARTING)
    return "\n".join(lines)


class Hub:
    """The channel push and the hooks' socket of one bridge (see the module docstring)."""

    def __init__(self, bridge: RunningBridge, config: HubConfig) -> None:
        self.bridge = bridge
        self.config = config
        self._leases = itertools.count(1)
        self._changed = trio.Event()
        #: the cancel scope of the Stop hook waiting now
        self._waiter: trio.CancelScope | None = None
        self.socket_path: Path | None = None
        bridge.agent.store.add_delivery_callback(self._on_event)

    # ------------------------------------------------------------------ the queue

    def _on_event(self, event: DeliveryEvent) -> None:
        if event.to == self.bridge.agent.id:
            self._poke()

    def _poke(self) -> None:
        self._changed.set()
        self._changed = trio.Event()

    def _wake_count(self) -> int:
        """How many events from the front of the queue to push now: up to the last one that wakes the model."""
        pending = self.bridge.ledger.pending()
        return max((i + 1 for i, event in enumerate(pending) if wakes(event)), default=0)

    async def _wait_for_wake(self) -> None:
        while not self._wake_count():
            await self._changed.wait()

    def _take(self, limit: int) -> tuple[Hashable, list[DeliveryEvent], int]:
        events, waiting = self.bridge.ledger.drain(limit)
        key = ("hub", next(self._leases))
        self.bridge.ledger.hold(key, events)
        return key, events, waiting

    def _give_back(self, key: Hashable) -> None:
        self.bridge.ledger.unanswered(key)
        self._poke()

    # ------------------------------------------------------------------ running

    async def run(self) -> None:
        """Serve the hooks' socket (and push through the channel) until cancelled; clean up after."""
        directory = self.config.directory
        try:
            ensure_private_dir(directory.parent, follow=True)
            ensure_private_dir(directory)
        except (UnsafePathError, OSError) as exc:  # the tool still works; the hooks of this session stay quiet
            print(f"agent-comms-claude-code: not serving the hooks: {exc}", file=sys.stderr)
            return
        pid = os.getpid()
        path = directory / f"{pid}.sock"
        private: str | None = None
        if len(os.fsencode(path)) > MAX_SOCKET_PATH:
            private = tempfile.mkdtemp(prefix="agent-comms-")  # 0700
            path = Path(private) / "hooks.sock"
        registration: Path | None = None
        try:
            listener = await self._listen(path)
            self.socket_path = path
            registration = write_registration(
                directory,
                pid,
                {
                    "pid": pid,
                    "harness_pid": self.config.harness_pid,
                    "session_id": self.config.session_id,
                    "cwd": self.config.cwd,
                    "socket": str(path),
                    "agent_id": self.bridge.agent.id,
                    "channel": self.config.channel,
                    "started": time.time(),
                },
            )
            async with trio.open_nursery() as nursery:
                nursery.start_soon(trio.serve_listeners, self._handle, [listener])
                if self.config.channel:
                    nursery.start_soon(self._push)
        finally:
            for leftover in (registration, path):
                if leftover is not None:
                    _remove(leftover)
            if private is not None:
                shutil.rmtree(private, ignore_errors=True)

    async def _listen(self, path: Path) -> trio.SocketListener:
        _remove(path)  # a socket left by an earlier process with this pid
        sock = trio.socket.socket(stdlib_socket.AF_UNIX, stdlib_socket.SOCK_STREAM)
        try:
            old = os.umask(0o177)
            try:
                await sock.bind(str(path))
            finally:
                os.umask(old)
            os.chmod(path, 0o600)
            sock.listen(16)
        except BaseException:
            sock.close()
            raise
        return trio.SocketListener(sock)

    async def _push(self) -> None:
        """The channel: push the waiting events up to the last one that wakes the model, whenever there is one."""
        await self.bridge.initialized.wait()
        while True:
            await self._wait_for_wake()
            count = self._wake_count()
            events, _waiting = self.bridge.ledger.drain(count)
            for event in events:
                key = ("channel", event.id)
                self.bridge.ledger.hold(key, [event])
                if await self.bridge.notify(METHOD, channel_params(event)):
                    self.bridge.ledger.settle(key)
                else:  # the transport closed: the bridge is ending
                    self.bridge.ledger.unanswered(key)
                    return

    # ------------------------------------------------------------------ one hook

    async def _handle(self, stream: trio.SocketStream) -> None:
        try:
            async with stream:
                lines = _Lines(stream)
                request: Any = None
                op = None
                with trio.move_on_after(_REQUEST_TIMEOUT):
                    request = await lines.next_json()
                    op = request.get("op") if isinstance(request, dict) else None
                if op == "take":
                    if request.get("event") == "UserPromptSubmit" and self._waiter is not None:
                        self._waiter.cancel()  # the session is busy again: the idle waiter steps aside
                    await self._answer(stream, lines, request)
                elif op == "wait":
                    await self._wait(stream, lines, request)
                elif op == "check":
                    await self._check(stream, lines, request)
                else:
                    await _send(stream, {"error": "expected a request line with op take, wait or check"})
        except (trio.BrokenResourceError, trio.ClosedResourceError, ValueError) as exc:
            logger.debug("a hook connection ended early: %s", exc)

    async def _answer(self, stream: trio.SocketStream, lines: _Lines, request: dict[str, Any]) -> None:
        """Give the hook the waiting events; they are settled once it confirms it showed them, else given back."""
        limit = _limit(request.get("limit"), self.config.max_events)
        key, events, waiting = self._take(limit)
        if not format_events(events):  # none, or only status changes that came back to where they were
            self.bridge.ledger.settle(key)
            await _send(stream, {"count": 0, "waiting": waiting})
            return
        shown = False
        try:
            agent = self.bridge.agent
            text = render(events, waiting, agent.store.label(agent.id), tool_ready=self.bridge.initialized.is_set())
            await _send(stream, {"count": len(events), "text": text, "ids": [e.id for e in events]})
            with trio.move_on_after(_SHOWN_TIMEOUT):
                reply = await lines.next_json()
                if isinstance(reply, dict) and reply.get("op") == "shown":
                    self.bridge.ledger.settle(key)
                    shown = True
                    await _send(stream, {"ok": True})
        finally:
            if not shown:  # the hook did not confirm (it died, or timed out): the events go back to the front
                self._give_back(key)

    async def _check(self, stream: trio.SocketStream, lines: _Lines, request: dict[str, Any]) -> None:
        """The Stop hook of a ``claude -p`` turn: the waiting events if one of them asks for action, else nothing
        (informational events wait for the next tool result or hook)."""
        if not self._wake_count():
            await _send(stream, {"count": 0, "waiting": len(self.bridge.ledger.pending())})
            return
        await self._answer(stream, lines, request)

    async def _wait(self, stream: trio.SocketStream, lines: _Lines, request: dict[str, Any]) -> None:
        """The Stop hook: wait for an event that wakes the model, then answer as for take."""
        if self.config.channel:
            await _send(stream, {"superseded": True, "reason": "the channel wakes the session"})
            return
        if self._waiter is not None:
            self._waiter.cancel()  # one waiter per session: the newest
        with trio.CancelScope() as scope:
            self._waiter = scope
            try:
                async with trio.open_nursery() as nursery:
                    nursery.start_soon(_watch_closed, lines, scope)
                    await self._wait_for_wake()
                    nursery.cancel_scope.cancel()
            finally:
                if self._waiter is scope:
                    self._waiter = None
        if scope.cancelled_caught:
            with contextlib.suppress(trio.BrokenResourceError, trio.ClosedResourceError):
                await _send(stream, {"superseded": True, "reason": "the session is active, or a newer hook waits"})
            return
        await self._answer(stream, lines, request)


async def _watch_closed(lines: _Lines, scope: trio.CancelScope) -> None:
    """While a Stop hook waits, its connection stays silent; if it closes (the hook was killed), stop waiting."""
    with contextlib.suppress(trio.BrokenResourceError, trio.ClosedResourceError, ValueError):
        await lines.next_json()
    scope.cancel()


class _Lines:
    """JSON lines from a hook's connection."""

    def __init__(self, stream: trio.SocketStream) -> None:
        self._stream = stream
        self._splitter = LineSplitter(_MAX_REQUEST)
        self._ready: list[bytes | None] = []

    async def next_json(self) -> Any:
        """The next line, parsed; :class:`ValueError` for a bad or over-long line or the end of the connection."""
        while not self._ready:
            data = await self._stream.receive_some(_MAX_REQUEST)
            if not data:
                raise ValueError("the hook closed the connection")
            self._ready += self._splitter.feed(data)
        line = self._ready.pop(0)
        if line is None:
            raise ValueError("request line too long")
        return json.loads(line)


def _remove(path: Path) -> None:
    with contextlib.suppress(OSError):
        path.unlink()


async def _send(stream: trio.SocketStream, message: dict[str, Any]) -> None:
    await stream.send_all(json.dumps(message).encode() + b"\n")


def _limit(value: object, default: int) -> int:
    return value if isinstance(value, int) and 0 < value <= default else default
