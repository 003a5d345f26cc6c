"""agent-comms for OpenAI Codex: the ``agent_comms`` tool as Codex's MCP server, hooks that tell the model when
messages wait, and setup of both.

* ``agent-comms bridge codex`` (or ``agent-comms-codex``): the MCP server Codex starts (``[mcp_servers.agent-comms]``
  in ``~/.codex/config.toml``). It is the server of :mod:`agent_comms_mcp` with harness ``codex``; events are drained
  into every tool result (Codex cannot be pushed a message), and an inbox file lists what waits between calls.
* ``agent-comms-codex hook EVENT``: the Codex hooks (``~/.codex/hooks.json``) that read that inbox file and add a
  notice to the model's context (:mod:`agent_comms_codex.hooks`).
* ``agent-comms setup codex`` / ``status`` / ``remove codex``: :mod:`agent_comms_codex.config`.

Modules: :mod:`~agent_comms_codex.plugin` (the pluggy hooks), :mod:`~agent_comms_codex.bridge` (the server),
:mod:`~agent_comms_codex.inbox`, :mod:`~agent_comms_codex.hooks`, :mod:`~agent_comms_codex.config`. Importing this
package is cheap (no Trio, no SDK): the hooks start as a fresh process on every tool call.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Sequence
from typing import Final

__all__ = ["HARNESS", "main"]

#: The harness name: ``agent-comms bridge codex``, and the harness of the agent's identity.
HARNESS: Final = "codex"

_USAGE = """\
usage: agent-comms-codex [--name NAME] [--harness-pid PID] [--option KEY=VALUE ...]
       agent-comms-codex hook {SessionStart,UserPromptSubmit,PostToolUse,Stop}

Without a command: run the agent-comms MCP server for Codex on stdin/stdout (what Codex starts; the same as
`agent-comms bridge codex`). It joins the agent-comms mesh as an agent of harness codex and serves one tool,
agent_comms; messages for the agent come appended to its results.

  --name NAME          the agent name to register (default: the name it had last time, else codex-<directory>)
  --harness-pid PID    the process whose exit takes the agent offline (default: the parent process, Codex)
  --option KEY=VALUE   max_events=N: at most N events appended to one result (default 50)

hook EVENT: a Codex hook (reads Codex's hook JSON on stdin, writes its answer on stdout); `agent-comms setup codex`
installs them in ~/.codex/hooks.json.
"""


def main(argv: Sequence[str] | None = None) -> int:
    """``agent-comms-codex``: the bridge, or ``hook EVENT``; the exit status."""
    args = list(sys.argv[1:] if argv is None else argv)
    if args[:1] == ["hook"]:
        from agent_comms_codex.hooks import main as hook_main

        return hook_main(args[1:])
    if args[:1] in (["-h"], ["--help"]):
        print(_USAGE, end="")
        return 0
    name: str | None = None
    harness_pid: int | None = None
    extra: dict[str, str] = {}
    while args:
        flag = args.pop(0)
        flag, _, inline = flag.partition("=") if flag.startswith("--") else (flag, "", "")
        if flag not in ("--name", "--harness-pid", "--option") or not (inline or args):
            print(f"agent-comms-codex: unexpected argument {flag!r}\n\n{_USAGE}", file=sys.stderr, end="")
            return 2
        value = inline or args.pop(0)
        if flag == "--name":
            name = value
        elif flag == "--harness-pid":
            if not value.isdigit():
                print(f"agent-comms-codex: --harness-pid takes a process id, not {value!r}", file=sys.stderr)
                return 2
            harness_pid = int(value)
        else:
            key, sep, item = value.partition("=")
            if not sep or not key:
                print(f"agent-comms-codex: --option takes KEY=VALUE, not {value!r}", file=sys.stderr)
                return 2
            extra[key] = item
    import trio

    from agent_comms.hookspecs import BridgeOptions
    from agent_comms_codex.bridge import serve

    options = BridgeOptions(name=name, cwd=os.getcwd(), harness_pid=harness_pid, extra=extra)
    status: int = trio.run(serve, options)
    return status
