"""How the demo tells its story: with colour and rules on a terminal (rich), as plain lines otherwise, or not at all.

Every line carries the seconds since the demo started, so a reader sees how long each thing took.
"""

from __future__ import annotations

import os
import sys
import time
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Final, TextIO

if TYPE_CHECKING:
    from rich.console import Console

__all__ = ["Narrator", "PlainNarrator", "RichNarrator", "SilentNarrator", "narrator_for", "silence_stdout"]

_AGENT_STYLES: Final = ("cyan", "magenta", "green", "yellow", "blue", "bright_red")


def silence_stdout() -> None:
    """Point standard output at /dev/null after its reader went away, so that nothing fails later either (the
    interpreter's last flush included)."""
    devnull = os.open(os.devnull, os.O_WRONLY)
    try:
        os.dup2(devnull, sys.stdout.fileno())
    finally:
        os.close(devnull)


class Narrator:
    """The interface (and the silent implementation, for ``--json``)."""

    def __init__(self) -> None:
        self.started = time.monotonic()
        #: set when the reader went away (``agent-comms demo | head``): the demo goes on silently
        self.gone = False

    def _write(self, emit: Callable[[], None]) -> None:
        if self.gone:
            return
        try:
            emit()
        except BrokenPipeError:
            self.gone = True
            silence_stdout()

    def elapsed(self) -> float:
        """Seconds since the demo started."""
        return time.monotonic() - self.started

    def header(self, lines: Sequence[str]) -> None:
        """What the demo is about to do, and where."""

    def step(self, number: int, title: str) -> None:
        """A new step begins."""

    def say(self, text: str) -> None:
        """A line of narration."""

    def agent(self, name: str, text: str) -> None:
        """Something an agent did or saw (``text`` is often the bridge's own line)."""

    def figure(self, text: str) -> None:
        """A measured figure, shown prominently."""

    def summary(self, rows: Sequence[tuple[str, str]]) -> None:
        """The figures at the end."""


SilentNarrator = Narrator


class PlainNarrator(Narrator):
    """Plain text lines, for a pipe, a file or a log."""

    def __init__(self, out: TextIO | None = None) -> None:
        super().__init__()
        self.out = sys.stdout if out is None else out

    def _line(self, text: str) -> None:
        self._write(lambda: print(text, file=self.out, flush=True))

    def _stamp(self) -> str:
        return f"{self.elapsed():6.2f}s"

    def header(self, lines: Sequence[str]) -> None:
        for line in lines:
            self._line(line)

    def step(self, number: int, title: str) -> None:
        self._line(f"\n{number}. {title}")

    def say(self, text: str) -> None:
        self._line(f"{self._stamp()}  {text}")

    def agent(self, name: str, text: str) -> None:
        first, *rest = text.splitlines() or [""]
        self._line(f"{self._stamp()}  {name:<6} {first}")
        for line in rest:
            self._line(f"{'':7}  {'':<6} {line}")

    def figure(self, text: str) -> None:
        self._line(f"{self._stamp()}  => {text}")

    def summary(self, rows: Sequence[tuple[str, str]]) -> None:
        self._line("\nSummary")
        width = max((len(label) for label, _ in rows), default=0)
        for label, value in rows:
            self._line(f"  {label:<{width}}  {value}")


class RichNarrator(Narrator):
    """Colours, a rule per step and a summary table, for a person at a terminal; long lines wrap under their text
    column, not under the time stamps."""

    def __init__(self, console: Console | None = None) -> None:
        from rich.console import Console

        super().__init__()
        self.console = Console(highlight=False) if console is None else console
        self._styles: dict[str, str] = {}

    def _style(self, name: str) -> str:
        return self._styles.setdefault(name, _AGENT_STYLES[len(self._styles) % len(_AGENT_STYLES)])

    def _row(self, name: str, text: str, *, name_style: str = "", text_style: str = "") -> None:
        from rich.table import Table
        from rich.text import Text

        grid = Table.grid(padding=(0, 1))
        grid.add_column(width=7, no_wrap=True, justify="right", style="dim")
        grid.add_column(width=6, no_wrap=True)
        grid.add_column(overflow="fold")
        grid.add_row(f"{self.elapsed():.2f}s", Text(name, style=name_style), Text(text, style=text_style))
        self._print(grid)

    def _print(self, *renderables: object) -> None:
        self._write(lambda: self.console.print(*renderables))

    def header(self, lines: Sequence[str]) -> None:
        from rich.panel import Panel
        from rich.text import Text

        self._print(Panel(Text("\n".join(lines)), title="agent-comms demo", expand=False))

    def step(self, number: int, title: str) -> None:
        from rich.text import Text

        self._print()
        self._write(lambda: self.console.rule(Text(f"{number}. {title}", style="bold"), align="left"))

    def say(self, text: str) -> None:
        self._row("", text)

    def agent(self, name: str, text: str) -> None:
        style = self._style(name)
        self._row(name, text, name_style=f"bold {style}")

    def figure(self, text: str) -> None:
        self._row("=>", text, name_style="bold green", text_style="bold green")

    def summary(self, rows: Sequence[tuple[str, str]]) -> None:
        from rich.table import Table

        self._print()
        table = Table(title="Summary", title_justify="left", title_style="bold", show_header=False)
        table.add_column(style="bold", no_wrap=True)
        table.add_column(style="green")
        for label, value in rows:
            table.add_row(label, value)
        self._print(table)


def narrator_for(*, json_output: bool, plain: bool) -> Narrator:
    """The narrator for this run: silent for ``--json``, rich on a terminal, plain text otherwise."""
    if json_output:
        return SilentNarrator()
    if plain or not sys.stdout.isatty():
        return PlainNarrator()
    return RichNarrator()
