"""Tests of the link handshake state machine: :mod:`agent_comms.protocol.link`.

In the style of h11's tests: two :class:`LinkHandshake` objects, a dialer and a listener, and a small helper that
hands the frames one returns to the other (optionally through real bytes: ``encode_frames`` + ``FrameDecoder``).
No sockets, no event loop.
"""

from __future__ import annotations

import re
from typing import Any

import pytest

from agent_comms.protocol.auth import KEY_SIZE, NONCE_SIZE, link_proof
from agent_comms.protocol.errors import LocalProtocolError, RemoteProtocolError
from agent_comms.protocol.framing import FrameDecoder, encode_frames
from agent_comms.protocol.link import HandshakeState, LinkHandshake
from agent_comms.protocol.ops import AgentSuspect, Op
from agent_comms.protocol.wire import (
    PROTOCOL_VERSION,
    Frame,
    Goodbye,
    Heartbeat,
    Hello,
    Identify,
    Introduce,
    Ops,
    PeerInfo,
    Proof,
    Refuse,
)

KEY = bytes(range(KEY_SIZE))
WRONG_KEY = bytes(range(100, 100 + KEY_SIZE))
NONCE_D = bytes.fromhex("d0d1d2d3d4d5d6d7d8d9dadbdcdddedf")
NONCE_L = bytes.fromhex("a0a1a2a3a4a5a6a7a8a9aaabacadaeaf")
NONCE_D2 = bytes.fromhex("e0e1e2e3e4e5e6e7e8e9eaebecedeeef")
NONCE_L2 = bytes.fromhex("b0b1b2b3b4b5b6b7b8b9babbbcbdbebf")
DIALER_ADDR = "127.0.0.1:5555"
LISTENER_ADDR = "127.0.0.1:40000"

PEER_D = PeerInfo(peer_id="peer-dialer", pid=1111, started_at=1_700_000_000.5, data_port=51001, process_start=1.25)
PEER_L = PeerInfo(peer_id="peer-listener", pid=2222, started_at=1_700_000_100.0, data_port=51002)


def make_dialer(
    *,
    key: bytes = KEY,
    nonce: bytes = NONCE_D,
    local_addr: str = DIALER_ADDR,
    remote_addr: str = LISTENER_ADDR,
    role: Any = "data",
    coordinator: bool = False,
) -> LinkHandshake:
    return LinkHandshake(
        dialer=True,
        key=key,
        nonce=nonce,
        local_addr=local_addr,
        remote_addr=remote_addr,
        identity=PEER_D,
        role=role,
        coordinator=coordinator,
    )


def make_listener(
    *,
    key: bytes = KEY,
    nonce: bytes = NONCE_L,
    local_addr: str = LISTENER_ADDR,
    remote_addr: str = DIALER_ADDR,
    coordinator: bool = False,
) -> LinkHandshake:
    return LinkHandshake(
        dialer=False,
        key=key,
        nonce=nonce,
        local_addr=local_addr,
        remote_addr=remote_addr,
        identity=PEER_L,
        coordinator=coordinator,
    )


def deliver(receiver: LinkHandshake, frames: list[Frame], *, wire: bool = False) -> list[Frame]:
    """Hand ``frames`` to ``receiver`` one at a time (as a runtime would) and collect what it wants to send.

    With ``wire``, the frames go through real bytes first, fed to the decoder one byte at a time. An exception
    stops delivery at the offending frame, as a runtime closes the link on it.
    """
    if wire:
        decoder = FrameDecoder()
        received: list[Frame] = []
        for byte in encode_frames(frames):
            decoder.feed(bytes([byte]))
            received.extend(decoder.frames())
        assert received == frames
        assert decoder.buffered == 0
        frames = received
    out: list[Frame] = []
    for frame in frames:
        out.extend(receiver.receive(frame))
    return out


def proof_for(role: Any, *, key: bytes = KEY, dialer_nonce: bytes = NONCE_D, listener_nonce: bytes = NONCE_L) -> Proof:
    return Proof(
        link_proof(
            key,
            role,
            dialer_nonce=dialer_nonce,
            listener_nonce=listener_nonce,
            dialer_addr=DIALER_ADDR,
            listener_addr=LISTENER_ADDR,
        )
    )


