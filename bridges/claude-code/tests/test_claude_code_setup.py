"""Tests for setting Claude Code up: the setup hooks run the real ``claude`` CLI against a throwaway HOME.

Testing policy: the home holds a ``~/.claude.json`` written beforehand with another MCP server and a setting of the
user's, as a real one would; every check reads back through ``claude`` itself (``claude mcp list``, ``claude mcp
get``, ``claude plugin list --json``). ``claude mcp list/get`` start the servers to check their health, so they run
with a free ``AGENT_COMMS_PORT`` and a temporary ``AGENT_COMMS_HOME``: the bridge they start never touches the real
mesh. The CLI takes a few seconds per command, so the whole cycle is one test.
"""

from __future__ import annotations

import json
import os
import shlex
import subprocess
from pathlib import Path

import pytest
from agent_comms_claude_code import plugin
from agent_comms_claude_code.configure import (
    ALLOW_RULES,
    PLUGIN_ID,
    SetupError,
    marketplace_dir,
    render_marketplace,
    settings_path,
    state_path,
)
from claude_code_helpers import free_port

from agent_comms.configure import bridge_command, run_harness_cli
from agent_comms.testing.harnesses import harness_cli

OTHER = {"type": "stdio", "command": "/bin/cat", "args": ["--other-server"], "env": {}}


@pytest.fixture
def home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    claude = harness_cli("claude")
    monkeypatch.setenv("AGENT_COMMS_CLAUDE", str(claude))
    monkeypatch.setenv("AGENT_COMMS_PORT", str(free_port()))
    monkeypatch.setenv("AGENT_COMMS_HOME", str(tmp_path / "mesh-home"))
    home = tmp_path / "user"
    home.mkdir()
    (home / ".claude.json").write_text(json.dumps({"mcpServers": {"other": OTHER}, "userSetting": 42}, indent=2))
    return home


def claude(home: Path, *args: str) -> subprocess.CompletedProcess[str]:
    result = run_harness_cli([os.environ["AGENT_COMMS_CLAUDE"], *args], home, timeout=120)
    return result


def plugins(home: Path) -> dict[str, dict[str, object]]:
    listed = json.loads(claude(home, "plugin", "list", "--json").stdout)
    return {entry["id"]: entry for entry in listed}


def snapshot(home: Path) -> dict[str, str]:
    """What configure may touch: Claude Code's user settings and MCP servers, and the marketplace files."""
    config = json.loads((home / ".claude.json").read_text())
    files = {str(p.relative_to(home)): p.read_text() for p in marketplace_dir(home).rglob("*") if p.is_file()}
    return {
        "mcpServers": json.dumps(config.get("mcpServers"), sort_keys=True),
        "settings": (home / ".claude" / "settings.json").read_text(),
        **files,
    }


