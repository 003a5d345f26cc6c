"""Setting Claude Code up, through its own ``claude`` CLI (``agent-comms setup / status / remove claude-code``).

Configure does three things, each only if it is not already so (a second run changes nothing):

1. ``claude mcp add --scope user agent-comms -- <abs>/agent-comms bridge claude-code``: the MCP server, in every
   project of the user (an entry whose command differs is replaced with ``claude mcp remove`` first);
2. writes the plugin marketplace shipped in this package (``marketplace/``: ``.claude-plugin/marketplace.json``
   and the plugin ``agent-comms`` with ``.claude-plugin/plugin.json``, ``.mcp.json`` and ``hooks/hooks.json``) to
   ``~/.local/share/agent-comms/claude-code-marketplace`` with this installation's absolute commands filled in
   (a harness started from a desktop launcher has no virtualenv on its ``PATH``), and adds it with
   ``claude plugin marketplace add``;
3. ``claude plugin install agent-comms@agent-comms --scope user``: the hooks. The plugin's ``.mcp.json`` names the
   same command as step 1, so Claude Code runs one server, not two (it drops a plugin server that duplicates a
   manually configured one); the plugin alone also works, without step 1.

Every ``claude`` command runs with ``HOME`` set to the given home and standard input closed
(:func:`agent_comms.configure.run_harness_cli`). ``~/.claude.json`` is only ever read (to know what is there:
``claude mcp get`` would start the server to check its health), never written by us.
"""

from __future__ import annotations

import json
import os
import shlex
import shutil
import subprocess
import sys
from importlib import resources
from pathlib import Path
from typing import Any, Final

from agent_comms.configure import bridge_command, run_harness_cli
from agent_comms.hookspecs import Detection
from agent_comms.private_files import write_private_file
from agent_comms_claude_code import HARNESS, SERVER_NAME

__all__ = [
    "MARKETPLACE",
    "PLUGIN",
    "PLUGIN_ID",
    "SetupError",
    "claude_program",
    "configure",
    "detect",
    "hook_command",
    "marketplace_dir",
    "remove",
    "render_marketplace",
    "status",
]

#: The marketplace's name and the plugin's (``agent-comms@agent-comms``).
MARKETPLACE: Final = "agent-comms"
PLUGIN: Final = "agent-comms"
PLUGIN_ID: Final = f"{PLUGIN}@{MARKETPLACE}"
#: The program that runs Claude Code's CLI (``$AGENT_COMMS_CLAUDE``, else ``claude`` on ``PATH``).
CLAUDE_ENV: Final = "AGENT_COMMS_CLAUDE"
_PLUGIN_FILES: Final = (
    ".claude-plugin/marketplace.json",
    f"plugins/{PLUGIN}/.claude-plugin/plugin.json",
    f"plugins/{PLUGIN}/.mcp.json",
    f"plugins/{PLUGIN}/hooks/hooks.json",
)


class SetupError(Exception):
    """A ``claude`` command failed; the message has its output."""


def claude_program() -> str | None:
    """The ``claude`` program to run, or ``None`` if there is none."""
    configured = os.environ.get(CLAUDE_ENV)
    if configured:
        return configured if Path(configured).exists() else None
    return shutil.which("claude")


def marketplace_dir(home: Path) -> Path:
    """Where configure writes the marketplace for the user whose home is ``home``."""
    return home / ".local" / "share" / "agent-comms" / "claude-code-marketplace"


def hook_command() -> str:
    """The shell command of the plugin's hooks, with this installation's absolute path."""
    beside = Path(sys.executable).parent / "agent-comms-claude-code-hook"
    if beside.exists():
        return shlex.quote(str(beside))
    found = shutil.which("agent-comms-claude-code-hook")
    if found is not None:
        return shlex.quote(found)
    return f"{shlex.quote(sys.executable)} -m agent_comms_claude_code.hook"


def _template(relative: str) -> str:
    return resources.files("agent_comms_claude_code").joinpath("marketplace", relative).read_text(encoding="utf-8")


