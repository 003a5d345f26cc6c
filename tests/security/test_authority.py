"""Authority across peers: an admitted but misbehaving peer (it has the real mesh key) sends hand-crafted
operations, and every honest peer rejects what the rules forbid.

Three honest peers on real TCP in the test process host alice (owner of the public room #lobby and the private
room #inner), bob and carol, through the real tool. The misbehaving peer ("mallory's peer") completes the real
handshake with each of them and hosts an agent of its own, mallory, a member of #lobby. It then sends, on its
links, operations acting as agents it does not host, room changes its agent may not make, receipts for others and
destroys of rooms it does not own, live (``Ops``) and as anti-entropy (``SyncOps``). Afterwards the visible state on
every honest peer is what the rules say, and their replicas agree.

Not covered, by design: an admitted peer can claim an agent id (a bridge restarting in the same slot does exactly
that), and anti-entropy relays operations of other origins, so a peer holding the key could forge relayed
operations in another peer's name. The mesh key is the trust boundary (docs/security.md).
"""

from __future__ import annotations

import secrets
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import attrs
import trio
from tcpmesh import FAST, Attacker, admitted, free_port

from agent_comms.mesh.network import TcpNetwork
from agent_comms.mesh.node import MeshNode, open_node
from agent_comms.protocol.ops import (
    AgentSuspect,
    AgentUpsert,
    Body,
    DirectMessage,
    Mark,
    Membership,
    Op,
    Receipt,
    RoomCreate,
    RoomMessage,
    dm_conversation,
    op_id,
    op_key,
)
from agent_comms.protocol.peer import PeerConfig
from agent_comms.protocol.wire import Frame, Ops, SyncOps
from agent_comms.store import MeshStore
from agent_comms.tool import CommsTool

MALLORY_PEER = "6d616c6c6f727921"


@attrs.define
class Honest:
    node: MeshNode
    tool: CommsTool

    @property
    def state(self):  # type: ignore[no-untyped-def]
        return self.node.peer.replica.state

    def ok(self, **params: object) -> str:
        result = self.tool.call(params)
        assert not result.is_error, result.text
        return result.text


@attrs.define
class World:
    key: bytes
    peers: dict[str, Honest]
    links: dict[str, Attacker] = attrs.field(factory=dict)
    seq: int = 0
    inc: int = 0

    def stamp(self) -> int:
        return int(time.time() * 1000) << 16

    def op(self, body: Body) -> Op:
        self.seq += 1
        return Op(MALLORY_PEER, self.seq, self.stamp() + self.seq, body)

    async def to_all(self, *frames: Frame) -> None:
        for name, attacker in list(self.links.items()):
            try:
                await attacker.send(*frames)
            except (trio.BrokenResourceError, trio.ClosedResourceError):
                del self.links[name]

    async def settle(self) -> None:
        """Every honest replica equal (the misbehaving peer's operations included where they were stored)."""
        nodes = [p.node for p in self.peers.values()]
        with trio.fail_after(10):
            while len({n.peer.replica.state.digest() for n in nodes}) > 1:  # noqa: ASYNC110
                await trio.sleep(0.02)
        await trio.sleep(0.2)  # and anything still in flight from mallory's peer has landed

    def room(self, who: str, name: str):  # type: ignore[no-untyped-def]
        view = self.peers[who].state.room(name)
        assert view is not None, f"{who} does not see #{name}"
        return view


@asynccontextmanager
async def world() -> AsyncIterator[World]:
    port = free_port()
    key = secrets.token_bytes(32)
    config = PeerConfig(coordinator_port=port, **FAST)  # type: ignore[arg-type]
    network = TcpNetwork()
    async with (
        open_node(key, port=port, network=network, config=config, probe_processes=False) as a,
        open_node(key, port=port, network=network, config=config, probe_processes=False) as b,
        open_node(key, port=port, network=network, config=config, probe_processes=False) as c,
    ):
        nodes = {"alice": a, "bob": b, "carol": c}
        with trio.fail_after(10):
            for node in nodes.values():
                await node.wait_for(lambda n=node: len(n.peer.data_links) == 2)  # type: ignore[misc]
        peers = {
            name: Honest(node, CommsTool(MeshStore(node), agent_id=name, harness="test", cwd="/w", pid=0))
            for name, node in nodes.items()
        }
        w = World(key, peers)
        for name, peer in peers.items():
            peer.ok(action="register", name=name)
        peers["alice"].ok(action="create_room", room="lobby")
        peers["alice"].ok(action="create_room", room="inner", type="private")
        await w.settle()
        peers["alice"].ok(action="invite", room="inner", agent="bob")
        for name in ("bob", "carol"):
            peers[name].ok(action="join_room", room="lobby")
        await w.settle()
        peers["bob"].ok(action="join_room", room="inner")
        peers["alice"].ok(action="dm", target="bob", content="for bob only")
        await w.settle()
        # Mallory's peer: the real handshake with every honest peer, then its own agent, a member of #lobby.
        for name, peer in peers.items():
            w.links[name] = await admitted(peer.node.peer.info.data_port, key, peer_id=MALLORY_PEER)
        w.inc = w.stamp()
        lobby = peers["alice"].state.room_id("lobby")
        await w.to_all(
            Ops(
                (
                    w.op(AgentUpsert("mallory", MALLORY_PEER, w.inc, 0, "mallory", "evil", "/m", 0, 0.0)),
                    w.op(Membership(lobby, "join", "mallory", w.inc)),
                )
            )
        )
        await w.settle()
        for name in peers:
            assert "mallory" in w.room(name, "lobby").members
        yield w


