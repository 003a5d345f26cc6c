"""Tests of the length-prefixed framing layer: :mod:`agent_comms.protocol.framing`."""

from __future__ import annotations

import itertools
from typing import get_args

import msgspec
import pytest
from hypothesis import given
from hypothesis import strategies as st

from agent_comms.protocol.errors import RemoteProtocolError
from agent_comms.protocol.framing import (
    DEFAULT_MAX_FRAME,
    FrameDecoder,
    encode_frame,
    encode_frames,
    encode_op,
    encode_ops_frames,
)
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
)
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

HLC0 = 1_700_000_000_000 << 16

PEER_A = PeerInfo(
    peer_id="peer-a", pid=4242, started_at=1_700_000_000.5, data_port=51001, process_start=1_699_999_990.25
)
PEER_B = PeerInfo(peer_id="peer-b", pid=4343, started_at=1_700_000_100.0, data_port=51002)  # default process_start

BODIES: tuple[Body, ...] = (
    AgentUpsert(
        agent_id="agent-1",
        peer_id="peer-a",
        incarnation=HLC0 + 1,
        version=3,
        name="alice",
        harness="claude-code",
        cwd="/home/u/project",
        pid=9001,
        process_start=1_700_000_000.125,
        visibility="hidden",
        status="busy",
        tags=("python", "reviewer"),
        online=False,
    ),
    AgentSuspect(agent_id="agent-2", incarnation=HLC0 + 2, peer_id="peer-b"),
    RoomCreate(
        room_id="peer-a-3",
        name="general",
        room_type="private",
        description="Where we talk \N{GRINNING FACE}",
        author="agent-1",
        author_inc=HLC0 + 1,
    ),
    Membership(room_id="peer-a-3", action="kick", author="agent-1", author_inc=HLC0 + 1, subject="agent-2", reason="x"),
    RoomMessage(
        room_id="peer-a-3",
        author="agent-1",
        author_inc=HLC0 + 1,
        content="hello\nworld",
        reply_to="peer-a-2",
        streaming="followUp",
        n=4,
    ),
    DirectMessage(author="agent-1", author_inc=HLC0 + 1, recipient="agent-2", content="psst", n=1),
    Receipt(
        message_id="peer-a-6",
        conversation="dm:agent-1|agent-2",
        message_key=(HLC0 + 6, "peer-a", 6),
        recipient="agent-2",
        recipient_inc=HLC0 + 2,
        status="read",
    ),
    Mark(
        conversation="peer-a-3",
        recipient="agent-2",
        recipient_inc=HLC0 + 2,
        status="read",
        ranges={"peer-a": (1, 4, 6, 6), "peer-b": (2, 9)},
    ),
)

OPS: tuple[Op, ...] = tuple(
    Op(origin="peer-a", seq=seq, hlc=HLC0 + seq, body=body) for seq, body in enumerate(BODIES, start=1)
)

ALL_FRAMES: tuple[Frame, ...] = (
    Hello(version=PROTOCOL_VERSION, nonce=bytes(range(32)), role="coordinator"),
    Proof(mac=bytes(range(255, 223, -1))),
    Refuse(reason="version", detail="peer speaks protocol 7, we speak 1"),
    Identify(peer=PEER_A, coordinator=True),
    Heartbeat(),
    Introduce(peer=PEER_B),
    PeerList(peers=(PEER_A, PEER_B), coordinator="peer-a"),
    Handover(successor="peer-b"),
    CoordinatorAt(peer_id="peer-b"),
    PeerStatus(peer=PEER_A, links=("peer-b",), coordinator="peer-a", digest=b"\x07" * 16),
    Goodbye(reason="shutdown"),
    Ops(ops=OPS),
    SyncRequest(digest=b"\x00\x01" * 16, seen={"peer-a": 7, "peer-b": 0}),
    SyncOps(ops=OPS[:3], done=False),
)


def _raw_frame(body: bytes) -> bytes:
    """A frame with an arbitrary body and a correct length prefix."""
    return len(body).to_bytes(4, "big") + body


