"""Tests for the Codex setup hooks (detect, configure, status, remove), checked by the real Codex CLI.

Every test works in a throwaway HOME holding a ``~/.codex/config.toml`` with comments and another MCP server (and
for some a ``hooks.json`` with a user's hook). What Codex itself makes of the result is asked of the installed
``codex`` program with that HOME: ``codex mcp list --json``, ``codex mcp get agent-comms --json`` and
``codex exec --strict-config``, which refuses a config with a key Codex does not know.
"""

from __future__ import annotations

import json
import os
import shlex
import subprocess
import time
from pathlib import Path
from typing import Any

import pluggy
import pytest
from agent_comms_codex import config, trust
from agent_comms_codex.config import ENV_VARS, SERVER_NAME, STARTUP_TIMEOUT, ConfigError

from agent_comms.configure import BACKUP_SUFFIX, bridge_command
from agent_comms.hookspecs import PushPath
from agent_comms.plugins import PluginError, find_bridge, find_harness, get_plugin_manager
from agent_comms.testing.harnesses import harness_cli

ORIGINAL = """\
# My Codex settings -- hand written, please keep these comments.
model = "o3"  # the one I like
approval_policy = "on-request"

# A server I use every day
[mcp_servers.docs]
command = "docs-server"   # on my PATH
args = ["--port", "0"]

[mcp_servers.docs.env]
DOCS_TOKEN = "abc"  # fake

# the end of my file
"""

USER_HOOKS = {
    "hooks": {
        "PostToolUse": [{"matcher": "Bash", "hooks": [{"type": "command", "command": "/usr/local/bin/audit-log"}]}]
    }
}


@pytest.fixture
def codex() -> Path:
    return harness_cli("codex")