def render_marketplace() -> dict[str, str]:
    """The marketplace's files (relative path -> text) with this installation's commands filled in."""
    rendered: dict[str, str] = {}
    for relative in _PLUGIN_FILES:
        data: Any = json.loads(_template(relative))
        if relative.endswith(".mcp.json"):
            program, *args = bridge_command(HARNESS)
            data["mcpServers"][SERVER_NAME].update(command=program, args=args)
        elif relative.endswith("hooks.json"):
            for groups in data["hooks"].values():
                for group in groups:
                    for hook in group["hooks"]:
                        hook["command"] = hook_command()
        rendered[relative] = json.dumps(data, indent=2) + "\n"
    return rendered


def _write_marketplace(target: Path, files: dict[str, str], dry_run: bool) -> bool:
    """Write the files that differ; whether any did."""
    changed = False
    for relative, text in files.items():
        path = target / relative
        try:
            current: str | None = path.read_text(encoding="utf-8")
        except FileNotFoundError:
            current = None
        if current == text:
            continue
        changed = True
        if dry_run:
            continue
        path.parent.mkdir(parents=True, exist_ok=True)
        write_private_file(path, text.encode("utf-8"), mode=0o644)  # through a new 0600 temporary file
    return changed


# ---------------------------------------------------------------- reading what is there