def handshake(dialer: LinkHandshake, listener: LinkHandshake, *, wire: bool = False) -> list[tuple[str, list[Frame]]]:
    """Run a whole handshake, passing each side's frames to the other until one has nothing to send.

    Returns the transcript as (sender, frames) steps.
    """
    transcript: list[tuple[str, list[Frame]]] = [("dialer", dialer.start())]
    assert listener.start() == []
    while transcript[-1][1]:
        sender, frames = transcript[-1]
        if sender == "dialer":
            transcript.append(("listener", deliver(listener, frames, wire=wire)))
        else:
            transcript.append(("dialer", deliver(dialer, frames, wire=wire)))
    return transcript


def assert_failed(hs: LinkHandshake) -> None:
    assert hs.state is HandshakeState.FAILED
    assert not hs.is_open
    assert hs.remote is None


# --------------------------------------------------------------------------------------------------------------
# Happy path


@pytest.mark.parametrize("wire", [False, True], ids=["frames", "bytes"])
@pytest.mark.parametrize("role", ["coordinator", "data", "observer"])
def test_happy_path(role: Any, wire: bool) -> None:
    dialer = make_dialer(role=role)
    listener = make_listener(coordinator=True)
    assert dialer.state is listener.state is HandshakeState.AWAIT_HELLO
    assert listener.role == "data"

    hello_d = dialer.start()
    assert hello_d == [Hello(version=PROTOCOL_VERSION, nonce=NONCE_D, role=role)]
    assert listener.start() == []
    assert (dialer.state, listener.state) == (HandshakeState.AWAIT_HELLO, HandshakeState.AWAIT_HELLO)

    to_dialer = deliver(listener, hello_d, wire=wire)
    assert to_dialer == [Hello(PROTOCOL_VERSION, NONCE_L, role), proof_for("listener")]
    assert listener.state is HandshakeState.AWAIT_PROOF
    assert listener.remote_nonce == NONCE_D
    assert listener.role == role  # the listener adopts what the dialer asked for
    assert listener.remote is None

    to_listener = deliver(dialer, to_dialer, wire=wire)
    assert to_listener == [proof_for("dialer"), Identify(PEER_D, coordinator=False)]
    assert dialer.state is HandshakeState.AWAIT_IDENTIFY
    assert dialer.remote_nonce == NONCE_L
    assert dialer.remote is None

    to_dialer = deliver(listener, to_listener, wire=wire)
    assert to_dialer == [Identify(PEER_L, coordinator=True)]
    assert listener.is_open
    assert listener.state is HandshakeState.OPEN
    assert listener.remote == PEER_D
    assert listener.remote_coordinator is False

    assert deliver(dialer, to_dialer, wire=wire) == []
    assert dialer.is_open
    assert dialer.remote == PEER_L
    assert dialer.remote_coordinator is True
    assert dialer.role == listener.role == role
    assert dialer.pending_refusal == listener.pending_refusal == []


@pytest.mark.parametrize(("dialer_coordinator", "listener_coordinator"), [(False, False), (False, True), (True, False)])
def test_remote_coordinator_reflects_the_other_sides_flag(dialer_coordinator: bool, listener_coordinator: bool) -> None:
    dialer = make_dialer(coordinator=dialer_coordinator)
    listener = make_listener(coordinator=listener_coordinator)
    transcript = handshake(dialer, listener)
    assert [sender for sender, _ in transcript] == ["dialer", "listener", "dialer", "listener", "dialer"]
    assert transcript[-1] == ("dialer", [])
    assert dialer.is_open
    assert listener.is_open
    assert dialer.remote_coordinator is listener_coordinator
    assert listener.remote_coordinator is dialer_coordinator
    assert transcript[2][1][1] == Identify(PEER_D, dialer_coordinator)
    assert transcript[3][1] == [Identify(PEER_L, listener_coordinator)]


def test_happy_path_with_ipv6_addresses() -> None:
    dialer = make_dialer(local_addr="[::1]:5555", remote_addr="[::1]:40000")
    listener = make_listener(local_addr="[::1]:40000", remote_addr="[::1]:5555")
    handshake(dialer, listener, wire=True)
    assert dialer.is_open
    assert listener.is_open
    assert dialer.remote == PEER_L
    assert listener.remote == PEER_D


