"""``claude -p`` as scripts and CI jobs run it: set up by ``agent-comms setup`` only, no extra flags.

Testing policy: the model cannot run here, so :mod:`scripted_model` stands in for it on 127.0.0.1 (a Messages API
whose answers the test scripts); everything else is real: the ``claude`` CLI set up by ``configure`` in a throwaway
HOME (the MCP server, the plugin with its hooks, the allow rule for the tool), the bridge Claude Code starts, its
hooks, and another agent on the mesh that DMs the session mid-turn and again just before the turn ends.
"""

from __future__ import annotations

import json
import os
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from functools import partial
from pathlib import Path
from typing import Any

import pytest
import trio
from scripted_model import Answer, ScriptedModel, running, text, tool_call, tool_names, tool_results
from test_claude_code_session import Receipts, dm_the_session, session_env, wait_for_the_session

import agent_comms
from agent_comms.configure import run_harness_cli

DEADLINE = float(os.environ.get("AGENT_COMMS_TEST_DEADLINE", "240"))
TOOL = "mcp__agent-comms__agent_comms"
#: The same tool when the plugin's server runs (the plugin used alone, without the user-scope server).
PLUGIN_TOOL = "mcp__plugin_agent-comms_agent-comms__agent_comms"
PERMISSION_REFUSED = "haven't granted"


def summary(model: ScriptedModel) -> str:
    """What each request offered and ended with, for a failure report."""
    lines = []
    for number, request in enumerate(model.requests):
        last = json.dumps((request.get("messages") or [{}])[-1])
        lines.append(f"#{number} tools={len(tool_names(request))} {TOOL in tool_names(request)} last={last[-600:]}")
    if model.requests:
        lines.append(f"tools of the last: {tool_names(model.requests[-1])}")
        whole = json.dumps(model.requests[-1])
        at = whole.find("agent_comms")
        lines.append(
            f"agent_comms in the last request at {at}: {whole[max(0, at - 800) : at + 400] if at >= 0 else ''}"
        )
    return "\n".join(lines[-12:])


@contextmanager
def reported(model: ScriptedModel) -> Iterator[None]:
    """On a failure, print what the model was sent."""
    try:
        yield
    except BaseException:
        print(summary(model))
        raise


class Script:
    """The stand-in model's part: call the agent_comms tool (a Read while Claude Code has not listed it yet, and a
    ToolSearch to load it while it is only named as a deferred tool, as Claude Code offers MCP tools), then
    end the turn, then end it again once continued. It holds its first answer until ``go`` (the first DM has reached
    the session) and its answer after the tool's result until ``end`` (the second DM has)."""

    def __init__(self, notes: Path, tool: str = TOOL) -> None:
        self.notes = notes
        self.tool = tool
        self.go = threading.Event()
        self.end = threading.Event()
        self.first_arrived = threading.Event()
        self.tool_answered = threading.Event()
        #: whether each request offered the agent_comms tool
        self.offered: list[bool] = []
        self.called = False

    def __call__(self, request: dict[str, Any], number: int) -> Answer:
        loaded = self.tool in tool_names(request)
        offered = loaded or self.tool in json.dumps(
            request
        )  # Claude Code defers MCP tools: named, loaded by ToolSearch
        self.offered.append(offered)
        if number == 0:
            self.first_arrived.set()
            self.go.wait(timeout=DEADLINE)
        if "call-agent-comms" in tool_results(request):
            self.tool_answered.set()
            self.end.wait(timeout=DEADLINE)
            return text("Done.")
        if self.called:
            return text("Noted.")
        if loaded:
            self.called = True
            return tool_call("call-agent-comms", self.tool, {"action": "whoami"})
        if offered and "ToolSearch" in tool_names(request):
            return tool_call(f"call-search-{number}", "ToolSearch", {"query": f"select:{self.tool}"})
        return tool_call(f"call-read-{number}", "Read", {"file_path": str(self.notes)})


