"""Tests for :mod:`agent_comms.configure`, the helpers the setup hooks of bridge plugins edit configuration with."""

from __future__ import annotations

import contextlib
import os
import stat
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from agent_comms import configure
from agent_comms.configure import (
    BACKUP_SUFFIX,
    agent_comms_executable,
    backup,
    bridge_command,
    harness_env,
    run_harness_cli,
    write_config,
)


def _mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def test_the_executable_is_the_one_beside_this_python() -> None:
    beside = Path(sys.executable).parent / "agent-comms"
    assert beside.exists(), "the test environment installs agent-comms (its script sits beside python)"
    assert agent_comms_executable() == str(beside)
    assert Path(agent_comms_executable()).is_absolute()


def test_the_executable_falls_back_to_path(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setattr(configure.sys, "executable", str(tmp_path / "python"))
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    program = bin_dir / "agent-comms"
    program.write_text("#!/bin/sh\n")
    program.chmod(0o755)
    monkeypatch.setenv("PATH", str(bin_dir))
    assert agent_comms_executable() == str(program)
    monkeypatch.setenv("PATH", str(tmp_path / "empty"))
    assert agent_comms_executable() == "agent-comms"


def test_bridge_command() -> None:
    assert bridge_command("codex") == [agent_comms_executable(), "bridge", "codex"]
    assert bridge_command("pi", "--option", "x=y") == [agent_comms_executable(), "bridge", "pi", "--option", "x=y"]


def test_write_config_creates_a_new_file_private_with_its_directories(tmp_path: Path) -> None:
    path = tmp_path / "a" / "b" / "config.toml"
    assert write_config(path, "x = 1\n") is True
    assert path.read_text() == "x = 1\n"
    assert _mode(path) == 0o600
    assert sorted(p.name for p in path.parent.iterdir()) == ["config.toml"]  # no backup of nothing, no temp file


def test_write_config_is_idempotent(tmp_path: Path) -> None:
    path = tmp_path / "config.json"
    path.write_text("{}\n")
    before = path.stat().st_mtime_ns
    assert write_config(path, "{}\n") is False
    assert path.stat().st_mtime_ns == before
    assert list(tmp_path.iterdir()) == [path]


def test_write_config_backs_up_first_and_keeps_the_mode(tmp_path: Path) -> None:
    path = tmp_path / "settings.json"
    path.write_text("old\n")
    path.chmod(0o644)
    assert write_config(path, "new\n") is True
    assert path.read_text() == "new\n"
    assert _mode(path) == 0o644
    [saved] = [p for p in tmp_path.iterdir() if p != path]
    assert saved.name.startswith(f"settings.json{BACKUP_SUFFIX}")
    assert saved.read_text() == "old\n"
    assert write_config(path, "newer\n") is True  # a second change in the same second gets a backup of its own
    saved_texts = sorted(p.read_text() for p in tmp_path.iterdir() if p != path)
    assert saved_texts == ["new\n", "old\n"]


def test_write_config_writes_through_a_symbolic_link(tmp_path: Path) -> None:
    """A dotfiles manager's link: the file it points to is edited in place of the link, which stays; the target's
    mode is kept and its backup lies beside it."""
    dotfiles = tmp_path / "dotfiles"
    dotfiles.mkdir()
    target = dotfiles / "settings.json"
    target.write_text("old\n")
    target.chmod(0o640)
    link = tmp_path / "home" / "settings.json"
    link.parent.mkdir()
    link.symlink_to(Path("..") / "dotfiles" / "settings.json")  # a relative link, as dotfiles managers make
    assert write_config(link, "new\n")
    assert link.is_symlink()
    assert target.read_text() == "new\n"
    assert stat.S_IMODE(target.stat().st_mode) == 0o640
    [backup] = dotfiles.glob(f"settings.json{BACKUP_SUFFIX}*")
    assert backup.read_text() == "old\n"
    assert sorted(p.name for p in link.parent.iterdir()) == ["settings.json"]
    assert not write_config(link, "new\n")


def test_write_config_dry_run_reports_without_writing(tmp_path: Path) -> None:
    path = tmp_path / "config.toml"
    assert write_config(path, "x\n", dry_run=True) is True
    assert not path.exists()
    path.write_text("x\n")
    assert write_config(path, "x\n", dry_run=True) is False
    assert write_config(path, "y\n", dry_run=True) is True
    assert path.read_text() == "x\n"
    assert list(tmp_path.iterdir()) == [path]


def test_write_config_leaves_no_temporary_file_when_the_write_fails(tmp_path: Path) -> None:
    path = tmp_path / "config.json"
    path.write_text("old\n")
    with pytest.raises(UnicodeEncodeError):
        write_config(path, "\udcff")  # not encodable: fails while writing the temporary file
    assert path.read_text() == "old\n"
    assert not [p for p in tmp_path.iterdir() if p.name.endswith(".tmp")]


def test_backup_of_a_missing_file_is_none(tmp_path: Path) -> None:
    assert backup(tmp_path / "missing") is None


def test_backups_never_overwrite_each_other(tmp_path: Path) -> None:
    path = tmp_path / "f"
    path.write_text("1")
    first = backup(path)
    second = backup(path)
    assert first is not None
    assert second is not None
    assert first != second
    assert first.read_text() == second.read_text() == "1"


def test_harness_env_points_home_and_drops_xdg(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("XDG_CONFIG_HOME", "/elsewhere")
    monkeypatch.setenv("KEEP_ME", "1")
    env = harness_env(tmp_path, {"EXTRA": "2"})
    assert env["HOME"] == str(tmp_path)
    assert "XDG_CONFIG_HOME" not in env
    assert (env["KEEP_ME"], env["EXTRA"]) == ("1", "2")
    assert os.environ["XDG_CONFIG_HOME"] == "/elsewhere"  # the caller's environment is untouched


def test_run_harness_cli_runs_for_that_home_without_a_keyboard(tmp_path: Path) -> None:
    script = "import os, sys; print(os.environ['HOME']); print(repr(sys.stdin.read())); print(os.environ['X'])"
    result = run_harness_cli([sys.executable, "-c", script], tmp_path, extra_env={"X": "y"})
    assert result.returncode == 0
    assert result.stdout.splitlines() == [str(tmp_path), "''", "y"]


def test_run_harness_cli_failures(tmp_path: Path) -> None:
    result = run_harness_cli([sys.executable, "-c", "import sys; sys.exit('boom')"], tmp_path)
    assert (result.returncode, result.stderr.strip()) == (1, "boom")
    with pytest.raises(FileNotFoundError):
        run_harness_cli([str(tmp_path / "no-such-program")], tmp_path)
    with pytest.raises(subprocess.TimeoutExpired):
        run_harness_cli([sys.executable, "-c", "import time; time.sleep(30)"], tmp_path, timeout=0.5)


@contextlib.contextmanager
def _umask(value: int) -> Iterator[None]:
    old = os.umask(value)
    try:
        yield
    finally:
        os.umask(old)


def test_a_backup_is_private_from_its_creation_whatever_the_umask(tmp_path: Path) -> None:
    """Every operation the process audits while it makes the backup (after the backup exists) sees mode 0600, and
    the backup stays 0600 even of a file others may read: a backup is never readable by another user, not for a
    moment (a configuration file may hold a token)."""
    path = tmp_path / "config.toml"
    path.write_text("token = 'secret'\n")
    path.chmod(0o644)
    seen: list[int] = []
    watching = [False]

    def audit(event: str, args: tuple[object, ...]) -> None:
        if watching[0]:
            watching[0] = False  # looking audits events of its own
            try:
                for found in tmp_path.glob(f"config.toml{BACKUP_SUFFIX}*"):
                    with contextlib.suppress(OSError):
                        seen.append(_mode(found))
            finally:
                watching[0] = True

    sys.addaudithook(audit)
    with _umask(0):
        watching[0] = True
        try:
            saved = backup(path)
        finally:
            watching[0] = False
    assert saved is not None
    assert set(seen) <= {0o600}, [oct(mode) for mode in seen]
    assert saved.read_text() == "token = 'secret'\n"
    assert _mode(saved) == 0o600


def test_a_backup_never_follows_a_link_planted_at_its_name(tmp_path: Path) -> None:
    """Backup names are predictable (a timestamp): a link planted there (by someone who may write the folder) is
    skipped, never followed, so the backup cannot be sent to a file of the planter's choosing."""
    path = tmp_path / "config.toml"
    path.write_text("token = 'secret'\n")
    victim = tmp_path / "elsewhere"
    now = time.time()
    for offset in range(3):  # the names of the next seconds
        stamp = time.strftime("%Y%m%dT%H%M%SZ", time.gmtime(now + offset))
        (tmp_path / f"config.toml{BACKUP_SUFFIX}{stamp}").symlink_to(victim / f"{offset}")
    victim.mkdir()
    saved = backup(path)
    assert saved is not None
    assert not saved.is_symlink()
    assert saved.read_text() == "token = 'secret'\n"
    assert _mode(saved) == 0o600
    assert list(victim.iterdir()) == []


def test_write_config_never_follows_a_link_at_a_temporary_name(tmp_path: Path) -> None:
    """The temporary file is new, private and unpredictably named: a link planted at the name an earlier version
    used (or any other) is not followed."""
    path = tmp_path / "config.toml"
    path.write_text("old\n")
    victim = tmp_path / "victim"
    for name in (f".config.toml.agent-comms-{os.getpid()}.tmp", ".config.toml.tmp"):
        (tmp_path / name).symlink_to(victim)
    with _umask(0):
        assert write_config(path, "token = 'secret'\n", mode=0o600) is True
    assert path.read_text() == "token = 'secret'\n"
    assert not victim.exists()
    assert not path.is_symlink()
