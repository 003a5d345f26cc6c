"""JSON-RPC 2.0 messages on a line, as MCP's stdio transport carries them: parsed and encoded with msgspec.

MCP over stdio is one JSON-RPC message per line, UTF-8, no embedded newlines. :func:`parse_line` turns a line into
a :class:`Request`, a :class:`Notification`, a :class:`Response` or :class:`ErrorResponse` (a client answering
something; this server sends no requests, so it ignores them), or says why it cannot:

- a line that is not JSON, or too long to read, is a :class:`ValueError`. It is logged, not answered: MCP's error
  response carries the request's id (a string or a number, never null, unlike bare JSON-RPC), and without a parse
  there is no id to answer. The official SDKs do the same.
- JSON that is not a valid request but whose id can be read (``method`` missing or not a string, ``params`` not an
  object) is :class:`Malformed`: its *Invalid Request* error response to that id is to be written back.

A lone surrogate escape (``"\\ud800"``), valid JSON that msgspec refuses, is parsed by :mod:`json` instead, so the
tool can name the offending parameter; :func:`encode` escapes such strings the same way on the way out.
"""

from __future__ import annotations

import json
from typing import Any, Final

import msgspec

__all__ = [
    "INTERNAL_ERROR",
    "INVALID_PARAMS",
    "INVALID_REQUEST",
    "MAX_MESSAGE",
    "METHOD_NOT_FOUND",
    "PARSE_ERROR",
    "ErrorResponse",
    "Incoming",
    "Malformed",
    "Notification",
    "Outgoing",
    "Request",
    "RequestId",
    "Response",
    "RpcError",
    "encode",
    "parse_line",
]

PARSE_ERROR: Final = -32700
INVALID_REQUEST: Final = -32600
METHOD_NOT_FOUND: Final = -32601
INVALID_PARAMS: Final = -32602
INTERNAL_ERROR: Final = -32603

#: A request id: MCP allows a string or an integer (never null).
RequestId = str | int


class RpcError(msgspec.Struct, omit_defaults=True):
    """The ``error`` member of an error response."""

    code: int
    message: str
    data: Any = None


class Request(msgspec.Struct, omit_defaults=True, tag_field="jsonrpc", tag="2.0"):
    """A request: it gets exactly one response or error response with its ``id``."""

    id: RequestId
    method: str
    params: dict[str, Any] | None = None


class Notification(msgspec.Struct, omit_defaults=True, tag_field="jsonrpc", tag="2.0"):
    """A notification: no answer."""

    method: str
    params: dict[str, Any] | None = None


class Response(msgspec.Struct, tag_field="jsonrpc", tag="2.0"):
    """A successful answer to the request ``id``."""

    id: RequestId
    result: dict[str, Any]


class ErrorResponse(msgspec.Struct, tag_field="jsonrpc", tag="2.0"):
    """A failed answer to the request ``id``."""

    id: RequestId | None
    error: RpcError


class Malformed(msgspec.Struct):
    """A message that is not a valid request but names its id: ``answer`` (*Invalid Request*) goes back."""

    answer: ErrorResponse


Incoming = Request | Notification | Response | ErrorResponse
Outgoing = Response | ErrorResponse | Notification

#: Longest message read, in bytes (the transport's cap; a longer line reaches :func:`parse_line` as ``None``).
MAX_MESSAGE: Final = 4 << 20

_encoder: Final = msgspec.json.Encoder()


def parse_line(line: bytes | None, max_bytes: int = MAX_MESSAGE) -> Incoming | Malformed | ValueError | None:
    """One line of input (``None``: a line longer than ``max_bytes``, skipped); ``None`` for a blank line."""
    if line is None:
        return ValueError(f"longer than {max_bytes} bytes")
    if not line.strip():
        return None
    try:
        body: Any = msgspec.json.decode(line)
    except RecursionError:
        return ValueError("not read: nested too deeply")
    except msgspec.DecodeError as exc:
        try:
            body = json.loads(line)  # msgspec refuses lone surrogate escapes; json takes them
        except (ValueError, RecursionError):
            return ValueError(f"not JSON: {exc}")
    return _classify(body)


def _classify(body: Any) -> Incoming | Malformed | ValueError:
    if not isinstance(body, dict):
        return ValueError("not a JSON-RPC message: a JSON object was expected (batches are not part of MCP)")
    has_id = "id" in body
    ident: Any = body.get("id")
    if has_id and not _valid_id(ident):
        return ValueError(f"not a JSON-RPC message: the id {ident!r} is neither a string nor an integer")
    if body.get("jsonrpc") != "2.0":
        return _invalid(ident, 'the "jsonrpc" member must be "2.0"') if has_id else ValueError("not JSON-RPC 2.0")
    if "method" in body:
        method, params = body["method"], body.get("params")
        if not isinstance(method, str):
            return _invalid(ident, 'the "method" member must be a string') if has_id else ValueError("no method")
        if params is not None and not isinstance(params, dict):
            problem = f'the "params" of {method} must be an object'
            return _invalid(ident, problem) if has_id else ValueError(problem)
        return Request(ident, method, params) if has_id else Notification(method, params)
    if has_id and isinstance(body.get("result"), dict):
        return Response(ident, body["result"])
    error = body.get("error")
    if isinstance(error, dict) and isinstance(error.get("code"), int) and isinstance(error.get("message"), str):
        return ErrorResponse(ident, RpcError(error["code"], error["message"], error.get("data")))
    return _invalid(ident, "neither a request, a notification nor a response") if has_id else ValueError("not JSON-RPC")


def _valid_id(ident: Any) -> bool:
    return isinstance(ident, str) or (isinstance(ident, int) and not isinstance(ident, bool))


def _invalid(ident: RequestId, problem: str) -> Malformed:
    return Malformed(ErrorResponse(ident, RpcError(INVALID_REQUEST, f"Invalid request: {problem}")))


def encode(message: Outgoing) -> bytes:
    """``message`` as one line of JSON, newline included."""
    try:
        return _encoder.encode(message) + b"\n"
    except UnicodeEncodeError:  # a lone surrogate (echoed from a parameter): escape it as json does
        return json.dumps(msgspec.to_builtins(message), ensure_ascii=True).encode() + b"\n"
