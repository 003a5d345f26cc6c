"""Tests for the hook path: ``agent-comms-claude-code-hook`` fed the JSON Claude Code sends, against real bridges.

Testing policy: bridges are real ``agent-comms-claude-code`` processes driven by the official ``mcp`` client (which
stands in for Claude Code, as in test_claude_code_bridge.py); the hook is run as its console script with the hook
input on stdin, as Claude Code runs it, and its stdout, stderr and exit status are checked against what Claude
Code expects. The test process is the bridges' parent, so it plays Claude Code's part in the hook's search for its
bridge (a hook is a child of the Claude Code process that started the bridge).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import trio
from agent_comms_claude_code.hub import TOOL_STARTING
from agent_comms_claude_code.sessions import (
    agent_comms_home,
    ancestors,
    find_registration,
    sessions_dir,
    write_registration,
)
from claude_code_helpers import (
    DEADLINE,
    Bridge,
    Mesh,
    StandInClaude,
    hook_env,
    hooks_connected,
    message_id,
    open_mesh,
    program,
    record_spawned,
    stand_in_claude,
    text_of,
    wait_listed,
)

from agent_comms.mesh.settings import MeshSettings
from agent_comms.testing import said_receipt


@pytest.fixture
def spawned(monkeypatch: pytest.MonkeyPatch) -> list[Any]:
    return record_spawned(monkeypatch)


def hook_input(bridge: Bridge, mesh: Mesh, event: str, **fields: Any) -> dict[str, Any]:
    """What Claude Code writes to a hook's stdin (the common fields, and the event's own)."""
    return {
        "session_id": "6f1c2d4e-0000-4000-8000-000000000001",
        "transcript_path": str(mesh.tmp_path / "transcript.jsonl"),
        "cwd": str(mesh.tmp_path / bridge.name.removeprefix("claude-code-")),
        "permission_mode": "default",
        "hook_event_name": event,
        **fields,
    }


async def run_hook(mesh: Mesh, payload: dict[str, Any] | bytes, **env: str) -> subprocess.CompletedProcess[bytes]:
    data = payload if isinstance(payload, bytes) else json.dumps(payload).encode()
    return await trio.run_process(
        program("agent-comms-claude-code-hook"),
        stdin=data,
        capture_stdout=True,
        capture_stderr=True,
        env=hook_env(mesh, **env),
        check=False,
    )


async def delivered(sender: Bridge, sent: str) -> None:
    """Until the sender hears that its message reached the recipient's bridge."""
    await sender.until(lambda r: said_receipt(text_of(r), message_id(sent), "delivered"), action="whoami")


def test_the_hook_finds_agent_comms_home_as_the_mesh_does(tmp_path: Path) -> None:
    for environ in ({}, {"AGENT_COMMS_HOME": str(tmp_path / "x")}, {"AGENT_COMMS_HOME": "~/somewhere"}):
        assert agent_comms_home(environ) == MeshSettings.from_env(environ).home


def test_registrations_are_matched_by_process_then_session_never_by_directory(tmp_path: Path) -> None:
    directory = sessions_dir(tmp_path)
    directory.mkdir()
    me, parent = os.getpid(), os.getppid()
    records = [
        {"pid": me, "harness_pid": 999_999_991, "session_id": "s-1", "cwd": "/a", "socket": "x", "started": 1},
        {"pid": parent, "harness_pid": 999_999_992, "session_id": "s-2", "cwd": "/a", "socket": "y", "started": 2},
    ]
    for record in records:
        (directory / f"{record['pid']}.json").write_text(json.dumps(record))
    dead = {**records[0], "pid": 999_999_993, "socket": str(directory / "999999993.sock")}  # a killed bridge
    (directory / "999999993.json").write_text(json.dumps(dead))
    (directory / "999999993.sock").write_text("")
    assert find_registration(directory, lineage=[999_999_991], session_id="s-2", cwd="/a") == records[0]
    assert find_registration(directory, lineage=[1234], session_id="s-2", cwd="/a") == records[1]
    # Another session's bridge in the same directory is not this hook's; nor one beyond the nearest ancestors.
    assert find_registration(directory, lineage=[], session_id=None, cwd="/a") is None
    assert find_registration(directory, lineage=[], session_id="s-3", cwd="/a") is None
    assert find_registration(directory, lineage=[1, 2, 3, 999_999_991], session_id=None, cwd="/a") is None
    assert not (directory / "999999993.json").exists()  # removed on the way, with its socket
    assert not (directory / "999999993.sock").exists()
    assert ancestors()[0] == os.getppid()


