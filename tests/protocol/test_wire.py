"""Tests of the wire schema (:mod:`agent_comms.protocol.wire`) and the op helpers (:mod:`agent_comms.protocol.ops`):
compatibility between old and new peers, deterministic encoding, and the identity helpers."""

from __future__ import annotations

from typing import Union, get_args

import msgspec
import pytest
from hypothesis import example, given
from hypothesis import strategies as st

from agent_comms.protocol import wire
from agent_comms.protocol.framing import FrameDecoder, encode_frame, encode_frames
from agent_comms.protocol.ops import (
    AgentSuspect,
    AgentUpsert,
    Body,
    DirectMessage,
    Op,
    Receipt,
    RoomMessage,
    StreamingBehavior,
    dm_conversation,
    dm_parties,
    op_id,
    op_key,
)

HLC0 = 1_700_000_000_000 << 16

# ---------------------------------------------------------------------------------------------------------------
# "v2" peers: the same structs with one new trailing field that has a default.


class HelloV2(msgspec.Struct, frozen=True, array_like=True, tag="hello"):
    version: int
    nonce: bytes
    role: wire.LinkRole = "data"
    features: tuple[str, ...] = ()


class RoomMessageV2(msgspec.Struct, frozen=True, array_like=True, tag="msg"):
    room_id: str
    author: str
    author_inc: int
    content: str
    reply_to: str = ""
    streaming: StreamingBehavior = "info"
    n: int = 0
    mentions: tuple[str, ...] = ()


BodyV2 = Union[tuple(RoomMessageV2 if t is RoomMessage else t for t in get_args(Body))]  # noqa: UP007


class OpV2(msgspec.Struct, frozen=True, array_like=True):
    origin: str
    seq: int
    hlc: int
    body: BodyV2  # type: ignore[valid-type]
    signature: bytes = b""


class OpsV2(msgspec.Struct, frozen=True, array_like=True, tag="ops"):
    ops: tuple[OpV2, ...]


FrameV2 = Union[  # noqa: UP007
    tuple({wire.Hello: HelloV2, wire.Ops: OpsV2}.get(t, t) for t in get_args(wire.Frame))
]
_v2_decoder = msgspec.msgpack.Decoder(FrameV2)


def _framed(obj: msgspec.Struct) -> bytes:
    """Frame any struct the way :func:`encode_frame` does (length prefix + msgpack body)."""
    body = msgspec.msgpack.encode(obj)
    return len(body).to_bytes(4, "big") + body


def _decode_one(data: bytes) -> wire.Frame:
    decoder = FrameDecoder()
    decoder.feed(data)
    frame = decoder.next_frame()
    assert frame is not None
    assert decoder.buffered == 0
    return frame


def test_v2_hello_really_carries_an_extra_field() -> None:
    new = HelloV2(version=1, nonce=b"\x01\x02", role="observer", features=("zstd", "batch"))
    assert msgspec.msgpack.decode(msgspec.msgpack.encode(new)) == [
        "hello",
        1,
        b"\x01\x02",
        "observer",
        ["zstd", "batch"],
    ]


def test_old_peer_decodes_new_hello_ignoring_extra_field() -> None:
    new = HelloV2(version=1, nonce=b"\x01\x02", role="observer", features=("zstd", "batch"))
    frame = _decode_one(_framed(new))
    assert type(frame) is wire.Hello
    assert frame == wire.Hello(version=1, nonce=b"\x01\x02", role="observer")


def test_old_peer_decodes_new_hello_among_other_frames() -> None:
    new = HelloV2(version=1, nonce=b"n" * 16, role="coordinator", features=("x",))
    data = encode_frame(wire.Heartbeat()) + _framed(new) + encode_frame(wire.Goodbye(reason="done"))
    decoder = FrameDecoder()
    decoder.feed(data)
    assert list(decoder.frames()) == [
        wire.Heartbeat(),
        wire.Hello(version=1, nonce=b"n" * 16, role="coordinator"),
        wire.Goodbye(reason="done"),
    ]


@pytest.mark.parametrize("role", ["coordinator", "data", "observer"])
def test_new_peer_decodes_old_hello_with_default(role: wire.LinkRole) -> None:
    old = wire.Hello(version=wire.PROTOCOL_VERSION, nonce=b"\xaa" * 32, role=role)
    body = encode_frame(old)[4:]
    assert _v2_decoder.decode(body) == HelloV2(version=wire.PROTOCOL_VERSION, nonce=b"\xaa" * 32, role=role)
    assert msgspec.msgpack.decode(body, type=HelloV2).features == ()


