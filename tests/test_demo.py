"""``agent-comms demo`` as a person runs it: a real process that starts real bridge processes.

Testing policy: every test runs ``python -m agent_comms demo`` as a subprocess with its output in a file (so it is
not a terminal: plain text), watches the demo's child processes in ``/proc`` while it runs, and checks afterwards
that none of them is left. The demo picks its own free port and private home; the tests point ``AGENT_COMMS_HOME``
and ``AGENT_COMMS_PORT`` at a scratch directory and a free port to check it leaves them alone. Each test has a
deadline; the demo's children are killed at the end whatever happened.
"""

from __future__ import annotations

import io
import json
import os
import re
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
import trio

from agent_comms.cli import main
from agent_comms.demo.bridges import open_bridges
from agent_comms.demo.report import DemoReport
from agent_comms.demo.scenario import free_port
from agent_comms.demo.show import Narrator, PlainNarrator, RichNarrator, narrator_for
from agent_comms.mesh.settings import DEFAULT_PORT

pytestmark = pytest.mark.skipif(not Path("/proc/self/stat").exists(), reason="watches child processes in /proc")

#: The demo aims at well under 20 s; a busy test machine gets a wide margin.
DEADLINE = 60.0


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
    assert port != 19876
    return port


def _stat(pid: int) -> list[str] | None:
    """The fields of /proc/PID/stat after the command name (state first), or None if there is no such process."""
    try:
        text = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    return text[text.rindex(")") + 2 :].split()


def _alive(pid: int) -> bool:
    fields = _stat(pid)
    return fields is not None and fields[0] != "Z"


def _children(pid: int) -> set[int]:
    found = set()
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            fields = _stat(int(entry.name))
            if fields is not None and fields[1] == str(pid):
                found.add(int(entry.name))
    return found


class DemoRun:
    """One ``agent-comms demo`` process, its output files and every child process seen while it ran."""

    def __init__(self, tmp_path: Path, *args: str) -> None:
        self.home = tmp_path / "users-home"
        self.port = _free_port()
        self.out_path, self.err_path = tmp_path / "demo.out", tmp_path / "demo.err"
        env = {**os.environ, "AGENT_COMMS_HOME": str(self.home), "AGENT_COMMS_PORT": str(self.port)}
        with open(self.out_path, "wb") as out, open(self.err_path, "wb") as err:
            self.process = subprocess.Popen(
                [sys.executable, "-m", "agent_comms", "demo", *args], stdout=out, stderr=err, env=env
            )
        self.children: set[int] = set()
        self.started = time.monotonic()

    @property
    def out(self) -> str:
        return self.out_path.read_text()

    @property
    def err(self) -> str:
        return self.err_path.read_text()

    def watch_until(self, condition: Callable[[], bool]) -> None:
        """Collect the children until ``condition()`` holds (or the demo ends); fail at the deadline."""
        while not condition():
            self.children |= _children(self.process.pid)
            if self.process.poll() is not None:
                return
            if time.monotonic() - self.started > DEADLINE:
                raise AssertionError(f"the demo ran for more than {DEADLINE} s:\n{self.out}\n{self.err}")
            time.sleep(0.05)

    def wait(self) -> int:
        self.watch_until(lambda: self.process.poll() is not None)
        return self.process.wait()

    def printed_pids(self) -> dict[str, int]:
        """The bridge process ids the demo printed, by agent name."""
        return {name: int(pid) for name, pid in re.findall(r"(\w+)\s+registered as \S+ \(\S+\), pid (\d+)", self.out)}

    def assert_no_child_left(self) -> None:
        pids = self.children | set(self.printed_pids().values())
        survivors = [pid for pid in pids if _alive(pid)]
        assert not survivors, f"processes left running: {survivors}"

    def kill_everything(self) -> None:
        for pid in self.children | set(self.printed_pids().values()):
            if _alive(pid):
                os.kill(pid, signal.SIGKILL)
        if self.process.poll() is None:
            self.process.kill()
            self.process.wait()


@pytest.fixture
def demo(tmp_path: Path) -> Iterator[Callable[..., DemoRun]]:
    runs: list[DemoRun] = []

    def start(*args: str) -> DemoRun:
        run = DemoRun(tmp_path, *args)
        runs.append(run)
        return run

    yield start
    for run in runs:
        run.kill_everything()