async def test_user_prompt_submit_adds_the_waiting_events_as_context_once(tmp_path: Path, spawned: list[Any]) -> None:
    with trio.fail_after(DEADLINE):
        async with open_mesh(tmp_path, spawned) as mesh:
            a = await mesh.bridge("alpha")
            b = await mesh.bridge("beta")
            await wait_listed(a, b)
            sent = await a.ok(action="dm", target=b.id, content="please review PR 7", streamingBehavior="steer")
            await delivered(a, sent)
            payload = hook_input(b, mesh, "UserPromptSubmit", prompt="carry on")
            done = await run_hook(mesh, payload)
            assert done.returncode == 0, done.stderr
            output = json.loads(done.stdout)
            assert output["hookSpecificOutput"]["hookEventName"] == "UserPromptSubmit"
            context = output["hookSpecificOutput"]["additionalContext"]
            assert context.startswith(f"agent-comms: 1 new event(s) for you (claude-code-beta ({b.id}))")
            assert f"[DM from claude-code-alpha ({a.id})] please review PR 7  [id {message_id(sent)}]" in context
            assert 'action "dm"' in context
            # shown once: not by the next hook, not in a tool result; and the sender hears it was read
            again = await run_hook(mesh, payload)
            assert (again.returncode, again.stdout) == (0, b"")
            assert "please review" not in await b.ok(action="whoami")
            await a.until(lambda r: said_receipt(text_of(r), message_id(sent), "read"), action="whoami")


async def test_post_tool_use_adds_context_too(tmp_path: Path, spawned: list[Any]) -> None:
    with trio.fail_after(DEADLINE):
        async with open_mesh(tmp_path, spawned) as mesh:
            a = await mesh.bridge("alpha")
            b = await mesh.bridge("beta")
            await wait_listed(a, b)
            await a.ok(action="create_room", room="lobby")
            await b.until(lambda r: not r.is_error, action="join_room", room="lobby")
            sent = await a.ok(action="send", target="lobby", content="build is green")
            await delivered(a, sent)
            payload = hook_input(
                b,
                mesh,
                "PostToolUse",
                tool_name="Bash",
                tool_input={"command": "ls"},
                tool_response={"stdout": "x", "stderr": "", "interrupted": False},
                tool_use_id="toolu_01",
            )
            done = await run_hook(mesh, payload)
            assert done.returncode == 0, done.stderr
            output = json.loads(done.stdout)
            assert output["hookSpecificOutput"]["hookEventName"] == "PostToolUse"
            assert (
                f"[#lobby] claude-code-alpha ({a.id}): build is green"
                in output["hookSpecificOutput"]["additionalContext"]
            )


