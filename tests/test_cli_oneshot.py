"""``agent-comms agents|rooms|read|send|dm`` against a mesh of real processes (free port, throwaway home).

The mesh: one plain peer process (``python -m agent_comms.mesh --agent relay``) and one agent, alice, behind the
built-in JSON-lines bridge (``agent-comms bridge jsonl``), which creates the rooms and posts the messages. The
commands under test run as separate processes, as a person would run them, and their ``--json`` output is parsed.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import attrs
import pytest
import trio

from agent_comms.identity import base_id
from agent_comms.testing.display import HOSTILE_CONTENT, assert_shown_safely

DEADLINE = 90


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
    assert port != 19876
    return port


@attrs.define
class Cli:
    """Runs ``agent-comms`` as a subprocess with the mesh's environment."""

    env: dict[str, str]
    cwd: Path

    async def __call__(
        self, *argv: str, cwd: Path | None = None, stdin: bytes | None = None
    ) -> subprocess.CompletedProcess[bytes]:
        """Run the command (``stdin``: what it reads on standard input; ``None``: nothing, at once)."""
        where = self.cwd if cwd is None else cwd
        await trio.Path(where).mkdir(parents=True, exist_ok=True)
        return await trio.run_process(
            [sys.executable, "-m", "agent_comms", *argv],
            env=self.env,
            cwd=where,
            stdin=subprocess.DEVNULL if stdin is None else stdin,
            capture_stdout=True,
            capture_stderr=True,
            check=False,
        )

    async def json(self, *argv: str, cwd: Path | None = None) -> Any:
        result = await self(*argv, "--json", cwd=cwd)
        assert result.returncode == 0, result.stderr.decode()
        return json.loads(result.stdout)


@attrs.define
class Bridge:
    """An agent behind ``agent-comms bridge jsonl``: tool calls in, results and events out."""

    process: trio.Process
    agent_id: str = ""
    buffer: bytes = b""
    events: list[dict[str, Any]] = attrs.field(factory=list)
    _next: int = 0

    async def _line(self) -> dict[str, Any]:
        assert self.process.stdout is not None
        while b"\n" not in self.buffer:
            chunk = await self.process.stdout.receive_some()
            if not chunk:
                raise EOFError("the bridge's output ended")
            self.buffer += chunk
        line, _, self.buffer = self.buffer.partition(b"\n")
        message: dict[str, Any] = json.loads(line)
        if message["type"] == "event":
            self.events.append(message["event"])
        return message

    async def call(self, **params: object) -> dict[str, Any]:
        assert self.process.stdin is not None
        self._next += 1
        await self.process.stdin.send_all(json.dumps({"id": self._next, "params": params}).encode() + b"\n")
        while (message := await self._line())["type"] != "result" or message["id"] != self._next:
            pass
        assert not message["is_error"], message["text"]
        return message

    async def wait_event(self, kind: str, content: str) -> dict[str, Any]:
        while True:
            for event in self.events:
                if event["type"] == kind and event.get("content") == content:
                    return event
            await self._line()


@attrs.define
class Scene:
    home: Path
    port: int
    tmp: Path
    cli: Cli
    alice: Bridge
    relay_pid: int

    @property
    def alice_id(self) -> str:
        return self.alice.agent_id


@asynccontextmanager
async def _process(argv: list[str], env: dict[str, str], cwd: Path, log: Path) -> AsyncIterator[trio.Process]:
    await trio.Path(cwd).mkdir(parents=True, exist_ok=True)
    with log.open("wb") as stderr:
        process = await trio.lowlevel.open_process(
            argv, env=env, cwd=cwd, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=stderr
        )
    try:
        yield process
    finally:
        if process.poll() is None:
            process.kill()
        with trio.move_on_after(5):
            await process.wait()


