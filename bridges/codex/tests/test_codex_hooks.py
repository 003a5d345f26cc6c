"""Tests for the Codex hook program, ``agent-comms-codex hook EVENT``.

The program is run as Codex runs it: a fresh process, the event's JSON on stdin (with every field Codex's input
schema requires), its answer read from stdout and checked against the shape of Codex's output schema for that event
(the rules below restate codex-rs/hooks/schema/generated/*.command.output.schema.json: no other top-level keys,
``hookSpecificOutput`` with ``hookEventName`` and a string ``additionalContext``; for Stop a ``decision`` of
``block`` with a non-blank ``reason``). The inbox file stands in for a running bridge and is written by the bridge's
own writer: its ``pid`` is this test process, so it counts as alive. (The bridge writing it for real and the hook
reading it end to end is tested in test_codex_bridge.py.)
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import jsonschema  # type: ignore[import-untyped]
import pytest
from agent_comms_codex.hooks import INTRO, SESSION_START_WAIT
from agent_comms_codex.inbox import VERSION, find_inbox, inbox_path, write_inbox

BIN = Path(sys.executable).parent
HOOK = (
    [str(BIN / "agent-comms-codex")]
    if (BIN / "agent-comms-codex").exists()
    else [sys.executable, "-m", "agent_comms_codex"]
)

_COMMON = {"continue": {"type": "boolean"}, "stopReason": {"type": ["string", "null"]},
           "suppressOutput": {"type": "boolean"}, "systemMessage": {"type": ["string", "null"]}}  # fmt: skip


def context_schema(event: str) -> dict[str, Any]:
    """Codex's output schema for an event that takes ``additionalContext`` (SessionStart, UserPromptSubmit,
    PostToolUse), restated."""
    return {
        "type": "object",
        "additionalProperties": False,
        "properties": {
            **_COMMON,
            "decision": {"enum": ["block"]},
            "reason": {"type": "string"},
            "hookSpecificOutput": {
                "type": "object",
                "additionalProperties": False,
                "required": ["hookEventName"],
                "properties": {
                    "hookEventName": {"const": event},
                    "additionalContext": {"type": "string"},
                    "updatedMCPToolOutput": {},
                    "updatedToolOutput": {},
                },
            },
        },
    }


STOP_SCHEMA = {
    "type": "object",
    "additionalProperties": False,
    "properties": {**_COMMON, "decision": {"enum": ["block", None]}, "reason": {"type": ["string", "null"]}},
    "if": {"properties": {"decision": {"const": "block"}}, "required": ["decision"]},
    "then": {"properties": {"reason": {"type": "string", "pattern": ".*\\S.*"}}, "required": ["reason"]},
}


def payload(event: str, cwd: Path, **fields: Any) -> dict[str, Any]:
    """The input Codex sends for ``event``: the common fields and the event's required ones."""
    common = {
        "session_id": "0199a7c2-session",
        "transcript_path": None,
        "cwd": str(cwd),
        "hook_event_name": event,
        "model": "gpt-test",
        "permission_mode": "default",
    }
    own: dict[str, Any] = {
        "SessionStart": {"source": "startup"},
        "UserPromptSubmit": {"turn_id": "t1", "prompt": "fix the bug"},
        "PostToolUse": {
            "turn_id": "t1",
            "tool_name": "exec_command",
            "tool_use_id": "call-1",
            "tool_input": {"cmd": "ls"},
            "tool_response": "README.md",
        },
        "Stop": {"turn_id": "t1", "stop_hook_active": False, "last_assistant_message": "done"},
    }[event]
    return {**common, **own, **fields}


@pytest.fixture
def env(tmp_path: Path) -> dict[str, str]:
    return {**os.environ, "AGENT_COMMS_HOME": str(tmp_path / "home")}


@pytest.fixture
def project(tmp_path: Path) -> Path:
    path = tmp_path / "project"
    path.mkdir()
    return path


def event(n: int, kind: str = "dm", streaming: str = "steer") -> dict[str, Any]:
    line = f"[DM from alice (codex-a)] message number {n}  [id m{n}]" if kind == "dm" else f"[#lobby] bob joined {n}"
    return {"id": f"e{n}", "type": kind, "streaming": streaming, "line": line}


