"""A minimal agent-comms bridge plugin: the ``echo-example`` harness.

Copy this package to bridge a new harness. A plugin registers one :class:`~agent_comms.hookspecs.Bridge` per harness
it serves, from its one hook, ``register_bridges``. The bridge says how events reach the model (``push_path``) and
gives the function that runs it (``serve``):

1. the tool hook (``serve``): how the harness's tool calls reach the ``agent_comms`` tool. Here: one JSON object of
   tool parameters per line on stdin, one JSON result per line on stdout;
2. the push path (``PushPath.RELAY``): while it serves, the bridge hands every event for its agent to :func:`push`
   through :func:`~agent_comms.plugins.relay_deliveries`. Here :func:`push` appends the event's line to
   :data:`shown` (and prints it to stderr), which stands in for the harness's "show this to the model" call.

The plugin is found through the entry point in ``pyproject.toml``; ``agent-comms bridge echo-example`` runs it.
"""

from __future__ import annotations

import json
import os
import sys
from typing import Final

import trio

from agent_comms import BridgeOptions, hookimpl
from agent_comms.agent import Agent, open_agent
from agent_comms.events import DeliveryEvent, format_delivery_event
from agent_comms.hookspecs import Bridge, PushPath, Register
from agent_comms.plugins import relay_deliveries

HARNESS = "echo-example"

#: Every event line this process has "shown to the model", oldest first.
shown: list[str] = []


async def push(event: DeliveryEvent) -> bool:
    """Show ``event`` to the model; ``True`` once it was shown (its sender then gets a "read" receipt)."""
    line = format_delivery_event(event)
    shown.append(line)
    print(f"📬 {line}", file=sys.stderr)
    await trio.lowlevel.checkpoint()
    return True


async def serve(options: BridgeOptions) -> int:
    """Run the bridge until the harness closes its stdin; the exit status."""
    stdin = trio.lowlevel.FdStream(os.dup(0))  # a pipe from the harness
    stdout = trio.lowlevel.FdStream(os.dup(1))
    async with (
        stdin,
        stdout,
        open_agent(HARNESS, options.name, cwd=options.cwd, pid=options.harness_pid) as agent,
        trio.open_nursery() as nursery,
    ):
        nursery.start_soon(relay_deliveries, push, agent)  # events -> push() above
        buffer = b""
        while chunk := await stdin.receive_some():
            buffer += chunk
            *lines, buffer = buffer.split(b"\n")
            for line in lines:
                if line.strip():
                    await stdout.send_all(await _answer(agent, line))
        nursery.cancel_scope.cancel()  # end of input: the harness is done with us
    return 0


async def _answer(agent: Agent, line: bytes) -> bytes:
    """Run the tool call on one line; its result as a line of JSON."""
    try:
        params = json.loads(line)
    except ValueError:
        params = None
    if isinstance(params, dict):
        result = await agent.call(params)
        reply = {"text": result.text, "is_error": result.is_error}
    else:
        reply = {"text": "Error: each line must be a JSON object of tool parameters (INVALID_PARAMS)", "is_error": True}
    return json.dumps(reply).encode() + b"\n"


#: The one harness this plugin bridges.
BRIDGE: Final = Bridge(
    name=HARNESS,
    description="example: tool calls as JSON lines on stdin, events shown on stderr",
    package="agent-comms-echo-example",
    push_path=PushPath.RELAY,
    serve=serve,
)


@hookimpl
def register_bridges(register: Register) -> None:
    """The plugin's one hook: register its bridge (a plugin serving several harnesses calls it once for each)."""
    register(BRIDGE)