def _decode_all(chunks: list[bytes], decoder: FrameDecoder | None = None) -> list[Frame]:
    decoder = decoder or FrameDecoder()
    out: list[Frame] = []
    for chunk in chunks:
        decoder.feed(chunk)
        out.extend(decoder.frames())
    return out


# ---------------------------------------------------------------------------------------------------------------
# Fixtures are complete: every frame type and every op body type is exercised.


def test_fixture_covers_every_frame_type() -> None:
    assert {type(frame) for frame in ALL_FRAMES} == set(get_args(Frame))
    assert len(ALL_FRAMES) == len(get_args(Frame))


def test_fixture_covers_every_body_type() -> None:
    assert {type(body) for body in BODIES} == set(get_args(Body))


# ---------------------------------------------------------------------------------------------------------------
# Encoding and round trips


@pytest.mark.parametrize("frame", ALL_FRAMES, ids=lambda f: type(f).__name__)
def test_round_trip_each_frame_type(frame: Frame) -> None:
    data = encode_frame(frame)
    assert int.from_bytes(data[:4], "big") == len(data) - 4
    decoder = FrameDecoder()
    decoder.feed(data)
    assert decoder.buffered == len(data)
    decoded = decoder.next_frame()
    assert type(decoded) is type(frame)
    assert decoded == frame
    assert decoder.next_frame() is None
    assert decoder.buffered == 0


@pytest.mark.parametrize("body", BODIES, ids=lambda b: type(b).__name__)
def test_round_trip_each_op_body_inside_ops(body: Body) -> None:
    frame = Ops(ops=(Op(origin="peer-z", seq=99, hlc=HLC0 + 99, body=body),))
    decoder = FrameDecoder()
    decoder.feed(encode_frame(frame))
    decoded = decoder.next_frame()
    assert isinstance(decoded, Ops)
    assert len(decoded.ops) == 1
    assert type(decoded.ops[0].body) is type(body)
    assert decoded == frame


def test_encode_frames_is_concatenation_of_encode_frame() -> None:
    assert encode_frames(ALL_FRAMES) == b"".join(encode_frame(frame) for frame in ALL_FRAMES)
    assert encode_frames([]) == b""
    assert encode_frames(iter(ALL_FRAMES[:2])) == encode_frame(ALL_FRAMES[0]) + encode_frame(ALL_FRAMES[1])


def test_multi_frame_buffer_in_one_feed() -> None:
    decoder = FrameDecoder()
    decoder.feed(encode_frames(ALL_FRAMES))
    assert list(decoder.frames()) == list(ALL_FRAMES)
    assert decoder.buffered == 0
    assert decoder.next_frame() is None


def test_byte_at_a_time_yields_each_frame_exactly_when_its_last_byte_arrives() -> None:
    stream = encode_frames(ALL_FRAMES)
    ends = list(itertools.accumulate(len(encode_frame(frame)) for frame in ALL_FRAMES))
    assert ends[-1] == len(stream)
    decoder = FrameDecoder()
    got: list[Frame] = []
    for fed in range(1, len(stream) + 1):
        decoder.feed(stream[fed - 1 : fed])
        got.extend(decoder.frames())
        complete = sum(1 for end in ends if end <= fed)
        assert len(got) == complete
        assert decoder.buffered == fed - (ends[complete - 1] if complete else 0)
    assert got == list(ALL_FRAMES)
    assert decoder.buffered == 0


_texts = st.text(max_size=40)
_varied_frames = st.one_of(
    st.sampled_from(ALL_FRAMES),
    st.builds(
        Hello,
        version=st.integers(0, 2**32),
        nonce=st.binary(max_size=48),
        role=st.sampled_from(["coordinator", "data", "observer"]),
    ),
    st.builds(Refuse, reason=_texts, detail=_texts),
    st.builds(Proof, mac=st.binary(max_size=300)),
    st.builds(
        Ops,
        ops=st.lists(
            st.builds(
                Op,
                origin=_texts,
                seq=st.integers(0, 2**63 - 1),
                hlc=st.integers(0, 2**63 - 1),
                body=st.builds(
                    RoomMessage, room_id=_texts, author=_texts, author_inc=st.integers(0, 2**40), content=_texts
                ),
            ),
            max_size=4,
        ).map(tuple),
    ),
)