def test_the_demo_tells_the_whole_story_and_leaves_nothing_running(demo: Callable[..., DemoRun]) -> None:
    run = demo()
    code = run.wait()
    out = run.out
    assert code == 0, f"{out}\n{run.err}"
    assert run.process.returncode == 0
    # Five real processes, one per agent, each a child of the demo.
    pids = run.printed_pids()
    assert sorted(pids) == ["alice", "bob", "carol", "dave", "erin"], out
    assert set(pids.values()) <= run.children
    # Rooms: public and private, and the private one stays private.
    assert "created #general (public)" in out
    assert "#core is private: you need an invite (NOT_INVITED)" in out
    assert "#core is private: only members read it (NOT_MEMBER)" in out
    # The DM and both receipts, as bob's bridge wrote them.
    assert "carol  <- [DM from bob] Could you review my parser tests?" in out
    assert 'bob    <- your message "Could you review my parser tests?": delivered to carol' in out
    assert 'bob    <- your message "Could you review my parser tests?": read by carol' in out
    receipts = re.search(r"=> receipts: delivered after ([\d.]+) ms, read after ([\d.]+) ms", out)
    assert receipts is not None, out
    assert 0 < float(receipts.group(1)) <= float(receipts.group(2))
    # The late joiner read what was said before it existed.
    caught_up = re.search(r"dave caught up on (\d+) messages sent before it started", out)
    assert caught_up is not None, out
    assert int(caught_up.group(1)) >= 2, out
    assert re.search(r"^\s+\[[\d:]+\] alice: Morning! I'm refactoring the parser today\.$", out, re.MULTILINE), out
    # The coordinator was killed and a survivor took over, with a measured time.
    failover = re.search(r"failover: (\w+) won the port and is the new coordinator, serving ([\d.]+) ms after", out)
    assert failover is not None, out
    assert failover.group(1) in {"bob", "carol", "dave"}
    assert 0 < float(failover.group(2)) < 10_000
    assert "alice's process ended with status -9 (killed)" in out
    # The newcomer joined the same mesh and was heard by everyone still there.
    for name in ("bob", "carol", "dave"):
        assert f"{name:<6} <- [#general] erin: Hi all, erin here." in out
    assert re.search(r"processes left running\s+0$", out, re.MULTILINE), out
    # The user's own mesh settings were not used: nothing was written to that home, that port was not the demo's.
    assert not run.home.exists()
    header_port = re.search(r"on 127\.0\.0\.1:(\d+)", out)
    assert header_port is not None
    assert int(header_port.group(1)) not in {run.port, 19876}
    run.assert_no_child_left()


@pytest.mark.slow  # a second whole run; the story test above covers the same figures
def test_json_summary(demo: Callable[..., DemoRun]) -> None:
    run = demo("--json")
    assert run.wait() == 0, run.err
    summary = json.loads(run.out)
    assert summary["ok"] is True
    assert summary["coordinator_before"] == "alice"
    assert summary["coordinator_after"] in {"bob", "carol", "dave"}
    assert 0 < summary["failover_ms"] <= summary["mesh_healed_ms"]
    assert summary["dm_delivered_ms"] <= summary["dm_read_ms"]
    assert summary["late_joiner_caught_up"] >= 2
    assert summary["processes_started"] == 5
    assert summary["processes_left"] == 0
    assert {agent["name"] for agent in summary["agents"]} == {"alice", "bob", "carol", "dave", "erin"}
    assert {agent["pid"] for agent in summary["agents"]} <= run.children
    run.assert_no_child_left()


@pytest.mark.parametrize(
    "signum",
    [signal.SIGINT, pytest.param(signal.SIGTERM, marks=pytest.mark.slow)],  # one code path; SIGTERM in the long run
    ids=["SIGINT", "SIGTERM"],
)
def test_a_signal_midway_stops_the_demo_and_every_process(demo: Callable[..., DemoRun], signum: int) -> None:
    run = demo()
    # Midway: the first agent is registered, the next two are starting.
    run.watch_until(lambda: len(run.printed_pids()) >= 1 and len(run.children) >= 3)
    assert run.process.poll() is None, f"the demo ended early:\n{run.out}\n{run.err}"
    signalled = time.monotonic()
    run.process.send_signal(signum)
    code = run.wait()
    assert time.monotonic() - signalled < 10
    assert code == 128 + signum, run.err
    assert f"demo stopped by {signal.Signals(signum).name}" in run.err
    run.assert_no_child_left()


def test_even_a_killed_demo_leaves_no_process_behind(demo: Callable[..., DemoRun]) -> None:
    """SIGKILL gives the demo no chance to clean up; its bridges see the end of their input and leave on their own."""
    run = demo()
    run.watch_until(lambda: len(run.printed_pids()) >= 1 and len(run.children) >= 3)
    assert run.process.poll() is None, f"the demo ended early:\n{run.out}\n{run.err}"
    run.process.kill()
    run.process.wait()
    killed = time.monotonic()
    while any(_alive(pid) for pid in run.children) and time.monotonic() - killed < 15:
        time.sleep(0.05)
    run.assert_no_child_left()


