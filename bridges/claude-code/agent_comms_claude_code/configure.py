"""Setting Claude Code up, through its own ``claude`` CLI (``agent-comms setup / status / remove claude-code``).

Configure does four things, each only if it is not already so (a second run changes nothing):

1. ``claude mcp add --scope user agent-comms -- <abs>/agent-comms bridge claude-code``: the MCP server, in every
   project of the user (an entry whose command differs is replaced with ``claude mcp remove`` first);
2. writes the plugin marketplace shipped in this package (``marketplace/``: ``.claude-plugin/marketplace.json``
   and the plugin ``agent-comms`` with ``.claude-plugin/plugin.json``, ``.mcp.json`` and ``hooks/hooks.json``) to
   ``~/.local/share/agent-comms/claude-code-marketplace`` with this installation's absolute commands filled in
   (a harness started from a desktop launcher has no virtualenv on its ``PATH``), and adds it with
   ``claude plugin marketplace add``;
3. ``claude plugin install agent-comms@agent-comms --scope user``: the hooks. The plugin's ``.mcp.json`` names the
   same command as step 1, so Claude Code runs one server, not two (it drops a plugin server that duplicates a
   manually configured one); the plugin alone also works, without step 1;
4. adds the rules of :data:`ALLOW_RULES` missing from ``permissions.allow`` in ``~/.claude/settings.json`` (Claude
   Code has no command for permission rules, and a plugin cannot carry them), keeping everything else, after a
   backup, and records them in :func:`state_path`: ``claude -p`` cannot ask before it runs a tool, and refuses one
   that is not allowed. A settings file that is a symbolic link is written through (:func:`write_config`).

Every file edited here or by ``claude`` is checked first (:func:`check_files`): one that is not JSON stops setup and
remove before anything changed.

If the user's server and the plugin's run different commands (a manual edit), Claude Code starts both and the model
sees two tools: :func:`status` reports it (:func:`two_servers`) and configure repairs it (the user-scope server is
replaced, the plugin folder rewritten, a plugin installed with another command reinstalled). :func:`remove` undoes
every step, taking out only the allow rules setup added.

Every ``claude`` command runs with ``HOME`` set to the given home and standard input closed
(:func:`agent_comms.configure.run_harness_cli`). ``~/.claude.json`` is only ever read (to know what is there:
``claude mcp get`` would start the server to check its health), never written by us.
"""

from __future__ import annotations

import contextlib
import json
import os
import shlex
import shutil
import subprocess
import sys
from importlib import resources
from pathlib import Path
from typing import Any, Final

from agent_comms.configure import bridge_command, run_harness_cli, write_config
from agent_comms.hookspecs import Detection
from agent_comms.private_files import write_private_file
from agent_comms_claude_code import HARNESS, SERVER_NAME

__all__ = [
    "ALLOW_RULES",
    "MARKETPLACE",
    "PLUGIN",
    "PLUGIN_ID",
    "SetupError",
    "allow_rule_present",
    "check_files",
    "claude_program",
    "configure",
    "detect",
    "hook_command",
    "marketplace_dir",
    "remove",
    "render_marketplace",
    "settings_path",
    "state_path",
    "status",
    "two_servers",
]

#: The marketplace's name and the plugin's (``agent-comms@agent-comms``).
MARKETPLACE: Final = "agent-comms"
PLUGIN: Final = "agent-comms"
PLUGIN_ID: Final = f"{PLUGIN}@{MARKETPLACE}"
#: The permission rule that lets Claude Code run our tool without asking (``claude -p`` cannot ask: it refuses).
#: The tool's name is ``mcp__<server>__agent_comms`` for the configured server, and
#: ``mcp__plugin_<plugin>_<server>__agent_comms`` when the plugin's server runs instead (the plugin used alone).
ALLOW_RULES: Final = (f"mcp__{SERVER_NAME}__agent_comms", f"mcp__plugin_{PLUGIN}_{SERVER_NAME}__agent_comms")
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


def _plugin_entry(home: Path) -> dict[str, Any] | None:
    """Our plugin as ``claude plugin list --json`` reports it (with the ``mcpServers`` of its installed copy)."""
    listed = _json_of(_claude(home, "plugin", "list", "--json"))
    for entry in listed if isinstance(listed, list) else []:
        if isinstance(entry, dict) and entry.get("id") == PLUGIN_ID:
            return entry
    return None


def _plugin_state(home: Path) -> str | None:
    """``"enabled"``, ``"disabled"`` or ``None`` (not installed) for our plugin at user scope."""
    entry = _plugin_entry(home)
    if entry is None:
        return None
    return "enabled" if entry.get("enabled") else "disabled"


