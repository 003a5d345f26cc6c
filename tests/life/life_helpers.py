"""The cast and the stage of the day in the life: a private mesh of real bridge processes under moved clocks.

A :class:`Day` runs every process of the scenario on its own mesh (a free port, a temporary ``AGENT_COMMS_HOME``)
under libfaketime, one clock file per group of processes (:class:`Clock`): rewriting the file moves the wall clock
of every running process of the group at once (``FAKETIME_NO_CACHE=1`` re-reads it on every clock read). By
default the monotonic clock is left alone (``FAKETIME_DONT_FAKE_MONOTONIC=1``), so a jump forward is what a
suspend does to a process and a jump back is a stepped clock; a group made with ``paused=True`` moves its
monotonic clock too, as when the whole machine (a virtual machine, say) was paused.

Every action of the day happens inside :meth:`Day.step`, which gives it a deadline and, when it fails, says which
step of the day failed, with what, and what each process printed. Nothing waits by sleeping: steps wait on output
lines, on process exits, or poll another process's state (:func:`until`) under their deadline.

``AGENT_COMMS_LIFE=long`` (set by ``nox -s life``) makes the day long: more agents and more rounds
(:func:`long_day`, :func:`scale`). Python's own ``time.sleep`` fails under libfaketime 0.9.10 (``EINVAL``), so the
hook program, which may sleep, runs on the real clock, as do the test's own deadlines.
"""

from __future__ import annotations

import glob
import json
import os
import resource
import subprocess
import sys
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from contextlib import AsyncExitStack, asynccontextmanager, contextmanager
from pathlib import Path
from typing import Any, TypeVar

import pytest
import trio

from agent_comms.testing.processes import free_port

T = TypeVar("T")

#: ``long``: the long day (``nox -s life``); anything else, or unset: the short day of the default test run.
LIFE_ENV = "AGENT_COMMS_LIFE"
#: Where Debian's ``libfaketime`` package puts the preload library when ``dpkg`` cannot say.
_FAKETIME_GLOB = "/usr/lib/*/faketime/libfaketime.so.1"
#: ``since`` for a whole history.
EPOCH = "1970-01-01T00:00:00Z"
#: How much of each process's output a failure shows.
_TAIL = 3000


def long_day() -> bool:
    """Whether this is the long day (``AGENT_COMMS_LIFE=long``)."""
    return os.environ.get(LIFE_ENV, "").strip().lower() == "long"


def scale(short: int, long: int) -> int:
    """``short`` in the default run, ``long`` in the long day."""
    return long if long_day() else short


def libfaketime() -> Path | None:
    """The libfaketime preload library (from ``dpkg -L libfaketime``), or ``None`` if it is not installed."""
    try:
        listed = subprocess.run(["dpkg", "-L", "libfaketime"], capture_output=True, text=True, timeout=30).stdout
    except (OSError, subprocess.SubprocessError):
        listed = ""
    candidates = [line for line in listed.splitlines() if line.endswith("/libfaketime.so.1")]
    candidates += sorted(glob.glob(_FAKETIME_GLOB))
    for candidate in candidates:
        if Path(candidate).is_file():
            return Path(candidate)
    return None


def require_libfaketime() -> Path:
    """The libfaketime library; without it the test is skipped, or fails in CI (``CI=true``)."""
    found = libfaketime()
    if found is None:
        why = "the day in the life moves real clocks with libfaketime: install Debian's faketime package"
        if os.environ.get("CI", "").lower() == "true":
            pytest.fail(why, pytrace=False)
        pytest.skip(why)
    return found


class Clock:
    """The wall clock of a group of processes: an offset from the real time, in a libfaketime timestamp file."""

    def __init__(self, name: str, path: Path, *, paused: bool) -> None:
        self.name = name
        self.path = path
        #: whether the monotonic clock moves with the wall clock (a paused machine) or not (a suspend, a step)
        self.paused = paused
        self.offset = 0.0
        self.set(0)

    def set(self, offset: float) -> None:
        """Put the group's wall clock ``offset`` seconds from the real time (atomically: the file is replaced)."""
        self.offset = offset
        temporary = self.path.with_suffix(".tmp")
        temporary.write_text(f"{offset:+.0f}\n")
        os.replace(temporary, self.path)

    def move(self, seconds: float) -> None:
        """Move the group's wall clock by ``seconds`` (negative: back)."""
        self.set(self.offset + seconds)

    def env(self, library: Path) -> dict[str, str]:
        """The environment that puts a process in this group."""
        env = {
            "LD_PRELOAD": str(library),
            "FAKETIME_TIMESTAMP_FILE": str(self.path),
            "FAKETIME_NO_CACHE": "1",
        }
        if not self.paused:
            env["FAKETIME_DONT_FAKE_MONOTONIC"] = "1"
        return env