async def test_the_stop_hook_waits_for_a_message_and_wakes_the_session(tmp_path: Path, spawned: list[Any]) -> None:
    with trio.fail_after(DEADLINE):
        async with open_mesh(tmp_path, spawned) as mesh:
            a = await mesh.bridge("alpha")
            b = await mesh.bridge("beta")
            await wait_listed(a, b)
            payload = hook_input(b, mesh, "Stop", stop_hook_active=False, last_assistant_message="Done.")
            async with trio.open_nursery() as nursery:
                outcome: list[Any] = []

                async def stop_hook() -> None:
                    outcome.append(await run_hook(mesh, payload, CLAUDE_CODE_ENTRYPOINT="cli"))

                nursery.start_soon(stop_hook)
                await trio.sleep(1.0)  # the hook is waiting: an informational event does not wake it
                info = await a.ok(action="dm", target=b.id, content="fyi: lunch", streamingBehavior="info")
                await delivered(a, info)
                await trio.sleep(0.5)
                assert outcome == []
                sent = await a.ok(action="dm", target=b.id, content="wake up, beta", streamingBehavior="followUp")
            [done] = outcome
            assert done.returncode == 2, done.stderr  # asyncRewake: exit 2 wakes the model with stderr
            assert done.stdout == b""
            text = done.stderr.decode()
            assert "fyi: lunch" in text  # everything waiting comes along, in order
            assert text.index("fyi: lunch") < text.index("wake up, beta")
            assert f"[id {message_id(sent)}]" in text
            await a.until(lambda r: said_receipt(text_of(r), message_id(sent), "read"), action="whoami")


async def test_a_prompt_lets_the_waiting_stop_hook_go(tmp_path: Path, spawned: list[Any]) -> None:
    with trio.fail_after(DEADLINE):
        async with open_mesh(tmp_path, spawned) as mesh:
            b = await mesh.bridge("beta")
            stop = hook_input(b, mesh, "Stop", stop_hook_active=False)
            async with trio.open_nursery() as nursery:
                outcome: list[Any] = []

                async def stop_hook() -> None:
                    outcome.append(await run_hook(mesh, stop, CLAUDE_CODE_ENTRYPOINT="cli"))

                nursery.start_soon(stop_hook)
                await trio.sleep(1.0)
                prompt = await run_hook(mesh, hook_input(b, mesh, "UserPromptSubmit", prompt="next task"))
                assert (prompt.returncode, prompt.stdout) == (0, b"")
            [done] = outcome
            assert (done.returncode, done.stdout, done.stderr) == (0, b"", b"")
            # Not interactive (claude -p): the Stop hook does not wait at all.
            with trio.fail_after(10):
                quick = await run_hook(mesh, stop, CLAUDE_CODE_ENTRYPOINT="sdk-cli")
            assert (quick.returncode, quick.stdout, quick.stderr) == (0, b"", b"")


async def test_events_a_hook_took_but_did_not_confirm_come_back(tmp_path: Path, spawned: list[Any]) -> None:
    """A hook killed between taking events and confirming it printed them: the events are offered again."""
    with trio.fail_after(DEADLINE):
        async with open_mesh(tmp_path, spawned) as mesh:
            a = await mesh.bridge("alpha")
            b = await mesh.bridge("beta")
            await wait_listed(a, b)
            sent = await a.ok(action="dm", target=b.id, content="do not lose me")
            await delivered(a, sent)
            records = [json.loads(p.read_text()) for p in sessions_dir(mesh.home).glob("*.json")]
            assert sorted(r["agent_id"] for r in records) == sorted([a.id, b.id])
            [record] = [r for r in records if r["agent_id"] == b.id]
            assert record["pid"] == b.process.pid
            assert os.stat(record["socket"]).st_mode & 0o777 == 0o600
            assert os.stat(sessions_dir(mesh.home)).st_mode & 0o777 == 0o700
            async with await trio.open_unix_socket(record["socket"]) as stream:
                await stream.send_all(b'{"op": "take", "event": "PostToolUse"}\n')
                data = b""
                while not data.endswith(b"\n"):
                    data += await stream.receive_some()
                assert "do not lose me" in json.loads(data)["text"]
            # closed without {"op": "shown"}: the DM was not shown and is offered again, to the next taker
            shown = await b.until(lambda r: "do not lose me" in text_of(r), action="whoami")
            assert shown.count("do not lose me") == 1


