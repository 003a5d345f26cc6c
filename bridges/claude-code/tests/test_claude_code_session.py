"""End to end with the real Claude Code: ``claude -p`` set up by our setup hooks, with a stand-in for the model.

Testing policy: the model is the one thing that cannot run here, so a small Messages API server on 127.0.0.1
stands in for it (``ANTHROPIC_BASE_URL``); everything else is real: the ``claude`` CLI, the plugin and MCP server
that ``configure`` installed in a throwaway HOME, the bridge Claude Code starts, its hooks, and another agent on the
mesh. The stand-in holds its first answer until the other agent's DM has reached the session's bridge, then asks
for a Read tool call; the PostToolUse hook must put the DM into the next request Claude Code sends the model.
"""

from __future__ import annotations

import json
import subprocess
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest
import trio
from agent_comms_claude_code.configure import configure
from claude_code_helpers import free_port

import agent_comms
from agent_comms.configure import harness_env
from agent_comms.testing.harnesses import harness_cli

DEADLINE = 180


class StandInModel:
    """A Messages API that answers the first request (once ``go`` is set) with a Read tool call, then text."""

    def __init__(self, read_path: Path, *, first_tool: bool = True) -> None:
        self.read_path = read_path
        #: answer the first request with the Read tool call (else with text, ending the turn at once)
        self.first_tool = first_tool
        self.requests: list[dict[str, Any]] = []
        self.go = threading.Event()
        self.first_arrived = threading.Event()
        model = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args: object) -> None:
                pass

            def do_GET(self) -> None:
                self.send_response(404)
                self.end_headers()

            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers.get("content-length", 0)))
                if not self.path.startswith("/v1/messages") or "count_tokens" in self.path:
                    self.send_response(404)
                    self.end_headers()
                    return
                request = json.loads(body)
                model.answer(self, request)

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"

    def answer(self, handler: BaseHTTPRequestHandler, request: dict[str, Any]) -> None:
        first = not self.requests
        self.requests.append(request)
        if first:
            self.first_arrived.set()
            self.go.wait(timeout=120)
        if first and self.first_tool:
            block: dict[str, Any] = {
                "type": "tool_use",
                "id": "toolu_01",
                "name": "Read",
                "input": {"file_path": str(self.read_path)},
            }
            stop = "tool_use"
        else:
            block = {"type": "text", "text": "Noted."}
            stop = "end_turn"
        start = {
            "id": f"msg_{len(self.requests)}",
            "type": "message",
            "role": "assistant",
            "model": request.get("model", "stand-in"),
            "content": [],
            "stop_reason": None,
            "stop_sequence": None,
            "usage": {"input_tokens": 1, "output_tokens": 1},
        }
        events: list[tuple[str, dict[str, Any]]] = [("message_start", {"type": "message_start", "message": start})]
        if block["type"] == "text":
            events += [
                ("content_block_start", {"index": 0, "content_block": {"type": "text", "text": ""}}),
                ("content_block_delta", {"index": 0, "delta": {"type": "text_delta", "text": block["text"]}}),
            ]
        else:
            events += [
                ("content_block_start", {"index": 0, "content_block": {**block, "input": {}}}),
                (
                    "content_block_delta",
                    {"index": 0, "delta": {"type": "input_json_delta", "partial_json": json.dumps(block["input"])}},
                ),
            ]
        events += [
            ("content_block_stop", {"index": 0}),
            ("message_delta", {"delta": {"stop_reason": stop, "stop_sequence": None}, "usage": {"output_tokens": 5}}),
            ("message_stop", {}),
        ]
        if not request.get("stream"):
            message = {**start, "content": [block], "stop_reason": stop}
            data = json.dumps(message).encode()
            handler.send_response(200)
            handler.send_header("content-type", "application/json")
            handler.send_header("content-length", str(len(data)))
            handler.end_headers()
            handler.wfile.write(data)
            return
        handler.send_response(200)
        handler.send_header("content-type", "text/event-stream")
        handler.end_headers()
        for name, data in events:
            handler.wfile.write(f"event: {name}\ndata: {json.dumps({'type': name, **data})}\n\n".encode())
        handler.wfile.flush()


@pytest.fixture
def stand_in(tmp_path: Path) -> Iterator[StandInModel]:
    model = StandInModel(tmp_path / "project" / "notes.txt")
    thread = threading.Thread(target=model.server.serve_forever, daemon=True)
    thread.start()
    try:
        yield model
    finally:
        model.go.set()
        model.server.shutdown()
        model.server.server_close()


def session_env(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, model: StandInModel) -> tuple[Path, dict[str, str]]:
    """Set Claude Code up in a throwaway HOME with our setup; the ``claude`` program and the session's environment."""
    claude = harness_cli("claude")
    monkeypatch.setenv("AGENT_COMMS_CLAUDE", str(claude))
    monkeypatch.setenv("AGENT_COMMS_PORT", str(free_port()))
    monkeypatch.setenv("AGENT_COMMS_HOME", str(tmp_path / "mesh-home"))
    home = tmp_path / "user"
    home.mkdir()
    project = tmp_path / "project"
    project.mkdir()
    (project / "notes.txt").write_text("nothing to see\n")
    assert configure(home, False)
    env = {k: v for k, v in harness_env(home).items() if not k.startswith("CLAUDE")}
    env.update(
        ANTHROPIC_BASE_URL=model.url,
        ANTHROPIC_API_KEY="sk-ant-stand-in",
        CLAUDE_CODE_DISABLE_NONESSENTIAL_TRAFFIC="1",
    )
    return claude, env


