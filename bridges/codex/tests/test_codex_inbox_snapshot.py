"""The inbox file lists every event waiting for the agent, those a result gave back included."""

from __future__ import annotations

import trio
from agent_comms_codex.bridge import inbox_snapshot
from agent_comms_mcp.server import DrainLedger

from agent_comms.testing import open_in_memory_mesh

DEADLINE = 30


async def test_events_a_failed_result_gave_back_are_listed_as_waiting() -> None:
    """A result that never reached Codex gives its events back: the hooks must still be told they wait."""
    with trio.fail_after(DEADLINE):
        async with open_in_memory_mesh() as mesh:
            codex = await mesh.agent("codex", name="codex")
            bob = await mesh.agent("other", name="bob")
            for text in ("one", "two"):
                assert not (await bob.call({"action": "dm", "target": "codex", "content": text})).is_error
            await mesh.settle()
            ledger = DrainLedger(codex)
            events, waiting = ledger.drain(1)
            assert ([e.content for e in events], waiting) == (["one"], 1)
            ledger.hold(7, events)
            # The result carrying "one" never reached Codex (its write was cut short as the bridge ended).
            ledger.unanswered(7)

            snapshot = inbox_snapshot(codex, harness_pid=None, cwd="/work")
            assert snapshot["waiting"] == 2
            assert [e["line"].rsplit("] ", 1)[-1].split("  [id")[0] for e in snapshot["events"]] == ["one", "two"]
            assert [e["id"] for e in snapshot["events"]] == [e.id for e in ledger.pending()]
