"""agent-comms for OpenCode: a plugin gives the model the ``agent_comms`` tool and pushes messages into the session.

The plugin (``plugin.js``, shipped in this package) is a small JavaScript module that OpenCode loads from its global
plugin directory. It starts ``agent-comms bridge opencode`` (this plugin's bridge: the built-in JSON-lines bridge
with acknowledged reads, the agent registered under the harness ``opencode``), relays the model's tool calls to
it, and brings each event it pushes into the active session with ``client.session.promptAsync``: direct messages,
room messages and invites wake the session; other events are added without a reply (``noReply``). The bridge is
told an event was shown only once OpenCode accepted it, so the sender's ``read`` receipt is honest; an event is
never given to OpenCode twice, and one that could not be pushed is appended to the next ``agent_comms`` result.
When OpenCode disposes the plugin the bridge leaves the mesh; if OpenCode dies, the bridge notices
(``--harness-pid``) and leaves too.

Setup (``agent-comms setup opencode``) writes the plugin, with this installation's absolute ``agent-comms``
command, to ``~/.config/opencode/plugins/agent-comms.js``; OpenCode discovers it there (no ``opencode.json`` edit)
and would install the ``@opencode-ai/plugin`` helper it imports into ``~/.config/opencode`` from the npm registry at
its first start; setup installs it beforehand (:mod:`agent_comms_opencode.helper`), so OpenCode needs no network.
``agent-comms remove opencode`` deletes the plugin file (the helper stays: it is OpenCode's, for every plugin).
"""

from __future__ import annotations

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
    "plugin_path",
    "plugin_source",
    "register_bridges",
    "remove",
    "status",
]

HARNESS: Final = "opencode"
PACKAGE: Final = "agent-comms-opencode"
_CONFIG = re.compile(r"/\*AGENT_COMMS_CONFIG\*/.*?/\*END_AGENT_COMMS_CONFIG\*/", re.DOTALL)
_CLI_TIMEOUT: Final = 120.0


def config_dir(home: Path) -> Path:
    """OpenCode's global configuration directory for the user whose home is ``home``."""
    return home / ".config" / "opencode"


def plugin_path(home: Path) -> Path:
    """Where setup writes the plugin: OpenCode's global plugin directory, which it loads at startup."""
    return config_dir(home) / "plugins" / "agent-comms.js"


def plugin_source() -> str:
    """The plugin's JavaScript, with this installation's bridge command and the tool's schema filled in."""
    from agent_comms.bridges.jsonl import tool_schema
    from agent_comms.configure import bridge_command

    template = resources.files(__name__).joinpath("plugin.js").read_text(encoding="utf-8")
    config = json.dumps({"command": bridge_command(HARNESS), "tool": tool_schema()})
    return _CONFIG.sub(lambda _: f"/*AGENT_COMMS_CONFIG*/ {config} /*END_AGENT_COMMS_CONFIG*/", template, count=1)


def detect(home: Path) -> Detection:
    """OpenCode is installed if ``opencode --version`` answers (run with ``HOME`` set to ``home``)."""
    import shutil

    from agent_comms.configure import run_harness_cli

    program = shutil.which("opencode") or "opencode"
    try:
        result = run_harness_cli([program, "--version"], home, timeout=_CLI_TIMEOUT)
    except FileNotFoundError:
        return Detection(False, "opencode not found on PATH (npm install -g opencode-ai)", plugin_path(home))
    except OSError as exc:
        return Detection(False, f"opencode could not be run: {exc}", plugin_path(home))
    version = (result.stdout or result.stderr).strip().splitlines()
    if result.returncode != 0 or not version:
        return Detection(False, f"opencode --version failed (status {result.returncode})", plugin_path(home))
    return Detection(True, f"opencode {version[-1]}", plugin_path(home))


def configure(home: Path, dry_run: bool) -> list[str]:
    """Write the plugin into OpenCode's plugin directory; nothing changes when it is already there and current."""
    from agent_comms.configure import write_config
    from agent_comms_opencode.helper import install_helper

    changes: list[str] = []
    path = plugin_path(home)
    if write_config(path, plugin_source(), dry_run=dry_run, mode=0o644):
        changes.append(f"wrote the agent-comms plugin {path}")
    version = _opencode_version(home)
    if version is not None:
        changes += install_helper(home, config_dir(home), version, dry_run)
    return changes


def _opencode_version(home: Path) -> str | None:
    """OpenCode's version (``opencode --version``), which the helper it installs for plugins matches."""
    detected = detect(home)
    if not detected.installed:
        return None
    version = detected.detail.removeprefix("opencode ").strip()
    return version if re.fullmatch(r"[0-9][0-9A-Za-z.+-]*", version) else None


def status(home: Path) -> str:
    """One line: whether the plugin is in place, and current."""
    path = plugin_path(home)
    if not path.exists():
        return "not configured"
    from agent_comms_opencode.helper import HELPER, installed_version

    current = path.read_text(encoding="utf-8") == plugin_source()
    line = f"configured: plugin {path}" + ("" if current else " (outdated: run agent-comms setup opencode)")
    installed = installed_version(config_dir(home))
    version = _opencode_version(home)
    if installed is None:
        line += (
            f"; {HELPER} not installed in {config_dir(home)}: OpenCode downloads it from the npm registry when it "
            "starts (offline, the agent_comms tool is missing); agent-comms setup opencode installs it"
        )
    elif version is not None and installed != version:
        line += f"; {HELPER} {installed} installed, OpenCode {version} wants {version} (run agent-comms setup opencode)"
    else:
        line += f"; {HELPER} {installed} installed (works offline)"
    return line


def remove(home: Path, dry_run: bool) -> list[str]:
    """Delete the plugin (backups of earlier versions stay); nothing to do when it is not there."""
    path = plugin_path(home)
    if not path.exists():
        return []
    if not dry_run:
        path.unlink()
    return [f"deleted the agent-comms plugin {path}"]


#: The ``opencode`` harness, bridged by an OpenCode plugin that relays the tool and pushes events into the session.
BRIDGE: Final = Bridge(
    name=HARNESS,
    description="OpenCode: a plugin relays the agent_comms tool and pushes messages into the session",
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
    """Register the ``opencode`` bridge: the JSON-lines bridge the plugin starts, reads acknowledged."""
    register(BRIDGE)
