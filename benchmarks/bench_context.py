"""Context benchmark: what the mesh adds to the models' contexts, per delivered message.

A scripted working session is replayed through the real MCP bridge (``agent-comms-mcp``, driven by the official
``mcp`` SDK's client over stdio, as an MCP client drives it): four agents in two rooms and a direct conversation,
one agent leaving and coming back, and a person posting with the one-shot ``agent-comms send`` / ``dm``. Every
tool result every model saw is kept and cut into lines, and each line is put in one category:

- ``message text``: the text of a delivered message itself (what the sender wrote; not counted as added);
- ``message framing``: the rest of a message's line (sender, room, id);
- ``receipts``: delivered / read / dropped lines about one's own messages;
- ``presence``: an agent joined, left or changed status;
- ``other events``: invites, "you joined" member lists, kicks, destroyed rooms;
- ``event headers``: the ``--- N new event(s) ---`` lines;
- ``answers``: what the model's own calls answered (``Sent to #dev…``, the ``whoami`` a model calls to check for
  messages).

The figure to watch is the characters added per delivered message (everything but the message text, divided by
the messages shown to recipients), and the share of it that is receipts and presence. Run with
``python benchmarks/bench_context.py`` (or ``nox -s bench``); prints a table and writes
``bench-results/context.json``. Not a test: nothing fails because a figure is large. The session is scripted, so
the figures are repeatable up to where replication timing splits events between two results.
"""

from __future__ import annotations

import argparse
import os
import re
import shutil
import sys
import tempfile
from collections import Counter
from contextlib import AsyncExitStack
from pathlib import Path
from typing import Any

import trio
from mcp import ClientSession, StdioServerParameters, types
from mcp.client.stdio import stdio_client

from agent_comms.store import PRESENCE_QUIET_S

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import free_port, write_results

HEADER = re.compile(r"^--- \d+ new event\(s\) ---$")
#: receipts, as one line per message (``your message <id> "...": read by bob``) or, before, one per recipient and state
RECEIPT = re.compile(
    r'^your message \S+ ".*": (read by|delivered to|sent)| (delivered|read) your message | was dropped undelivered'
)
PRESENCE = re.compile(r"^\[#[^\]]+(, #[^\]]+)*\] .+ (joined|left|is now \S+)$")
MESSAGE = re.compile(r"^(\[DM from .+?\]|\[#[^\]]+\] .+?:) ")
#: room events that are neither messages nor presence (checked first: a reason after a colon looks like a message)
OTHER = re.compile(
    r"^\[#[^\]]+\] (you joined \(via |the room was destroyed by |.+ invited you; |.+ declined your invite"
    r"|.+ (was|were) kicked by )"
)
CATEGORIES = (
    "message framing",
    "receipts",
    "presence",
    "other events",
    "event headers",
    "answers",
)


def _program(name: str) -> list[str]:
    beside = Path(sys.executable).with_name(name)
    if beside.exists():
        return [str(beside)]
    found = shutil.which(name)
    if found is None:
        raise SystemExit(f"{name} is not installed (pip install -e ./bridges/mcp)")
    return [found]


class Tally:
    """The characters of every tool result, by category."""

    def __init__(self) -> None:
        self.chars: Counter[str] = Counter()
        self.lines: Counter[str] = Counter()
        self.sent: set[str] = set()
        self.delivered = 0
        self.results = 0

    def add(self, text: str) -> None:
        """Count one tool result's text (one line break between lines counts with the line before it)."""
        self.results += 1
        answer, _, events = text.partition("\n\n--- ")
        if events:
            events = "--- " + events
        self._count("answers", answer + "\n")
        current = ""
        for line in events.splitlines():
            if line.startswith("  | ") and current:
                # a further line of a multi-line event: the text after the marker belongs to its message
                if current == "message":
                    self._count("message text", line[4:])
                    self._count("message framing", "  | \n")
                else:
                    self._count(current, line + "\n")
                continue
            current = self._kind(line)
            if current == "message":
                self.delivered += 1
                content = max((s for s in self.sent if s in line), key=len, default="")
                self._count("message text", content)
                self._count("message framing", line[: len(line) - len(content)] + "\n")
            else:
                self._count(current, line + "\n")

    def _kind(self, line: str) -> str:
        if not line:
            return "event headers"
        if HEADER.match(line):
            return "event headers"
        if RECEIPT.search(line):
            return "receipts"
        if OTHER.match(line):
            return "other events"
        if MESSAGE.match(line):
            return "message"
        if PRESENCE.match(line):
            return "presence"
        return "other events"

    def _count(self, kind: str, text: str) -> None:
        self.chars[kind] += len(text)
        self.lines[kind] += text.count("\n")


class Agent:
    """One model's MCP client session with its own bridge process."""

    def __init__(self, name: str, session: ClientSession, stack: AsyncExitStack, tally: Tally) -> None:
        self.name = name
        self.session = session
        self.stack = stack
        self.tally = tally

    async def call(self, **params: Any) -> str:
        result = await self.session.call_tool("agent_comms", params)
        assert isinstance(result, types.CallToolResult)
        block = result.content[0]
        assert isinstance(block, types.TextContent)
        if result.is_error:
            raise RuntimeError(f"{self.name} {params}: {block.text}")
        self.tally.add(block.text)
        return block.text


