"""Ready means synced: no bridge, ``open_agent``, ``chat`` or one-shot command acts before its first anti-entropy
round with the mesh is done, and a stopped peer holds that up only for a bounded time.

Testing policy: real processes on a private mesh (own home and free port), as a user meets them: the other agents are
``agent-comms bridge jsonl`` processes, the command under test is started fresh and its very first action is what
is checked, with no retry. Every test runs under a deadline.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager, contextmanager
from pathlib import Path
from typing import Any

import pytest
import trio

from agent_comms.testing.processes import Peer, free_port, mesh_env, open_peer

DEADLINE = 60


@pytest.fixture
def env(tmp_path: Path) -> dict[str, str]:
    return {**mesh_env(tmp_path, free_port()), "AGENT_COMMS_LOAD_PLUGINS": ""}


def is_event(kind: str, content: str) -> Any:
    def match(message: dict[str, Any]) -> bool:
        event = message.get("event") or {}
        return message.get("type") == "event" and event.get("type") == kind and event.get("content") == content

    return match


async def run_cli(env: dict[str, str], cwd: Path, *args: str, stdin: bytes = b"") -> subprocess.CompletedProcess[bytes]:
    await trio.Path(cwd).mkdir(parents=True, exist_ok=True)
    return await trio.run_process(
        [sys.executable, "-m", "agent_comms", *args],
        stdin=stdin,
        capture_stdout=True,
        capture_stderr=True,
        env=env,
        cwd=cwd,
        check=False,
    )


@asynccontextmanager
async def fresh_bridge(env: dict[str, str], cwd: Path, *first_lines: dict[str, Any]) -> AsyncIterator[Peer]:
    """A jsonl bridge process whose first input lines are written before it says anything (so before ``ready``)."""
    await trio.Path(cwd).mkdir(parents=True, exist_ok=True)
    process = await trio.lowlevel.open_process(
        [sys.executable, "-m", "agent_comms", "bridge", "jsonl", "--name", cwd.name],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        env=env,
        cwd=cwd,
    )
    try:
        async with trio.open_nursery() as nursery:
            bridge = Peer(process)
            nursery.start_soon(bridge.read_all)
            for line in first_lines:
                await bridge.send(line)
            yield bridge
            nursery.cancel_scope.cancel()
    finally:
        if process.poll() is None:
            process.kill()
        with trio.CancelScope(shield=True), trio.move_on_after(5):
            await process.wait()


@contextmanager
def stopped(pid: int) -> Iterator[None]:
    """SIGSTOP a process for the duration (it keeps its ports, answers nothing)."""
    os.kill(pid, signal.SIGSTOP)
    try:
        yield
    finally:
        os.kill(pid, signal.SIGCONT)


async def test_a_piped_chat_script_joins_talks_and_dms_at_once(tmp_path: Path, env: dict[str, str]) -> None:
    with trio.fail_after(DEADLINE):
        async with open_peer("alice", env, tmp_path / "alice") as alice:
            assert not (await alice.call(action="create_room", room="general"))["is_error"]
            result = await run_cli(
                env, tmp_path / "me", "chat", "--name", "bot", stdin=b"/join general\nhello\n/dm alice hi\n"
            )
            output = result.stdout.decode()
            assert result.returncode == 0, (output, result.stderr.decode())
            assert "Joined #general" in output, output
            assert "Error" not in output, output
            said = await alice.wait_for(is_event("room_message", "hello"))
            assert said["event"]["sender_name"] == "bot"
            await alice.wait_for(is_event("dm", "hi"))


async def test_a_fresh_jsonl_bridge_sees_the_agents_online_in_its_first_answers(
    tmp_path: Path, env: dict[str, str]
) -> None:
    with trio.fail_after(DEADLINE):
        async with open_peer("alice", env, tmp_path / "alice") as alice:
            first = [
                {"id": 1, "params": {"action": "register", "name": "newcomer"}},
                {"id": 2, "params": {"action": "list_agents"}},
            ]
            async with fresh_bridge(env, tmp_path / "newcomer", *first) as newcomer:
                registered = await newcomer.wait_for(lambda m: m.get("id") == 1)
                assert f"alice ({alice.agent_id})" in registered["text"], registered
                listed = await newcomer.wait_for(lambda m: m.get("id") == 2)
                assert alice.agent_id in listed["data"]["agents"], listed
                assert [m["type"] for m in newcomer.seen[:1]] == ["ready"]


async def test_open_agent_first_call_sees_the_existing_rooms(
    tmp_path: Path, env: dict[str, str], monkeypatch: pytest.MonkeyPatch
) -> None:
    import agent_comms

    monkeypatch.setenv("AGENT_COMMS_HOME", env["AGENT_COMMS_HOME"])
    monkeypatch.setenv("AGENT_COMMS_PORT", env["AGENT_COMMS_PORT"])
    with trio.fail_after(DEADLINE):
        async with open_peer("alice", env, tmp_path / "alice") as alice:
            assert not (await alice.call(action="create_room", room="general", type="private"))["is_error"]
            async with agent_comms.open_agent("test", "reviewer", cwd=str(tmp_path / "reviewer")) as agent:
                rooms = await agent.call({"action": "list_rooms"})
                assert "general" in rooms.text, rooms.text
                joined = await agent.call({"action": "join_room", "room": "general"})
                assert joined.is_error  # it exists, and is private
                assert "NOT_INVITED" in joined.text, joined.text


async def test_a_one_shot_send_right_after_a_scripted_agent_created_the_room(
    tmp_path: Path, env: dict[str, str]
) -> None:
    """A script pipes one line into a bridge (create the room, end of input: leave), then sends with the CLI."""
    with trio.fail_after(DEADLINE):
        async with open_peer("alice", env, tmp_path / "alice") as alice:
            create = json.dumps({"id": 1, "params": {"action": "create_room", "room": "general"}}) + "\n"
            created = await run_cli(
                env, tmp_path / "carol", "bridge", "jsonl", "--name", "carol", stdin=create.encode()
            )
            assert created.returncode == 0, created.stderr.decode()
            assert '"is_error":false' in created.stdout.decode(), created.stdout.decode()
            result = await run_cli(env, tmp_path / "me", "send", "general", "hi", "--name", "me")
            assert result.returncode == 0, result.stderr.decode()
            assert not (await alice.call(action="join_room", room="general"))["is_error"]
            history = await alice.call(action="read_room", room="general")
            assert "me (human-" in history["text"], history["text"]
            assert ": hi" in history["text"], history["text"]


@pytest.mark.parametrize("which", ["coordinator", "peer"])
async def test_a_stopped_peer_holds_readiness_up_for_a_bounded_time(
    tmp_path: Path, env: dict[str, str], monkeypatch: pytest.MonkeyPatch, which: str
) -> None:
    """A SIGSTOPped process keeps its ports and answers nothing: the handshake timeout (1 s) cuts it off."""
    import agent_comms
    from agent_comms.protocol.peer import PeerConfig

    monkeypatch.setenv("AGENT_COMMS_HOME", env["AGENT_COMMS_HOME"])
    monkeypatch.setenv("AGENT_COMMS_PORT", env["AGENT_COMMS_PORT"])
    config = PeerConfig(coordinator_port=int(env["AGENT_COMMS_PORT"]))
    with trio.fail_after(DEADLINE):
        async with open_peer("first", env, tmp_path / "first") as first, open_peer("second", env, tmp_path / "b") as b:
            await first.wait_until(b.agent_id, online=True)
            frozen, awake = (first, b) if which == "coordinator" else (b, first)
            with stopped(frozen.process.pid):
                began = trio.current_time()
                async with agent_comms.open_agent("test", "late", cwd=str(tmp_path / "late")) as agent:
                    took = trio.current_time() - began
                    print(f"ready {took:.3f} s after open_agent began, {which} stopped")
                    online = await agent.call({"action": "list_agents"})
            assert awake.agent_id in online.text, online.text
            assert took < config.ready_timeout + 0.5, took
