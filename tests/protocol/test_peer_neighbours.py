"""What strangers and other meshes can do to a peer's protocol state: the frame cap before authentication, peers of
another coordinator port, and a dial that fails while the same peer has linked to us the other way.

Pure state machines, no sockets: two :class:`Peer` objects (or two :class:`LinkHandshake` objects) and a helper that
carries the frames each sends to the other through the real framing code.
"""

from __future__ import annotations

import random

import pytest

from agent_comms.protocol.commands import Command, Dial, Send
from agent_comms.protocol.errors import RemoteProtocolError
from agent_comms.protocol.framing import DEFAULT_MAX_FRAME, FrameDecoder, encode_frame, encode_frames
from agent_comms.protocol.link import MAX_HANDSHAKE_FRAME, LinkHandshake
from agent_comms.protocol.peer import Peer, PeerConfig
from agent_comms.protocol.wire import PROTOCOL_VERSION, Hello, Identify, PeerInfo, Proof, Refuse

KEY = bytes(range(32))


def _peer(started_at: float, data_port: int, *, port: int = 40000, seed: int = 1) -> Peer:
    return Peer.create(
        key=KEY,
        config=PeerConfig(coordinator_port=port),
        rng=random.Random(seed),
        pid=1000 + data_port,
        started_at=started_at,
        data_port=data_port,
    )


def _carry(a: Peer, a_link: int, b: Peer, b_link: int, commands: list[Command], now: float) -> None:
    """Deliver ``a``'s frames on ``a_link`` to ``b`` (and the answers back), through real bytes, until quiet."""
    pending: list[tuple[Peer, int, Peer, int, list[Command]]] = [(a, a_link, b, b_link, commands)]
    while pending:
        sender, sender_link, receiver, receiver_link, out = pending.pop(0)
        for command in out:
            if isinstance(command, Send) and command.link_id == sender_link:
                decoder = FrameDecoder()
                decoder.feed(encode_frames(command.frames))
                for frame in decoder.frames():
                    answer = receiver.frame_received(receiver_link, frame, now)
                    pending.append((receiver, receiver_link, sender, sender_link, answer))


# ---------------------------------------------------------------- dial_failed while linked the other way


def test_a_failed_dial_to_a_peer_that_linked_to_us_meanwhile_keeps_it_known_and_ranked() -> None:
    """The sequence that used to end the owner task: X is linked inbound while our own dial to X fails; the next
    rank computation (here: the coordinator dial failing too) must neither raise nor forget X."""
    a = _peer(started_at=10.0, data_port=41001, seed=1)
    x = _peer(started_at=5.0, data_port=41002, seed=2)  # runs longer than a: it ranks first
    a.start(0.0)
    [dial_coordinator] = [c for c in a.coordinator_bind_failed(0.0) if isinstance(c, Dial)]
    [dial_x] = [c for c in a.peers_discovered([x.info], 0.0) if isinstance(c, Dial)]
    # Meanwhile X dials a, and that link opens first.
    x.start(0.0)
    [x_dial] = [c for c in x.peers_discovered([a.info], 0.0) if isinstance(c, Dial)]
    hello = x.link_opened(x_dial.link_id, 0.0, local_addr="127.0.0.1:50000", remote_addr="127.0.0.1:41001")
    a_link, _ = a.accept(0.0, local_addr="127.0.0.1:41001", remote_addr="127.0.0.1:50000")
    _carry(x, x_dial.link_id, a, a_link, hello, 0.0)
    assert a.data_links == {x.peer_id: a_link}

    a.dial_failed(dial_x.link_id, 0.1, "ConnectionRefusedError: [Errno 111] Connection refused")
    assert x.peer_id in a.known  # still linked: still known

    a.dial_failed(dial_coordinator.link_id, 0.1, "ConnectionRefusedError: [Errno 111] Connection refused")
    # Rank 1 (x started first): a tries the port one stagger after x would.
    assert a.get_timer() == pytest.approx(0.1 + a.config.bind_stagger)


def test_the_rank_counts_every_linked_peer_even_one_missing_from_the_known_table() -> None:
    a = _peer(started_at=10.0, data_port=41001, seed=1)
    x = _peer(started_at=5.0, data_port=41002, seed=2)
    a.start(0.0)
    x.start(0.0)
    [x_dial] = [c for c in x.peers_discovered([a.info], 0.0) if isinstance(c, Dial)]
    hello = x.link_opened(x_dial.link_id, 0.0, local_addr="127.0.0.1:50000", remote_addr="127.0.0.1:41001")
    a_link, _ = a.accept(0.0, local_addr="127.0.0.1:41001", remote_addr="127.0.0.1:50000")
    _carry(x, x_dial.link_id, a, a_link, hello, 0.0)
    a.known.clear()  # whatever bookkeeping drops it, the link itself says who is there
    [dial_coordinator] = [c for c in a.coordinator_bind_failed(0.05) if isinstance(c, Dial)]
    a.dial_failed(dial_coordinator.link_id, 0.05, "refused")
    assert a.get_timer() == pytest.approx(0.05 + a.config.bind_stagger)


# ---------------------------------------------------------------- the frame cap before authentication


