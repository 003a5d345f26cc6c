"""Whether Codex trusts our hooks, as Codex itself reports it.

Codex runs a hook from ``hooks.json`` only after the user trusted it once in ``/hooks`` (it records a hash of the
hook in ``config.toml``; a changed hook needs trusting again), and skips an untrusted hook silently. ``codex
app-server`` answers ``hooks/list`` with every hook it would load and its ``trustStatus`` (``trusted``,
``untrusted``, ``modified``...): :func:`hook_trust` asks it, over the app server's JSON-RPC lines on stdio, for
the user whose home is given. Nothing is written: setup never grants that trust for the user.
"""

from __future__ import annotations

import contextlib
import json
import subprocess
import threading
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Final

from agent_comms.configure import harness_env

__all__ = ["TRUST_TIMEOUT", "hook_trust", "list_hooks"]

#: How long to wait for ``codex app-server`` to answer (it starts in about a second).
TRUST_TIMEOUT: Final = 30.0

_REQUESTS: Final = (
    {
        "jsonrpc": "2.0",
        "id": 1,
        "method": "initialize",
        "params": {"clientInfo": {"name": "agent-comms", "version": "0"}},
    },
    {"jsonrpc": "2.0", "method": "initialized"},
    {"jsonrpc": "2.0", "id": 2, "method": "hooks/list", "params": {}},
)


def list_hooks(program: str, home: Path, env: Mapping[str, str]) -> list[dict[str, Any]]:
    """Every hook ``codex app-server`` reports (``key``, ``command``, ``currentHash``, ``trustStatus``...) for the
    user whose home is ``home``. Raises :class:`OSError` or :class:`ValueError` (with the reason) when Codex
    cannot tell."""
    process = subprocess.Popen(
        [program, "app-server"],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        env=harness_env(home, env),
        cwd=str(home),
        text=True,
    )
    timer = threading.Timer(TRUST_TIMEOUT, process.kill)  # a hung app server ends the read below
    timer.start()
    try:
        if process.stdin is None or process.stdout is None:  # pragma: no cover - both are pipes
            raise OSError("no pipe to codex app-server")
        for request in _REQUESTS:
            process.stdin.write(json.dumps(request) + "\n")
        process.stdin.flush()
        answer: Any = None
        for line in process.stdout:
            with contextlib.suppress(ValueError):
                message = json.loads(line)
                if isinstance(message, dict) and message.get("id") == 2:
                    answer = message
                    break
        if not isinstance(answer, dict) or "result" not in answer:
            raise ValueError(f"codex app-server did not list the hooks: {str(answer)[:200]}")
    finally:
        timer.cancel()
        process.kill()
        process.wait()
    groups = answer["result"].get("data") if isinstance(answer["result"], dict) else None
    return [
        hook
        for group in (groups if isinstance(groups, list) else [])
        for hook in (group.get("hooks") or [] if isinstance(group, dict) else [])
        if isinstance(hook, dict)
    ]


def hook_trust(program: str, home: Path, env: Mapping[str, str], commands: Mapping[str, str]) -> dict[str, str]:
    """The ``trustStatus`` Codex gives each of our hooks: event name (``Stop``...) -> status, for the hooks whose
    command is one of ``commands`` (event -> command); raises as :func:`list_hooks`."""
    wanted = {command: event for event, command in commands.items()}
    return {
        wanted[hook["command"]]: str(hook.get("trustStatus", "unknown"))
        for hook in list_hooks(program, home, env)
        if hook.get("command") in wanted
    }