def test_a_failed_step_is_named_and_everything_is_stopped(demo: Callable[..., DemoRun]) -> None:
    """An agent process dies under the demo (we kill it): the step that needed it fails, and says why."""
    run = demo()
    run.watch_until(lambda: "alice" in run.printed_pids())
    alice = run.printed_pids()["alice"]
    os.kill(alice, signal.SIGKILL)
    code = run.wait()
    assert code == 1, f"{run.out}\n{run.err}"
    assert re.search(r"demo: step 1 of 7 \(agents start and register\) failed: ", run.err), run.err
    assert f"alice's bridge process (pid {alice}) was killed by SIGKILL" in run.err
    assert "stopped all" in run.err
    run.assert_no_child_left()


def test_help_gives_an_example(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exit_info:
        main(["demo", "--help"])
    assert exit_info.value.code == 0
    out = capsys.readouterr().out
    assert "example" in out
    assert "agent-comms demo" in out
    assert "failover" in out


# ------------------------------------------------------------------------------------------ output, without processes


def test_plain_output_is_aligned_lines() -> None:
    out = io.StringIO()
    narrator = PlainNarrator(out)
    narrator.step(6, "SIGKILL of the coordinator, and failover")
    narrator.agent("bob", "sees alice offline\nsecond line")
    narrator.figure("failover: 12.5 ms")
    narrator.summary([("failover", "12.5 ms"), ("total time", "6.1 s")])
    lines = out.getvalue().splitlines()
    assert lines[1] == "6. SIGKILL of the coordinator, and failover"
    assert re.fullmatch(r"\s+\d+\.\d\ds  bob    sees alice offline", lines[2])
    assert lines[3].index("second line") == lines[2].index("sees alice")
    assert re.fullmatch(r"\s+\d+\.\d\ds  => failover: 12.5 ms", lines[4])
    assert lines[-2:] == ["  failover    12.5 ms", "  total time  6.1 s"]


def test_rich_output_wraps_under_the_text_column() -> None:
    from rich.console import Console

    out = io.StringIO()
    narrator = RichNarrator(Console(file=out, width=50, force_terminal=False))
    narrator.agent("carol", "tried to join #core: Error: #core is private: you need an invite (NOT_INVITED)")
    first, *rest = [line.rstrip() for line in out.getvalue().splitlines()]
    column = first.index("tried")
    assert rest, "a long line wraps at 50 columns"
    for line in rest:
        assert line[:column].strip() == "", f"wrapped under the time stamp or name: {line!r}"
    assert "(NOT_INVITED)" in out.getvalue()


def test_silent_narrator_for_json_and_plain_for_a_pipe() -> None:
    assert type(narrator_for(json_output=True, plain=False)) is Narrator
    assert isinstance(narrator_for(json_output=False, plain=True), PlainNarrator)


def test_the_report_is_ok_only_without_a_failure() -> None:
    report = DemoReport(port=40000)
    assert report.to_json()["ok"] is True
    report.failed_step, report.error = "a step", "what went wrong"
    summary = report.to_json()
    assert summary["ok"] is False
    assert summary["failed_step"] == "a step"
    json.dumps(summary)  # JSON all the way down


def test_free_port_is_never_the_default() -> None:
    for _ in range(20):
        port = free_port()
        assert port != DEFAULT_PORT
        with socket.socket() as sock:
            sock.bind(("127.0.0.1", port))  # it was free


def test_a_bridge_log_is_a_new_private_file_never_written_through_a_link(tmp_path: Path) -> None:
    victim = tmp_path / "victim"
    victim.write_text("keep me\n")
    logs = tmp_path / "logs"
    logs.mkdir()
    (logs / "ada.log").symlink_to(victim)
    # An interpreter that cannot start: the process writes its complaint to the log and ends at once.
    env = {"PYTHONHOME": str(tmp_path / "no-such-python")}

    async def start_one() -> None:
        with trio.fail_after(DEADLINE):
            async with open_bridges(tmp_path, env) as bridges:
                bridge = await bridges.start("ada")
                await bridge.process.wait()

    trio.run(start_one)
    log = logs / "ada.log"
    assert victim.read_text() == "keep me\n"
    assert not log.is_symlink()
    assert log.is_file()
    assert log.stat().st_mode & 0o777 == 0o600
    assert log.read_text()  # the process's complaint went to its own log
