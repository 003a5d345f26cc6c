"""The ``agent-comms`` command line.

Exit codes scripts can rely on: 0 success, 1 no mesh is running, 2 usage error, 3 configuration error (the mesh
key or an environment variable is unusable; the message says how to fix it). ``bridge`` ends with the bridge's own
status (0 when the harness closed it normally).
"""

from __future__ import annotations

import argparse
import json
import sys
from typing import Final

from agent_comms import __version__

__all__ = ["EXIT_CONFIG", "EXIT_NO_MESH", "EXIT_USAGE", "build_parser", "main"]

EXIT_NO_MESH: Final = 1
#: Exit status for a usage error, matching argparse's own convention.
EXIT_USAGE: Final = 2
EXIT_CONFIG: Final = 3


def build_parser() -> argparse.ArgumentParser:
    """Build the top-level argument parser and its sub-commands."""
    parser = argparse.ArgumentParser(
        prog="agent-comms",
        description="Peer-to-peer communication layer for LLM coding agents.",
    )
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    commands = parser.add_subparsers(dest="command", metavar="COMMAND", title="commands")
    mesh = commands.add_parser(
        "mesh",
        help="show the peers, the coordinator and the agents each peer hosts",
        description="Observe the mesh without joining it (no agent is registered).",
        epilog="example: agent-comms mesh --json | jq '.coordinator'",
    )
    mesh.add_argument("--json", action="store_true", help="print JSON instead of a table")
    plugins = commands.add_parser(
        "plugins",
        help="list the installed bridge plugins",
        description=(
            "List the bridge plugins: the built-in ones and those that installed distributions register in the\n"
            "entry-point group 'agent_comms' (AGENT_COMMS_LOAD_PLUGINS limits which of these load), with their\n"
            "distribution, version, hooks and the harness each serves."
        ),
        epilog="example: agent-comms plugins --json | jq '.[].harness'",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    plugins.add_argument("--json", action="store_true", help="print JSON instead of a table")
    bridge = commands.add_parser(
        "bridge",
        help="run the bridge of a harness (what the harness starts)",
        description=(
            "Run the bridge that gives the harness NAME its agent_comms tool, until the harness is done with it\n"
            "(for MCP harnesses: an MCP server on stdio). 'agent-comms plugins' lists the harnesses."
        ),
        epilog='example: echo \'{"id": 1, "params": {"action": "list_agents"}}\' | agent-comms bridge jsonl --name me',
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    bridge.add_argument("harness", metavar="NAME", help="the harness, e.g. jsonl, claude-code, codex")
    bridge.add_argument("--name", help="the agent name to register (default: the name it had last time)")
    bridge.add_argument(
        "--harness-pid",
        type=int,
        metavar="PID",
        help="the harness process: the agent goes offline when it exits (default: the bridge process)",
    )
    bridge.add_argument(
        "--option",
        action="append",
        default=[],
        type=_key_value,
        metavar="KEY=VALUE",
        help="a setting for the bridge (repeatable), e.g. harness=pi for the jsonl bridge",
    )
    return parser


def _key_value(text: str) -> tuple[str, str]:
    key, sep, value = text.partition("=")
    if not sep or not key:
        raise argparse.ArgumentTypeError(f"expected KEY=VALUE, not {text!r}")
    return key, value


def main(argv: list[str] | None = None) -> int:
    """Run the command line with ``argv`` (default: ``sys.argv[1:]``) and return the exit status.

    Without a sub-command, print the help to stdout and return 2 (a usage error).
    """
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.command is None:
        parser.print_help()
        return EXIT_USAGE
    if args.command == "mesh":
        return _mesh(as_json=args.json)
    if args.command == "plugins":
        return _plugins(as_json=args.json)
    if args.command == "bridge":
        return _bridge(args.harness, name=args.name, harness_pid=args.harness_pid, extra=dict(args.option))
    parser.error(f"unknown command {args.command!r}")  # argparse rejects unknown commands before this


def _mesh(*, as_json: bool) -> int:
    import trio

    from agent_comms.mesh.keyfile import MeshKeyError, load_or_create_key
    from agent_comms.mesh.observe import NoMesh, observe_mesh
    from agent_comms.mesh.registry import PeerRegistry
    from agent_comms.mesh.settings import MeshSettings, SettingsError

    try:
        settings = MeshSettings.from_env()
        key = load_or_create_key(settings.home)
    except (MeshKeyError, SettingsError) as exc:
        print(f"agent-comms: {exc}", file=sys.stderr)
        return EXIT_CONFIG
    try:
        snapshot = trio.run(lambda: observe_mesh(key, port=settings.port, registry=PeerRegistry(settings.home)))
    except NoMesh as exc:
        if as_json:
            print(json.dumps({"coordinator": None, "peers": []}))
        print(f"agent-comms: {exc}", file=sys.stderr)
        return EXIT_NO_MESH
    data = snapshot.to_json()
    if as_json:
        print(json.dumps(data, indent=2))
        return 0
    coordinator = data["coordinator"]
    print(f"mesh on 127.0.0.1:{settings.port}, coordinator {coordinator['peer_id'] if coordinator else '(none)'}")
    for peer in data["peers"]:
        role = "coordinator" if peer["coordinator"] else "peer"
        agents = ", ".join(peer["agents"]) or "-"
        print(f"  {peer['peer_id']}  pid {peer['pid']:<7}  up {peer['uptime']:8.1f} s  {role:<11}  agents: {agents}")
    return 0


def _plugins(*, as_json: bool) -> int:
    from agent_comms.plugins import PluginError, get_plugin_manager, list_plugins

    try:
        infos = list_plugins(get_plugin_manager())
    except PluginError as exc:
        print(f"agent-comms: {exc}", file=sys.stderr)
        return EXIT_CONFIG
    if as_json:
        print(json.dumps([info.to_json() for info in infos], indent=2))
        return 0
    rows = [
        (
            info.name,
            info.harness or "-",
            f"{info.distribution} (built-in)" if info.builtin else info.distribution,
            info.version,
            ", ".join(hook.removeprefix("agent_comms_") for hook in info.hooks) or "-",
        )
        for info in infos
    ]
    header = ("NAME", "HARNESS", "DISTRIBUTION", "VERSION", "HOOKS")
    widths = [max(len(row[column]) for row in (header, *rows)) for column in range(len(header) - 1)]
    for row in (header, *rows):
        print("  ".join([*(cell.ljust(width) for cell, width in zip(row, widths, strict=False)), row[-1]]))
    return 0


def _bridge(harness: str, *, name: str | None, harness_pid: int | None, extra: dict[str, str]) -> int:
    import os

    import trio

    from agent_comms.hookspecs import BridgeOptions
    from agent_comms.plugins import PluginError, find_harness, get_plugin_manager

    try:
        pm = get_plugin_manager()
    except PluginError as exc:
        print(f"agent-comms: {exc}", file=sys.stderr)
        return EXIT_CONFIG
    try:
        find_harness(pm, harness)
    except PluginError as exc:
        print(f"agent-comms: {exc}", file=sys.stderr)
        return EXIT_USAGE
    options = BridgeOptions(name=name, cwd=os.getcwd(), harness_pid=harness_pid, extra=extra, plugin_manager=pm)
    running = pm.hook.agent_comms_serve(harness=harness, options=options)
    if running is None:
        print(
            f"agent-comms: the plugin of the harness {harness!r} has no tool hook (agent_comms_serve)", file=sys.stderr
        )
        return EXIT_CONFIG

    async def run() -> int:
        # SIGINT, SIGTERM and SIGHUP end the bridge gracefully: cancelling it runs its cleanup, which takes the
        # agent offline for everyone at once (instead of after a timeout) and hands the coordinator role over.
        import signal

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

    return trio.run(run)