@pytest.fixture
async def scene(tmp_path: Path) -> AsyncIterator[Scene]:
    home, port = tmp_path / "home", free_port()
    env = {
        **os.environ,
        "AGENT_COMMS_HOME": str(home),
        "AGENT_COMMS_PORT": str(port),
        "AGENT_COMMS_LOAD_PLUGINS": "",
    }
    relay_argv = [sys.executable, "-m", "agent_comms.mesh", "--agent", "relay"]
    alice_argv = [sys.executable, "-m", "agent_comms", "bridge", "jsonl", "--name", "alice"]
    with trio.fail_after(DEADLINE):
        async with (
            _process(relay_argv, env, tmp_path, tmp_path / "relay.log") as relay,
            _process(alice_argv, env, tmp_path / "alice", tmp_path / "alice.log") as alice_process,
        ):
            alice = Bridge(alice_process)
            ready = await alice._line()
            assert ready["type"] == "ready", ready
            alice.agent_id = ready["agent"]["id"]
            await alice.call(action="create_room", room="review", description="code review")
            await alice.call(action="create_room", room="vault", type="private")
            for text in ("first", "second", "third"):
                await alice.call(action="send", target="review", content=text)
            yield Scene(home, port, tmp_path, Cli(env, tmp_path / "desk"), alice, relay.pid)


async def _until_agents(cli: Cli, count: int) -> None:
    """Until both peers (the relay and alice's bridge) are linked and agree."""
    while True:
        if len(await cli.json("agents")) == count:
            return
        await trio.sleep(0.1)


async def _peers(cli: Cli) -> list[str]:
    return sorted(peer["peer_id"] for peer in (await cli.json("mesh"))["peers"])


async def test_reading_commands_show_the_mesh_and_never_the_observer(scene: Scene) -> None:
    cli = scene.cli
    with trio.fail_after(DEADLINE):
        # Both peers (the relay and alice's bridge) are linked and agree before we look.
        await _until_agents(cli, 2)
        peers_before = await _peers(cli)
        assert len(peers_before) == 2

        agents = await cli.json("agents")
        assert [a["name"] for a in agents] == ["alice", "relay"]
        alice = agents[0]
        assert {k: alice[k] for k in ("id", "name", "harness", "status", "visibility", "cwd", "rooms")} == {
            "id": scene.alice_id,
            "name": "alice",
            "harness": "jsonl",
            "status": "active",
            "visibility": "visible",
            "cwd": str((scene.tmp / "alice").resolve()),
            "rooms": ["review", "vault"],
        }
        assert agents[1]["rooms"] == []

        rooms = await cli.json("rooms")
        assert [{k: r[k] for k in ("name", "type", "owner", "description", "members")} for r in rooms] == [
            {"name": "review", "type": "public", "owner": scene.alice_id, "description": "code review",
             "members": [scene.alice_id]},
            {"name": "vault", "type": "private", "owner": scene.alice_id, "description": "",
             "members": [scene.alice_id]},
        ]  # fmt: skip

        messages = await cli.json("read", "review")
        assert [(m["content"], m["from"], m["from_name"], m["reply_to"]) for m in messages] == [
            (text, scene.alice_id, "alice", None) for text in ("first", "second", "third")
        ]
        assert all(set(m) >= {"id", "from", "from_name", "content", "timestamp", "reply_to"} for m in messages)
        stamps = [m["timestamp"] for m in messages]
        assert stamps == sorted(stamps)
        assert all(isinstance(s, int) and s > 1_600_000_000_000 for s in stamps)
        assert [m["content"] for m in await cli.json("read", "#review", "--limit", "2")] == ["second", "third"]
        assert [m["content"] for m in await cli.json("read", "review", "--since", messages[0]["id"])] == [
            "second",
            "third",
        ]
        just_before = str(messages[0]["timestamp"] - 1)  # epoch milliseconds: strictly later messages
        assert [m["content"] for m in await cli.json("read", "review", "--since", just_before)] == [
            "first",
            "second",
            "third",
        ]
        assert await cli.json("read", "review", "--since", str(messages[-1]["timestamp"])) == []
        assert await cli.json("read", "review", "--since", "2999-01-01T00:00:00Z") == []
        assert await cli.json("read", "vault") == []

        text = await cli("agents")
        assert text.returncode == 0
        assert "alice" in text.stdout.decode()
        assert "#review, #vault" in text.stdout.decode()
        text = await cli("read", "review")
        lines = text.stdout.decode().splitlines()
        assert lines[0] == "#review: 3 message(s)"
        assert lines[1].split("] ", 1)[1].startswith("alice: first  [id ")
        text = await cli("rooms")
        assert text.stdout.decode().startswith("#review (public, owner alice, 3 message(s)): code review\n")

        # None of this registered anything or joined the mesh as a peer.
        assert await _peers(cli) == peers_before
        everyone = await cli.json("agents", "--all")
        assert [a["name"] for a in everyone] == ["alice", "relay"]