def _claude(home: Path, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    program = claude_program()
    if program is None:
        raise SetupError("the claude program was not found on PATH")
    result = run_harness_cli([program, *args], home)
    if check and result.returncode != 0:
        output = (result.stderr.strip() or result.stdout.strip()).splitlines()
        raise SetupError(f"`claude {' '.join(args)}` failed ({result.returncode}): {' '.join(output[-3:])}")
    return result


def _json_of(result: subprocess.CompletedProcess[str]) -> Any:
    """The JSON document ``claude ... --json`` printed (skipping any notice printed before it)."""
    text = result.stdout
    starts = [i for i in (text.find("["), text.find("{")) if i >= 0]
    try:
        return json.loads(text[min(starts) :] if starts else text)
    except ValueError as exc:
        raise SetupError(f"claude printed something other than JSON: {text[:200]!r}") from exc


def _user_server(home: Path) -> dict[str, Any] | None:
    """Our user-scope MCP server entry, read from ``~/.claude.json`` (read only)."""
    try:
        config = json.loads((home / ".claude.json").read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    servers = config.get("mcpServers") if isinstance(config, dict) else None
    entry = servers.get(SERVER_NAME) if isinstance(servers, dict) else None
    return entry if isinstance(entry, dict) else None


def _wanted_server() -> dict[str, Any]:
    program, *args = bridge_command(HARNESS)
    return {"command": program, "args": args}


def _server_matches(entry: dict[str, Any] | None) -> bool:
    wanted = _wanted_server()
    return entry is not None and entry.get("command") == wanted["command"] and entry.get("args") == wanted["args"]


def _marketplace_path(home: Path) -> str | None:
    listed = _json_of(_claude(home, "plugin", "marketplace", "list", "--json"))
    for entry in listed if isinstance(listed, list) else []:
        if isinstance(entry, dict) and entry.get("name") == MARKETPLACE:
            return str(entry.get("path") or entry.get("installLocation") or "")
    return None


def _plugin_state(home: Path) -> str | None:
    """``"enabled"``, ``"disabled"`` or ``None`` (not installed) for our plugin at user scope."""
    listed = _json_of(_claude(home, "plugin", "list", "--json"))
    for entry in listed if isinstance(listed, list) else []:
        if isinstance(entry, dict) and entry.get("id") == PLUGIN_ID:
            return "enabled" if entry.get("enabled") else "disabled"
    return None


# ---------------------------------------------------------------- the setup hooks


def detect(home: Path) -> Detection:
    """Whether Claude Code is installed: ``claude --version``, run for ``home``."""
    program = claude_program()
    if program is None:
        return Detection(installed=False, detail="claude not found on PATH")
    try:
        result = _claude(home, "--version")
    except (SetupError, OSError, subprocess.SubprocessError) as exc:
        return Detection(installed=False, detail=f"{program} does not run: {exc}")
    version = result.stdout.strip().splitlines()[0] if result.stdout.strip() else "unknown version"
    return Detection(installed=True, detail=f"{version} ({program})", config_path=home / ".claude.json")


def configure(home: Path, dry_run: bool) -> list[str]:
    """Configure Claude Code for ``home`` (see the module docstring); one line per change (made, or to make)."""
    changes: list[str] = []
    entry = _user_server(home)
    if not _server_matches(entry):
        command = shlex.join(bridge_command(HARNESS))
        if entry is not None:
            changes.append(f"replace the MCP server {SERVER_NAME!r} (user scope), which runs something else")
            if not dry_run:
                _claude(home, "mcp", "remove", SERVER_NAME, "--scope", "user")
        changes.append(f"claude mcp add --scope user {SERVER_NAME} -- {command}")
        if not dry_run:
            _claude(home, "mcp", "add", "--scope", "user", SERVER_NAME, "--", *bridge_command(HARNESS))
    target = marketplace_dir(home)
    if _write_marketplace(target, render_marketplace(), dry_run):
        changes.append(f"write the Claude Code plugin marketplace to {target}")
    added = _marketplace_path(home)
    if added is not None and Path(added) != target:
        changes.append(f"replace the plugin marketplace {MARKETPLACE!r} (from {added})")
        if not dry_run:
            _claude(home, "plugin", "marketplace", "remove", MARKETPLACE)
        added = None
    if added is None:
        changes.append(f"claude plugin marketplace add {target}")
        if not dry_run:
            _claude(home, "plugin", "marketplace", "add", str(target))
    state = _plugin_state(home) if not (dry_run and added is None) else None
    if state is None:
        changes.append(f"claude plugin install {PLUGIN_ID} --scope user (the hooks)")
        if not dry_run:
            _claude(home, "plugin", "install", PLUGIN_ID, "--scope", "user")
    elif state == "disabled":
        changes.append(f"claude plugin enable {PLUGIN_ID}")
        if not dry_run:
            _claude(home, "plugin", "enable", PLUGIN_ID)
    return changes


def status(home: Path) -> str:
    """One line on how Claude Code is set up for ``home``."""
    found = detect(home)
    if not found.installed:
        return f"Claude Code: {found.detail}"
    entry = _user_server(home)
    server = (
        f"MCP server {SERVER_NAME!r} configured (user scope)"
        if _server_matches(entry)
        else (f"MCP server {SERVER_NAME!r} runs another command" if entry else f"MCP server {SERVER_NAME!r} not set up")
    )
    try:
        state = _plugin_state(home)
    except SetupError as exc:
        return f"Claude Code {found.detail}: {server}; plugin state unknown ({exc})"
    plugin = f"plugin {PLUGIN_ID} {state}" if state else f"plugin {PLUGIN_ID} not installed (no hooks)"
    return f"Claude Code {found.detail}: {server}; {plugin}"


def remove(home: Path, dry_run: bool) -> list[str]:
    """Undo :func:`configure` for ``home``; one line per change (made, or to make)."""
    changes: list[str] = []
    if _user_server(home) is not None:
        changes.append(f"claude mcp remove {SERVER_NAME} --scope user")
        if not dry_run:
            _claude(home, "mcp", "remove", SERVER_NAME, "--scope", "user")
    if _plugin_state(home) is not None:
        changes.append(f"claude plugin uninstall {PLUGIN_ID} --scope user")
        if not dry_run:
            _claude(home, "plugin", "uninstall", PLUGIN_ID, "--scope", "user")
    if _marketplace_path(home) is not None:
        changes.append(f"claude plugin marketplace remove {MARKETPLACE}")
        if not dry_run:
            _claude(home, "plugin", "marketplace", "remove", MARKETPLACE)
    target = marketplace_dir(home)
    if target.exists():
        changes.append(f"delete {target}")
        if not dry_run:
            shutil.rmtree(target)
    return changes
