"""Tests for ``agent-comms chat`` (``agent_comms.chat``, ``agent_comms.cli.chat``).

Testing policy: the commands and what is shown for events are tested in-process on an in-memory mesh (fast, exact).
Then the real command runs as a process on a free port with a tmp ``AGENT_COMMS_HOME``, talking to another real
agent process (``agent-comms bridge jsonl --name bob``, driven over its stdin and stdout): once on a pseudo-terminal
as a person would use it (keys in, screen bytes out; the test answers the terminal's cursor-position requests the
way a terminal does), once with pipes as a script would. With tmux installed, a test reads the rendered screen to
check that an incoming message never garbles a half-typed input line. Every test that does I/O has a deadline.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import re
import shutil
import signal
import socket
import struct
import subprocess
import sys
import termios
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any, TypeVar

import pytest
import trio
import trio.testing

from agent_comms.chat.client import LineFrontend, run_chat
from agent_comms.chat.commands import COMMANDS, Names
from agent_comms.chat.session import ChatSession
from agent_comms.display import CONTINUATION
from agent_comms.stdio import MAX_LINE
from agent_comms.testing import open_in_memory_mesh
from agent_comms.testing.display import HOSTILE_CONTENT, HOSTILE_LINES

DEADLINE = 60
T = TypeVar("T")

# ---------------------------------------------------------------- the session, on an in-memory mesh


async def test_session_talks_in_a_room_and_by_direct_message() -> None:
    async with open_in_memory_mesh() as mesh:
        human = await mesh.agent("human", name="alice", cwd="/home/alice")
        bob = await mesh.agent("jsonl", name="bob", cwd="/work/bob")
        session = ChatSession(human, echo=True)
        assert session.prompt() == "> "
        assert [line.kind for line in await session.handle("hello?")] == ["error"]

        created = await session.handle("/create lobby private the team room")
        assert [(line.kind, line.text) for line in created] == [
            ("info", "Created #lobby (private); you own it and are its first member.")
        ]
        assert session.prompt() == "#lobby> "
        assert (await session.handle("/invite bob"))[0].text.startswith("Invited bob (")
        await mesh.settle()
        assert (await bob.call({"action": "join_room", "room": "lobby"})).is_error is False

        sent = await session.handle("hello bob")
        assert [line.kind for line in sent] == ["mine"]
        assert sent[0].text.endswith("[#lobby] alice: hello bob")
        await mesh.settle()
        assert [(e.type, e.content) for e in bob.drain() if e.type == "room_message"] == [("room_message", "hello bob")]

        [switched] = await session.handle("/dm bob")
        assert (switched.kind, switched.text) == (
            "info",
            f"Talking to bob ({bob.id}) now: plain lines are direct messages.",
        )
        assert session.prompt() == "@bob> "
        assert session.room is None
        assert [line.kind for line in await session.handle("psst")] == ["mine"]
        assert [line.kind for line in await session.handle("/dm bob 'second' message")] == ["mine"]
        await mesh.settle()
        assert [e.content for e in bob.drain() if e.type == "dm"] == ["psst", "'second' message"]
        await mesh.settle()  # bob's read receipts travel back

        # Receipts of one's own DMs are shown; of room messages they are not (one per member).
        shown = [line for event in human.drain() for line in session.render_event(event)]
        assert [line.text for line in shown if line.kind == "event"] == [f"[#lobby] bob ({bob.id}) joined"]
        receipts = [line.text for line in shown if line.kind == "receipt"]
        assert any(text.endswith(": read by bob") and "psst" in text for text in receipts)
        assert not any("hello bob" in text for text in receipts)

        assert (await session.handle("/reply nobody wrote yet"))[0].kind == "error"
        await bob.call({"action": "dm", "target": "alice", "content": "are you there?"})
        await mesh.settle()
        shown = [line for event in human.drain() for line in session.render_event(event)]
        assert [line.text.split(" ", 1)[1] for line in shown if line.kind == "dm"] == ["[DM from bob] are you there?"]
        [echo] = await session.handle("/reply yes, here")
        assert echo.text.endswith("[DM to bob] yes, here")
        await mesh.settle()
        assert [e.content for e in bob.drain() if e.type == "dm"] == ["yes, here"]

        await bob.call({"action": "send", "target": "lobby", "content": "hi \x1b[2Jalice"})
        await mesh.settle()
        shown = [line for event in human.drain() for line in session.render_event(event)]
        message = [line for line in shown if line.kind == "message"]
        assert len(message) == 1
        assert message[0].text.endswith("[#lobby] bob: hi ^[[2Jalice")  # no escape sequence reaches the terminal


async def test_session_commands_and_their_errors() -> None:
    async with open_in_memory_mesh() as mesh:
        human = await mesh.agent("human", name="alice")
        session = ChatSession(human)
        help_text = "\n".join(line.text for line in await session.handle("/help"))
        for name in ("join", "leave", "rooms", "who", "dm", "switch", "read", "create", "name", "quit"):
            assert f"/{name}" in help_text
            assert name in COMMANDS

        async def one(line: str) -> tuple[str, str]:
            [answer] = await session.handle(line)
            return answer.kind, answer.text

        assert await one("/frobnicate now") == (
            "error",
            "Unknown command /frobnicate; /help lists the commands (// starts a line with /).",
        )
        kind, text = await one("/join nowhere")
        assert kind == "error"
        assert text == "Error: no room #nowhere (ROOM_NOT_FOUND); /rooms lists the rooms, /create ROOM makes one"
        assert (await one("/join"))[0] == "error"
        assert (await one("/leave"))[0] == "error"
        assert (await one("/dm nobody hi"))[1].startswith("Error: no agent named or with id 'nobody' (AGENT_NOT_FOUND)")
        assert (await one("/dm alice")) == ("error", "That is you; pick another agent (/who lists them).")
        assert (await one("/switch lobby"))[0] == "error"
        assert (await one("/status sleepy")) == ("error", "Usage: /status active|idle|busy")
        assert (await one("/create 'two words' secret"))[1] == (
            "Created #two words (secret); you own it and are its first member."
        )
        assert (await one("/name bad\u0007name"))[0] == "error"
        assert (await one("/name alicia")) == ("info", f"You are alicia ({human.id}) now.")
        carol = await mesh.agent("jsonl", name="carol", cwd="/work/carol")
        await mesh.stop(carol)
        await mesh.settle()
        kind, text = await one("/dm carol see you tomorrow")
        assert kind == "info"
        assert text.startswith(f"Sent to carol ({carol.id}); message id ")
        assert text.endswith(". It is offline; it gets the message when it returns.")
        assert await session.handle("   ") == []
        assert await session.handle("/quit") == []
        assert session.done


def test_names_complete_commands_then_rooms_or_agents() -> None:
    names = Names(rooms=("lobby", "lab", "review"), agents=("bob", "bert", "carol"))
    assert names.complete("/j") == ["/join"]
    assert names.complete("/s") == ["/status", "/switch"]
    assert names.complete("/join l") == ["lobby", "lab"]
    assert names.complete("/join #lo") == ["lobby"]
    assert names.complete("/dm b") == ["bob", "bert"]
    assert names.complete("/dm @c") == ["carol"]
    assert names.complete("/switch ") == ["lobby", "lab", "review", "@bob", "@bert", "@carol"]
    assert names.complete("/switch @b") == ["@bob", "@bert"]
    assert names.complete("/dm bob hel") == []  # the message text is not completed
    assert names.complete("/who b") == []
    assert names.complete("/nosuch b") == []
    assert names.complete("plain text") == []


async def test_session_names_are_what_the_agent_may_see() -> None:
    async with open_in_memory_mesh() as mesh:
        human = await mesh.agent("human", name="alice")
        bob = await mesh.agent("jsonl", name="bob", cwd="/work/bob")
        await mesh.agent("jsonl", name="ghost", cwd="/work/ghost", visibility="ghost")
        await bob.call({"action": "create_room", "room": "open"})
        await bob.call({"action": "create_room", "room": "hidden", "type": "secret"})
        await mesh.settle()
        assert ChatSession(human).names() == Names(rooms=("open",), agents=("bob",))


async def test_presence_changes_are_shown_once_per_change() -> None:
    async with open_in_memory_mesh() as mesh:
        human = await mesh.agent("human", name="alice")
        session = ChatSession(human)
        changes = human.store.node.subscribe()
        carol = await mesh.agent("jsonl", name="carol", cwd="/work/carol")
        await carol.call({"action": "update", "status": "busy"})
        await mesh.settle()
        await mesh.stop(carol)
        await mesh.settle()
        await mesh.agent("jsonl", name="ghost", cwd="/work/ghost", visibility="ghost")
        await mesh.settle()
        shown: list[str] = []
        while True:
            try:
                change = changes.receive_nowait()
            except trio.WouldBlock:
                break
            if type(change).__name__ == "AgentChanged":
                shown += [line.text for line in session.render_presence(change)]  # type: ignore[arg-type]
        label = f"carol ({carol.id})"
        assert shown == [f"* {label} is online (jsonl)", f"* {label} is busy", f"* {label} went offline"]


async def until(condition: Callable[[], bool]) -> None:
    """Wait until ``condition`` holds (under the caller's deadline)."""
    while True:
        if condition():
            return
        await trio.sleep(0.01)


async def test_run_chat_with_lines_in_and_out() -> None:
    """The whole chat loop in-process: commands from a stream, events and answers to a list, end of input ends it."""
    async with open_in_memory_mesh() as mesh:
        human = await mesh.agent("human", name="alice")
        bob = await mesh.agent("jsonl", name="bob", cwd="/work/bob")
        await bob.call({"action": "create_room", "room": "lobby"})
        await mesh.settle()
        send, receive = trio.testing.memory_stream_one_way_pair()
        shown: list[str] = []
        async with trio.open_nursery() as nursery:
            nursery.start_soon(run_chat, human, LineFrontend(receive, shown.append))
            await send.send_all(b"/join lobby\nhello from a script\n" + b"x" * (MAX_LINE + 10) + b"\n/dm bob psst\n")
            with trio.fail_after(10):
                await until(lambda: any(e.content == "psst" for e in bob.store.pending(bob.id)))
            await bob.call({"action": "send", "target": "lobby", "content": "hi script"})
            with trio.fail_after(10):
                await until(lambda: any(line.endswith("[#lobby] bob: hi script") for line in shown))
            await send.aclose()  # end of input: run_chat returns and the nursery closes
        assert "Joined #lobby. Members: bob (" in "\n".join(shown)
        assert any(line.endswith("[#lobby] alice: hello from a script") for line in shown)
        assert f"Error: a line longer than {MAX_LINE} bytes was skipped." in shown
        assert any(line.endswith("[DM to bob] psst") for line in shown)
        assert [e.content for e in bob.drain() if e.type in ("dm", "room_message")] == ["hello from a script", "psst"]


# ---------------------------------------------------------------- real processes


async def eventually(probe: Callable[[], Awaitable[T]], condition: Callable[[T], bool]) -> T:
    """Probe until ``condition`` holds for the result (under the caller's deadline); that result."""
    while True:
        value = await probe()
        if condition(value):
            return value
        await trio.sleep(0.05)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
    assert port != 19876
    return port


@pytest.fixture
def mesh_env(tmp_path: Path) -> dict[str, str]:
    return {
        **os.environ,
        "AGENT_COMMS_HOME": str(tmp_path / "home"),
        "AGENT_COMMS_PORT": str(free_port()),
        "AGENT_COMMS_LOAD_PLUGINS": "",
        "TERM": "xterm-256color",
    }


class Bob:
    """The other agent: a ``jsonl`` bridge process, driven over its stdin and stdout."""

    def __init__(self, process: trio.Process) -> None:
        assert process.stdin is not None
        assert process.stdout is not None
        self.process = process
        self.stdin = process.stdin
        self.stdout = process.stdout
        self.buffer = b""
        self.events: list[dict[str, Any]] = []
        self.id = ""
        self._next = 0

    async def _message(self) -> dict[str, Any]:
        while b"\n" not in self.buffer:
            chunk = await self.stdout.receive_some()
            if not chunk:
                raise EOFError("bob's bridge ended")
            self.buffer += chunk
        line, _, self.buffer = self.buffer.partition(b"\n")
        message: dict[str, Any] = json.loads(line)
        return message

    async def ready(self) -> None:
        message = await self._message()
        assert message["type"] == "ready", message
        self.id = message["agent"]["id"]

    async def call(self, **params: object) -> dict[str, Any]:
        self._next += 1
        await self.stdin.send_all(json.dumps({"id": self._next, "params": params}).encode() + b"\n")
        while (message := await self._message())["type"] != "result":
            self.events.append(message["event"])
        assert message["id"] == self._next
        return message

    async def call_until_ok(self, **params: object) -> dict[str, Any]:
        """Call until it succeeds (a new peer's replica catches up with the mesh within moments)."""
        while True:
            result = await self.call(**params)
            if not result["is_error"]:
                return result
            await trio.sleep(0.05)

    async def event(self, match: Callable[[dict[str, Any]], bool]) -> dict[str, Any]:
        """The first event (seen or to come) that ``match`` accepts."""
        while True:
            for event in self.events:
                if match(event):
                    self.events.remove(event)
                    return event
            message = await self._message()
            if message["type"] == "event":
                self.events.append(message["event"])

    async def online(self) -> set[str]:
        """Names of the online agents bob sees."""
        result = await self.call(action="list_agents")
        return set(re.findall(r"^- (\S+) \(", result["text"], re.MULTILINE))


@asynccontextmanager
async def bob_bridge(env: dict[str, str], cwd: Path) -> AsyncIterator[Bob]:
    await trio.Path(cwd).mkdir(parents=True, exist_ok=True)
    process = await trio.lowlevel.open_process(
        [sys.executable, "-m", "agent_comms", "bridge", "jsonl", "--name", "bob"],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        env=env,
        cwd=cwd,
    )
    try:
        bob = Bob(process)
        await bob.ready()
        yield bob
    finally:
        if process.poll() is None:
            process.kill()
        with trio.CancelScope(shield=True), trio.move_on_after(5):  # reaped even past the deadline
            await process.wait()


class Terminal:
    """A pseudo-terminal with the chat running in it: type keys, wait for text on the screen's byte stream."""

    def __init__(self, process: trio.Process, master: int) -> None:
        self.process = process
        self.master = trio.lowlevel.FdStream(master)
        self.output = b""
        self.mark = 0  # where the next wait_for starts looking

    async def type(self, keys: str) -> None:
        await self.master.send_all(keys.encode())

    async def await_prompt(self) -> None:
        """Wait until the prompt reads keys itself: the terminal in raw mode. Between two prompts, and while a line
        is printed above one, the terminal is in canonical mode and its line discipline takes the keys instead (it
        echoes them, Ctrl-U erases the line itself and a Ctrl-D there never reaches the chat), as for a person
        typing at that moment. The screen is read meanwhile (the prompt asks for the cursor's position)."""
        while termios.tcgetattr(self.master.fileno())[3] & termios.ICANON:
            with trio.move_on_after(0.01):
                if not await self._read():
                    raise EOFError(f"the terminal closed before a prompt; screen:\n{self.text()}")

    async def _read(self) -> bool:
        try:
            chunk = await self.master.receive_some(65536)
        except (trio.BrokenResourceError, OSError):  # EIO: the chat closed the terminal (it exited)
            return False
        if not chunk:
            return False
        self.output += chunk
        if b"\x1b[6n" in chunk:  # a cursor position request, answered as a terminal would
            with trio.CancelScope(shield=True):
                await self.master.send_all(b"\x1b[40;1R")  # the last row: nothing to make room for below
        return True

    def text(self, since: int = 0) -> str:
        """The output as text, escape sequences removed."""
        raw = self.output[since:].decode(errors="replace")
        return re.sub(r"\x1b\[[0-9;?]*[A-Za-z]|\x1b[()][A-Z0-9]|\x1b[>=]|\r", "", raw)

    async def wait_for(self, *needles: str, any_of: bool = False) -> str:
        """Wait until every needle (``any_of``: one) appears after the mark; move the mark to the end."""
        found = any if any_of else all
        while not found(needle in self.text(self.mark) for needle in needles):
            if not await self._read():
                raise EOFError(f"the terminal closed before {needles!r}; screen:\n{self.text()}")
        found = self.text(self.mark)
        self.mark = len(self.output)
        return found

    async def wait_closed(self) -> str:
        while await self._read():
            pass
        return self.text()


@asynccontextmanager
async def chat_on_terminal(env: dict[str, str], cwd: Path, name: str = "alice") -> AsyncIterator[Terminal]:
    await trio.Path(cwd).mkdir(parents=True, exist_ok=True)
    master, slave = os.openpty()
    fcntl.ioctl(slave, termios.TIOCSWINSZ, struct.pack("HHHH", 40, 160, 0, 0))
    process = await trio.lowlevel.open_process(
        [sys.executable, "-m", "agent_comms", "chat", "--name", name],
        stdin=slave,
        stdout=slave,
        stderr=slave,
        env=env,
        cwd=cwd,
        start_new_session=True,
    )
    os.close(slave)
    terminal = Terminal(process, master)
    try:
        yield terminal
    finally:
        print(f"--- the terminal's output (escape sequences removed) ---\n{terminal.text()}")  # shown on failure
        print(f"--- raw ---\n{terminal.output[-3000:]!r}")
        if process.poll() is None:
            process.kill()
        with trio.CancelScope(shield=True), trio.move_on_after(5):  # reaped even past the deadline
            await process.wait()
        with contextlib.suppress(trio.ClosedResourceError):
            await terminal.master.aclose()


async def _join_when_seen(terminal: Terminal, room: str) -> None:
    """/join ROOM until the chat's replica knows the room (a new peer catches up within moments)."""
    while True:
        await terminal.type(f"/join {room}\r")
        screen = await terminal.wait_for(f"Joined #{room}", "ROOM_NOT_FOUND", any_of=True)
        if "Joined #" in screen:
            return
        assert "ROOM_NOT_FOUND" in screen, screen
        await trio.sleep(0.1)


async def test_a_person_chats_with_an_agent_on_a_terminal(tmp_path: Path, mesh_env: dict[str, str]) -> None:
    with trio.fail_after(DEADLINE):
        async with bob_bridge(mesh_env, tmp_path / "bob") as bob, chat_on_terminal(mesh_env, tmp_path / "me") as term:
            await term.wait_for("You are alice (human-", "/help lists the commands", ">")
            await bob.call(action="create_room", room="lobby")
            await _join_when_seen(term, "lobby")

            await term.type("hello bob\r")
            said = await bob.event(lambda e: e["type"] == "room_message")
            assert (said["content"], said["sender_name"], said["room"]) == ("hello bob", "alice", "lobby")
            alice_id = said["sender"]
            assert alice_id.startswith("human-")

            await bob.call(action="send", target="lobby", content="hi alice, from bob")
            await term.wait_for("[#lobby] bob: hi alice, from bob")

            # A message that arrives while a line is half typed: the line is drawn again below it, intact.
            await term.type("half typ")
            await term.wait_for("half typ")
            await bob.call(action="dm", target="alice", content="a private word")
            screen = await term.wait_for("[DM from bob] a private word", "#lobby> half typ")
            assert screen.index("a private word") < screen.rindex("#lobby> half typ")
            await term.type("ed\r")
            said = await bob.event(lambda e: e["type"] == "room_message")
            assert said["content"] == "half typed"

            await term.type("/dm bob just between us\r")
            dm = await bob.event(lambda e: e["type"] == "dm")
            assert (dm["content"], dm["sender"]) == ("just between us", alice_id)
            await term.wait_for("read by bob")  # bob's bridge showed it: the receipt comes back

            await term.type("/who\r")
            await term.wait_for("2 agent(s) online", f"- bob ({bob.id}) [active] jsonl", "alice (")

            await term.type("/bogus\r")
            await term.wait_for("Unknown command /bogus")
            await term.type("/join nowhere\r")
            await term.wait_for("no room #nowhere (ROOM_NOT_FOUND)")

            assert await bob.online() == {"alice", "bob"}
            await term.type("/quit\r")
            screen = await term.wait_closed()
            assert await term.process.wait() == 0
            assert "Traceback" not in screen
            assert "alice left the mesh." in screen
            with trio.fail_after(2):  # offline at once, not after a timeout
                await eventually(lambda: bob.online(), lambda names: "alice" not in names)


@pytest.mark.parametrize("ending", ["ctrl-d", "ctrl-c", "SIGTERM", "SIGHUP", "terminal closed"])
async def test_the_chat_leaves_gracefully(tmp_path: Path, mesh_env: dict[str, str], ending: str) -> None:
    with trio.fail_after(DEADLINE):
        async with bob_bridge(mesh_env, tmp_path / "bob") as bob, chat_on_terminal(mesh_env, tmp_path / "me") as term:
            await term.wait_for("You are alice", ">")
            await eventually(lambda: bob.online(), lambda names: "alice" in names)
            await term.await_prompt()  # the keys below are the prompt's, not the terminal's line discipline's
            await term.type("typing something")
            await term.wait_for("typing something")
            await term.await_prompt()
            if ending == "ctrl-d":
                await term.type("\x15\x04")  # Ctrl-U clears the line, Ctrl-D on an empty line is end of input
            elif ending == "ctrl-c":
                await term.type("\x03")
            elif ending == "terminal closed":  # the terminal window went away: reading it fails with EIO
                await term.master.aclose()
            else:
                term.process.send_signal(getattr(signal, ending))
            if ending == "terminal closed":
                assert await term.process.wait() == 0
            else:
                screen = await term.wait_closed()
                assert await term.process.wait() == 0
                assert "Traceback" not in screen
                assert "alice left the mesh." in screen
            with trio.fail_after(2):
                await eventually(lambda: bob.online(), lambda names: "alice" not in names)


async def test_a_script_drives_the_chat_through_pipes(tmp_path: Path, mesh_env: dict[str, str]) -> None:
    (tmp_path / "me").mkdir()
    with trio.fail_after(DEADLINE):
        async with bob_bridge(mesh_env, tmp_path / "bob") as bob:
            await bob.call(action="create_room", room="lobby")
            chat = await trio.lowlevel.open_process(
                [sys.executable, "-m", "agent_comms", "chat", "--name", "scribe"],
                stdin=subprocess.PIPE,
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
                env=mesh_env,
                cwd=tmp_path / "me",
            )
            assert chat.stdin is not None
            assert chat.stdout is not None
            assert chat.stderr is not None
            output = b""

            async def wait_for(needle: str) -> str:
                nonlocal output
                while needle.encode() not in output:
                    chunk = await chat.stdout.receive_some()  # type: ignore[union-attr]
                    assert chunk, f"the chat ended before {needle!r}: {output.decode()}"
                    output += chunk
                return output.decode()

            try:
                await wait_for("You are scribe (human-")
                await eventually(lambda: bob.online(), lambda names: "scribe" in names)
                await chat.stdin.send_all(b"/bogus\n/join lobby\nminutes of the meeting\n/dm bob and one for you\n")
                said = await bob.event(lambda e: e["type"] == "room_message")
                assert said["content"] == "minutes of the meeting"
                dm = await bob.event(lambda e: e["type"] == "dm")
                assert dm["content"] == "and one for you"
                await bob.call(action="send", target="lobby", content="noted")
                text = await wait_for("[#lobby] bob: noted")
                assert "Unknown command /bogus; /help lists the commands" in text
                assert "Joined #lobby. Members: bob (" in text
                assert "[#lobby] scribe: minutes of the meeting" in text  # a script sees what it sent
                await chat.stdin.aclose()  # end of input: leave
                assert await chat.wait() == 0
                rest = await chat.stdout.receive_some()
                while chunk := await chat.stdout.receive_some():
                    rest += chunk
                assert (output + rest).decode().rstrip().endswith("scribe left the mesh.")
                errors = b""
                while chunk := await chat.stderr.receive_some():
                    errors += chunk
                assert errors == b""
                with trio.fail_after(2):
                    await eventually(lambda: bob.online(), lambda names: "scribe" not in names)
            finally:
                if chat.poll() is None:
                    chat.kill()
                with trio.CancelScope(shield=True), trio.move_on_after(5):
                    await chat.wait()


async def test_the_chat_does_not_wait_for_a_keyboard(tmp_path: Path, mesh_env: dict[str, str]) -> None:
    """Standard input is /dev/null (no terminal, nothing to read): the chat joins, leaves and exits 0."""
    with trio.fail_after(DEADLINE), open(os.devnull, "rb") as nothing:  # noqa: ASYNC230 - opening is instant
        result = await trio.run_process(
            [sys.executable, "-m", "agent_comms", "chat", "--name", "nobody"],
            stdin=nothing,
            capture_stdout=True,
            capture_stderr=True,
            env=mesh_env,
            cwd=tmp_path,
            check=False,
        )
    assert result.returncode == 0, result.stderr.decode()
    assert result.stdout.decode().splitlines()[0].startswith("You are nobody (human-")
    assert result.stdout.decode().rstrip().endswith("nobody left the mesh.")


async def test_a_bad_name_or_setting_is_a_clear_error(tmp_path: Path, mesh_env: dict[str, str]) -> None:
    cases = [
        ({}, ["--name", "bad\tname"], 2, "could not join the mesh: Error: invalid 'name'"),
        ({"AGENT_COMMS_PORT": "not-a-port"}, [], 3, "AGENT_COMMS_PORT"),
    ]
    for extra_env, args, status, message in cases:
        with trio.fail_after(DEADLINE):
            result = await trio.run_process(
                [sys.executable, "-m", "agent_comms", "chat", *args],
                stdin=subprocess.DEVNULL,
                capture_stdout=True,
                capture_stderr=True,
                env={**mesh_env, **extra_env},
                cwd=tmp_path,
                check=False,
            )
        stderr = result.stderr.decode()
        assert result.returncode == status, stderr
        assert message in stderr
        assert "Traceback" not in stderr


def test_help_shows_the_commands_and_an_example() -> None:
    result = subprocess.run(
        [sys.executable, "-m", "agent_comms", "chat", "--help"], capture_output=True, text=True, check=True, timeout=30
    )
    assert "usage: agent-comms chat [-h] [--name NAME]" in result.stdout
    assert "example" in result.stdout
    assert "agent-comms chat --name alice" in result.stdout
    assert "/join ROOM" in result.stdout


# ---------------------------------------------------------------- the rendered screen (tmux)


@pytest.mark.skipif(shutil.which("tmux") is None, reason="tmux is not installed")
async def test_the_input_line_stays_whole_on_the_rendered_screen(tmp_path: Path, mesh_env: dict[str, str]) -> None:
    """tmux renders the terminal: after messages arrive, the last line is still the prompt with the typed text."""
    (tmp_path / "me").mkdir()
    tmux = ["tmux", "-S", str(tmp_path / "tmux.sock"), "-f", os.devnull]  # a server of its own, gone with tmp_path
    command = " ".join(
        [
            *(f"{key}={value}" for key, value in mesh_env.items() if key.startswith("AGENT_COMMS_")),
            sys.executable,
            "-m",
            "agent_comms",
            "chat",
            "--name",
            "alice",
        ]
    )

    last: list[str] = []

    async def screen() -> list[str]:
        result = await trio.run_process([*tmux, "capture-pane", "-p", "-t", "chat"], capture_stdout=True)
        last[:] = [line.rstrip() for line in result.stdout.decode().splitlines() if line.strip()]
        return list(last)

    async def wait_screen(condition: Callable[[list[str]], bool]) -> list[str]:
        return await eventually(screen, condition)

    with trio.fail_after(DEADLINE):
        async with bob_bridge(mesh_env, tmp_path / "bob") as bob:
            await bob.call(action="create_room", room="lobby")
            await trio.run_process(
                [*tmux, "new-session", "-d", "-s", "chat", "-x", "120", "-y", "30", "-c", str(tmp_path / "me"), command]
            )
            try:
                # The prompt shows once the chat is synced with the mesh: the room is there at the first try.
                welcome = await wait_screen(lambda lines: bool(lines) and lines[-1] == ">")
                assert f"Online: bob ({bob.id})." in welcome
                assert "Rooms: #lobby." in welcome
                await trio.run_process([*tmux, "send-keys", "-t", "chat", "/join lobby", "Enter"])
                lines = await wait_screen(
                    lambda lines: any("Joined #lobby" in line or "ROOM_NOT_FOUND" in line for line in lines)
                )
                assert not any("ROOM_NOT_FOUND" in line for line in lines), lines
                await wait_screen(lambda lines: lines[-1] == "#lobby>")
                # Tab completes commands and room names.
                await trio.run_process([*tmux, "send-keys", "-t", "chat", "-l", "/rea"])
                await trio.run_process([*tmux, "send-keys", "-t", "chat", "Tab"])
                await wait_screen(lambda lines: lines[-1] == "#lobby> /read")  # completion runs on its own time
                await trio.run_process([*tmux, "send-keys", "-t", "chat", "-l", " lo"])
                await trio.run_process([*tmux, "send-keys", "-t", "chat", "Tab"])
                await wait_screen(lambda lines: lines[-1] == "#lobby> /read lobby")
                await trio.run_process([*tmux, "send-keys", "-t", "chat", "C-u"])
                await wait_screen(lambda lines: lines[-1] == "#lobby>")
                await trio.run_process([*tmux, "send-keys", "-t", "chat", "-l", "a line in prog"])
                await wait_screen(lambda lines: lines[-1] == "#lobby> a line in prog")
                for n in range(3):
                    await bob.call(action="send", target="lobby", content=f"interruption {n}")
                # A message is drawn above the prompt, then the prompt with its text is drawn again: a screen taken
                # in between shows no prompt, so wait for both (a lost input line never satisfies this).
                lines = await wait_screen(
                    lambda lines: (
                        any("interruption 2" in line for line in lines) and lines[-1] == "#lobby> a line in prog"
                    )
                )
                assert [line.split("] ", 1)[1] for line in lines if "interruption" in line] == [
                    f"bob: interruption {n}" for n in range(3)
                ]
                await trio.run_process([*tmux, "send-keys", "-t", "chat", "-l", "ress"])
                await trio.run_process([*tmux, "send-keys", "-t", "chat", "Enter"])
                said = await bob.event(lambda e: e["type"] == "room_message")
                assert said["content"] == "a line in progress"
            finally:
                print("--- the last screen ---", *last, sep="\n")  # shown on failure
                with trio.CancelScope(shield=True), trio.move_on_after(10):  # even past the deadline: no ghost
                    await trio.run_process([*tmux, "kill-server"], check=False)


@pytest.mark.skipif(shutil.which("tmux") is None, reason="tmux is not installed")
async def test_hostile_text_cannot_clear_the_screen_or_fake_a_line(tmp_path: Path, mesh_env: dict[str, str]) -> None:
    """tmux renders the terminal: the screen survives an escape sequence, and a line a message adds is marked."""
    (tmp_path / "me").mkdir()
    tmux = ["tmux", "-S", str(tmp_path / "tmux.sock"), "-f", os.devnull]
    env = " ".join(f"{key}={value}" for key, value in mesh_env.items() if key.startswith("AGENT_COMMS_"))
    command = f"{env} {sys.executable} -m agent_comms chat --name alice"
    last: list[str] = []

    async def screen() -> list[str]:
        result = await trio.run_process([*tmux, "capture-pane", "-p", "-t", "chat"], capture_stdout=True)
        last[:] = [line.rstrip() for line in result.stdout.decode().splitlines() if line.strip()]
        return list(last)

    with trio.fail_after(DEADLINE):
        async with bob_bridge(mesh_env, tmp_path / "bob") as bob:
            await trio.run_process(
                [*tmux, "new-session", "-d", "-s", "chat", "-x", "120", "-y", "30", "-c", str(tmp_path / "me"), command]
            )
            try:
                await eventually(screen, lambda lines: bool(lines) and lines[-1] == ">")
                await bob.call(action="create_room", room="lobby")
                while True:
                    await trio.run_process([*tmux, "send-keys", "-t", "chat", "/join lobby", "Enter"])
                    lines = await eventually(screen, lambda lines: len(lines) > 1 and "lobby" in lines[-2])
                    if lines[-1] == "#lobby>":
                        break
                    await trio.sleep(0.1)
                await bob.call(action="send", target="lobby", content=HOSTILE_CONTENT)
                # the message's last line is drawn before the prompt is drawn again below it: wait for both
                lines = await eventually(
                    screen, lambda lines: any("finally" in line for line in lines) and lines[-1] == "#lobby>"
                )
                assert lines[0].startswith("You are alice (human-"), lines  # nothing cleared the screen
                assert "] bob: hi^[[2J there" in "\n".join(lines)
                for start in HOSTILE_LINES:
                    [line] = [line for line in lines if start in line]
                    assert line.startswith(CONTINUATION + start), lines
            finally:
                print("--- the last screen ---", *last, sep="\n")  # shown on failure
                with trio.CancelScope(shield=True), trio.move_on_after(10):
                    await trio.run_process([*tmux, "kill-server"], check=False)