def write(env: dict[str, str], cwd: Path, events: list[dict[str, Any]], *, pid: int | None = None) -> Path:
    path = inbox_path(pid or os.getpid(), env)
    write_inbox(
        path,
        {
            "version": VERSION,
            "pid": pid or os.getpid(),
            "harness_pid": os.getppid(),
            "agent_id": "codex-b",
            "name": "bob",
            "cwd": str(cwd),
            "updated": time.time(),
            "waiting": len(events),
            "events": events,
        },
    )
    return path


def hook(name: str, data: Any, env: dict[str, str]) -> dict[str, Any] | None:
    """Run the hook; its parsed answer (``None`` for an empty stdout), checked against Codex's output schema."""
    done = subprocess.run(
        [*HOOK, "hook", name],
        input=data if isinstance(data, str) else json.dumps(data),
        capture_output=True,
        text=True,
        env=env,
        timeout=30,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    if not done.stdout.strip():
        return None
    answer: dict[str, Any] = json.loads(done.stdout)
    jsonschema.validate(answer, STOP_SCHEMA if name == "Stop" else context_schema(name))
    return answer


def context(answer: dict[str, Any] | None) -> str:
    assert answer is not None
    text: str = answer["hookSpecificOutput"]["additionalContext"]
    return text


def test_post_tool_use_announces_new_events_once(env: dict[str, str], project: Path) -> None:
    write(env, project, [event(1)])
    text = context(hook("PostToolUse", payload("PostToolUse", project), env))
    assert "message number 1" in text
    assert "bob (codex-b)" in text
    assert "agent_comms" in text
    assert hook("PostToolUse", payload("PostToolUse", project), env) is None  # already announced
    write(env, project, [event(1), event(2)])
    text = context(hook("PostToolUse", payload("PostToolUse", project), env))
    assert "message number 2" in text
    assert "message number 1" not in text
    # Another session in the same directory has its own notices.
    assert "message number 1" in context(hook("PostToolUse", payload("PostToolUse", project, session_id="s2"), env))


def test_post_tool_use_of_our_own_tool_says_nothing(env: dict[str, str], project: Path) -> None:
    write(env, project, [event(1)])
    assert hook("PostToolUse", payload("PostToolUse", project, tool_name="mcp__agent-comms__agent_comms"), env) is None
    assert hook("PostToolUse", payload("PostToolUse", project), env) is not None  # still new for other tools


def test_user_prompt_submit_lists_everything_waiting(env: dict[str, str], project: Path) -> None:
    write(env, project, [event(1), event(2, "member_joined", "info")])
    hook("PostToolUse", payload("PostToolUse", project), env)
    text = context(hook("UserPromptSubmit", payload("UserPromptSubmit", project), env))
    assert "message number 1" in text
    assert "bob joined 2" in text
    write(env, project, [])
    assert hook("UserPromptSubmit", payload("UserPromptSubmit", project), env) is None


def test_session_start_introduces_the_agent(env: dict[str, str], project: Path) -> None:
    write(env, project, [])
    text = context(hook("SessionStart", payload("SessionStart", project), env))
    assert "bob (codex-b)" in text
    assert "agent_comms" in text


def test_stop_continues_the_turn_for_a_message_that_asks_for_action(env: dict[str, str], project: Path) -> None:
    write(env, project, [event(1, "member_joined", "info"), event(2, "dm", "info")])
    assert hook("Stop", payload("Stop", project), env) is None  # nothing that asks for action
    write(env, project, [event(1, "member_joined", "info"), event(2, "dm", "info"), event(3, "dm", "followUp")])
    assert hook("Stop", payload("Stop", project, stop_hook_active=True), env) is None  # already continuing: no loop
    answer = hook("Stop", payload("Stop", project), env)
    assert answer is not None
    assert answer["decision"] == "block"
    assert "message number 3" in answer["reason"]
    assert hook("Stop", payload("Stop", project), env) is None  # announced once


def test_no_bridge_no_answer(env: dict[str, str], project: Path, tmp_path: Path) -> None:
    for name in ("UserPromptSubmit", "PostToolUse", "Stop"):
        assert hook(name, payload(name, project), env) is None
    # SessionStart waits a little for the bridge Codex is starting, then introduces the tool without a name.
    start = time.monotonic()
    assert context(hook("SessionStart", payload("SessionStart", project), env)) == INTRO
    assert SESSION_START_WAIT <= time.monotonic() - start < SESSION_START_WAIT + 10
    write(env, tmp_path / "elsewhere", [event(1)])  # a bridge of another directory
    assert hook("PostToolUse", payload("PostToolUse", project), env) is None


def test_the_inbox_of_a_dead_bridge_is_ignored_and_removed(env: dict[str, str], project: Path) -> None:
    done = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    dead = int(done.stdout)
    path = write(env, project, [event(1)], pid=dead)
    assert hook("PostToolUse", payload("PostToolUse", project), env) is None
    assert not path.exists()


def test_the_bridge_of_this_codex_wins_over_another_in_the_same_directory(
    env: dict[str, str], project: Path, tmp_path: Path
) -> None:
    mine = write(env, project, [event(1)])  # harness_pid: this process's parent, an ancestor of the hook
    other = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        path = inbox_path(other.pid, env)
        write_inbox(path, {**json.loads(mine.read_text()), "pid": other.pid, "harness_pid": 1, "updated": 2e9})
        found = find_inbox(str(project), environ=env)
        assert found is not None
        assert found["pid"] == os.getpid()
        found = find_inbox(str(project), environ=env, ancestors=[1])
        assert found is not None
        assert found["pid"] == other.pid
    finally:
        other.kill()
        other.wait()


def test_bad_input_never_breaks_the_session(env: dict[str, str], project: Path) -> None:
    for data in ("not json", "[1, 2]", json.dumps({"hook_event_name": "PostToolUse"})):
        done = subprocess.run([*HOOK, "hook", "PostToolUse"], input=data, capture_output=True, text=True, env=env)
        assert (done.returncode, done.stdout) == (0, ""), data
        assert "agent-comms-codex hook PostToolUse" in done.stderr
    done = subprocess.run([*HOOK, "hook", "Nope"], input="{}", capture_output=True, text=True, env=env)
    assert done.returncode == 2
    assert "usage" in done.stderr


def test_the_hook_is_quick(env: dict[str, str], project: Path) -> None:
    """Codex runs it after every tool call: it must not import the mesh, Trio or the MCP SDK."""
    write(env, project, [event(1)])
    code = (
        "import sys, agent_comms_codex.hooks; "
        "print(sorted(m for m in ('trio', 'mcp', 'tomlkit', 'agent_comms.mesh') if m in sys.modules))"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, check=True)
    assert done.stdout.strip() == "[]"


def test_session_start_waits_for_the_bridge_codex_is_starting(env: dict[str, str], project: Path) -> None:
    """Codex runs SessionStart while its bridge is still joining the mesh: the hook waits for the inbox to appear."""
    process = subprocess.Popen(
        [*HOOK, "hook", "SessionStart"],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=env,
    )
    assert process.stdin is not None
    process.stdin.write(json.dumps(payload("SessionStart", project)))
    process.stdin.close()
    time.sleep(1.0)
    write(env, project, [event(1)])
    assert process.stdout is not None
    stdout = process.stdout.read()
    assert process.wait(timeout=30) == 0
    text = json.loads(stdout)["hookSpecificOutput"]["additionalContext"]
    assert "bob (codex-b)" in text
    assert "message number 1" in text


def test_records_of_old_sessions_are_forgotten(env: dict[str, str], project: Path, tmp_path: Path) -> None:
    write(env, project, [event(1)])
    old = tmp_path / "home" / "codex" / "notified-0123456789abcdef.json"
    old.write_text("[]")
    os.utime(old, (time.time() - 8 * 24 * 3600,) * 2)
    assert hook("PostToolUse", payload("PostToolUse", project), env) is not None
    assert not old.exists()
    assert len(list(old.parent.glob("notified-*.json"))) == 1  # this session's


def test_two_sessions_in_one_directory_never_see_each_others_inbox(env: dict[str, str], project: Path) -> None:
    """Sessions A and B: two Codex processes in one directory, B's bridge late. Until B's inbox is there, B's
    hooks say nothing of A's events; B's SessionStart waits for B's own bridge and introduces B's agent."""
    session_a = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])  # A's Codex
    bridge_a = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])  # A's bridge
    try:
        path = inbox_path(bridge_a.pid, env)
        write_inbox(
            path,
            {
                "version": VERSION,
                "pid": bridge_a.pid,
                "harness_pid": session_a.pid,
                "agent_id": "codex-a",
                "name": "anna",
                "cwd": str(project),
                "updated": time.time(),
                "waiting": 1,
                "events": [{**event(1), "line": "[DM from carol (codex-c)] for A only  [id m1]"}],
            },
        )
        b = {"session_id": "session-b"}
        for name in ("UserPromptSubmit", "PostToolUse", "Stop"):
            assert hook(name, payload(name, project, **b), env) is None, name
        starting = subprocess.Popen(
            [*HOOK, "hook", "SessionStart"],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            env=env,
        )
        stdout, stderr = starting.communicate(json.dumps(payload("SessionStart", project, **b)), timeout=30)
        assert json.loads(stdout)["hookSpecificOutput"]["additionalContext"] == INTRO, stderr  # B's bridge: not yet
        starting = subprocess.Popen(
            [*HOOK, "hook", "SessionStart"],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            env=env,
        )
        assert starting.stdin is not None
        starting.stdin.write(json.dumps(payload("SessionStart", project, **b)))
        starting.stdin.close()
        write(env, project, [event(2)])  # B's bridge (its harness: an ancestor of B's hooks) comes up
        assert starting.stdout is not None
        text = json.loads(starting.stdout.read())["hookSpecificOutput"]["additionalContext"]
        assert starting.wait(timeout=30) == 0
        assert "bob (codex-b)" in text
        assert "message number 2" in text
        assert "for A only" not in text
        assert "anna (codex-a)" not in text
    finally:
        for process in (session_a, bridge_a):
            process.kill()
            process.wait()


