"""agent-comms for pi: a pi extension gives the model the ``agent_comms`` tool and pushes messages into the session.

The extension (``extension.ts``, shipped in this package) is small TypeScript that pi loads itself. It starts
``agent-comms bridge pi`` (this plugin's bridge: the built-in JSON-lines bridge with acknowledged reads, the agent
registered under the harness ``pi``), relays the model's tool calls to it, and brings each event it pushes into the
session with ``pi.sendMessage``: direct messages, room messages and invites wake an idle session
(``triggerTurn``) and, while the model is working, are queued as ``steer`` or ``followUp`` as their sender asked;
other events wait for the next turn. The bridge is told an event was shown only once pi took it, so the sender's
``read`` receipt is honest; an event is never given to pi twice. On pi's ``session_shutdown`` the bridge leaves the
mesh; if pi dies, the bridge notices (``--harness-pid``) and leaves too.

Setup (``agent-comms setup pi``) writes the extension, with this installation's absolute ``agent-comms`` command,
to ``~/.pi/agent/agent-comms/agent-comms.ts`` and registers it with pi's own ``pi install <path>`` (a local
package in ``~/.pi/agent/settings.json``); ``agent-comms remove pi`` runs ``pi remove <path>`` and deletes the file.
"""

from __future__ import annotations

import contextlib
import json
import re
from collections.abc import Awaitable
from importlib import resources
from pathlib import Path
from typing import Final

import attrs

from agent_comms.hookspecs import BridgeOptions, Detection, HarnessInfo, hookimpl

__all__ = [
    "HARNESS",
    "agent_comms_configure",
    "agent_comms_detect",
    "agent_comms_harness",
    "agent_comms_remove",
    "agent_comms_serve",
    "agent_comms_status",
    "extension_path",
    "extension_source",
]

HARNESS: Final = "pi"
PACKAGE: Final = "agent-comms-pi"
_CONFIG = re.compile(r"/\*AGENT_COMMS_CONFIG\*/.*?/\*END_AGENT_COMMS_CONFIG\*/", re.DOTALL)
_CLI_TIMEOUT: Final = 120.0


@hookimpl
def agent_comms_harness() -> HarnessInfo:
    """The ``pi`` harness (pi-coding-agent), bridged by a pi extension that pushes events."""
    return HarnessInfo(
        name=HARNESS,
        description="pi: a pi extension relays the agent_comms tool and pushes messages into the session",
        push=True,
        package=PACKAGE,
    )


@hookimpl
def agent_comms_serve(harness: str, options: BridgeOptions) -> Awaitable[int] | None:
    """The bridge the extension starts: the JSON-lines bridge, agent of harness ``pi``, reads acknowledged."""
    if harness != HARNESS:
        return None
    from agent_comms.bridges import jsonl

    extra = {**options.extra, "harness": HARNESS, "ack": "1"}
    return jsonl.serve(attrs.evolve(options, extra=extra))


def extension_path(home: Path) -> Path:
    """Where setup writes the extension for the user whose home is ``home``."""
    return home / ".pi" / "agent" / "agent-comms" / "agent-comms.ts"


def extension_source() -> str:
    """The extension's TypeScript, with this installation's bridge command and the tool's schema filled in."""
    from agent_comms.bridges.jsonl import tool_schema
    from agent_comms.configure import bridge_command

    template = resources.files(__name__).joinpath("extension.ts").read_text(encoding="utf-8")
    config = json.dumps({"command": bridge_command(HARNESS), "tool": tool_schema()})
    return _CONFIG.sub(lambda _: f"/*AGENT_COMMS_CONFIG*/ {config} /*END_AGENT_COMMS_CONFIG*/", template, count=1)


def _pi(home: Path) -> str:
    """The ``pi`` program to run: the one on ``PATH``."""
    import shutil

    return shutil.which("pi") or "pi"


