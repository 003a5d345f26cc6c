"""``agent-comms setup``, ``status`` and ``remove`` end to end, for every harness at once, checked by the real CLIs.

The commands run as a subprocess (this environment's ``agent-comms`` console script, every installed bridge plugin
loaded) for a throwaway ``HOME`` that already holds a user's configuration for each harness: a ``~/.claude.json``
with another MCP server and a setting, a ``~/.codex/config.toml`` with comments and another server, an OpenCode
``opencode.jsonc`` with a comment and a setting plus a plugin of the user's own, and pi settings with a setting and a
package of the user's own. What each harness makes of the result is asked of its own installed program with that
HOME (``claude mcp list``/``get``, ``codex mcp list --json``, ``opencode debug config``, ``pi list``), on the PATH
first, as the setup hooks find them. ``claude mcp list``/``get`` and ``opencode debug config`` start our bridge, so
everything runs with a temporary ``AGENT_COMMS_HOME`` and a free ``AGENT_COMMS_PORT``: the real mesh is never touched.
"""

from __future__ import annotations

import json
import os
import re
import socket
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from agent_comms.configure import BACKUP_SUFFIX
from agent_comms.testing.harnesses import harness_cli

#: Each harness CLI takes seconds to start on a loaded 2-core machine; setup runs several of them.
CLI_TIMEOUT = 120
SETUP_TIMEOUT = 300
HARNESSES = ("claude-code", "codex", "opencode", "pi")

OTHER_SERVER = {"type": "stdio", "command": "/bin/cat", "args": ["--other-server"], "env": {}}
CODEX_CONFIG = """\
# My Codex settings -- hand written, please keep these comments.
model = "o3"  # the one I like

# A server I use every day
[mcp_servers.docs]
command = "docs-server"   # on my PATH
args = ["--port", "0"]

# the end of my file
"""
OPENCODE_CONFIG = '{\n  "$schema": "https://opencode.ai/config.json",\n  // mine\n  "username": "alice"\n}\n'
OPENCODE_PLUGIN = "export const Mine = async () => ({})\n"
PI_SETTINGS = {"theme": "light", "packages": ["../../mine.ts"]}


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


class User:
    """A throwaway user: their home, and the environment every command of this test runs in."""

    def __init__(self, tmp_path: Path, bin_dirs: list[Path]) -> None:
        self.home = tmp_path / "home"
        self.home.mkdir()
        env = dict(os.environ)
        for variable in (
            "AGENT_COMMS_LOAD_PLUGINS",  # every installed plugin
            "AGENT_COMMS_CLAUDE",  # claude from the PATH, as a user's would be
            "CODEX_HOME",
            "XDG_CONFIG_HOME",
            "XDG_DATA_HOME",
            "XDG_STATE_HOME",
            "XDG_CACHE_HOME",
        ):
            env.pop(variable, None)
        path = os.pathsep.join(str(d) for d in dict.fromkeys(bin_dirs))
        env.update(
            HOME=str(self.home),
            PATH=f"{path}{os.pathsep}{env.get('PATH', '')}",
            AGENT_COMMS_HOME=str(tmp_path / "mesh-home"),
            AGENT_COMMS_PORT=str(free_port()),
        )
        self.env = env
        self.project = self.home / "project"
        self.project.mkdir()

    def run(self, *argv: str | Path, timeout: float = CLI_TIMEOUT) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [str(arg) for arg in argv],
            stdin=subprocess.DEVNULL,
            capture_output=True,
            text=True,
            env=self.env,
            cwd=self.project,
            timeout=timeout,
            check=False,
        )

    def agent_comms(self, *args: str) -> subprocess.CompletedProcess[str]:
        program = Path(sys.executable).parent / "agent-comms"
        return self.run(program, *args, timeout=SETUP_TIMEOUT)

    def ok(self, *argv: str | Path) -> str:
        result = self.run(*argv)
        assert result.returncode == 0, f"{argv}: status {result.returncode}\n{result.stdout}\n{result.stderr}"
        return result.stdout

    # ---- what each harness itself says

    def claude_servers(self) -> str:
        return self.ok("claude", "mcp", "list")

    def codex_servers(self) -> set[str]:
        return {server["name"] for server in json.loads(self.ok("codex", "mcp", "list", "--json"))}

    def opencode_plugins(self) -> list[str]:
        out = self.ok("opencode", "debug", "config")
        plugins: list[str] = json.loads(out[out.index("{") :]).get("plugin", [])
        return plugins

    def pi_packages(self) -> str:
        return self.ok("pi", "list")

    # ---- files

    def files(self) -> dict[str, bytes]:
        """Every file under the home, except setup's backups and what Claude Code itself rewrites on any run: its
        event log, and its own state in ``~/.claude.json`` (of which the user's servers and setting are kept)."""
        found = {}
        for path in sorted(self.home.rglob("*")):
            relative = path.relative_to(self.home)
            if not path.is_file() or BACKUP_SUFFIX in path.name or relative.parts[:2] == (".claude", "telemetry"):
                continue
            found[str(relative)] = path.read_bytes()
        claude = json.loads(found[".claude.json"])
        found[".claude.json"] = json.dumps([claude.get("mcpServers"), claude.get("userSetting")]).encode()
        return found


