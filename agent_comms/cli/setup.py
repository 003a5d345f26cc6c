"""``agent-comms setup``, ``status`` and ``remove``: configure the installed harnesses to start their bridge.

The work is done by the setup hooks of the registered bridges (:class:`agent_comms.hookspecs.Bridge`: ``detect``,
``configure``, ``status``, ``remove``), for the user whose home directory is
``Path.home()``. These commands find the harnesses, show what will change, let the hooks change it, and report.
They never prompt: nothing here reads standard input.

Exit status: 0 done (or nothing to do), 2 usage, 3 a plugin failed to load or a hook failed (the others still
ran), 4 a named harness has no plugin installed (the message names the ``pip install`` that adds it),
5 no installed harness found (for ``setup HARNESS...``: none of those named is installed).
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import TYPE_CHECKING, Any, Final

from agent_comms.cli.common import EXIT_CONFIG, EXIT_NO_HARNESS, EXIT_NOT_FOUND, error
from agent_comms.display import display

if TYPE_CHECKING:
    import pluggy

    from agent_comms.hookspecs import Detection, HarnessInfo

#: Harnesses with a bridge distribution of their own (``pip install agent-comms-<name>``).
KNOWN_HARNESSES: Final = ("claude-code", "codex", "opencode", "pi", "mcp")

_INSTALL_HINT: Final = "pip install " + " ".join(f"agent-comms-{name}" for name in KNOWN_HARNESSES)


def register(commands: Any) -> None:
    raw = argparse.RawDescriptionHelpFormatter
    setup = commands.add_parser(
        "setup",
        help="configure the installed harnesses to start their bridge",
        description=(
            "Configure each HARNESS (default: every installed harness whose bridge plugin is installed) to start\n"
            "its agent-comms bridge: shows what will change, changes it (a backup first, formatting kept) and\n"
            "reports it. Running it again changes nothing. Never prompts.\n\n"
            "exit status: 0 done, 3 a plugin or hook failed, 4 a named harness has no plugin installed,\n"
            "5 no installed harness found"
        ),
        epilog="examples:\n  agent-comms setup --dry-run\n  agent-comms setup claude-code codex",
        formatter_class=raw,
    )
    setup.add_argument("harnesses", nargs="*", metavar="HARNESS", help=f"e.g. {', '.join(KNOWN_HARNESSES)}")
    setup.add_argument("--dry-run", action="store_true", help="only show what would change")
    setup.set_defaults(handler=run_setup)

    status = commands.add_parser(
        "status",
        help="show which harnesses are installed and configured",
        description=(
            "For every bridge plugin with setup support: is its harness installed, and how is it configured.\n"
            "Reads only.\n\nexit status: 0, 3 a plugin or hook failed, 5 no plugin with setup support"
        ),
        epilog="examples:\n  agent-comms status\n  agent-comms status --json | jq '.[] | select(.installed)'",
        formatter_class=raw,
    )
    status.add_argument("--json", action="store_true", help="print JSON instead of lines")
    status.set_defaults(handler=run_status)

    remove = commands.add_parser(
        "remove",
        help="undo what setup configured",
        description=(
            "Remove the agent-comms configuration from each HARNESS (default: every harness whose bridge plugin\n"
            "is installed), with a backup first. Never prompts.\n\n"
            "exit status: 0 done, 3 a plugin or hook failed, 4 a named harness has no plugin installed,\n"
            "5 no plugin with setup support"
        ),
        epilog="examples:\n  agent-comms remove --dry-run\n  agent-comms remove codex",
        formatter_class=raw,
    )
    remove.add_argument("harnesses", nargs="*", metavar="HARNESS", help=f"e.g. {', '.join(KNOWN_HARNESSES)}")
    remove.add_argument("--dry-run", action="store_true", help="only show what would change")
    remove.set_defaults(handler=run_remove)


def _plugin_manager() -> pluggy.PluginManager | None:
    from agent_comms.plugins import PluginError, get_plugin_manager

    try:
        return get_plugin_manager()
    except PluginError as exc:
        error(str(exc))
        return None


def _settable(pm: pluggy.PluginManager, home: Path) -> tuple[list[tuple[HarnessInfo, Detection]], bool]:
    """Harnesses whose plugin has setup hooks (answers ``detect``), with what ``detect`` found; and whether a
    detect hook failed (that harness then counts as not installed, and the command ends with EXIT_CONFIG)."""
    from agent_comms.hookspecs import Detection
    from agent_comms.plugins import list_bridges

    found = []
    failed = False
    for bridge in list_bridges(pm):
        info = bridge.info
        if bridge.detect is None:  # no setup support
            continue
        try:
            detection = bridge.detect(home)
        except Exception as exc:  # a plugin's bug: the harness counts as not found, and the command fails
            error(f"{info.name}: detection failed: {type(exc).__name__}: {exc}")
            failed = True
            detection = Detection(False, f"detection failed: {type(exc).__name__}")
        found.append((info, detection))
    return found, failed


def _missing_plugin(name: str, installed: list[str]) -> str:
    have = ", ".join(installed) or "none"
    if name in KNOWN_HARNESSES:
        return (
            f"the plugin for the harness {name!r} is not installed: `pip install agent-comms-{name}` adds it "
            f"(plugins with setup support installed: {have})"
        )
    return (
        f"unknown harness {name!r}: known harnesses are {', '.join(KNOWN_HARNESSES)} "
        f"(plugins with setup support installed: {have})"
    )


def _select(
    pm: pluggy.PluginManager, names: list[str], home: Path, *, installed_only: bool
) -> tuple[list[tuple[HarnessInfo, Detection]], int]:
    """The harnesses to work on, and the exit status so far: non-zero (after saying why) when a name is wrong, there
    is nothing to work on (then the list is empty) or a detect hook failed."""
    settable, detect_failed = _settable(pm, home)
    failed = EXIT_CONFIG if detect_failed else 0
    by_name = {info.name: (info, detection) for info, detection in settable}
    if names:
        missing = [name for name in dict.fromkeys(names) if name not in by_name]
        for name in missing:
            error(_missing_plugin(name, sorted(by_name)))
        if missing:
            return [], EXIT_NOT_FOUND
        return [by_name[name] for name in dict.fromkeys(names)], failed
    if not settable:
        error(f"no bridge plugin with setup support is installed; add one per harness: {_INSTALL_HINT}")
        return [], EXIT_NO_HARNESS
    chosen = [(info, d) for info, d in settable if d.installed or not installed_only]
    if not chosen:
        details = "; ".join(f"{info.name}: {d.detail}" for info, d in settable)
        error(f"no installed harness found ({details})")
        return [], failed or EXIT_NO_HARNESS
    return chosen, failed


def _call(what: str, harness: str, hook: Any, *args: Any) -> tuple[list[str] | None, str | None]:
    """Call a setup hook; (its lines, None), (None, None) when the bridge has no such hook or it answers ``None``
    (setup edits nothing for the harness, as for a generic MCP client), or (None, the failure for a person)."""
    try:
        lines = None if hook is None else hook(*args)
    except Exception as exc:  # a plugin's bug or a harness CLI that failed: report it and go on with the others
        return None, f"{harness}: {what} failed: {type(exc).__name__}: {exc}"
    return (None if lines is None else list(lines)), None


def _status_line(pm: pluggy.PluginManager, info: HarnessInfo, home: Path) -> str:
    """What the status hook says of the harness (for a harness whose configuration setup does not edit)."""
    hook = _hook(pm, info, "status")
    try:
        line = None if hook is None else hook(home)
    except Exception as exc:
        return f"status failed: {type(exc).__name__}: {exc}"
    return str(line) if line else "setup has nothing to change for it"


def _hook(pm: pluggy.PluginManager, info: HarnessInfo, name: str) -> Any:
    """The setup hook ``name`` of the harness's bridge (``None`` if it has none)."""
    from agent_comms.plugins import find_bridge

    return getattr(find_bridge(pm, info.name), name)