def test_configure_status_and_remove_with_the_real_claude_cli(home: Path) -> None:
    detected = plugin.detect(home)
    assert detected is not None
    assert detected.installed, detected.detail
    assert "Claude Code" in detected.detail
    assert "not set up" in (plugin.status(home) or "")

    planned = plugin.configure(home, True)
    assert planned is not None
    assert any("claude mcp add --scope user agent-comms" in line for line in planned)
    assert any(PLUGIN_ID in line for line in planned)
    assert any(ALLOW_RULES[0] in line and "settings.json" in line for line in planned)
    assert not marketplace_dir(home).exists()  # a dry run touches nothing
    assert not settings_path(home).exists()
    assert "agent-comms" not in claude(home, "mcp", "list").stdout

    changes = plugin.configure(home, False)
    assert changes is not None
    assert len(changes) >= 3, changes
    listed = claude(home, "mcp", "list")
    assert "agent-comms:" in listed.stdout, listed
    assert "other:" in listed.stdout  # the server that was there survives
    got = claude(home, "mcp", "get", "agent-comms")
    assert got.returncode == 0, got
    assert "User config" in got.stdout
    assert "Connected" in got.stdout  # Claude Code's own client started the bridge and initialized it
    assert shlex.join(bridge_command("claude-code")[1:]) in got.stdout
    config = json.loads((home / ".claude.json").read_text())
    assert config["mcpServers"]["other"] == OTHER
    assert config["userSetting"] == 42
    installed = plugins(home)[PLUGIN_ID]
    assert installed["enabled"] is True
    # the plugin's server is the same command as the user-scope one, so Claude Code runs it once
    program, *args = bridge_command("claude-code")
    assert installed["mcpServers"] == {"agent-comms": {"command": program, "args": args}}
    hooks = json.loads((marketplace_dir(home) / "plugins/agent-comms/hooks/hooks.json").read_text())["hooks"]
    assert sorted(hooks) == ["PostToolUse", "Stop", "UserPromptSubmit"]
    [stop] = hooks["Stop"][0]["hooks"]
    assert stop["asyncRewake"] is True
    assert Path(shlex.split(stop["command"])[0]).exists()
    assert "configured (user scope)" in (plugin.status(home) or "")
    assert f"plugin {PLUGIN_ID} enabled" in (plugin.status(home) or "")
    settings = json.loads(settings_path(home).read_text())
    assert settings["permissions"]["allow"] == list(ALLOW_RULES)
    assert settings["enabledPlugins"] == {PLUGIN_ID: True}  # Claude Code's own settings are kept
    assert f"tool allowed ({ALLOW_RULES[0]}" in (plugin.status(home) or "")

    before = snapshot(home)
    assert plugin.configure(home, False) == []  # the second run changes nothing
    assert snapshot(home) == before

    removed = plugin.remove(home, False)
    assert removed is not None
    assert len(removed) == 5, removed
    assert "agent_comms" not in settings_path(home).read_text()
    listed = claude(home, "mcp", "list")
    assert "agent-comms" not in listed.stdout
    assert "other:" in listed.stdout
    assert PLUGIN_ID not in plugins(home)
    assert "agent-comms" not in claude(home, "plugin", "marketplace", "list").stdout
    assert not marketplace_dir(home).exists()
    config = json.loads((home / ".claude.json").read_text())
    assert config["mcpServers"] == {"other": OTHER}
    assert config["userSetting"] == 42
    assert plugin.remove(home, False) == []


def test_an_allow_rule_of_the_user_is_kept(home: Path) -> None:
    """Setup adds its rule beside the user's own rules, and remove takes only its rule away."""
    settings_path(home).parent.mkdir()
    settings_path(home).write_text(json.dumps({"permissions": {"allow": ["Bash(git status)"]}, "model": "x"}))
    plugin.configure(home, False)
    settings = json.loads(settings_path(home).read_text())
    assert settings["permissions"]["allow"] == ["Bash(git status)", *ALLOW_RULES]
    assert settings["model"] == "x"
    plugin.remove(home, False)
    settings = json.loads(settings_path(home).read_text())
    assert settings["permissions"]["allow"] == ["Bash(git status)"]
    assert settings["model"] == "x"


