"""The ``@opencode-ai/plugin`` helper the plugin imports, installed at setup so that OpenCode works offline after.

OpenCode installs the helper its plugins import into its configuration directory (``~/.config/opencode``:
``package.json`` naming ``@opencode-ai/plugin`` at OpenCode's own version, and ``node_modules``) the first time it
loads a plugin, from the npm registry. Offline, that install fails and OpenCode starts without the plugin: the
model has no ``agent_comms`` tool and nothing says why. So setup installs it beforehand with ``npm`` (the same
package, OpenCode's version, into the same folder; ``--prefer-offline`` takes it from npm's cache when it is
there); OpenCode then finds it in place and needs no network. Without ``npm`` setup says exactly what to run.
"""

from __future__ import annotations

import json
import shlex
import shutil
from pathlib import Path
from typing import Final

from agent_comms.configure import run_harness_cli

__all__ = ["HELPER", "helper_command", "install_helper", "installed_version"]

#: The npm package the plugin imports (``tool``, and the zod schema of the tool's arguments).
HELPER: Final = "@opencode-ai/plugin"
_NPM_TIMEOUT: Final = 300.0


def installed_version(config_dir: Path) -> str | None:
    """The version of the helper installed in OpenCode's configuration directory, if any."""
    try:
        data = json.loads((config_dir / "node_modules" / HELPER / "package.json").read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    version = data.get("version") if isinstance(data, dict) else None
    return version if isinstance(version, str) else None


def helper_command(config_dir: Path, version: str) -> list[str]:
    """The ``npm install`` that puts the helper where OpenCode looks for it."""
    return [
        "npm", "install", "--prefix", str(config_dir), "--save-exact", "--prefer-offline", "--no-audit", "--no-fund",
        f"{HELPER}@{version}",
    ]  # fmt: skip


def install_helper(home: Path, config_dir: Path, version: str, dry_run: bool) -> list[str]:
    """Install the helper at ``version`` (OpenCode's) unless it is there; one line per change, or what to do."""
    if installed_version(config_dir) == version:
        return []
    command = helper_command(config_dir, version)
    npm = shutil.which("npm")
    if npm is None:
        return [
            f"not done: {HELPER}@{version} is not installed in {config_dir}, and npm is not on PATH. OpenCode "
            "downloads it from the npm registry when it starts (network needed once; offline the agent_comms tool "
            f"is missing). To install it now: {shlex.join(command)}"
        ]
    line = f"install {HELPER}@{version} into {config_dir} (so OpenCode needs no network for it): {shlex.join(command)}"
    if dry_run:
        return [line]
    result = run_harness_cli([npm, *command[1:]], home, timeout=_NPM_TIMEOUT)
    if result.returncode != 0 or installed_version(config_dir) != version:
        output = " ".join((result.stderr.strip() or result.stdout.strip()).splitlines()[-3:])
        return [
            f"not done: `{shlex.join(command)}` failed ({result.returncode}: {output}); OpenCode downloads "
            f"{HELPER} from the npm registry when it starts (network needed once)"
        ]
    return [line]
