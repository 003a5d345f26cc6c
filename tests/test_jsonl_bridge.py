"""Tests for the built-in ``jsonl`` bridge (``agent_comms.bridges.jsonl``).

Testing policy: the line protocol is tested in-process over Trio memory streams and an in-memory mesh (fast, exact);
then ``agent-comms bridge jsonl`` runs as real processes on a free port with pipes for stdin and stdout, as a
harness would start it. Every test that does I/O runs under a deadline.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import pytest
import trio
import trio.testing

from agent_comms.agent import Agent
from agent_comms.bridges.jsonl import run_bridge
from agent_comms.stdio import MAX_LINE, LineSplitter, LineWriter
from agent_comms.testing import InMemoryMesh, open_in_memory_mesh
from agent_comms.testing.display import HOSTILE_CONTENT, assert_shown_safely

DEADLINE = 30


class JsonLines:
    """Reads the bridge's output one JSON object at a time."""

    def __init__(self, stream: trio.abc.ReceiveStream) -> None:
        self.stream = stream
        self.buffer = b""

    async def next(self) -> dict[str, Any]:
        while b"\n" not in self.buffer:
            chunk = await self.stream.receive_some()
            if not chunk:
                raise EOFError(f"the bridge's output ended; unread: {self.buffer!r}")
            self.buffer += chunk
        line, _, self.buffer = self.buffer.partition(b"\n")
        message: dict[str, Any] = json.loads(line)
        return message

    async def next_of(self, kind: str) -> dict[str, Any]:
        """The next message of type ``kind``, skipping others (events that arrive at their own pace)."""
        while (message := await self.next())["type"] != kind:
            pass
        return message

    async def rest(self) -> list[dict[str, Any]]:
        """Every message until the output ends."""
        messages = []
        while True:
            try:
                messages.append(await self.next())
            except EOFError:
                return messages


# ---------------------------------------------------------------- the line splitter (sans I/O)


def test_splitter_joins_chunks_and_splits_lines() -> None:
    splitter = LineSplitter()
    assert splitter.feed(b'{"a"') == []
    assert splitter.feed(b': 1}\n{"b": 2}\n{"c"') == [b'{"a": 1}', b'{"b": 2}']
    assert splitter.feed(b"") == []
    assert splitter.close() == [b'{"c"']
    assert splitter.close() == []


def test_splitter_reports_an_over_long_line_once_and_skips_it() -> None:
    splitter = LineSplitter(max_line=8)
    assert splitter.feed(b"0123456789") == [None]
    assert splitter.feed(b"more of the same line") == []
    assert splitter.feed(b"end\nok\n") == [b"ok"]
    assert splitter.feed(b"123456789\nfine\n") == [None, b"fine"]
    assert splitter.feed(b"too long at the end") == [None]
    assert splitter.close() == []


# ---------------------------------------------------------------- the bridge over memory streams


class Bridge:
    """A ``jsonl`` bridge for ``agent`` inside the test: ``send`` lines in, ``out`` reads lines out."""

    def __init__(self, agent: Agent, *, ack: bool = False) -> None:
        self.agent = agent
        self.ack = ack
        self.input, input_receive = trio.testing.memory_stream_one_way_pair()
        output_send, output_receive = trio.testing.memory_stream_one_way_pair()
        self.writer = LineWriter(output_send)
        self.receive = input_receive
        self.output_send = output_send
        self.out = JsonLines(output_receive)

    async def run(self) -> None:
        await run_bridge(self.agent, self.receive, self.writer, ack=self.ack)
        await self.output_send.aclose()

    async def send(self, *lines: bytes | dict[str, Any]) -> None:
        for line in lines:
            data = line if isinstance(line, bytes) else json.dumps(line).encode() + b"\n"
            await self.input.send_all(data)

    async def call(self, request_id: object, **params: object) -> dict[str, Any]:
        await self.send({"id": request_id, "params": params})
        return await self.out.next_of("result")


@asynccontextmanager
async def bridged(mesh: InMemoryMesh, name: str, *, ack: bool = False) -> AsyncIterator[Bridge]:
    agent = await mesh.agent("jsonl", name=name, cwd=f"/work/{name}")
    bridge = Bridge(agent, ack=ack)
    async with trio.open_nursery() as nursery:
        nursery.start_soon(bridge.run)
        yield bridge
        await bridge.input.aclose()  # end of input ends the bridge