@pytest.mark.parametrize("tool", [TOOL, PLUGIN_TOOL], ids=["setup", "plugin-alone"])
async def test_claude_p_with_setup_only_takes_a_dm_mid_turn_and_one_waiting_at_the_end(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, tool: str
) -> None:
    """With ``plugin-alone`` the user-scope server was removed by hand after setup: the plugin's server runs, under
    the plugin's tool name, which setup allowed too."""
    script = Script(tmp_path / "project" / "notes.txt", tool)
    with running(ScriptedModel(script)) as model, reported(model), trio.fail_after(DEADLINE):
        claude, env = await trio.to_thread.run_sync(session_env, tmp_path, monkeypatch, model)
        if tool == PLUGIN_TOOL:
            home = Path(env["HOME"])
            removed = await trio.to_thread.run_sync(
                partial(run_harness_cli, [str(claude), "mcp", "remove", "agent-comms", "--scope", "user"], home)
            )
            assert removed.returncode == 0, removed.stderr
        async with agent_comms.open_agent("test", "sender", cwd=str(tmp_path / "sender")) as sender:
            async with trio.open_nursery() as nursery:
                done: list[Any] = []

                async def run_claude() -> None:
                    done.append(
                        await trio.run_process(
                            [str(claude), "-p", "check in with the other agents"],
                            cwd=tmp_path / "project",
                            env=env,
                            stdin=b"",
                            capture_stdout=True,
                            capture_stderr=True,
                            check=False,
                        )
                    )

                nursery.start_soon(run_claude)
                await trio.to_thread.run_sync(script.first_arrived.wait, abandon_on_cancel=True)
                receipts = Receipts(sender)
                first = await dm_the_session(receipts, "mid-turn hello")
                script.go.set()
                await receipts.wait(first, "read")  # through a tool result or the PostToolUse hook
                await trio.to_thread.run_sync(script.tool_answered.wait, abandon_on_cancel=True)
                second = await dm_the_session(receipts, "one more before you stop")
                script.end.set()  # the turn ends with the DM waiting: the Stop hook continues it once
                await receipts.wait(second, "read")
            [result] = done
    output = result.stderr.decode() + result.stdout.decode()
    assert result.returncode == 0, output
    sent = json.dumps(model.requests)
    assert PERMISSION_REFUSED not in sent, "claude -p refused the agent_comms tool"
    assert script.called, f"the tool was never offered to the model: {script.offered}"
    assert "mid-turn hello" in sent
    continued = [json.dumps(r) for r in model.requests if "one more before you stop" in json.dumps(r)]
    assert continued, "the DM waiting at the end of the turn never reached the model"
    # What Claude Code shows the model for a Stop hook's {"decision": "block", "reason": ...}:
    assert "Stop hook blocking error from command:" in continued[0]
    assert "agent-comms: 1 new event(s) for you" in continued[0]
    # Continued once only: the last answer ended the turn although stop_hook_active was set.
    assert sum("one more before you stop" in json.dumps(r.get("messages", [])[-1:]) for r in model.requests) == 1