@st.composite
def _stream_and_cuts(draw: st.DrawFn) -> tuple[list[Frame], list[bytes]]:
    frames = draw(st.lists(_varied_frames, min_size=1, max_size=8))
    stream = encode_frames(frames)
    cuts = sorted(draw(st.lists(st.integers(0, len(stream)), max_size=30)))
    bounds = [0, *cuts, len(stream)]
    chunks = [stream[a:b] for a, b in itertools.pairwise(bounds)]  # duplicate cuts give empty chunks, too
    return frames, chunks


@given(_stream_and_cuts())
def test_arbitrary_split_points_yield_same_frames(case: tuple[list[Frame], list[bytes]]) -> None:
    frames, chunks = case
    decoder = FrameDecoder()
    assert _decode_all(chunks, decoder) == frames
    assert decoder.buffered == 0


# ---------------------------------------------------------------------------------------------------------------
# Partial data, empty feeds


@pytest.mark.parametrize("extra", [0, 1, 3, 4, 5, -1])
def test_buffered_reports_leftover_partial_bytes(extra: int) -> None:
    first = encode_frame(ALL_FRAMES[0])
    second = encode_frame(ALL_FRAMES[-1])
    extra = extra % len(second)  # -1 means all but the last byte
    decoder = FrameDecoder()
    decoder.feed(first + second[:extra])
    assert decoder.buffered == len(first) + extra
    assert decoder.next_frame() == ALL_FRAMES[0]
    assert decoder.buffered == extra
    assert decoder.next_frame() is None
    assert decoder.buffered == extra
    decoder.feed(second[extra:])
    assert decoder.buffered == len(second)
    assert decoder.next_frame() == ALL_FRAMES[-1]
    assert decoder.buffered == 0


def test_empty_feed_does_nothing() -> None:
    decoder = FrameDecoder()
    decoder.feed(b"")
    assert decoder.buffered == 0
    assert decoder.next_frame() is None
    assert list(decoder.frames()) == []

    data = encode_frame(ALL_FRAMES[3])
    decoder.feed(data[:7])
    decoder.feed(b"")
    assert decoder.buffered == 7
    assert decoder.next_frame() is None
    decoder.feed(b"")
    decoder.feed(data[7:])
    decoder.feed(b"")
    assert decoder.next_frame() == ALL_FRAMES[3]
    assert decoder.buffered == 0


def test_header_alone_of_small_frame_waits_for_body() -> None:
    data = encode_frame(Handover(successor="peer-b"))
    decoder = FrameDecoder()
    decoder.feed(data[:4])
    assert decoder.next_frame() is None
    assert decoder.buffered == 4


# ---------------------------------------------------------------------------------------------------------------
# Size cap


def test_oversized_length_rejected_as_soon_as_header_arrives() -> None:
    decoder = FrameDecoder(max_frame=100)
    header = (101).to_bytes(4, "big")
    decoder.feed(header[:3])
    assert decoder.next_frame() is None  # cannot know the size yet
    decoder.feed(header[3:])
    with pytest.raises(RemoteProtocolError) as info:
        decoder.next_frame()
    assert info.value.reason == "oversized"


@pytest.mark.parametrize("size", [DEFAULT_MAX_FRAME + 1, 0xFFFFFFFF])
def test_oversized_with_default_cap(size: int) -> None:
    assert DEFAULT_MAX_FRAME == 1 << 20
    decoder = FrameDecoder()
    decoder.feed(size.to_bytes(4, "big"))
    with pytest.raises(RemoteProtocolError) as info:
        next(decoder.frames())
    assert info.value.reason == "oversized"


