"""Text from other agents, made safe to show to a person's terminal or to a model: :func:`display`.

Every surface that shows something another agent chose (message content, names, room descriptions, statuses,
tags, reasons, working directories: the chat, the one-shot commands, the tool's results, the delivery events the
bridges push, the hooks' context) passes it through :func:`display`, so that content cannot act on a terminal or
pass for a line of the mesh:

* A line break (each one Python's :meth:`str.splitlines` knows: ``\\n``, ``\\r\\n``, ``\\r``, ``\\v``, ``\\f``,
  ``\\x1c``-``\\x1e``, ``\\x85``, U+2028, U+2029) becomes ``\\n`` followed by :data:`CONTINUATION` (``"  | "``).
  Every line that content adds starts with the marker, and no line the mesh writes does (a name never starts with
  a space, see ``inline``), so a reader tells them apart: a line that starts with ``"  | "`` continues the message
  above it, even when its own text starts with the marker again. A single-line text gains nothing.
* Other control characters are shown, not sent: C0 as ``^X`` (ESC as ``^[``), DEL, C1 (``\\x9b`` is a CSI on some
  terminals) and lone surrogates as ``\\uXXXX`` (``\\UXXXXXXXX`` beyond U+FFFF). Tab stays in message text.
* Invisible format characters (Unicode category Cf) are shown as ``\\uXXXX`` too: the bidirectional controls
  (U+202E and its kin reorder what a line shows), zero-width spaces, word joiners, U+FEFF, and the tag characters
  (U+E0000-U+E007F, which a model reads as hidden ASCII). Message text keeps the zero-width joiner and non-joiner
  (U+200D, U+200C), which emoji and some scripts need.
* ``inline`` (names, ids, statuses, tags, paths: text that belongs inside one line) also shows line breaks, tabs,
  and the joiners as ``\\uXXXX`` or ``^X``, so that two names that look the same are the same text; and a leading
  space, so that no name at the start of a line passes for the marker.

JSON output is left alone: it escapes by itself, and scripts get the exact text.
"""

from __future__ import annotations

import unicodedata
from typing import Final

__all__ = ["CONTINUATION", "display"]

#: What starts each continuation line of a multi-line text.
CONTINUATION: Final = "  | "

#: Invisible format characters that message text keeps: emoji sequences and some scripts need the joiners.
_JOINERS: Final = frozenset("\u200c\u200d")
#: What message text keeps although :meth:`str.isprintable` says no.
_KEPT: Final = _JOINERS | {"\t"}


def _escaped(char: str) -> str:
    code = ord(char)
    if code < 32:
        return "^" + chr(code + 64)
    return f"\\u{code:04x}" if code <= 0xFFFF else f"\\U{code:08x}"


def _shown(char: str, inline: bool) -> bool:
    """Whether ``char`` (not a line break, in message text) is shown as itself."""
    if char == "\t" or char in _JOINERS:
        return not inline
    return unicodedata.category(char) not in ("Cc", "Cs", "Cf", "Zl", "Zp")


def display(text: str, *, inline: bool = False) -> str:
    """``text`` from another agent as it may be shown: control characters escaped, continuation lines marked.

    ``inline``: the text belongs inside a line (a name, a status, a tag), so line breaks are escaped too instead of
    starting a marked continuation line. See the module's documentation for the rules.
    """
    if inline:
        if text.isprintable() and not text[:1].isspace():
            return text  # the common case: nothing to change
        shown = "".join(char if _shown(char, True) else _escaped(char) for char in text)
        # A name may start a line: a leading space is shown as an escape, so no name passes for the marker.
        return _escaped(shown[0]) + shown[1:] if shown[:1].isspace() else shown
    if text.isprintable() or all(char.isprintable() or char in _KEPT for char in text):
        return text
    lines = [
        line if line.isprintable() else "".join(char if _shown(char, False) else _escaped(char) for char in line)
        for line in text.splitlines()
    ]
    return ("\n" + CONTINUATION).join(lines)