async def test_hooks_without_a_bridge_or_with_bad_input(tmp_path: Path) -> None:
    mesh = Mesh(tmp_path, None, [])  # type: ignore[arg-type]  # only its environment is used
    with trio.fail_after(60):
        payload = {"session_id": "s", "cwd": str(tmp_path), "hook_event_name": "UserPromptSubmit", "prompt": "hi"}
        alone = await run_hook(mesh, payload)
        assert (alone.returncode, alone.stdout, alone.stderr) == (0, b"", b"")
        other = await run_hook(mesh, {**payload, "hook_event_name": "Notification"})
        assert (other.returncode, other.stdout) == (0, b"")
        bad = await run_hook(mesh, b"{not json")
        assert bad.returncode == 1
        assert b"the hook input is not JSON" in bad.stderr
        wrong = await run_hook(mesh, b"[1, 2]")
        assert wrong.returncode == 1
        assert b"expected a JSON object" in wrong.stderr


def test_the_hook_runs_as_a_module_too() -> None:
    """``python -m agent_comms_claude_code.hook`` (the fallback command when no script is on disk)."""
    done = subprocess.run(
        [sys.executable, "-m", "agent_comms_claude_code.hook", "--help"], capture_output=True, text=True, timeout=60
    )
    assert done.returncode == 0
    assert "UserPromptSubmit" in done.stdout


def session_input(mesh: Mesh, session_id: str, event: str, **fields: Any) -> dict[str, Any]:
    """What Claude Code writes to the stdin of a hook of the session ``session_id`` in ``tmp_path/project``."""
    return {
        "session_id": session_id,
        "transcript_path": str(mesh.tmp_path / f"{session_id}.jsonl"),
        "cwd": str(mesh.tmp_path / "project"),
        "permission_mode": "default",
        "hook_event_name": event,
        **fields,
    }


@pytest.mark.skipif(not Path("/proc/net/unix").exists(), reason="watches the hook connections in /proc/net/unix")
async def test_two_sessions_in_one_directory_never_reach_each_others_bridge(tmp_path: Path, spawned: list[Any]) -> None:
    """Sessions A and B: two Claude Code processes in one directory, B's bridge late. Until it is up, B's hooks get
    nothing from A's bridge (no DM of A shown or marked read, A's waiting Stop hook left alone); B's Stop hook waits
    for its own bridge and wakes with B's DM, A's with A's."""
    hook = program("agent-comms-claude-code-hook")
    outcome: dict[str, subprocess.CompletedProcess[bytes]] = {}
    finished = {"a": trio.Event(), "b": trio.Event()}
    any_finished = trio.Event()
    with trio.fail_after(DEADLINE):
        async with (
            stand_in_claude() as claude_a,
            stand_in_claude() as claude_b,
            stand_in_claude() as claude_s,
            trio.open_nursery() as nursery,
            open_mesh(tmp_path, spawned) as mesh,  # inside: the bridges end before their stand-ins
        ):

            async def stop_hook(session: str, claude: StandInClaude) -> None:
                data = json.dumps(session_input(mesh, f"session-{session}", "Stop", stop_hook_active=False))
                outcome[session] = await claude.run(hook, data.encode(), hook_env(mesh, CLAUDE_CODE_ENTRYPOINT="cli"))
                finished[session].set()
                any_finished.set()

            a = await mesh.bridge(
                "project", "--harness-pid", str(claude_a.pid), env={"CLAUDE_CODE_SESSION_ID": "session-a"}
            )
            sender = await mesh.bridge("sender", "--harness-pid", str(claude_s.pid))
            await wait_listed(sender, a)
            [socket] = [
                r["socket"]
                for p in sessions_dir(mesh.home).glob("*.json")
                if (r := json.loads(p.read_text()))["agent_id"] == a.id
            ]
            info = await sender.ok(action="dm", target=a.id, content="for A: fyi", streamingBehavior="info")
            await delivered(sender, info)
            nursery.start_soon(stop_hook, "a", claude_a)
            while not hooks_connected(socket):  # noqa: ASYNC110 - until A's Stop hook waits on A's bridge
                await trio.sleep(0.05)
            # B's session, before its bridge is up: nothing, and A's bridge untouched
            for event, fields in (
                ("UserPromptSubmit", {"prompt": "next"}),
                ("PostToolUse", {"tool_name": "Bash", "tool_input": {}, "tool_response": {}, "tool_use_id": "t"}),
            ):
                data = json.dumps(session_input(mesh, "session-b", event, **fields)).encode()
                early = await claude_b.run(hook, data, hook_env(mesh))
                assert (early.returncode, early.stdout, early.stderr) == (0, b"", b""), event
            nursery.start_soon(stop_hook, "b", claude_b)  # waits for B's bridge
            b = await mesh.bridge(
                "project", "--harness-pid", str(claude_b.pid), env={"CLAUDE_CODE_SESSION_ID": "session-b"}
            )
            assert b.id != a.id
            for_b = await sender.ok(action="dm", target=b.id, content="for B: act", streamingBehavior="steer")
            await any_finished.wait()
            assert "a" not in outcome, outcome["a"]  # A's Stop hook still waits: B's hooks did not cancel it
            await finished["b"].wait()
            for_a = await sender.ok(action="dm", target=a.id, content="for A: act", streamingBehavior="steer")
            await finished["a"].wait()
    done_b, done_a = outcome["b"], outcome["a"]
    assert done_b.returncode == 2, done_b.stderr
    assert f"for B: act  [id {message_id(for_b)}]" in done_b.stderr.decode()
    assert "for A" not in done_b.stderr.decode()
    assert done_a.returncode == 2, done_a.stderr
    text_a = done_a.stderr.decode()
    assert "for A: fyi" in text_a  # never shown to B, so it was still waiting for A
    assert f"for A: act  [id {message_id(for_a)}]" in text_a
    assert "for B" not in text_a


