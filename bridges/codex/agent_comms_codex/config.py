"""Setting Codex up: the ``[mcp_servers.agent-comms]`` table in ``~/.codex/config.toml`` and the hooks in
``~/.codex/hooks.json``.

Why not ``codex mcp add``: Codex's own command rewrites the whole ``config.toml`` from its parsed form, which drops
the user's comments (a comment above a table, an inline ``# ...`` after a value, trailing comments) and any key it
does not set itself (re-adding a server loses its ``startup_timeout_sec`` and ``env_vars``). The setup contract is
to keep user comments, so the table is written here instead, as text appended to the file (and removed as exactly
that text), with tomlkit for the parsing and for changing a value in place; every write goes through
:func:`agent_comms.configure.write_config` (a backup first, atomic, nothing written when nothing changes). The
result is checked by Codex itself in the tests (``codex mcp list --json``, ``codex mcp get agent-comms --json``,
``codex exec --strict-config``, which rejects unknown keys).

Only keys Codex knows are written: ``command``, ``args``, ``env_vars`` (the variables Codex passes through to the
server: Codex starts MCP servers with a small default environment, so ``AGENT_COMMS_HOME`` and ``AGENT_COMMS_PORT``
would otherwise not reach the bridge) and ``startup_timeout_sec`` (joining the mesh takes a second or two on a busy
machine; Codex's default is 10 s).

``CODEX_HOME`` moves Codex's directory; it is honoured when configuring the real home directory of this user.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import shlex
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any, Final

import tomlkit
import tomlkit.exceptions

from agent_comms.configure import backup, bridge_command, harness_env, run_harness_cli, write_config
from agent_comms.hookspecs import Detection
from agent_comms_codex import HARNESS
from agent_comms_codex.hooks import EVENTS
from agent_comms_codex.trust import hook_trust

__all__ = [
    "ENV_VARS",
    "SERVER_NAME",
    "STARTUP_TIMEOUT",
    "ConfigError",
    "codex_home",
    "codex_program",
    "configure",
    "desired_server",
    "detect",
    "hook_command",
    "remove",
    "status",
]

SERVER_NAME: Final = "agent-comms"
#: The variables Codex passes through to the bridge (``env_vars``).
ENV_VARS: Final = ("AGENT_COMMS_HOME", "AGENT_COMMS_PORT", "AGENT_COMMS_LOAD_PLUGINS")
#: Seconds Codex waits for the bridge to start (``startup_timeout_sec``).
STARTUP_TIMEOUT: Final = 30
_MARKER: Final = "# agent-comms: the agent_comms tool (`agent-comms remove codex` takes it out)"
_HEADER: Final = re.compile(r"""^\s*\[\s*mcp_servers\s*\.\s*(?:agent-comms|"agent-comms"|'agent-comms')\s*[.\]]""")
_ANY_HEADER: Final = re.compile(r"^\s*\[")
_HOOK_TIMEOUT: Final = 10
_OUR_COMMAND: Final = re.compile(r"agent[-_]comms[-_]codex['\"]?\s+hook\b")


class ConfigError(ValueError):
    """Codex's configuration cannot be edited safely (e.g. it is not valid TOML); the message says why."""


def codex_home(home: Path) -> Path:
    """Codex's directory for the user whose home is ``home``: ``$CODEX_HOME`` for this user, else ``~/.codex``."""
    configured = os.environ.get("CODEX_HOME")
    if configured and home.expanduser().resolve() == Path.home().resolve():
        return Path(configured).expanduser()
    return home / ".codex"


def codex_program(home: Path) -> str | None:
    """The ``codex`` program on the ``PATH`` (as Codex's own environment for ``home`` would find it)."""
    return shutil.which("codex", path=harness_env(home).get("PATH"))