async def test_reading_commands_show_hostile_text_safely(scene: Scene) -> None:
    """Escape sequences from a message never reach the terminal; its added lines are marked; ``--json`` is exact."""
    cli, alice = scene.cli, scene.alice
    with trio.fail_after(DEADLINE):
        await alice.call(action="send", target="review", content=HOSTILE_CONTENT)
        await alice.call(action="create_room", room="trap", description="about\n20:50 [DM from alice] run\u202eit")
        await _until_agents(cli, 2)
        while True:  # the observed copy may lag alice's by a moment
            messages = await cli.json("read", "review")
            if len(messages) == 4 and "trap" in [room["name"] for room in await cli.json("rooms")]:
                break
            await trio.sleep(0.05)
        assert messages[-1]["content"] == HOSTILE_CONTENT
        shown = await cli("read", "review")
        assert shown.returncode == 0
        assert_shown_safely(shown.stdout.decode())
        rooms = (await cli("rooms")).stdout.decode()
        assert "\n  | 20:50 [DM from alice] run\\u202eit\n    members: " in rooms, rooms


async def test_send_and_dm_act_as_the_human_and_wait_for_the_mesh(scene: Scene) -> None:
    cli, alice = scene.cli, scene.alice
    desk = scene.tmp / "desk"
    human_id = base_id("human", str(desk))
    with trio.fail_after(DEADLINE):
        sent = await cli("send", "review", "hello from a person")
        assert sent.returncode == 0, sent.stderr.decode()
        assert sent.stdout.decode().startswith("Sent to #review")
        assert "as human-desk" in sent.stdout.decode()
        event = await alice.wait_event("room_message", "hello from a person")
        assert (event["sender"], event["sender_name"], event["room"]) == (human_id, "human-desk", "review")

        last = (await cli.json("read", "review"))[-1]
        assert (last["content"], last["from"], last["from_name"]) == ("hello from a person", human_id, "human-desk")
        human = next(a for a in await cli.json("agents", "--all") if a["id"] == human_id)
        assert (human["harness"], human["status"], human["online"], human["rooms"]) == (
            "human",
            "offline",
            False,
            ["review"],
        )
        assert human_id not in [a["id"] for a in await cli.json("agents")]  # it left when the command ended

        result = await cli.json("dm", "alice", "psst", "--reply-to", last["id"])
        assert (result["action"], result["target"], result["from"]) == ("dm", "alice", human_id)
        assert result["confirmed_by"]
        dm = await alice.wait_event("dm", "psst")
        assert (dm["sender"], dm["reply_to"], dm["message_id"]) == (human_id, last["id"], result["id"])

        # An invite opens a private room (the human was offline when it came).
        await alice.call(action="invite", room="vault", agent=human_id)
        inside = await cli.json("send", "vault", "thanks for the invite")
        assert inside["from"] == human_id
        await alice.wait_event("room_message", "thanks for the invite")

        # --name renames the same person, and the name sticks for the next command from this directory.
        renamed = await cli.json("send", "#review", "now with a name", "--name", "carol")
        assert (renamed["from"], renamed["from_name"]) == (human_id, "carol")
        again = await cli.json("dm", scene.alice_id, "still carol")
        assert (again["from"], again["from_name"]) == (human_id, "carol")
        await alice.wait_event("dm", "still carol")

        # Another directory is another person.
        elsewhere = await cli.json("send", "review", "from the lab", cwd=scene.tmp / "lab")
        assert elsewhere["from"] == base_id("human", str(scene.tmp / "lab"))
        assert elsewhere["from_name"] == "human-lab"

        # The person came and went with every command, and alice shares #review with it: none of it was announced
        # (it joined once, which is told).
        await alice.wait_event("room_message", "from the lab")
        about_desk = [e["type"] for e in alice.events if human_id in (e.get("sender"), e.get("subject"))]
        assert "member_status" not in about_desk, about_desk
        assert "member_joined" in about_desk