def test_two_servers_after_a_manual_edit_are_reported_by_status_and_repaired_by_setup(home: Path) -> None:
    """A user-scope server whose command differs from the plugin's makes Claude Code start both; status says so,
    and setup makes them one again (so does an edited copy of the installed plugin)."""
    assert plugin.configure(home, False)
    program, *args = bridge_command("claude-code")
    claude(home, "mcp", "remove", "agent-comms", "--scope", "user")
    edited = claude(home, "mcp", "add", "--scope", "user", "agent-comms", "--", program, *args, "--name", "mine")
    assert edited.returncode == 0, edited
    listed = claude(home, "mcp", "list").stdout
    assert "plugin:agent-comms:agent-comms:" in listed, listed  # Claude Code runs both servers
    assert "--name mine - " in listed, listed
    line = plugin.status(home) or ""
    assert "two agent-comms servers" in line, line
    assert "--name mine" in line
    assert "agent-comms setup claude-code" in line
    repaired = plugin.configure(home, False) or []
    assert any("replace the MCP server" in change for change in repaired), repaired
    assert "two agent-comms servers" not in (plugin.status(home) or "")
    listed = claude(home, "mcp", "list").stdout
    assert "plugin:agent-comms:agent-comms:" not in listed, listed  # one server again

    # The plugin's .mcp.json edited by hand (Claude Code reads a directory marketplace's plugin from its folder).
    installed = Path(str(plugins(home)[PLUGIN_ID]["readFromFolder"])) / ".mcp.json"
    mcp = json.loads(installed.read_text())
    mcp["mcpServers"]["agent-comms"]["args"] = [*args, "--name", "other"]
    installed.write_text(json.dumps(mcp))
    line = plugin.status(home) or ""
    assert "two agent-comms servers" in line, line
    assert "--name other" in line
    repaired = plugin.configure(home, False) or []
    assert any("write the Claude Code plugin marketplace" in change for change in repaired), repaired
    assert "two agent-comms servers" not in (plugin.status(home) or "")
    assert plugin.configure(home, False) == []


def test_the_marketplace_in_the_package_is_valid_for_claude(tmp_path: Path) -> None:
    """``claude plugin validate`` accepts the rendered marketplace and the plugin."""
    claude_program = harness_cli("claude")
    target = tmp_path / "marketplace"
    for relative, text in render_marketplace().items():
        (target / relative).parent.mkdir(parents=True, exist_ok=True)
        (target / relative).write_text(text)
    for path in (target, target / "plugins" / "agent-comms"):
        result = run_harness_cli([str(claude_program), "plugin", "validate", str(path)], tmp_path, timeout=120)
        assert result.returncode == 0, result.stdout + result.stderr
        assert "Validation passed" in result.stdout


def test_a_settings_file_that_is_a_symlink_is_edited_through_the_link(home: Path) -> None:
    """A dotfiles manager links ~/.claude/settings.json: setup and remove edit the file it points to, keep the link,
    and keep the file's mode."""
    dotfiles = home / "dotfiles"
    dotfiles.mkdir()
    target = dotfiles / "claude-settings.json"
    target.write_text(json.dumps({"model": "x"}, indent=2) + "\n")
    target.chmod(0o640)
    settings_path(home).parent.mkdir()
    settings_path(home).symlink_to(target)
    assert plugin.configure(home, False)
    assert settings_path(home).is_symlink()
    assert settings_path(home).resolve() == target
    assert json.loads(target.read_text())["permissions"]["allow"] == list(ALLOW_RULES)
    assert json.loads(target.read_text())["model"] == "x"
    assert oct(target.stat().st_mode & 0o777) == oct(0o640)
    plugin.remove(home, False)
    assert settings_path(home).is_symlink()
    assert "permissions" not in json.loads(target.read_text())