@pytest.fixture
def user(tmp_path: Path) -> User:
    for package in ("agent_comms_claude_code", "agent_comms_codex", "agent_comms_opencode", "agent_comms_pi"):
        pytest.importorskip(package)
    programs = [harness_cli(name) for name in ("claude", "codex", "opencode", "pi")]
    user = User(tmp_path, [program.parent for program in programs])
    home = user.home
    (home / ".claude.json").write_text(json.dumps({"mcpServers": {"other": OTHER_SERVER}, "userSetting": 42}))
    (home / ".codex").mkdir()
    (home / ".codex" / "config.toml").write_text(CODEX_CONFIG)
    opencode = home / ".config" / "opencode"
    (opencode / "plugins").mkdir(parents=True)
    (opencode / "opencode.jsonc").write_text(OPENCODE_CONFIG)
    (opencode / "plugins" / "mine.js").write_text(OPENCODE_PLUGIN)
    (home / ".pi" / "agent").mkdir(parents=True)
    (home / ".pi" / "agent" / "settings.json").write_text(json.dumps(PI_SETTINGS, indent=2) + "\n")
    (home / "mine.ts").write_text("export default function () {}\n")
    return user


def status_rows(user: User) -> dict[str, dict[str, Any]]:
    result = user.agent_comms("status", "--json")
    assert result.returncode == 0, result.stderr
    return {row["harness"]: row for row in json.loads(result.stdout)}