def test_oversized_after_valid_frames_in_same_buffer() -> None:
    good = encode_frame(Handover(successor="peer-b"))
    decoder = FrameDecoder(max_frame=len(good) - 4)
    decoder.feed(good + (len(good) - 3).to_bytes(4, "big"))
    assert decoder.next_frame() == Handover(successor="peer-b")
    with pytest.raises(RemoteProtocolError) as info:
        decoder.next_frame()
    assert info.value.reason == "oversized"


@pytest.mark.parametrize("frame", ALL_FRAMES, ids=lambda f: type(f).__name__)
def test_frame_exactly_at_cap_accepted_one_over_refused(frame: Frame) -> None:
    data = encode_frame(frame)
    size = len(data) - 4
    at_cap = FrameDecoder(max_frame=size)
    at_cap.feed(data)
    assert at_cap.next_frame() == frame

    below = FrameDecoder(max_frame=size - 1)
    below.feed(data)
    with pytest.raises(RemoteProtocolError) as info:
        below.next_frame()
    assert info.value.reason == "oversized"


def test_frame_exactly_at_default_cap_accepted() -> None:
    probe = len(encode_frame(Proof(mac=bytes(70_000)))) - 4 - 70_000  # msgpack overhead for a bin32 mac
    mac = bytes(DEFAULT_MAX_FRAME - probe)
    data = encode_frame(Proof(mac=mac))
    assert len(data) - 4 == DEFAULT_MAX_FRAME
    decoder = FrameDecoder()
    decoder.feed(data)
    assert decoder.next_frame() == Proof(mac=mac)
    assert decoder.buffered == 0

    over = encode_frame(Proof(mac=mac + b"\x00"))
    decoder = FrameDecoder()
    decoder.feed(over[:4])
    with pytest.raises(RemoteProtocolError) as info:
        decoder.next_frame()
    assert info.value.reason == "oversized"


# ---------------------------------------------------------------------------------------------------------------
# Malformed bodies

_good_ops_body = msgspec.msgpack.encode(Ops(ops=OPS[:1]))
_good_hello_body = msgspec.msgpack.encode(Hello(version=1, nonce=b"n"))

MALFORMED_BODIES = {
    "empty": b"",
    "reserved-byte": b"\xc1",
    "random": bytes([0x93, 0xFF, 0x00, 0xC1, 0x7F, 0x80]),
    "truncated": _good_hello_body[:-1],
    "trailing-garbage": _good_hello_body + b"\x00",
    "map-not-array": msgspec.msgpack.encode({"tag": "hello", "version": 1}),
    "string": msgspec.msgpack.encode("hello"),
    "int": msgspec.msgpack.encode(1),
    "empty-array": msgspec.msgpack.encode([]),
    "unknown-tag": msgspec.msgpack.encode(["nope", 1, b"n"]),
    "tag-wrong-type": msgspec.msgpack.encode([1, 1, b"n"]),
    "missing-field": msgspec.msgpack.encode(["hello", 1]),
    "wrong-field-type": msgspec.msgpack.encode(["hello", "one", b"n"]),
    "bad-literal": msgspec.msgpack.encode(["hello", 1, b"n", "admin"]),
    "op-unknown-body-tag": msgspec.msgpack.encode(["ops", [["peer-a", 1, 2, ["nope", "x"]]]]),
    "op-body-not-struct": msgspec.msgpack.encode(["ops", [["peer-a", 1, 2, "x"]]]),
    "op-bad-receipt-status": msgspec.msgpack.encode(
        ["ops", [["peer-a", 1, 2, ["receipt", "m", "c", [1, "p", 1], "r", 1, "lost"]]]]
    ),
    "ops-truncated": _good_ops_body[:-3],
    "seen-not-int": msgspec.msgpack.encode(["sync?", b"d", {"peer-a": "x"}]),
    "peer-info-short": msgspec.msgpack.encode(["introduce", ["peer-a", 1]]),
    # msgpack str values must be UTF-8; msgspec reports invalid UTF-8 as UnicodeDecodeError, not DecodeError
    "invalid-utf8-in-field": b"\x92\xa3bye\xa1\xff",
    "invalid-utf8-in-tag": b"\x91\xa4be\xffa",
}


