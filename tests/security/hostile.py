"""Helpers of the security tests: a victim peer driven without I/O, admitted and unauthenticated links to it, and
Hypothesis strategies for hostile frames (valid frames mutated at any depth, and raw byte corruption).

The victim is the real :class:`~agent_comms.protocol.peer.Peer`; bytes reach it through the real
:class:`~agent_comms.protocol.framing.FrameDecoder`, and a decoder error closes the link as the Trio runtime does
(``link_closed``). Anything else that escapes is a crash. Every frame the victim asks to send is encoded as the
runtime would, so a frame the runtime could not write is caught too.
"""

from __future__ import annotations

import math
import os
import random
from typing import Any, Final

import attrs
import msgspec
from hypothesis import strategies as st

from agent_comms.protocol.commands import CloseLink, Command, Deliver, Dial, Send
from agent_comms.protocol.errors import RemoteProtocolError
from agent_comms.protocol.framing import FrameDecoder, encode_frames
from agent_comms.protocol.link import LinkHandshake
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
    op_id,
    op_key,
)
from agent_comms.protocol.peer import Peer, PeerConfig
from agent_comms.protocol.wire import (
    PROTOCOL_VERSION,
    CoordinatorAt,
    Frame,
    Goodbye,
    Handover,
    Heartbeat,
    Hello,
    Identify,
    Introduce,
    Ops,
    PeerInfo,
    PeerList,
    PeerStatus,
    Proof,
    Refuse,
    SyncOps,
    SyncRequest,
)

KEY: Final = bytes(range(32))
WRONG_KEY: Final = bytes(range(1, 33))
COORDINATOR_PORT: Final = 40000
VICTIM_PORT: Final = 40001
VICTIM_ADDR: Final = f"127.0.0.1:{VICTIM_PORT}"
#: epoch seconds at ``now == 0`` (so HLC stamps look like real ones)
WALL: Final = 1_760_000_000.0
#: frames that may legitimately cross an unauthenticated link
HANDSHAKE_FRAMES: Final = (Hello, Proof, Refuse)
#: the words a link-closing reason starts with when the other side broke the protocol
PROTOCOL_REASONS: Final = (
    "auth",
    "refused",
    "malformed",
    "oversized",
    "version",
    "authority",
    "unexpected",
    "role",
    "self",
    "clock",
)

#: Inputs a whole ``nox -s fuzz`` run feeds, split over the fuzz tests (``AGENT_COMMS_FUZZ_EXAMPLES`` is per test).
FUZZ_EXAMPLES: Final = int(os.environ.get("AGENT_COMMS_FUZZ_EXAMPLES", "150"))


@attrs.define
class Counter:
    """How many hostile inputs the fuzz tests fed (reported at the end of the session)."""

    inputs: dict[str, int] = attrs.field(factory=dict)

    def add(self, target: str, n: int = 1) -> None:
        self.inputs[target] = self.inputs.get(target, 0) + n


COUNTER: Final = Counter()


def encode(frame: Frame) -> bytes:
    return encode_frames([frame])


def check_commands(commands: list[Command]) -> None:
    """What the runtime does with commands that could fail: encode every frame to send."""
    for command in commands:
        if isinstance(command, Send):
            encode_frames(command.frames)


@attrs.define
class Link:
    """One link into the victim, from the far end's point of view."""

    link_id: int
    peer_id: str
    port: int
    decoder: FrameDecoder = attrs.field(factory=FrameDecoder)
    #: frames the victim sent on this link
    received: list[Frame] = attrs.field(factory=list)
    #: why the victim closed it (``None`` while open)
    closed: str | None = None
    seq: int = 0


