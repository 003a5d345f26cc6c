"""The Codex hooks: ``agent-comms-codex hook EVENT`` tells the model that agent-comms messages are waiting.

Codex runs a command hook with one JSON object on stdin (``session_id``, ``cwd``, ``hook_event_name``, ``model``,
``turn_id`` and the event's own fields, e.g. ``tool_name`` for ``PostToolUse``, ``stop_hook_active`` for ``Stop``)
and reads one JSON object from its stdout. The hook finds the inbox file of the bridge serving that session
(:func:`agent_comms_codex.inbox.find_inbox`) and answers:

* ``SessionStart``: ``hookSpecificOutput.additionalContext`` saying who the agent is on the mesh, and what waits
  (Codex starts the bridge at the same moment, so this hook waits up to :data:`SESSION_START_WAIT` for it, then
  introduces the tool without the agent's name);
* ``UserPromptSubmit``: ``additionalContext`` listing the events waiting, if any;
* ``PostToolUse`` (any tool but ``agent_comms`` itself, whose result already carries the events):
  ``additionalContext`` listing the events that arrived since the last notice of this session;
* ``Stop``: when a DM or room message that asks for action (``streamingBehavior`` steer or followUp) arrived and was
  not announced yet, ``{"decision": "block", "reason": ...}``, which makes Codex continue the turn with the reason as
  its next prompt instead of going idle. Never when ``stop_hook_active`` (Codex is already continuing because of a
  Stop hook), so a session cannot loop.

Only the bridge of the hook's own Codex session counts (:func:`~agent_comms_codex.inbox.find_inbox`), never another
session's in the same directory; before it is up the hooks say nothing (SessionStart waits for it a moment, see
above). A home or ``codex`` folder or inbox file that is not this user's alone (the mesh's checks of
``AGENT_COMMS_HOME``) is refused: a message on stderr and nothing for the model.

Nothing to say is an empty stdout and exit 0 (Codex carries on). A hook never takes the events: the model reads them
with its next ``agent_comms`` call, which marks them read. Which events were announced to which session is kept in
``<AGENT_COMMS_HOME>/codex/notified-<session>.json`` so the same event is not announced twice. Any failure is
reported on stderr and the hook exits 0 with no output: a broken hook must never block the user's session.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import sys
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Final

from agent_comms.display import display
from agent_comms.private_files import ensure_private_dir, read_private_file, write_private_file
from agent_comms_codex.inbox import Inbox, find_inbox, inbox_dir

__all__ = ["EVENTS", "INTRO", "OUR_TOOLS", "SESSION_START_WAIT", "handle", "main", "notice"]

#: The Codex hook events this package installs (each without a matcher: every source, every tool).
EVENTS: Final = ("SessionStart", "UserPromptSubmit", "PostToolUse", "Stop")
#: Tool names under which Codex reports calls of our own tool (``mcp__<server>__<tool>``).
OUR_TOOLS: Final = ("mcp__agent-comms__agent_comms", "agent_comms")
#: How long the SessionStart hook waits for the bridge Codex is starting (seconds; Codex's hook timeout is 10).
SESSION_START_WAIT: Final = 3.0
#: What SessionStart says when the bridge is not up yet.
INTRO: Final = (
    "agent-comms: the agent_comms tool talks with the other coding agents on this machine (list_agents, rooms, send, "
    "dm). Messages for you come appended to agent_comms results; call it with action whoami to see who you are."
)
#: Lines of events shown in one notice at most.
MAX_SHOWN: Final = 10
_LINE: Final = 300
_REMEMBERED: Final = 500
#: A session's record of announced events is removed after this long without a notice (seconds).
FORGET_AFTER: Final = 7 * 24 * 3600
_ACTIONABLE: Final = ("dm", "room_message")


def _short(line: str) -> str:
    flat = " ".join(line.split())
    # The bridge wrote the line through agent_comms.display; shown again here, since the file is read from disk.
    return display(flat if len(flat) <= _LINE else flat[: _LINE - 1] + "…")


def notice(inbox: Inbox, events: list[dict[str, Any]], *, intro: bool = False) -> str:
    """The text for the model: who it is (with ``intro``), and ``events`` (waiting, not yet read)."""
    who = display(f"{inbox.get('name')} ({inbox.get('agent_id')})", inline=True)
    lines: list[str] = []
    if intro:
        lines.append(f"agent-comms: you are on the agent-comms mesh as {who}. " + INTRO.removeprefix("agent-comms: "))
    waiting = int(inbox.get("waiting") or 0)
    if events:
        more = waiting - len(events[:MAX_SHOWN])
        lines.append(
            f"agent-comms: {len(events)} new event(s) for {who} are waiting ({waiting} in all). Call the agent_comms "
            "tool (action whoami) to read them; they count as read only then:"
        )
        lines += [f"- {_short(str(event.get('line', '')))}" for event in events[:MAX_SHOWN]]
        if more > 0:
            lines.append(f"- ... and {more} more")
    return "\n".join(lines)


def _seen_path(session_id: str, environ: Mapping[str, str] | None) -> Path:
    digest = hashlib.sha256(session_id.encode()).hexdigest()[:16]
    return inbox_dir(environ) / f"notified-{digest}.json"


def _load_seen(path: Path) -> list[str]:
    try:
        data = json.loads(read_private_file(path))
    except (OSError, ValueError):
        return []
    return [item for item in data if isinstance(item, str)] if isinstance(data, list) else []


def _save_seen(path: Path, seen: list[str]) -> None:
    with contextlib.suppress(OSError):
        _forget_old_sessions(path.parent)
        ensure_private_dir(path.parent)
        write_private_file(path, json.dumps(seen[-_REMEMBERED:]).encode())


def _forget_old_sessions(directory: Path) -> None:
    """Remove the notice records of sessions not seen for :data:`FORGET_AFTER` seconds."""
    cutoff = time.time() - FORGET_AFTER
    for old in directory.glob("notified-*.json"):
        with contextlib.suppress(OSError):
            if old.stat().st_mtime < cutoff:
                old.unlink()


def _context(event_name: str, text: str) -> dict[str, Any]:
    return {"hookSpecificOutput": {"hookEventName": event_name, "additionalContext": text}}


def handle(
    event_name: str, payload: Mapping[str, Any], *, environ: Mapping[str, str] | None = None
) -> dict[str, Any] | None:
    """The JSON answer to Codex for the hook ``event_name`` given ``payload``; ``None``: nothing to say."""
    cwd = payload.get("cwd")
    if not isinstance(cwd, str) or not cwd:
        raise ValueError("the hook input has no 'cwd'")
    if event_name == "PostToolUse" and payload.get("tool_name") in OUR_TOOLS:
        return None  # its result already carried the events
    inbox = find_inbox(cwd, environ=environ)
    if inbox is None and event_name == "SessionStart":
        # Codex starts its MCP servers and runs SessionStart at the same time; the bridge needs a moment to join.
        deadline = time.monotonic() + SESSION_START_WAIT
        while inbox is None and time.monotonic() < deadline:
            time.sleep(0.1)
            inbox = find_inbox(cwd, environ=environ)
        if inbox is None:  # still starting (a loaded machine): introduce the tool without the agent's name
            return _context(event_name, INTRO)
    if inbox is None:
        return None
    events = [event for event in inbox["events"] if isinstance(event, dict) and isinstance(event.get("id"), str)]
    session = payload.get("session_id")
    seen_path = _seen_path(session if isinstance(session, str) and session else cwd, environ)
    seen = _load_seen(seen_path)
    new = [event for event in events if event["id"] not in seen]
    answer: dict[str, Any] | None = None
    if event_name == "SessionStart":
        answer = _context(event_name, notice(inbox, events, intro=True))
        new = events
    elif event_name == "UserPromptSubmit":
        if events:  # a new turn: everything waiting, announced or not
            answer = _context(event_name, notice(inbox, events))
            new = events
    elif event_name == "PostToolUse":
        if new:
            answer = _context(event_name, notice(inbox, new))
    elif event_name == "Stop":
        wake = [e for e in new if e.get("type") in _ACTIONABLE and e.get("streaming") in ("steer", "followUp")]
        if wake and payload.get("stop_hook_active") is not True:
            answer = {"decision": "block", "reason": notice(inbox, new)}
        else:
            new = []  # not announced: a later hook still may
    else:
        raise ValueError(f"unknown hook event {event_name!r} (expected one of: {', '.join(EVENTS)})")
    if new:
        _save_seen(seen_path, [*seen, *(event["id"] for event in new if event["id"] not in seen)])
    return answer


def main(argv: list[str]) -> int:
    """``agent-comms-codex hook EVENT``: read Codex's JSON from stdin, write the answer to stdout; always exit 0."""
    if len(argv) != 1 or argv[0] not in EVENTS:
        print(f"usage: agent-comms-codex hook {{{','.join(EVENTS)}}}  (Codex's hook JSON on stdin)", file=sys.stderr)
        return 2
    try:
        payload = json.loads(sys.stdin.read() or "{}")
        if not isinstance(payload, dict):
            raise ValueError("the hook input is not a JSON object")
        answer = handle(argv[0], payload)
    except Exception as exc:  # never break the user's session over a notice
        print(f"agent-comms-codex hook {argv[0]}: {type(exc).__name__}: {exc}", file=sys.stderr)
        return 0
    if answer is not None:
        sys.stdout.write(json.dumps(answer, ensure_ascii=False))
        sys.stdout.write("\n")
    return 0