def test_rules_already_there_are_not_touched_and_remove_takes_only_what_setup_added(home: Path) -> None:
    """With our rules anywhere in the list, setup leaves the file byte for byte; a rule the user had added
    themselves survives remove, and only the rule setup added goes."""
    settings_path(home).parent.mkdir()
    text = json.dumps({"permissions": {"allow": [ALLOW_RULES[0], "Bash(ls)", ALLOW_RULES[1], "Read"]}}) + "\n"
    settings_path(home).write_text(text)
    assert plugin.configure(home, False)  # the server and plugin, not the rules
    settings = json.loads(settings_path(home).read_text())
    assert settings["permissions"]["allow"] == [ALLOW_RULES[0], "Bash(ls)", ALLOW_RULES[1], "Read"]
    before = (settings_path(home).read_text(), settings_path(home).stat().st_mtime_ns)
    assert plugin.configure(home, False) == []
    assert (settings_path(home).read_text(), settings_path(home).stat().st_mtime_ns) == before
    removed = plugin.remove(home, False) or []
    assert not [line for line in removed if "permissions.allow" in line], removed
    assert json.loads(settings_path(home).read_text())["permissions"]["allow"] == [
        ALLOW_RULES[0], "Bash(ls)", ALLOW_RULES[1], "Read"
    ]  # fmt: skip

    # the user has one of the two rules: setup adds (and says, in its dry run) only the other; remove takes only it
    settings_path(home).write_text(json.dumps({"permissions": {"allow": ["Bash(ls)", ALLOW_RULES[0]]}}))
    planned = plugin.configure(home, True) or []
    [line] = [line for line in planned if "permissions.allow" in line]
    assert repr(ALLOW_RULES[1]) in line
    assert repr(ALLOW_RULES[0]) not in line
    plugin.configure(home, False)
    allow = json.loads(settings_path(home).read_text())["permissions"]["allow"]
    assert allow == ["Bash(ls)", ALLOW_RULES[0], ALLOW_RULES[1]]
    planned = plugin.remove(home, True) or []
    [line] = [line for line in planned if "permissions.allow" in line]
    assert repr(ALLOW_RULES[1]) in line
    assert repr(ALLOW_RULES[0]) not in line
    plugin.remove(home, False)
    assert json.loads(settings_path(home).read_text())["permissions"]["allow"] == ["Bash(ls)", ALLOW_RULES[0]]


def test_rules_of_a_setup_from_before_records_were_kept_are_taken_out_by_remove(home: Path) -> None:
    """A setup of an earlier release added both rules and kept no record: remove (directly, or after setup ran
    again) takes them out; an existing record is authoritative, and one saying no rule was added keeps them."""
    plugin.configure(home, False)
    assert json.loads(settings_path(home).read_text())["permissions"]["allow"] == list(ALLOW_RULES)
    state_path(home).unlink()  # what the earlier release left: the rules, the marketplace, no record
    planned = plugin.remove(home, True) or []
    [line] = [line for line in planned if "permissions.allow" in line]
    assert all(repr(rule) in line for rule in ALLOW_RULES), line
    assert plugin.configure(home, False) == []  # the upgrade: setup again adds nothing...
    removed = plugin.remove(home, False) or []  # ...and remove still knows the rules are setup's
    assert [line for line in removed if "permissions.allow" in line], removed
    assert "permissions" not in json.loads(settings_path(home).read_text())

    # a record saying setup added no rule is believed, even with the marketplace there
    settings_path(home).write_text(json.dumps({"permissions": {"allow": list(ALLOW_RULES)}}))
    marketplace_dir(home).mkdir(parents=True)
    state_path(home).write_text(json.dumps({"added_allow_rules": []}))
    plugin.remove(home, False)
    assert json.loads(settings_path(home).read_text())["permissions"]["allow"] == list(ALLOW_RULES)


@pytest.mark.parametrize("broken", ["settings", "claude.json"])
def test_a_file_that_is_not_json_stops_setup_before_anything_changes(home: Path, broken: str) -> None:
    """Setup and remove check every file they edit first: the error names the file and where the JSON breaks, and
    nothing at all has changed (no server, no plugin, no marketplace, the files as they were)."""
    settings_path(home).parent.mkdir()
    settings_path(home).write_text('{"model": "x"}\n')
    path = settings_path(home) if broken == "settings" else home / ".claude.json"
    path.write_text('{\n  "model": "x",\n  oops\n}\n')
    before = {p: p.read_bytes() for p in (settings_path(home), home / ".claude.json")}
    for dry_run in (True, False):
        with pytest.raises(SetupError) as caught:
            plugin.configure(home, dry_run)
        assert str(path) in str(caught.value)
        assert "line 3 column 3" in str(caught.value)
        assert "nothing was changed" in str(caught.value)
        with pytest.raises(SetupError, match="line 3 column 3"):
            plugin.remove(home, dry_run)
    assert {p: p.read_bytes() for p in before} == before
    assert sorted(p.name for p in settings_path(home).parent.iterdir()) == ["settings.json"]  # no plugin installed
    assert not marketplace_dir(home).exists()
    assert not marketplace_dir(home).parent.exists()