def run_setup(args: argparse.Namespace) -> int:
    pm = _plugin_manager()
    if pm is None:
        return EXIT_CONFIG
    home = Path.home()
    chosen, status = _select(pm, args.harnesses, home, installed_only=True)
    if not chosen:
        return status
    failed = bool(status)
    skipped = 0
    for info, detection in chosen:
        if not detection.installed:
            print(f"{info.name}: not installed ({detection.detail}); skipped")
            skipped += 1
            continue
        plan, problem = _call("setup", info.name, _hook(pm, info, "configure"), home, True)
        if problem is not None:
            error(problem)
            failed = True
            continue
        if plan is None:  # configured in another program's own settings, which setup does not edit: say how
            print(display(f"{info.name}: {_status_line(pm, info, home)}"))
            continue
        if not plan:
            print(f"{info.name}: already configured; nothing to change")
            continue
        print(f"{info.name}: {'would change' if args.dry_run else 'will change'}:")
        for line in plan:
            print(f"  - {line}")
        if args.dry_run:
            continue
        done, problem = _call("setup", info.name, _hook(pm, info, "configure"), home, False)
        if problem is not None or done is None:
            error(problem or "")
            failed = True
            continue
        print(f"{info.name}: done:" if done else f"{info.name}: done (nothing needed changing after all)")
        for line in done:
            print(f"  - {line}")
    if failed:
        return EXIT_CONFIG
    return EXIT_NO_HARNESS if skipped == len(chosen) else 0


