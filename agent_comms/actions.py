"""Untrusted tool parameters in, typed actions out.

The model calls one tool, ``agent_comms``, with a flat object: ``action`` plus whichever of ``name, visibility,
tags, status, room, type, description, target, content, agent, since, replyTo, reason, streamingBehavior`` the
action needs (the original's names, so existing prompts carry over). :func:`build_action` turns that object into
one of the action classes below (each field's type check worked out once per class, then the class's own
validators), or raises :class:`~agent_comms.errors.CommsError` with code
``INVALID_PARAMS`` and a message naming the offending field. It never guesses: an unknown action, an unknown
parameter, a wrong type, a missing field or a value out of range is an error, not a different action.

This module is the one home of the tool's actions: a class each (its fields are its parameters, its ``about`` what
it does), listed in :data:`ACTIONS` and the :data:`Action` union. The bridges' schema and tool description are
generated from it (:mod:`agent_comms.tool_schema`); :meth:`agent_comms.tool.CommsTool._run` executes each action,
and the type checker holds it to every member of the union.

The rules for what names, tags, descriptions, reasons and messages may hold live in
:mod:`agent_comms.protocol.fields`, with the check the store applies to every operation it makes: what passes here
is never refused there, nor by a peer.
"""

from __future__ import annotations

import typing
from collections.abc import Callable, Mapping
from typing import Any, ClassVar, Final, Literal

import attrs

from .errors import CommsError, ErrorCode
from .protocol.fields import (
    MAX_CONTENT,
    MAX_DESCRIPTION,
    MAX_NAME,
    MAX_REASON,
    MAX_TAGS,
    content_problem,
    name_problem,
    tags_problem,
    text_problem,
)
from .protocol.ops import MembershipAction

__all__ = [
    "ACTIONS",
    "ALIASES",
    "MAX_CONTENT",
    "MAX_DESCRIPTION",
    "MAX_NAME",
    "MAX_REASON",
    "MAX_TAGS",
    "PARAMETERS",
    "PARAMETER_HELP",
    "READ_ROOM_DEFAULT",
    "Action",
    "CreateRoom",
    "DeclineInvite",
    "DestroyRoom",
    "Dm",
    "Invite",
    "JoinRoom",
    "Kick",
    "LeaveRoom",
    "ListAgents",
    "ListRooms",
    "ReadRoom",
    "Register",
    "Send",
    "Update",
    "WhoAmI",
    "build_action",
    "parameter_of",
]

#: Parameter names of the contract -> field names of the action classes (and of the operations), and back.
_RENAMES: Final = {"replyTo": "reply_to", "streamingBehavior": "streaming"}
_PARAM: Final = {v: k for k, v in _RENAMES.items()}
#: Fields of the operations the tool makes that a parameter of another name supplies, by operation: (operation
#: class name, field) -> parameter. Every other field is the parameter of its name (:data:`_RENAMES` aside).
_OPERATION_PARAMETERS: Final = {
    ("RoomCreate", "name"): "room",
    ("RoomCreate", "room_type"): "type",
    ("Membership", "room_id"): "room",
    ("Membership", "subject"): "agent",
    ("RoomMessage", "room_id"): "target",
    ("DirectMessage", "recipient"): "target",
}


def parameter_of(operation: str, field: str) -> str:
    """The tool parameter that supplies ``field`` of the operation class named ``operation`` (to name it when the
    operation is refused: :meth:`agent_comms.store.MeshStore.check`)."""
    return _OPERATION_PARAMETERS.get((operation, field)) or _PARAM.get(field, field)


Visibility = Literal["visible", "hidden", "ghost"]
Status = Literal["active", "idle", "busy"]
RoomKind = Literal["public", "private", "secret"]
Streaming = Literal["steer", "followUp", "info"]

#: Messages ``read_room`` shows without ``since``.
READ_ROOM_DEFAULT: Final = 50

#: Every parameter the tool accepts, in the contract's order (the JSON Schema of the bridges lists the same:
#: :mod:`agent_comms.tool_schema` generates it from this module).
PARAMETERS: Final = (
    "action",
    "name",
    "visibility",
    "tags",
    "status",
    "room",
    "type",
    "description",
    "target",
    "content",
    "agent",
    "since",
    "replyTo",
    "reason",
    "streamingBehavior",
)


def _invalid(attribute: attrs.Attribute[Any], problem: str) -> ValueError:
    return ValueError(f"invalid '{_PARAM.get(attribute.name, attribute.name)}': {problem}")


