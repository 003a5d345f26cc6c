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
from collections.abc import Callable, Iterable, Iterator
from typing import TYPE_CHECKING, Any, Final, Protocol, TextIO, cast

import trio

from agent_comms.chat.commands import Names
from agent_comms.chat.lines import Kind, Line
from agent_comms.chat.session import ChatSession

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

    def answer(self, lines: Iterable[Line]) -> None:
        """Show the answer to the line just read, before the next prompt."""

    async def read_line(self, prompt: str, names: Names) -> str | None:
        """The next line typed (``names`` to complete); ``None`` when the person is done (end of input, Ctrl-D)."""

    def stop(self) -> None:
        """Make a pending :meth:`read_line` return ``None`` soon (a signal arrived)."""


async def run_chat(agent: Agent, frontend: Frontend) -> None:
    """Chat as ``agent`` until the person quits or :meth:`Frontend.stop` is called (then cancel the caller's scope)."""
    session = ChatSession(agent, echo=not frontend.interactive)
    # Straight away, before the first prompt is drawn (not above it): a prompt on screen already would leave the
    # terminal's raw mode to print these, and keys typed meanwhile would go to its line discipline instead.
    frontend.answer(session.welcome())
    changes = agent.store.node.subscribe()
    async with trio.open_nursery() as nursery:
        nursery.start_soon(_show_events, agent, session, frontend)
        nursery.start_soon(_show_presence, changes, session, frontend)
        while not session.done:
            line = await frontend.read_line(session.prompt(), session.names())
            if line is None:
                break
            frontend.answer(await session.handle(line))
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
        from agent_comms.stdio import LineSplitter

        self._receive = receive
        self._write = write
        self._splitter = LineSplitter()
        self._ready: list[bytes | None] = []
        self._ended = False
        self._stopped = trio.Event()

    def show(self, lines: Iterable[Line]) -> None:
        for line in lines:
            self._write(line.text)

    answer = show

    async def read_line(self, prompt: str, names: Names) -> str | None:
        while True:
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
            if line is not None:
                return line.decode("utf-8", errors="replace")
            self._write(f"Error: a line longer than {self._splitter.max_line} bytes was skipped.")

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
    """An input line edited with prompt_toolkit (history, cursor keys, Tab completion); other lines above it."""

    interactive = True

    def __init__(self) -> None:
        from prompt_toolkit import PromptSession
        from prompt_toolkit.history import InMemoryHistory
        from prompt_toolkit.patch_stdout import StdoutProxy
        from rich.console import Console

        self._completer = _name_completer()
        self._session: PromptSession[str] = PromptSession(
            history=InMemoryHistory(), completer=self._completer, complete_while_typing=False
        )
        self._proxy: StdoutProxy = StdoutProxy(raw=True, sleep_between_writes=0.05)
        options: dict[str, Any] = {"force_terminal": True, "soft_wrap": True, "highlight": False}
        # Lines that arrive while the prompt may be on screen go through the proxy, which prints them above it.
        self._console: Console = Console(file=cast("TextIO", self._proxy), **options)
        # Answers are printed between two prompts (none is on screen), straight away and so before the next one.
        self._direct: Console = Console(file=sys.stdout, **options)
        self._stopping = threading.Event()

    def show(self, lines: Iterable[Line]) -> None:
        _print(self._console, lines)

    def answer(self, lines: Iterable[Line]) -> None:
        _print(self._direct, lines)

    async def read_line(self, prompt: str, names: Names) -> str | None:
        if self._stopping.is_set():
            return None
        self._completer.names = names
        # Not abandoned on cancel: the thread holds the terminal in raw mode until its prompt ends, so stop() ends
        # the prompt and this waits for the terminal to be put back.
        return await trio.to_thread.run_sync(self._prompt, prompt)

    def _prompt(self, prompt: str) -> str | None:
        try:
            return self._session.prompt(prompt, pre_run=self._exit_if_stopping)
        except (EOFError, KeyboardInterrupt):
            return None
        except OSError:  # the terminal is gone (EIO after a hang-up): nobody is left to type
            self._stopping.set()
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


def _print(console: Console, lines: Iterable[Line]) -> None:
    from rich.text import Text

    try:
        for line in lines:
            console.print(Text(line.text, style=STYLES[line.kind]))
    except OSError:  # the terminal is gone (EIO after a hang-up); the chat is leaving
        pass


def _name_completer() -> Any:
    """Tab completes command names, then room or agent names (``.names``: a snapshot taken before each prompt)."""
    from prompt_toolkit.completion import CompleteEvent, Completer, Completion
    from prompt_toolkit.document import Document

    class NameCompleter(Completer):
        names = Names()

        def get_completions(self, document: Document, complete_event: CompleteEvent) -> Iterator[Completion]:
            text = document.text_before_cursor
            word = text.rpartition(" ")[2]
            for candidate in self.names.complete(text):
                yield Completion(candidate, start_position=-len(word))

    return NameCompleter()


def is_terminal() -> bool:
    """Whether standard input and output are both a terminal (a person types and reads here)."""
    return sys.stdin.isatty() and sys.stdout.isatty()
