"""``agent-comms-claude-code-hook``: the command of the plugin's hooks; brings waiting messages into the session.

Claude Code runs it with the hook's input as JSON on stdin (``session_id``, ``cwd``, ``hook_event_name``, and per
event ``prompt``, ``tool_name``...). It finds the bridge of its session (:mod:`agent_comms_claude_code.sessions`),
asks it for the waiting events (:mod:`agent_comms_claude_code.hub` describes the protocol) and answers Claude Code:

* ``UserPromptSubmit``, ``PostToolUse``: ``{"hookSpecificOutput": {"hookEventName": ..., "additionalContext":
  <the events>}}`` on stdout, exit 0 (nothing at all when nothing is waiting);
* ``Stop`` (configured with ``asyncRewake``: Claude Code runs it in the background and, when it exits with code 2,
  wakes the idle model with its stderr): waits until a message that asks for action arrives, writes the events to
  stderr and exits 2; exits 0 without output when the session got busy again, a newer Stop hook took over, or the
  bridge ended. Not in a session that is not interactive (``CLAUDE_CODE_ENTRYPOINT`` other than ``cli``, as in
  ``claude -p``, which would wait for it; ``AGENT_COMMS_CLAUDE_WAKE=on|off`` overrides): there the hook does not
  wait, and when a message that asks for action is already waiting it answers ``{"decision": "block", "reason":
  <the events>}`` on stdout, so Claude Code continues the turn once; never when ``stop_hook_active`` (the turn is
  already continuing because of a Stop hook), so it cannot loop.

The bridge counts the events as read only after this program confirms it wrote them. Only the bridge of this
hook's own session answers it, never another session's, even in the same directory (see
:mod:`agent_comms_claude_code.sessions`). A hook must never break the session: while its bridge is not up it
exits 0 silently (``PostToolUse`` at once: the events wait for the next hook or tool result). Claude Code starts
MCP servers beside the first turn, so while a bridge process of this session is starting (seen in ``/proc``)
``UserPromptSubmit`` waits for it up to :data:`PROMPT_WAIT` seconds (what was kept for the agent while it was away
then comes with the first prompt) and the Stop hook up to :data:`STARTUP_WAIT` (the interactive one always).
Bad input is reported on stderr with exit status 1 (a non-blocking error for Claude Code).
So is a home, registration folder, registration or socket that is not this user's alone (the mesh's checks of
``AGENT_COMMS_HOME``, :mod:`agent_comms.private_files`): the hook refuses it and adds nothing to the context.
Stdlib only, so it starts in a few tens of milliseconds.
"""

from __future__ import annotations

import json
import os
import socket
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Final, TextIO

from agent_comms.private_files import UnsafePathError, check_private_socket
from agent_comms_claude_code.sessions import (
    LINEAGE_DEPTH,
    agent_comms_home,
    ancestors,
    find_registration,
    hook_sessions_dir,
)

__all__ = ["CONTEXT_EVENTS", "PROMPT_WAIT", "STARTUP_WAIT", "WAKE_ENV", "main", "run"]

#: The events whose output carries ``additionalContext``.
CONTEXT_EVENTS: Final = ("UserPromptSubmit", "PostToolUse")
#: ``on`` / ``off``: whether the Stop hook waits to wake the session (default: only in interactive sessions).
WAKE_ENV: Final = "AGENT_COMMS_CLAUDE_WAKE"
_MAX_INPUT: Final = 32 << 20
_CONNECT_TIMEOUT: Final = 3.0
#: How long the Stop hook waits for the bridge of its session to start (seconds).
STARTUP_WAIT: Final = 30.0
#: How long the UserPromptSubmit hook waits for a bridge of its session that is starting (seconds).
PROMPT_WAIT: Final = 10.0
_EXIT_ERROR: Final = 1
_EXIT_WAKE: Final = 2


class _Connection:
    """One JSON-lines exchange with the bridge."""

    def __init__(self, path: str, timeout: float | None) -> None:
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.sock.settimeout(_CONNECT_TIMEOUT)
        self.sock.connect(path)
        self.sock.settimeout(timeout)
        self._buffer = b""

    def send(self, message: dict[str, Any]) -> None:
        self.sock.sendall(json.dumps(message).encode() + b"\n")

    def receive(self) -> dict[str, Any]:
        while b"\n" not in self._buffer:
            data = self.sock.recv(65536)
            if not data:
                raise ConnectionError("the bridge closed the connection")
            self._buffer += data
        line, _, self._buffer = self._buffer.partition(b"\n")
        answer = json.loads(line)
        if not isinstance(answer, dict):
            raise ConnectionError("the bridge sent something other than an object")
        return answer

    def close(self) -> None:
        self.sock.close()


def _interactive(environ: dict[str, str] | os._Environ[str]) -> bool:
    wanted = environ.get(WAKE_ENV, "").strip().lower()
    if wanted in ("on", "off"):
        return wanted == "on"
    return environ.get("CLAUDE_CODE_ENTRYPOINT") == "cli"


