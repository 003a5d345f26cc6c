"""The ``agent_comms`` tool as bridges list it, generated from :mod:`agent_comms.actions`.

Every bridge shows the model the same tool: the JSON Schema of its parameters (:func:`input_schema`) and what each
action takes and does (:func:`usage`). Both are read off the action classes (their fields, types, limits and
``about``), :data:`~agent_comms.actions.PARAMETER_HELP` and :data:`~agent_comms.actions.ALIASES`, so an action added
there is listed by every bridge with nothing else to change. The bridges only word the tool's introduction for the
way they deliver messages.
"""

from __future__ import annotations

import copy
import functools
import typing
from typing import Any, Final, Literal

import attrs

from agent_comms.actions import ACTIONS, ALIASES, PARAMETER_HELP, PARAMETERS, Action
from agent_comms.protocol.ops import ACTIONS_BY_OWNER

__all__ = ["TOOL_NAME", "ActionUsage", "input_schema", "usage"]

#: The tool's name, in every bridge.
TOOL_NAME: Final = "agent_comms"

#: Field names of the action classes -> the contract's parameter names (where they differ).
_PARAMETER: Final = {"reply_to": "replyTo", "streaming": "streamingBehavior"}


@attrs.frozen
class ActionUsage:
    """One action as the tool description lists it: its ``name``, its ``parameters`` (``*``: required; an alias in
    parentheses) and what it does (``about``, ending in ``(owner only)`` for the room owner's actions)."""

    name: str
    parameters: str
    about: str


def usage() -> list[ActionUsage]:
    """Every action, in the contract's order."""
    rows = []
    for name, cls in ACTIONS.items():
        alias = ALIASES.get(cls)
        parameters = []
        for field in attrs.fields(cls):
            text = _PARAMETER.get(field.name, field.name)
            if field.default is attrs.NOTHING:
                text += "*"
            if alias is not None and field.name == alias[1]:
                text += f" (or {alias[0]})"
            parameters.append(text)
        about: str = getattr(cls, "about")  # noqa: B009 (a ClassVar every action class declares)
        if getattr(cls, "owner_action", None) in ACTIONS_BY_OWNER:
            about += " (owner only)"
        rows.append(ActionUsage(name, ", ".join(parameters), about))
    return rows


@functools.cache
def _schema() -> dict[str, Any]:
    takers: dict[str, list[tuple[str, type[Action], attrs.Attribute[Any]]]] = {p: [] for p in PARAMETERS}
    aliased: dict[str, list[tuple[str, str]]] = {p: [] for p in PARAMETERS}
    for name, cls in ACTIONS.items():
        for field in attrs.fields(cls):
            takers[_PARAMETER.get(field.name, field.name)].append((name, cls, field))
        if cls in ALIASES:
            other, canonical = ALIASES[cls]
            aliased[other].append((name, canonical))
    properties: dict[str, Any] = {
        "action": {"type": "string", "enum": list(ACTIONS), "description": PARAMETER_HELP["action"]}
    }
    for parameter in PARAMETERS[1:]:
        fields = takers[parameter]
        assert fields, f"no action takes {parameter!r}"
        _name, cls, field = fields[0]
        schema = _json_type(typing.get_type_hints(cls)[field.name])
        for _n, _c, taken in fields:
            schema.update(taken.metadata)
        names = list(dict.fromkeys(n for n, _c, _f in fields))
        description = f"{', '.join(names)}: {PARAMETER_HELP[parameter]}"
        if aliased[parameter]:
            instead = "; ".join(f"{n} takes it in place of {canonical}" for n, canonical in aliased[parameter])
            description = description.removesuffix(".") + f" ({instead})."
        schema["description"] = description
        properties[parameter] = schema
    return {"type": "object", "properties": properties, "required": ["action"], "additionalProperties": False}


def input_schema() -> dict[str, Any]:
    """The JSON Schema of the tool's parameters: every one of :data:`~agent_comms.actions.PARAMETERS`, ``action``
    the only required one (the tool checks each action's own requirements, and answers ``INVALID_PARAMS``)."""
    return copy.deepcopy(_schema())  # callers may change their copy


def _json_type(annotation: object) -> dict[str, Any]:
    """The JSON Schema of a field's type (``None`` stands for the parameter left out)."""
    args = [a for a in typing.get_args(annotation) if a is not type(None)]
    if typing.get_origin(annotation) is Literal:
        return {"type": "string", "enum": [str(a) for a in args]}
    if annotation is str:
        return {"type": "string"}
    if typing.get_origin(annotation) is tuple:
        return {"type": "array"}
    if set(args) == {str, int}:
        return {"anyOf": [{"type": "string"}, {"type": "integer"}]}
    if len(args) == 1:  # Optional[X]
        return _json_type(args[0])
    raise TypeError(f"no JSON Schema for {annotation!r}")