def _text(limit: int) -> Any:
    def check(_instance: object, attribute: attrs.Attribute[Any], value: object) -> None:
        problem = text_problem(value, limit) if isinstance(value, str) else None  # the converter reports a type
        if problem is not None:
            raise _invalid(attribute, problem)

    return check


def _name(_instance: object, attribute: attrs.Attribute[Any], value: object) -> None:
    problem = name_problem(value) if isinstance(value, str) else None
    if problem is not None:
        raise _invalid(attribute, problem)


def _content(_instance: object, attribute: attrs.Attribute[Any], value: object) -> None:
    problem = content_problem(value) if isinstance(value, str) else None
    if problem is not None:
        raise _invalid(attribute, problem)


def _tags(_instance: object, attribute: attrs.Attribute[Any], value: object) -> None:
    problem = tags_problem(value) if isinstance(value, tuple) else None
    if problem is not None:
        raise _invalid(attribute, problem)


#: What each parameter means, for the model (:mod:`agent_comms.tool_schema` prefixes the actions that take it).
PARAMETER_HELP: Final[dict[str, str]] = {
    "action": "What to do (see the tool description for the parameters each action takes).",
    "name": "your agent name, as others see it.",
    "visibility": "visible (listed; the default), hidden (not listed, reachable by DM by id, in member lists for "
    "members only), ghost (not listed, no DMs, in no member list).",
    "tags": 'labels for yourself, e.g. ["reviewer", "python"].',
    "status": "your status; the members of your rooms are told.",
    "room": "the room's name, without '#'.",
    "type": "public (anyone may join; the default), private (invite only), secret (invite only, and listed only to "
    "its members).",
    "description": "what the room is for.",
    "target": "the room's name (send) or the agent's name or id (dm).",
    "content": "the message text.",
    "agent": "the agent's name or id.",
    "since": "only the messages after this one: a message id, an ISO 8601 time, or epoch milliseconds.",
    "replyTo": "the id of the message you are replying to.",
    "reason": "why (the room's owner sees it).",
    "streamingBehavior": "what the recipient should do: steer (act on it now; the default for dm), followUp (when "
    "idle; the default for send), info (no action needed).",
}

#: The JSON Schema limits of a field, kept beside its validator (``attrs`` metadata, read by the schema).
_NAME_LIMITS: Final = {"minLength": 1, "maxLength": MAX_NAME}


def _name_field() -> Any:
    return attrs.field(validator=_name, metadata=_NAME_LIMITS)


def _text_field(limit: int) -> Any:
    return attrs.field(default="", validator=_text(limit), metadata={"maxLength": limit})


def _content_field() -> Any:
    return attrs.field(validator=_content, metadata={"minLength": 1, "maxLength": MAX_CONTENT})


_TAGS_LIMITS: Final = {"items": {"type": "string", **_NAME_LIMITS}, "maxItems": MAX_TAGS}


@attrs.frozen
class Register:
    """Join the mesh under ``name`` (or rename)."""

    about: ClassVar[str] = "join the mesh under a name, or rename yourself"

    name: str = _name_field()
    visibility: Visibility = "visible"
    tags: tuple[str, ...] = attrs.field(default=(), validator=_tags, metadata=_TAGS_LIMITS)


@attrs.frozen
class Update:
    """Change name, visibility, status or tags (at least one)."""

    about: ClassVar[str] = "change your name, visibility, status or tags (at least one of them)"

    name: str | None = attrs.field(default=None, validator=attrs.validators.optional(_name), metadata=_NAME_LIMITS)
    visibility: Visibility | None = None
    status: Status | None = None
    tags: tuple[str, ...] | None = attrs.field(
        default=None, validator=attrs.validators.optional(_tags), metadata=_TAGS_LIMITS
    )


@attrs.frozen
class WhoAmI:
    """Who this agent is."""

    about: ClassVar[str] = "who you are: name (id), status, visibility, rooms"


@attrs.frozen
class ListAgents:
    """The agents others can see."""

    about: ClassVar[str] = "the agents online (hidden and ghost agents are not listed)"


@attrs.frozen
class CreateRoom:
    """Create a room; the creator joins and owns it."""

    about: ClassVar[str] = "create a room; you join it and own it"

    room: str = _name_field()
    type: RoomKind = "public"
    description: str = _text_field(MAX_DESCRIPTION)


@attrs.frozen
class ListRooms:
    """The rooms this agent can see."""

    about: ClassVar[str] = "the rooms you can see; [joined] marks yours, [invited] your invites"


@attrs.frozen
class JoinRoom:
    """Join a room (private and secret rooms need an invite)."""

    about: ClassVar[str] = "join a room; private and secret rooms need an invite"

    room: str = _name_field()


