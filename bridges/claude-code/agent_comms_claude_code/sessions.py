"""Where a hook finds the bridge of its Claude Code session (shared by the bridge and the hook program).

Every bridge process writes a *registration* ``<AGENT_COMMS_HOME>/claude-code/<bridge pid>.json`` (directory 0700,
file 0600) naming the Unix socket it serves for hooks, the Claude Code process that started it, Claude Code's
session id (``CLAUDE_CODE_SESSION_ID`` in the server's environment), the working directory and the agent.

A hook serves one session, and only the bridge of that session may answer it: two sessions in one directory are
two Claude Code processes, each with its own bridge. Claude Code starts both the MCP server and the hooks of a
session, so a hook finds its bridge by its nearest ancestors (:data:`LINEAGE_DEPTH` of them: Claude Code may run
the hook through a shell): the bridge whose Claude Code process is one of them. Failing that (the bridge was
started through a wrapper, so its parent is not Claude Code), the bridge registered under the ``session_id`` of
the hook's input. Nothing else: never the bridge of another session, not even in the same directory. A hook whose
bridge is not registered yet finds nothing (and says nothing, or waits for it: see
:mod:`agent_comms_claude_code.hook`). Registrations of processes that are gone are skipped and removed.

Everything here is checked as the mesh checks its home (:mod:`agent_comms.private_files`): the home and this folder
must be this user's and closed to others, registrations regular files of this user, sockets sockets of this user;
anything else raises :class:`~agent_comms.private_files.UnsafePathError`.

The protocol on the socket is one JSON object per line; see :mod:`agent_comms_claude_code.hub`.

Stdlib only (and platformdirs): the hook program imports this on every prompt and tool call.
"""

from __future__ import annotations

import contextlib
import json
import os
import subprocess
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any, Final

from agent_comms.liveness import process_alive
from agent_comms.private_files import (
    check_private_dir,
    ensure_private_dir,
    read_private_file,
    write_private_file,
)

__all__ = [
    "LINEAGE_DEPTH",
    "SUBDIR",
    "agent_comms_home",
    "alive",
    "ancestors",
    "find_registration",
    "hook_sessions_dir",
    "registrations",
    "sessions_dir",
    "write_registration",
]

#: The folder under ``AGENT_COMMS_HOME`` that holds the registrations (and, when the path is short enough, sockets).
SUBDIR: Final = "claude-code"
#: Longest Unix socket path we bind (``sun_path`` is 104 bytes on macOS, 108 on Linux, including the NUL).
MAX_SOCKET_PATH: Final = 100
#: How many of a hook's nearest ancestors may be its Claude Code process (Claude Code, or a shell it started).
#: Further up are the terminal, the shell and, for a session started inside another session, the outer Claude
#: Code: a hook must not reach that one's bridge.
LINEAGE_DEPTH: Final = 3


def agent_comms_home(environ: Mapping[str, str] | None = None) -> Path:
    """``AGENT_COMMS_HOME``, by the rule of :meth:`agent_comms.mesh.settings.MeshSettings.from_env` (not imported
    here: importing ``agent_comms`` costs the hook about 100 ms, on every tool call)."""
    env = os.environ if environ is None else environ
    raw = env.get("AGENT_COMMS_HOME", "").strip()
    if raw:
        return Path(raw).expanduser()
    import platformdirs

    return Path(platformdirs.user_state_dir("agent-comms", appauthor=False))


def sessions_dir(home: Path) -> Path:
    """The folder of the registrations."""
    return home / SUBDIR


def hook_sessions_dir(home: Path) -> Path | None:
    """The folder of the registrations, as a hook may use it: ``None`` if there is none (no bridge ever ran);
    :class:`~agent_comms.private_files.UnsafePathError` if the home or the folder is not this user's alone."""
    try:
        check_private_dir(home, follow=True)
        directory = sessions_dir(home)
        check_private_dir(directory)
    except FileNotFoundError:
        return None
    return directory


def write_registration(directory: Path, pid: int, record: Mapping[str, Any]) -> Path:
    """Write the registration of bridge ``pid`` (0600, atomically) in ``directory``, under the home (both created
    0700 if missing, checked as the mesh checks its home); its path."""
    ensure_private_dir(directory.parent, follow=True)
    ensure_private_dir(directory)
    path = directory / f"{pid}.json"
    write_private_file(path, json.dumps(dict(record)).encode())
    return path


def alive(pid: int) -> bool:
    """Whether process ``pid`` exists (:func:`~agent_comms.liveness.process_alive`; EPERM: someone else's,
    alive)."""
    return process_alive(pid)


def _parent_of(pid: int) -> int | None:
    try:
        with open(f"/proc/{pid}/stat", encoding="utf-8", errors="replace") as handle:
            return int(handle.read().rsplit(")", 1)[1].split()[1])
    except FileNotFoundError:
        return None
    except (OSError, ValueError, IndexError):
        pass
    try:  # no /proc: ask ps
        found = subprocess.run(["ps", "-o", "ppid=", "-p", str(pid)], capture_output=True, text=True, timeout=5)
        return int(found.stdout.strip())
    except (OSError, ValueError, subprocess.SubprocessError):
        return None


def ancestors(pid: int | None = None, limit: int = 12) -> list[int]:
    """The parent of ``pid`` (default: this process), its parent, and so on, nearest first, init excluded."""
    found: list[int] = []
    current = os.getpid() if pid is None else pid
    parent: int | None = os.getppid() if pid is None else _parent_of(current)
    while parent is not None and parent > 1 and len(found) < limit and parent not in found:
        found.append(parent)
        parent = _parent_of(parent)
    return found


def registrations(directory: Path) -> Iterator[dict[str, Any]]:
    """The registrations of live bridges in ``directory``; those of dead ones are removed on the way.

    :class:`~agent_comms.private_files.UnsafePathError` for a registration that is not this user's file alone.
    """
    try:
        paths = sorted(directory.glob("*.json"))
    except OSError:
        return
    for path in paths:
        try:
            record = json.loads(read_private_file(path))
            pid = int(record["pid"])
        except (OSError, ValueError, KeyError, TypeError):
            continue
        if not alive(pid):  # a bridge that was killed: its registration, and its socket if it is ours to remove
            with contextlib.suppress(OSError, TypeError):
                socket = Path(record.get("socket", ""))
                if socket.parent == directory:
                    socket.unlink()
            with contextlib.suppress(OSError):
                path.unlink()
            continue
        yield record


def find_registration(
    directory: Path, *, lineage: list[int], session_id: str | None, cwd: str | None
) -> dict[str, Any] | None:
    """The registration of the bridge of the session whose hook has the ancestors ``lineage`` (nearest first) and
    the ``session_id``; ``None`` if that bridge is not registered (see the module doc: never another session's).

    Several bridges of one Claude Code process (two servers configured, or a test playing Claude Code) are told
    apart by session id, then working directory ``cwd``, then the newest wins.
    """
    records = list(registrations(directory))
    for pid in lineage[:LINEAGE_DEPTH]:
        mine = [record for record in records if record.get("harness_pid") == pid]
        if mine:
            return _pick(mine, session_id, cwd)
    if session_id:
        same = [record for record in records if record.get("session_id") == session_id]
        if same:
            return _pick(same, None, cwd)
    return None


def _pick(records: list[dict[str, Any]], session_id: str | None, cwd: str | None) -> dict[str, Any]:
    for key, value in (("session_id", session_id), ("cwd", cwd)):
        narrowed = [record for record in records if value and record.get(key) == value]
        if narrowed:
            records = narrowed
    return max(records, key=lambda record: float(record.get("started", 0)))