def _claim(w: World, agent: str) -> int:
    return w.peers["alice"].state.agents[agent].body.incarnation


async def test_operations_a_misbehaving_peer_may_not_make_are_rejected_by_every_peer() -> None:
    async with world() as w:
        alice, bob, carol = (w.peers[n] for n in ("alice", "bob", "carol"))
        lobby, inner = alice.state.room_id("lobby"), alice.state.room_id("inner")
        assert lobby is not None
        assert inner is not None
        bob_inc, alice_inc = _claim(w, "bob"), _claim(w, "alice")
        dm = next(op for op in alice.state.messages.values() if isinstance(op.body, DirectMessage))
        before = {name: p.state.agents["bob"].body for name, p in w.peers.items()}
        forged = [
            # Acting as agents it does not host (their claims are not this peer's).
            AgentUpsert("bob", bob.node.peer_id, bob_inc, 99, "bob", "test", "/w", 0, 0.0, status="busy"),
            RoomMessage(lobby, "bob", bob_inc, "FORGED as bob"),
            RoomMessage(lobby, "alice", alice_inc, "FORGED as alice"),
            DirectMessage("alice", alice_inc, "carol", "FORGED dm as alice"),
            Membership(lobby, "kick", "alice", alice_inc, "carol"),
            Membership(inner, "invite", "alice", alice_inc, "mallory"),
            Membership(lobby, "destroy", "alice", alice_inc),
            Receipt(op_id(dm), dm_conversation("alice", "bob"), op_key(dm), "bob", bob_inc, "read"),
            Mark(dm_conversation("alice", "bob"), "bob", bob_inc, "read", {dm.origin: (1, dm.body.n)}),  # type: ignore[union-attr]
            # Room changes its own agent may not make.
            Membership(lobby, "kick", "mallory", w.inc, "bob"),
            Membership(lobby, "invite", "mallory", w.inc, "mallory"),
            Membership(lobby, "destroy", "mallory", w.inc),
            Membership(inner, "join", "mallory", w.inc),
            Membership(inner, "destroy", "mallory", w.inc),
            RoomMessage(inner, "mallory", w.inc, "FORGED into a room it is not in"),
            Receipt(op_id(dm), dm_conversation("alice", "bob"), op_key(dm), "mallory", w.inc, "read"),
            Receipt(op_id(dm), dm_conversation("alice", "mallory"), op_key(dm), "mallory", w.inc, "read"),
            Receipt(op_id(dm), "dm:not-a-key", op_key(dm), "mallory", w.inc, "read"),
            Mark(dm_conversation("alice", "bob"), "mallory", w.inc, "read", {dm.origin: (1, 1000)}),
            Mark(dm_conversation("alice", "mallory"), "mallory", w.inc, "read", {dm.origin: (1, 1000)}),
            Mark("dm:not-a-key", "mallory", w.inc, "read", {dm.origin: (1, 1)}),
            Mark(dm_conversation("alice", "bob"), "bob", w.inc, "read", {dm.origin: (9, 1, 0, 4)}),  # malformed
            # A room id that is not the id of its creating operation (taking over #lobby's id).
            RoomCreate(lobby, "lobby", "secret", "mine", "mallory", w.inc),
        ]
        ops = [w.op(body) for body in forged]
        half = len(ops) // 2
        await w.to_all(Ops(tuple(ops[:half])))  # live
        await w.to_all(SyncOps(tuple(ops[half:])))  # as anti-entropy
        await w.settle()
        for name, peer in w.peers.items():
            state = peer.state
            view = w.room(name, "lobby")
            assert view.owner == "alice", name
            assert set(view.members) == {"alice", "bob", "carol", "mallory"}, name
            assert view.room_type == "public"
            assert "mallory" not in view.invited
            inner_view = w.room(name, "inner")
            assert set(inner_view.members) == {"alice", "bob"}, name
            assert "mallory" not in inner_view.invited
            visible = [op.body.content for op in state.messages.values() if state.message_visible(op)]  # type: ignore[union-attr]
            assert not [text for text in visible if "FORGED" in text], (name, visible)
            assert state.receipt_status(op_id(dm), "bob") != "read", name  # bob's bridge said delivered, not read
            assert state.receipt_status(op_id(dm), "mallory") is None, name
            assert state.agents["bob"].body == before[name], name
            assert state.agents["bob"].body.peer_id == bob.node.peer_id
        # What the agents see through the tool agrees.
        text = carol.ok(action="read_room", room="lobby")
        assert "FORGED" not in text
        assert "FORGED" not in bob.ok(action="read_room", room="inner")
        assert all(e.content != "FORGED dm as alice" for e in carol.tool.store.take("carol"))
        # The honest mesh still works, and mallory's own legitimate operations still count.
        alice.ok(action="send", target="lobby", content="still mine")
        await w.to_all(Ops((w.op(RoomMessage(lobby, "mallory", w.inc, "mallory, legitimately")),)))
        await w.settle()
        for peer in w.peers.values():
            assert "still mine" in peer.ok(action="read_room", room="lobby")
            assert "mallory, legitimately" in peer.ok(action="read_room", room="lobby")


