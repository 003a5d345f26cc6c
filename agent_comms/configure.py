"""Helpers for the setup hooks of bridge plugins: the command a harness starts, and safe configuration edits.

A bridge's ``configure`` / ``remove`` setup hooks use these so that every harness is configured
the same careful way: the bridge command names this installation's ``agent-comms`` by absolute path (a harness
started from a desktop launcher has no virtualenv on its ``PATH``), every edit is written atomically with the
file's mode kept (through a symbolic link: its target is edited, the link stays), a backup of the previous contents
is made before the first byte changes, and nothing is written when nothing changes (so running setup twice
changes nothing the second time). Backups and temporary files are created with mode 0600, refusing to follow or
overwrite anything already at their path, before any byte is written (:mod:`agent_comms.private_files`): a
configuration file may hold tokens.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import time
from collections.abc import Mapping, Sequence
from pathlib import Path

from agent_comms.private_files import copy_private, write_private_file

__all__ = [
    "BACKUP_SUFFIX",
    "agent_comms_executable",
    "backup",
    "bridge_command",
    "harness_env",
    "run_harness_cli",
    "write_config",
]

#: Backups are written next to the file as ``<name>.agent-comms-backup-<UTC timestamp>``.
BACKUP_SUFFIX = ".agent-comms-backup-"


def agent_comms_executable() -> str:
    """The absolute path of the ``agent-comms`` program of this installation (falls back to ``PATH``)."""
    beside = Path(sys.executable).parent / "agent-comms"
    if beside.exists():
        return str(beside)
    found = shutil.which("agent-comms")
    return found if found is not None else "agent-comms"


def bridge_command(harness: str, *extra: str) -> list[str]:
    """The command line a harness runs to start its bridge: ``[<abs>/agent-comms, "bridge", harness, *extra]``."""
    return [agent_comms_executable(), "bridge", harness, *extra]


def backup(path: Path) -> Path | None:
    """Copy ``path`` to a new timestamped backup beside it, mode 0600 from its creation; the backup's path, or
    ``None`` if no file. A name already taken (by anything, a dangling link too) is skipped, never followed."""
    if not path.exists():
        return None
    stamp = time.strftime("%Y%m%dT%H%M%SZ", time.gmtime())
    target = path.with_name(f"{path.name}{BACKUP_SUFFIX}{stamp}")
    counter = 1
    while True:
        try:
            copy_private(path, target)
        except FileExistsError:
            counter += 1
            target = path.with_name(f"{path.name}{BACKUP_SUFFIX}{stamp}-{counter}")
            continue
        return target


def write_config(path: Path, text: str, *, dry_run: bool = False, mode: int = 0o600) -> bool:
    """Write ``text`` to ``path`` if it differs from what is there; whether it differed.

    Backs the old file up first (:func:`backup`), writes a new temporary file beside it (mode 0600 until written,
    under an unpredictable name) and renames it into place (a crash never leaves half a file), keeps an existing
    file's permission bits (``mode`` for a new file) and creates missing parent directories. With ``dry_run`` only
    reports whether a write would happen.

    A symbolic link (a dotfiles manager's) is written through: the file it points to is edited (its backup and
    temporary file beside it), and the link stays.
    """
    if path.is_symlink():
        path = Path(os.path.realpath(path))
    try:
        current: str | None = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        current = None
    if current == text:
        return False
    if dry_run:
        return True
    data = text.encode("utf-8")
    path.parent.mkdir(parents=True, exist_ok=True)
    keep_mode = path.stat().st_mode & 0o7777 if current is not None else mode
    if current is not None:
        backup(path)
    write_private_file(path, data, mode=keep_mode)
    return True


def harness_env(home: Path, extra: Mapping[str, str] | None = None) -> dict[str, str]:
    """The environment to run a harness's own CLI for the user whose home is ``home`` (``HOME`` set to it)."""
    env = dict(os.environ)
    env["HOME"] = str(home)
    # Harnesses that honour XDG paths must look under this home, not the caller's.
    for variable in ("XDG_CONFIG_HOME", "XDG_DATA_HOME", "XDG_STATE_HOME", "XDG_CACHE_HOME"):
        env.pop(variable, None)
    if extra:
        env.update(extra)
    return env


def run_harness_cli(
    argv: Sequence[str], home: Path, *, timeout: float = 60.0, extra_env: Mapping[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    """Run a harness's CLI (e.g. ``claude mcp add ...``) for ``home``, never reading the keyboard; its result.

    Standard input is ``/dev/null`` so the CLI cannot prompt; output is captured as text. Raises
    :class:`FileNotFoundError` if the program is missing and :class:`subprocess.TimeoutExpired` after ``timeout``.
    """
    return subprocess.run(
        list(argv),
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        timeout=timeout,
        env=harness_env(home, extra_env),
        check=False,
    )