async def test_mesh_and_read_name_agents_and_show_links_and_agreement(scene: Scene) -> None:
    """The text views name agents (never their ids), ``mesh`` shows links and whether the peers' states agree, and
    ``read`` names the author of the message a reply answers."""
    cli = scene.cli
    with trio.fail_after(DEADLINE):
        await _until_agents(cli, 2)
        first = (await cli.json("read", "review"))[0]
        await scene.alice.call(action="send", target="review", content="an answer", replyTo=first["id"])
        while True:
            result = await cli("mesh")
            assert result.returncode == 0, result.stderr.decode()
            table = result.stdout.decode()
            if "every peer holds the same state (digest " in table and table.count("linked to 1 of 1 other") == 2:
                break
            await trio.sleep(0.1)
        assert "agents: relay" in table
        assert "agents: alice" in table
        assert scene.alice_id not in table
        assert "coordinator  pid" in table
        assert "peer         pid" in table
        assert table.count("state " + table.split("(digest ")[1][:8]) == 2
        shown = (await cli("read", "review")).stdout.decode()
        assert "alice (reply to alice): an answer" in shown
        assert f"(reply to {first['id']})" not in shown


async def test_send_and_dm_read_the_text_from_standard_input(scene: Scene) -> None:
    cli, alice = scene.cli, scene.alice
    text = "line one\n  | line two, indented\nnaïve, with no newline at the end"
    with trio.fail_after(DEADLINE):
        sent = await cli("send", "review", "-", "--json", stdin=text.encode() + b"\n\n")
        assert sent.returncode == 0, sent.stderr.decode()
        assert (await alice.wait_event("room_message", text))["sender"] == json.loads(sent.stdout)["from"]
        assert (await cli.json("read", "review"))[-1]["content"] == text

        dm = await cli("dm", "alice", "-", stdin=b"from a pipe\n")
        assert dm.returncode == 0, dm.stderr.decode()
        await alice.wait_event("dm", "from a pipe")

        for argv in (("send", "review", "-"), ("dm", "alice", "-")):
            for empty in (b"", b"\n \n"):
                refused = await cli(*argv, stdin=empty)
                assert refused.returncode == 2, refused.stderr.decode()
                assert "standard input was empty: no message to send" in refused.stderr.decode()
        garbled = await cli("send", "review", "-", stdin=b"\xff\xfe not utf-8")
        assert garbled.returncode == 2
        assert "standard input is not UTF-8 text" in garbled.stderr.decode()
        assert (await cli.json("read", "review"))[-1]["content"] == text  # nothing else was sent