async def test_acting_now_under_an_old_claim_of_an_agent_is_rejected_by_every_peer() -> None:
    """Claims older than the forgetting horizon count without being held (an agent that was forgotten and came
    back keeps what it did under them), but only for operations made before the agent's newest claim: the
    misbehaving peer acting as alice or bob now, under an incarnation older than every peer's horizon, changes
    nothing."""
    async with world() as w:
        alice = w.peers["alice"]
        lobby = alice.state.room_id("lobby")
        assert lobby is not None
        old = 1 << 16  # older than the horizon every peer moved to when it started
        assert all(old < p.state.horizon for p in w.peers.values())
        dm = next(op for op in alice.state.messages.values() if isinstance(op.body, DirectMessage))
        forged: list[Body] = [
            Membership(lobby, "kick", "alice", old, "carol"),
            DirectMessage("alice", old, "carol", "FORGED dm as alice"),
            Receipt(op_id(dm), dm_conversation("alice", "bob"), op_key(dm), "bob", old, "read"),
            Mark(dm_conversation("alice", "bob"), "bob", old, "read", {dm.origin: (1, 1000)}),
            Membership(lobby, "destroy", "alice", old),
        ]
        await w.to_all(Ops(tuple(w.op(body) for body in forged)))
        await w.settle()
        for name, peer in w.peers.items():
            state = peer.state
            view = w.room(name, "lobby")
            assert set(view.members) == {"alice", "bob", "carol", "mallory"}, name
            visible = [op.body.content for op in state.messages.values() if state.message_visible(op)]
            assert not [text for text in visible if "FORGED" in text], (name, visible)
            assert state.receipt_status(op_id(dm), "bob") != "read", name
        assert all(e.content != "FORGED dm as alice" for e in w.peers["carol"].tool.store.take("carol"))


async def test_a_live_operation_in_another_peers_name_closes_the_link_everywhere() -> None:
    async with world() as w:
        bob = w.peers["bob"]
        lobby = w.peers["alice"].state.room_id("lobby")
        spoof = Op(bob.node.peer_id, 10_000, w.stamp(), RoomMessage(lobby, "bob", _claim(w, "bob"), "FORGED"))
        for name in ("alice", "carol"):
            await w.links[name].send(Ops((spoof,)))
            assert await w.links[name].closed_within(3.0), f"{name} kept the link"
        await w.settle()
        for name in ("alice", "carol"):
            peer = w.peers[name]
            assert MALLORY_PEER not in peer.node.peer.data_links
            assert all("FORGED" not in getattr(op.body, "content", "") for op in peer.state.messages.values())


async def test_an_offline_verdict_from_any_peer_is_refuted_by_the_owner() -> None:
    """Any peer may say an agent is offline (that is how a dead host's agents go offline): the owner refutes it
    with a higher incarnation, so a false verdict does not stick."""
    async with world() as w:
        bob = w.peers["bob"]
        await w.to_all(Ops((w.op(AgentSuspect("bob", _claim(w, "bob"), bob.node.peer_id)),)))
        with trio.fail_after(5):
            for peer in w.peers.values():
                await peer.node.wait_for(
                    lambda p=peer: p.state.agents["bob"].online and p.state.agents["bob"].suspect is not None  # type: ignore[misc]
                )
        await w.settle()
        for peer in w.peers.values():
            assert peer.state.agents["bob"].online
            assert peer.state.agents["bob"].body.peer_id == bob.node.peer_id