def _plugin_server(entry: dict[str, Any] | None) -> dict[str, Any] | None:
    """The MCP server in the installed plugin's ``.mcp.json``, as Claude Code read it."""
    servers = entry.get("mcpServers") if entry is not None else None
    server = servers.get(SERVER_NAME) if isinstance(servers, dict) else None
    return server if isinstance(server, dict) else None


def _command_of(entry: dict[str, Any]) -> str:
    args = entry.get("args")
    return shlex.join(
        [str(entry.get("command", "")), *(str(a) for a in args if a is not None)]
        if isinstance(args, list)
        else [str(entry.get("command", ""))]
    )


def _same_command(one: dict[str, Any], other: dict[str, Any]) -> bool:
    return one.get("command") == other.get("command") and (one.get("args") or []) == (other.get("args") or [])


def _local_servers(home: Path) -> dict[str, dict[str, Any]]:
    """Our server configured at local scope (``claude mcp add --scope local``), by project folder."""
    try:
        config = json.loads((home / ".claude.json").read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}
    projects = config.get("projects") if isinstance(config, dict) else None
    found: dict[str, dict[str, Any]] = {}
    for folder, project in projects.items() if isinstance(projects, dict) else []:
        servers = project.get("mcpServers") if isinstance(project, dict) else None
        entry = servers.get(SERVER_NAME) if isinstance(servers, dict) else None
        if isinstance(entry, dict):
            found[str(folder)] = entry
    return found


def two_servers(home: Path, plugin: dict[str, Any] | None) -> list[str]:
    """Where Claude Code would start two agent-comms servers: a configured server whose command differs from the
    plugin's (Claude Code drops a plugin server only when it duplicates a configured one); one line each."""
    server = _plugin_server(plugin)
    if server is None or plugin is None or not plugin.get("enabled"):
        return []
    problems: list[str] = []
    configured = [("~/.claude.json (user scope)", _user_server(home))]
    configured += [(f"~/.claude.json (local scope, project {folder})", e) for folder, e in _local_servers(home).items()]
    for where, entry in configured:
        if entry is not None and not _same_command(entry, server):
            problems.append(
                f"two agent-comms servers: the MCP server {SERVER_NAME!r} in {where} runs `{_command_of(entry)}`, "
                f"the plugin's .mcp.json runs `{_command_of(server)}`; the commands differ, so Claude Code starts "
                "both and the model sees two agent_comms tools (two agents)"
            )
    return problems


# ---------------------------------------------------------------- the allow rule


def settings_path(home: Path) -> Path:
    """Claude Code's user settings, where permission rules live (there is no ``claude`` command that edits them)."""
    return home / ".claude" / "settings.json"


def state_path(home: Path) -> Path:
    """Setup's own record, beside the marketplace: the allow rules setup added (and so :func:`remove` takes away);
    a rule the user had already is never recorded, so it survives ``remove``."""
    return marketplace_dir(home).parent / "claude-code-setup.json"


def _load_json(path: Path) -> Any:
    """The JSON document in ``path`` (``None`` if there is no file); :class:`SetupError` naming the file and the
    position of the error if it is not JSON."""
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        return None
    except (OSError, UnicodeDecodeError) as exc:
        raise SetupError(f"cannot read {path}: {exc}") from exc
    try:
        return json.loads(text)
    except json.JSONDecodeError as exc:
        raise SetupError(
            f"{path} is not valid JSON: {exc.msg} at line {exc.lineno} column {exc.colno}; nothing was changed: "
            "fix it, then run again"
        ) from exc


def check_files(home: Path) -> None:
    """Refuse (:class:`SetupError`) before anything changes if a file that setup or remove edits, directly or through
    ``claude``, is not what it must be: ``~/.claude.json`` and the user settings JSON objects, and in the settings
    ``permissions`` an object with a list ``allow``."""
    for path in (home / ".claude.json", settings_path(home), state_path(home)):
        data = _load_json(path)
        if data is not None and not isinstance(data, dict):
            raise SetupError(f"{path} holds a JSON {type(data).__name__}, not an object; nothing was changed: fix it")
    settings = _load_json(settings_path(home)) or {}
    permissions = settings.get("permissions", {})
    if not isinstance(permissions, dict) or not isinstance(permissions.get("allow", []), list):
        raise SetupError(
            f"{settings_path(home)}: permissions must be an object whose allow is a list; nothing was changed: fix it"
        )


