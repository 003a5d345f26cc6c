"""What the fields of an operation may hold: the one home of the rules that peers and the local tool apply.

Two layers, both checked by :func:`check_body` before an operation is made:

1. **Wire types.** A peer decodes everything it receives with one typed decoder (:mod:`.framing`) over the structs
   of :mod:`.ops`: a field outside its type (a status that is not ``active``, ``idle`` or ``busy``, a tag that is
   not a string, ...) makes the whole frame malformed, and the link that carried it is closed; since anti-entropy
   offers the operation again, the link would be closed again at every round. An operation made locally never
   passes a decoder (encoding does not check), so :func:`check_body` decodes the body with the decoder of the same
   type (:data:`~.ops.Body`) and refuses what a peer would refuse. A body must also fit in a frame
   (:data:`MAX_BODY_BYTES`), or peers would refuse the frame as oversized.
2. **Text rules.** What an agent may write in the fields it authors: agent and room names, tags, a room's
   description, a reason, a message and the id it replies to (:func:`name_problem`, :func:`text_problem`,
   :func:`content_problem`, :func:`tags_problem`). Peers do not refuse these on arrival (what older peers made
   keeps flowing), so they hold because every operation is checked where it is made: by :func:`check_body`, which
   the store applies to every operation it submits, and by the tool's parameter checks
   (:mod:`agent_comms.actions`), which call the same predicates.

The checks are pure (no I/O, no clock), like the rest of the protocol package.
"""

from __future__ import annotations

import re
import unicodedata
from typing import Final

import msgspec

from .framing import DEFAULT_MAX_FRAME
from .ops import AgentUpsert, Body, DirectMessage, Membership, RoomCreate, RoomMessage

__all__ = [
    "MAX_BODY_BYTES",
    "MAX_CONTENT",
    "MAX_DESCRIPTION",
    "MAX_NAME",
    "MAX_REASON",
    "MAX_REFERENCE",
    "MAX_TAGS",
    "InvalidField",
    "check_body",
    "content_problem",
    "name_problem",
    "tags_problem",
    "text_problem",
]

#: Longest agent or room name (and tag), in characters.
MAX_NAME: Final = 64
#: Longest message, in characters (a tool result the model must read should stay readable too).
MAX_CONTENT: Final = 32_000
#: Most tags an agent may carry.
MAX_TAGS: Final = 16
#: Longest reason of a decline, a leave or a kick, in characters.
MAX_REASON: Final = 500
#: Longest room description, in characters.
MAX_DESCRIPTION: Final = 500
#: Longest message id a message may reply to, in characters.
MAX_REFERENCE: Final = 200
#: Largest encoded body: with its envelope it fits in one frame, whatever else shares the frame's budget.
MAX_BODY_BYTES: Final = DEFAULT_MAX_FRAME // 2

_DECODER: Final = msgspec.msgpack.Decoder(Body)
_PATH: Final = re.compile(r" - at `\$\[(\d+)\]")


class InvalidField(ValueError):
    """A body's ``field`` holds what peers would refuse, or what an agent may not write there (``problem``)."""

    def __init__(self, field: str, problem: str) -> None:
        super().__init__(f"invalid {field!r}: {problem}")
        self.field = field
        self.problem = problem


def _unprintable(value: str, allowed: str = "") -> bool:
    return any(unicodedata.category(c) == "Cc" and c not in allowed for c in value)


def name_problem(value: str) -> str | None:
    """What is wrong with ``value`` as an agent name, room name or tag (``None``: nothing): 1 to :data:`MAX_NAME`
    characters, no control or line-breaking characters, no surrounding spaces."""
    if not value.strip():
        return "must not be empty"
    if len(value) > MAX_NAME:
        return f"{len(value)} characters long; at most {MAX_NAME} are allowed"
    if value != value.strip() or any(unicodedata.category(c)[0] in "CZ" and c != " " for c in value):
        return "may not contain control or line-breaking characters or surrounding spaces"
    return None


def text_problem(value: str, limit: int) -> str | None:
    """What is wrong with ``value`` as a short free text (a description, a reason): at most ``limit`` characters,
    no control characters but newlines and tabs."""
    if len(value) > limit:
        return f"{len(value)} characters long; at most {limit} are allowed"
    if _unprintable(value, "\n\t"):
        return "contains control characters"
    return None


def content_problem(value: str) -> str | None:
    """What is wrong with ``value`` as a message: not blank, at most :data:`MAX_CONTENT` characters, no NUL (any
    other text is shown escaped, see :mod:`agent_comms.display`)."""
    if not value.strip():
        return "must not be empty"
    if len(value) > MAX_CONTENT:
        return f"{len(value)} characters long; at most {MAX_CONTENT} are allowed"
    if "\x00" in value:
        return "contains a NUL character"
    return None


def tags_problem(value: tuple[str, ...]) -> str | None:
    """What is wrong with ``value`` as an agent's tags: at most :data:`MAX_TAGS`, each one a valid name."""
    if len(value) > MAX_TAGS:
        return f"{len(value)} tags; at most {MAX_TAGS} are allowed"
    for tag in value:
        problem = name_problem(tag)
        if problem is not None:
            return f"tag {tag!r}: {problem}"
    return None


def _reference_problem(value: str) -> str | None:
    if len(value) > MAX_REFERENCE:
        return f"{len(value)} characters long; at most {MAX_REFERENCE} are allowed"
    return "contains control characters" if _unprintable(value) else None


def check_body(body: Body) -> None:
    """Raise :class:`InvalidField` if a peer would refuse ``body`` (layer 1) or an agent may not write it (layer 2).

    Layer 1 is checked by decoding the body as every peer decodes it; the field is named from the decoder's
    complaint.
    """
    encoded = msgspec.msgpack.encode(body)
    try:
        _DECODER.decode(encoded)
    except msgspec.ValidationError as exc:
        match = _PATH.search(str(exc))
        fields = type(body).__struct_fields__
        # array_like and tagged: element 0 is the tag, element i + 1 is field i.
        index = int(match.group(1)) - 1 if match else -1
        field = fields[index] if 0 <= index < len(fields) else type(body).__name__
        raise InvalidField(field, str(exc).split(" - at ")[0]) from None
    if len(encoded) > MAX_BODY_BYTES:
        raise InvalidField(type(body).__name__, f"{len(encoded)} bytes encoded; at most {MAX_BODY_BYTES} fit a frame")
    for field, problem in _text_problems(body):
        if problem is not None:
            raise InvalidField(field, problem)


def _text_problems(body: Body) -> list[tuple[str, str | None]]:
    if isinstance(body, AgentUpsert):
        return [("name", name_problem(body.name)), ("tags", tags_problem(body.tags))]
    if isinstance(body, RoomCreate):
        return [("name", name_problem(body.name)), ("description", text_problem(body.description, MAX_DESCRIPTION))]
    if isinstance(body, Membership):
        return [("reason", text_problem(body.reason, MAX_REASON))]
    if isinstance(body, RoomMessage | DirectMessage):
        return [("content", content_problem(body.content)), ("reply_to", _reference_problem(body.reply_to))]
    return []
