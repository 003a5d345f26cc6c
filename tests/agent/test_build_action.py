"""Which complaint :func:`agent_comms.actions.build_action` reports when a call has several problems.

The tool's parameters are checked without a general-purpose structuring library: each field's type check is worked
out once per action class. These pin the order of the checks, which the model sees as the one error it must fix
first: unknown parameters, then the action, then missing fields, then types in the class's field order, then the
limits and characters of the values in the same order.
"""

from __future__ import annotations

import pytest

from agent_comms.actions import Dm, Send, Update, build_action
from agent_comms.errors import CommsError, ErrorCode


def _error(params: dict[str, object]) -> str:
    with pytest.raises(CommsError) as raised:
        build_action(params)
    assert raised.value.code == ErrorCode.INVALID_PARAMS
    return str(raised.value)


def test_a_type_error_is_reported_before_a_limit_of_an_earlier_field() -> None:
    # target is too long (a limit), content the wrong type: the type is checked first, for every field.
    assert "invalid 'content': expected a string, got a number" in _error(
        {"action": "dm", "target": "x" * 500, "content": 5}
    )


def test_the_first_wrong_field_in_the_class_order_is_reported() -> None:
    assert "invalid 'target'" in _error({"action": "dm", "target": 1, "content": 2})
    assert "invalid 'target'" in _error({"action": "dm", "target": " spaced", "content": "\x00"})
    assert "invalid 'streamingBehavior'" in _error(
        {"action": "dm", "target": "bob", "content": "hi", "streamingBehavior": "x"}
    )


def test_unknown_parameters_come_before_everything_else() -> None:
    assert "unknown parameter 'a'" in _error({"action": "fly", "target": 5, "b": 1, "a": 2})


def test_values_are_converted() -> None:
    assert build_action({"action": "dm", "agent": "bob", "content": "hi"}) == Dm("bob", "hi")
    assert build_action({"action": "send", "room": "dev", "content": "hi", "replyTo": None}) == Send("dev", "hi")
    assert build_action({"action": "update", "tags": ["a", "b"]}) == Update(tags=("a", "b"))
    assert "invalid 'agent'" in _error({"action": "dm", "agent": 7, "content": "hi"})  # the alias, as given
