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


def _interrupted_at(argv: list[str], delay: float, env: dict[str, str], cwd: Path) -> tuple[int, str]:
    process = subprocess.Popen(
        [str(SCRIPT), *argv], env=env, cwd=cwd, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.PIPE
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
    ours = 0
    for delay in INSTANTS:
        status, err = _interrupted_at(argv, delay, env, tmp_path)
        if status in (0, 1) and "KeyboardInterrupt" not in err:
            break  # the command had finished (no mesh to talk to): every later instant is after its end
        if status != 128 + signal.SIGINT and "agent-comms: interrupted" not in err and _before_main(err):
            continue  # before the script's first line, or before main: Python's own report (or none)
        ours += 1
        assert status == 128 + signal.SIGINT, (delay, status, err)
        assert "Traceback" not in err, (delay, err)
        assert err in ("", "agent-comms: interrupted by SIGINT\n"), (delay, err)
    assert ours >= 2  # instants fell within the command, not only in the interpreter's start