@pytest.mark.parametrize("body", MALFORMED_BODIES.values(), ids=MALFORMED_BODIES.keys())
def test_malformed_body_raises(body: bytes) -> None:
    decoder = FrameDecoder()
    decoder.feed(_raw_frame(body))
    with pytest.raises(RemoteProtocolError) as info:
        decoder.next_frame()
    assert info.value.reason == "malformed"


def test_malformed_after_good_frame_yields_the_good_one_first() -> None:
    decoder = FrameDecoder()
    decoder.feed(encode_frame(Heartbeat()) + _raw_frame(b"\xc1") + encode_frame(Heartbeat()))
    frames = decoder.frames()
    assert next(frames) == Heartbeat()
    with pytest.raises(RemoteProtocolError) as info:
        next(frames)
    assert info.value.reason == "malformed"


@pytest.mark.parametrize(
    ("bad", "reason", "max_frame"),
    [
        (_raw_frame(b"\xc1"), "malformed", DEFAULT_MAX_FRAME),
        ((1000).to_bytes(4, "big"), "oversized", 999),
    ],
    ids=["malformed", "oversized"],
)
def test_decoder_is_poisoned_after_an_error(bad: bytes, reason: str, max_frame: int) -> None:
    decoder = FrameDecoder(max_frame=max_frame)
    decoder.feed(bad)
    with pytest.raises(RemoteProtocolError) as first:
        decoder.next_frame()
    assert first.value.reason == reason
    decoder.feed(encode_frame(Heartbeat()))
    for _ in range(3):
        with pytest.raises(RemoteProtocolError) as again:
            decoder.next_frame()
        assert again.value.reason == reason
    with pytest.raises(RemoteProtocolError) as via_frames:
        list(decoder.frames())
    assert via_frames.value.reason == reason
    fresh = FrameDecoder(max_frame=max_frame)  # the good frame alone is fine: the poisoning is the decoder's state
    fresh.feed(encode_frame(Heartbeat()))
    assert fresh.next_frame() == Heartbeat()


def _mutated_stream(data: st.DataObject) -> bytes:
    frames = data.draw(st.lists(st.sampled_from(ALL_FRAMES), min_size=1, max_size=4))
    stream = bytearray(encode_frames(frames))
    for _ in range(data.draw(st.integers(1, 4))):
        stream[data.draw(st.integers(0, len(stream) - 1))] = data.draw(st.integers(0, 255))
    return bytes(stream)


@given(data=st.data())
def test_arbitrary_bytes_only_raise_remote_protocol_error(data: st.DataObject) -> None:
    kind = data.draw(st.sampled_from(["random", "framed-random", "mutated"]))
    if kind == "random":
        stream = data.draw(st.binary(max_size=400))
    elif kind == "framed-random":
        stream = b"".join(_raw_frame(body) for body in data.draw(st.lists(st.binary(max_size=60), max_size=5)))
    else:
        stream = _mutated_stream(data)
    max_frame = data.draw(st.sampled_from([DEFAULT_MAX_FRAME, 0, 1, 16, 64]))
    cuts = sorted(data.draw(st.lists(st.integers(0, len(stream)), max_size=10)))
    chunks = [stream[a:b] for a, b in itertools.pairwise([0, *cuts, len(stream)])]

    decoder = FrameDecoder(max_frame=max_frame)
    frames: list[Frame] = []
    error: RemoteProtocolError | None = None
    for chunk in chunks:
        decoder.feed(chunk)
        try:
            frames.extend(decoder.frames())
        except RemoteProtocolError as exc:
            error = exc
            break
    valid_types = get_args(Frame)
    assert all(isinstance(frame, valid_types) for frame in frames)
    assert 4 * len(frames) <= len(stream)  # every frame consumed at least its header
    if error is None:
        assert 0 <= decoder.buffered <= len(stream)
    else:
        assert error.reason in {"malformed", "oversized"}
        with pytest.raises(RemoteProtocolError):
            decoder.next_frame()


# ---------------------------------------------------------------------------------------------------------------
# Many frames: internal offset and compaction