class Process:
    """A process of the day: its standard error goes to a log file, its JSON output lines are kept."""

    def __init__(self, day: Day, name: str, process: trio.Process, log: Path) -> None:
        self.day = day
        self.name = name
        self.process = process
        self.log = log
        self.seen: list[dict[str, Any]] = []
        self.raw: list[str] = []
        self._changed = trio.Event()
        self.ended = False

    @property
    def pid(self) -> int:
        """The process id."""
        return self.process.pid

    async def read_all(self) -> None:
        """Keep every output line (so the process never blocks on a full pipe) and wake the waiters."""
        stream = self.process.stdout
        assert stream is not None
        buffer = b""
        try:
            while chunk := await stream.receive_some():
                buffer += chunk
                *lines, buffer = buffer.split(b"\n")
                for line in lines:
                    text = line.decode(errors="replace")
                    self.raw.append(text)
                    try:
                        message = json.loads(line)
                    except ValueError:
                        message = {"type": "unparsed", "line": text}
                    self.seen.append(message if isinstance(message, dict) else {"type": "unparsed", "line": text})
                self._wake()
        except (trio.ClosedResourceError, trio.BrokenResourceError):
            pass
        finally:
            self.ended = True
            self._wake()

    def _wake(self) -> None:
        self._changed.set()
        self._changed = trio.Event()

    async def wait_seen(self, match: Callable[[dict[str, Any]], bool], *, start: int = 0) -> dict[str, Any]:
        """The first output line from index ``start`` on that matches, waiting for it; fails if the output ends."""
        index = start
        while True:
            while index < len(self.seen):
                if match(self.seen[index]):
                    return self.seen[index]
                index += 1
            if self.ended:
                raise AssertionError(f"{self.name}'s output ended (exit status {self.process.poll()})")
            await self._changed.wait()

    async def send(self, message: dict[str, Any]) -> None:
        """Write one JSON line to the process's standard input."""
        assert self.process.stdin is not None
        await self.process.stdin.send_all(json.dumps(message).encode() + b"\n")

    def output(self) -> str:
        """What the process printed: the tail of its standard error and of its standard output."""
        try:
            err = self.log.read_text(errors="replace")
        except OSError:
            err = ""
        out = "\n".join(self.raw)
        status = self.process.poll()
        state = "running" if status is None else f"exited with status {status}"
        return (
            f"--- {self.name} (pid {self.pid}, {state}) stderr ---\n{err[-_TAIL:]}\n"
            f"--- {self.name} stdout ---\n{out[-_TAIL:]}\n"
        )


