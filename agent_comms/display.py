"""Text from other agents, made safe to show to a person's terminal or to a model: :func:`display`.

Every surface that shows something another agent chose (message content, names, room descriptions, statuses,
tags, reasons, working directories: the chat, the one-shot commands, the tool's results, the delivery events the
bridges push, the hooks' context) passes it through :func:`display`, so that content cannot act on a terminal or
pass for a line of the mesh:

* A line break (each one Python's :meth:`str.splitlines` knows: ``\\n``, ``\\r\\n``, ``\\r``, ``\\v``, ``\\f``,
  ``\\x1c``-``\\x1e``, ``\\x85``, U+2028, U+2029) becomes ``\\n`` followed by :data:`CONTINUATION` (``"  | "``).
  Every line that content adds starts with the marker, and no line the mesh writes does (names may not start with
  spaces), so a reader tells them apart: a line that starts with ``"  | "`` continues the message above it, even
  when its own text starts with the marker again. A single-line text gains nothing.
* Other control characters are shown, not sent: C0 as ``^X`` (ESC as ``^[``), DEL, C1 (``\\x9b`` is a CSI on some
  terminals) and lone surrogates as ``\\uXXXX``. Tab stays in message text.
* The bidirectional controls (U+061C, U+200E, U+200F, U+202A-U+202E, U+2066-U+2069), which reorder what a line
  shows, are shown as ``\\uXXXX`` too.
* ``inline`` (names, ids, statuses, tags, paths: text that belongs inside one line) also shows line breaks, tabs
  and every other invisible format character (zero-width spaces and joiners, U+FEFF...) as ``\\uXXXX`` or ``^X``,
  so that two names that look the same are not the same text.

JSON output is left alone: it escapes by itself, and scripts get the exact text.
"""

from __future__ import annotations

import unicodedata
from typing import Final

__all__ = ["CONTINUATION", "display"]

#: What starts each continuation line of a multi-line text.
CONTINUATION: Final = "  | "

#: Characters that reorder how a line is drawn (explicit embeddings, overrides, isolates and marks).
_BIDI: Final = frozenset("\u061c\u200e\u200f\u202a\u202b\u202c\u202d\u202e\u2066\u2067\u2068\u2069")
#: Line breaks, as :meth:`str.splitlines` knows them.
_BREAKS: Final = frozenset("\n\r\v\f\x1c\x1d\x1e\x85\u2028\u2029")


def _escaped(char: str) -> str:
    code = ord(char)
    return "^" + chr(code + 64) if code < 32 else f"\\u{code:04x}"


def _shown(char: str, inline: bool) -> bool:
    """Whether ``char`` (not a line break) is shown as itself."""
    if char in _BIDI:
        return False
    category = unicodedata.category(char)
    if char == "\t":
        return not inline
    if category in ("Cc", "Cs"):
        return False
    return not (inline and category in ("Cf", "Zl", "Zp"))


def display(text: str, *, inline: bool = False) -> str:
    """``text`` from another agent as it may be shown: control characters escaped, continuation lines marked.

    ``inline``: the text belongs inside a line (a name, a status, a tag), so line breaks are escaped too instead of
    starting a marked continuation line. See the module's documentation for the rules.
    """
    if text.isprintable() or (not inline and all(char == "\t" or char.isprintable() for char in text)):
        return text  # the common case: nothing to change
    if inline:
        return "".join(char if _shown(char, True) else _escaped(char) for char in text)
    lines = text.splitlines()
    if not lines:
        return ""
    shown = ["".join(char if _shown(char, False) else _escaped(char) for char in line) for line in lines]
    return ("\n" + CONTINUATION).join(shown)
