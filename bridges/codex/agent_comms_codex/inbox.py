"""The inbox file: what a running Codex bridge has waiting for its agent, for the Codex hooks to announce.

A Codex hook is a short-lived process that Codex starts at points of its loop (a session starts, the user submits
a prompt, a tool call finished, the turn is about to stop); it cannot reach into the bridge process. So the bridge
keeps one small JSON file up to date, ``<AGENT_COMMS_HOME>/codex/inbox-<bridge pid>.json``, listing the events
waiting for its agent (written atomically each time the list changes, removed when the bridge ends), and the hooks
read it. A hook never takes events: the model still reads them with its next ``agent_comms`` call, which is what
marks them read. Only the standard library is imported here (a hook must start fast).

A hook reads only the inbox of the bridge of its own Codex session (:func:`find_inbox`), and only if the home,
the ``codex`` folder and the file are this user's alone (the mesh's checks of ``AGENT_COMMS_HOME``,
:mod:`agent_comms.private_files`); the bridge writes the file 0600 through a new temporary file.

The file (version 1)::

    {"version": 1, "pid": 4242, "harness_pid": 4200, "agent_id": "codex-1a2b3c4d5e", "name": "codex-web",
     "cwd": "/home/me/web", "updated": 1767000000.0, "waiting": 3,
     "events": [{"id": "...", "type": "dm", "streaming": "steer", "line": "[DM from ...] ..."}]}

``events`` lists at most :data:`MAX_LISTED` of the ``waiting`` events, oldest first.
"""

from __future__ import annotations

import contextlib
import json
import os
from collections.abc import Iterable, Mapping, Sequence
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
    "MAX_LISTED",
    "VERSION",
    "Inbox",
    "find_inbox",
    "inbox_dir",
    "inbox_path",
    "mesh_home",
    "read_inbox",
    "remove_inbox",
    "write_inbox",
]

VERSION: Final = 1
#: Events listed in the file at most (``waiting`` still counts them all).
MAX_LISTED: Final = 20
#: How many of a hook's nearest ancestors may be its Codex process (Codex, or a shell it started). Further up are
#: the terminal, the shell and, for a session started inside another session, the outer Codex: a hook must not
#: reach that one's bridge.
LINEAGE_DEPTH: Final = 3

Inbox = dict[str, Any]


def mesh_home(environ: Mapping[str, str] | None = None) -> Path:
    """``AGENT_COMMS_HOME``, else the per-user state directory (as :class:`agent_comms.mesh.settings.MeshSettings`)."""
    env = os.environ if environ is None else environ
    raw = env.get("AGENT_COMMS_HOME", "").strip()
    if raw:
        return Path(raw).expanduser()
    import platformdirs

    return Path(platformdirs.user_state_dir("agent-comms", appauthor=False))


def inbox_dir(environ: Mapping[str, str] | None = None) -> Path:
    """The directory of the inbox files."""
    return mesh_home(environ) / "codex"


def inbox_path(pid: int, environ: Mapping[str, str] | None = None) -> Path:
    """The inbox file of the bridge process ``pid``."""
    return inbox_dir(environ) / f"inbox-{pid}.json"


def write_inbox(path: Path, inbox: Inbox) -> None:
    """Write ``inbox`` to ``path`` atomically (a reader sees the old file or the new one), mode 0600, in a folder
    of this user's alone, in the home (both created 0700 if missing; checked as the mesh checks its home:
    :class:`~agent_comms.private_files.UnsafePathError` if another user could reach them)."""
    ensure_private_dir(path.parent.parent, follow=True)
    ensure_private_dir(path.parent)
    write_private_file(path, json.dumps(inbox, ensure_ascii=False).encode())


def remove_inbox(path: Path) -> None:
    """Remove the inbox file (the bridge is ending)."""
    with contextlib.suppress(OSError):
        path.unlink()


def read_inbox(path: Path) -> Inbox | None:
    """The inbox in ``path``; ``None`` if it is missing, unreadable, of another version or not an object;
    :class:`~agent_comms.private_files.UnsafePathError` if it is not this user's file alone."""
    try:
        data = json.loads(read_private_file(path))
    except (OSError, ValueError):
        return None
    if not isinstance(data, dict) or data.get("version") != VERSION or not isinstance(data.get("events"), list):
        return None
    return data


def _alive(pid: object) -> bool:
    """Whether ``pid`` (as read from a file: any JSON value) names a live process."""
    return isinstance(pid, int) and not isinstance(pid, bool) and process_alive(pid)


def _ancestors(pid: int) -> list[int]:
    """``pid`` and its ancestors, nearest first (Linux ``/proc``; elsewhere only ``pid`` and its parent)."""
    chain = [pid]
    current = pid
    for _ in range(64):
        try:
            stat = Path(f"/proc/{current}/stat").read_text()
            parent = int(stat.rsplit(")", 1)[1].split()[1])
        except (OSError, ValueError, IndexError):
            if current == os.getpid():
                chain.append(os.getppid())
            break
        if parent <= 1 or parent in chain:
            break
        chain.append(parent)
        current = parent
    return chain


def _same_dir(a: object, b: str) -> bool:
    if not isinstance(a, str) or not a:
        return False
    try:
        return os.path.realpath(a) == os.path.realpath(b)
    except (OSError, ValueError):
        return False


def find_inbox(
    cwd: str, *, environ: Mapping[str, str] | None = None, ancestors: Sequence[int] | None = None
) -> Inbox | None:
    """The inbox of the bridge serving the Codex session that runs this hook, or ``None`` if it has none (yet).

    A bridge serves the session of the Codex process that started it (its harness): candidates are the inboxes of
    live bridges started in the session's working directory ``cwd`` (a bridge's agent is tied to its directory)
    whose harness is this hook process or one of its :data:`LINEAGE_DEPTH` nearest ancestors (``ancestors``,
    nearest first, this process included: by default read from the system). Never the bridge of another session,
    even in the same directory. Among several (a test playing Codex), the one updated last. Files of bridges that
    are gone are removed on the way.

    :class:`~agent_comms.private_files.UnsafePathError` if the home, its ``codex`` folder or an inbox file is not
    this user's alone: nothing is read from them.
    """
    home = mesh_home(environ)
    directory = inbox_dir(environ)
    try:
        check_private_dir(home, follow=True)
        check_private_dir(directory)
        paths: Iterable[Path] = list(directory.glob("inbox-*.json"))
    except FileNotFoundError:
        return None  # no bridge ever ran here
    lineage = list(_ancestors(os.getpid()) if ancestors is None else ancestors)[: LINEAGE_DEPTH + 1]
    best: float | None = None
    found: Inbox | None = None
    for path in paths:
        inbox = read_inbox(path)
        if inbox is None:
            continue
        if not _alive(inbox.get("pid")):
            remove_inbox(path)  # a bridge that crashed left it behind
            continue
        if inbox.get("harness_pid") not in lineage or not _same_dir(inbox.get("cwd"), cwd):
            continue  # another session's bridge
        updated = inbox.get("updated")
        rank = float(updated) if isinstance(updated, int | float) else 0.0
        if best is None or rank > best:
            best, found = rank, inbox
    return found