async def test_an_informational_event_does_not_continue_a_finished_turn(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A DM sent with streamingBehavior info, waiting when the turn ends, does not continue it: the run ends after
    one answer, and the DM stays unread (its sender keeps "delivered")."""
    gate = threading.Event()
    first_arrived = threading.Event()

    def respond(request: dict[str, Any], number: int) -> Answer:
        if number == 0:
            first_arrived.set()
            gate.wait(timeout=DEADLINE)
        return text("Nothing to do.")

    with running(ScriptedModel(respond)) as model, reported(model), trio.fail_after(DEADLINE):
        claude, env = await trio.to_thread.run_sync(session_env, tmp_path, monkeypatch, model)
        async with agent_comms.open_agent("test", "sender", cwd=str(tmp_path / "sender")) as sender:
            async with trio.open_nursery() as nursery:
                done: list[Any] = []

                async def run_claude() -> None:
                    done.append(
                        await trio.run_process(
                            [str(claude), "-p", "say hi"],
                            cwd=tmp_path / "project",
                            env=env,
                            stdin=b"",
                            capture_stdout=True,
                            capture_stderr=True,
                            check=False,
                        )
                    )

                nursery.start_soon(run_claude)
                await trio.to_thread.run_sync(first_arrived.wait, abandon_on_cancel=True)
                await wait_for_the_session(sender)
                sent = await sender.call(
                    {"action": "dm", "target": "claude-code-project", "content": "just so you know",
                     "streamingBehavior": "info"}
                )  # fmt: skip
                assert not sent.is_error, sent.text
                receipts = Receipts(sender)
                await receipts.wait(sent.data["message_id"], "delivered", "read")
                gate.set()
            [result] = done
            for event in sender.drain():  # receipts that came since
                if event.type == "delivery_status":
                    receipts.status[event.message_id] = event.status
    assert result.returncode == 0, result.stderr.decode()
    main_turn = [r for r in model.requests if r.get("tools")]
    assert len(main_turn) == 1, [json.dumps(r)[-300:] for r in main_turn]
    assert "just so you know" not in json.dumps(model.requests)
    assert receipts.status[sent.data["message_id"]] == "delivered"


async def test_the_stop_hook_continues_the_turn_in_claude_p(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A DM that reached the bridge while the model wrote its last answer continues the turn; the sender gets read."""
    gate = threading.Event()
    first_arrived = threading.Event()

    def respond(request: dict[str, Any], number: int) -> Answer:
        if number == 0:
            first_arrived.set()
            gate.wait(timeout=DEADLINE)
        return text("Done.")

    with running(ScriptedModel(respond)) as model, trio.fail_after(DEADLINE):
        claude, env = await trio.to_thread.run_sync(session_env, tmp_path, monkeypatch, model)
        async with agent_comms.open_agent("test", "sender", cwd=str(tmp_path / "sender")) as sender:
            async with trio.open_nursery() as nursery:
                done: list[Any] = []

                async def run_claude() -> None:
                    done.append(
                        await trio.run_process(
                            [str(claude), "-p", "say hi"],
                            cwd=tmp_path / "project",
                            env=env,
                            stdin=b"",
                            capture_stdout=True,
                            capture_stderr=True,
                            check=False,
                        )
                    )

                nursery.start_soon(run_claude)
                await trio.to_thread.run_sync(first_arrived.wait, abandon_on_cancel=True)
                await wait_for_the_session(sender)
                receipts = Receipts(sender)
                message_id = await dm_the_session(receipts, "caught at the end")
                gate.set()
                await receipts.wait(message_id, "read")
            [result] = done
    assert result.returncode == 0, result.stderr.decode()
    assert any("caught at the end" in json.dumps(r) for r in model.requests[1:])
    assert "caught at the end" not in json.dumps(model.requests[0])


async def test_a_dm_kept_while_the_agent_was_away_comes_with_the_first_prompt(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """An orchestrator DMs the agent of a project between two ``claude -p`` runs; the mesh keeps it, the next run's
    bridge gets it as it joins, and the UserPromptSubmit hook (which waits for the bridge that is starting) puts it
    in the very first request, before the tool may even be there."""

    def respond(request: dict[str, Any], number: int) -> Answer:
        return text("Done.")

    with running(ScriptedModel(respond)) as model, reported(model), trio.fail_after(DEADLINE):
        claude, env = await trio.to_thread.run_sync(session_env, tmp_path, monkeypatch, model)

        async def run(prompt: str) -> None:
            result = await trio.run_process(
                [str(claude), "-p", prompt], cwd=tmp_path / "project", env=env, stdin=b"",
                capture_stdout=True, capture_stderr=True, check=False,
            )  # fmt: skip
            assert result.returncode == 0, result.stderr.decode()

        async with agent_comms.open_agent("test", "sender", cwd=str(tmp_path / "sender")) as sender:
            async with trio.open_nursery() as nursery:
                nursery.start_soon(run, "first run")
                await wait_for_the_session(sender)  # the agent of the project exists on the mesh
            while "claude-code-project (" in (await sender.call({"action": "list_agents"})).text:  # noqa: ASYNC110
                await trio.sleep(0.05)  # the run ended: the agent is away
            sent = await sender.call(
                {"action": "dm", "target": "claude-code-project", "content": "while you were away"}
            )
            assert not sent.is_error, sent.text
            first = len(model.requests)
            await run("second run")
            receipts = Receipts(sender)
            await receipts.wait(sent.data["message_id"], "read")
    second_run = [r for r in model.requests[first:] if r.get("tools")]
    assert "while you were away" in json.dumps(second_run[0]), "not in the first request of the second run"
    assert "UserPromptSubmit hook additional context: agent-comms: 1 new event(s)" in json.dumps(second_run[0])