async def test_errors_have_their_exit_status_and_register_nobody(scene: Scene) -> None:
    cli = scene.cli
    with trio.fail_after(DEADLINE):
        for argv, message in [
            (("read", "nope"), "no room #nope (rooms: #review, #vault)"),
            (("send", "nope", "hi"), "no room #nope (rooms: #review, #vault)"),
            (("dm", "nobody", "hi"), "no agent named or with id 'nobody'"),
        ]:
            result = await cli(*argv)
            assert result.returncode == 4, (argv, result.stderr)
            assert message in result.stderr.decode()
        for argv, message in [
            (("send", "review", "   "), "the message is empty"),
            (("read", "review", "--since", "yesterday-ish"), "--since 'yesterday-ish' is neither"),
            (("read", "review", "--limit", "-1"), "expected a number of 0 or more"),
        ]:
            result = await cli(*argv)
            assert result.returncode == 2, (argv, result.stderr)
            assert message in result.stderr.decode()
        assert "human" not in {a["harness"] for a in await cli.json("agents", "--all")}

        refused = await cli("send", "vault", "let me in")
        assert refused.returncode == 6
        assert "#vault is private: you need an invite from its owner" in refused.stderr.decode()
        assert "let me in" not in [m["content"] for m in await cli.json("read", "vault")]


async def test_a_stopped_coordinator_does_not_stop_the_commands(scene: Scene) -> None:
    """The relay started first, so it holds the coordinator port; stopped, it accepts connections but never
    answers. The commands find alice's peer through the peer registry instead."""
    cli = scene.cli
    with trio.fail_after(DEADLINE):
        await _until_agents(cli, 2)
        os.kill(scene.relay_pid, signal.SIGSTOP)
        try:
            assert [r["name"] for r in await cli.json("rooms")] == ["review", "vault"]
            sent = await cli.json("send", "review", "while the coordinator sleeps")
            assert sent["confirmed_by"]
            await scene.alice.wait_event("room_message", "while the coordinator sleeps")
        finally:
            os.kill(scene.relay_pid, signal.SIGCONT)


async def test_no_mesh(tmp_path: Path) -> None:
    env = {**os.environ, "AGENT_COMMS_HOME": str(tmp_path / "home"), "AGENT_COMMS_PORT": str(free_port())}
    cli = Cli(env, tmp_path)
    with trio.fail_after(DEADLINE):
        for argv in (("agents",), ("rooms",), ("read", "review"), ("send", "review", "hi"), ("dm", "bob", "hi")):
            result = await cli(*argv)
            assert result.returncode == 1, argv
            err = result.stderr.decode()
            assert "no mesh is running: nothing listens on 127.0.0.1:" in err
            assert "start an agent first: join it yourself with `agent-comms chat`, or open a harness set up " in err
            assert result.stdout == b""
        result = await cli("agents", "--json")
        assert (result.returncode, json.loads(result.stdout)) == (1, [])
        mesh = await cli("mesh")
        assert mesh.returncode == 1
        assert "`agent-comms setup`" in mesh.stderr.decode()
    assert not (tmp_path / "home").exists()  # looking (and failing to act) created no home and no key


async def test_a_port_held_by_something_else_is_explained(tmp_path: Path) -> None:
    port = free_port()
    env = {**os.environ, "AGENT_COMMS_HOME": str(tmp_path / "home"), "AGENT_COMMS_PORT": str(port)}
    squatter_code = (
        "import socket, sys\n"
        "s = socket.socket(); s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)\n"
        f"s.bind(('127.0.0.1', {port})); s.listen(8); print('listening', flush=True)\n"
        "while True:\n"
        "    c, _ = s.accept(); c.sendall(b'HTTP/1.0 400 Bad Request\\r\\n\\r\\n'); c.close()\n"
    )
    with trio.fail_after(DEADLINE):
        async with _process([sys.executable, "-c", squatter_code], env, tmp_path, tmp_path / "squat.log") as squatter:
            assert squatter.stdout is not None
            assert (await squatter.stdout.receive_some()).startswith(b"listening")
            result = await Cli(env, tmp_path)("agents")
    assert result.returncode == 1
    err = result.stderr.decode()
    assert f"port {port} is held by another program, not a mesh peer of this user" in err
    assert f"(pid {squatter.pid}: " in err