class Agent(Process):
    """An agent: ``agent-comms bridge jsonl`` as a real process, driven over its standard input and output."""

    agent_id = ""
    cwd: Path
    _next_id = 0

    async def call(self, **params: Any) -> dict[str, Any]:
        """Send a tool call; its result line."""
        self._next_id += 1
        request_id = f"{self.name}-{self._next_id}"
        start = len(self.seen)
        await self.send({"id": request_id, "params": params})
        return await self.wait_seen(lambda m: m.get("type") == "result" and m.get("id") == request_id, start=start)

    async def ok(self, **params: Any) -> dict[str, Any]:
        """A tool call that must succeed; its result line."""
        result = await self.call(**params)
        if result.get("is_error"):
            raise AssertionError(f"{self.name}: {params} answered {result.get('text')!r}")
        return result

    async def event(self, match: Callable[[dict[str, Any]], bool]) -> dict[str, Any]:
        """The first event (the ``event`` object of an event line) that matches, waiting for it."""
        line = await self.wait_seen(lambda m: m.get("type") == "event" and match(m["event"]))
        event: dict[str, Any] = line["event"]
        return event

    def events(self, match: Callable[[dict[str, Any]], bool] = lambda e: True) -> list[dict[str, Any]]:
        """The events seen so far that match."""
        return [m["event"] for m in self.seen if m.get("type") == "event" and match(m["event"])]

    async def dm_from(self, sender: Agent, content: str) -> dict[str, Any]:
        """Wait for the DM ``content`` from ``sender``."""
        return await self.event(
            lambda e: e.get("type") == "dm" and e.get("sender") == sender.agent_id and e.get("content") == content
        )

    async def room_message(self, room: str, sender: Agent, content: str) -> dict[str, Any]:
        """Wait for the message ``content`` of ``sender`` in ``room``."""
        return await self.event(
            lambda e: (
                e.get("type") == "room_message"
                and e.get("room") == room
                and e.get("sender") == sender.agent_id
                and e.get("content") == content
            )
        )

    async def online(self) -> list[str]:
        """The ids ``list_agents`` answers."""
        agents: list[str] = (await self.ok(action="list_agents"))["data"]["agents"]
        return agents

    async def history(self, room: str) -> list[str]:
        """The message ids ``read_room`` answers (all of them: since the epoch)."""
        messages: list[str] = (await self.ok(action="read_room", room=room, since=EPOCH))["data"]["messages"]
        return messages


async def until(check: Callable[[], Awaitable[T | None]], *, interval: float = 0.05) -> T:
    """Ask ``check`` (another process's state) until it returns something true; that value."""
    while not (value := await check()):  # noqa: ASYNC110 - another process's state: no event to wait on
        await trio.sleep(interval)
    return value


async def talk(agents: list[Agent], tag: str, room: str | None = None) -> None:
    """Every agent DMs every other one (and, with ``room``, writes to it); each message must reach its reader."""
    for sender in agents:
        for reader in agents:
            if reader is not sender:
                await sender.ok(action="dm", target=reader.agent_id, content=f"{tag}: {sender.name} to {reader.name}")
        if room is not None:
            await sender.ok(action="send", target=room, content=f"{tag}: {sender.name} in #{room}")
    for reader in agents:
        for sender in agents:
            if reader is not sender:
                await reader.dm_from(sender, f"{tag}: {sender.name} to {reader.name}")
                if room is not None:
                    await reader.room_message(room, sender, f"{tag}: {sender.name} in #{room}")


async def settle_in(agent: Agent, room: str, *others: Agent) -> None:
    """``agent`` joins ``room`` once it knows the room and the agents ``others`` (setting the scene, not the test)."""

    async def known() -> bool:
        online = await agent.online()
        if not all(other.agent_id in online for other in others):
            return False
        joined = await agent.call(action="join_room", room=room)
        return not joined["is_error"]

    await until(known)