def _read_settings(home: Path) -> dict[str, Any]:
    data = _load_json(settings_path(home))
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise SetupError(f"{settings_path(home)} holds something other than a JSON object; fix it, then run again")
    return data


def _allowed(settings: dict[str, Any]) -> list[Any]:
    permissions = settings.get("permissions")
    allow = permissions.get("allow") if isinstance(permissions, dict) else None
    return allow if isinstance(allow, list) else []


def allow_rule_present(home: Path) -> bool:
    """Whether the user settings allow the tool (``permissions.allow`` holds :data:`ALLOW_RULES`)."""
    allowed = _allowed(_read_settings(home))
    return all(rule in allowed for rule in ALLOW_RULES)


def _recorded_rules(home: Path) -> list[str] | None:
    """The allow rules setup added (from :func:`state_path`); ``None`` when there is no record at all."""
    state = _load_json(state_path(home))
    if state is None:
        return None
    rules = state.get("added_allow_rules") if isinstance(state, dict) else None
    return [rule for rule in rules if rule in ALLOW_RULES] if isinstance(rules, list) else []


def _ours_without_record(allowed: list[Any], earlier_setup: bool) -> list[str]:
    """The rules of :data:`ALLOW_RULES` to count as setup's when there is no record: setups before records were kept
    added every rule and recorded nothing, so after one of them (``earlier_setup``) the rules present are setup's;
    with no earlier setup they are the user's own."""
    return [rule for rule in ALLOW_RULES if rule in allowed] if earlier_setup else []


def _write_settings(home: Path, settings: dict[str, Any], allow: list[Any]) -> None:
    permissions = settings.get("permissions")
    permissions = dict(permissions) if isinstance(permissions, dict) else {}
    if allow:
        permissions["allow"] = allow
    else:
        permissions.pop("allow", None)
    if permissions:
        settings["permissions"] = permissions
    else:
        settings.pop("permissions", None)
    write_config(settings_path(home), json.dumps(settings, indent=2) + "\n")


def _add_allow(home: Path, dry_run: bool, earlier_setup: bool) -> list[str]:
    """Append the rules of :data:`ALLOW_RULES` missing from the user settings, and record them; the rules added.
    A rule already there (wherever it is in the list) is left alone: nothing is rewritten when all are there.
    Without a record, one is written even when nothing is added, saying which rules present are setup's
    (:func:`_ours_without_record`; ``earlier_setup``: the marketplace was there before this setup ran)."""
    settings = _read_settings(home)
    allowed = _allowed(settings)
    missing = [rule for rule in ALLOW_RULES if rule not in allowed]
    recorded = _recorded_rules(home)
    if dry_run or not (missing or recorded is None):
        return missing
    if recorded is None:
        recorded = _ours_without_record(allowed, earlier_setup)
    if missing:
        _write_settings(home, settings, [*allowed, *missing])  # first: a crash then leaves a rule, never a record
    ours = [rule for rule in ALLOW_RULES if rule in missing or rule in recorded]
    state_path(home).parent.mkdir(parents=True, exist_ok=True)
    write_config(state_path(home), json.dumps({"added_allow_rules": ours}, indent=2) + "\n")
    return missing


