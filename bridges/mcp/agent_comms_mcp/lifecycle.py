"""When the bridge stops: the signals that end it, and the harness process whose exit ends it.

An MCP client normally ends a stdio server by closing its stdin (the bridge then leaves the mesh and exits 0). It
may also send SIGTERM (the SDK's client does after a grace period), a terminal may send SIGHUP, a user SIGINT; all
three end the bridge the same graceful way. And a harness that dies without closing anything (SIGKILL, a crash)
leaves the bridge orphaned with an open stdin: :func:`wait_for_exit` notices that the harness process is gone.
"""

from __future__ import annotations

import os
import signal
import sys
from collections.abc import AsyncIterator
from typing import Final

import trio

from agent_comms import liveness
from agent_comms.liveness import POLL_INTERVAL, process_alive  # POLL_INTERVAL: how often it looks without a pidfd

__all__ = ["POLL_INTERVAL", "SIGNALS", "harness_to_watch", "wait_for_exit", "wait_for_signal", "watch_harness"]

#: The signals that end the bridge gracefully.
SIGNALS: Final = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)


def harness_to_watch(harness_pid: int | None) -> tuple[int, bool] | None:
    """The process whose exit ends the bridge, and whether it is this process's parent; ``None``: none to watch.

    ``harness_pid`` if the harness named itself (``--harness-pid``); else the parent process that started the
    bridge, unless that is already init (the bridge was started detached: only the end of stdin ends it).
    """
    if harness_pid is not None:
        return harness_pid, harness_pid == os.getppid()
    parent = os.getppid()
    return None if parent <= 1 else (parent, True)


def _alive(pid: int, *, parent: bool) -> bool:
    if parent:
        return os.getppid() == pid  # an orphan is re-parented (to init or a subreaper) the moment its parent dies
    return process_alive(pid)


async def wait_for_exit(pid: int, *, parent: bool) -> None:
    """Return once the process ``pid`` has exited (``parent``: it is this process's parent).

    :func:`agent_comms.liveness.wait_for_exit`; for the parent, "still running" is "still our parent", which also
    settles a pid reused by the time the pidfd was opened.
    """
    await liveness.wait_for_exit(pid, lambda: _alive(pid, parent=parent))


async def watch_harness(
    pid: int, parent: bool, cancel_scope: trio.CancelScope, program: str = "agent-comms-mcp"
) -> None:
    """Cancel ``cancel_scope`` (the bridge) once the harness process ``pid`` is gone (``program`` names the log)."""
    await wait_for_exit(pid, parent=parent)
    who = "its parent process" if parent else "the harness process"
    print(f"{program}: {who} (pid {pid}) is gone; leaving the mesh", file=sys.stderr)
    cancel_scope.cancel()


async def wait_for_signal(
    signals: AsyncIterator[int], cancel_scope: trio.CancelScope, program: str = "agent-comms-mcp"
) -> None:
    """Cancel ``cancel_scope`` (the bridge) at the first signal from ``signals`` (``trio.open_signal_receiver``)."""
    async for signum in signals:
        print(f"{program}: {_signal_name(signum)}; leaving the mesh", file=sys.stderr)
        cancel_scope.cancel()
        return


def _signal_name(signum: int) -> str:
    try:
        return signal.Signals(signum).name
    except ValueError:
        return f"signal {signum}"
