"""The worked examples of ``docs/plugins.md`` ("Writing a bridge: one worked example per family") are true.

Each test takes the example's Python blocks from the document as they are, installs them as a distribution of their
own (a package beside a ``*.dist-info`` with an ``agent_comms`` entry point, on ``PYTHONPATH``), and runs it for
real: ``agent-comms bridge my-harness`` as a process on a private mesh, with another agent (``agent-comms bridge
jsonl``) sending it a DM. The MCP-family example is driven by hand-written JSON-RPC lines, as an MCP client would
send them.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
import textwrap
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager
from importlib import metadata
from pathlib import Path
from typing import Any

import pytest
import trio

from agent_comms.plugins import find_bridge, get_plugin_manager
from agent_comms.testing.processes import Lines, Peer, free_port, mesh_env, open_peer

DOC = Path(__file__).resolve().parents[1] / "docs" / "plugins.md"
PACKAGE = "agent_comms_my_harness"
TIMEOUT = 60


def example_files(section: str) -> dict[str, str]:
    """The Python blocks of the document's section ``section`` that start with ``# agent_comms_my_harness/<file>``."""
    text = DOC.read_text(encoding="utf-8")
    start = text.index(f"### {section}")
    end = text.index("\n### ", start + 1)
    files = {}
    for block in re.findall(r"```python\n(.*?)```", text[start:end], re.DOTALL):
        first = block.splitlines()[0]
        match = re.fullmatch(rf"# {PACKAGE}/(\w+\.py)(:.*)?", first)
        if match:
            files[match.group(1)] = block
    return files


@pytest.fixture
def install(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Any]:
    """``install(files)``: the package ``agent_comms_my_harness`` with these files, as distribution and entry point
    ``my-harness``, importable here and in subprocesses (``PYTHONPATH``)."""
    site = tmp_path / "site"

    def install(files: dict[str, str]) -> Path:
        package = site / PACKAGE
        package.mkdir(parents=True)
        for name, source in files.items():
            (package / name).write_text(textwrap.dedent(source), encoding="utf-8")
        info = site / f"{PACKAGE}-1.0.dist-info"
        info.mkdir()
        (info / "METADATA").write_text("Metadata-Version: 2.1\nName: agent-comms-my-harness\nVersion: 1.0\n")
        (info / "entry_points.txt").write_text(f"[agent_comms]\nmy-harness = {PACKAGE}\n")
        return site

    monkeypatch.syspath_prepend(str(site))
    monkeypatch.setenv("PYTHONPATH", os.pathsep.join([str(site), os.environ.get("PYTHONPATH", "")]))
    monkeypatch.setenv("AGENT_COMMS_LOAD_PLUGINS", "my-harness")
    yield install
    for name in [name for name in sys.modules if name == PACKAGE or name.startswith(f"{PACKAGE}.")]:
        del sys.modules[name]


@asynccontextmanager
async def open_bridge(env: dict[str, str], cwd: Path, *args: str) -> AsyncIterator[Lines]:
    """``agent-comms bridge my-harness ARGS`` as a process, its output lines read as they come."""
    await trio.Path(cwd).mkdir(parents=True, exist_ok=True)
    process = await trio.lowlevel.open_process(
        [sys.executable, "-m", "agent_comms", "bridge", "my-harness", *args],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        env=env,
        cwd=cwd,
    )
    try:
        async with trio.open_nursery() as nursery:
            lines = Lines(process)
            nursery.start_soon(lines.read_all)
            yield lines
            nursery.cancel_scope.cancel()
    finally:
        if process.poll() is None:
            process.kill()
        with trio.move_on_after(5):
            await process.wait()


async def wait_for_read_receipt(bob: Peer, message_id: str) -> None:
    await bob.wait_for(
        lambda m: (
            m.get("type") == "event"
            and m["event"].get("type") == "delivery_status"
            and m["event"].get("message_id") == message_id
            and m["event"].get("status") == "read"
        )
    )


async def dm_once_known(bob: Peer, target: str, content: str) -> dict[str, Any]:
    """Bob's DM to ``target``, sent once Bob's replica has the agent (both bridges start at the same time)."""
    while (sent := await bob.call(action="dm", target=target, content=content))["is_error"]:
        assert "NOT_FOUND" in sent["text"] or "not found" in sent["text"].lower(), sent["text"]
        await trio.sleep(0.05)
    return sent


# ---------------------------------------------------------------- the JSON-lines family


EXTENSION = "// the harness's extension; setup fills in its configuration\nconst config = /*AGENT_COMMS_CONFIG*/;\n"


