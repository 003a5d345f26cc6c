"""The chat under Trio: one task reads the person's lines, one shows delivery events, one shows presence changes.

Two frontends. :class:`TerminalFrontend` (standard input and output are a terminal) edits the input line with
prompt_toolkit and prints everything else *above* it, so an incoming message never garbles what is being typed.
prompt_toolkit runs on asyncio, so each prompt runs in a worker thread with an event loop of its own; lines to show
go through prompt_toolkit's thread-safe :class:`~prompt_toolkit.patch_stdout.StdoutProxy`, which repaints the
prompt under them. :class:`LineFrontend` (anything else: a pipe, a file, ``/dev/null``) reads commands line by line
until end of input and prints plain lines, so a script can drive the chat and nothing waits for a keyboard.
"""

from __future__ import annotations

import contextlib
import os
import sys
import threading
from collections.abc import Callable, Iterable
from typing import TYPE_CHECKING, Final, Protocol, TextIO, cast

import trio

from agent_comms.chat.session import ChatSession, Kind, Line

if TYPE_CHECKING:
    from prompt_toolkit import PromptSession
    from prompt_toolkit.patch_stdout import StdoutProxy
    from rich.console import Console

    from agent_comms.agent import Agent

__all__ = ["Frontend", "LineFrontend", "TerminalFrontend", "run_chat"]

#: rich styles of the line kinds in a terminal.
STYLES: Final[dict[Kind, str]] = {
    "message": "",
    "dm": "bold magenta",
    "mine": "dim",
    "info": "cyan",
    "error": "bold red",
    "event": "yellow",
    "presence": "dim green",
    "receipt": "dim",
}


class Frontend(Protocol):
    """Where lines come from and go to."""

    #: whether a person edits the input line (the chat then does not echo what was sent)
    interactive: bool

    def show(self, lines: Iterable[Line]) -> None:
        """Show lines now (callable from any task)."""

    async def read_line(self, prompt: str) -> str | None:
        """The next line typed; ``None`` when the person is done (end of input, Ctrl-D, Ctrl-C)."""

    def stop(self) -> None:
        """Make a pending :meth:`read_line` return ``None`` soon (a signal arrived)."""


async def run_chat(agent: Agent, frontend: Frontend) -> None:
    """Chat as ``agent`` until the person quits or :meth:`Frontend.stop` is called (then cancel the caller's scope)."""
    session = ChatSession(agent, echo=not frontend.interactive)
    frontend.show(session.welcome())
    changes = agent.store.node.subscribe()
    async with trio.open_nursery() as nursery:
        nursery.start_soon(_show_events, agent, session, frontend)
        nursery.start_soon(_show_presence, changes, session, frontend)
        while not session.done:
            line = await frontend.read_line(session.prompt())
            if line is None:
                break
            frontend.show(await session.handle(line))
        nursery.cancel_scope.cancel()
    # ``changes`` stays open: the node sends to its subscribers until it closes (a closed one would break it).


async def _show_events(agent: Agent, session: ChatSession, frontend: Frontend) -> None:
    async for event in agent.deliveries():  # counted as read once shown
        frontend.show(session.render_event(event))


async def _show_presence(changes: trio.MemoryReceiveChannel[object], session: ChatSession, frontend: Frontend) -> None:
    from agent_comms.protocol.changes import AgentChanged

    async for change in changes:
        if isinstance(change, AgentChanged):
            frontend.show(session.render_presence(change))


# ---------------------------------------------------------------------- scripts and pipes


class LineFrontend:
    """Commands from a stream of lines (standard input), plain lines to a text stream (standard output)."""

    interactive = False

    def __init__(self, receive: trio.abc.ReceiveStream, write: Callable[[str], None]) -> None:
        from agent_comms.bridges.jsonl import LineSplitter

        self._receive = receive
        self._write = write
        self._splitter = LineSplitter()
        self._ready: list[bytes | None] = []
        self._ended = False
        self._stopped = trio.Event()

    def show(self, lines: Iterable[Line]) -> None:
        for line in lines:
            self._write(line.text)

    async def read_line(self, prompt: str) -> str | None:
        while not self._ready:
            if self._ended or self._stopped.is_set():
                return None
            data = await self._receive.receive_some(65536)
            if data:
                self._ready.extend(self._splitter.feed(data))
            else:
                self._ended = True
                self._ready.extend(self._splitter.close())
        line = self._ready.pop(0)
        if line is None:
            return "/ a line too long to read was skipped"  # answered as an unknown command: nothing is lost silently
        return line.decode("utf-8", errors="replace")

    def stop(self) -> None:
        self._stopped.set()


def print_line(text: str) -> None:
    """Write one line to standard output at once (a pipe's reader sees it without waiting for more).

    If the reader has gone (``agent-comms chat | head -3``), the rest of the output is thrown away quietly.
    """
    try:
        print(text, flush=True)
    except BrokenPipeError:
        null = os.open(os.devnull, os.O_WRONLY)
        os.dup2(null, sys.stdout.fileno())
        os.close(null)


# ---------------------------------------------------------------------- a person at a terminal


class TerminalFrontend:
    """An input line edited with prompt_toolkit (history, cursor keys); incoming lines are printed above it."""

    interactive = True

    def __init__(self) -> None:
        from prompt_toolkit import PromptSession
        from prompt_toolkit.history import InMemoryHistory
        from prompt_toolkit.patch_stdout import StdoutProxy
        from rich.console import Console

        self._session: PromptSession[str] = PromptSession(history=InMemoryHistory())
        self._proxy: StdoutProxy = StdoutProxy(raw=True, sleep_between_writes=0.05)
        self._console: Console = Console(
            file=cast("TextIO", self._proxy), force_terminal=True, soft_wrap=True, highlight=False
        )
        self._stopping = threading.Event()

    def show(self, lines: Iterable[Line]) -> None:
        from rich.text import Text

        for line in lines:
            self._console.print(Text(line.text, style=STYLES[line.kind]))

    async def read_line(self, prompt: str) -> str | None:
        if self._stopping.is_set():
            return None
        # Not abandoned on cancel: the thread holds the terminal in raw mode until its prompt ends, so stop() ends
        # the prompt and this waits for the terminal to be put back.
        return await trio.to_thread.run_sync(self._prompt, prompt)

    def _prompt(self, prompt: str) -> str | None:
        try:
            return self._session.prompt(prompt, pre_run=self._exit_if_stopping)
        except (EOFError, KeyboardInterrupt):
            return None

    def _exit_if_stopping(self) -> None:
        if self._stopping.is_set():
            self._exit_prompt()

    def _exit_prompt(self) -> None:
        app = self._session.app
        future = app.future
        if future is not None and not future.done():
            app.exit(exception=EOFError)

    def stop(self) -> None:
        self._stopping.set()
        loop = self._session.app.loop
        if loop is not None:
            with contextlib.suppress(RuntimeError):  # that prompt's loop is closed: it has ended already
                loop.call_soon_threadsafe(self._exit_prompt)

    def close(self) -> None:
        """Flush what is still to be printed (after the last prompt ended)."""
        self._proxy.close()


def is_terminal() -> bool:
    """Whether standard input and output are both a terminal (a person types and reads here)."""
    return sys.stdin.isatty() and sys.stdout.isatty()