@attrs.define
class Victim:
    """A peer that hosts ``alice`` and owns room ``lobby``, with links the test drives frame by frame."""

    peer: Peer
    now: float = 10.0
    links: dict[int, Link] = attrs.field(factory=dict)
    delivered: list[Any] = attrs.field(factory=list)
    #: the victim's own dial of the coordinator port (not yet connected)
    coordinator_dial: int = 0

    @classmethod
    def create(cls, seed: int = 1) -> Victim:
        peer = Peer.create(
            key=KEY,
            config=PeerConfig(coordinator_port=COORDINATOR_PORT),
            rng=random.Random(seed),
            pid=1000,
            started_at=WALL,
            data_port=VICTIM_PORT,
            wall_offset=WALL,
        )
        victim = cls(peer)
        victim.run(peer.start(victim.now))
        dials = victim.run(peer.coordinator_bind_failed(victim.now))  # someone else holds the coordinator port
        victim.coordinator_dial = next(c.link_id for c in dials if isinstance(c, Dial))
        victim.run(peer.host_agent(AgentUpsert("alice", "", 0, 0, "alice", "test", "/w", 0, 0.0), victim.now))
        room_id = peer.replica.next_op_id()
        victim.run(peer.submit(RoomCreate(room_id, "lobby", "public", "", "alice", victim.alice_inc), victim.now))
        victim.run(peer.submit(RoomMessage(room_id, "alice", victim.alice_inc, "hello"), victim.now))
        return victim

    @property
    def alice_inc(self) -> int:
        return self.peer.hosted["alice"].incarnation

    @property
    def lobby(self) -> str:
        room_id = self.peer.replica.state.room_id("lobby")
        assert room_id is not None
        return room_id

    def run(self, commands: list[Command]) -> list[Command]:
        check_commands(commands)
        for command in commands:
            if isinstance(command, Send):
                link = self.links.get(command.link_id)
                if link is not None:
                    link.received.extend(command.frames)
            elif isinstance(command, CloseLink):
                link = self.links.get(command.link_id)
                if link is not None and link.closed is None:
                    link.closed = command.reason
            elif isinstance(command, Deliver):
                self.delivered.extend(command.changes)
        return commands

    def accept(self, peer_id: str, port: int) -> Link:
        """An inbound connection (nothing said yet)."""
        link_id, commands = self.peer.accept(self.now, local_addr=VICTIM_ADDR, remote_addr=f"127.0.0.1:{port}")
        link = self.links[link_id] = Link(link_id, peer_id, port)
        self.run(commands)
        return link

    def dial_coordinator(self, port: int = 40500) -> Link:
        """The victim's dial of the coordinator port connects (to whatever holds it); the victim speaks first."""
        link_id = self.coordinator_dial
        link = self.links[link_id] = Link(link_id, "?", COORDINATOR_PORT)
        local, remote = f"127.0.0.1:{port}", f"127.0.0.1:{COORDINATOR_PORT}"
        self.run(self.peer.link_opened(link_id, self.now, local_addr=local, remote_addr=remote))
        return link

    def admit(self, peer_id: str, port: int, *, key: bytes = KEY) -> Link:
        """An inbound data link whose far end completes the handshake with ``key`` (the mesh key: admitted)."""
        link = self.accept(peer_id, port)
        handshake = LinkHandshake(
            dialer=True,
            key=key,
            nonce=random.Random(port).getrandbits(128).to_bytes(16, "big"),
            local_addr=f"127.0.0.1:{port}",
            remote_addr=VICTIM_ADDR,
            identity=PeerInfo(peer_id, 4000 + port % 1000, WALL - 5, port),
        )
        outbox = handshake.start()
        while outbox and link.closed is None:
            before = len(link.received)
            for frame in outbox:
                self.feed_frame(link, frame)
            outbox = []
            for frame in link.received[before:]:
                if not handshake.is_open:
                    outbox += handshake.receive(frame)
        return link

    def feed_frame(self, link: Link, frame: Frame) -> list[Command]:
        return self.feed(link, encode(frame))

    def feed(self, link: Link, data: bytes) -> list[Command]:
        """Bytes from the far end of ``link``, through the real decoder (a decoder error closes the link)."""
        if link.closed is not None:
            return []
        link.decoder.feed(data)
        commands: list[Command] = []
        try:
            for frame in link.decoder.frames():
                commands += self.run(self.peer.frame_received(link.link_id, frame, self.now))
                if link.closed is not None:
                    break
        except RemoteProtocolError as exc:
            reason = f"{exc.reason}: {exc}"
            link.closed = reason
            commands += self.run(self.peer.link_closed(link.link_id, self.now, reason))
        return commands

    def op(self, link: Link, body: Any, *, origin: str | None = None) -> Op:
        """The next operation of the far end of ``link`` (stamped now)."""
        link.seq += 1
        hlc = int((self.now + WALL) * 1000) << 16
        return Op(origin or link.peer_id, link.seq, hlc + link.seq, body)

    def is_open(self, link: Link) -> bool:
        entry = self.peer.links.get(link.link_id)
        return link.closed is None and entry is not None and entry.is_open


def healthy_peer(victim: Victim) -> tuple[Link, int]:
    """An admitted honest peer hosting ``bob``, a member of ``lobby``; returns its link and bob's incarnation."""
    link = victim.admit("b" * 16, 41001)
    inc = int((victim.now + WALL) * 1000) << 16
    upsert = AgentUpsert("bob", link.peer_id, inc, 0, "bob", "test", "/w", 0, 0.0)
    join = Membership(victim.lobby, "join", "bob", inc)
    victim.feed_frame(link, Ops((victim.op(link, upsert), victim.op(link, join))))
    assert victim.is_open(link), link.closed
    return link, inc


