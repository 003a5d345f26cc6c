"""``agent-comms setup``, ``status`` and ``remove`` through the real command line, with a throwaway ``HOME``.

The real bridge plugins (and their harnesses) are separate distributions, so these tests install small plugins of
their own the way a distribution does: a module beside a ``*.dist-info`` directory with an ``entry_points.txt``,
put on ``sys.path`` (or ``PYTHONPATH`` for a subprocess). ``AGENT_COMMS_LOAD_PLUGINS`` names only them, so the
tests behave the same whichever real bridge plugins are installed. The fake harness "fake-one" counts as installed
when ``~/.fake-one`` exists and keeps its configuration in ``~/.fake-one/config.json``, edited with the helpers of
:mod:`agent_comms.configure` like a real plugin would.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from collections.abc import Iterator
from pathlib import Path

import pytest

from agent_comms.cli import main
from agent_comms.configure import BACKUP_SUFFIX

PLUGINS = {
    "fakeone": """
        import json
        from agent_comms.configure import bridge_command, write_config
        from agent_comms.hookspecs import Bridge, Detection, PushPath, hookimpl

        NAME = "fake-one"

        def _path(home):
            return home / ".fake-one" / "config.json"

        def _load(home):
            try:
                return json.loads(_path(home).read_text())
            except FileNotFoundError:
                return {}

        def _write(home, data, dry_run):
            return write_config(_path(home), json.dumps(data, indent=2) + "\\n", dry_run=dry_run)

        def detect(home):
            found = (home / ".fake-one").is_dir()
            return Detection(found, "version 1.0" if found else "~/.fake-one not found", _path(home))

        def configure(home, dry_run):
            data = _load(home)
            wanted = bridge_command(NAME)
            if data.get("servers", {}).get("agent-comms") == wanted:
                return []
            data.setdefault("servers", {})["agent-comms"] = wanted
            _write(home, data, dry_run)
            return [f"add the agent-comms server to {_path(home)}"]

        def status(home):
            return "configured" if "agent-comms" in _load(home).get("servers", {}) else "not configured"

        def remove(home, dry_run):
            data = _load(home)
            if "agent-comms" not in data.get("servers", {}):
                return []
            del data["servers"]["agent-comms"]
            _write(home, data, dry_run)
            return [f"remove the agent-comms server from {_path(home)}"]

        @hookimpl
        def register_bridges(register):
            register(
                Bridge(
                    name=NAME,
                    description="a fake",
                    package="agent-comms-fake-one",
                    push_path=PushPath.TOOL_RESULTS,
                    detect=detect,
                    configure=configure,
                    status=status,
                    remove=remove,
                )
            )
    """,
    "faketwo": """
        from agent_comms.hookspecs import Bridge, Detection, PushPath, hookimpl

        def configure(home, dry_run):
            raise AssertionError("configure must not run for a harness that is not installed")

        @hookimpl
        def register_bridges(register):
            register(
                Bridge(
                    name="fake-two",
                    description="never installed",
                    package="agent-comms-two",
                    push_path=PushPath.TOOL_RESULTS,
                    detect=lambda home: Detection(False, "fake-two is not on PATH"),
                    configure=configure,
                    status=lambda home: "not configured",
                    remove=lambda home, dry_run: [],
                )
            )
    """,
    "fakebroken": """
        from agent_comms.hookspecs import Bridge, Detection, PushPath, hookimpl

        def configure(home, dry_run):
            raise RuntimeError("the harness CLI exited with status 1")

        @hookimpl
        def register_bridges(register):
            register(
                Bridge(
                    name="fake-broken",
                    description="fails",
                    package="agent-comms-broken",
                    push_path=PushPath.TOOL_RESULTS,
                    detect=lambda home: Detection(True, "version 0"),
                    configure=configure,
                )
            )
    """,
    "fakeblind": """
        from agent_comms.hookspecs import Bridge, PushPath, hookimpl

        def detect(home):
            raise PermissionError("cannot read ~/.blind")

        @hookimpl
        def register_bridges(register):
            register(
                Bridge(
                    name="fake-blind",
                    description="cannot look",
                    package="agent-comms-blind",
                    push_path=PushPath.TOOL_RESULTS,
                    detect=detect,
                )
            )
    """,
}


@pytest.fixture
def plugins_dir(tmp_path: Path) -> Path:
    """A directory holding the fake plugin distributions (one module and one dist-info each)."""
    directory = tmp_path / "site"
    directory.mkdir()
    for module, source in PLUGINS.items():
        (directory / f"{module}.py").write_text(textwrap.dedent(source))
        info = directory / f"agent_comms_{module}-1.0.dist-info"
        info.mkdir()
        (info / "METADATA").write_text(f"Metadata-Version: 2.1\nName: agent-comms-{module}\nVersion: 1.0\n")
        (info / "entry_points.txt").write_text(f"[agent_comms]\n{module} = {module}\n")
    return directory


@pytest.fixture
def home(tmp_path: Path, plugins_dir: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    """A throwaway HOME with the fake harness "fake-one" installed; the fake plugins importable and selected."""
    home = tmp_path / "home"
    (home / ".fake-one").mkdir(parents=True)
    monkeypatch.setenv("HOME", str(home))
    monkeypatch.setenv("AGENT_COMMS_LOAD_PLUGINS", "fakeone,faketwo")
    monkeypatch.syspath_prepend(str(plugins_dir))
    yield home
    for module in PLUGINS:
        sys.modules.pop(module, None)


def run(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    status = main(list(argv))
    out, err = capsys.readouterr()
    return status, out, err


def config(home: Path) -> Path:
    return home / ".fake-one" / "config.json"


def backups(home: Path) -> list[Path]:
    return sorted((home / ".fake-one").glob(f"config.json{BACKUP_SUFFIX}*"))


def test_dry_run_shows_the_change_and_touches_nothing(home: Path, capsys: pytest.CaptureFixture[str]) -> None:
    status, out, err = run(capsys, "setup", "--dry-run")
    assert (status, err) == (0, "")
    assert out.splitlines() == [
        "fake-one: would change:",
        f"  - add the agent-comms server to {config(home)}",
    ]
    assert not config(home).exists()
    assert list((home / ".fake-one").iterdir()) == []


def test_setup_configures_every_installed_harness_once(home: Path, capsys: pytest.CaptureFixture[str]) -> None:
    status, out, err = run(capsys, "setup")
    assert (status, err) == (0, "")
    line = f"  - add the agent-comms server to {config(home)}"
    assert out.splitlines() == ["fake-one: will change:", line, "fake-one: done:", line]
    command = json.loads(config(home).read_text())["servers"]["agent-comms"]
    assert command[1:] == ["bridge", "fake-one"]
    assert Path(command[0]).name == "agent-comms"
    assert oct(config(home).stat().st_mode & 0o777) == oct(0o600)
    before = (config(home).read_bytes(), config(home).stat().st_mtime_ns)

    status, out, _ = run(capsys, "setup")  # idempotent: nothing changes the second time
    assert status == 0
    assert out.splitlines() == ["fake-one: already configured; nothing to change"]
    assert (config(home).read_bytes(), config(home).stat().st_mtime_ns) == before
    assert backups(home) == []


def test_an_existing_configuration_is_kept_and_backed_up(home: Path, capsys: pytest.CaptureFixture[str]) -> None:
    original = '{"servers": {"other": ["x"]}, "theme": "dark"}\n'
    config(home).write_text(original)
    status, _, _ = run(capsys, "setup", "fake-one")
    assert status == 0
    data = json.loads(config(home).read_text())
    assert data["theme"] == "dark"
    assert set(data["servers"]) == {"other", "agent-comms"}
    [backup] = backups(home)
    assert backup.read_text() == original


def test_status_reports_installed_and_configured(home: Path, capsys: pytest.CaptureFixture[str]) -> None:
    status, out, _ = run(capsys, "status", "--json")
    assert status == 0
    assert json.loads(out) == [
        {
            "harness": "fake-one",
            "package": "agent-comms-fake-one",
            "installed": True,
            "detail": "version 1.0",
            "config_path": str(config(home)),
            "status": "not configured",
        },
        {
            "harness": "fake-two",
            "package": "agent-comms-two",
            "installed": False,
            "detail": "fake-two is not on PATH",
            "config_path": None,
            "status": "not configured",
        },
    ]
    run(capsys, "setup")
    status, out, _ = run(capsys, "status")
    assert status == 0
    lines = out.splitlines()
    assert lines[0] == "fake-one: installed (version 1.0); configured"
    assert lines[1] == "fake-two: not installed (fake-two is not on PATH); not configured"
    assert lines[2].startswith("not installed plugins: agent-comms-claude-code")


def test_remove_undoes_setup_and_dry_run_changes_nothing(home: Path, capsys: pytest.CaptureFixture[str]) -> None:
    run(capsys, "setup")
    configured = config(home).read_text()
    status, out, _ = run(capsys, "remove", "--dry-run")
    assert status == 0
    assert out.splitlines() == [
        "fake-one: would remove:",
        f"  - remove the agent-comms server from {config(home)}",
        "fake-two: nothing to remove",
    ]
    assert config(home).read_text() == configured
    status, out, _ = run(capsys, "remove", "fake-one")
    assert status == 0
    assert out.splitlines() == ["fake-one: removed:", f"  - remove the agent-comms server from {config(home)}"]
    assert json.loads(config(home).read_text()) == {"servers": {}}
    status, out, _ = run(capsys, "remove")
    assert status == 0
    assert out.splitlines() == ["nothing to remove: agent-comms is not configured for fake-one, fake-two"]


@pytest.mark.parametrize("command", ["setup", "remove"])
def test_a_named_harness_without_its_plugin_names_the_package(
    home: Path, capsys: pytest.CaptureFixture[str], command: str
) -> None:
    status, out, err = run(capsys, command, "fake-one", "codex")
    assert status == 4
    assert out == ""  # nothing is done when a name is wrong
    assert "`pip install agent-comms-codex` adds it" in err
    assert "plugins with setup support installed: fake-one, fake-two" in err
    assert not config(home).exists()
    status, _, err = run(capsys, command, "vim")
    assert status == 4
    assert "unknown harness 'vim': known harnesses are claude-code, codex, opencode, pi, mcp" in err


def test_no_harness_found_has_its_own_exit_status(
    home: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("AGENT_COMMS_LOAD_PLUGINS", "faketwo")  # its harness is not installed
    status, out, err = run(capsys, "setup")
    assert (status, out) == (5, "")
    assert "no installed harness found (fake-two: fake-two is not on PATH)" in err
    status, out, _ = run(capsys, "setup", "fake-two")
    assert status == 5
    assert out == "fake-two: not installed (fake-two is not on PATH); skipped\n"

    monkeypatch.setenv("AGENT_COMMS_LOAD_PLUGINS", "")  # only the built-in jsonl bridge, which has no setup hooks
    for command in ("setup", "status", "remove"):
        status, _, err = run(capsys, command)
        assert status == 5, command
        assert "no bridge plugin with setup support is installed" in err
        assert "pip install agent-comms-claude-code agent-comms-codex" in err


def test_a_failing_hook_is_reported_and_the_others_still_run(
    home: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("AGENT_COMMS_LOAD_PLUGINS", "fakebroken,fakeone")
    status, out, err = run(capsys, "setup")
    assert status == 3
    assert "fake-broken: setup failed: RuntimeError: the harness CLI exited with status 1" in err
    assert "fake-one: done:" in out
    assert config(home).exists()


@pytest.mark.parametrize("command", ["setup", "remove", "status"])
def test_a_failing_detect_hook_is_reported_and_the_others_still_run(
    home: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch, command: str
) -> None:
    monkeypatch.setenv("AGENT_COMMS_LOAD_PLUGINS", "fakeblind,fakeone")
    if command == "remove":
        run(capsys, "setup")
    status, out, err = run(capsys, command)
    assert status == 3
    assert "fake-blind: detection failed: PermissionError: cannot read ~/.blind" in err
    assert "fake-one: " in out
    assert config(home).exists() == (command != "status")


def test_a_plugin_that_fails_to_load_is_a_configuration_error(
    home: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("AGENT_COMMS_LOAD_PLUGINS", "no-such-plugin")
    status, _, err = run(capsys, "setup")
    assert status == 3
    assert "AGENT_COMMS_LOAD_PLUGINS names plugins that are not installed: no-such-plugin" in err


@pytest.mark.parametrize("command", [["setup"], ["status"], ["remove", "--dry-run"]], ids=["setup", "status", "remove"])
def test_never_reads_standard_input(home: Path, plugins_dir: Path, command: list[str]) -> None:
    """Standard input is a pipe that stays open and empty: a command that read it would hang until the timeout."""
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(plugins_dir), *sys.path])}
    process = subprocess.Popen(
        [sys.executable, "-m", "agent_comms", *command],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=env,
    )
    try:
        out, err = _without_closing_stdin(process)
    finally:
        if process.poll() is None:
            process.kill()
        if process.stdin is not None:
            process.stdin.close()
    assert process.returncode == 0, err
    assert "fake-one" in out


def _without_closing_stdin(process: subprocess.Popen[str]) -> tuple[str, str]:
    assert process.stdout is not None
    assert process.stderr is not None
    process.wait(timeout=60)  # stdin is never written to nor closed
    return process.stdout.read(), process.stderr.read()


def test_help_of_each_command_has_an_example(capsys: pytest.CaptureFixture[str]) -> None:
    for command in ("setup", "status", "remove"):
        with pytest.raises(SystemExit) as excinfo:
            main([command, "--help"])
        assert excinfo.value.code == 0
        out = capsys.readouterr().out
        assert f"agent-comms {command}" in out.split("example", 1)[1]
        assert "exit status" in out