# --------------------------------------------------------------------------------------------------------------
# Authentication failures


def test_squatter_with_wrong_key_learns_only_a_nonce() -> None:
    dialer = make_dialer()
    squatter = make_listener(key=WRONG_KEY)
    hello_d = dialer.start()
    to_dialer = deliver(squatter, hello_d)
    assert to_dialer == [Hello(PROTOCOL_VERSION, NONCE_L, "data"), proof_for("listener", key=WRONG_KEY)]

    sent_by_dialer: list[Frame] = []
    sent_by_dialer.extend(dialer.receive(to_dialer[0]))  # the Hello alone is fine
    assert sent_by_dialer == []
    with pytest.raises(RemoteProtocolError) as exc_info:
        sent_by_dialer.extend(dialer.receive(to_dialer[1]))
    assert exc_info.value.reason == "auth"
    message = str(exc_info.value)
    assert "cannot prove the mesh key" in message
    assert LISTENER_ADDR in message
    # Nothing after the Hello: no Proof, no Identify, not even a Refuse.
    assert sent_by_dialer == []
    assert dialer.pending_refusal == []
    assert_failed(dialer)
    assert squatter.remote is None
    assert squatter.remote_nonce == NONCE_D


@pytest.mark.parametrize("wire", [False, True], ids=["frames", "bytes"])
def test_squatter_via_helper(wire: bool) -> None:
    dialer = make_dialer()
    squatter = make_listener(key=WRONG_KEY)
    with pytest.raises(RemoteProtocolError) as exc_info:
        handshake(dialer, squatter, wire=wire)
    assert exc_info.value.reason == "auth"
    assert "cannot prove the mesh key" in str(exc_info.value)
    assert dialer.pending_refusal == []
    assert_failed(dialer)
    assert squatter.state is HandshakeState.AWAIT_PROOF  # never got anything past the Hello


def _listener_after_hello(**kwargs: Any) -> tuple[LinkHandshake, list[Frame]]:
    listener = make_listener(**kwargs)
    replies = listener.receive(Hello(PROTOCOL_VERSION, NONCE_D, "data"))
    assert replies == [Hello(PROTOCOL_VERSION, NONCE_L, "data"), proof_for("listener", key=listener.key)]
    return listener, replies


@pytest.mark.parametrize("wire", [False, True], ids=["frames", "bytes"])
def test_dialer_with_wrong_key_is_refused_and_its_identify_ignored(wire: bool) -> None:
    listener, _ = _listener_after_hello()
    # A dialer holding another key (one that does not check the listener's proof, or it would have stopped there).
    forged: list[Frame] = [proof_for("dialer", key=WRONG_KEY), Identify(PEER_D, coordinator=True)]
    with pytest.raises(RemoteProtocolError) as exc_info:
        deliver(listener, forged, wire=wire)
    assert exc_info.value.reason == "auth"
    assert "cannot prove the mesh key" in str(exc_info.value)
    assert DIALER_ADDR in str(exc_info.value)
    assert listener.pending_refusal == [Refuse("auth", "wrong mesh key proof")]
    assert_failed(listener)
    assert listener.remote_coordinator is False

    # Even a careless runtime that feeds the Identify anyway does not open the link.
    with pytest.raises(RemoteProtocolError) as exc_info:
        listener.receive(forged[1])
    assert exc_info.value.reason == "unexpected"
    assert_failed(listener)
    assert listener.remote_coordinator is False


def test_real_dialer_with_wrong_key_stops_at_the_listener_proof() -> None:
    # Both sides check: a dialer with the wrong key fails on the (genuine) listener's proof and sends nothing.
    dialer = make_dialer(key=WRONG_KEY)
    listener = make_listener()
    with pytest.raises(RemoteProtocolError) as exc_info:
        handshake(dialer, listener)
    assert exc_info.value.reason == "auth"
    assert dialer.pending_refusal == []
    assert_failed(dialer)
    assert listener.state is HandshakeState.AWAIT_PROOF
    assert listener.remote is None