def healthy_link_works(victim: Victim, link: Link, bob_inc: int, text: str) -> bool:
    """The honest peer's link is open and a new room message from bob arrives as a visible message."""
    if not victim.is_open(link):
        return False
    message = victim.op(link, RoomMessage(victim.lobby, "bob", bob_inc, text))
    victim.feed_frame(link, Ops((message,)))
    return op_id(message) in victim.peer.replica.state.messages and victim.peer.replica.state.message_visible(message)


# ---------------------------------------------------------------------------------------------- hostile frames

TAGS: Final = [
    "hello",
    "proof",
    "refuse",
    "identify",
    "beat",
    "introduce",
    "peers",
    "handover",
    "coord",
    "status",
    "bye",
    "ops",
    "sync?",
    "sync!",
    "agent",
    "suspect",
    "room",
    "member",
    "msg",
    "dm",
    "receipt",
    "mark",
    "join",
    "leave",
    "invite",
    "kick",
    "decline",
    "destroy",
    "delivered",
    "read",
    "coordinator",
    "data",
    "observer",
]

NASTY_INTS: Final = [0, 1, -1, 2, 2**15, 2**16 - 1, 2**31 - 1, 2**31, 2**32, 2**53 + 1, 2**63 - 1, -(2**63), 2**64 - 1]
NASTY_STRINGS: Final = [
    "",
    " ",
    "dm:",
    "dm:x",
    "dm:99:a|b",
    "dm:-1:|",
    "dm:1:a",
    "alice",
    "bob",
    "lobby",
    "\x00",
    "\u202eevil",
    "\ufeff",
    "é" * 300,
    "x" * 5000,
    "b" * 16,
    "a" * 16,
]

leaves = st.one_of(
    st.sampled_from(NASTY_INTS),
    st.sampled_from(NASTY_STRINGS),
    st.sampled_from(TAGS),
    st.integers(min_value=-(2**63), max_value=2**64 - 1),
    st.text(max_size=24),
    st.binary(max_size=40),
    st.floats(allow_nan=True, allow_infinity=True),
    st.sampled_from([math.nan, math.inf, -math.inf, -0.0]),
    st.none(),
    st.booleans(),
    st.just([]),
    st.just({}),
)


MUTATIONS: Final = ["similar", "similar", "similar", "replace", "delete", "insert", "duplicate", "wrap"]


def similar(value: Any) -> st.SearchStrategy[Any]:
    """A value of the same type as ``value`` (so the typed decoder accepts it and the peer has to judge it)."""
    if isinstance(value, bool):
        return st.booleans()
    if isinstance(value, int):
        near = st.just(min(value + 1, 2**64 - 1))
        return st.one_of(st.sampled_from(NASTY_INTS), st.integers(-(2**63), 2**64 - 1), near)
    if isinstance(value, float):
        return st.one_of(st.sampled_from([math.nan, math.inf, -math.inf, -0.0, 0.0, 1e300]), st.floats())
    if isinstance(value, str):
        return st.one_of(st.sampled_from(NASTY_STRINGS), st.sampled_from(TAGS), st.text(max_size=24))
    if isinstance(value, bytes):
        return st.one_of(st.binary(max_size=40), st.just(value[:-1]), st.just(value + b"\x00"))
    return leaves


