"""Progress markers through a real hub: a machine that lost everything catches up without being given again what
its agents read, and a stream made by an older hub (no roll-ups allowed) still carries markers."""

from __future__ import annotations

import logging

import pytest

from agent_comms.events import DeliveryEvent
from agent_comms.mesh.hub_client import aio, connect
from agent_comms.mesh.hub_config import OPS_SUBJECT_ROOT, STREAM, HubFiles
from agent_comms.protocol.ops import DirectMessage, RoomMessage, op_id
from agent_comms.store import MeshStore
from agent_comms.tool import CommsTool

from .conftest import HubWorld, eventually

#: Messages bob sends alice: more than one batch the gateway takes from the hub at once (256).
N = 300


@pytest.mark.parametrize("kind", ["dm", "room_message"])
async def test_messages_read_before_a_machine_lost_everything_are_not_queued_again_when_it_catches_up(
    world: HubWorld, monkeypatch: pytest.MonkeyPatch, kind: str
) -> None:
    """Bob (beta) sends alice (alpha) 300 DMs, or posts 300 messages in a room of his alice joined, which alice's
    bridge reads as they come. Then alpha's only process ends, so alpha's next gateway reads the hub's stream from
    its start. Alice's read markers were published as roll-ups, so each sits after every message it covers; the
    gateway takes them first, so not one of the messages is queued for alice again."""
    queued: list[DeliveryEvent] = []
    original = MeshStore._queue

    def recording(self: MeshStore, event: DeliveryEvent) -> None:
        if event.type == kind and event.to == "alice-id":
            queued.append(event)
        original(self, event)

    monkeypatch.setattr(MeshStore, "_queue", recording)
    target = "alice-id" if kind == "dm" else "den"
    a, b = world.machine("alpha"), world.machine("beta")
    async with b.agent("bob") as bob:
        async with a.agent("alice") as alice:
            await eventually(lambda: alice.store.online("bob-id") and bob.store.online("alice-id"), within=60)
            if kind == "room_message":
                assert not bob.call({"action": "create_room", "room": "den"}).is_error
                await eventually(lambda: alice.store.state.room_id("den") is not None, within=60)
                assert not alice.call({"action": "join_room", "room": "den"}).is_error
                await eventually(lambda: "alice-id" in bob.store.room("den", viewer="bob-id")[1].members, within=60)
            for n in range(N):
                result = bob.call({"action": "dm" if kind == "dm" else "send", "target": target, "content": f"m{n}"})
                assert not result.is_error, result.text
                if n % 20 == 19:  # alice's bridge shows what came, now and then
                    await eventually(lambda: bool(alice.store.pending("alice-id")), within=60)
                    alice.store.mark_read("alice-id", alice.store.take("alice-id"))
            await eventually(lambda: len(queued) >= N, within=120)
            alice.store.mark_read("alice-id", alice.store.take("alice-id"))
            sent = [
                op_id(op)
                for op in bob.store.state.stored_ops()
                if isinstance(op.body, DirectMessage | RoomMessage) and op.body.author == "bob-id"
            ]
            assert len(sent) == N
            await eventually(
                lambda: all(bob.store.state.receipt_status(m, "alice-id") == "read" for m in sent), within=120
            )
            gateway = alice.store.node.gateway
            assert gateway is not None
            await eventually(lambda: gateway.connected and not gateway.queue, within=60)
        assert len(queued) == N
        # Every process of alpha is gone; alice's bridge starts again, on a mesh that holds nothing.
        async with a.agent("alice") as alice:
            state = alice.store.state
            await eventually(lambda: all(m in state.messages for m in sent), within=120)
            assert all(state.receipt_status(m, "alice-id") == "read" for m in sent)
            again = queued[N:]
            assert again == [], f"{len(again)} of {N} messages alice had read were queued for her again"
            assert [e for e in alice.store.pending("alice-id") if e.type == kind] == []
            # and a message she has not read yet is queued as usual
            result = bob.call({"action": "dm" if kind == "dm" else "send", "target": target, "content": "new"})
            assert not result.is_error, result.text
            await eventually(
                lambda: [e.content for e in alice.store.pending("alice-id") if e.type == kind] == ["new"], within=60
            )