async def test_ready_then_results_in_order_with_the_request_ids() -> None:
    with trio.fail_after(DEADLINE):
        async with open_in_memory_mesh() as mesh, bridged(mesh, "alice") as alice:
            assert await alice.out.next() == {
                "type": "ready",
                "agent": {"id": alice.agent.id, "name": "alice", "harness": "jsonl"},
            }
            await alice.send(
                {"id": 1, "params": {"action": "whoami"}},
                {"id": "two", "params": {"action": "create_room", "room": "review"}},
                {"id": {"n": 3}, "params": {"action": "list_rooms"}},
                {"params": {"action": "whoami"}},
            )
            first, second, third, fourth = [await alice.out.next() for _ in range(4)]
            assert first["id"] == 1
            assert first["text"].startswith(f"You are alice ({alice.agent.id}): active, visible, harness jsonl")
            assert second == {
                "type": "result",
                "id": "two",
                "text": "Created #review (public); you own it and are its first member.",
                "is_error": False,
                "data": second["data"],
            }
            assert third["id"] == {"n": 3}
            assert "#review (public, 1 member(s)" in third["text"]
            assert fourth["id"] is None


async def test_tool_errors_are_results_and_bad_lines_are_errors() -> None:
    with trio.fail_after(DEADLINE):
        async with open_in_memory_mesh() as mesh, bridged(mesh, "alice") as alice:
            await alice.out.next_of("ready")
            unknown = await alice.call(7, action="fly")
            assert unknown["type"] == "result"
            assert unknown["id"] == 7
            assert unknown["is_error"] is True
            assert unknown["text"].startswith("Error: unknown action 'fly'")
            assert unknown["text"].endswith("(INVALID_PARAMS)")
            shape = 'each line is {"id": ..., "params": {<agent_comms tool parameters>}}'
            await alice.send(b"{not json\n", b"[1, 2]\n", b'{"id": 8}\n', b'{"id": 9, "params": "whoami"}\n', b"  \n")
            assert (await alice.out.next())["text"].startswith("Error: the line is not valid JSON (")
            assert await alice.out.next() == {
                "type": "error",
                "text": f"Error: {shape}, not a JSON list (INVALID_PARAMS)",
            }
            assert await alice.out.next() == {
                "type": "error",
                "id": 8,
                "text": f"Error: missing 'params': {shape} (INVALID_PARAMS)",
            }
            assert await alice.out.next() == {
                "type": "error",
                "id": 9,
                "text": f"Error: 'params' must be an object, not str: {shape} (INVALID_PARAMS)",
            }
            await alice.send(b"x" * (MAX_LINE + 1) + b"\n")
            assert await alice.out.next() == {
                "type": "error",
                "text": f"Error: line longer than {MAX_LINE} bytes; it was skipped (INVALID_PARAMS)",
            }
            # ... and the bridge keeps going (the blank line got no answer).
            assert (await alice.call(10, action="whoami"))["is_error"] is False


async def test_events_are_pushed_and_count_as_read() -> None:
    with trio.fail_after(DEADLINE):
        async with open_in_memory_mesh() as mesh, bridged(mesh, "alice") as alice, bridged(mesh, "bob") as bob:
            await alice.out.next_of("ready")
            await bob.out.next_of("ready")
            await mesh.settle()
            sent = await bob.call(1, action="dm", target="alice", content="review #42", streamingBehavior="steer")
            message_id = sent["data"]["message_id"]
            event = await alice.out.next_of("event")
            assert event["text"] == f"[DM from bob ({bob.agent.id})] review #42  [id {message_id}]"
            assert event["event"]["type"] == "dm"
            assert event["event"]["content"] == "review #42"
            assert event["event"]["streaming"] == "steer"
            assert event["event"]["to"] == alice.agent.id
            while (receipt := (await bob.out.next_of("event"))["event"])["status"] != "read":
                assert receipt == {**receipt, "type": "delivery_status", "status": "delivered"}
            assert receipt["type"] == "delivery_status"
            assert receipt["message_id"] == message_id
            assert alice.agent.pending_count() == 0


async def test_pushed_text_marks_continuations_and_the_event_keeps_the_exact_content() -> None:
    """The ``text`` the pi and OpenCode plugins give their model as is: escaped, each added line marked."""
    with trio.fail_after(DEADLINE):
        async with open_in_memory_mesh() as mesh, bridged(mesh, "alice") as alice, bridged(mesh, "bob") as bob:
            await alice.out.next_of("ready")
            await bob.out.next_of("ready")
            await mesh.settle()
            await bob.call(1, action="dm", target="alice", content=HOSTILE_CONTENT)
            event = await alice.out.next_of("event")
            assert_shown_safely(event["text"])
            assert event["event"]["content"] == HOSTILE_CONTENT


