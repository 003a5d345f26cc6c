"""The launch's key and the one before it: what lets an open page resume after ``agent-comms web`` restarts.

Every launch makes a new token. A page keeps the token it was given, so after a restart (a crash, Ctrl-C and run
again) it would hold the previous launch's token. To let it reconnect by itself, each launch keeps its token in a
0600 file, ``web/key-PORT.json`` in ``AGENT_COMMS_HOME`` (``{"port": PORT, "token": ..., "alive": UNIX_SECONDS}``);
``alive`` is refreshed every :data:`ALIVE_EVERY` seconds while the launch runs and once more when it ends. The next
launch on the SAME port reads that file before replacing it with its own token and accepts the token in it, as the
"previous" generation, if and only if:

- the file is a regular file (not a link), owned by this user, of mode exactly 0600;
- it names the same port (inside the file, not only in its name) and holds a token of the launch's shape;
- its launch was alive less than :data:`RESUME_WINDOW` seconds ago (24 hours; a launch killed without notice is
  counted from its last refresh, so at most :data:`ALIVE_EVERY` seconds early), and not more than a minute ahead
  of the clock.

Anything else is ignored (never an error: the page then says its session ended, and the new link opens a new one).
Only one generation back is kept: a page that authenticated with the previous token is sent the current one over
the proved socket (:mod:`~agent_comms.web.handshake`) and keeps it instead, so it can resume after the next restart
too; a page two launches old is refused.
"""

from __future__ import annotations

import json
import os
import re
import secrets
import stat
import time
from pathlib import Path
from typing import Final

import attrs

from agent_comms.private_files import PRIVATE_MODE, ensure_private_dir, write_private_file

__all__ = ["ALIVE_EVERY", "RESUME_WINDOW", "Keys", "key_file_path", "new_token", "read_previous", "write_key_file"]

#: Seconds after its launch was last alive that a previous launch's token is still accepted (24 hours).
RESUME_WINDOW: Final = 24 * 3600
#: Seconds between two refreshes of ``alive`` in the key file while a launch runs.
ALIVE_EVERY: Final = 600
#: A token as made by :func:`new_token`: 32 random bytes, base64url without padding.
_TOKEN: Final = re.compile(r"[A-Za-z0-9_-]{43}")
#: Seconds a key file's ``alive`` may lie ahead of the clock (a clock set back a little).
_CLOCK_SLACK: Final = 60
#: The largest key file read (bytes).
_MAX_FILE: Final = 4096


def new_token() -> str:
    """A launch's fresh token (32 random bytes, base64url)."""
    return secrets.token_urlsafe(32)


@attrs.define
class Keys:
    """The tokens a page may prove: the launch's own, and the previous launch's (``None`` if not accepted)."""

    current: str
    previous: str | None = None


def key_file_path(home: Path, port: int) -> Path:
    """The 0600 file in which the launch serving on ``port`` keeps its token."""
    return home / "web" / f"key-{port}.json"


def read_previous(home: Path, port: int, now: float | None = None) -> str | None:
    """The token of the previous launch on ``port``, if its key file passes every check above; else ``None``."""
    path = key_file_path(home, port)
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC)
    except OSError:  # missing, a link, unreadable
        return None
    try:
        info = os.fstat(fd)
        if (
            not stat.S_ISREG(info.st_mode)
            or info.st_uid != os.getuid()
            or stat.S_IMODE(info.st_mode) != PRIVATE_MODE
            or info.st_size > _MAX_FILE
        ):
            return None
        data = os.read(fd, _MAX_FILE)
    except OSError:
        return None
    finally:
        os.close(fd)
    try:
        record = json.loads(data)
    except ValueError:
        return None
    if not isinstance(record, dict):
        return None
    token, alive, named = record.get("token"), record.get("alive"), record.get("port")
    if type(named) is not int or named != port or not isinstance(token, str) or not _TOKEN.fullmatch(token):
        return None
    if not isinstance(alive, int | float) or isinstance(alive, bool):
        return None
    age = (time.time() if now is None else now) - alive
    if not -_CLOCK_SLACK <= age < RESUME_WINDOW:  # too old, or ahead of the clock (beyond a small slack)
        return None
    return token


def write_key_file(home: Path, port: int, token: str) -> None:
    """Write (atomically, mode 0600) the key file of the launch on ``port``, alive as of now."""
    path = key_file_path(home, port)
    ensure_private_dir(path.parent)
    write_private_file(path, json.dumps({"port": port, "token": token, "alive": time.time()}).encode())
