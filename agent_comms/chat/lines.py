"""What the chat shows: :class:`Line` values, and text from the mesh made safe for a terminal."""

from __future__ import annotations

import datetime as dt
import unicodedata
from typing import Literal

import attrs

__all__ = ["Kind", "Line", "clean", "clock"]

#: How a line is shown: ``message`` (a room message), ``dm``, ``mine`` (what the person sent, when echoed),
#: ``info`` (a command's answer), ``error``, ``event`` (room changes, invites), ``presence``, ``receipt``.
Kind = Literal["message", "dm", "mine", "info", "error", "event", "presence", "receipt"]


@attrs.frozen
class Line:
    """One line (or a few, for multi-line text) to show the person."""

    kind: Kind
    text: str


def clean(text: str) -> str:
    """Text from the mesh, safe for a terminal: control characters (escape sequences!) shown as ``^X``/``\\uXXXX``."""
    out = []
    for char in text:
        if char in "\n\t" or unicodedata.category(char) != "Cc":
            out.append(char)
        elif ord(char) < 32:
            out.append("^" + chr(ord(char) + 64))
        else:
            out.append(f"\\u{ord(char):04x}")
    return "".join(out)


def clock(milliseconds: int) -> str:
    """``HH:MM`` local time of an epoch-milliseconds stamp (0: now)."""
    if milliseconds <= 0:
        return dt.datetime.now().strftime("%H:%M")
    return dt.datetime.fromtimestamp(milliseconds / 1000).strftime("%H:%M")
