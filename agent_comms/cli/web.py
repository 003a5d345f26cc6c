"""``agent-comms web``: the mesh live in the browser, for a person (an agent of the harness ``human``, like chat)."""

from __future__ import annotations

import argparse
from typing import Any

from agent_comms.cli.common import EXIT_CONFIG, EXIT_USAGE, ConfigError, error, load_mesh_config

_EPILOG = """\
The page lists the agents with their presence and status, the rooms with their members, and a live pane per room
and per direct-message partner (receipts of your messages, unread counts), with a box to post as yourself.
It is served on 127.0.0.1 only and answers only the page opened with this launch's key (see docs/web.md).

examples:
  agent-comms web --name alice
  agent-comms web --port 8765 --no-open     # then open the file it names
"""


def register(commands: Any) -> None:
    parser = commands.add_parser(
        "web",
        help="the mesh live in your browser: agents, rooms, messages, and a box to post (needs the 'web' extra)",
        description=(
            "Join the mesh as a person (an agent of the harness 'human', the same one in this directory as for\n"
            "chat, send and dm) and serve a live page of the mesh on 127.0.0.1. The browser is given the page\n"
            "with this launch's key through a file only you can read. Ctrl-C or SIGTERM leaves the mesh at once."
        ),
        epilog=_EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--port", type=int, default=0, help="the port on 127.0.0.1 (default: a free one)")
    parser.add_argument("--name", help="your name on the mesh (default: the name you had last time here)")
    parser.add_argument("--no-open", action="store_true", help="do not open a browser; open the file it names")
    parser.set_defaults(handler=run)


def run(args: argparse.Namespace) -> int:
    import os

    import trio

    from agent_comms.agent import AgentError, open_agent
    from agent_comms.cli.chat import HARNESS
    from agent_comms.identity import IdentityError

    try:
        import hypercorn  # noqa: F401
        import starlette  # noqa: F401
    except ImportError:
        error("agent-comms web needs the 'web' extra: pip install 'agent-comms[web]'")
        return EXIT_CONFIG
    from agent_comms.web.serve import serve_web

    if not 0 <= args.port <= 65535:
        error(f"--port {args.port} is not a port (0-65535)")
        return EXIT_USAGE
    try:
        settings, _key = load_mesh_config()
    except ConfigError as exc:
        error(str(exc))
        return EXIT_CONFIG
    status = 0

    async def web() -> None:
        nonlocal status
        try:
            async with open_agent(HARNESS, args.name, cwd=os.getcwd()) as agent:
                await serve_web(agent, settings.home, port=args.port, open_browser=not args.no_open, say=_say)
                name = agent.name
            print(f"{name} left the mesh.", flush=True)  # the agent went offline as the block ended
        except* AgentError as group:
            error(f"could not join the mesh: {'; '.join(str(e) for e in group.exceptions)}")
            status = EXIT_USAGE
        except* IdentityError as group:
            error("; ".join(str(e) for e in group.exceptions))
            status = EXIT_CONFIG
        except* OSError as group:
            error(f"could not serve the page on 127.0.0.1:{args.port}: {'; '.join(_leaves(group))}")
            status = EXIT_CONFIG

    try:
        trio.run(web)
    except KeyboardInterrupt:  # Ctrl-C before the server was ready to take it as "leave"
        status = 130
    return status


def _say(text: str) -> None:
    print(text, flush=True)


def _leaves(group: BaseExceptionGroup[OSError]) -> list[str]:
    """The messages of the errors in ``group`` and its nested groups (Trio nurseries nest them)."""
    found: list[str] = []
    for exc in group.exceptions:
        found.extend(_leaves(exc) if isinstance(exc, BaseExceptionGroup) else [exc.strerror or str(exc)])
    return found
