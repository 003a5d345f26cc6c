"""Hostile frames over real TCP into a running peer whose agent is the real stack (node, store, tool).

The sans-IO fuzz (``test_fuzz_frames``) feeds far more inputs; this one checks that what gets past the protocol
layer cannot break the runtime, the store's deliveries or the tool's formatting either: each attack is a new
admitted link that sends a few hostile frames (mutated valid frames reaching deep: operations on the victim's room
and agents, extreme clocks and numbers, introductions), after which the victim's agent uses its tool and the honest
peer's messages still arrive. Examples per test: ``AGENT_COMMS_FUZZ_EXAMPLES`` / 50 (at least 2), 25 attacks each.
"""

from __future__ import annotations

import trio
from hostile import COUNTER, FUZZ_EXAMPLES, corrupted, encode, mutated
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from tcpmesh import FAST, TcpMesh, admitted, tcp_mesh

from agent_comms.protocol.ops import (
    AgentSuspect,
    AgentUpsert,
    DirectMessage,
    Mark,
    Membership,
    Op,
    Receipt,
    RoomCreate,
    RoomMessage,
    dm_conversation,
    op_key,
)
from agent_comms.protocol.wire import Frame, Handover, Ops, PeerInfo, PeerList, SyncOps, SyncRequest

ATTACKS = 25


def _seeds(mesh: TcpMesh, me: str, seq: int) -> list[Frame]:
    state = mesh.a.peer.replica.state
    lobby = state.room_id("lobby")
    assert lobby is not None
    alice = state.agents["alice"].body
    bob = state.agents["bob"].body
    message = next(iter(state.messages.values()))
    hlc = int(trio.current_time() * 1000 + 1_700_000_000_000) << 16
    bodies = [
        AgentUpsert("mallory", me, hlc, 0, "mallory", "t", "/m", 0, 0.0),
        AgentSuspect("alice", alice.incarnation, alice.peer_id),
        RoomCreate(f"{me}-{seq}", "lobby2", "public", "", "mallory", hlc),
        Membership(lobby, "join", "mallory", hlc),
        Membership(lobby, "kick", "bob", bob.incarnation, "alice"),
        RoomMessage(lobby, "mallory", hlc, "hi"),
        RoomMessage(lobby, "bob", bob.incarnation, "as bob"),
        DirectMessage("mallory", hlc, "alice", "psst"),
        DirectMessage("bob", bob.incarnation, "alice", "as bob"),
        Receipt(f"{message.origin}-{message.seq}", lobby, op_key(message), "alice", alice.incarnation, "read"),
        Receipt("x-1", dm_conversation("alice", "mallory"), (hlc, me, 1), "mallory", hlc, "delivered"),
        Mark(lobby, "alice", alice.incarnation, "read", {message.origin: (1, 1_000_000)}),
        Mark(dm_conversation("alice", "mallory"), "mallory", hlc, "delivered", {me: (2, 1)}),
    ]
    ops = [Op(me, seq + i, hlc + i, body) for i, body in enumerate(bodies)]
    return [
        *(Ops((op,)) for op in ops),
        SyncOps(tuple(ops)),
        SyncRequest(b"", {}),
        PeerList((PeerInfo("d" * 16, 1, 0.0, 1),), me),
        Handover(me),
    ]


@settings(
    max_examples=max(2, FUZZ_EXAMPLES // 50),
    deadline=None,
    database=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)
@given(data=st.data())
async def test_hostile_frames_over_tcp_leave_the_peer_its_agent_and_the_honest_link_working(
    data: st.DataObject,
) -> None:
    async with tcp_mesh(**FAST) as mesh:
        for attack in range(ATTACKS):
            me = f"{attack:016x}"
            attacker = await admitted(mesh.a.peer.info.data_port, mesh.key, peer_id=me)
            seeds = _seeds(mesh, me, 1)
            frames = data.draw(st.lists(st.sampled_from(seeds), min_size=1, max_size=4))
            for frame in frames:
                how = data.draw(st.sampled_from(["valid", "mutated", "mutated", "corrupted"]))
                if how == "valid":
                    payload = encode(frame)
                elif how == "mutated":
                    payload = data.draw(mutated(frame))
                else:
                    payload = data.draw(corrupted(encode(frame)))
                try:
                    await attacker.stream.send_all(payload)
                except (trio.BrokenResourceError, trio.ClosedResourceError):
                    break
            COUNTER.add("runtime", len(frames))
            await trio.sleep(0.01)
            await attacker.stream.aclose()
            for params in (
                {"action": "read_room", "room": "lobby"},
                {"action": "list_agents"},
                {"action": "list_rooms"},
                {"action": "whoami"},
            ):
                result = mesh.alice.call(params)  # never raises; errors would be results
                assert not result.is_error or "(" in result.text
            mesh.alice.store.take("alice", limit=1000)  # the deliveries format without error
            if attack % 10 == 9:
                await mesh.healthy()
        await mesh.healthy()
        assert mesh.b.peer_id in mesh.a.peer.data_links
