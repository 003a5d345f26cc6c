"""``agent-comms chat``: a person joins the mesh as an agent of the harness ``human`` and talks to the agents."""

from __future__ import annotations

import argparse
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import TYPE_CHECKING, Any

from agent_comms.cli.common import EXIT_CONFIG, EXIT_USAGE, ConfigError, error, load_mesh_config

if TYPE_CHECKING:
    from agent_comms.chat.client import Frontend, TerminalFrontend

#: The harness name of a person's agent (``chat``, ``send`` and ``dm`` share it: the same person in a directory).
HARNESS = "human"

_EPILOG = """\
commands inside the chat (/help lists them all):
  /join ROOM   /create ROOM [public|private|secret]   /leave   /rooms   /who
  /dm AGENT [TEXT]   /reply TEXT   /switch ROOM|@AGENT   /read [ROOM]   /name NEWNAME   /quit
plain lines go to the current room or DM partner.

examples:
  agent-comms chat --name alice
  printf '/join review\\nlooks good to me\\n' | agent-comms chat --name alice   # scripted: ends at end of input
"""


def register(commands: Any) -> None:
    parser = commands.add_parser(
        "chat",
        help="chat with the agents yourself (rooms, direct messages, who is online)",
        description=(
            "Join the mesh as a person (an agent of the harness 'human', the same one in this directory for\n"
            "chat, send and dm) and talk: join rooms, send messages and direct messages, see who is online and\n"
            "what happens, live. Incoming lines are printed above the input line. When standard input is not\n"
            "a terminal, commands are read line by line until its end. Ctrl-D, Ctrl-C, /quit, SIGTERM and\n"
            "SIGHUP leave the mesh at once."
        ),
        epilog=_EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--name", help="your name on the mesh (default: the name you had last time here)")
    parser.set_defaults(handler=run)


def run(args: argparse.Namespace) -> int:
    import os
    import signal

    import trio

    from agent_comms.agent import AgentError, open_agent
    from agent_comms.chat.client import TerminalFrontend, is_terminal, run_chat
    from agent_comms.chat.lines import Line
    from agent_comms.identity import IdentityError

    try:
        load_mesh_config()  # a readable error for an unusable key or setting, before anything starts
    except ConfigError as exc:
        error(str(exc))
        return EXIT_CONFIG
    terminal = TerminalFrontend() if is_terminal() else None
    status = 0

    async def chat() -> None:
        nonlocal status
        with trio.open_signal_receiver(signal.SIGINT, signal.SIGTERM, signal.SIGHUP) as signals:
            async with _frontend(terminal) as frontend:
                try:
                    async with open_agent(HARNESS, args.name, cwd=os.getcwd()) as agent:
                        async with trio.open_nursery() as nursery:

                            async def until_signalled() -> None:
                                async for _signum in signals:
                                    frontend.stop()
                                    nursery.cancel_scope.cancel()
                                    return

                            nursery.start_soon(until_signalled)
                            await run_chat(agent, frontend)
                            nursery.cancel_scope.cancel()
                        # The agent leaves as this block ends: offline for everyone at once.
                        frontend.show([Line("info", f"{agent.name} left the mesh.")])
                except* AgentError as group:
                    error(f"could not join the mesh: {'; '.join(str(e) for e in group.exceptions)}")
                    status = EXIT_USAGE
                except* IdentityError as group:
                    error("; ".join(str(e) for e in group.exceptions))
                    status = EXIT_CONFIG

    try:
        trio.run(chat)
    except KeyboardInterrupt:  # Ctrl-C before the chat was ready to take it as "leave"
        status = 130
    finally:
        if terminal is not None:
            terminal.close()
    return status


@asynccontextmanager
async def _frontend(terminal: TerminalFrontend | None) -> AsyncIterator[Frontend]:
    """The terminal frontend, or lines from standard input (never put in non-blocking mode for prompt_toolkit)."""
    from agent_comms.chat.client import LineFrontend, print_line
    from agent_comms.stdio import open_stdio

    if terminal is not None:
        yield terminal
        return
    async with open_stdio() as (receive, _send):
        yield LineFrontend(receive, print_line)