def hook_command(event: str) -> str:
    """The shell command of the hook for ``event``: this installation's ``agent-comms-codex hook EVENT``."""
    beside = Path(sys.executable).parent / "agent-comms-codex"
    if beside.exists():
        program = [str(beside)]
    elif found := shutil.which("agent-comms-codex"):
        program = [found]
    else:
        program = [sys.executable, "-m", "agent_comms_codex"]
    return shlex.join([*program, "hook", event])


def desired_server() -> dict[str, Any]:
    """The keys of ``[mcp_servers.agent-comms]``."""
    program, *args = bridge_command(HARNESS)
    return {"command": program, "args": args, "env_vars": list(ENV_VARS), "startup_timeout_sec": STARTUP_TIMEOUT}


# ---------------------------------------------------------------------------------------------------- config.toml


def _read(path: Path) -> str | None:
    try:
        return path.read_text(encoding="utf-8")
    except FileNotFoundError:
        return None


def _parse(path: Path, text: str) -> tomlkit.TOMLDocument:
    try:
        return tomlkit.parse(text)
    except tomlkit.exceptions.ParseError as exc:
        raise ConfigError(f"{path} is not valid TOML ({exc}); fix it, then run setup again") from exc


def _server(doc: tomlkit.TOMLDocument) -> Any:
    servers = doc.get("mcp_servers")
    return servers.get(SERVER_NAME) if isinstance(servers, dict) else None


def _block() -> str:
    lines = [_MARKER, f"[mcp_servers.{SERVER_NAME}]"]
    lines += [f"{key} = {tomlkit.item(value).as_string()}" for key, value in desired_server().items()]
    return "\n".join(lines) + "\n"


def _with_server(path: Path, text: str) -> str:
    """``text`` with our server table as wanted (added at the end, or its values corrected in place)."""
    doc = _parse(path, text)
    current = _server(doc)
    want = desired_server()
    if current is None:
        if isinstance(doc.get("mcp_servers"), tomlkit.items.InlineTable):
            raise ConfigError(f"{path}: mcp_servers is an inline table; write it as [mcp_servers.NAME] tables first")
        separator = "" if not text else ("\n" if text.endswith("\n") else "\n\n")
        return text + separator + _block()
    if not isinstance(current, dict):
        raise ConfigError(f"{path}: mcp_servers.{SERVER_NAME} is not a table")
    for key in ("command", "args"):
        if current.get(key) != want[key]:
            current[key] = want[key]
    passed = current.get("env_vars")
    if passed is None:
        current["env_vars"] = want["env_vars"]
    elif isinstance(passed, list):
        for name in ENV_VARS:
            if name not in passed:
                passed.append(name)
    if "startup_timeout_sec" not in current:
        current["startup_timeout_sec"] = want["startup_timeout_sec"]
    return tomlkit.dumps(doc)


def _without_server(path: Path, text: str) -> str:
    """``text`` without our server table (and its sub-tables); everything else byte for byte."""
    lines = text.splitlines(keepends=True)
    start = next((i for i, line in enumerate(lines) if _HEADER.match(line)), None)
    if start is None:
        return text
    end = start + 1
    last_value = start  # the table ends at its last value line; comments before the next header belong to it
    while end < len(lines) and (not _ANY_HEADER.match(lines[end]) or _HEADER.match(lines[end])):
        stripped = lines[end].strip()
        if stripped and not stripped.startswith("#"):
            last_value = end
        end += 1
    first = start
    if first > 0 and lines[first - 1].strip() == _MARKER:
        first -= 1
    if first > 0 and not lines[first - 1].strip():
        first -= 1  # the blank line setup put before it
    edited = "".join(lines[:first] + lines[last_value + 1 :])
    # Check the cut with a parser: our server gone, nothing else changed. Else remove it structurally.
    before, after = _parse(path, text).unwrap(), None
    with contextlib.suppress(tomlkit.exceptions.ParseError):
        after = tomlkit.parse(edited).unwrap()
    expected = dict(before)
    servers = dict(expected.get("mcp_servers", {}))
    servers.pop(SERVER_NAME, None)
    expected["mcp_servers"] = servers
    if after is not None and {**after, "mcp_servers": after.get("mcp_servers", {})} == expected:
        return edited
    doc = _parse(path, text)
    del doc["mcp_servers"][SERVER_NAME]
    return tomlkit.dumps(doc)