def _v2_ops() -> OpsV2:
    return OpsV2(
        ops=(
            OpV2(
                origin="peer-b",
                seq=4,
                hlc=HLC0 + 4,
                body=RoomMessageV2(
                    room_id="peer-a-1",
                    author="agent-b",
                    author_inc=HLC0,
                    content="@alice look",
                    reply_to="peer-a-2",
                    streaming="steer",
                    n=3,
                    mentions=("alice", "carol"),
                ),
                signature=b"sig",
            ),
            OpV2(origin="peer-b", seq=5, hlc=HLC0 + 5, body=AgentSuspect(agent_id="a", incarnation=7, peer_id="p")),
            OpV2(origin="peer-b", seq=6, hlc=HLC0 + 6, body=RoomMessageV2("r", "agent-b", 1, "plain")),
        )
    )


def _v1_ops() -> wire.Ops:
    return wire.Ops(
        ops=(
            Op(
                origin="peer-b",
                seq=4,
                hlc=HLC0 + 4,
                body=RoomMessage(
                    room_id="peer-a-1",
                    author="agent-b",
                    author_inc=HLC0,
                    content="@alice look",
                    reply_to="peer-a-2",
                    streaming="steer",
                    n=3,
                ),
            ),
            Op(origin="peer-b", seq=5, hlc=HLC0 + 5, body=AgentSuspect(agent_id="a", incarnation=7, peer_id="p")),
            Op(origin="peer-b", seq=6, hlc=HLC0 + 6, body=RoomMessage("r", "agent-b", 1, "plain")),
        )
    )


def test_old_peer_decodes_new_op_body_and_envelope_ignoring_extra_fields() -> None:
    raw = msgspec.msgpack.decode(msgspec.msgpack.encode(_v2_ops()))
    assert raw[1][0][3][-1] == ["alice", "carol"]  # the new body field is really on the wire
    assert raw[1][0][-1] == b"sig"  # and so is the new envelope field
    frame = _decode_one(_framed(_v2_ops()))
    assert type(frame) is wire.Ops
    assert frame == _v1_ops()
    assert [type(op.body) for op in frame.ops] == [RoomMessage, AgentSuspect, RoomMessage]


def test_new_peer_decodes_old_ops_with_defaults() -> None:
    decoded = _v2_decoder.decode(encode_frame(_v1_ops())[4:])
    expected = OpsV2(
        ops=tuple(
            msgspec.structs.replace(op, body=msgspec.structs.replace(op.body, mentions=()), signature=b"")
            if isinstance(op.body, RoomMessageV2)
            else msgspec.structs.replace(op, signature=b"")
            for op in _v2_ops().ops
        )
    )
    assert decoded == expected
    assert isinstance(decoded, OpsV2)
    assert decoded.ops[0].body.mentions == ()
    assert decoded.ops[0].signature == b""


def test_sync_ops_from_new_peer_decodes_on_old_peer() -> None:
    class SyncOpsV2(msgspec.Struct, frozen=True, array_like=True, tag="sync!"):
        ops: tuple[OpV2, ...]
        done: bool = True
        floors: dict[str, int] = {}
        more_after: int = 0

    frame = _decode_one(_framed(SyncOpsV2(ops=_v2_ops().ops, done=False, more_after=42)))
    assert frame == wire.SyncOps(ops=_v1_ops().ops, done=False)


# ---------------------------------------------------------------------------------------------------------------
# Golden bytes: the wire format itself must not drift.


@pytest.mark.parametrize(
    ("frame", "expected"),
    [
        (wire.Heartbeat(), b"\x00\x00\x00\x06\x91\xa4beat"),
        (wire.Hello(version=1, nonce=b"\x01\x02"), b"\x00\x00\x00\x11\x94\xa5hello\x01\xc4\x02\x01\x02\xa4data"),
        (wire.Goodbye(), b"\x00\x00\x00\x06\x92\xa3bye\xa0"),
        (wire.Handover(successor="p"), b"\x00\x00\x00\x0c\x92\xa8handover\xa1p"),
        (
            wire.Ops(ops=(Op("p", 1, 2, AgentSuspect("a", 3, "q")),)),
            b"\x00\x00\x00\x19\x92\xa3ops\x91\x94\xa1p\x01\x02\x94\xa7suspect\xa1a\x03\xa1q",
        ),
    ],
    ids=["heartbeat", "hello", "goodbye", "handover", "ops"],
)
def test_golden_encoding(frame: wire.Frame, expected: bytes) -> None:
    assert encode_frame(frame) == expected