async def test_ack_mode_marks_read_only_what_the_relay_says_it_showed() -> None:
    with trio.fail_after(DEADLINE):
        async with (
            open_in_memory_mesh() as mesh,
            bridged(mesh, "alice", ack=True) as alice,
            bridged(mesh, "bob") as bob,
        ):
            await alice.out.next_of("ready")
            await bob.out.next_of("ready")
            await mesh.settle()
            first = (await bob.call(1, action="dm", target="alice", content="one"))["data"]["message_id"]
            second = (await bob.call(2, action="dm", target="alice", content="two"))["data"]["message_id"]
            events = [(await alice.out.next_of("event"))["event"] for _ in range(2)]
            assert [event["message_id"] for event in events] == [first, second]
            receipts = {first: "", second: ""}

            async def receipts_until(message_id: str, status: str) -> None:
                while receipts[message_id] != status:
                    receipt = (await bob.out.next_of("event"))["event"]
                    assert receipt["type"] == "delivery_status"
                    assert receipt["status"] in ("delivered", "read")
                    receipts[receipt["message_id"]] = receipt["status"]

            await receipts_until(first, "delivered")
            await receipts_until(second, "delivered")
            # Written is not shown: nothing is read until the relay acknowledges, and then only what it names.
            await mesh.settle()
            state = bob.agent.store.state
            assert [state.receipt_status(m, alice.agent.id) for m in (first, second)] == ["delivered", "delivered"]
            await alice.send({"type": "shown", "ids": [events[1]["id"], "no-such-event"]})
            await receipts_until(second, "read")
            await mesh.settle()
            assert state.receipt_status(first, alice.agent.id) == "delivered"
            # A malformed acknowledgement is an error and changes nothing; a repeated one is harmless.
            await alice.send({"type": "shown", "ids": "all"}, {"type": "shown", "ids": [events[1]["id"]]})
            error = await alice.out.next()
            assert error["type"] == "error"
            assert error["text"].startswith("Error: 'ids' must be a list of event ids")
            await alice.send({"type": "shown", "ids": [events[0]["id"]]})
            await receipts_until(first, "read")


async def test_resend_writes_again_every_event_not_yet_acknowledged() -> None:
    """A relay that left events aside asks for them again: only the unacknowledged ones come again, in order."""
    with trio.fail_after(DEADLINE):
        async with (
            open_in_memory_mesh() as mesh,
            bridged(mesh, "alice", ack=True) as alice,
            bridged(mesh, "bob") as bob,
        ):
            await alice.out.next_of("ready")
            await bob.out.next_of("ready")
            await mesh.settle()
            for number, text in enumerate(("one", "two", "three"), start=1):
                await bob.call(number, action="dm", target="alice", content=text)
            events = [(await alice.out.next_of("event"))["event"] for _ in range(3)]
            assert [event["content"] for event in events] == ["one", "two", "three"]
            await alice.send({"type": "shown", "ids": [events[1]["id"]]}, {"type": "resend"})
            again = [(await alice.out.next_of("event"))["event"] for _ in range(2)]
            assert [event["id"] for event in again] == [events[0]["id"], events[2]["id"]]
            await alice.send({"type": "shown", "ids": [event["id"] for event in again]})
            unread = {event["message_id"] for event in events}
            while unread:  # each is read once it was acknowledged, the ones written twice too
                receipt = (await bob.out.next_of("event"))["event"]
                if receipt["type"] == "delivery_status" and receipt["status"] == "read":
                    unread.discard(receipt["message_id"])
            await alice.send({"type": "resend"})  # nothing held: nothing comes again
            await bob.call(9, action="dm", target="alice", content="four")
            assert (await alice.out.next_of("event"))["event"]["content"] == "four"