class Day:
    """One day on a private mesh: its clocks, its processes, and the steps that make it."""

    def __init__(self, root: Path, library: Path, nursery: trio.Nursery, stack: AsyncExitStack) -> None:
        self.root = root
        self.library = library
        self.port = free_port()
        self.home = root / "home"
        self.nursery = nursery
        self.stack = stack
        self.clocks: dict[str, Clock] = {}
        self.processes: list[Process] = []
        self.step_name = ""
        self.runs: list[tuple[str, subprocess.CompletedProcess[bytes]]] = []

    # ------------------------------------------------------------------ clocks

    def clock(self, name: str = "machine", *, paused: bool = False) -> Clock:
        """The clock group ``name`` (created at the real time on first use)."""
        if name not in self.clocks:
            self.clocks[name] = Clock(name, self.root / f"clock-{name}", paused=paused)
        return self.clocks[name]

    def env(self, clock: str = "machine", **extra: str) -> dict[str, str]:
        """The environment of a process of the day in clock group ``clock``."""
        return {
            **os.environ,
            "AGENT_COMMS_HOME": str(self.home),
            "AGENT_COMMS_PORT": str(self.port),
            "AGENT_COMMS_LOAD_PLUGINS": "",
            **self.clock(clock).env(self.library),
            **extra,
        }

    def directory(self, relative: str) -> Path:
        """A working directory of the day (created)."""
        path = self.root / "work" / relative
        path.mkdir(parents=True, exist_ok=True)
        return path

    # ------------------------------------------------------------------ processes

    async def spawn(
        self,
        name: str,
        command: list[str],
        *,
        cwd: Path,
        env: dict[str, str],
        nofile: int | None = None,
        kind: type[Process] = Process,
    ) -> Process:
        """Start ``command`` with piped stdin and stdout, its stderr logged; read its output in the background."""
        log = self.root / "logs" / f"{name}-{len(self.processes)}.stderr"
        log.parent.mkdir(exist_ok=True)
        limit = None if nofile is None else _limit_files(nofile)
        with log.open("wb") as stderr:
            process = await trio.lowlevel.open_process(
                command,
                stdin=subprocess.PIPE,
                stdout=subprocess.PIPE,
                stderr=stderr,
                env=env,
                cwd=cwd,
                preexec_fn=limit,
            )
        proc = kind(self, name, process, log)
        self.processes.append(proc)
        self.nursery.start_soon(proc.read_all)
        return proc

    async def agent(
        self, name: str, cwd: str, *, clock: str = "machine", nofile: int | None = None, wait_ready: bool = True
    ) -> Agent:
        """Start ``agent-comms bridge jsonl --name NAME`` in the day's directory ``cwd``, until it is ready."""
        directory = self.directory(cwd)
        command = [sys.executable, "-m", "agent_comms", "bridge", "jsonl", "--name", name]
        agent = await self.spawn(name, command, cwd=directory, env=self.env(clock), nofile=nofile, kind=Agent)
        assert isinstance(agent, Agent)
        agent.cwd = directory
        if wait_ready:
            ready = await agent.wait_seen(lambda m: m.get("type") == "ready")
            agent.agent_id = ready["agent"]["id"]
        return agent

    async def leave(self, process: Process) -> None:
        """End a process as its harness would, by closing its input; it must exit with status 0."""
        assert process.process.stdin is not None
        await process.process.stdin.aclose()
        status = await process.process.wait()
        if status != 0:
            raise AssertionError(f"{process.name} exited with status {status}")

    async def run(
        self, name: str, args: list[str], *, cwd: str = "cli", clock: str = "machine", stdin: bytes = b""
    ) -> subprocess.CompletedProcess[bytes]:
        """Run ``agent-comms ARGS`` to its end (a person's command); its completed process, output captured."""
        done = await trio.run_process(
            [sys.executable, "-m", "agent_comms", *args],
            stdin=stdin,
            capture_stdout=True,
            capture_stderr=True,
            env=self.env(clock),
            cwd=self.directory(cwd),
            check=False,
        )
        self.runs.append((name, done))
        return done

    async def run_command(
        self, name: str, command: list[str], *, cwd: Path, env: dict[str, str], stdin: bytes = b""
    ) -> subprocess.CompletedProcess[bytes]:
        """Run ``command`` to its end, output captured (kept for the failure report)."""
        done = await trio.run_process(
            command, stdin=stdin, capture_stdout=True, capture_stderr=True, env=env, cwd=cwd, check=False
        )
        self.runs.append((name, done))
        return done

    async def agents_listed(self, *, everyone: bool = True, clock: str = "machine") -> list[dict[str, Any]]:
        """``agent-comms agents --json`` (``--all``: offline, hidden and ghost agents too)."""
        args = ["agents", "--json", *(["--all"] if everyone else [])]
        done = await self.run("agents", args, clock=clock)
        if done.returncode != 0:
            raise AssertionError(f"agent-comms {' '.join(args)} exited {done.returncode}: {done.stderr!r}")
        rows: list[dict[str, Any]] = json.loads(done.stdout)
        return rows

    async def mesh(self, *, clock: str = "machine") -> dict[str, Any]:
        """``agent-comms mesh --json``."""
        done = await self.run("mesh", ["mesh", "--json"], clock=clock)
        if done.returncode != 0:
            raise AssertionError(f"agent-comms mesh --json exited {done.returncode}: {done.stderr!r}")
        shape: dict[str, Any] = json.loads(done.stdout)
        return shape

    async def rooms_listed(self, *, clock: str = "machine") -> list[dict[str, Any]]:
        """``agent-comms rooms --json``."""
        done = await self.run("rooms", ["rooms", "--json"], clock=clock)
        if done.returncode != 0:
            raise AssertionError(f"agent-comms rooms --json exited {done.returncode}: {done.stderr!r}")
        rows: list[dict[str, Any]] = json.loads(done.stdout)
        return rows

    # ------------------------------------------------------------------ steps

    @asynccontextmanager
    async def step(self, name: str, seconds: float = 30.0) -> AsyncIterator[None]:
        """One step of the day, with a deadline; a failure names the step and shows what the processes printed."""
        self.step_name = name
        try:
            with trio.fail_after(seconds):
                yield
        except trio.TooSlowError:
            raise DayFailed(self._report(name, f"not done within {seconds:g} s")) from None
        except AssertionError as exc:
            raise DayFailed(self._report(name, str(exc))) from None
        except BaseExceptionGroup as group:  # the steps of agents acting together
            failures = [leaf for leaf in _leaves(group) if isinstance(leaf, (AssertionError, trio.TooSlowError))]
            if not failures:
                raise
            what = "; ".join(str(leaf) or type(leaf).__name__ for leaf in failures)
            raise DayFailed(self._report(name, what)) from None

    def _report(self, step: str, what: str) -> str:
        parts = [f"the day failed at step {step!r}: {what}", ""]
        parts += [process.output() for process in self.processes]
        for name, done in self.runs[-6:]:
            parts.append(
                f"--- {name}: {' '.join(map(str, done.args))} (exit {done.returncode}) ---\n"
                f"stdout: {done.stdout.decode(errors='replace')[-_TAIL:]}\n"
                f"stderr: {done.stderr.decode(errors='replace')[-_TAIL:]}"
            )
        return "\n".join(parts)