def test_setup_status_and_remove_for_every_harness_keep_the_users_configuration(user: User) -> None:
    home = user.home
    our_opencode_plugin = (home / ".config" / "opencode" / "plugins" / "agent-comms.js").as_uri()
    user_opencode_plugin = (home / ".config" / "opencode" / "plugins" / "mine.js").as_uri()
    our_pi_extension = str(home / ".pi" / "agent" / "agent-comms" / "agent-comms.ts")

    before = status_rows(user)
    for harness in HARNESSES:
        assert before[harness]["installed"] is True, before[harness]
    assert "not configured" in before["codex"]["status"]
    assert before["opencode"]["status"] == "not configured"
    assert before["pi"]["status"] == "not configured"
    assert "not set up" in before["claude-code"]["status"]

    # ---- setup: every harness is changed, and says so
    first = user.agent_comms("setup")
    assert first.returncode == 0, f"{first.stdout}\n{first.stderr}"
    for harness in HARNESSES:
        assert f"{harness}: will change:" in first.stdout, first.stdout
        assert f"{harness}: done:" in first.stdout, first.stdout
    after_setup = user.files()

    # ---- setup again: nothing to change, and not a byte changed
    second = user.agent_comms("setup")
    assert second.returncode == 0, f"{second.stdout}\n{second.stderr}"
    for harness in HARNESSES:
        assert f"{harness}: already configured; nothing to change" in second.stdout, second.stdout
    assert "will change" not in second.stdout
    assert changed(after_setup, user.files()) == []

    # ---- the harnesses themselves see ours, next to the user's own
    got = user.run("claude", "mcp", "get", "agent-comms")
    assert got.returncode == 0, got.stderr
    assert "User config" in got.stdout
    assert "Connected" in got.stdout  # Claude Code started our bridge and it answered
    listed = user.claude_servers()
    assert "agent-comms:" in listed
    assert "other:" in listed
    assert user.codex_servers() == {"docs", "agent-comms"}
    plugins = user.opencode_plugins()
    assert our_opencode_plugin in plugins
    assert user_opencode_plugin in plugins
    packages = user.pi_packages()
    assert our_pi_extension in packages
    assert str(home / "mine.ts") in packages

    # ---- status, as lines and as JSON
    lines = user.agent_comms("status")
    assert lines.returncode == 0, lines.stderr
    configured = status_rows(user)
    for harness in HARNESSES:
        row = configured[harness]
        assert row["installed"] is True
        assert f"{harness}: installed (" in lines.stdout
        assert row["status"] in lines.stdout
    assert "MCP server 'agent-comms' configured (user scope)" in configured["claude-code"]["status"]
    assert configured["codex"]["status"].startswith("configured in ")
    assert configured["opencode"]["status"].startswith("configured: plugin ")
    assert configured["pi"]["status"].startswith("configured: extension ")
    assert "outdated" not in lines.stdout

    # ---- remove: ours goes, the user's stays
    removed = user.agent_comms("remove")
    assert removed.returncode == 0, f"{removed.stdout}\n{removed.stderr}"
    for harness in HARNESSES:
        assert f"{harness}: removed:" in removed.stdout, removed.stdout

    listed = user.claude_servers()
    assert "agent-comms" not in listed
    assert "other:" in listed
    claude_json = json.loads((home / ".claude.json").read_text())
    assert claude_json["mcpServers"] == {"other": OTHER_SERVER}
    assert claude_json["userSetting"] == 42
    assert user.codex_servers() == {"docs"}
    assert (home / ".codex" / "config.toml").read_text() == CODEX_CONFIG
    plugins = user.opencode_plugins()
    assert our_opencode_plugin not in plugins
    assert user_opencode_plugin in plugins
    assert (home / ".config" / "opencode" / "opencode.jsonc").read_text() == OPENCODE_CONFIG
    assert (home / ".config" / "opencode" / "plugins" / "mine.js").read_text() == OPENCODE_PLUGIN
    packages = user.pi_packages()
    assert our_pi_extension not in packages
    assert str(home / "mine.ts") in packages
    assert json.loads((home / ".pi" / "agent" / "settings.json").read_text()) == PI_SETTINGS

    after = status_rows(user)
    assert "not set up" in after["claude-code"]["status"]
    assert after["codex"]["status"].startswith("not configured")
    assert after["opencode"]["status"] == "not configured"
    assert after["pi"]["status"] == "not configured"

    again = user.agent_comms("remove")
    assert again.returncode == 0, again.stderr
    [line] = again.stdout.splitlines()
    assert line.startswith("nothing to remove: agent-comms is not configured for "), line
    for harness in HARNESSES:
        assert harness in line


def changed(before: dict[str, bytes], after: dict[str, bytes]) -> list[str]:
    """The files that differ between two snapshots of the home."""
    return sorted(name for name in before.keys() | after.keys() if before.get(name) != after.get(name))


def test_status_says_each_harness_version_and_path_once(user: User) -> None:
    """``status`` prints the version and the path of each harness's program once per line, not again in the
    plugin's own part of it (read-only: it creates no mesh home either)."""
    result = user.agent_comms("status")
    assert result.returncode == 0, result.stderr
    lines = {line.split(":", 1)[0]: line for line in result.stdout.splitlines() if ":" in line}
    bin_dir = user.env["PATH"].split(os.pathsep)[0]
    for harness in HARNESSES:
        line = lines[harness]
        assert line.count(bin_dir) <= 1, line
        version = re.search(r"\d+\.\d+\.\d+", line)
        assert version is not None, line
        assert line.count(version.group()) == 1, line
    assert not Path(user.env["AGENT_COMMS_HOME"]).exists()
