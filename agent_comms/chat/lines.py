"""What the chat shows: :class:`Line` values, and text from the mesh made safe for a terminal."""

from __future__ import annotations

import datetime as dt
from typing import Literal

import attrs

from agent_comms.display import display

__all__ = ["Kind", "Line", "clean", "clean_name", "clock"]

#: How a line is shown: ``message`` (a room message), ``dm``, ``mine`` (what the person sent, when echoed),
#: ``info`` (a command's answer), ``error``, ``event`` (room changes, invites), ``presence``, ``receipt``.
Kind = Literal["message", "dm", "mine", "info", "error", "event", "presence", "receipt"]


@attrs.frozen
class Line:
    """One line (or a few, for multi-line text) to show the person."""

    kind: Kind
    text: str


def clean(text: str) -> str:
    """Text from the mesh, safe for a terminal (:func:`agent_comms.display.display`): control characters shown as
    ``^X``/``\\uXXXX``, each further line of a multi-line text marked with ``"  | "``."""
    return display(text)


def clean_name(text: str) -> str:
    """A name, id or status from the mesh, safe inside a line: line breaks and invisible characters escaped too."""
    return display(text, inline=True)


def clock(milliseconds: int) -> str:
    """``HH:MM`` local time of an epoch-milliseconds stamp (0: now)."""
    if milliseconds <= 0:
        return dt.datetime.now().strftime("%H:%M")
    return dt.datetime.fromtimestamp(milliseconds / 1000).strftime("%H:%M")