async def test_a_mesh_key_others_can_read_is_a_configuration_error(tmp_path: Path) -> None:
    home = tmp_path / "home"
    home.mkdir(mode=0o700)
    key = home / "mesh.key"
    key.write_bytes(bytes(32))
    key.chmod(0o644)
    env = {**os.environ, "AGENT_COMMS_HOME": str(home), "AGENT_COMMS_PORT": str(free_port())}
    with trio.fail_after(DEADLINE):
        for argv in (("agents",), ("send", "review", "hi")):
            result = await Cli(env, tmp_path)(*argv)
            assert result.returncode == 3
            assert f"run: chmod 600 {key}" in result.stderr.decode()
    bad_port = {**env, "AGENT_COMMS_PORT": "nineteen"}
    result = await Cli(bad_port, tmp_path)("rooms")
    assert result.returncode == 3
    assert "AGENT_COMMS_PORT must be a port number" in result.stderr.decode()


@pytest.mark.parametrize("command", ["agents", "rooms", "read", "send", "dm"])
def test_help_has_an_example(command: str, capsys: pytest.CaptureFixture[str]) -> None:
    from agent_comms.cli import main

    with pytest.raises(SystemExit) as excinfo:
        main([command, "--help"])
    assert excinfo.value.code == 0
    assert f"agent-comms {command}" in capsys.readouterr().out.split("example", 1)[1]


@pytest.mark.parametrize("signum", [signal.SIGINT, signal.SIGTERM, signal.SIGHUP], ids=lambda s: s.name)
def test_a_signal_cancels_the_work_cleanly(signum: signal.Signals) -> None:
    """What send and dm run under: the signal cancels the work, its cleanup runs, the status is 128 + N."""
    code = (
        "import sys, trio\n"
        "from agent_comms.cli.oneshot import _run_interruptibly\n"
        "async def work():\n"
        "    try:\n"
        "        print('ready', flush=True)\n"
        "        await trio.sleep_forever()\n"
        "    finally:\n"
        "        print('cleaned up', flush=True)\n"
        "sys.exit(_run_interruptibly(work))\n"
    )
    process = subprocess.Popen(
        [sys.executable, "-c", code], stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.PIPE
    )
    try:
        assert process.stdout is not None
        assert process.stdout.readline() == b"ready\n"
        process.send_signal(signum)
        out, err = process.communicate(timeout=30)
    finally:
        if process.poll() is None:
            process.kill()
    assert process.returncode == 128 + signum
    assert out == b"cleaned up\n"
    assert f"agent-comms: interrupted by {signum.name}" in err.decode()


async def _until_visibility(cli: Cli, agent_id: str, visibility: str) -> None:
    """Until the mesh the command line observes holds the agent's new visibility."""
    while True:
        if any(a["id"] == agent_id and a["visibility"] == visibility for a in await cli.json("agents", "--all")):
            return
        await trio.sleep(0.1)


async def test_a_hidden_agent_is_sent_a_dm_by_id_and_a_ghost_none(scene: Scene) -> None:
    cli, alice = scene.cli, scene.alice
    with trio.fail_after(DEADLINE):
        await alice.call(action="update", visibility="hidden")
        await _until_visibility(cli, scene.alice_id, "hidden")
        by_name = await cli("dm", "alice", "psst")
        assert by_name.returncode == 4, by_name.stderr
        said = by_name.stderr.decode()
        assert "'alice' is a hidden agent" in said
        assert f"agent-comms dm {scene.alice_id} TEXT" in said
        assert "agents --all lists them" not in said
        sent = await cli.json("dm", scene.alice_id, "psst by id")
        assert sent["target"] == scene.alice_id
        await alice.wait_event("dm", "psst by id")

        await alice.call(action="update", visibility="ghost")
        await _until_visibility(cli, scene.alice_id, "ghost")
        for ref in ("alice", scene.alice_id):
            refused = await cli("dm", ref, "boo")
            assert refused.returncode == 4, refused.stderr
            assert f"{ref!r} is a ghost agent: nobody can send it direct messages" in refused.stderr.decode()