@pytest.mark.skipif(os.geteuid() != 0, reason="plays another user with chown, which needs root")
async def test_hooks_refuse_a_home_folder_registration_or_socket_others_could_plant(
    tmp_path: Path, spawned: list[Any]
) -> None:
    """The mesh's checks of AGENT_COMMS_HOME, in the hook: a home, registration folder, registration or socket
    that another user owns or may write is refused (a message on stderr, exit 1: a non-blocking error for Claude
    Code) and nothing reaches the model. The tests run as root, so chown plays the other user."""
    with trio.fail_after(DEADLINE):
        async with open_mesh(tmp_path, spawned) as mesh:
            a = await mesh.bridge("alpha")
            b = await mesh.bridge("beta")
            await wait_listed(a, b)
            sent = await a.ok(action="dm", target=b.id, content="planted or not", streamingBehavior="info")
            await delivered(a, sent)
            directory = sessions_dir(mesh.home)
            [registration] = [p for p in directory.glob("*.json") if json.loads(p.read_text())["agent_id"] == b.id]
            socket = Path(json.loads(registration.read_text())["socket"])
            payload = hook_input(b, mesh, "UserPromptSubmit", prompt="carry on")
            uid = os.getuid()

            def mode(value: int) -> Callable[[Path], None]:
                return lambda path: os.chmod(path, value)

            def owner(value: int) -> Callable[[Path], None]:
                return lambda path: os.chown(path, value, -1)

            for path, change, undo, complaint in (
                (mesh.home, mode(0o777), mode(0o700), "accessible to other users"),
                (mesh.home, owner(65534), owner(uid), "belongs to another user"),
                (directory, mode(0o770), mode(0o700), "accessible to other users"),
                (directory, owner(65534), owner(uid), "belongs to another user"),
                (registration, mode(0o666), mode(0o600), "writable by other users"),
                (registration, owner(65534), owner(uid), "belongs to another user"),
                (socket, mode(0o666), mode(0o600), "usable by other users"),
                (socket, owner(65534), owner(uid), "belongs to another user"),
            ):
                change(path)
                try:
                    refused = await run_hook(mesh, payload)
                finally:
                    undo(path)
                assert (refused.returncode, refused.stdout) == (1, b""), (path, refused)
                assert f"agent-comms-claude-code-hook: {path}".encode() in refused.stderr, refused.stderr
                assert complaint.encode() in refused.stderr, refused.stderr
            # a registration replaced by a link (to a copy that is otherwise in order) is refused too
            copy = tmp_path / "copy.json"
            copy.write_bytes(registration.read_bytes())
            os.chmod(copy, 0o600)
            registration.rename(tmp_path / "original.json")
            registration.symlink_to(copy)
            refused = await run_hook(mesh, payload)
            assert (refused.returncode, refused.stdout) == (1, b""), refused
            assert b"symbolic link" in refused.stderr
            registration.unlink()
            (tmp_path / "original.json").rename(registration)
            # all in order again: the DM was never shown, so it comes now
            done = await run_hook(mesh, payload)
            assert done.returncode == 0, done.stderr
            assert "planted or not" in json.loads(done.stdout)["hookSpecificOutput"]["additionalContext"]


