"""``agent-comms bridge NAME``: run the bridge of a harness (what the harness starts)."""

from __future__ import annotations

import argparse
from typing import Any

from agent_comms.cli.common import EXIT_CONFIG, EXIT_USAGE, error


def register(commands: Any) -> None:
    parser = commands.add_parser(
        "bridge",
        help="run the bridge of a harness (what the harness starts)",
        description=(
            "Run the bridge that gives the harness NAME its agent_comms tool, until the harness is done with it\n"
            "(for MCP harnesses: an MCP server on stdio). 'agent-comms plugins' lists the harnesses."
        ),
        epilog='example: echo \'{"id": 1, "params": {"action": "list_agents"}}\' | agent-comms bridge jsonl --name me',
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("harness", metavar="NAME", help="the harness, e.g. jsonl, claude-code, codex")
    parser.add_argument("--name", help="the agent name to register (default: the name it had last time)")
    parser.add_argument(
        "--harness-pid",
        type=int,
        metavar="PID",
        help="the harness process: the agent goes offline when it exits (default: the bridge process)",
    )
    parser.add_argument(
        "--option",
        action="append",
        default=[],
        type=_key_value,
        metavar="KEY=VALUE",
        help="a setting for the bridge (repeatable), e.g. harness=pi for the jsonl bridge",
    )
    parser.set_defaults(handler=run)


def _key_value(text: str) -> tuple[str, str]:
    key, sep, value = text.partition("=")
    if not sep or not key:
        raise argparse.ArgumentTypeError(f"expected KEY=VALUE, not {text!r}")
    return key, value


def run(args: argparse.Namespace) -> int:
    import os
    import signal

    import trio

    from agent_comms.hookspecs import BridgeOptions
    from agent_comms.plugins import PluginError, find_bridge, get_plugin_manager

    try:
        pm = get_plugin_manager()
    except PluginError as exc:
        error(str(exc))
        return EXIT_CONFIG
    try:
        bridge = find_bridge(pm, args.harness)
    except PluginError as exc:
        error(str(exc))
        return EXIT_USAGE
    if bridge.serve is None:
        error(f"the plugin of the harness {args.harness!r} has no tool hook (serve)")
        return EXIT_CONFIG
    options = BridgeOptions(
        name=args.name, cwd=os.getcwd(), harness_pid=args.harness_pid, extra=dict(args.option), plugin_manager=pm
    )
    running = bridge.serve(options)

    async def serve_until_signalled() -> int:
        # SIGINT, SIGTERM and SIGHUP end the bridge gracefully: cancelling it runs its cleanup, which takes the
        # agent offline for everyone at once (instead of after a timeout) and hands the coordinator role over.
        status = 0
        with trio.open_signal_receiver(signal.SIGINT, signal.SIGTERM, signal.SIGHUP) as signals:
            async with trio.open_nursery() as nursery:

                async def serve() -> None:
                    nonlocal status
                    status = await running
                    nursery.cancel_scope.cancel()

                nursery.start_soon(serve)
                async for _signum in signals:
                    nursery.cancel_scope.cancel()
                    break
        return status

    return trio.run(serve_until_signalled)