@pytest.mark.parametrize("bit", [0, 9, 255])
def test_tampered_dialer_proof_is_refused_and_the_refuse_fails_the_dialer(bit: int) -> None:
    dialer = make_dialer()
    listener = make_listener()
    to_dialer = deliver(listener, dialer.start())
    proof, identify = deliver(dialer, to_dialer)
    assert isinstance(proof, Proof)
    assert dialer.state is HandshakeState.AWAIT_IDENTIFY
    mac = bytearray(proof.mac)
    mac[bit // 8] ^= 1 << (bit % 8)
    with pytest.raises(RemoteProtocolError) as exc_info:
        deliver(listener, [Proof(bytes(mac)), identify])
    assert exc_info.value.reason == "auth"
    assert_failed(listener)
    refusal = listener.pending_refusal
    assert refusal == [Refuse("auth", "wrong mesh key proof")]

    with pytest.raises(RemoteProtocolError) as exc_info:
        deliver(dialer, refusal, wire=True)
    assert exc_info.value.reason == "auth"
    assert "wrong mesh key proof" in str(exc_info.value)
    assert_failed(dialer)


def test_reflected_listener_proof_is_refused() -> None:
    # Someone dials the listener and sends the listener's own proof back as the dialer's.
    listener, replies = _listener_after_hello()
    with pytest.raises(RemoteProtocolError) as exc_info:
        listener.receive(replies[1])
    assert exc_info.value.reason == "auth"
    assert listener.pending_refusal == [Refuse("auth", "wrong mesh key proof")]
    assert_failed(listener)


def test_reflected_dialer_proof_is_refused_by_a_dialer() -> None:
    # A dialer receiving a dialer-role proof (e.g. mirrored from another connection's dialer) rejects it.
    dialer = make_dialer()
    dialer.start()
    assert dialer.receive(Hello(PROTOCOL_VERSION, NONCE_L, "data")) == []
    with pytest.raises(RemoteProtocolError) as exc_info:
        dialer.receive(proof_for("dialer"))
    assert exc_info.value.reason == "auth"
    assert dialer.pending_refusal == []
    assert_failed(dialer)


@pytest.mark.parametrize(
    ("dialer_view", "listener_view"),
    [
        pytest.param(
            ("127.0.0.1:5555", "127.0.0.1:40000"), ("127.0.0.1:40000", "127.0.0.1:6666"), id="relay-dials-from-6666"
        ),
        pytest.param(
            ("127.0.0.1:5555", "127.0.0.1:40000"), ("127.0.0.1:40001", "127.0.0.1:5555"), id="relay-on-other-port"
        ),
        pytest.param(("127.0.0.1:5555", "127.0.0.1:40000"), ("127.0.0.1:40001", "127.0.0.1:6666"), id="both-differ"),
    ],
)
def test_relay_in_the_middle_fails_auth(dialer_view: tuple[str, str], listener_view: tuple[str, str]) -> None:
    # (local, remote) as each end sees its own socket; the relay forwards bytes verbatim between its two sockets.
    dialer = make_dialer(local_addr=dialer_view[0], remote_addr=dialer_view[1])
    listener = make_listener(local_addr=listener_view[0], remote_addr=listener_view[1])
    hello_d = dialer.start()
    to_dialer = deliver(listener, hello_d, wire=True)
    assert [type(f) for f in to_dialer] == [Hello, Proof]
    with pytest.raises(RemoteProtocolError) as exc_info:
        deliver(dialer, to_dialer, wire=True)
    assert exc_info.value.reason == "auth"
    assert dialer.pending_refusal == []
    assert_failed(dialer)

    # Had the dialer carried on, its proof (made over its own view of the addresses) would not verify either.
    dialer_proof = Proof(
        link_proof(
            KEY,
            "dialer",
            dialer_nonce=NONCE_D,
            listener_nonce=NONCE_L,
            dialer_addr=dialer_view[0],
            listener_addr=dialer_view[1],
        )
    )
    with pytest.raises(RemoteProtocolError) as exc_info:
        deliver(listener, [dialer_proof, Identify(PEER_D)], wire=True)
    assert exc_info.value.reason == "auth"
    assert listener.pending_refusal == [Refuse("auth", "wrong mesh key proof")]
    assert_failed(listener)


def test_replayed_listener_hello_and_proof_fail_auth() -> None:
    # Connection 1, recorded by an eavesdropper.
    listener1 = make_listener()
    recorded = deliver(listener1, make_dialer(nonce=NONCE_D).start())
    assert [type(f) for f in recorded] == [Hello, Proof]

    # Connection 2, same addresses (ports reused), but the dialer's nonce is fresh.
    dialer2 = make_dialer(nonce=NONCE_D2)
    assert dialer2.start() == [Hello(PROTOCOL_VERSION, NONCE_D2, "data")]
    sent: list[Frame] = []
    with pytest.raises(RemoteProtocolError) as exc_info:
        sent.extend(deliver(dialer2, recorded, wire=True))
    assert exc_info.value.reason == "auth"
    assert sent == []
    assert dialer2.pending_refusal == []
    assert_failed(dialer2)


def test_replayed_dialer_proof_fails_auth() -> None:
    # Connection 1, recorded: the dialer's Hello, Proof and Identify.
    dialer1 = make_dialer()
    listener1 = make_listener()
    transcript = handshake(dialer1, listener1)
    assert dialer1.is_open
    assert listener1.is_open
    hello_d, (proof_d, identify_d) = transcript[0][1], transcript[2][1]

    # Connection 2: the replayer sends the same frames to a listener with a fresh nonce.
    listener2 = make_listener(nonce=NONCE_L2)
    assert deliver(listener2, hello_d) == [
        Hello(PROTOCOL_VERSION, NONCE_L2, "data"),
        proof_for("listener", listener_nonce=NONCE_L2),
    ]
    with pytest.raises(RemoteProtocolError) as exc_info:
        deliver(listener2, [proof_d, identify_d], wire=True)
    assert exc_info.value.reason == "auth"
    assert listener2.pending_refusal == [Refuse("auth", "wrong mesh key proof")]
    assert_failed(listener2)


# --------------------------------------------------------------------------------------------------------------
# Version and malformed input


def names_version(detail: str, version: int) -> bool:
    return re.search(rf"\bversion {version}\b", detail) is not None


@pytest.mark.parametrize("version", [PROTOCOL_VERSION + 1, PROTOCOL_VERSION + 10, 0])
def test_listener_refuses_another_version(version: int) -> None:
    listener = make_listener()
    sent: list[Frame] = []
    with pytest.raises(RemoteProtocolError) as exc_info:
        sent.extend(deliver(listener, [Hello(version, NONCE_D, "data")], wire=True))
    assert exc_info.value.reason == "version"
    assert sent == []  # no Hello, no Proof: the refusal is all
    assert len(listener.pending_refusal) == 1
    refuse = listener.pending_refusal[0]
    assert isinstance(refuse, Refuse)
    assert refuse.reason == "version"
    assert names_version(refuse.detail, PROTOCOL_VERSION)
    assert names_version(refuse.detail, version)
    assert refuse.detail in str(exc_info.value)
    assert listener.remote_nonce == b""
    assert_failed(listener)

    # The dialer that gets this Refuse fails with the same reason and shows the detail.
    dialer = make_dialer()
    dialer.start()
    with pytest.raises(RemoteProtocolError) as exc_info:
        deliver(dialer, listener.pending_refusal, wire=True)
    assert exc_info.value.reason == "version"
    assert refuse.detail in str(exc_info.value)
    assert dialer.pending_refusal == []
    assert_failed(dialer)


@pytest.mark.parametrize("version", [0, -1, PROTOCOL_VERSION + 1, 2**31])
def test_dialer_refuses_a_listener_hello_of_another_version(version: int) -> None:
    dialer = make_dialer()
    dialer.start()
    with pytest.raises(RemoteProtocolError) as exc_info:
        dialer.receive(Hello(version, NONCE_L, "data"))
    assert exc_info.value.reason == "version"
    assert len(dialer.pending_refusal) == 1
    refuse = dialer.pending_refusal[0]
    assert isinstance(refuse, Refuse)
    assert refuse.reason == "version"
    assert names_version(refuse.detail, PROTOCOL_VERSION)
    assert names_version(refuse.detail, version)
    assert_failed(dialer)


@pytest.mark.parametrize("size", [0, 1, NONCE_SIZE - 1, NONCE_SIZE + 1, 2 * NONCE_SIZE])
@pytest.mark.parametrize("side", ["dialer", "listener"])
def test_hello_with_a_nonce_of_the_wrong_size_is_malformed(size: int, side: str) -> None:
    hs = make_dialer() if side == "dialer" else make_listener()
    hs.start()
    with pytest.raises(RemoteProtocolError) as exc_info:
        deliver(hs, [Hello(PROTOCOL_VERSION, b"\x07" * size, "data")], wire=True)
    assert exc_info.value.reason == "malformed"
    assert hs.remote_nonce == b""
    assert hs.pending_refusal == []
    assert_failed(hs)


@pytest.mark.parametrize("size", [0, 1, NONCE_SIZE - 1, NONCE_SIZE + 1, 2 * NONCE_SIZE])
@pytest.mark.parametrize("dialer", [True, False])
def test_local_nonce_of_the_wrong_size_is_a_local_error(size: int, dialer: bool) -> None:
    with pytest.raises(LocalProtocolError, match=str(NONCE_SIZE)):
        LinkHandshake(
            dialer=dialer,
            key=KEY,
            nonce=b"\x07" * size,
            local_addr=DIALER_ADDR,
            remote_addr=LISTENER_ADDR,
            identity=PEER_D,
        )


# --------------------------------------------------------------------------------------------------------------
# Frames out of order


def _at_stage(side: str, stage: HandshakeState) -> LinkHandshake:
    """A real dialer or listener whose real peer has driven it to ``stage`` (frames delivered one at a time)."""
    dialer = make_dialer()
    listener = make_listener()
    hs = dialer if side == "dialer" else listener
    to_listener = dialer.start()
    to_dialer: list[Frame] = []
    pending = {"dialer": to_dialer, "listener": to_listener}  # frames in flight towards each side
    while hs.state is not stage:
        inbox = pending["dialer"] if pending["dialer"] else pending["listener"]
        receiver = dialer if inbox is pending["dialer"] else listener
        other = "listener" if receiver is dialer else "dialer"
        pending[other].extend(receiver.receive(inbox.pop(0)))
    return hs


OPS = Ops(ops=(Op("peer-dialer", 1, 2, AgentSuspect("agent-1", 3, "peer-dialer")),))
HELLO = Hello(PROTOCOL_VERSION, NONCE_D2, "data")
STRAY_PROOF = proof_for("dialer")
STRAY_IDENTIFY = Identify(PEER_D, coordinator=True)

OUT_OF_ORDER: list[Any] = [
    # AWAIT_HELLO: only a Hello is acceptable.
    pytest.param("listener", HandshakeState.AWAIT_HELLO, STRAY_PROOF, id="listener-proof-before-hello"),
    pytest.param("dialer", HandshakeState.AWAIT_HELLO, proof_for("listener"), id="dialer-proof-before-hello"),
    pytest.param("listener", HandshakeState.AWAIT_HELLO, STRAY_IDENTIFY, id="listener-identify-before-hello"),
    pytest.param("dialer", HandshakeState.AWAIT_HELLO, STRAY_IDENTIFY, id="dialer-identify-before-hello"),
    pytest.param("listener", HandshakeState.AWAIT_HELLO, Heartbeat(), id="listener-heartbeat-before-hello"),
    pytest.param("dialer", HandshakeState.AWAIT_HELLO, Heartbeat(), id="dialer-heartbeat-before-hello"),
    pytest.param("listener", HandshakeState.AWAIT_HELLO, OPS, id="listener-ops-before-hello"),
    pytest.param("dialer", HandshakeState.AWAIT_HELLO, OPS, id="dialer-ops-before-hello"),
    # AWAIT_PROOF: only a Proof.
    pytest.param("listener", HandshakeState.AWAIT_PROOF, STRAY_IDENTIFY, id="listener-identify-before-proof"),
    pytest.param("dialer", HandshakeState.AWAIT_PROOF, STRAY_IDENTIFY, id="dialer-identify-before-proof"),
    pytest.param("listener", HandshakeState.AWAIT_PROOF, HELLO, id="listener-second-hello"),
    pytest.param("dialer", HandshakeState.AWAIT_PROOF, HELLO, id="dialer-second-hello"),
    pytest.param("listener", HandshakeState.AWAIT_PROOF, Heartbeat(), id="listener-heartbeat-before-proof"),
    pytest.param("dialer", HandshakeState.AWAIT_PROOF, Heartbeat(), id="dialer-heartbeat-before-proof"),
    pytest.param("listener", HandshakeState.AWAIT_PROOF, OPS, id="listener-ops-before-proof"),
    pytest.param("dialer", HandshakeState.AWAIT_PROOF, OPS, id="dialer-ops-before-proof"),
    pytest.param("dialer", HandshakeState.AWAIT_PROOF, Introduce(PEER_L), id="dialer-introduce-before-proof"),
    pytest.param("listener", HandshakeState.AWAIT_PROOF, Goodbye("bye"), id="listener-goodbye-before-proof"),
    # AWAIT_IDENTIFY: only an Identify.
    pytest.param("listener", HandshakeState.AWAIT_IDENTIFY, Heartbeat(), id="listener-heartbeat-before-identify"),
    pytest.param("dialer", HandshakeState.AWAIT_IDENTIFY, Heartbeat(), id="dialer-heartbeat-before-identify"),
    pytest.param("listener", HandshakeState.AWAIT_IDENTIFY, OPS, id="listener-ops-before-identify"),
    pytest.param("dialer", HandshakeState.AWAIT_IDENTIFY, OPS, id="dialer-ops-before-identify"),
    pytest.param("listener", HandshakeState.AWAIT_IDENTIFY, STRAY_PROOF, id="listener-second-proof"),
    pytest.param("dialer", HandshakeState.AWAIT_IDENTIFY, proof_for("listener"), id="dialer-second-proof"),
    pytest.param("dialer", HandshakeState.AWAIT_IDENTIFY, HELLO, id="dialer-hello-before-identify"),
]


@pytest.mark.parametrize(("side", "stage", "frame"), OUT_OF_ORDER)
def test_out_of_order_frame_is_unexpected(side: str, stage: HandshakeState, frame: Frame) -> None:
    hs = _at_stage(side, stage)
    with pytest.raises(RemoteProtocolError) as exc_info:
        deliver(hs, [frame], wire=True)
    assert exc_info.value.reason == "unexpected"
    message = str(exc_info.value)
    assert type(frame).__name__ in message
    assert stage.value in message
    assert hs.pending_refusal == []
    assert_failed(hs)
    assert hs.remote_coordinator is False


@pytest.mark.parametrize("side", ["dialer", "listener"])
def test_a_failed_handshake_stays_failed(side: str) -> None:
    hs = _at_stage(side, HandshakeState.AWAIT_HELLO)
    with pytest.raises(RemoteProtocolError):
        hs.receive(Heartbeat())
    assert_failed(hs)
    # Not even the frame that would have been right at the start is accepted any more.
    right = Hello(PROTOCOL_VERSION, NONCE_L if side == "dialer" else NONCE_D, "data")
    with pytest.raises(RemoteProtocolError) as exc_info:
        hs.receive(right)
    assert exc_info.value.reason == "unexpected"
    assert "failed" in str(exc_info.value)
    assert_failed(hs)


# --------------------------------------------------------------------------------------------------------------
# Refuse at any point


@pytest.mark.parametrize(
    "stage",
    [HandshakeState.AWAIT_HELLO, HandshakeState.AWAIT_PROOF, HandshakeState.AWAIT_IDENTIFY, HandshakeState.OPEN],
    ids=lambda s: s.value,
)
@pytest.mark.parametrize("side", ["dialer", "listener"])
@pytest.mark.parametrize("reason", ["auth", "version", "busy"])
def test_refuse_at_any_point_raises_its_reason(side: str, stage: HandshakeState, reason: str) -> None:
    hs = _at_stage(side, stage)
    refuse = Refuse(reason, f"detail for {reason}: go away")
    with pytest.raises(RemoteProtocolError) as exc_info:
        deliver(hs, [refuse], wire=True)
    assert exc_info.value.reason == reason
    assert f"detail for {reason}: go away" in str(exc_info.value)
    assert hs.state is HandshakeState.FAILED
    assert not hs.is_open
    assert hs.pending_refusal == []  # never answer a Refuse with a Refuse
