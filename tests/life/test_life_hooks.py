"""Late morning: two Claude Code sessions in one directory, and a hook whose own bridge is not up yet.

Claude Code starts a session's MCP server (its bridge) and runs the session's hooks; a hook can come before the
bridge is up. Each session is played by a process of its own (a stand-in for that Claude Code process, named by
``--harness-pid``), the bridge is ``agent-comms bridge claude-code`` spoken to over MCP's stdio, and the hook is
``agent-comms-claude-code-hook`` run with the JSON Claude Code gives it, from the test process (another Claude Code
process: the late session's). A hook never shows, nor marks read, another session's events.

The hook runs on the real clock: it may sleep while it waits for its bridge, and Python's ``time.sleep`` fails
under libfaketime 0.9.10.
"""

from __future__ import annotations

import json
import os
import sys
from functools import partial
from pathlib import Path
from typing import Any

import pytest
from life_helpers import Day, Process, open_day, scale, until

pytest.importorskip("agent_comms_claude_code", reason="the Claude Code bridge (bridges/claude-code) is not installed")

PROTOCOL = "2025-06-18"
SECRET = "for session A only: the deploy key rotates at noon"


class McpSession(Process):
    """A Claude Code session's bridge: ``agent-comms bridge claude-code``, spoken to as an MCP client."""

    _next_id = 0

    async def request(self, method: str, params: dict[str, Any]) -> dict[str, Any]:
        self._next_id += 1
        request_id = self._next_id
        start = len(self.seen)
        await self.send({"jsonrpc": "2.0", "id": request_id, "method": method, "params": params})
        answer = await self.wait_seen(lambda m: m.get("id") == request_id and "method" not in m, start=start)
        if "error" in answer:
            raise AssertionError(f"{self.name}: {method} answered {answer['error']}")
        result: dict[str, Any] = answer["result"]
        return result

    async def initialize(self) -> None:
        await self.request(
            "initialize",
            {"protocolVersion": PROTOCOL, "capabilities": {}, "clientInfo": {"name": "life", "version": "0"}},
        )
        await self.send({"jsonrpc": "2.0", "method": "notifications/initialized"})


async def start_session(day: Day, session: str, cwd: Path) -> tuple[McpSession, str]:
    """Claude Code session ``session`` in ``cwd``: its stand-in process and its bridge; the bridge and agent id."""
    claude = await day.spawn(f"claude-{session}", ["cat"], cwd=cwd, env=dict(os.environ))
    command = [sys.executable, "-m", "agent_comms", "bridge", "claude-code", "--harness-pid", str(claude.pid)]
    env = day.env(CLAUDE_CODE_SESSION_ID=session, AGENT_COMMS_LOAD_PLUGINS="claude-code")
    bridge = await day.spawn(
        f"bridge-{session}", [*command, "--name", f"session-{session}"], cwd=cwd, env=env, kind=McpSession
    )
    assert isinstance(bridge, McpSession)
    await bridge.initialize()
    record = await until(partial(_registration, day, session))
    return bridge, str(record["agent_id"])


async def _registration(day: Day, session: str) -> dict[str, Any] | None:
    for path in (day.home / "claude-code").glob("*.json"):
        try:
            record: dict[str, Any] = json.loads(path.read_text())
        except (OSError, ValueError):
            continue
        if record.get("session_id") == session:
            return record
    return None


async def hook(day: Day, session: str, cwd: Path, event: str = "UserPromptSubmit") -> str:
    """Run the hook of ``session`` for ``event`` as Claude Code does; the context it adds (empty: none)."""
    payload = {
        "session_id": session,
        "transcript_path": str(cwd / f"{session}.jsonl"),
        "cwd": str(cwd),
        "permission_mode": "default",
        "hook_event_name": event,
        "prompt": "carry on",
    }
    env = {**os.environ, "AGENT_COMMS_HOME": str(day.home), "AGENT_COMMS_PORT": str(day.port)}
    done = await day.run_command(
        f"hook of session {session}",
        [sys.executable, "-m", "agent_comms_claude_code.hook"],
        cwd=cwd,
        env=env,
        stdin=json.dumps(payload).encode(),
    )
    assert done.returncode == 0, f"the hook of session {session} exited {done.returncode}"
    if not done.stdout.strip():
        return ""
    context: str = json.loads(done.stdout)["hookSpecificOutput"]["additionalContext"]
    return context


async def test_a_hook_of_a_session_whose_bridge_is_late(tmp_path: Path) -> None:
    async with open_day(tmp_path, seconds=scale(120, 600)) as day:
        app = day.directory("app")
        async with day.step("alice starts; session A of Claude Code starts in work/app with its bridge"):
            alice = await day.agent("alice", "api")
            _bridge_a, a_id = await start_session(day, "A", app)
        async with day.step("alice DMs session A's agent; A's bridge has it"):
            await until(lambda: _listed(alice, a_id))
            sent = (await alice.ok(action="dm", target=a_id, content=SECRET))["data"]["message_id"]
            await alice.event(
                lambda e: (
                    e.get("type") == "delivery_status" and e.get("message_id") == sent and e["status"] == "delivered"
                )
            )
        for n in range(scale(1, 3)):
            async with day.step(
                f"session B's hook runs in work/app before B's bridge is up: it shows nothing of A's ({n})"
            ):
                context = await hook(day, f"B{n}", app)
                assert SECRET not in context, f"session B{n}'s hook showed session A's DM:\n{context}"
        async with day.step("session B's bridge comes up late; B's hook still shows nothing of A's"):
            _bridge_b, b_id = await start_session(day, "B", app)
            assert b_id != a_id
            context = await hook(day, "B", app)
            assert SECRET not in context, f"session B's hook showed session A's DM:\n{context}"
        async with day.step("alice DMs session B: B's hook shows it, and nothing of A's"):
            await until(lambda: _listed(alice, b_id))
            to_b = (await alice.ok(action="dm", target=b_id, content="for session B"))["data"]["message_id"]
            await alice.event(
                lambda e: (
                    e.get("type") == "delivery_status" and e.get("message_id") == to_b and e["status"] == "delivered"
                )
            )
            context = await hook(day, "B", app)
            assert "for session B" in context
            assert SECRET not in context, f"session B's hook showed session A's DM:\n{context}"
        async with day.step("session A's own hook shows A's DM, once, and alice hears it was read"):
            context = await hook(day, "A", app)
            assert context.count(SECRET) == 1, f"session A's hook showed:\n{context!r}"
            await alice.event(
                lambda e: e.get("type") == "delivery_status" and e.get("message_id") == sent and e["status"] == "read"
            )


async def _listed(agent: Any, agent_id: str) -> bool:
    return agent_id in await agent.online()