def _paths(value: Any, prefix: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
    found = [prefix]
    if isinstance(value, list):
        for index, item in enumerate(value):
            found += _paths(item, (*prefix, index))
    elif isinstance(value, dict):
        for key, item in value.items():
            found += _paths(item, (*prefix, key))
    return found


def _get(value: Any, path: tuple[Any, ...]) -> Any:
    for step in path:
        value = value[step]
    return value


@st.composite
def mutated(draw: st.DrawFn, seed: Frame) -> bytes:
    """``seed`` as msgpack, with a few mutations anywhere in its structure, encoded again (length prefix added)."""
    tree = msgspec.msgpack.decode(msgspec.msgpack.encode(seed))
    for _ in range(draw(st.integers(min_value=0, max_value=3))):
        paths = _paths(tree)
        path = draw(st.sampled_from(paths))
        kind = draw(st.sampled_from(MUTATIONS))
        if not path:
            if kind == "wrap":
                tree = [tree]
            elif kind in ("replace", "similar"):
                tree = draw(leaves)
            continue
        parent, last = _get(tree, path[:-1]), path[-1]
        if kind == "replace":
            parent[last] = draw(leaves)
        elif kind == "similar":
            parent[last] = draw(similar(parent[last]))
        elif kind == "wrap":
            parent[last] = [parent[last]]
        elif kind == "delete":
            del parent[last]
        elif kind == "insert" and isinstance(parent, list):
            parent.insert(draw(st.integers(0, len(parent))), draw(leaves))
        elif kind == "duplicate" and isinstance(parent, list):
            parent.append(parent[last])
    body = msgspec.msgpack.encode(tree)
    return len(body).to_bytes(4, "big") + body


@st.composite
def corrupted(draw: st.DrawFn, data: bytes) -> bytes:
    """Byte-level damage to an encoded frame: flips, cuts, insertions, a wrong length prefix."""
    buf = bytearray(data)
    for _ in range(draw(st.integers(min_value=1, max_value=4))):
        kind = draw(st.sampled_from(["flip", "cut", "insert", "length"]))
        if kind == "flip" and buf:
            at = draw(st.integers(0, len(buf) - 1))
            buf[at] ^= 1 << draw(st.integers(0, 7))
        elif kind == "cut" and buf:
            at = draw(st.integers(0, len(buf)))
            del buf[at : at + draw(st.integers(1, 8))]
        elif kind == "insert":
            at = draw(st.integers(0, len(buf)))
            buf[at:at] = draw(st.binary(min_size=1, max_size=8))
        elif kind == "length" and len(buf) >= 4:
            size = draw(st.one_of(st.integers(0, len(buf) + 8), st.sampled_from([2**20 + 1, 2**31, 2**32 - 1])))
            buf[:4] = size.to_bytes(4, "big")
    return bytes(buf)


def seeds_for(victim: Victim, link: Link, other: Link | None, bob_inc: int) -> list[Frame]:
    """Valid frames from ``link``'s far end that reach deep into the victim (its own ops, other origins relayed,
    operations on the victim's room and agents, introductions and handovers)."""
    state = victim.peer.replica.state
    lobby = victim.lobby
    alice = victim.alice_inc
    hello = next(iter(state.messages))
    message = state.messages[hello]
    inc = int((victim.now + WALL) * 1000) << 16
    me = link.peer_id
    other_id = other.peer_id if other is not None else "c" * 16
    bodies: list[Any] = [
        AgentUpsert("mallory", me, inc, 0, "mallory", "test", "/m", 0, 0.0),
        AgentUpsert("alice", me, inc + 5, 0, "alice", "test", "/w", 0, 0.0),
        AgentUpsert("bob", other_id, bob_inc, 1, "bob", "test", "/w", 0, 0.0, online=False),
        AgentSuspect("alice", alice, victim.peer.peer_id),
        AgentSuspect("bob", bob_inc, other_id),
        RoomCreate(f"{me}-{link.seq + 1}", "lobby", "secret", "mine now", "mallory", inc),
        Membership(lobby, "join", "mallory", inc),
        Membership(lobby, "kick", "mallory", inc, "bob"),
        Membership(lobby, "kick", "alice", alice, "bob"),
        Membership(lobby, "destroy", "bob", bob_inc),
        Membership(lobby, "invite", "mallory", inc, "mallory"),
        RoomMessage(lobby, "mallory", inc, "not a member"),
        RoomMessage(lobby, "bob", bob_inc, "as bob"),
        DirectMessage("mallory", inc, "alice", "psst"),
        DirectMessage("bob", bob_inc, "alice", "as bob"),
        Receipt(hello, lobby, op_key(message), "bob", bob_inc, "read"),
        Receipt(hello, dm_conversation("alice", "bob"), op_key(message), "mallory", inc, "read"),
        Mark(lobby, "bob", bob_inc, "read", {message.origin: (1, 1_000_000)}),
        Mark(dm_conversation("alice", "bob"), "mallory", inc, "read", {message.origin: (1, 1_000_000)}),
        Mark(lobby, "mallory", inc, "delivered", {message.origin: (3, 2), "x": (0, 0)}),
    ]
    ops = [victim.op(link, body) for body in bodies]
    relayed = [Op(other_id, 100, inc, RoomMessage(lobby, "bob", bob_inc, "relayed"))]
    info = PeerInfo(me, 4242, WALL - 5, link.port)
    return [
        Heartbeat(),
        Ops(tuple(ops[:3])),
        *(Ops((op,)) for op in ops),
        SyncOps(tuple(ops + relayed), done=False),
        SyncOps(tuple(relayed)),
        SyncRequest(b"\x00" * 16, {}),
        SyncRequest(state.digest(), {victim.peer.peer_id: 1, me: 2**40}),
        PeerList((info, PeerInfo("d" * 16, 1, 0.0, 40009)), me),
        Introduce(info),
        Handover(victim.peer.peer_id),
        Handover(me),
        CoordinatorAt(me),
        Goodbye("bye"),
        PeerStatus(info, (me,), me, b"x"),
        Identify(info, True),
        Hello(PROTOCOL_VERSION, b"n" * 16, "data"),
        Proof(b"p" * 32),
        Refuse("auth", "no"),
    ]


def handshake_seeds(port: int) -> list[Frame]:
    """Frames an unauthenticated stranger might send: the handshake with a wrong key, and data frames too early."""
    info = PeerInfo("e" * 16, 1, 0.0, port)
    op = Op("e" * 16, 1, 1, AgentUpsert("eve", "e" * 16, 1, 0, "eve", "t", "/", 0, 0.0))
    return [
        Hello(PROTOCOL_VERSION, b"n" * 16, "data"),
        Hello(PROTOCOL_VERSION, b"n" * 16, "coordinator"),
        Hello(PROTOCOL_VERSION, b"n" * 16, "observer"),
        Hello(PROTOCOL_VERSION + 1, b"n" * 16, "data"),
        Proof(b"p" * 32),
        Proof(b""),
        Identify(info, True),
        Introduce(info),
        SyncRequest(b"", {}),
        Ops((op,)),
        SyncOps((op,)),
        Heartbeat(),
        Refuse("auth", "x"),
        Goodbye(),
    ]


# ---------------------------------------------------------------------------------------------- fast mutation

#: Extra inputs per Hypothesis example, made by :func:`random_input` from a seed Hypothesis draws (cheap, so a fuzz
#: run can feed many more inputs than Hypothesis alone generates in the same time; reproducible from the seed).
FUZZ_BATCH: Final = int(os.environ.get("AGENT_COMMS_FUZZ_BATCH", "4"))

_RANDOM_LEAVES: Final[list[Any]] = [
    *NASTY_INTS,
    *NASTY_STRINGS,
    *TAGS,
    math.nan,
    math.inf,
    -0.0,
    None,
    True,
    False,
    b"",
    b"\x00" * 16,
    [],
    {},
]


def _random_similar(value: Any, rng: random.Random) -> Any:
    if isinstance(value, bool):
        return not value
    if isinstance(value, int):
        near = min(max(value + rng.randint(-2, 2), -(2**63)), 2**64 - 1)
        return rng.choice([rng.choice(NASTY_INTS), rng.randrange(-(2**63), 2**64), near])
    if isinstance(value, float):
        return rng.choice([math.nan, math.inf, -math.inf, 0.0, rng.uniform(-1e300, 1e300)])
    if isinstance(value, str):
        return rng.choice([rng.choice(NASTY_STRINGS), rng.choice(TAGS), value[: rng.randint(0, len(value))]])
    if isinstance(value, bytes):
        return rng.choice([value[:-1], value + b"\x00", rng.randbytes(rng.randint(0, 40))])
    return rng.choice(_RANDOM_LEAVES)


def random_input(seeds: list[Frame], rng: random.Random) -> bytes:
    """One hostile input made with ``rng``: like :func:`mutated`, :func:`corrupted` or random bytes."""
    seed = rng.choice(seeds)
    how = rng.random()
    if how < 0.1:
        return encode(seed)
    if how < 0.15:
        body = rng.randbytes(rng.randint(0, 64))
        size = len(body) if rng.random() < 0.7 else rng.randrange(2**32)
        return size.to_bytes(4, "big") + body
    if how < 0.3:
        buf = bytearray(encode(seed))
        for _ in range(rng.randint(1, 4)):
            at = rng.randrange(len(buf))
            buf[at] ^= 1 << rng.randrange(8)
        return bytes(buf)
    tree = msgspec.msgpack.decode(msgspec.msgpack.encode(seed))
    for _ in range(rng.randint(1, 3)):
        path = rng.choice(_paths(tree))
        if not path:
            continue
        parent, last = _get(tree, path[:-1]), path[-1]
        kind = rng.choice(MUTATIONS)
        if kind == "similar":
            parent[last] = _random_similar(parent[last], rng)
        elif kind == "replace":
            parent[last] = rng.choice(_RANDOM_LEAVES)
        elif kind == "wrap":
            parent[last] = [parent[last]]
        elif kind == "delete":
            del parent[last]
        elif kind == "insert" and isinstance(parent, list):
            parent.insert(rng.randint(0, len(parent)), rng.choice(_RANDOM_LEAVES))
        elif kind == "duplicate" and isinstance(parent, list):
            parent.append(parent[last])
    body = msgspec.msgpack.encode(tree)
    return len(body).to_bytes(4, "big") + body
