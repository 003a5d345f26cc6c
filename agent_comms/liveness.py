"""Is a process still the one we knew? (pid plus start time, so a reused pid is not mistaken for it.)

The one answer to that question for the mesh, the bridges and the test helpers (:func:`process_alive`). On Linux the
start time is field 22 of ``/proc/<pid>/stat`` (clock ticks since boot), turned into seconds. Where ``/proc`` is
missing the start time is unknown (0.0) and only the pid is checked. A process owned by another user that we may not
signal (EPERM) is alive; a zombie (exited, not yet reaped by its parent) is gone.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Callable
from typing import Final

__all__ = ["POLL_INTERVAL", "process_alive", "process_start_time", "wait_for_exit"]

#: How often :func:`wait_for_exit` looks where no pidfd can wait for the process (not Linux, or an old kernel).
POLL_INTERVAL: Final = 0.5

_TICKS: Final = os.sysconf("SC_CLK_TCK") if hasattr(os, "sysconf") else 100


def process_start_time(pid: int) -> float:
    """Seconds after boot at which ``pid`` started (0.0 if unknown); raises ``ProcessLookupError`` if it is gone."""
    return _stat(pid)[0]


def _stat(pid: int) -> tuple[float, bool]:
    """``pid``'s start time (as :func:`process_start_time`) and whether it is a zombie (``False`` if unknown)."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            stat = f.read()
    except FileNotFoundError:
        if os.path.isdir("/proc/self"):
            raise ProcessLookupError(pid) from None
        _signal_zero(pid)
        return 0.0, False
    except OSError:  # not permitted, or no descriptor free right now (EMFILE): the start time is unknown
        _signal_zero(pid)
        return 0.0, False
    # The command name (field 2) is in parentheses and may contain spaces or parentheses: split after the last ")".
    fields = stat[stat.rindex(b")") + 2 :].split()
    return int(fields[19]) / _TICKS, fields[0] == b"Z"


def process_alive(pid: int, start_time: float = 0.0) -> bool:
    """Whether process ``pid`` exists and, if ``start_time`` is known, is the process that started then."""
    if pid <= 0:
        return False
    try:
        started, zombie = _stat(pid)
    except ProcessLookupError:
        return False
    if zombie:
        return False
    if start_time and started and abs(started - start_time) > 0.05:
        return False  # the pid was reused by a newer process
    try:
        _signal_zero(pid)
    except ProcessLookupError:
        return False
    return True


async def wait_for_exit(pid: int, still_running: Callable[[], bool] | None = None) -> None:
    """Return once process ``pid`` has exited (at once if there is none), with Trio.

    Waits on a pidfd where the system has them, else polls every :data:`POLL_INTERVAL`. ``still_running`` says
    whether ``pid`` is still the process meant (default: :func:`process_alive`); it is asked once the pidfd is open,
    so a pid reused before that is not waited on.
    """
    import trio  # here, so that the liveness check itself stays importable without Trio (the harness hooks)

    running = still_running or (lambda: process_alive(pid))
    try:
        pidfd: int | None = os.pidfd_open(pid) if hasattr(os, "pidfd_open") else None
    except ProcessLookupError:
        return
    except OSError:  # ENOSYS on an old kernel, EPERM in some sandboxes: poll instead
        pidfd = None
    if pidfd is not None:
        try:
            if running():
                await trio.lowlevel.wait_readable(pidfd)
        finally:
            trio.lowlevel.notify_closing(pidfd)
            os.close(pidfd)
        return
    while running():  # noqa: ASYNC110 - another process: no event to wait on without a pidfd
        await trio.sleep(POLL_INTERVAL)


def _signal_zero(pid: int) -> None:
    with contextlib.suppress(PermissionError):  # exists, owned by another user: alive
        os.kill(pid, 0)