def _largest_handshake_frames() -> list[bytes]:
    """Every handshake frame, as large as real values make it (the longest refusal the handshake writes)."""
    info = PeerInfo("f" * 16, 2**22, 1e10, 65535, 1e9, 65535)
    frames: list[bytes] = [
        encode_frame(Hello(PROTOCOL_VERSION, bytes(16), "observer")),
        encode_frame(Proof(bytes(32))),
        encode_frame(Identify(info, coordinator=True)),
    ]
    # The refusals the handshake really sends, produced by it: a wrong version, a wrong key, another mesh.
    listener = LinkHandshake(False, KEY, bytes(16), "127.0.0.1:65535", "127.0.0.1:65535", info)
    with pytest.raises(RemoteProtocolError):
        listener.receive(Hello(2**31, bytes(16)))
    other = LinkHandshake(False, KEY, bytes(16), "127.0.0.1:65535", "127.0.0.1:65535", info)
    other.state = other.state.AWAIT_IDENTIFY
    with pytest.raises(RemoteProtocolError):
        other.receive(Identify(PeerInfo("e" * 16, 1, 1.0, 1, 0.0, 1)))
    refusals = [*listener.pending_refusal, *other.pending_refusal, Refuse("auth", "wrong mesh key proof")]
    frames += [encode_frame(frame) for frame in refusals]
    return frames


def test_every_real_handshake_frame_fits_well_inside_the_cap_before_authentication() -> None:
    sizes = [len(data) - 4 for data in _largest_handshake_frames()]
    assert max(sizes) * 2 <= MAX_HANDSHAKE_FRAME < DEFAULT_MAX_FRAME // 100
    decoder = FrameDecoder(MAX_HANDSHAKE_FRAME)
    decoder.feed(b"".join(_largest_handshake_frames()))
    assert len(list(decoder.frames())) == len(sizes)


def test_a_frame_header_over_the_cap_is_refused_before_its_body_arrives() -> None:
    decoder = FrameDecoder(MAX_HANDSHAKE_FRAME)
    decoder.feed((DEFAULT_MAX_FRAME - 1).to_bytes(4, "big"))
    with pytest.raises(RemoteProtocolError) as refused:
        decoder.next_frame()
    assert refused.value.reason == "oversized"
    assert decoder.buffered == 4


# ---------------------------------------------------------------- a mesh is its port


def _handshake_pair(dialer_port: int, listener_port: int) -> tuple[LinkHandshake, LinkHandshake]:
    dialer = LinkHandshake(
        True,
        KEY,
        bytes(range(16)),
        "127.0.0.1:5555",
        "127.0.0.1:40000",
        PeerInfo("d" * 16, 1, 1.0, 41001, 0.0, dialer_port),
    )
    listener = LinkHandshake(
        False,
        KEY,
        bytes(range(16, 32)),
        "127.0.0.1:40000",
        "127.0.0.1:5555",
        PeerInfo("l" * 16, 2, 2.0, 41002, 0.0, listener_port),
    )
    return dialer, listener


def _run(
    dialer: LinkHandshake, listener: LinkHandshake
) -> tuple[RemoteProtocolError | None, RemoteProtocolError | None]:
    """Run the handshake to its end; the error each side raised, if any."""
    errors: dict[bool, RemoteProtocolError | None] = {True: None, False: None}
    queue = [(listener, frame) for frame in dialer.start()]
    while queue:
        side, frame = queue.pop(0)
        if errors[side.dialer] is not None:
            continue
        try:
            replies = side.receive(frame)
        except RemoteProtocolError as exc:
            errors[side.dialer] = exc
            replies = list(side.pending_refusal)
        other = listener if side.dialer else dialer
        queue += [(other, reply) for reply in replies]
    return errors[True], errors[False]


def test_peers_of_another_port_are_refused_by_both_ends_naming_both_ports() -> None:
    dialer, listener = _handshake_pair(40000, 40001)
    dialer_error, listener_error = _run(dialer, listener)
    assert listener_error is not None
    assert listener_error.reason == "mesh"
    assert dialer_error is not None
    assert dialer_error.reason == "mesh"
    for error in (dialer_error, listener_error):
        assert "40000" in str(error)
        assert "40001" in str(error)
    assert not dialer.is_open
    assert not listener.is_open
    [refusal] = listener.pending_refusal
    assert isinstance(refusal, Refuse)
    assert refusal.reason == "mesh"


@pytest.mark.parametrize(("dialer_port", "listener_port"), [(40000, 40000), (0, 40000), (40000, 0)])
def test_peers_of_the_same_port_or_of_an_older_version_that_does_not_say_link(
    dialer_port: int, listener_port: int
) -> None:
    dialer, listener = _handshake_pair(dialer_port, listener_port)
    assert _run(dialer, listener) == (None, None)
    assert dialer.is_open
    assert listener.is_open


def test_a_peer_dials_registered_and_introduced_peers_of_its_own_port_only() -> None:
    a = _peer(started_at=10.0, data_port=41001, port=40000)
    same = _peer(started_at=5.0, data_port=41002, port=40000, seed=2).info
    other = _peer(started_at=5.0, data_port=41003, port=40001, seed=3).info
    a.start(0.0)
    dials = [c for c in a.peers_discovered([same, other], 0.0) if isinstance(c, Dial)]
    assert [d.port for d in dials] == [41002]
    assert a.info.port == 40000
