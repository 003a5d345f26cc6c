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
    "plugin_path",
    "plugin_source",
]

HARNESS: Final = "opencode"
PACKAGE: Final = "agent-comms-opencode"
_CONFIG = re.compile(r"/\*AGENT_COMMS_CONFIG\*/.*?/\*END_AGENT_COMMS_CONFIG\*/", re.DOTALL)
_CLI_TIMEOUT: Final = 120.0


@hookimpl
def agent_comms_harness() -> HarnessInfo:
    """The ``opencode`` harness, bridged by an OpenCode plugin that pushes events."""
    return HarnessInfo(
        name=HARNESS,
        description="OpenCode: a plugin relays the agent_comms tool and pushes messages into the session",
        push=True,
        package=PACKAGE,
    )


@hookimpl
def agent_comms_serve(harness: str, options: BridgeOptions) -> Awaitable[int] | None:
    """The bridge the plugin starts: the JSON-lines bridge, agent of harness ``opencode``, reads acknowledged."""
    if harness != HARNESS:
        return None
    from agent_comms.bridges import jsonl

    extra = {**options.extra, "harness": HARNESS, "ack": "1"}
    return jsonl.serve(attrs.evolve(options, extra=extra))


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


@hookimpl
def agent_comms_detect(harness: str, home: Path) -> Detection | None:
    """OpenCode is installed if ``opencode --version`` answers (run with ``HOME`` set to ``home``)."""
    if harness != HARNESS:
        return None
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


@hookimpl
def agent_comms_configure(harness: str, home: Path, dry_run: bool) -> list[str] | None:
    """Write the plugin into OpenCode's plugin directory; nothing changes when it is already there and current."""
    if harness != HARNESS:
        return None
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
    detected = agent_comms_detect(HARNESS, home)
    if detected is None or not detected.installed:
        return None
    version = detected.detail.removeprefix("opencode ").strip()
    return version if re.fullmatch(r"[0-9][0-9A-Za-z.+-]*", version) else None


@hookimpl
def agent_comms_status(harness: str, home: Path) -> str | None:
    """One line: whether the plugin is in place, and current."""
    if harness != HARNESS:
        return None
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


@hookimpl
def agent_comms_remove(harness: str, home: Path, dry_run: bool) -> list[str] | None:
    """Delete the plugin (backups of earlier versions stay); nothing to do when it is not there."""
    if harness != HARNESS:
        return None
    path = plugin_path(home)
    if not path.exists():
        return []
    if not dry_run:
        path.unlink()
    return [f"deleted the agent-comms plugin {path}"]
