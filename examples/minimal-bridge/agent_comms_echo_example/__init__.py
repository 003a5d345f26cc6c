"""A minimal agent-comms bridge plugin: the ``echo-example`` harness.

Copy this package to bridge a new harness. A bridge is two things, each a hook:

1. the tool hook (``agent_comms_serve``): how the harness's tool calls reach the ``agent_comms`` tool. Here: one
   JSON object of tool parameters per line on stdin, one JSON result per line on stdout;
2. the push hook (``agent_comms_push``): how a delivery reaches the model. Here: the event's line is appended to
   :data:`shown` (and printed to stderr), which stands in for the harness's "show this to the model" call.

The plugin is found through the entry point in ``pyproject.toml``; ``agent-comms bridge echo-example`` runs it.
"""

from __future__ import annotations

import json
import os
import sys
from collections.abc import Awaitable

import trio

from agent_comms import BridgeOptions, HarnessInfo, hookimpl
from agent_comms.agent import Agent, open_agent
from agent_comms.events import DeliveryEvent, format_delivery_event
from agent_comms.plugins import get_plugin_manager, relay_deliveries

HARNESS = "echo-example"

#: Every event line this process has "shown to the model", oldest first.
shown: list[str] = []


@hookimpl
def agent_comms_harness() -> HarnessInfo:
    """The one harness this plugin bridges."""
    return HarnessInfo(
        name=HARNESS,
        description="example: tool calls as JSON lines on stdin, events shown on stderr",
        push=True,
        package="agent-comms-echo-example",
    )


@hookimpl
def agent_comms_push(harness: str, agent: Agent, event: DeliveryEvent) -> Awaitable[bool] | None:
    """Show ``event`` to the model of ``agent``; ``None`` for other harnesses (another plugin's business)."""
    if harness != HARNESS:
        return None
    return _show(event)


async def _show(event: DeliveryEvent) -> bool:
    line = format_delivery_event(event)
    shown.append(line)
    print(f"📬 {line}", file=sys.stderr)
    await trio.lowlevel.checkpoint()
    return True  # shown: the caller marks the event read and its sender gets a "read" receipt


@hookimpl
def agent_comms_serve(harness: str, options: BridgeOptions) -> Awaitable[int] | None:
    """Run the bridge (a coroutine for ``trio.run``); ``None`` for other harnesses."""
    if harness != HARNESS:
        return None
    return _serve(options)


async def _serve(options: BridgeOptions) -> int:
    pm = options.plugin_manager or get_plugin_manager()
    stdin = trio.lowlevel.FdStream(os.dup(0))  # a pipe from the harness
    stdout = trio.lowlevel.FdStream(os.dup(1))
    async with (
        stdin,
        stdout,
        open_agent(HARNESS, options.name, cwd=options.cwd, pid=options.harness_pid) as agent,
        trio.open_nursery() as nursery,
    ):
        nursery.start_soon(relay_deliveries, pm, HARNESS, agent)  # events -> the push hook above
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