def run_remove(args: argparse.Namespace) -> int:
    pm = _plugin_manager()
    if pm is None:
        return EXIT_CONFIG
    home = Path.home()
    chosen, status = _select(pm, args.harnesses, home, installed_only=False)
    if not chosen:
        return status
    failed = bool(status)
    results: list[tuple[str, list[str]]] = []
    for info, _detection in chosen:
        changes, problem = _call("remove", info.name, _hook(pm, info, "remove"), home, args.dry_run)
        if problem is not None:
            error(problem)
            failed = True
            continue
        results.append((info.name, changes or []))
    if not failed and not any(changes for _name, changes in results):
        names = ", ".join(name for name, _changes in results)
        print(f"nothing to remove: agent-comms is not configured for {names}")
        return 0
    for name, changes in results:
        if not changes:
            print(f"{name}: nothing to remove")
            continue
        print(f"{name}: {'would remove' if args.dry_run else 'removed'}:")
        for line in changes:
            print(f"  - {line}")
    return EXIT_CONFIG if failed else 0


def run_status(args: argparse.Namespace) -> int:
    pm = _plugin_manager()
    if pm is None:
        return EXIT_CONFIG
    home = Path.home()
    settable, failed = _settable(pm, home)
    rows = []
    for info, detection in settable:
        try:
            status_hook = _hook(pm, info, "status")
            line = None if status_hook is None else status_hook(home)
        except Exception as exc:
            line = f"status failed: {type(exc).__name__}: {exc}"
            failed = True
        rows.append(
            {
                "harness": info.name,
                "package": info.package,
                "installed": detection.installed,
                "detail": detection.detail,
                "config_path": None if detection.config_path is None else str(detection.config_path),
                "status": line,
            }
        )
    if args.json:
        print(json.dumps(rows, indent=2))
    else:
        for row in rows:
            state = "installed" if row["installed"] else "not installed"
            print(display(f"{row['harness']}: {state} ({row['detail']}); {row['status'] or 'no status'}"))
        missing = [name for name in KNOWN_HARNESSES if name not in {row["harness"] for row in rows}]
        if missing:
            print("not installed plugins: " + ", ".join(f"agent-comms-{name}" for name in missing))
    if not rows:
        error(f"no bridge plugin with setup support is installed; add one per harness: {_INSTALL_HINT}")
        return EXIT_NO_HARNESS
    return EXIT_CONFIG if failed else 0