async def test_unknown_line_type_is_an_error_and_shutdown_ends_the_bridge() -> None:
    with trio.fail_after(DEADLINE):
        async with open_in_memory_mesh() as mesh:
            bridge = Bridge(await mesh.agent("jsonl", name="dave"))
            async with trio.open_nursery() as nursery:
                nursery.start_soon(bridge.run)
                await bridge.send(
                    {"id": 1, "type": "dance", "params": {"action": "whoami"}},
                    {"id": 2, "type": "call", "params": {"action": "whoami"}},
                    {"type": "shutdown"},
                    {"id": 3, "params": {"action": "whoami"}},  # after the shutdown: never answered
                )
                messages = await bridge.out.rest()  # the output ends although the input is still open
                await bridge.input.aclose()
    assert [(m["type"], m.get("id")) for m in messages] == [("ready", None), ("error", 1), ("result", 2)]
    assert messages[1]["text"] == (
        "Error: unknown line type 'dance' (expected 'call', 'shown', 'resend' or 'shutdown') (INVALID_PARAMS)"
    )


async def test_end_of_input_answers_a_last_unterminated_line_and_ends() -> None:
    with trio.fail_after(DEADLINE):
        async with open_in_memory_mesh() as mesh:
            bridge = Bridge(await mesh.agent("jsonl", name="carol"))
            async with trio.open_nursery() as nursery:
                nursery.start_soon(bridge.run)
                await bridge.send(b'{"id": "last", "params": {"action": "whoami"}}')  # no newline
                await bridge.input.aclose()
                messages = await bridge.out.rest()
    assert [(m["type"], m.get("id")) for m in messages] == [("ready", None), ("result", "last")]


# ---------------------------------------------------------------- `agent-comms bridge jsonl` as real processes


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
    assert port != 19876
    return port


@asynccontextmanager
async def bridge_process(
    name: str, *, home: Path, port: int, cwd: Path, log: Path
) -> AsyncIterator[tuple[trio.Process, JsonLines]]:
    env = {
        **os.environ,
        "AGENT_COMMS_HOME": str(home),
        "AGENT_COMMS_PORT": str(port),
        "AGENT_COMMS_LOAD_PLUGINS": "",
    }
    await trio.Path(cwd).mkdir(parents=True, exist_ok=True)
    with log.open("wb") as stderr:
        process = await trio.lowlevel.open_process(
            [sys.executable, "-m", "agent_comms", "bridge", "jsonl", "--name", name],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=stderr,
            env=env,
            cwd=cwd,
        )
    assert process.stdout is not None
    try:
        yield process, JsonLines(process.stdout)
    finally:
        if process.poll() is None:
            process.kill()
        with trio.move_on_after(5):
            await process.wait()


async def send_line(process: trio.Process, message: dict[str, Any] | bytes) -> None:
    assert process.stdin is not None
    await process.stdin.send_all(message if isinstance(message, bytes) else json.dumps(message).encode() + b"\n")


async def test_bridge_processes_talk_over_the_mesh(tmp_path: Path) -> None:
    home, port = tmp_path / "home", free_port()
    logs = {name: tmp_path / f"{name}.stderr" for name in ("alice", "bob")}
    try:
        with trio.fail_after(60):
            async with bridge_process("alice", home=home, port=port, cwd=tmp_path / "alice", log=logs["alice"]) as (
                alice,
                alice_out,
            ):
                ready = await alice_out.next()
                assert ready["type"] == "ready"
                assert ready["agent"]["name"] == "alice"
                alice_id = ready["agent"]["id"]
                assert alice_id.startswith("jsonl-")

                await send_line(alice, {"id": 1, "params": {"action": "whoami"}})
                whoami = await alice_out.next()
                assert whoami["type"] == "result"
                assert whoami["id"] == 1
                assert whoami["is_error"] is False
                assert whoami["text"].startswith(f"You are alice ({alice_id}): active, visible, harness jsonl")

                await send_line(alice, {"id": 2, "params": {"action": "create_room", "room": "review"}})
                created = await alice_out.next()
                assert {key: created[key] for key in ("type", "id", "text", "is_error")} == {
                    "type": "result",
                    "id": 2,
                    "text": "Created #review (public); you own it and are its first member.",
                    "is_error": False,
                }

                await send_line(alice, {"id": 3, "params": {"action": "teleport"}})
                unknown = await alice_out.next()
                assert (unknown["type"], unknown["id"], unknown["is_error"]) == ("result", 3, True)
                assert unknown["text"].endswith("(INVALID_PARAMS)")

                await send_line(alice, b"this is not json\n")
                error = await alice_out.next()
                assert error["type"] == "error"
                assert error["text"].startswith("Error: the line is not valid JSON")
                assert error["text"].endswith("(INVALID_PARAMS)")

                async with bridge_process("bob", home=home, port=port, cwd=tmp_path / "bob", log=logs["bob"]) as (
                    bob,
                    bob_out,
                ):
                    bob_ready = await bob_out.next()
                    assert bob_ready["type"] == "ready"
                    assert bob_ready["agent"]["id"] not in (alice_id, "")
                    dm = await _dm_when_seen(bob, bob_out, "alice", "hello from bob")

                    event = await alice_out.next_of("event")
                    assert event["event"]["type"] == "dm"
                    assert event["event"]["content"] == "hello from bob"
                    assert event["event"]["sender"] == bob_ready["agent"]["id"]
                    assert event["event"]["message_id"] == dm["data"]["message_id"]
                    assert event["text"].startswith(f"[DM from bob ({bob_ready['agent']['id']})] hello from bob")

                    # Written to alice's stdout means read: bob is told so.
                    while (receipt := (await bob_out.next_of("event"))["event"])["status"] != "read":
                        pass
                    assert receipt["type"] == "delivery_status"
                    assert receipt["message_id"] == dm["data"]["message_id"]

                    assert bob.stdin is not None
                    await bob.stdin.aclose()
                    assert await bob.wait() == 0
                assert alice.stdin is not None
                await alice.stdin.aclose()
                assert await alice.wait() == 0
                assert all(message["type"] == "event" for message in await alice_out.rest())
    except BaseException:
        for name, log in logs.items():
            if log.exists():
                print(f"--- {name} stderr ---\n{log.read_text(errors='replace')}", file=sys.stderr)
        raise


