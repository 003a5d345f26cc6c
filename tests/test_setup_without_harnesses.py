"""``agent-comms setup``, ``status`` and ``remove`` with the real bridge plugins, on a machine with none of the
harness CLIs: a fresh ``HOME`` and a ``PATH`` holding only this installation's programs and the system's.

Testing policy: the real ``agent-comms`` program runs as a subprocess with every installed plugin loaded, as a user
who just ran ``pip install`` would; nothing is faked. Under ``CI`` a missing bridge distribution fails the test.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

BRIDGES = ("agent_comms_claude_code", "agent_comms_codex", "agent_comms_opencode", "agent_comms_pi", "agent_comms_mcp")
HARNESS_CLIS = ("claude", "codex", "opencode", "pi")


@pytest.fixture
def env(tmp_path: Path) -> dict[str, str]:
    for package in BRIDGES:
        if os.environ.get("CI") == "true":
            __import__(package)  # under CI a missing bridge is a failure, not a skip
        else:
            pytest.importorskip(package)
    home = tmp_path / "home"
    home.mkdir()
    path = os.pathsep.join([str(Path(sys.executable).parent), "/usr/bin", "/bin"])
    found = {name: shutil.which(name, path=path) for name in HARNESS_CLIS}
    assert not any(found.values()), f"a harness CLI is on the system PATH: {found}"
    skip = ("AGENT_COMMS_CLAUDE", "AGENT_COMMS_LOAD_PLUGINS", "XDG_CONFIG_HOME", "XDG_DATA_HOME", "XDG_STATE_HOME")
    environment = {key: value for key, value in os.environ.items() if key not in skip}
    environment.update(HOME=str(home), PATH=path, AGENT_COMMS_HOME=str(tmp_path / "mesh"))
    return environment


def agent_comms(env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    program = Path(sys.executable).parent / "agent-comms"
    return subprocess.run(
        [str(program), *args], env=env, capture_output=True, text=True, timeout=120, stdin=subprocess.DEVNULL
    )


def test_remove_with_nothing_configured_is_success(env: dict[str, str]) -> None:
    """Nothing set up and no harness CLI: there is nothing to remove, which is no failure."""
    home = Path(env["HOME"])
    for args in (("remove", "--dry-run"), ("remove",), ("remove", "claude-code")):
        result = agent_comms(env, *args)
        assert (result.returncode, result.stderr) == (0, ""), result
        [line] = result.stdout.splitlines()
        assert line.startswith("nothing to remove: agent-comms is not configured for "), line
        assert "claude-code" in line
    assert sorted(p.name for p in home.iterdir()) == []  # and nothing was created


def test_the_mcp_plugin_is_installed_and_says_how_a_client_is_configured(env: dict[str, str]) -> None:
    """``setup mcp`` says that a generic MCP client is configured by adding ``agent-comms-mcp`` to its own
    configuration, with the JSON to add; ``status`` lists the plugin as installed, with the same entry."""
    server = Path(sys.executable).parent / "agent-comms-mcp"  # this installation's, by absolute path
    snippet = json.dumps({"mcpServers": {"agent-comms": {"command": str(server)}}})
    for args in (("setup", "mcp"), ("setup", "--dry-run", "mcp")):
        result = agent_comms(env, *args)
        assert (result.returncode, result.stderr) == (0, ""), result
        assert "not installed" not in result.stdout
        assert "adding agent-comms-mcp to that client's configuration" in result.stdout, result.stdout
        assert snippet in result.stdout

    status = agent_comms(env, "status")
    assert status.returncode == 0, status
    [mcp] = [line for line in status.stdout.splitlines() if line.startswith("mcp: ")]
    assert mcp.startswith("mcp: installed (agent-comms-mcp "), mcp
    assert snippet in mcp
    assert "not installed plugins" not in status.stdout  # every bridge is installed, the MCP plugin too
    rows = {row["harness"]: row for row in json.loads(agent_comms(env, "status", "--json").stdout)}
    assert rows["mcp"]["installed"] is True
    assert rows["claude-code"]["installed"] is False

    removed = agent_comms(env, "remove", "mcp")
    assert (removed.returncode, removed.stdout) == (0, "nothing to remove: agent-comms is not configured for mcp\n")
