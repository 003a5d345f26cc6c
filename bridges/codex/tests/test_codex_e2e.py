"""End to end with the real Codex CLI: ``codex exec`` configured by ``agent-comms setup``, its bridge on the mesh, a
DM from another agent while Codex waits for the model, and the hooks bringing it to the model: Stop continuing a
turn that would end, or PostToolUse adding it after a shell command.

The model is the one thing that cannot run here, so a fake stands in for it: a local HTTP server speaking the
Responses API stream (``response.created``, ``response.output_item.done``, ``response.completed``) that records every
request Codex sends and answers each with a short assistant message (or first with a shell call). Everything else
is real: Codex reads the ``config.toml`` and ``hooks.json`` that :func:`agent_comms_codex.config.configure`
wrote, starts ``agent-comms bridge codex`` as its MCP server, and runs the hook program with its own hook JSON
(``--dangerously-bypass-hook-trust`` stands in for the user trusting the hooks once in ``/hooks``). What reaches
the model is read back from the requests the fake received.

(Codex 0.169 does not expose MCP tools to custom model providers: calls come back "unsupported call", the known
issue openai/codex#31354. So the tool itself is tested over stdio in test_codex_bridge.py, not through Codex.)
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest
import trio
from agent_comms_codex import config
from agent_comms_codex.hooks import INTRO
from agent_comms_codex.inbox import inbox_dir, read_inbox

from agent_comms.agent import open_agent
from agent_comms.testing.harnesses import harness_cli

DEADLINE = 120


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
    assert port != 19876
    return port


class FakeModel:
    """A Responses API endpoint that answers every request with one assistant message; it records the requests.

    The first answer is held back until :attr:`release` is set, so the test can act while Codex waits for the model;
    with ``first_command``, the first answer is a call of Codex's shell tool (``exec_command``) instead.
    """

    def __init__(self, first_command: str | None = None) -> None:
        self.requests: list[dict[str, Any]] = []
        self.first_command = first_command
        self.first_arrived = threading.Event()
        self.release = threading.Event()
        model = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = json.loads(self.rfile.read(int(self.headers.get("content-length", 0))) or b"{}")
                model.requests.append(body)
                n = len(model.requests)
                if n == 1:
                    model.first_arrived.set()
                    model.release.wait(60)
                item: dict[str, Any] = {
                    "type": "message",
                    "role": "assistant",
                    "id": f"msg-{n}",
                    "content": [{"type": "output_text", "text": f"answer {n}"}],
                }
                if n == 1 and first_command is not None:
                    arguments = json.dumps({"cmd": first_command})
                    item = {
                        "type": "function_call",
                        "call_id": "call-1",
                        "name": "exec_command",
                        "arguments": arguments,
                    }
                events = [
                    {"type": "response.created", "response": {"id": f"resp-{n}"}},
                    {"type": "response.output_item.done", "item": item},
                    {
                        "type": "response.completed",
                        "response": {
                            "id": f"resp-{n}",
                            "usage": {
                                "input_tokens": 0,
                                "input_tokens_details": None,
                                "output_tokens": 0,
                                "output_tokens_details": None,
                                "total_tokens": 0,
                            },
                        },
                    },
                ]
                data = "".join(f"event: {e['type']}\ndata: {json.dumps(e)}\n\n" for e in events).encode()
                self.send_response(200)
                self.send_header("content-type", "text/event-stream")
                self.send_header("content-length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def do_GET(self) -> None:
                self.send_response(404)
                self.end_headers()

            def log_message(self, format: str, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/v1"

    def texts(self, index: int) -> list[str]:
        """The input texts of request ``index`` (every message, any role)."""
        return [
            span.get("text", "")
            for item in self.requests[index].get("input", [])
            if item.get("type") == "message"
            for span in item.get("content", [])
        ]


@pytest.fixture(params=[None, "echo hello"], ids=["answer", "shell-call"])
def fake_model(request: pytest.FixtureRequest) -> Iterator[FakeModel]:
    model = FakeModel(first_command=request.param)
    thread = threading.Thread(target=model.server.serve_forever, daemon=True)
    thread.start()
    try:
        yield model
    finally:
        model.release.set()
        model.server.shutdown()
        thread.join(10)


async def test_codex_runs_the_bridge_and_the_hooks_wake_it_for_a_dm(
    tmp_path: Path, fake_model: FakeModel, monkeypatch: pytest.MonkeyPatch
) -> None:
    codex = harness_cli("codex")
    home = tmp_path / "home"
    project = tmp_path / "web"
    project.mkdir()
    (home / ".codex").mkdir(parents=True)
    (home / ".codex" / "config.toml").write_text(
        "# the fake model (see the module docstring)\n"
        'model = "gpt-test"\nmodel_provider = "fake"\n\n'
        f'[model_providers.fake]\nname = "fake"\nbase_url = "{fake_model.url}"\nenv_key = "FAKE_MODEL_KEY"\n'
        'wire_api = "responses"\n'
    )
    monkeypatch.delenv("CODEX_HOME", raising=False)
    assert len(config.configure(home, dry_run=False)) == 2
    mesh_env = {"AGENT_COMMS_HOME": str(tmp_path / "mesh"), "AGENT_COMMS_PORT": str(_free_port())}
    for key, value in mesh_env.items():
        monkeypatch.setenv(key, value)
    env = {**os.environ, **mesh_env, "HOME": str(home), "FAKE_MODEL_KEY": "not-a-secret"}
    env.pop("CODEX_HOME", None)
    argv = [str(codex), "exec", "--skip-git-repo-check", "--dangerously-bypass-hook-trust", "fix the bug"]
    with trio.fail_after(DEADLINE):
        async with open_agent("test", "alice", cwd=str(tmp_path / "alice")) as alice, trio.open_nursery() as nursery:
            done: list[subprocess.CompletedProcess[bytes]] = []

            async def run_codex() -> None:
                done.append(
                    await trio.run_process(
                        argv,
                        cwd=project,
                        env=env,
                        stdin=subprocess.DEVNULL,
                        capture_stdout=True,
                        capture_stderr=True,
                        check=False,
                    )
                )

            nursery.start_soon(run_codex)
            # Codex started its bridge: the agent codex-web is on the mesh.
            while "codex-web (" not in (await alice.call({"action": "list_agents"})).text:  # noqa: ASYNC110
                await trio.sleep(0.05)
            await trio.to_thread.run_sync(fake_model.first_arrived.wait, 60)
            # While Codex waits for the model, alice sends a DM that asks for action now.
            sent = await alice.call({"action": "dm", "target": "codex-web", "content": "please rebase on main"})
            assert not sent.is_error, sent.text
            while not any((i := read_inbox(p)) and i["waiting"] for p in inbox_dir().glob("inbox-*.json")):  # noqa: ASYNC110
                await trio.sleep(0.05)
            fake_model.release.set()  # the model answers; the turn would end here ...
        [finished] = done
    output = finished.stdout.decode() + finished.stderr.decode()
    assert finished.returncode == 0, output
    # SessionStart introduced the tool (with the agent's name if its bridge was up already; first request).
    assert any(INTRO.removeprefix("agent-comms: ") in text for text in fake_model.texts(0)), output
    later = "\n".join(json.dumps(fake_model.requests[n]["input"]) for n in range(1, len(fake_model.requests)))
    assert "please rebase on main" in later, later[-3000:]
    if fake_model.first_command is None:
        # The turn would have ended, but the Stop hook saw the DM waiting and continued it with the notice ...
        assert "hook: Stop Blocked" in output, output
        # ... once: the Stop hook stays quiet while Codex is continuing because of it.
        assert len(fake_model.requests) == 2, output
    else:
        # The shell call ran; PostToolUse added the notice to the context the model gets with the call's output.
        assert "hook: PostToolUse Completed" in output, output
        assert "hook: Stop Blocked" not in output, output
        assert len(fake_model.requests) == 2, output  # announced after the tool: nothing left for the Stop hook