def _installed(home: Path) -> tuple[bool, str]:
    from agent_comms.configure import run_harness_cli

    try:
        result = run_harness_cli([_pi(home), "--version"], home, timeout=_CLI_TIMEOUT)
    except FileNotFoundError:
        return False, "pi not found on PATH (npm install -g @mariozechner/pi-coding-agent)"
    except OSError as exc:
        return False, f"pi could not be run: {exc}"
    version = (result.stdout or result.stderr).strip().splitlines()
    if result.returncode != 0 or not version:
        return False, f"pi --version failed (status {result.returncode})"
    return True, f"pi {version[-1]}"


def _settings(home: Path) -> Path:
    return home / ".pi" / "agent" / "settings.json"


def _registered(home: Path) -> bool:
    """Whether pi's settings list our extension as a package (entries may be relative to the settings file)."""
    try:
        settings = json.loads(_settings(home).read_text(encoding="utf-8"))
    except (FileNotFoundError, ValueError):
        return False
    packages = settings.get("packages", []) if isinstance(settings, dict) else []
    target = extension_path(home).resolve()
    base = _settings(home).parent
    for entry in packages:
        source = entry.get("source") if isinstance(entry, dict) else entry
        if isinstance(source, str) and (base / Path(source).expanduser()).resolve() == target:
            return True
    return False


@hookimpl
def agent_comms_detect(harness: str, home: Path) -> Detection | None:
    """pi is installed if ``pi --version`` answers (run with ``HOME`` set to ``home``)."""
    if harness != HARNESS:
        return None
    installed, detail = _installed(home)
    return Detection(installed=installed, detail=detail, config_path=_settings(home))


@hookimpl
def agent_comms_configure(harness: str, home: Path, dry_run: bool) -> list[str] | None:
    """Write the extension and register it with ``pi install``; nothing changes when both are in place."""
    if harness != HARNESS:
        return None
    from agent_comms.configure import run_harness_cli, write_config

    path = extension_path(home)
    changes = []
    if write_config(path, extension_source(), dry_run=dry_run, mode=0o644):
        changes.append(f"wrote the agent-comms extension {path}")
    if not _registered(home):
        changes.append(f"registered it with pi (pi install {path})")
        if not dry_run:
            result = run_harness_cli([_pi(home), "install", str(path)], home, timeout=_CLI_TIMEOUT)
            if result.returncode != 0 or not _registered(home):
                raise RuntimeError(f"`pi install {path}` failed: {(result.stderr or result.stdout).strip()}")
    return changes


@hookimpl
def agent_comms_status(harness: str, home: Path) -> str | None:
    """One line: whether the extension is written and registered with pi."""
    if harness != HARNESS:
        return None
    path = extension_path(home)
    written, registered = path.exists(), _registered(home)
    if written and registered:
        current = path.read_text(encoding="utf-8") == extension_source()
        return f"configured: extension {path}" + ("" if current else " (outdated: run agent-comms setup pi)")
    if written or registered:
        return f"partly configured (extension written: {written}, registered with pi: {registered})"
    return "not configured"


@hookimpl
def agent_comms_remove(harness: str, home: Path, dry_run: bool) -> list[str] | None:
    """``pi remove`` the extension and delete its file; nothing to do when neither is there."""
    if harness != HARNESS:
        return None
    from agent_comms.configure import run_harness_cli

    path = extension_path(home)
    changes = []
    if _registered(home):
        changes.append(f"unregistered the extension from pi (pi remove {path})")
        if not dry_run:
            result = run_harness_cli([_pi(home), "remove", str(path)], home, timeout=_CLI_TIMEOUT)
            if result.returncode != 0 or _registered(home):
                raise RuntimeError(f"`pi remove {path}` failed: {(result.stderr or result.stdout).strip()}")
    if path.exists():
        changes.append(f"deleted {path}")
        if not dry_run:
            path.unlink()
            with contextlib.suppress(OSError):  # the directory goes only if nothing else is in it
                path.parent.rmdir()
    return changes