def _remove_allow(home: Path, dry_run: bool, earlier_setup: bool) -> list[str]:
    """Take out of the user settings the rules setup added (and forget the record); the rules taken out. Without
    a record, the rules present are those of a setup from before records were kept if that setup ran
    (``earlier_setup``: its marketplace is there; :func:`_ours_without_record`)."""
    recorded = _recorded_rules(home)
    settings = _read_settings(home)
    allowed = _allowed(settings)
    if recorded is None:
        recorded = _ours_without_record(allowed, earlier_setup)
    ours = [rule for rule in recorded if rule in allowed]
    if dry_run:
        return ours
    if ours:
        _write_settings(home, settings, [rule for rule in allowed if rule not in ours])
    with contextlib.suppress(FileNotFoundError):
        state_path(home).unlink()
    return ours


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
    """Configure Claude Code for ``home`` (see the module docstring); one line per change (made, or to make).

    Every file it edits is checked first (:func:`check_files`): a broken one stops it before anything changed."""
    check_files(home)
    changes: list[str] = []
    earlier_setup = marketplace_dir(home).exists()  # before this setup writes it
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
    plugin = _plugin_entry(home) if not (dry_run and added is None) else None
    server = _plugin_server(plugin)
    if plugin is not None and server is not None and not _same_command(server, _wanted_server()):
        # The installed copy was edited (or is older than the marketplace): reinstall it, else two servers run.
        changes.append(
            f"reinstall the plugin {PLUGIN_ID}: its installed .mcp.json runs `{_command_of(server)}`, "
            f"not `{shlex.join(bridge_command(HARNESS))}` (Claude Code would start both servers)"
        )
        if not dry_run:
            _claude(home, "plugin", "uninstall", PLUGIN_ID, "--scope", "user")
        plugin = None
    if plugin is None:
        changes.append(f"claude plugin install {PLUGIN_ID} --scope user (the hooks)")
        if not dry_run:
            _claude(home, "plugin", "install", PLUGIN_ID, "--scope", "user")
    elif not plugin.get("enabled"):
        changes.append(f"claude plugin enable {PLUGIN_ID}")
        if not dry_run:
            _claude(home, "plugin", "enable", PLUGIN_ID)
    added_rules = _add_allow(home, dry_run, earlier_setup)
    if added_rules:
        changes.append(
            f"allow the tool without asking: add {' and '.join(map(repr, added_rules))} to permissions.allow in "
            f"{settings_path(home)} (claude -p refuses a tool that is not allowed)"
        )
    for folder, entry in _local_servers(home).items():
        if not _server_matches(entry):
            changes.append(
                f"not changed: the local-scope server {SERVER_NAME!r} of project {folder} runs "
                f"`{_command_of(entry)}`; remove it with `cd {shlex.quote(folder)} && claude mcp remove "
                f"{SERVER_NAME} --scope local` (else Claude Code starts two servers there)"
            )
    return changes


def status(home: Path) -> str:
    """One line on how Claude Code is set up for ``home`` (``agent-comms status`` prints the version and the path
    of ``claude`` before it: they are not repeated here)."""
    found = detect(home)
    if not found.installed:
        return "not set up"
    entry = _user_server(home)
    server = (
        f"MCP server {SERVER_NAME!r} configured (user scope)"
        if _server_matches(entry)
        else (f"MCP server {SERVER_NAME!r} runs another command" if entry else f"MCP server {SERVER_NAME!r} not set up")
    )
    try:
        entry_of_plugin = _plugin_entry(home)
    except SetupError as exc:
        return f"{server}; plugin state unknown ({exc})"
    if entry_of_plugin is None:
        plugin = f"plugin {PLUGIN_ID} not installed (no hooks)"
    else:
        plugin = f"plugin {PLUGIN_ID} {'enabled' if entry_of_plugin.get('enabled') else 'disabled'}"
    try:
        allowed = (
            f"tool allowed ({ALLOW_RULES[0]} in {settings_path(home)})"
            if allow_rule_present(home)
            else f"tool not allowed in {settings_path(home)}: claude -p refuses it unless run with "
            f"--allowedTools {ALLOW_RULES[0]}"
        )
    except SetupError as exc:
        allowed = str(exc)
    problems = two_servers(home, entry_of_plugin)
    line = f"{server}; {plugin}; {allowed}"
    if problems:
        line += "; PROBLEM: " + "; ".join(problems) + "; `agent-comms setup claude-code` repairs it"
    return line


def _left_for_claude(home: Path) -> list[str]:
    """What of ours Claude Code's files show that only ``claude`` itself can take away."""
    left = [f"the MCP server {SERVER_NAME!r}"] if _user_server(home) is not None else []
    plugins = home / ".claude" / "plugins"
    for name in ("installed_plugins.json", "known_marketplaces.json"):
        try:
            text = (plugins / name).read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError):
            continue
        if f'"{PLUGIN_ID}"' in text or f'"{MARKETPLACE}"' in text:
            left.append(f"the plugin {PLUGIN_ID} and its marketplace")
            break
    return left


def remove(home: Path, dry_run: bool) -> list[str]:
    """Undo :func:`configure` for ``home``; one line per change (made, or to make).

    Without a ``claude`` program, what only ``claude`` can undo is looked for in its files: if none of it is there
    (nothing was ever set up) the rest is undone and the answer may be empty; else :class:`SetupError` says why."""
    check_files(home)
    changes: list[str] = []
    earlier_setup = marketplace_dir(home).exists()  # before this remove deletes it
    if claude_program() is None:
        left = _left_for_claude(home)
        if left:
            raise SetupError(f"the claude program was not found on PATH; it is needed to remove {', '.join(left)}")
    else:
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
    removed_rules = _remove_allow(home, dry_run, earlier_setup)
    if removed_rules:
        changes.append(
            f"remove {' and '.join(map(repr, removed_rules))} (added by setup) from permissions.allow in "
            f"{settings_path(home)}"
        )
    return changes
