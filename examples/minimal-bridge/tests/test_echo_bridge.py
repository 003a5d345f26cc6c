"""Testing a bridge plugin without sockets or processes: ``agent_comms.testing`` runs a whole mesh in memory.

The plugin manager is built the way ``agent-comms bridge`` builds it, loading this package through its entry
point, so these tests also check that the package is installed and registered correctly.
"""

from __future__ import annotations

from pathlib import Path

import agent_comms_echo_example as echo
import pluggy
import pytest
import trio

from agent_comms.hookspecs import BridgeOptions, HarnessInfo
from agent_comms.plugins import get_plugin_manager, list_plugins, relay_deliveries
from agent_comms.testing import open_in_memory_mesh


@pytest.fixture
def pm() -> pluggy.PluginManager:
    echo.shown.clear()
    return get_plugin_manager(load="echo")


def test_the_entry_point_registers_the_plugin(pm: pluggy.PluginManager) -> None:
    assert pm.get_plugin("echo") is echo
    [info] = [info for info in list_plugins(pm) if info.name == "echo"]
    assert (info.distribution, info.harness, info.builtin) == ("agent-comms-echo-example", "echo-example", False)
    assert info.hooks == ("agent_comms_harness", "agent_comms_push", "agent_comms_serve")
    assert echo.agent_comms_harness() in pm.hook.agent_comms_harness()
    assert echo.agent_comms_harness() == HarnessInfo(
        name="echo-example",
        description="example: tool calls as JSON lines on stdin, events shown on stderr",
        push=True,
        package="agent-comms-echo-example",
    )


def test_hooks_leave_other_harnesses_alone(pm: pluggy.PluginManager) -> None:
    options = BridgeOptions(name=None, cwd="/tmp", harness_pid=None)
    assert echo.agent_comms_serve(harness="codex", options=options) is None
    assert pm.hook.agent_comms_detect(harness="echo-example", home=Path("/tmp")) is None  # no setup hooks here


async def test_push_hook_shows_a_dm_and_the_sender_gets_a_read_receipt(pm: pluggy.PluginManager) -> None:
    async with open_in_memory_mesh() as mesh:
        alice = await mesh.agent("echo-example", name="alice")
        bob = await mesh.agent("other-harness", name="bob")
        with trio.fail_after(10):
            async with trio.open_nursery() as nursery:
                # What a bridge's serve coroutine runs: every delivery for alice goes through the push hook.
                nursery.start_soon(relay_deliveries, pm, "echo-example", alice)
                sent = await bob.call({"action": "dm", "target": "alice", "content": "ready for review?"})
                assert not sent.is_error, sent.text
                message_id = sent.data["message_id"]
                async for event in bob.deliveries():
                    if event.type == "delivery_status" and event.status == "read":
                        break
                nursery.cancel_scope.cancel()
    assert event.message_id == message_id
    assert echo.shown == [f"[DM from bob ({bob.id})] ready for review?  [id {message_id}]"]


async def test_push_hook_called_directly_returns_true(pm: pluggy.PluginManager) -> None:
    async with open_in_memory_mesh() as mesh:
        alice = await mesh.agent("echo-example", name="alice")
        bob = await mesh.agent("other-harness", name="bob")
        await bob.call({"action": "dm", "target": "alice", "content": "hi"})
        await mesh.settle()
        [event] = alice.drain()
        push = pm.hook.agent_comms_push(harness="echo-example", agent=alice, event=event)
        assert push is not None
        assert await push is True
        assert pm.hook.agent_comms_push(harness="some-other-harness", agent=alice, event=event) is None
    assert echo.shown == [f"[DM from bob ({bob.id})] hi  [id {event.message_id}]"]
