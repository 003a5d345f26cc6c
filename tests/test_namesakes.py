"""Two live agents called alice: everything a person sees tells them apart, and the second one is told.

Real processes on a free port: two ``jsonl`` bridges both named alice (in two directories, so two ids), a person in
``agent-comms chat`` driven through pipes, and the one-shot commands. Where a name is shared, it is shown as
``name (short id)``: the shortest end of the id (six characters at least) that tells them apart.
"""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

import trio

from tests.test_chat import Bob, mesh_env  # noqa: F401  (mesh_env is a fixture)
from tests.test_cli_oneshot import Cli

DEADLINE = 90


@asynccontextmanager
async def bridge(env: dict[str, str], cwd: Path, name: str) -> AsyncIterator[tuple[Bob, dict[str, object]]]:
    """A ``jsonl`` bridge named ``name`` and its ready line."""
    await trio.Path(cwd).mkdir(parents=True, exist_ok=True)
    process = await trio.lowlevel.open_process(
        [sys.executable, "-m", "agent_comms", "bridge", "jsonl", "--name", name],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        env=env,
        cwd=cwd,
    )
    try:
        agent = Bob(process)
        ready = await agent._message()
        assert ready["type"] == "ready", ready
        agent.id = ready["agent"]["id"]
        yield agent, ready
    finally:
        process.kill()
        with trio.CancelScope(shield=True), trio.move_on_after(5):
            await process.wait()


async def test_agents_that_share_a_name_are_told_apart(tmp_path: Path, mesh_env: dict[str, str]) -> None:  # noqa: F811
    cli = Cli(mesh_env, tmp_path / "desk")
    with trio.fail_after(DEADLINE):
        async with (
            bridge(mesh_env, tmp_path / "one", "alice") as (first, first_ready),
            bridge(mesh_env, tmp_path / "two", "alice") as (second, second_ready),
        ):
            assert "note" not in first_ready
            one, two = first.id[-6:], second.id[-6:]
            assert one != two
            note = str(second_ready["note"])
            assert note.startswith("Note: the name alice is already in use by 1 other agent(s); ")
            assert f"people see you as alice ({two})" in note
            again = await second.call(action="register", name="alice")
            assert (
                f"\nNote: the name alice is already in use by 1 other agent(s); people see you as alice ({two})"
                in (again["text"])
            )
            assert "Note:" not in (await second.call(action="register", name="alice-2"))["text"]
            await second.call(action="register", name="alice")

            await first.call(action="create_room", room="review")
            await second.call_until_ok(action="join_room", room="review")
            chat = await trio.lowlevel.open_process(
                [sys.executable, "-m", "agent_comms", "chat", "--name", "carol"],
                stdin=subprocess.PIPE,
                stdout=subprocess.PIPE,
                stderr=subprocess.DEVNULL,
                env=mesh_env,
                cwd=tmp_path,
            )
            assert chat.stdin is not None
            assert chat.stdout is not None
            output = b""

            async def wait_for(needle: str) -> str:
                nonlocal output
                while needle.encode() not in output:
                    chunk = await chat.stdout.receive_some()  # type: ignore[union-attr]
                    assert chunk, f"the chat ended before {needle!r}: {output.decode()}"
                    output += chunk
                return output.decode()

            try:
                await wait_for("You are carol (human-")
                await chat.stdin.send_all(b"/join review\n")
                await wait_for("Joined #review.")
                sent = await first.call(action="send", target="review", content="from the first")
                assert not sent["is_error"], sent
                first_id = sent["data"]["message_id"]
                await wait_for("from the first")
                # the second alice answers what it was shown (a reply names a message its replica holds)
                await second.event(lambda event: event.get("message_id") == first_id)
                reply = await second.call(action="send", target="review", content="from the second", replyTo=first_id)
                assert not reply["is_error"], reply
                text = await wait_for("from the second")
                assert f"[#review] alice ({one}): from the first" in text
                assert f"[#review] alice ({two}) (reply to alice ({one})): from the second" in text
                await chat.stdin.aclose()
                assert await chat.wait() == 0
            finally:
                if chat.poll() is None:
                    chat.kill()
                with trio.CancelScope(shield=True), trio.move_on_after(5):
                    await chat.wait()

            read = await cli("read", "review")
            assert read.returncode == 0, read.stderr.decode()
            shown = read.stdout.decode()
            assert f"alice ({one}): from the first" in shown
            assert f"alice ({two}) (reply to alice ({one})): from the second" in shown
            rows = json.loads((await cli("read", "review", "--json")).stdout)
            assert [row["from_name"] for row in rows] == ["alice", "alice"]  # the JSON keeps the names as they are

            agents = (await cli("agents")).stdout.decode()
            assert f"alice ({one})" in agents
            assert f"alice ({two})" in agents
            rooms = (await cli("rooms")).stdout.decode()
            members = next(line for line in rooms.splitlines() if line.strip().startswith("members: "))
            expected = sorted([f"alice ({one})", f"alice ({two})", "carol"])
            assert sorted(members.split(": ", 1)[1].split(", ")) == expected