class Session:
    """The scripted working session on a private mesh (its own home and port)."""

    def __init__(self, root: Path, tally: Tally) -> None:
        self.root = root
        self.tally = tally
        self.env = {
            **os.environ,
            "AGENT_COMMS_HOME": str(root / "home"),
            "AGENT_COMMS_PORT": str(free_port()),
        }
        self.agents: dict[str, Agent] = {}

    async def start(self, outer: AsyncExitStack, name: str) -> Agent:
        cwd = self.root / name
        cwd.mkdir(exist_ok=True)
        stack = await outer.enter_async_context(AsyncExitStack())
        log = stack.enter_context((self.root / f"{name}.stderr").open("a"))
        program, *args = _program("agent-comms-mcp")
        params = StdioServerParameters(command=program, args=args, env=self.env, cwd=str(cwd))
        read, write = await stack.enter_async_context(stdio_client(params, errlog=log))
        session = await stack.enter_async_context(ClientSession(read, write))
        await session.initialize()
        agent = self.agents[name] = Agent(name, session, stack, self.tally)
        await agent.call(action="register", name=name)
        return agent

    async def stop(self, name: str) -> None:
        await self.agents.pop(name).stack.aclose()

    async def person(self, *args: str) -> None:
        """A one-shot ``agent-comms`` command by a person (its output is the person's, not a model's)."""
        cwd = self.root / "person"
        cwd.mkdir(exist_ok=True)
        await trio.run_process([*_program("agent-comms"), *args], env=self.env, cwd=cwd, capture_stdout=True)

    def say(self, text: str) -> str:
        self.tally.sent.add(text)
        return text

    async def poll(self, settle: float) -> None:
        """Replication is asynchronous: wait a moment, then every model calls the tool once (as a model checking
        for messages between steps of its work does)."""
        await trio.sleep(settle)
        for agent in list(self.agents.values()):
            await agent.call(action="whoami")


async def replay(rounds: int, settle: float) -> Tally:
    tally = Tally()
    root = Path(tempfile.mkdtemp(prefix="agent-comms-context-"))
    try:
        session = Session(root, tally)
        async with AsyncExitStack() as outer:
            # The last bridge started is the first closed (the SDK's task groups nest), so dave, who leaves and
            # comes back, gets a stack of his own inside the others'.
            for name in ("alice", "bob", "carol"):
                await session.start(outer, name)
            dave_stack = await outer.enter_async_context(AsyncExitStack())
            await session.start(dave_stack, "dave")
            a, b, c = (session.agents[n] for n in ("alice", "bob", "carol"))
            await a.call(action="create_room", room="dev", description="the parser rewrite")
            await a.call(action="create_room", room="ops")
            for name in ("bob", "carol", "dave"):
                await session.agents[name].call(action="join_room", room="dev")
            await b.call(action="join_room", room="ops")
            await session.poll(settle)
            for r in range(rounds):
                await a.call(action="send", target="dev", content=session.say(f"round {r}: alice pushed the lexer"))
                await b.call(action="send", target="dev", content=session.say(f"round {r}: bob reviews the lexer"))
                await c.call(action="send", target="dev", content=session.say(f"round {r}: carol runs the tests"))
                await b.call(action="dm", target="alice", content=session.say(f"round {r}: can you look at #42?"))
                await session.poll(settle)
                await a.call(action="dm", target="bob", content=session.say(f"round {r}: yes, after lunch"))
                await a.call(action="send", target="ops", content=session.say(f"round {r}: deploy at five"))
                if r == 1:
                    await session.stop("dave")  # his session ends
                if r == 2:
                    await session.person("send", "dev", session.say(f"round {r}: person says ship it"))
                    await session.person("dm", "alice", session.say(f"round {r}: person asks for a summary"))
                if r == 3:
                    dave = await session.start(dave_stack, "dave")  # and starts again, in the same directory
                    await dave.call(action="join_room", room="dev")
                await session.poll(settle)
            # long enough for status changes to wait out their quiet window and reach every model
            await session.poll(max(settle * 3, PRESENCE_QUIET_S + settle))
            await session.poll(settle)
    finally:
        shutil.rmtree(root, ignore_errors=True)
    return tally


def report(tally: Tally) -> dict[str, Any]:
    added = sum(tally.chars[k] for k in CATEGORIES)
    delivered = max(tally.delivered, 1)
    rows = {k: {"chars": tally.chars[k], "lines": tally.lines[k], "share": tally.chars[k] / added} for k in CATEGORIES}
    return {
        "tool_results": tally.results,
        "delivered_messages": tally.delivered,
        "message_text_chars": tally.chars["message text"],
        "added_chars": added,
        "added_chars_per_delivered_message": added / delivered,
        "events_added_chars_per_delivered_message": (added - tally.chars["answers"]) / delivered,
        "receipts_and_presence_share": (tally.chars["receipts"] + tally.chars["presence"]) / added,
        "categories": rows,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=6)
    parser.add_argument("--settle", type=float, default=0.4, help="seconds replication gets before models poll")
    parser.add_argument("--quick", action="store_true", help="three rounds")
    parser.add_argument("--out", default="bench-results/context.json")
    args = parser.parse_args()
    tally = trio.run(replay, 3 if args.quick else args.rounds, args.settle)
    results = report(tally)
    print(f"{'category':<18} {'chars':>8} {'lines':>6} {'share':>7}")
    for kind, row in results["categories"].items():
        print(f"{kind:<18} {row['chars']:>8} {row['lines']:>6} {row['share']:>7.1%}")
    print(f"{'message text':<18} {results['message_text_chars']:>8}")
    print(f"delivered messages: {results['delivered_messages']} in {results['tool_results']} tool results")
    print(f"added per delivered message: {results['added_chars_per_delivered_message']:.0f} chars")
    print(f"  of which events (not answers): {results['events_added_chars_per_delivered_message']:.0f} chars")
    print(f"  receipts and presence: {results['receipts_and_presence_share']:.1%} of what was added")
    write_results(args.out, results)


if __name__ == "__main__":
    main()
