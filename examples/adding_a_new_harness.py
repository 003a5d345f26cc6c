"""Adding a new harness: the original agent-comms README's example, translated to Python line for line.

A bridge is two things:

1. a tool, so the model can call ``agent_comms({"action": "send", ...})``;
2. a push mechanism, so incoming delivery events reach the model's context.

The core provides the shared pieces (``MeshStore``, ``CommsTool``, ``build_action``, ``ensure_registered``,
``format_delivery_event``), so a bridge only wires those two things to its harness. This script runs the wiring on
an in-memory mesh (``agent_comms.testing``: no sockets, nothing to clean up), with a second agent to talk to, and
prints what the new harness would have shown its model. Run it: ``python examples/adding_a_new_harness.py``.

A real bridge gets its node from ``agent_comms.mesh.node.open_node`` and waits for ``await node.wait_synced()``
before it registers or says it is ready (or uses ``agent_comms.open_agent``, which does that and all of steps 1
and 2) and is packaged as a plugin: see ``examples/minimal-bridge`` and ``docs/plugins.md``.
"""

from __future__ import annotations

import os
import sys

import trio

from agent_comms import CommsTool, DeliveryEvent, MeshStore, build_action, ensure_registered, format_delivery_event
from agent_comms.identity import base_id
from agent_comms.testing import open_in_memory_mesh


class YourHarness:
    """Stands in for the harness: ``push`` is however it puts text in front of its model."""

    def __init__(self) -> None:
        self.shown: list[str] = []

    def push(self, text: str) -> None:
        self.shown.append(text)
        print(f"  my-harness shows its model: {text}")


async def run(your_harness: YourHarness) -> None:
    async with open_in_memory_mesh() as mesh:
        reviewer = await mesh.agent("other-harness", name="reviewer")  # someone to talk to
        node, _ = await mesh.node()  # a real bridge: `async with open_node(key, port=...) as node:`

        store = MeshStore(node)
        tool = CommsTool(
            store, agent_id=base_id("my-harness", os.getcwd()), harness="my-harness", cwd=os.getcwd(), pid=os.getpid()
        )

        # 1. Initialise mesh and register identity
        await mesh.settle()  # the new peer has met the mesh
        ensure_registered(tool, "my-agent")
        agent_id = tool.agent_id
        print(f"registered {store.label(agent_id)}")

        # 2. Wire delivery callback for real-time push
        def on_delivery(event: DeliveryEvent) -> None:
            line = format_delivery_event(event)
            your_harness.push(f"📬 {line}")

        store.add_delivery_callback(on_delivery)

        # 3. Wire tool into your harness
        params_from_tool_call = {"action": "dm", "target": "reviewer", "content": "Batch 3 done; can you review?"}
        action = build_action(params_from_tool_call)  # typed and checked (raises CommsError naming a bad field)
        result = tool.call(params_from_tool_call)  # runs build_action itself; errors come back as results
        print(f"{type(action).__name__} -> {result.text}")

        # The other agent reads the DM and answers; the answer reaches my-harness through the callback.
        await mesh.settle()
        for event in reviewer.drain():
            print(f"reviewer's bridge shows its model: {format_delivery_event(event)}")
        await reviewer.call({"action": "dm", "target": "my-agent", "content": "On it."})
        await mesh.settle()


def main() -> int:
    """Run the example; 0 when my-harness was shown the reply."""
    harness = YourHarness()
    trio.run(run, harness)
    return 0 if any("On it." in line for line in harness.shown) else 1


if __name__ == "__main__":
    sys.exit(main())
