"""Errors the ``agent_comms`` tool reports to the model: a code from the contract and a sentence.

They are results, not exceptions, at the tool boundary: :class:`CommsError` is raised inside the tool and turned
into the text ``Error: <message> (<CODE>)`` with ``is_error`` set.
"""

from __future__ import annotations

import enum

__all__ = ["CommsError", "ErrorCode"]


class ErrorCode(enum.StrEnum):
    """The error codes of the public contract."""

    AGENT_NOT_FOUND = "AGENT_NOT_FOUND"
    ROOM_EXISTS = "ROOM_EXISTS"
    ROOM_NOT_FOUND = "ROOM_NOT_FOUND"
    NOT_INVITED = "NOT_INVITED"
    NOT_OWNER = "NOT_OWNER"
    NOT_MEMBER = "NOT_MEMBER"
    INVALID_PARAMS = "INVALID_PARAMS"


class CommsError(Exception):
    """A failed tool call: ``code`` for programs, ``message`` for the model."""

    def __init__(self, code: ErrorCode, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.message = message

    @property
    def text(self) -> str:
        """The tool result text: ``Error: <message> (<CODE>)``."""
        return f"Error: {self.message} ({self.code})"