@pytest.mark.parametrize("target", ["home", "codex", "inbox"])
@pytest.mark.parametrize(
    "change",
    [
        "mode",
        pytest.param(
            "owner",
            marks=pytest.mark.skipif(os.geteuid() != 0, reason="plays another user with chown, which needs root"),
        ),
    ],
)
def test_hooks_refuse_an_inbox_others_could_plant(
    env: dict[str, str], project: Path, tmp_path: Path, target: str, change: str
) -> None:
    """The mesh's checks of AGENT_COMMS_HOME, in the hook: a home, ``codex`` folder or inbox file another user owns
    or may write is refused (a message on stderr) and nothing reaches the model. The tests run as root, so chown
    plays the other user."""
    inbox = write(env, project, [event(1)])
    path = {"home": tmp_path / "home", "codex": inbox.parent, "inbox": inbox}[target]
    if change == "mode":
        os.chmod(path, 0o777 if path.is_dir() else 0o666)
    else:
        os.chown(path, 65534, -1)
    for name in ("SessionStart", "UserPromptSubmit", "PostToolUse", "Stop"):
        done = subprocess.run(
            [*HOOK, "hook", name],
            input=json.dumps(payload(name, project)),
            capture_output=True,
            text=True,
            env=env,
            timeout=30,
            check=False,
        )
        assert (done.returncode, done.stdout) == (0, ""), (name, done)
        assert f"agent-comms-codex hook {name}: UnsafePathError: {path}" in done.stderr, done.stderr
        assert ("belongs to another user" if change == "owner" else "other users (mode 0") in done.stderr