def _sample_frames() -> list[wire.Frame]:
    peer = wire.PeerInfo(peer_id="peer-a", pid=1, started_at=2.5, data_port=3, process_start=4.25)
    upsert = AgentUpsert("agent", "peer-a", HLC0, 1, "n", "h", "/", 7, 8.5, tags=("t",))
    receipt = Receipt("peer-a-1", "dm:a|b", (HLC0, "peer-a", 1), "b", HLC0, "delivered")
    return [
        wire.Hello(version=1, nonce=b"nonce", role="observer"),
        wire.Identify(peer=peer, coordinator=True),
        wire.PeerList(peers=(peer, peer), coordinator="peer-a"),
        wire.Ops(ops=(Op("peer-a", 1, HLC0, upsert), Op("peer-a", 2, HLC0 + 1, receipt))),
        wire.SyncRequest(digest=b"d" * 32, seen={"peer-a": 2, "peer-b": 9}),
        wire.SyncOps(ops=(Op("peer-a", 3, HLC0 + 2, DirectMessage("a", 1, "b", "hi")),), done=False),
    ]


def test_encode_is_deterministic() -> None:
    first = [encode_frame(frame) for frame in _sample_frames()]
    second = [encode_frame(frame) for frame in _sample_frames()]  # equal values, built afresh
    assert first == second
    assert encode_frames(_sample_frames()) == b"".join(first)
    again = [encode_frame(frame) for frame in _sample_frames()]
    assert again == first


def test_protocol_version() -> None:
    assert type(wire.PROTOCOL_VERSION) is int
    assert wire.PROTOCOL_VERSION >= 1


# ---------------------------------------------------------------------------------------------------------------
# op_key, op_id, dm_conversation


def _msg(origin: str, seq: int, hlc: int) -> Op:
    return Op(origin, seq, hlc, RoomMessage(room_id="r", author="a", author_inc=1, content="x"))


def test_op_key_is_hlc_origin_seq() -> None:
    assert op_key(_msg("peer-b", 7, 123)) == (123, "peer-b", 7)


def test_op_key_orders_by_hlc_then_origin_then_seq() -> None:
    ops = [_msg("b", 1, 10), _msg("a", 9, 10), _msg("a", 2, 10), _msg("z", 0, 9), _msg("a", 0, 11)]
    assert [(op.origin, op.seq, op.hlc) for op in sorted(ops, key=op_key)] == [
        ("z", 0, 9),
        ("a", 2, 10),
        ("a", 9, 10),
        ("b", 1, 10),
        ("a", 0, 11),
    ]


def test_op_key_ignores_body() -> None:
    a = Op("p", 1, 5, RoomMessage("r", "a", 1, "x"))
    b = Op("p", 1, 5, AgentSuspect("a", 1, "p"))
    assert op_key(a) == op_key(b)


def test_op_id() -> None:
    assert op_id(_msg("peer-a", 17, 99)) == "peer-a-17"
    assert op_id(_msg("p", 0, 1)) == "p-0"
    assert op_id(_msg("peer-a", 17, 99)) == op_id(Op("peer-a", 17, 1, AgentSuspect("a", 1, "p")))  # hlc, body: no


@given(
    st.tuples(st.text(alphabet="ab-19", max_size=6), st.integers(0, 1000)),
    st.tuples(st.text(alphabet="ab-19", max_size=6), st.integers(0, 1000)),
)
@example(("peer-1", 2), ("peer", 12))
@example(("a-1", 2), ("a", 12))
def test_op_id_distinct_for_distinct_origin_seq(x: tuple[str, int], y: tuple[str, int]) -> None:
    if x != y:
        assert op_id(_msg(x[0], x[1], 1)) != op_id(_msg(y[0], y[1], 1))
    else:
        assert op_id(_msg(x[0], x[1], 1)) == op_id(_msg(y[0], y[1], 2))


def test_dm_conversation_value() -> None:
    assert dm_conversation("bob", "alice") == "dm:5:alice|bob"
    assert dm_conversation("alice", "bob") == "dm:5:alice|bob"
    assert dm_conversation("x", "x") == "dm:1:x|x"
    assert dm_parties(dm_conversation("a|b", "c")) == ("a|b", "c")
    assert dm_parties(dm_conversation("b|c", "a")) == ("a", "b|c")


@given(st.text(), st.text())
def test_dm_conversation_order_independent(a: str, b: str) -> None:
    assert dm_conversation(a, b) == dm_conversation(b, a)


@given(st.text(max_size=8), st.text(max_size=8), st.text(max_size=8), st.text(max_size=8))
@example("a|b", "c", "a", "b|c")
def test_dm_conversation_distinct_for_distinct_pairs(a: str, b: str, c: str, d: str) -> None:
    if {a, b} != {c, d}:
        assert dm_conversation(a, b) != dm_conversation(c, d)