def test_registrations_are_written_through_a_new_private_file(tmp_path: Path) -> None:
    """0600 from its creation whatever the umask, never through a link planted at a temporary name."""
    directory = sessions_dir(tmp_path / "home")
    directory.mkdir(mode=0o700, parents=True)
    directory.parent.chmod(0o700)
    victim = tmp_path / "victim"
    (directory / f".{os.getpid()}.json.tmp").symlink_to(victim)  # the temporary name of earlier versions
    old = os.umask(0)
    try:
        path = write_registration(directory, os.getpid(), {"pid": os.getpid(), "harness_pid": 1})
    finally:
        os.umask(old)
    assert not victim.exists()
    assert os.stat(path).st_mode & 0o777 == 0o600
    assert json.loads(path.read_text())["harness_pid"] == 1


async def test_before_claude_code_connects_the_hooks_show_what_waits_and_say_the_tool_is_starting(
    tmp_path: Path, spawned: list[Any]
) -> None:
    """``claude -p`` sends its first request before its MCP servers are connected. The bridge is on the mesh by then:
    a hook shows what waits, says the tool is still starting, and the Stop hook of a ``claude -p`` turn (no
    ``CLAUDE_CODE_ENTRYPOINT=cli``) continues the turn for a DM, not when ``stop_hook_active``."""
    with trio.fail_after(DEADLINE):
        async with open_mesh(tmp_path, spawned) as mesh:
            sender = await mesh.bridge("sender")
            early = tmp_path / "early"
            early.mkdir()
            env = {**hook_env(mesh), "AGENT_COMMS_CLAUDE_CHANNEL": "off"}
            process = await trio.lowlevel.open_process(
                program("agent-comms-claude-code"), stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                stderr=subprocess.DEVNULL, env=env, cwd=early,
            )  # fmt: skip
            try:  # no initialize is ever sent: Claude Code has not connected yet
                await sender.until(lambda r: "claude-code-early (" in text_of(r), action="list_agents")
                sent = await sender.ok(action="dm", target="claude-code-early", content="before the tool")
                await delivered(sender, sent)
                payload = {
                    "session_id": "6f1c2d4e-0000-4000-8000-000000000002",
                    "transcript_path": str(tmp_path / "t.jsonl"),
                    "cwd": str(early),
                    "permission_mode": "default",
                    "hook_event_name": "Stop",
                    "last_assistant_message": "ok",
                }
                quiet = await run_hook(mesh, {**payload, "stop_hook_active": True})
                assert (quiet.returncode, quiet.stdout) == (0, b""), quiet.stderr
                done = await run_hook(mesh, {**payload, "stop_hook_active": False})
                assert done.returncode == 0, done.stderr
                answer = json.loads(done.stdout)
                assert answer["decision"] == "block"
                assert "before the tool" in answer["reason"]
                assert TOOL_STARTING in answer["reason"]
                await sender.until(lambda r: said_receipt(text_of(r), message_id(sent), "read"), action="whoami")
                again = await run_hook(mesh, {**payload, "stop_hook_active": False})
                assert (again.returncode, again.stdout) == (0, b"")  # shown once: nothing waits any more
            finally:
                process.kill()
                await process.wait()
