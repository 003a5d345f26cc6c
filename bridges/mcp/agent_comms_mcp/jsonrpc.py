"""JSON-RPC 2.0 messages on a line, as MCP's stdio transport carries them: parsed and encoded with msgspec.

MCP over stdio is one JSON-RPC message per line, UTF-8, no embedded newlines. :func:`parse_line` turns a line into
a :class:`Request`, a :class:`Notification`, a :class:`Response` or :class:`ErrorResponse` (a client answering
something; this server sends no requests, so it ignores them), or says why it cannot:

- a line that is not JSON, or too long to read, is a :class:`ValueError`. It is logged, not answered: MCP's error
  response carries the request's id (a string or a number, never null, unlike bare JSON-RPC), and without a parse
  there is no id to answer. The official SDKs do the same.
- JSON that is not a valid request but whose id can be read (``method`` missing or not a string, ``params`` not an
  object) is :class:`Malformed`: its *Invalid Request* error response to that id is to be written back.
- A JSON array is a :class:`Batch` of such messages (JSON-RPC batches: MCP 2025-03-26 requires a server to receive
  them; 2025-06-18 removed them). An empty array has no id to answer: a :class:`ValueError`.
- A line too long to read gets its id from its first bytes if it can (:func:`find_id`), and *Invalid Request*.

A lone surrogate escape (``"\\ud800"``), valid JSON that msgspec refuses, is parsed by :mod:`json` instead, so the
tool can name the offending parameter; :func:`encode` escapes such strings the same way on the way out.
"""

from __future__ import annotations

import json
import re
from typing import Any, Final

import msgspec

__all__ = [
    "INTERNAL_ERROR",
    "INVALID_PARAMS",
    "INVALID_REQUEST",
    "MAX_MESSAGE",
    "METHOD_NOT_FOUND",
    "PARSE_ERROR",
    "Batch",
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
    "encode_batch",
    "find_id",
    "parse_line",
    "too_large",
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


class Batch(msgspec.Struct):
    """A JSON-RPC batch: the messages of a JSON array, each parsed as a line would be."""

    items: list[Incoming | Malformed | ValueError]


#: Longest message read, in bytes (the transport's cap; a longer line reaches :func:`parse_line` as ``None``).
MAX_MESSAGE: Final = 4 << 20

_encoder: Final = msgspec.json.Encoder()


def parse_line(line: bytes | None, max_bytes: int = MAX_MESSAGE) -> Incoming | Malformed | Batch | ValueError | None:
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
    if isinstance(body, list):
        if not body:
            return ValueError("an empty JSON-RPC batch")
        return Batch([_classify(item) for item in body])
    return _classify(body)


def _classify(body: Any) -> Incoming | Malformed | ValueError:
    if not isinstance(body, dict):
        return ValueError("not a JSON-RPC message: a JSON object (or an array of them) was expected")
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


def too_large(ident: RequestId, max_bytes: int = MAX_MESSAGE) -> ErrorResponse:
    """The answer to a request too long to read (its id found by :func:`find_id`)."""
    problem = f"Invalid request: message too large (limit {_size(max_bytes)})"
    return ErrorResponse(ident, RpcError(INVALID_REQUEST, problem))


def _size(count: int) -> str:
    return f"{count >> 20} MiB" if count >= 1 << 20 and not count % (1 << 20) else f"{count} bytes"


#: A JSON token: a string, a punctuation mark, or another scalar (number, true, false, null).
_TOKEN: Final = re.compile(rb'\s*(?:("(?:[^"\\]|\\.)*")|([{}\[\]:,])|([^\s{}\[\]:,"]+))')


def find_id(head: bytes) -> RequestId | None:
    """The top-level ``id`` of the JSON object that ``head`` begins (the start of a line too long to read), if
    its first bytes say it: a string or an integer; ``None`` if not found (or not a valid id)."""
    depth, position, expect_key, key = 0, 0, False, None
    while (token := _TOKEN.match(head, position)) is not None and token.end() > position:
        position = token.end()
        text, mark, scalar = token.groups()
        if mark is not None:
            if mark in b"{[":
                depth += 1
                expect_key = depth == 1 and mark == b"{"
            elif mark in b"}]":
                depth -= 1
            elif mark == b"," and depth == 1:
                expect_key = True
            continue
        if depth != 1:
            continue
        if expect_key:
            key, expect_key = text, False
            continue
        if key == b'"id"':
            if not _TOKEN.match(head, position):  # the value may go on past the head: not read
                return None
            return _id_value(text, scalar)
        key = None
    return None


def _id_value(text: bytes | None, scalar: bytes | None) -> RequestId | None:
    try:
        value: Any = json.loads(text if text is not None else scalar or b"")
    except ValueError:
        return None
    return value if _valid_id(value) else None


def _invalid(ident: RequestId, problem: str) -> Malformed:
    return Malformed(ErrorResponse(ident, RpcError(INVALID_REQUEST, f"Invalid request: {problem}")))


def encode(message: Outgoing) -> bytes:
    """``message`` as one line of JSON, newline included."""
    return _encode(message)


def encode_batch(messages: list[Outgoing]) -> bytes:
    """``messages`` as one line holding a JSON array (the answer to a batch), newline included."""
    return _encode(messages)


def _encode(body: Outgoing | list[Outgoing]) -> bytes:
    try:
        return _encoder.encode(body) + b"\n"
    except UnicodeEncodeError:  # a lone surrogate (echoed from a parameter): escape it as json does
        return json.dumps(msgspec.to_builtins(body), ensure_ascii=True).encode() + b"\n"
