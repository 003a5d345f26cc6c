"""Ctrl-C at any early moment of a command: exit 130 quietly, as later, never a traceback.

The command is the installed ``agent-comms`` script, as a person runs it, with SIGINT sent at several instants
after it was spawned. Right after the spawn, Python has not yet installed its own handler, so the signal ends the
process as the system does by default (a shell reports it as 130 too, and nothing is printed). The interpreter's
own start (``site``, compiling the script), the first lines of the script the installer wrote (``import re``) and
the loading of the package's first module come before the command's ``main`` can take the signal: Python reports
it there its own way (a traceback, or a bare ``KeyboardInterrupt``), which is allowed (the package keeps its part of
that window to a few milliseconds: nothing is imported before ``main`` runs). Every instant once ``main`` runs, until
the command has finished on its own (there is no mesh here), must end quietly with 130; there must be such
instants.
"""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.test_cli_oneshot import free_port

SCRIPT = Path(sys.executable).with_name("agent-comms")
INSTANTS = [0.0, 0.03, 0.05, 0.08, 0.1, 0.13, 0.15, 0.2, 0.25, 0.3, 0.4, 0.5, 0.7, 1.0, 1.4, 2.0]


def _as_from_a_terminal() -> None:
    """In the child: SIGINT handled by default, as in a shell's foreground job (a test run started in the
    background, ``pytest &`` or under nohup, hands its children SIGINT ignored, and Python then keeps ignoring it)."""
    signal.signal(signal.SIGINT, signal.SIG_DFL)


def _interrupted_at(argv: list[str], delay: float, env: dict[str, str], cwd: Path) -> tuple[int, str]:
    process = subprocess.Popen(
        [str(SCRIPT), *argv],
        env=env,
        cwd=cwd,
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        preexec_fn=_as_from_a_terminal,
    )
    try:
        time.sleep(delay)  # the instant under test, not a wait for anything
        process.send_signal(signal.SIGINT)
        _out, err = process.communicate(timeout=60)
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
    return process.returncode, err.decode(errors="replace")


def _before_main(err: str) -> bool:
    """A traceback raised before the command's ``main`` ran (the interpreter's start, the installer's script)."""
    return re.search(r'agent_comms[/\\]cli[/\\]__init__\.py", line \d+, in main', err) is None


@pytest.mark.parametrize("argv", [["agents"], ["send", "review", "hi"], ["chat", "--name", "alice"], ["mesh"]])
def test_ctrl_c_while_starting_exits_130_quietly(tmp_path: Path, argv: list[str]) -> None:
    assert SCRIPT.exists(), SCRIPT
    env = {**os.environ, "AGENT_COMMS_HOME": str(tmp_path / "home"), "AGENT_COMMS_PORT": str(free_port())}
    for delay in INSTANTS:
        status, err = _interrupted_at(argv, delay, env, tmp_path)
        if status in (0, 1) and "KeyboardInterrupt" not in err:
            break  # the command had finished (no mesh to talk to): every later instant is after its end
        if status != 128 + signal.SIGINT and "agent-comms: interrupted" not in err and _before_main(err):
            continue  # before the script's first line, or before main: Python's own report (or none)
        assert status == 128 + signal.SIGINT, (delay, status, err)
        assert "Traceback" not in err, (delay, err)
        assert err in ("", "agent-comms: interrupted by SIGINT\n"), (delay, err)
    # How many instants fall within ``main`` depends on how loaded the machine is (on a busy one the interpreter's
    # start can outlast them all); the test below reaches every import point of ``main`` without timing.


#: A command run with SIGINT sent to itself at the N-th module import after ``main`` started (``N`` = 0: never; the
#: number of imports is written at exit to the file descriptor given first).
_AT_IMPORT = """
import atexit, os, signal, sys
from agent_comms.cli import main
fd, n, count = int(sys.argv[1]), int(sys.argv[2]), 0
class Interrupt:
    def find_spec(self, name, path=None, target=None):
        global count
        count += 1
        if count == n:
            os.kill(os.getpid(), signal.SIGINT)
        return None
sys.meta_path.insert(0, Interrupt())
atexit.register(lambda: os.write(fd, str(count).encode()))
sys.exit(main(sys.argv[3:]))
"""


def _run_interrupted_at_import(n: int, argv: list[str], env: dict[str, str], cwd: Path) -> tuple[int, str, int]:
    read_end, write_end = os.pipe()
    try:
        process = subprocess.run(
            [sys.executable, "-c", _AT_IMPORT, str(write_end), str(n), *argv],
            env=env,
            cwd=cwd,
            stdin=subprocess.DEVNULL,
            capture_output=True,
            timeout=120,
            pass_fds=(write_end,),
            preexec_fn=_as_from_a_terminal,
        )
        os.close(write_end)
        write_end = -1
        with os.fdopen(read_end, "rb") as counted:
            read_end = -1
            imports = int(counted.read() or b"0")
    finally:
        for fd in (read_end, write_end):
            if fd >= 0:
                os.close(fd)
    return process.returncode, process.stderr.decode(errors="replace"), imports


@pytest.mark.parametrize("argv", [["agents"], ["send", "review", "hi"], ["mesh"]])
def test_ctrl_c_at_every_import_of_a_starting_command_exits_130_quietly(tmp_path: Path, argv: list[str]) -> None:
    """SIGINT arrives while ``main`` imports what the command needs (the window where a traceback used to be
    printed), at import points spread over all of them: each run ends with 130 and one quiet line."""
    env = {**os.environ, "AGENT_COMMS_HOME": str(tmp_path / "home"), "AGENT_COMMS_PORT": str(free_port())}
    status, err, imports = _run_interrupted_at_import(0, argv, env, tmp_path)
    assert status in (0, 1), (status, err)  # uninterrupted: the command ends on its own (no mesh here)
    assert imports >= 10, imports  # main imports the command's modules lazily: there are points to interrupt
    points = sorted({1, 2, imports // 4, imports // 2, (3 * imports) // 4, imports - 1, imports} - {0})
    for n in points:
        status, err, _ = _run_interrupted_at_import(n, argv, env, tmp_path)
        assert status == 128 + signal.SIGINT, (n, imports, status, err)
        assert err == "agent-comms: interrupted by SIGINT\n", (n, imports, err)


def test_ctrl_c_while_a_module_builds_a_class_exits_130_quietly(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """SIGINT inside a descriptor's ``__set_name__`` (an import that defines a class, ``ipaddress`` say): Python
    3.11 raises it wrapped in a ``RuntimeError``. It is still Ctrl-C; any other error is not taken for one."""
    import agent_comms.cli as cli

    class Interrupted:
        def __set_name__(self, owner: type, name: str) -> None:
            raise KeyboardInterrupt

    def importing() -> None:
        type("Built", (), {"field": Interrupted()})

    monkeypatch.setattr(cli, "build_parser", importing)
    assert cli.main(["agents"]) == 128 + signal.SIGINT
    assert capsys.readouterr().err == "agent-comms: interrupted by SIGINT\n"

    def failing() -> None:
        raise RuntimeError("not an interrupt")

    monkeypatch.setattr(cli, "build_parser", failing)
    with pytest.raises(RuntimeError, match="not an interrupt"):
        cli.main(["agents"])