async def _refuse_rollups(world: HubWorld, *, recreate: bool) -> None:
    """Make the hub's stream refuse roll-ups (as the hub's admin): ``recreate``, as a hub of the previous version
    made it; otherwise changed in place, under a session that started while they were allowed."""
    from nats.js import api

    files = HubFiles(world.hub.home)
    settings = files.settings()
    nc = await connect(settings["url"], settings["admin_seed"], files.cert_path.read_text(), name="admin")
    try:
        js = nc.jetstream()
        config: api.StreamConfig = (await aio(js.stream_info, STREAM)).config
        config.allow_rollup_hdrs = False
        if recreate:
            await aio(js.delete_stream, STREAM)
            await aio(js.add_stream, config)
        else:
            await aio(js.update_stream, config)
        assert not (await aio(js.stream_info, STREAM)).config.allow_rollup_hdrs
    finally:
        await aio(nc.close)


async def _hub_subjects(world: HubWorld, subjects: str) -> dict[str, int]:
    """Messages the hub's stream holds per subject matching ``subjects`` (asked as the hub's admin)."""
    files = HubFiles(world.hub.home)
    settings = files.settings()
    nc = await connect(settings["url"], settings["admin_seed"], files.cert_path.read_text(), name="admin")
    try:
        info = await aio(nc.jetstream().stream_info, STREAM, subjects)
        return dict(info.state.subjects or {})
    finally:
        await aio(nc.close)


async def _alice_reads_bobs_dms(alice: CommsTool, bob: CommsTool, count: int) -> None:
    """Bob sends alice ``count`` DMs; alice's bridge reads each, and bob's machine learns it through the hub."""
    for n in range(count):
        result = bob.call({"action": "dm", "target": "alice-id", "content": f"m{n}"})
        assert not result.is_error, result.text
        sent: str = result.data["message_id"]
        await eventually(lambda s=sent: any(e.message_id == s for e in alice.store.pending("alice-id")), within=60)
        alice.store.mark_read("alice-id", alice.store.take("alice-id"))
        await eventually(lambda s=sent: bob.store.state.receipt_status(s, "alice-id") == "read", within=60)


@pytest.mark.parametrize("when", ["before the session", "during the session"])
async def test_markers_cross_a_stream_that_refuses_roll_ups(
    world: HubWorld, when: str, caplog: pytest.LogCaptureFixture
) -> None:
    """The machines were upgraded, the hub server not yet restarted: its stream (made by the previous version)
    refuses the roll-up header. The gateway publishes its markers without it (known from the stream's
    configuration when its session starts, or from the hub's refusal), so alice's reads still reach bob's machine
    through the hub, and what alpha publishes after a marker still goes out. The session does not end on it, and
    it is said once."""
    caplog.set_level(logging.INFO, logger="agent_comms.mesh.gateway")
    if when == "before the session":
        await _refuse_rollups(world, recreate=True)
    a, b = world.machine("alpha"), world.machine("beta")
    async with a.agent("alice") as alice, b.agent("bob") as bob:
        await eventually(lambda: alice.store.online("bob-id") and bob.store.online("alice-id"), within=60)
        if when == "during the session":
            await _alice_reads_bobs_dms(alice, bob, 1)  # as a roll-up
            await _refuse_rollups(world, recreate=False)
        await _alice_reads_bobs_dms(alice, bob, 3)
        gateway = alice.store.node.gateway
        assert gateway is not None
        await eventually(lambda: gateway.connected and not gateway.queue, within=60)
        marks = await _hub_subjects(world, f"{OPS_SUBJECT_ROOT}.alpha.mark.>")
        assert marks, "alice's markers reached the hub"
        assert max(marks.values()) > 1, marks  # published as plain messages: the older ones stay
        result = alice.call({"action": "dm", "target": "bob-id", "content": "after the markers"})
        assert not result.is_error, result.text
        await eventually(lambda: any(e.content == "after the markers" for e in bob.store.pending("bob-id")), within=60)
    said = [r.getMessage() for r in caplog.records if r.name == "agent_comms.mesh.gateway"]
    assert not [m for m in said if "session with the hub ended" in m], said

    def refusals(machine: str) -> int:
        return len([m for m in said if f"machine {machine}: the hub's stream does not allow roll-ups" in m])

    assert refusals("alpha") == 1, said
    assert refusals("beta") <= 1, said  # (beta may not have published a marker since)