@pytest.fixture
def home(tmp_path: Path, codex: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A throwaway HOME with a hand-written ``~/.codex/config.toml``; the codex CLI on the PATH."""
    monkeypatch.delenv("CODEX_HOME", raising=False)
    monkeypatch.setenv("PATH", f"{codex.parent}{os.pathsep}{os.environ.get('PATH', '')}")
    home = tmp_path / "home"
    (home / ".codex").mkdir(parents=True)
    (home / ".codex" / "config.toml").write_text(ORIGINAL)
    return home


def toml_of(home: Path) -> str:
    return (home / ".codex" / "config.toml").read_text()


def backups(home: Path) -> list[Path]:
    return sorted(p for p in (home / ".codex").iterdir() if BACKUP_SUFFIX in p.name)


def snapshot(home: Path) -> dict[str, tuple[bytes, float]]:
    """Every file under ~/.codex: contents and modification time."""
    return {
        str(p.relative_to(home)): (p.read_bytes(), p.stat().st_mtime)
        for p in sorted((home / ".codex").rglob("*"))
        if p.is_file()
    }


def run_codex(codex: Path, home: Path, *args: str, timeout: float = 60) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "HOME": str(home)}
    env.pop("CODEX_HOME", None)
    return subprocess.run(
        [str(codex), *args],
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        env=env,
        cwd=home,
        timeout=timeout,
        check=False,
    )


def codex_servers(codex: Path, home: Path) -> dict[str, Any]:
    done = run_codex(codex, home, "mcp", "list", "--json")
    assert done.returncode == 0, done.stderr
    return {server["name"]: server for server in json.loads(done.stdout)}


def strict_config_check(codex: Path, home: Path) -> str:
    """Start ``codex exec --strict-config`` until it has loaded its config (or refused it); its output so far.

    Codex refuses a config with an unknown key before anything else; past the config it would call the model (there
    is none here), so it is stopped as soon as its banner shows the config was accepted.
    """
    env = {**os.environ, "HOME": str(home)}
    env.pop("CODEX_HOME", None)
    process = subprocess.Popen(
        [str(codex), "exec", "--strict-config", "--skip-git-repo-check", "say hi"],
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        env=env,
        cwd=home,
    )
    output = []
    deadline = time.monotonic() + 60
    assert process.stdout is not None
    try:
        for line in process.stdout:
            output.append(line)
            if "OpenAI Codex v" in line or time.monotonic() > deadline:
                break
    finally:
        process.kill()
        process.wait()
    return "".join(output)


def test_the_plugin_answers_for_codex_only(home: Path) -> None:
    pm: pluggy.PluginManager = get_plugin_manager(load="codex")
    info = find_harness(pm, "codex")
    assert (info.package, info.push) == ("agent-comms-codex", False)
    bridge = find_bridge(pm, "codex")
    assert bridge.push_path == PushPath.TOOL_RESULTS | PushPath.HARNESS_HOOKS | PushPath.CONTINUE_TURN
    assert bridge.detect is not None
    detection = bridge.detect(home)
    assert detection.installed
    assert detection.detail.startswith("codex-cli ")
    assert detection.config_path == home / ".codex" / "config.toml"
    for other in ("claude-code", "pi"):
        with pytest.raises(PluginError, match=f"no installed plugin bridges the harness '{other}'"):
            find_bridge(pm, other)
    assert toml_of(home) == ORIGINAL


def test_detect_without_codex(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PATH", str(tmp_path / "empty"))
    monkeypatch.delenv("CODEX_HOME", raising=False)
    detection = config.detect(tmp_path)
    assert not detection.installed
    assert "codex not found" in detection.detail


def test_configure_adds_a_server_codex_accepts_and_keeps_every_byte_of_the_user_file(codex: Path, home: Path) -> None:
    changes = config.configure(home, dry_run=False)
    assert len(changes) == 2, changes
    assert "[mcp_servers.agent-comms]" in changes[0]
    text = toml_of(home)
    assert text.startswith(ORIGINAL)  # every byte of the user's file kept; ours appended
    # Codex lists it with the command setup chose, next to the user's server.
    servers = codex_servers(codex, home)
    assert set(servers) == {"docs", SERVER_NAME}
    program, *args = bridge_command("codex")
    transport = servers[SERVER_NAME]["transport"]
    assert (transport["type"], transport["command"], transport["args"]) == ("stdio", program, args)
    assert transport["env_vars"] == list(ENV_VARS)
    assert servers[SERVER_NAME]["startup_timeout_sec"] == STARTUP_TIMEOUT
    assert servers["docs"]["transport"]["command"] == "docs-server"
    got = run_codex(codex, home, "mcp", "get", SERVER_NAME, "--json")
    assert got.returncode == 0, got.stderr
    assert json.loads(got.stdout)["transport"]["command"] == program
    plain = run_codex(codex, home, "mcp", "get", SERVER_NAME)
    assert f"command: {program}" in plain.stdout
    # Only keys Codex knows: its strict mode loads the file.
    output = strict_config_check(codex, home)
    assert "OpenAI Codex v" in output, output
    assert "unknown configuration field" not in output
    # The backup holds the file as it was.
    [saved] = [p for p in backups(home) if p.name.startswith("config.toml")]
    assert saved.read_text() == ORIGINAL
    # The hooks went to hooks.json, one per event, each running this installation's hook program.
    hooks = json.loads((home / ".codex" / "hooks.json").read_text())["hooks"]
    assert set(hooks) == {"SessionStart", "UserPromptSubmit", "PostToolUse", "Stop"}
    for event, groups in hooks.items():
        [group] = groups
        [hook] = group["hooks"]
        assert hook["type"] == "command"
        assert shlex.split(hook["command"])[-2:] == ["hook", event]
        assert isinstance(hook["timeout"], int)


def test_the_strict_check_does_catch_an_unknown_key(codex: Path, home: Path) -> None:
    """The check above can fail: a key Codex does not know is refused."""
    (home / ".codex" / "config.toml").write_text(ORIGINAL + '\n[mcp_servers.x]\ncommand = "a"\nno_such_key = 1\n')
    output = strict_config_check(codex, home)
    assert "unknown configuration field" in output
    assert "no_such_key" in output


def test_configure_twice_changes_nothing_the_second_time(home: Path) -> None:
    assert config.configure(home, dry_run=False)
    before, saved = snapshot(home), backups(home)
    time.sleep(0.01)
    assert config.configure(home, dry_run=False) == []
    assert snapshot(home) == before
    assert backups(home) == saved


def test_dry_run_touches_nothing(home: Path) -> None:
    before = snapshot(home)
    changes = config.configure(home, dry_run=True)
    assert len(changes) == 2
    assert snapshot(home) == before
    assert config.configure(home, dry_run=False) == changes  # what it said it would do
    before = snapshot(home)
    assert len(config.remove(home, dry_run=True)) == 2
    assert snapshot(home) == before


def test_remove_restores_the_file_byte_for_byte_and_codex_agrees(codex: Path, home: Path) -> None:
    config.configure(home, dry_run=False)
    assert SERVER_NAME in codex_servers(codex, home)
    changes = config.remove(home, dry_run=False)
    assert len(changes) == 2, changes
    assert toml_of(home) == ORIGINAL
    assert set(codex_servers(codex, home)) == {"docs"}
    assert not (home / ".codex" / "hooks.json").exists()  # it held only our hooks
    assert any(p.name.startswith("hooks.json") for p in backups(home))
    assert config.remove(home, dry_run=False) == []
    assert config.status(home).startswith("not configured")


def test_user_hooks_survive_configure_and_remove(home: Path) -> None:
    hooks_json = home / ".codex" / "hooks.json"
    hooks_json.write_text(json.dumps(USER_HOOKS, indent=2) + "\n")
    config.configure(home, dry_run=False)
    merged = json.loads(hooks_json.read_text())["hooks"]
    assert merged["PostToolUse"][0] == USER_HOOKS["hooks"]["PostToolUse"][0]
    assert len(merged["PostToolUse"]) == 2
    config.remove(home, dry_run=False)
    assert json.loads(hooks_json.read_text()) == USER_HOOKS


def test_a_stale_entry_is_corrected_in_place_keeping_the_users_additions(codex: Path, home: Path) -> None:
    """An agent-comms entry from an older install (another path): setup fixes the command, keeps what the user
    added (a comment, tool_timeout_sec, an extra variable) and removes cleanly afterwards."""
    stale = (
        ORIGINAL + "\n# mine, from an old install\n[mcp_servers.agent-comms]\n"
        'command = "/old/venv/bin/agent-comms"  # old\nargs = ["bridge", "codex"]\ntool_timeout_sec = 120\n'
        'env_vars = ["MY_VAR"]\n'
    )
    (home / ".codex" / "config.toml").write_text(stale)
    [change, _hooks] = config.configure(home, dry_run=False)
    assert change.startswith("update")
    server = codex_servers(codex, home)[SERVER_NAME]
    assert server["transport"]["command"] == bridge_command("codex")[0]
    assert server["transport"]["env_vars"] == ["MY_VAR", *ENV_VARS]
    assert server["tool_timeout_sec"] == 120
    text = toml_of(home)
    assert text.startswith(ORIGINAL + "\n# mine, from an old install\n")
    assert config.status(home).startswith("configured in")
    assert config.configure(home, dry_run=False) == []
    config.remove(home, dry_run=False)
    assert SERVER_NAME not in codex_servers(codex, home)
    assert toml_of(home).startswith(ORIGINAL)


def test_status_reports_what_is_configured(home: Path) -> None:
    assert config.status(home).startswith("not configured")
    config.configure(home, dry_run=False)
    line = config.status(home)
    assert line.startswith(f"configured in {home / '.codex' / 'config.toml'}: {shlex.join(bridge_command('codex'))};")
    assert "hooks SessionStart, UserPromptSubmit, PostToolUse, Stop" in line
    # Codex itself (codex app-server, hooks/list) says the new hooks are not trusted yet.
    assert "hooks NOT trusted in Codex: SessionStart (untrusted)" in line, line
    assert "Stop (untrusted)" in line
    assert "open /hooks in Codex once" in line


def test_status_reports_hooks_trusted_once_the_user_trusted_them(home: Path, codex: Path) -> None:
    """The test does what trusting the hooks in /hooks records: the hash Codex computed, under each hook's key."""
    config.configure(home, dry_run=False)
    hooks = trust.list_hooks(str(codex), home, {})
    assert len(hooks) == 4, hooks
    states = [f'[hooks.state."{hook["key"]}"]\ntrusted_hash = "{hook["currentHash"]}"\n' for hook in hooks]
    with (home / ".codex" / "config.toml").open("a") as toml:
        toml.write("\n" + "\n".join(states))
    assert "hooks trusted in Codex" in config.status(home)


def test_a_config_that_is_not_toml_is_refused_untouched(home: Path) -> None:
    broken = ORIGINAL + "\n[mcp_servers.broken\n"
    (home / ".codex" / "config.toml").write_text(broken)
    with pytest.raises(ConfigError, match="not valid TOML"):
        config.configure(home, dry_run=False)
    assert toml_of(home) == broken
    assert backups(home) == []
    assert "cannot read" in config.status(home)


def test_a_missing_config_is_created(codex: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("CODEX_HOME", raising=False)
    home = tmp_path / "fresh"
    home.mkdir()
    assert len(config.configure(home, dry_run=False)) == 2
    assert set(codex_servers(codex, home)) == {SERVER_NAME}
    assert backups(home) == []  # nothing to back up
    config.remove(home, dry_run=False)
    assert toml_of(home) == ""


def test_remove_takes_the_users_additions_to_our_table_too(codex: Path, home: Path) -> None:
    """The user added an env sub-table to our server: remove takes our table and its sub-tables, nothing else."""
    config.configure(home, dry_run=False)
    text = toml_of(home) + '\n[mcp_servers.agent-comms.env]\nEXTRA = "1"  # mine\n'
    (home / ".codex" / "config.toml").write_text(text + "\n# a comment for what follows\n[profiles_note]\n")
    assert codex_servers(codex, home)[SERVER_NAME]["transport"]["env"] == {"EXTRA": "1"}
    config.remove(home, dry_run=False)
    assert toml_of(home) == ORIGINAL + "\n# a comment for what follows\n[profiles_note]\n"