def test_the_json_lines_example_registers_and_sets_up(install: Any, tmp_path: Path) -> None:
    files = example_files("The JSON-lines family")
    assert list(files) == ["__init__.py"]
    install({**files, "extension.js": EXTENSION})
    import agent_comms_my_harness as example

    bridge = find_bridge(get_plugin_manager(), "my-harness")
    assert (bridge.package, bridge.pushes, bridge.push_paths) == (
        "agent-comms-my-harness",
        True,
        ("relay", "continue-turn"),
    )
    home = tmp_path / "home"
    assert bridge.detect is not None
    assert bridge.configure is not None
    assert bridge.status is not None
    assert bridge.remove is not None
    assert not bridge.detect(home).installed
    (home / ".my-harness").mkdir(parents=True)
    assert bridge.detect(home).installed
    assert bridge.configure(home, True) == [f"wrote the agent-comms extension {example.extension_path(home)}"]
    assert bridge.status(home) == "not configured"
    assert bridge.configure(home, False) == [f"wrote the agent-comms extension {example.extension_path(home)}"]
    assert bridge.configure(home, False) == []  # idempotent
    written = example.extension_path(home).read_text(encoding="utf-8")
    assert '"command": [' in written
    assert '"name": "agent_comms"' in written
    assert bridge.status(home) == "configured"
    assert bridge.remove(home, False) == [f"deleted {example.extension_path(home)}"]
    assert bridge.remove(home, False) == []


async def test_the_json_lines_example_relays_events_read_once_acknowledged(install: Any, tmp_path: Path) -> None:
    install({**example_files("The JSON-lines family"), "extension.js": EXTENSION})
    env = {**mesh_env(tmp_path, free_port()), "AGENT_COMMS_LOAD_PLUGINS": "my-harness"}
    with trio.fail_after(TIMEOUT):
        async with (
            open_bridge(env, tmp_path / "carol", "--name", "carol") as carol,
            open_peer("bob", env, tmp_path / "bob") as bob,
        ):
            ready = await carol.wait_for(lambda m: m.get("type") == "ready")
            assert ready["agent"]["harness"] == "my-harness"
            sent = await dm_once_known(bob, "carol", "hello, family")
            message_id = sent["data"]["message_id"]
            line = await carol.wait_for(lambda m: m.get("type") == "event" and m["event"]["type"] == "dm")
            assert line["event"]["content"] == "hello, family"
            await bob.wait_for(
                lambda m: m.get("type") == "event" and m["event"].get("status") == "delivered"
            )  # delivered, and not read until the extension says it showed it
            await carol.send({"type": "shown", "ids": [line["event"]["id"]]})
            await wait_for_read_receipt(bob, message_id)
            await carol.send({"type": "shutdown"})


# ---------------------------------------------------------------- the MCP family


@pytest.fixture
def mcp_installed() -> None:
    try:
        metadata.distribution("agent-comms-mcp")
    except metadata.PackageNotFoundError:
        message = "agent-comms-mcp is not installed: pip install -e ./bridges/mcp"
        if os.environ.get("CI"):
            pytest.fail(message)
        pytest.skip(message)


@pytest.mark.usefixtures("mcp_installed")
async def test_the_mcp_example_pushes_a_dm_as_a_notification(install: Any, tmp_path: Path) -> None:
    files = example_files("The MCP family")
    assert sorted(files) == ["__init__.py", "push.py"]
    install(files)
    bridge = find_bridge(get_plugin_manager(), "my-harness")
    assert bridge.push_paths == ("tool-results", "notification")
    env = {**mesh_env(tmp_path, free_port()), "AGENT_COMMS_LOAD_PLUGINS": "my-harness"}
    with trio.fail_after(TIMEOUT):
        async with (
            open_bridge(env, tmp_path / "carol", "--name", "carol") as carol,
            open_peer("bob", env, tmp_path / "bob") as bob,
        ):
            client = {"name": "test", "version": "0"}
            params = {"protocolVersion": "2025-06-18", "capabilities": {}, "clientInfo": client}
            await carol.send({"jsonrpc": "2.0", "id": 1, "method": "initialize", "params": params})
            answer = await carol.wait_for(lambda m: m.get("id") == 1)
            assert "my-harness/events" in answer["result"]["capabilities"]["experimental"]
            await carol.send({"jsonrpc": "2.0", "method": "notifications/initialized"})
            sent = await dm_once_known(bob, "carol", "hello over MCP")
            pushed = await carol.wait_for(lambda m: m.get("method") == "notifications/my-harness/event")
            assert "hello over MCP" in pushed["params"]["content"]
            await wait_for_read_receipt(bob, sent["data"]["message_id"])
            # Pushed, so not drained again into a tool result.
            await carol.send({"jsonrpc": "2.0", "id": 2, "method": "tools/call", "params": _whoami()})
            result = await carol.wait_for(lambda m: m.get("id") == 2)
            assert "hello over MCP" not in str(result["result"])


def _whoami() -> dict[str, Any]:
    return {"name": "agent_comms", "arguments": {"action": "whoami"}}