class DayFailed(AssertionError):
    """A step of the day failed; the message says which, with what, and what each process printed."""


def _limit_files(limit: int) -> Callable[[], None]:
    def preexec() -> None:
        resource.setrlimit(resource.RLIMIT_NOFILE, (limit, limit))

    return preexec


@contextmanager
def _unwrapped() -> Iterator[None]:
    """Raise the one failure of a nursery as itself (a step's report reads better than an exception group)."""
    try:
        yield
    except BaseExceptionGroup as group:
        leaves = list(_leaves(group))
        failures = [leaf for leaf in leaves if not isinstance(leaf, trio.Cancelled)]
        if len(failures) == 1:
            raise failures[0] from None
        raise


def _leaves(group: BaseExceptionGroup[BaseException]) -> Iterator[BaseException]:
    for exc in group.exceptions:
        if isinstance(exc, BaseExceptionGroup):
            yield from _leaves(exc)
        else:
            yield exc


@asynccontextmanager
async def open_day(tmp_path: Path, *, seconds: float) -> AsyncIterator[Day]:
    """A day on a private mesh under libfaketime, all of it within ``seconds``; every process ends with it."""
    library = require_libfaketime()
    with _unwrapped(), trio.fail_after(seconds):
        async with AsyncExitStack() as stack, trio.open_nursery() as nursery:
            day = Day(tmp_path, library, nursery, stack)
            try:
                yield day
            finally:
                for process in day.processes:
                    if process.process.poll() is None:
                        process.process.kill()
                with trio.move_on_after(10) as cleanup:
                    cleanup.shield = True
                    for process in day.processes:
                        await process.process.wait()
                nursery.cancel_scope.cancel()


def raise_file_limit(needed: int) -> None:
    """Let this (test) process hold ``needed`` more descriptors, raising its soft limit toward the hard one."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    wanted = needed + 256
    if soft != resource.RLIM_INFINITY and soft < wanted:
        top = wanted if hard == resource.RLIM_INFINITY else min(wanted, hard)
        resource.setrlimit(resource.RLIMIT_NOFILE, (top, hard))


__all__ = [
    "EPOCH",
    "LIFE_ENV",
    "Agent",
    "Clock",
    "Day",
    "DayFailed",
    "Process",
    "libfaketime",
    "long_day",
    "open_day",
    "raise_file_limit",
    "require_libfaketime",
    "scale",
    "settle_in",
    "talk",
    "until",
]