def test_hooks_refuse_an_inbox_that_is_a_link(env: dict[str, str], project: Path, tmp_path: Path) -> None:
    inbox = write(env, project, [event(1)])
    copy = tmp_path / "copy.json"
    copy.write_bytes(inbox.read_bytes())
    os.chmod(copy, 0o600)
    inbox.unlink()
    inbox.symlink_to(copy)
    done = subprocess.run(
        [*HOOK, "hook", "PostToolUse"],
        input=json.dumps(payload("PostToolUse", project)),
        capture_output=True,
        text=True,
        env=env,
        timeout=30,
        check=False,
    )
    assert (done.returncode, done.stdout) == (0, ""), done
    assert "symbolic link" in done.stderr


def test_the_inbox_is_written_through_a_new_private_file(env: dict[str, str], project: Path, tmp_path: Path) -> None:
    """0600 from its creation whatever the umask, never through a link planted at a temporary name."""
    path = inbox_path(os.getpid(), env)
    path.parent.mkdir(mode=0o700, parents=True)
    path.parent.parent.chmod(0o700)
    victim = tmp_path / "victim"
    path.with_name(f".{path.name}.tmp").symlink_to(victim)  # the temporary name of earlier versions
    old = os.umask(0)
    try:
        write(env, project, [event(1)])
    finally:
        os.umask(old)
    assert not victim.exists()
    assert os.stat(path).st_mode & 0o777 == 0o600
    assert context(hook("PostToolUse", payload("PostToolUse", project), env))
