"""Testing a bridge plugin without sockets or processes: ``agent_comms.testing`` runs a whole mesh in memory.

The plugin manager is built the way ``agent-comms bridge`` builds it, loading this package through its entry
point, so these tests also check that the package is installed and registered correctly.
"""

from __future__ import annotations

import agent_comms_echo_example as echo
import pluggy
import pytest
import trio

from agent_comms.hookspecs import HarnessInfo, PushPath
from agent_comms.plugins import (
    PluginError,
    find_bridge,
    find_harness,
    get_plugin_manager,
    list_bridges,
    list_plugins,
    relay_deliveries,
)
from agent_comms.testing import open_in_memory_mesh


@pytest.fixture
def pm() -> pluggy.PluginManager:
    echo.shown.clear()
    return get_plugin_manager(load="echo")


def test_the_entry_point_registers_the_plugin(pm: pluggy.PluginManager) -> None:
    assert pm.get_plugin("echo") is echo
    [info] = [info for info in list_plugins(pm) if info.name == "echo"]
    assert (info.distribution, info.harness, info.builtin) == ("agent-comms-echo-example", "echo-example", False)
    assert (info.hooks, info.push) == (("serve",), ("relay",))
    assert echo.BRIDGE in list_bridges(pm)
    assert find_harness(pm, "echo-example") == HarnessInfo(
        name="echo-example",
        description="example: tool calls as JSON lines on stdin, events shown on stderr",
        push=True,
        package="agent-comms-echo-example",
    )


def test_the_registry_gives_the_bridge_for_its_harness_only(pm: pluggy.PluginManager) -> None:
    bridge = find_bridge(pm, "echo-example")
    assert bridge is echo.BRIDGE
    assert (bridge.serve, bridge.push_path) == (echo.serve, PushPath.RELAY)
    assert (bridge.detect, bridge.configure, bridge.status, bridge.remove) == (None, None, None, None)  # no setup
    with pytest.raises(PluginError, match="no installed plugin bridges the harness 'codex'"):
        find_bridge(pm, "codex")


async def test_push_hook_shows_a_dm_and_the_sender_gets_a_read_receipt(pm: pluggy.PluginManager) -> None:
    async with open_in_memory_mesh() as mesh:
        alice = await mesh.agent("echo-example", name="alice")
        bob = await mesh.agent("other-harness", name="bob")
        with trio.fail_after(10):
            async with trio.open_nursery() as nursery:
                # What the bridge's serve coroutine runs: every delivery for alice goes through push().
                nursery.start_soon(relay_deliveries, echo.push, alice)
                sent = await bob.call({"action": "dm", "target": "alice", "content": "ready for review?"})
                assert not sent.is_error, sent.text
                message_id = sent.data["message_id"]
                async for event in bob.deliveries():
                    if event.type == "delivery_status" and event.status == "read":
                        break
                nursery.cancel_scope.cancel()
    assert event.message_id == message_id
    assert echo.shown == [f"[DM from bob ({bob.id})] ready for review?  [id {message_id}]"]


@pytest.mark.usefixtures("pm")  # clears `shown`
async def test_push_called_directly_returns_true() -> None:
    async with open_in_memory_mesh() as mesh:
        alice = await mesh.agent("echo-example", name="alice")
        bob = await mesh.agent("other-harness", name="bob")
        await bob.call({"action": "dm", "target": "alice", "content": "hi"})
        await mesh.settle()
        [event] = alice.drain()
        assert await echo.push(event) is True
    assert echo.shown == [f"[DM from bob ({bob.id})] hi  [id {event.message_id}]"]
