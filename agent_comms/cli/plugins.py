"""``agent-comms plugins``: the installed bridge plugins."""

from __future__ import annotations

import argparse
import json
from typing import Any

from agent_comms.cli.common import EXIT_CONFIG, error


def register(commands: Any) -> None:
    parser = commands.add_parser(
        "plugins",
        help="list the installed bridge plugins",
        description=(
            "List the bridge plugins: the built-in ones and those that installed distributions register in the\n"
            "entry-point group 'agent_comms' (AGENT_COMMS_LOAD_PLUGINS limits which of these load), with their\n"
            "distribution, version, the harness each bridge serves, how events reach its model (push) and its hooks."
        ),
        epilog="example: agent-comms plugins --json | jq '.[].harness'",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--json", action="store_true", help="print JSON instead of a table")
    parser.set_defaults(handler=run)


def run(args: argparse.Namespace) -> int:
    from agent_comms.plugins import PluginError, get_plugin_manager, list_plugins

    try:
        infos = list_plugins(get_plugin_manager())
    except PluginError as exc:
        error(str(exc))
        return EXIT_CONFIG
    if args.json:
        print(json.dumps([info.to_json() for info in infos], indent=2))
        return 0
    rows = [
        (
            info.name,
            info.harness or "-",
            f"{info.distribution} (built-in)" if info.builtin else info.distribution,
            info.version,
            ", ".join(info.push) or "-",
            ", ".join(info.hooks) or "-",
        )
        for info in infos
    ]
    header = ("NAME", "HARNESS", "DISTRIBUTION", "VERSION", "PUSH", "HOOKS")
    widths = [max(len(row[column]) for row in (header, *rows)) for column in range(len(header) - 1)]
    for row in (header, *rows):
        print("  ".join([*(cell.ljust(width) for cell, width in zip(row, widths, strict=False)), row[-1]]))
    return 0
