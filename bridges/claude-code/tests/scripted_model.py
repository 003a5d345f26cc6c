"""A stand-in for the model: a Messages API on 127.0.0.1 whose answers a test scripts.

The model is the one part of a Claude Code session that cannot run in the tests; this small server speaks enough
of the Anthropic Messages API (``POST /v1/messages``, streamed or not) for the real ``claude`` CLI to run a turn
against it (``ANTHROPIC_BASE_URL``). Each request is recorded; the test's ``respond`` function chooses the answer (a
text that ends the turn, or one tool call), and may block until the test is ready (it runs in the server's thread).
"""

from __future__ import annotations

import json
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

__all__ = ["ScriptedModel", "running", "text", "tool_call", "tool_names", "tool_results"]

#: An answer: the content block, and the stop reason.
Answer = tuple[dict[str, Any], str]


def text(words: str) -> Answer:
    """An answer that ends the turn."""
    return {"type": "text", "text": words}, "end_turn"


def tool_call(call_id: str, name: str, arguments: dict[str, Any]) -> Answer:
    """An answer asking Claude Code to run tool ``name``."""
    return {"type": "tool_use", "id": call_id, "name": name, "input": arguments}, "tool_use"


def tool_names(request: dict[str, Any]) -> list[str]:
    """The names of the tools a request offers the model."""
    return [tool.get("name", "") for tool in request.get("tools") or []]


def tool_results(request: dict[str, Any]) -> dict[str, str]:
    """The tool results in the last user message of a request, by tool call id (their text)."""
    messages = request.get("messages") or []
    found: dict[str, str] = {}
    if not messages or messages[-1].get("role") != "user" or not isinstance(messages[-1].get("content"), list):
        return found
    for block in messages[-1]["content"]:
        if isinstance(block, dict) and block.get("type") == "tool_result":
            found[block.get("tool_use_id", "")] = json.dumps(block.get("content"))
    return found


class ScriptedModel:
    """The Messages API server; ``respond(request, number)`` answers the ``number``-th request (from 0)."""

    def __init__(self, respond: Callable[[dict[str, Any], int], Answer]) -> None:
        self.respond = respond
        self.requests: list[dict[str, Any]] = []
        self._lock = threading.Lock()
        model = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args: object) -> None:
                pass

            def do_GET(self) -> None:
                self.send_response(404)
                self.end_headers()

            def do_HEAD(self) -> None:
                self.send_response(200)
                self.end_headers()

            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers.get("content-length", 0)))
                if not self.path.startswith("/v1/messages") or "count_tokens" in self.path:
                    self.send_response(404)
                    self.end_headers()
                    return
                model._answer(self, json.loads(body))

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"

    def _answer(self, handler: BaseHTTPRequestHandler, request: dict[str, Any]) -> None:
        with self._lock:
            number = len(self.requests)
            self.requests.append(request)
        block, stop = self.respond(request, number)
        start = {
            "id": f"msg_{number + 1}",
            "type": "message",
            "role": "assistant",
            "model": request.get("model", "stand-in"),
            "content": [],
            "stop_reason": None,
            "stop_sequence": None,
            "usage": {"input_tokens": 1, "output_tokens": 1},
        }
        if not request.get("stream"):
            data = json.dumps({**start, "content": [block], "stop_reason": stop}).encode()
            handler.send_response(200)
            handler.send_header("content-type", "application/json")
            handler.send_header("content-length", str(len(data)))
            handler.end_headers()
            handler.wfile.write(data)
            return
        events: list[tuple[str, dict[str, Any]]] = [("message_start", {"message": start})]
        if block["type"] == "text":
            events += [
                ("content_block_start", {"index": 0, "content_block": {"type": "text", "text": ""}}),
                ("content_block_delta", {"index": 0, "delta": {"type": "text_delta", "text": block["text"]}}),
            ]
        else:
            arguments = json.dumps(block["input"])
            events += [
                ("content_block_start", {"index": 0, "content_block": {**block, "input": {}}}),
                ("content_block_delta", {"index": 0, "delta": {"type": "input_json_delta", "partial_json": arguments}}),
            ]
        events += [
            ("content_block_stop", {"index": 0}),
            ("message_delta", {"delta": {"stop_reason": stop, "stop_sequence": None}, "usage": {"output_tokens": 5}}),
            ("message_stop", {}),
        ]
        handler.send_response(200)
        handler.send_header("content-type", "text/event-stream")
        handler.end_headers()
        for name, data in events:
            handler.wfile.write(f"event: {name}\ndata: {json.dumps({'type': name, **data})}\n\n".encode())
        handler.wfile.flush()


@contextmanager
def running(model: ScriptedModel) -> Iterator[ScriptedModel]:
    """Serve ``model`` in a thread for the duration of the block."""
    thread = threading.Thread(target=model.server.serve_forever, daemon=True)
    thread.start()
    try:
        yield model
    finally:
        model.server.shutdown()
        model.server.server_close()