@attrs.frozen
class LeaveRoom:
    """Leave a room."""

    about: ClassVar[str] = "leave a room"

    room: str = _name_field()


@attrs.frozen
class Send:
    """Post to a room this agent is a member of."""

    about: ClassVar[str] = "post to a room you are in"

    target: str = _name_field()
    content: str = _content_field()
    reply_to: str | None = None
    streaming: Streaming = "followUp"


@attrs.frozen
class Dm:
    """Send a direct message to an agent."""

    about: ClassVar[str] = "a direct message to an agent"

    target: str = _name_field()
    content: str = _content_field()
    reply_to: str | None = None
    streaming: Streaming = "steer"


@attrs.frozen
class ReadRoom:
    """Read a room's history (``since``: a message id, or a time in ISO 8601 or epoch milliseconds)."""

    about: ClassVar[str] = f"a room's history: the last {READ_ROOM_DEFAULT} messages, or those after since"

    room: str = _name_field()
    since: str | int | None = None


@attrs.frozen
class Invite:
    """Invite an agent to a room (the owner's right: ``owner_action``)."""

    about: ClassVar[str] = "invite an agent to your room"
    owner_action: ClassVar[MembershipAction] = "invite"

    room: str = _name_field()
    agent: str = _name_field()


@attrs.frozen
class DeclineInvite:
    """Turn down an invite; the owner is told."""

    about: ClassVar[str] = "turn an invite down; the owner is told"

    room: str = _name_field()
    reason: str = _text_field(MAX_REASON)


@attrs.frozen
class Kick:
    """Remove an agent from a room (the owner's right: ``owner_action``)."""

    about: ClassVar[str] = "remove an agent from your room; it is told"
    owner_action: ClassVar[MembershipAction] = "kick"

    room: str = _name_field()
    agent: str = _name_field()


@attrs.frozen
class DestroyRoom:
    """End a room (the owner's right: ``owner_action``); members are told."""

    about: ClassVar[str] = "end your room; its members are told"
    owner_action: ClassVar[MembershipAction] = "destroy"

    room: str = _name_field()


Action = (
    Register
    | Update
    | WhoAmI
    | ListAgents
    | CreateRoom
    | ListRooms
    | JoinRoom
    | LeaveRoom
    | Send
    | Dm
    | ReadRoom
    | Invite
    | DeclineInvite
    | Kick
    | DestroyRoom
)

#: Every action by its contract name, in the contract's order. A class's ``about`` says what it does (the tool
#: description shows it; an ``owner_action`` class is marked as the owner's, from
#: :data:`~agent_comms.protocol.ops.ACTIONS_BY_OWNER`), its attrs fields are its parameters.
ACTIONS: Final[dict[str, type[Action]]] = {
    "register": Register,
    "update": Update,
    "whoami": WhoAmI,
    "list_agents": ListAgents,
    "create_room": CreateRoom,
    "list_rooms": ListRooms,
    "join_room": JoinRoom,
    "leave_room": LeaveRoom,
    "send": Send,
    "dm": Dm,
    "read_room": ReadRoom,
    "invite": Invite,
    "decline_invite": DeclineInvite,
    "kick": Kick,
    "destroy_room": DestroyRoom,
}

#: The original's aliases: ``send`` takes ``room`` in place of ``target``; ``dm`` takes ``agent``.
ALIASES: Final[dict[type[Action], tuple[str, str]]] = {Send: ("room", "target"), Dm: ("agent", "target")}


class _Invalid(TypeError):
    """A value of the wrong type or outside its allowed set (message ready for the model)."""


def _unicode(value: str) -> str:
    """``value`` if it is text that can be sent (UTF-8); a lone surrogate (from a JSON ``\\ud800`` escape) cannot."""
    try:
        value.encode("utf-8")
    except UnicodeEncodeError as exc:
        raise _Invalid(f"not valid Unicode text (a lone surrogate at character {exc.start})") from None
    return value


def _kind(value: object) -> str:
    names = {bool: "a boolean", int: "a number", float: "a number", list: "a list", dict: "an object"}
    return "null" if value is None else names.get(type(value), type(value).__name__)


def _strict_str(value: object) -> str:
    if not isinstance(value, str):
        raise _Invalid(f"expected a string, got {_kind(value)}")
    return _unicode(value)


def _strict_tags(value: object) -> tuple[str, ...]:
    if not isinstance(value, list | tuple) or not all(isinstance(v, str) for v in value):
        raise _Invalid(f"expected a list of strings, got {_kind(value)}")
    return tuple(_unicode(v) for v in value)


