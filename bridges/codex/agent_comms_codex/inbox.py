"""The inbox file: what a running Codex bridge has waiting for its agent, for the Codex hooks to announce.

A Codex hook is a short-lived process that Codex starts at points of its loop (a session starts, the user submits
a prompt, a tool call finished, the turn is about to stop); it cannot reach into the bridge process. So the bridge
keeps one small JSON file up to date, ``<AGENT_COMMS_HOME>/codex/inbox-<bridge pid>.json``, listing the events
waiting for its agent (written atomically each time the list changes, removed when the bridge ends), and the hooks
read it. A hook never takes events: the model still reads them with its next ``agent_comms`` call, which is what
marks them read. Only the standard library is imported here (a hook must start fast).

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

__all__ = [
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
    """Write ``inbox`` to ``path`` atomically (a reader sees the old file or the new one), mode 0600."""
    path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    temporary = path.with_name(f".{path.name}.tmp")
    fd = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w", encoding="utf-8") as handle:
        json.dump(inbox, handle, ensure_ascii=False)
    os.replace(temporary, path)


def remove_inbox(path: Path) -> None:
    """Remove the inbox file (the bridge is ending)."""
    with contextlib.suppress(OSError):
        path.unlink()


def read_inbox(path: Path) -> Inbox | None:
    """The inbox in ``path``; ``None`` if it is missing, unreadable, of another version or not an object."""
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    if not isinstance(data, dict) or data.get("version") != VERSION or not isinstance(data.get("events"), list):
        return None
    return data


def _alive(pid: object) -> bool:
    if not isinstance(pid, int) or pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


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
    """The inbox of the bridge serving the Codex session that runs this hook, or ``None``.

    Candidates are the inboxes of live bridges started in the session's working directory ``cwd`` (a bridge's
    agent is tied to its directory). Among them the bridge whose harness (its parent, Codex) is an ancestor of this
    hook process wins; else the one updated last. Files of bridges that are gone are removed on the way.
    """
    directory = inbox_dir(environ)
    try:
        paths: Iterable[Path] = list(directory.glob("inbox-*.json"))
    except OSError:
        return None
    lineage = set(_ancestors(os.getpid()) if ancestors is None else ancestors)
    best: tuple[bool, float] | None = None
    found: Inbox | None = None
    for path in paths:
        inbox = read_inbox(path)
        if inbox is None:
            continue
        if not _alive(inbox.get("pid")):
            remove_inbox(path)  # a bridge that crashed left it behind
            continue
        if not _same_dir(inbox.get("cwd"), cwd):
            continue
        updated = inbox.get("updated")
        rank = (inbox.get("harness_pid") in lineage, float(updated) if isinstance(updated, int | float) else 0.0)
        if best is None or rank > best:
            best, found = rank, inbox
    return found