def _bridge_starting(lineage: list[int]) -> bool:
    """Whether a process of this session is an agent-comms bridge for Claude Code that is starting: a child of one
    of the hook's nearest ancestors whose command line names ``agent-comms-claude-code`` or ``bridge claude-code``,
    started less than :data:`STARTUP_WAIT` seconds ago (one that runs longer without registering never will: its
    hooks are refused, and it said why). Linux ``/proc``; elsewhere ``True``, so the hook waits."""
    sessions = set(lineage[:LINEAGE_DEPTH])
    try:
        entries = os.listdir("/proc")
        with open("/proc/uptime", encoding="ascii") as handle:
            uptime = float(handle.read().split()[0])
        ticks = os.sysconf("SC_CLK_TCK")
    except (OSError, ValueError):
        return True
    for entry in entries:
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat", encoding="utf-8", errors="replace") as handle:
                fields = handle.read().rsplit(")", 1)[1].split()
            # after the command: state, ppid, ...; starttime is field 22 of stat, the 20th after the command
            if int(fields[1]) not in sessions or uptime - int(fields[19]) / ticks > STARTUP_WAIT:
                continue
            with open(f"/proc/{entry}/cmdline", "rb") as handle:
                argv = [part.decode(errors="replace") for part in handle.read().split(b"\0")]
        except (OSError, ValueError, IndexError):
            continue
        names = [Path(part).name for part in argv]
        if "agent-comms-claude-code" in names or ("bridge" in argv and "claude-code" in argv):
            return True
    return False


def _find_bridge(payload: dict[str, Any], lineage: list[int], wait: float) -> dict[str, Any] | None:
    """The registration of this session's bridge, waiting up to ``wait`` seconds for it to appear (only while a
    bridge of this session is starting, when ``wait`` is not the interactive Stop hook's)."""
    session_id = payload.get("session_id")
    cwd = payload.get("cwd")
    deadline = time.monotonic() + wait
    home = agent_comms_home()
    while True:
        directory = hook_sessions_dir(home)
        if directory is not None:
            record = find_registration(
                directory,
                lineage=lineage,
                session_id=session_id if isinstance(session_id, str) else None,
                cwd=cwd if isinstance(cwd, str) else None,
            )
            if record is not None:
                return record
        if time.monotonic() >= deadline:
            return None  # this session has no agent-comms bridge (not configured, or not started yet)
        time.sleep(0.2)  # Claude Code starts the MCP server beside the first turn: the hook may come first


def run(payload: dict[str, Any], stdout: TextIO, stderr: TextIO) -> int:
    """Answer one hook call (``payload``: Claude Code's input); the exit status."""
    event = payload.get("hook_event_name")
    if event not in (*CONTEXT_EVENTS, "Stop"):
        return 0
    op = "take"
    wait = 0.0
    if event == "Stop":
        if _interactive(os.environ):
            op, wait = "wait", STARTUP_WAIT
        elif payload.get("stop_hook_active") is True:
            return 0  # the turn already continued once because of a Stop hook: end it (what waits stays unread)
        else:
            op = "check"
    lineage = ancestors()
    try:
        record = _find_bridge(payload, lineage, wait)
        if record is None and op == "check" and _bridge_starting(lineage):
            record = _find_bridge(payload, lineage, STARTUP_WAIT)
        elif record is None and event == "UserPromptSubmit" and _bridge_starting(lineage):
            # the first prompt: what was kept for the agent while it was away comes with it
            record = _find_bridge(payload, lineage, PROMPT_WAIT)
        if record is None:
            return 0
        socket_path = Path(str(record.get("socket", "")))
        check_private_socket(socket_path)
    except UnsafePathError as exc:
        stderr.write(f"agent-comms-claude-code-hook: {exc}\n")
        stderr.flush()
        return _EXIT_ERROR
    except OSError:
        return 0  # the bridge is ending (its socket is gone)
    try:
        connection = _Connection(str(socket_path), None if op == "wait" else _CONNECT_TIMEOUT)
    except OSError:
        return 0  # the bridge is ending
    try:
        connection.send({"op": op, "event": event, "session_id": payload.get("session_id")})
        answer = connection.receive()
        text = answer.get("text")
        if not answer.get("count") or not isinstance(text, str):
            return 0
        if op == "wait":
            stderr.write(text + "\n")
            stderr.flush()
        elif op == "check":
            stdout.write(json.dumps({"decision": "block", "reason": text}) + "\n")
            stdout.flush()
        else:
            output = {"hookSpecificOutput": {"hookEventName": event, "additionalContext": text}}
            stdout.write(json.dumps(output) + "\n")
            stdout.flush()
        connection.sock.settimeout(_CONNECT_TIMEOUT)
        connection.send({"op": "shown"})
        connection.receive()
    except (OSError, ValueError):
        return 0  # the bridge went away mid-way: whatever it gave us goes back to its queue
    finally:
        connection.close()
    return _EXIT_WAKE if op == "wait" else 0


def main(argv: Sequence[str] | None = None) -> int:
    """``agent-comms-claude-code-hook``: read the hook input from stdin, answer Claude Code; the exit status."""
    args = list(sys.argv[1:] if argv is None else argv)
    if args and args[0] in ("-h", "--help"):
        print(__doc__)
        return 0
    raw = sys.stdin.buffer.read(_MAX_INPUT + 1)
    if len(raw) > _MAX_INPUT:
        print("agent-comms-claude-code-hook: the hook input is too large", file=sys.stderr)
        return _EXIT_ERROR
    try:
        payload = json.loads(raw or b"null")
    except ValueError as exc:
        print(f"agent-comms-claude-code-hook: the hook input is not JSON: {exc}", file=sys.stderr)
        return _EXIT_ERROR
    if not isinstance(payload, dict):
        print("agent-comms-claude-code-hook: expected a JSON object with hook_event_name on stdin", file=sys.stderr)
        return _EXIT_ERROR
    return run(payload, sys.stdout, sys.stderr)


if __name__ == "__main__":
    sys.exit(main())