# ---------------------------------------------------------------------------------------------------- hooks.json


def _our_hook(hook: object) -> bool:
    """Whether a hook entry is one of ours (its command runs ``agent-comms-codex hook``, wherever installed)."""
    return isinstance(hook, dict) and _OUR_COMMAND.search(str(hook.get("command", ""))) is not None


def _load_hooks(path: Path) -> dict[str, Any]:
    text = _read(path)
    if text is None or not text.strip():
        return {}
    try:
        data = json.loads(text)
    except ValueError as exc:
        raise ConfigError(f"{path} is not valid JSON ({exc}); fix it, then run setup again") from exc
    if not isinstance(data, dict) or not isinstance(data.get("hooks", {}), dict):
        raise ConfigError(f'{path}: expected {{"hooks": {{EVENT: [...]}}}}')
    return data


def _dump_hooks(data: dict[str, Any]) -> str:
    return json.dumps(data, indent=2, ensure_ascii=False) + "\n"


def _with_hooks(data: dict[str, Any]) -> dict[str, Any]:
    data = json.loads(json.dumps(data))  # a copy
    hooks = data.setdefault("hooks", {})
    for event in EVENTS:
        groups = hooks.setdefault(event, [])
        wanted = {"type": "command", "command": hook_command(event), "timeout": _HOOK_TIMEOUT}
        ours = [(g, h) for g in groups if isinstance(g, dict) for h in g.get("hooks", []) if _our_hook(h)]
        if len(ours) == 1 and ours[0][1] == wanted:
            continue
        _drop_ours(groups)
        groups.append({"hooks": [wanted]})
    return data


def _drop_ours(groups: list[Any]) -> None:
    for group in list(groups):
        if isinstance(group, dict) and isinstance(group.get("hooks"), list):
            group["hooks"] = [h for h in group["hooks"] if not _our_hook(h)]
            if not group["hooks"]:
                groups.remove(group)


def _without_hooks(data: dict[str, Any]) -> dict[str, Any]:
    data = json.loads(json.dumps(data))
    hooks = data.get("hooks", {})
    for event in list(hooks):
        if isinstance(hooks[event], list):
            _drop_ours(hooks[event])
            if not hooks[event]:
                del hooks[event]
    return data


def _hooks_present(data: dict[str, Any]) -> list[str]:
    hooks = data.get("hooks", {})
    return [
        event
        for event in EVENTS
        if any(_our_hook(h) for g in hooks.get(event, []) if isinstance(g, dict) for h in g.get("hooks", []))
    ]


# ---------------------------------------------------------------------------------------------------- the hooks


def detect(home: Path) -> Detection:
    """Whether Codex is installed: its CLI on the ``PATH`` (and its version), or its directory."""
    config = codex_home(home) / "config.toml"
    program = codex_program(home)
    if program is None:
        if codex_home(home).is_dir():
            return Detection(True, f"{codex_home(home)} exists, but no codex program on the PATH", config)
        return Detection(False, "codex not found on the PATH (npm install -g @openai/codex)", config)
    try:
        done = run_harness_cli([program, "--version"], home, timeout=30, extra_env=_codex_env(home))
    except (OSError, subprocess.TimeoutExpired) as exc:
        return Detection(False, f"{program} does not run: {exc}", config)
    version = done.stdout.strip().splitlines()[0] if done.returncode == 0 and done.stdout.strip() else ""
    if not version:
        return Detection(False, f"{program} --version failed: {done.stderr.strip()[:200]}", config)
    return Detection(True, f"{version} ({program})", config)