class Receipts:
    """The receipts one sender got, by message id (``read`` wins over ``delivered``: receipts arrive together)."""

    def __init__(self, sender: agent_comms.Agent) -> None:
        self.sender = sender
        self.status: dict[str, str] = {}

    async def wait(self, message_id: str, *wanted: str) -> None:
        """Until the receipt of ``message_id`` is one of ``wanted``."""
        while self.status.get(message_id) not in wanted:
            for event in self.sender.drain():
                if event.type == "delivery_status" and self.status.get(event.message_id) != "read":
                    self.status[event.message_id] = event.status
            await trio.sleep(0.05)


async def wait_for_the_session(sender: agent_comms.Agent) -> None:
    """Until the agent of the Claude Code session is online (Claude Code starts its MCP server beside the turn)."""
    while "claude-code-project (" not in (await sender.call({"action": "list_agents"})).text:  # noqa: ASYNC110
        await trio.sleep(0.05)


async def dm_the_session(receipts: Receipts, content: str) -> str:
    """DM the session's agent; the message id, once the DM has reached its bridge."""
    sender = receipts.sender
    await wait_for_the_session(sender)
    sent = await sender.call({"action": "dm", "target": "claude-code-project", "content": content})
    assert not sent.is_error, sent.text
    message_id: str = sent.data["message_id"]
    await receipts.wait(message_id, "delivered", "read")
    return message_id


async def test_a_dm_reaches_the_model_through_the_post_tool_use_hook(
    tmp_path: Path, stand_in: StandInModel, monkeypatch: pytest.MonkeyPatch
) -> None:
    with trio.fail_after(DEADLINE):
        claude, env = await trio.to_thread.run_sync(session_env, tmp_path, monkeypatch, stand_in)
        async with agent_comms.open_agent("test", "sender", cwd=str(tmp_path / "sender")) as sender:
            async with trio.open_nursery() as nursery:
                done: list[Any] = []

                async def run_claude() -> None:
                    done.append(
                        await trio.run_process(
                            [str(claude), "-p", "look at notes.txt"],
                            cwd=tmp_path / "project",
                            env=env,
                            stdin=b"",
                            capture_stdout=True,
                            capture_stderr=True,
                            check=False,
                        )
                    )

                nursery.start_soon(run_claude)
                await trio.to_thread.run_sync(stand_in.first_arrived.wait, abandon_on_cancel=True)
                receipts = Receipts(sender)
                message_id = await dm_the_session(receipts, "hi from e2e")
                stand_in.go.set()  # the model asks for a Read; its PostToolUse hook brings the DM
                await receipts.wait(message_id, "read")
            [result] = done
    assert result.returncode == 0, result.stderr.decode() + result.stdout.decode()
    assert len(stand_in.requests) >= 2
    later = json.dumps(stand_in.requests[1:])
    assert "PostToolUse:Read hook additional context: agent-comms: 1 new event(s) for you" in later
    assert "hi from e2e" in later
    assert "hi from e2e" not in json.dumps(stand_in.requests[0])


async def test_a_dm_wakes_a_finished_turn_through_the_stop_hook(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """``claude -p`` runs the Stop hook in the foreground (an interactive session runs it in the background, with
    ``asyncRewake``); with ``AGENT_COMMS_CLAUDE_WAKE=on`` it waits for the DM and exits 2, and Claude Code sends the
    model another request carrying the DM: the same output an idle interactive session is woken with."""
    model = StandInModel(tmp_path / "project" / "notes.txt", first_tool=False)
    thread = threading.Thread(target=model.server.serve_forever, daemon=True)
    thread.start()
    try:
        with trio.fail_after(DEADLINE):
            claude, env = await trio.to_thread.run_sync(session_env, tmp_path, monkeypatch, model)
            env["AGENT_COMMS_CLAUDE_WAKE"] = "on"
            async with agent_comms.open_agent("test", "sender", cwd=str(tmp_path / "sender")) as sender:
                process = await trio.lowlevel.open_process(
                    [str(claude), "-p", "say hi"], cwd=tmp_path / "project", env=env, stdin=subprocess.DEVNULL,
                    stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                )  # fmt: skip
                try:
                    await trio.to_thread.run_sync(model.first_arrived.wait, abandon_on_cancel=True)
                    await wait_for_the_session(sender)
                    model.go.set()  # the model ends its turn; the Stop hook waits
                    receipts = Receipts(sender)
                    message_id = await dm_the_session(receipts, "wake up for e2e")
                    await receipts.wait(message_id, "read")
                    while len(model.requests) < 2:  # noqa: ASYNC110 - another thread's list
                        await trio.sleep(0.05)
                finally:
                    process.terminate()
                    await process.wait()
    finally:
        model.server.shutdown()
        model.server.server_close()
    woken = json.dumps(model.requests[1])
    assert "wake up for e2e" in woken
    assert "agent-comms: 1 new event(s) for you" in woken
    assert "wake up for e2e" not in json.dumps(model.requests[0])
