"""Claude Code channels: the notification that pushes an event into a session, and whether Claude Code listens.

A channel is an MCP server that declares the experimental capability ``claude/channel`` and sends
``notifications/claude/channel`` with params ``{"content": str, "meta": {str: str}}``; Claude Code shows the model
``<channel source="<server>" key="value" ...>content</channel>``, each meta key an attribute (keys must be
identifiers: letters, digits and underscores, not starting with a digit; others are dropped).

Claude Code registers the listener only for servers named on its command line with
``--dangerously-load-development-channels server:<name>`` (or ``plugin:<name>@<marketplace>``) while channels are
a research preview; without that, notifications are dropped without a word, so a bridge that pushed anyway would
lose messages. :func:`channels_requested` therefore reads the command line of the Claude Code process.
"""

from __future__ import annotations

import os
import re
import subprocess
from collections.abc import Sequence
from typing import Final

from agent_comms.display import display
from agent_comms.events import DeliveryEvent, format_delivery_event

__all__ = [
    "CAPABILITY",
    "DEV_FLAG",
    "METHOD",
    "channel_params",
    "channels_requested",
    "parse_channel_flags",
    "process_argv",
    "wakes",
]

CAPABILITY: Final = "claude/channel"
METHOD: Final = "notifications/claude/channel"
#: The Claude Code flag that loads channels not on the approved allowlist (all self-hosted ones).
DEV_FLAG: Final = "--dangerously-load-development-channels"
_KEY: Final = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")


def wakes(event: DeliveryEvent) -> bool:
    """Whether ``event`` should reach an idle model at once: messages that ask for action, and invites."""
    if event.type in ("dm", "room_message"):
        return event.streaming != "info"
    return event.type == "room_invite"


def channel_params(event: DeliveryEvent) -> dict[str, object]:
    """The params of the ``notifications/claude/channel`` notification for ``event``."""
    meta = {
        "event_id": event.id,
        "type": event.type,
        "from": event.sender_name or event.sender,
        "from_id": event.sender,
        "room": event.room,
        "message_id": event.message_id,
        "reply_to": event.reply_to,
        "streaming": event.streaming if event.type in ("dm", "room_message") else "",
    }
    shown = {k: display(v, inline=True) for k, v in meta.items() if v and _KEY.match(k)}
    return {"content": format_delivery_event(event), "meta": shown}


def parse_channel_flags(argv: Sequence[str]) -> list[str]:
    """The entries given to :data:`DEV_FLAG` in a Claude Code command line (``server:x``, ``plugin:y@z``)."""
    entries: list[str] = []
    taking = False
    for arg in argv[1:]:
        if arg.startswith(DEV_FLAG + "="):
            entries += [part for part in arg.split("=", 1)[1].replace(",", " ").split() if part]
            taking = False
        elif arg == DEV_FLAG:
            taking = True
        elif arg.startswith("-"):
            taking = False
        elif taking:
            entries += [part for part in arg.replace(",", " ").split() if part]
    return entries


def channels_requested(argv: Sequence[str], server_name: str) -> bool:
    """Whether the Claude Code command line ``argv`` loads the channel of the server called ``server_name``."""
    for entry in parse_channel_flags(argv):
        kind, _, name = entry.partition(":")
        if kind == "server" and name == server_name:
            return True
        if kind == "plugin" and name.partition("@")[0] == server_name:
            return True
    return False


def process_argv(pid: int) -> list[str]:
    """The command line of process ``pid`` (empty if it cannot be read)."""
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as handle:
            raw = handle.read()
        return [part.decode(errors="replace") for part in raw.split(b"\0") if part]
    except OSError:
        pass
    try:  # no /proc (macOS, the BSDs): ps prints the arguments joined by spaces, enough to find the flag
        found = subprocess.run(
            ["ps", "-o", "command=", "-p", str(pid)], capture_output=True, text=True, timeout=5, check=False
        )
    except (OSError, subprocess.SubprocessError):
        return []
    return found.stdout.split()


def harness_pid(given: int | None) -> int:
    """The Claude Code process: ``--harness-pid`` if given, else the parent of this process."""
    return given if given is not None else os.getppid()