def _since(value: object) -> str | int | None:
    if isinstance(value, str):
        return _unicode(value)
    if value is None or (isinstance(value, int) and not isinstance(value, bool)):
        return value
    raise _Invalid(f"expected a message id or a time, got {_kind(value)}")


def _literal(allowed: tuple[str, ...]) -> Callable[[object], object]:
    def check(value: object) -> object:
        if value not in allowed or not isinstance(value, str):
            raise _Invalid(f"must be one of {', '.join(map(repr, allowed))}, not {value!r}")
        return value

    return check


def _converter_for(type_: object) -> Callable[[object], object]:
    """How a value given for a field of type ``type_`` is checked and converted (``None`` was dropped before)."""
    args = typing.get_args(type_)
    if len(args) == 2 and type(None) in args and type_ != (str | int | None):
        type_ = next(a for a in args if a is not type(None))  # optional: the value given is never None here
    if type_ is str:
        return _strict_str
    if type_ == tuple[str, ...]:
        return _strict_tags
    if type_ == (str | int | None):
        return _since
    if typing.get_origin(type_) is Literal:
        return _literal(typing.get_args(type_))
    raise TypeError(f"no converter for {type_!r}")  # a new field type: teach this module about it


@attrs.frozen
class _Shape:
    """What :func:`build_action` needs of an action class, worked out once: its fields in order, each with its
    converter, and the fields without a default."""

    converters: tuple[tuple[str, Callable[[object], object]], ...]
    required: tuple[str, ...]


def _shape(cls: type[Action]) -> _Shape:
    fields = attrs.fields(cls)
    hints = typing.get_type_hints(cls)
    return _Shape(
        converters=tuple((f.name, _converter_for(hints[f.name])) for f in fields),
        required=tuple(f.name for f in fields if f.default is attrs.NOTHING),
    )


_KNOWN: Final = frozenset(PARAMETERS)
#: Each action class's shape, by class.
_SHAPES: Final[dict[type[Action], _Shape]] = {cls: _shape(cls) for cls in ACTIONS.values()}


def build_action(params: Mapping[str, object]) -> Action:
    """Structure the tool's parameters into an action, or raise ``CommsError(INVALID_PARAMS, ...)``."""
    if not isinstance(params, Mapping):
        raise CommsError(ErrorCode.INVALID_PARAMS, "the parameters must be an object")
    extra = params.keys() - _KNOWN
    if extra:
        first = sorted(str(k) for k in extra)[0]
        raise CommsError(ErrorCode.INVALID_PARAMS, f"unknown parameter {first!r}; known: {', '.join(PARAMETERS)}")
    action = params.get("action")
    if action is None:
        raise CommsError(ErrorCode.INVALID_PARAMS, "missing 'action'; one of: " + ", ".join(ACTIONS))
    if not isinstance(action, str) or action not in ACTIONS:
        raise CommsError(ErrorCode.INVALID_PARAMS, f"unknown action {action!r}; one of: " + ", ".join(ACTIONS))
    cls = ACTIONS[action]
    data = {_RENAMES.get(k, k): v for k, v in params.items() if k != "action" and v is not None}
    # The original's aliases (ALIASES). Errors name what was given.
    alias = None
    if cls in ALIASES:
        other, canonical = ALIASES[cls]
        if canonical not in data and other in data:
            data[canonical], alias = data.pop(other), other
        if canonical not in data:
            raise CommsError(ErrorCode.INVALID_PARAMS, f"missing '{canonical}' (or '{other}') for action '{action}'")
    shape = _SHAPES[cls]
    for name in shape.required:
        if name not in data:
            raise CommsError(ErrorCode.INVALID_PARAMS, f"missing '{_PARAM.get(name, name)}' for action '{action}'")
    # Types first, every field in the class's order (the first wrong one is reported), then the attrs validators
    # (limits, characters) in the same order, as the class is built.
    values: dict[str, object] = {}
    try:
        for name, convert in shape.converters:
            if name in data:
                try:
                    values[name] = convert(data[name])
                except _Invalid as exc:
                    raise ValueError(f"invalid '{_PARAM.get(name, name)}': {exc}") from None
        built: Action = cls(**values)  # type: ignore[arg-type]
    except ValueError as exc:
        message = str(exc)
        if alias is not None:
            message = message.replace(f"invalid '{ALIASES[cls][1]}'", f"invalid '{alias}'")
        raise CommsError(ErrorCode.INVALID_PARAMS, message) from None
    if isinstance(built, Update) and all(getattr(built, f) is None for f in ("name", "visibility", "status", "tags")):
        raise CommsError(
            ErrorCode.INVALID_PARAMS, "update needs at least one of 'name', 'visibility', 'status', 'tags'"
        )
    return built