async def _dm_when_seen(process: trio.Process, out: JsonLines, target: str, content: str) -> dict[str, Any]:
    """DM ``target`` once this bridge's replica knows it (a new peer catches up with the mesh's state)."""
    attempt = 0
    while True:
        attempt += 1
        await send_line(process, {"id": attempt, "params": {"action": "dm", "target": target, "content": content}})
        result = await out.next_of("result")
        assert result["id"] == attempt
        if not result["is_error"]:
            return result
        assert result["text"].endswith("(AGENT_NOT_FOUND)"), result["text"]
        await trio.sleep(0.05)


@pytest.mark.parametrize("stdin", ["devnull", "file"])
async def test_bridge_reads_requests_from_a_file_or_dev_null(tmp_path: Path, stdin: str) -> None:
    source = tmp_path / "requests.jsonl"
    source.write_text('{"id": 1, "params": {"action": "whoami"}}\n')
    env = {
        **os.environ,
        "AGENT_COMMS_HOME": str(tmp_path / "home"),
        "AGENT_COMMS_PORT": str(free_port()),
        "AGENT_COMMS_LOAD_PLUGINS": "",
    }
    path = os.devnull if stdin == "devnull" else str(source)
    with trio.fail_after(DEADLINE), open(path, "rb") as requests:  # noqa: ASYNC230 - opening is instant
        result = await trio.run_process(
            [sys.executable, "-m", "agent_comms", "bridge", "jsonl", "--name", "filer"],
            stdin=requests,
            capture_stdout=True,
            capture_stderr=True,
            env=env,
            cwd=tmp_path,
            check=False,
        )
    assert result.returncode == 0, result.stderr.decode()
    types = [json.loads(line)["type"] for line in result.stdout.splitlines()]
    assert types == (["ready"] if stdin == "devnull" else ["ready", "result"])