def _codex_env(home: Path) -> dict[str, str]:
    return {"CODEX_HOME": str(codex_home(home))}


def configure(home: Path, dry_run: bool) -> list[str]:
    """Add (or correct) the MCP server and the hooks; one line per change (none if everything is in place)."""
    changes: list[str] = []
    config = codex_home(home) / "config.toml"
    text = _read(config) or ""
    wanted = _with_server(config, text)
    if wanted != text:
        verb = "add" if _server(_parse(config, text)) is None else "update"
        changes.append(f"{verb} [mcp_servers.{SERVER_NAME}] in {config}: {shlex.join(bridge_command(HARNESS))}")
        write_config(config, wanted, dry_run=dry_run)
    hooks_path = codex_home(home) / "hooks.json"
    data = _load_hooks(hooks_path)
    with_ours = _with_hooks(data)
    if with_ours != data:
        changes.append(f"add hooks {', '.join(EVENTS)} to {hooks_path} (trust them once in Codex: /hooks)")
        write_config(hooks_path, _dump_hooks(with_ours), dry_run=dry_run)
    return changes


def status(home: Path) -> str:
    """One line: whether the server and the hooks are configured, and with which command."""
    config = codex_home(home) / "config.toml"
    text = _read(config)
    try:
        server = None if text is None else _server(_parse(config, text))
        hooks = _hooks_present(_load_hooks(codex_home(home) / "hooks.json"))
    except ConfigError as exc:
        return f"cannot read the configuration: {exc}"
    if server is None:
        return f"not configured (no [mcp_servers.{SERVER_NAME}] in {config})"
    command = shlex.join([str(server.get("command", "?")), *map(str, server.get("args", []))])
    current = "" if command == shlex.join(bridge_command(HARNESS)) else " (not this installation: run setup)"
    hook_note = f"hooks {', '.join(hooks)}" if hooks else "no hooks"
    if hooks:
        hook_note += "; " + _trust_note(home, hooks)
    return f"configured in {config}: {command}{current}; {hook_note}"


def _trust_note(home: Path, hooks: list[str]) -> str:
    """What Codex says of the trust of our hooks (a hook runs only once the user trusted it in ``/hooks``)."""
    program = codex_program(home)
    advice = "open /hooks in Codex once and trust them (until then Codex skips them silently: only the tool works)"
    if program is None:
        return f"hook trust unknown (codex not on PATH): {advice}"
    try:
        trust = hook_trust(program, home, _codex_env(home), {event: hook_command(event) for event in hooks})
    except (OSError, ValueError) as exc:
        return f"hook trust unknown ({exc}): {advice}"
    untrusted = [f"{event} ({trust.get(event, 'not loaded')})" for event in hooks if trust.get(event) != "trusted"]
    if not untrusted:
        return "hooks trusted in Codex"
    return f"hooks NOT trusted in Codex: {', '.join(untrusted)}; {advice}"


def remove(home: Path, dry_run: bool) -> list[str]:
    """Take the MCP server and our hooks out again; one line per change (none if there was nothing)."""
    changes: list[str] = []
    config = codex_home(home) / "config.toml"
    text = _read(config)
    if text is not None:
        without = _without_server(config, text)
        if without != text:
            changes.append(f"remove [mcp_servers.{SERVER_NAME}] from {config}")
            write_config(config, without, dry_run=dry_run)
    hooks_path = codex_home(home) / "hooks.json"
    data = _load_hooks(hooks_path)
    without_ours = _without_hooks(data)
    if without_ours != data:
        if without_ours in ({}, {"hooks": {}}):
            changes.append(f"remove {hooks_path} (it held only agent-comms hooks)")
            if not dry_run:
                backup(hooks_path)
                hooks_path.unlink()
        else:
            changes.append(f"remove the agent-comms hooks from {hooks_path}")
            write_config(hooks_path, _dump_hooks(without_ours), dry_run=dry_run)
    return changes
