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
from importlib import resources
from pathlib import Path
from typing import Final

from agent_comms.bridges.jsonl import serving
from agent_comms.hookspecs import Bridge, Detection, PushPath, Register, hookimpl

__all__ = [
    "BRIDGE",
    "HARNESS",
    "configure",
    "detect",
    "extension_path",
    "extension_source",
    "register_bridges",
    "remove",
    "status",
]

HARNESS: Final = "pi"
PACKAGE: Final = "agent-comms-pi"
_CONFIG = re.compile(r"/\*AGENT_COMMS_CONFIG\*/.*?/\*END_AGENT_COMMS_CONFIG\*/", re.DOTALL)
_CLI_TIMEOUT: Final = 120.0


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


def detect(home: Path) -> Detection:
    """pi is installed if ``pi --version`` answers (run with ``HOME`` set to ``home``)."""
    installed, detail = _installed(home)
    return Detection(installed=installed, detail=detail, config_path=_settings(home))


def configure(home: Path, dry_run: bool) -> list[str]:
    """Write the extension and register it with ``pi install``; nothing changes when both are in place."""
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


def status(home: Path) -> str:
    """One line: whether the extension is written and registered with pi."""
    path = extension_path(home)
    written, registered = path.exists(), _registered(home)
    if written and registered:
        current = path.read_text(encoding="utf-8") == extension_source()
        return f"configured: extension {path}" + ("" if current else " (outdated: run agent-comms setup pi)")
    if written or registered:
        return f"partly configured (extension written: {written}, registered with pi: {registered})"
    return "not configured"


def remove(home: Path, dry_run: bool) -> list[str]:
    """``pi remove`` the extension and delete its file; nothing to do when neither is there."""
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


#: The ``pi`` harness (pi-coding-agent), bridged by a pi extension that relays the tool and pushes events.
BRIDGE: Final = Bridge(
    name=HARNESS,
    description="pi: a pi extension relays the agent_comms tool and pushes messages into the session",
    package=PACKAGE,
    push_path=PushPath.RELAY | PushPath.CONTINUE_TURN | PushPath.TOOL_RESULTS,
    serve=serving(HARNESS),
    detect=detect,
    configure=configure,
    status=status,
    remove=remove,
)


@hookimpl
def register_bridges(register: Register) -> None:
    """Register the ``pi`` bridge: the JSON-lines bridge the extension starts, reads acknowledged."""
    register(BRIDGE)