async def test_sigterm_takes_the_bridge_offline_gracefully(tmp_path: Path) -> None:
    """SIGTERM ends the bridge with status 0 after it told the mesh its agent is offline."""
    import json as _json
    import signal as _signal
    import socket as _socket
    import subprocess as _subprocess
    import sys as _sys

    from agent_comms.mesh.keyfile import load_or_create_key
    from agent_comms.mesh.observe import observe_mesh

    with _socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    home = tmp_path / "home"
    env = {**os.environ, "AGENT_COMMS_HOME": str(home), "AGENT_COMMS_PORT": str(port)}
    watcher = await trio.lowlevel.open_process(
        [_sys.executable, "-m", "agent_comms.mesh"], env=env, stdout=_subprocess.PIPE
    )
    bridge = await trio.lowlevel.open_process(
        [_sys.executable, "-m", "agent_comms", "bridge", "jsonl", "--name", "leaver"],
        env=env,
        stdin=_subprocess.PIPE,
        stdout=_subprocess.PIPE,
        cwd=tmp_path,
    )
    try:
        assert bridge.stdout is not None
        line = b""
        with trio.fail_after(20):
            while not line.endswith(b"\n"):
                line += await bridge.stdout.receive_some(1)
        agent_id = _json.loads(line)["agent"]["id"]
        key = load_or_create_key(home)
        with trio.fail_after(10):
            while True:  # both peers are linked and know the agent is online before we stop its bridge
                snapshot = await observe_mesh(key, port=port)
                seen = snapshot.state.agents.get(agent_id)
                linked = len(snapshot.peers) == 2 and all(v.links and len(v.links) == 1 for v in snapshot.peers)
                if linked and seen is not None and seen.online:
                    break
                await trio.sleep(0.05)
        bridge.send_signal(_signal.SIGTERM)
        with trio.fail_after(5):
            code = await bridge.wait()
        assert code == 0
        snapshot = await observe_mesh(key, port=port)
        assert agent_id in snapshot.state.agents, snapshot.to_json()
        assert not snapshot.state.agents[agent_id].online
    finally:
        for process in (bridge, watcher):
            if process.poll() is None:
                process.kill()
            await process.wait()


async def test_bridge_leaves_when_the_harness_process_exits(tmp_path: Path) -> None:
    """``--harness-pid``: the bridge leaves (exit 0) when that process exits, though its stdin is still open."""
    env = {
        **os.environ,
        "AGENT_COMMS_HOME": str(tmp_path / "home"),
        "AGENT_COMMS_PORT": str(free_port()),
        "AGENT_COMMS_LOAD_PLUGINS": "",
    }
    harness = await trio.lowlevel.open_process([sys.executable, "-c", "import sys; sys.stdin.read()"], stdin=-1)
    bridge = await trio.lowlevel.open_process(
        [sys.executable, "-m", "agent_comms", "bridge", "jsonl", "--harness-pid", str(harness.pid)],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        env=env,
        cwd=tmp_path,
    )
    try:
        assert bridge.stdout is not None
        out = JsonLines(bridge.stdout)
        with trio.fail_after(DEADLINE):
            assert (await out.next())["type"] == "ready"
            harness.kill()
            assert await bridge.wait() == 0
    finally:
        for process in (bridge, harness):
            if process.poll() is None:
                process.kill()
            await process.wait()


def test_tool_schema_lists_every_parameter_and_action_for_relays() -> None:
    """The schema the pi and OpenCode relays register: every contract parameter, ``action`` the only required one."""
    from agent_comms import actions
    from agent_comms.bridges.jsonl import tool_schema

    schema = tool_schema()
    assert schema["name"] == "agent_comms"
    parameters = schema["parameters"]
    assert list(parameters["properties"]) == list(actions.PARAMETERS)
    assert parameters["required"] == ["action"]
    listed = parameters["properties"]["action"]["enum"]
    assert set(listed) == {"register", "update", "whoami", "list_agents", "create_room", "list_rooms", "join_room"} | {
        "leave_room",
        "send",
        "dm",
        "read_room",
        "invite",
        "decline_invite",
        "kick",
        "destroy_room",
    }
    assert all(f"- {action}:" in schema["description"] for action in listed)
    assert parameters["properties"]["streamingBehavior"]["enum"] == ["steer", "followUp", "info"]
    assert parameters["properties"]["tags"]["type"] == "array"


async def test_the_bridge_pushes_nothing_of_a_ghost_and_lists_it_nowhere() -> None:
    """The visibility rules hold on the push path and in the answers of a bridge, not only on the tool."""
    with trio.fail_after(DEADLINE):
        async with open_in_memory_mesh() as mesh, bridged(mesh, "alice") as alice:
            await alice.out.next_of("ready")
            assert (await alice.call(1, action="create_room", room="den"))["is_error"] is False
            spook = await mesh.agent("jsonl", name="spook", cwd="/work/spook", visibility="ghost")
            bob = await mesh.agent("jsonl", name="bob", cwd="/work/bob")
            await mesh.settle()
            for agent in (spook, bob):  # the ghost first: its join must not be the first event
                assert not (await agent.call({"action": "join_room", "room": "den"})).is_error
                await mesh.settle()
            event = await alice.out.next_of("event")
            assert (event["event"]["type"], event["event"]["sender"]) == ("member_joined", bob.id)
            rooms = await alice.call(2, action="list_rooms")
            assert "#den (public, 2 member(s)" in rooms["text"]
            assert spook.id not in rooms["text"]