def _many_small_frames(n: int) -> list[Frame]:
    return [Handover(successor=f"peer-{i}") for i in range(n)]


def test_ten_thousand_frames_in_one_chunk() -> None:
    frames = _many_small_frames(10_000)
    stream = encode_frames(frames)
    assert len(stream) > 3 * 65536  # large enough to cross the compaction threshold several times
    decoder = FrameDecoder()
    decoder.feed(stream)
    assert decoder.buffered == len(stream)
    assert list(decoder.frames()) == frames
    assert decoder.buffered == 0
    assert decoder.next_frame() is None


@pytest.mark.parametrize("chunk_size", [1000, 7919, 65537])
def test_ten_thousand_frames_in_fixed_chunks(chunk_size: int) -> None:
    frames = _many_small_frames(10_000)
    stream = encode_frames(frames)
    ends = list(itertools.accumulate(len(encode_frame(frame)) for frame in frames))
    decoder = FrameDecoder()
    got: list[Frame] = []
    for start in range(0, len(stream), chunk_size):
        decoder.feed(stream[start : start + chunk_size])
        got.extend(decoder.frames())
        fed = min(start + chunk_size, len(stream))
        consumed = ends[len(got) - 1] if got else 0
        assert consumed <= fed
        assert fed - consumed < (ends[len(got)] - consumed if len(got) < len(ends) else 1)  # no whole frame left
        assert decoder.buffered == fed - consumed
    assert got == frames
    assert decoder.buffered == 0


def test_large_frames_interleaved_with_small_ones_across_compaction() -> None:
    frames: list[Frame] = []
    for i in range(12):
        frames.append(Proof(mac=bytes([i]) * (70_000 + i)))
        frames.extend(Handover(successor=f"p{i}-{j}") for j in range(i))
    stream = encode_frames(frames)
    for chunk_size in (4096, 100_003, len(stream)):
        decoder = FrameDecoder()
        chunks = [stream[i : i + chunk_size] for i in range(0, len(stream), chunk_size)]
        assert _decode_all(chunks, decoder) == frames
        assert decoder.buffered == 0


@pytest.mark.parametrize("count", [0, 1, 15, 16, 300, 65535, 65536, 70000])
def test_ops_frames_built_from_encoded_operations_are_the_frames_encoded_whole(count: int) -> None:
    """:func:`encode_ops_frames` joins operations encoded one by one into ``Ops`` frames: the very bytes that
    encoding those frames whole gives (every msgpack array size: fixarray, array16, array32), cut by size."""
    ops = [Op(f"{i % 7:016x}", i + 1, 1000 + i, DirectMessage("a", 1, "b", "x" * (i % 5))) for i in range(count)]
    encoded = [encode_op(op) for op in ops]
    max_body = 1 << 22
    data = encode_ops_frames(encoded, max_body)
    assert data == (encode_frames([Ops(tuple(ops))]) if ops else b"")
    decoder = FrameDecoder(max_body + 64)
    decoder.feed(data)
    assert [op for frame in decoder.frames() if isinstance(frame, Ops) for op in frame.ops] == ops


def test_ops_frames_are_cut_to_the_size_given_and_keep_the_order() -> None:
    ops = [Op("0" * 16, i + 1, 1000 + i, DirectMessage("a", 1, "b", "y" * 100)) for i in range(50)]
    encoded = [encode_op(op) for op in ops]
    big = Op("0" * 16, 51, 2000, DirectMessage("a", 1, "b", "z" * 5000))  # larger than the cut: a frame of its own
    encoded.append(encode_op(big))
    data = encode_ops_frames(encoded, 1000)
    decoder = FrameDecoder()
    decoder.feed(data)
    frames = [frame for frame in decoder.frames() if isinstance(frame, Ops)]
    assert [op for frame in frames for op in frame.ops] == [*ops, big]
    assert frames[-1].ops == (big,)
    assert all(len(encode_frames([frame])) - 4 <= 1000 for frame in frames[:-1])
    assert len(frames) > 2
