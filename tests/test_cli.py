"""Tests for the ``agent-comms`` command line (``agent_comms.cli``)."""

import subprocess
import sys
from pathlib import Path

import pytest

import agent_comms
from agent_comms.cli import main


def test_version_flag_prints_the_installed_version() -> None:
    result = subprocess.run(
        [sys.executable, "-m", "agent_comms", "--version"],
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == f"agent-comms {agent_comms.__version__}"


def test_help_flag_exits_zero_and_describes_the_tool(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as excinfo:
        main(["--help"])
    assert excinfo.value.code == 0
    assert "usage: agent-comms" in capsys.readouterr().out


def test_no_command_prints_help_and_returns_usage_error(capsys: pytest.CaptureFixture[str]) -> None:
    assert main([]) == 2
    assert "usage: agent-comms" in capsys.readouterr().out


def test_unknown_command_is_a_usage_error(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as excinfo:
        main(["no-such-command"])
    assert excinfo.value.code == 2
    assert "invalid choice" in capsys.readouterr().err


@pytest.mark.parametrize(
    ("argv", "usage"),
    [
        (["agents", "--bogus"], "usage: agent-comms agents [-h] [--json] [--all]"),
        (["read", "review", "--bogus"], "usage: agent-comms read [-h]"),
        (["hub", "status", "--bogus"], "usage: agent-comms hub status [-h]"),
    ],
)
def test_an_unknown_option_shows_the_sub_commands_usage(
    argv: list[str], usage: str, capsys: pytest.CaptureFixture[str]
) -> None:
    with pytest.raises(SystemExit) as excinfo:
        main(argv)
    assert excinfo.value.code == 2
    err = capsys.readouterr().err
    assert err.startswith(usage), err
    assert "unrecognized arguments: --bogus" in err


def _free_port() -> int:
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
    assert port != 19876
    return port


def test_mesh_without_a_mesh_says_nothing_listens(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    port = _free_port()
    monkeypatch.setenv("AGENT_COMMS_HOME", str(tmp_path / "home"))
    monkeypatch.setenv("AGENT_COMMS_PORT", str(port))
    assert main(["mesh", "--json"]) == 1
    captured = capsys.readouterr()
    assert captured.out.strip() == '{"coordinator": null, "peers": []}'
    assert f"nothing listens on 127.0.0.1:{port}" in captured.err


def test_mesh_names_a_port_held_by_something_that_is_not_a_peer(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    import socket
    import threading

    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen()
        port = listener.getsockname()[1]

        def answer_garbage() -> None:  # a web server, say: it answers, but not the mesh's handshake
            for _ in range(3):
                try:
                    conn, _ = listener.accept()
                except OSError:
                    return
                with conn:
                    conn.sendall(b"HTTP/1.1 400 Bad Request\r\n\r\n")

        threading.Thread(target=answer_garbage, daemon=True).start()
        monkeypatch.setenv("AGENT_COMMS_HOME", str(tmp_path / "home"))
        monkeypatch.setenv("AGENT_COMMS_PORT", str(port))
        assert main(["mesh"]) == 1
    err = capsys.readouterr().err
    assert f"port {port} is held by another program, not a mesh peer of this user" in err, err
