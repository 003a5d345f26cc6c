"""Hostile frames against the framing decoder, the handshake (an unauthenticated link) and an admitted link.

Hypothesis generates the inputs: valid frames mutated at any depth of their structure (values swapped for extreme
integers, NaN, odd strings, wrong types; elements deleted, inserted, duplicated), byte-level damage (bit flips,
cuts, insertions, wrong length prefixes) and random bytes, split into arbitrary chunks. The victim is the real
peer state machine fed through the real decoder, exactly as the Trio runtime feeds it (``hostile.Victim``).

What must hold for every input:

* nothing escapes but :class:`RemoteProtocolError` (handled by closing the link): the peer never crashes;
* a closed link carries a reason naming the violation (what the runtime logs);
* on an unauthenticated link the victim sends nothing but ``Hello``, ``Proof`` and ``Refuse``, never opens the
  link and never changes its state, whichever end dialed;
* an honest peer's link to the victim keeps working after the attack (a new message from it is applied).

``AGENT_COMMS_FUZZ_EXAMPLES`` sets the number of Hypothesis examples per test (``nox -s fuzz`` runs well over
100,000 inputs in all; the normal test session a short run). The counts are printed at the end of the session.
"""

from __future__ import annotations

import itertools
import random
import re
import time

import pytest
from hostile import (
    COORDINATOR_PORT,
    COUNTER,
    FUZZ_BATCH,
    FUZZ_EXAMPLES,
    HANDSHAKE_FRAMES,
    PROTOCOL_REASONS,
    VICTIM_ADDR,
    WALL,
    WRONG_KEY,
    Link,
    Victim,
    corrupted,
    encode,
    handshake_seeds,
    healthy_link_works,
    healthy_peer,
    mutated,
    random_input,
    seeds_for,
)
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from agent_comms.protocol.auth import link_proof
from agent_comms.protocol.errors import RemoteProtocolError
from agent_comms.protocol.framing import DEFAULT_MAX_FRAME, FrameDecoder
from agent_comms.protocol.hlc import hlc_wall_ms
from agent_comms.protocol.ops import AgentUpsert, Op, RoomMessage
from agent_comms.protocol.replica import Replica
from agent_comms.protocol.wire import PROTOCOL_VERSION, Hello, Identify, Ops, Proof, SyncOps, SyncRequest

FUZZ = settings(
    max_examples=FUZZ_EXAMPLES,
    deadline=None,
    database=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large, HealthCheck.filter_too_much],
)

_reference = Victim.create()
_honest, _bob_inc = healthy_peer(_reference)
_mallory = _reference.admit("m" * 16, 41003)
ALL_SEEDS = seeds_for(_reference, _mallory, _honest, _bob_inc) + handshake_seeds(41002)


@st.composite
def hostile_bytes(draw: st.DrawFn, seeds: list) -> bytes:  # type: ignore[type-arg]
    """One hostile input: a valid, mutated or corrupted seed frame, or random bytes."""
    seed = draw(st.sampled_from(seeds))
    how = draw(st.sampled_from(["valid", "mutated", "mutated", "mutated", "corrupted", "random"]))
    if how == "valid":
        return encode(seed)
    if how == "mutated":
        return draw(mutated(seed))
    if how == "corrupted":
        return draw(corrupted(encode(seed)))
    body = draw(st.binary(max_size=64))
    prefix = draw(st.one_of(st.just(len(body)), st.integers(0, 2**32 - 1)))
    return prefix.to_bytes(4, "big") + body


def chunks(draw: st.DrawFn, data: bytes) -> list[bytes]:
    """``data`` split at random places (a TCP stream may deliver any split)."""
    cuts = sorted(set(draw(st.lists(st.integers(0, len(data)), max_size=4))))
    edges = [0, *cuts, len(data)]
    return [data[a:b] for a, b in itertools.pairwise(edges) if b > a]


# ------------------------------------------------------------------------------------------------ the decoder


@FUZZ
@given(data=st.data())
def test_the_decoder_yields_frames_or_refuses_and_stays_refused(data: st.DataObject) -> None:
    inputs = data.draw(st.lists(hostile_bytes(ALL_SEEDS), min_size=1, max_size=4))
    rng = random.Random(data.draw(st.integers(0, 2**32)))
    inputs += [random_input(ALL_SEEDS, rng) for _ in range(FUZZ_BATCH)]
    max_frame = data.draw(st.sampled_from([DEFAULT_MAX_FRAME, 64]))
    decoder = FrameDecoder(max_frame=max_frame)
    stream = b"".join(inputs)
    COUNTER.add("decoder", len(inputs))
    failed: RemoteProtocolError | None = None
    for chunk in chunks(data.draw, stream):
        decoder.feed(chunk)
        try:
            for _frame in decoder.frames():
                pass
        except RemoteProtocolError as exc:
            failed = exc
            break
        # Never more buffered than one frame under the cap plus what the last read brought.
        assert decoder.buffered <= max_frame + 4 + len(chunk)
    if failed is not None:
        assert failed.reason in ("oversized", "malformed")
        with pytest.raises(RemoteProtocolError):
            decoder.next_frame()  # poisoned for good: the stream is out of sync


# ------------------------------------------------------------------------------------------------ the handshake


def _wrong_key_proof(link: Link, nonce: bytes, *, victim_dialed: bool) -> Proof:
    """A well-formed proof made with a key that is not the mesh key, over the real nonces and addresses."""
    hello = next(f for f in link.received if isinstance(f, Hello))
    if victim_dialed:  # the stranger holds the coordinator port and proves first, as a listener does
        mac = link_proof(
            WRONG_KEY,
            "listener",
            dialer_nonce=hello.nonce,
            listener_nonce=nonce,
            dialer_addr="127.0.0.1:40500",
            listener_addr=f"127.0.0.1:{COORDINATOR_PORT}",
        )
    else:
        mac = link_proof(
            WRONG_KEY,
            "dialer",
            dialer_nonce=nonce,
            listener_nonce=hello.nonce,
            dialer_addr="127.0.0.1:41002",
            listener_addr=VICTIM_ADDR,
        )
    return Proof(mac)


@FUZZ
@given(data=st.data())
def test_a_stranger_on_an_unauthenticated_link_gets_nothing_but_the_handshake(data: st.DataObject) -> None:
    victim = Victim.create()
    digest = victim.peer.replica.state.digest()
    victim.delivered.clear()
    victim_dialed = data.draw(st.booleans())
    link = victim.dial_coordinator() if victim_dialed else victim.accept("e" * 16, 41002)
    nonce = b"s" * 16
    seeds = handshake_seeds(41002)
    if data.draw(st.booleans()):
        # A stranger that speaks the handshake correctly but with its own key.
        victim.feed_frame(link, Hello(PROTOCOL_VERSION, nonce, "data"))
        victim.feed_frame(link, _wrong_key_proof(link, nonce, victim_dialed=victim_dialed))
        COUNTER.add("handshake", 2)
    inputs = data.draw(st.lists(hostile_bytes(seeds), min_size=1, max_size=5))
    rng = random.Random(data.draw(st.integers(0, 2**32)))
    inputs += [random_input(seeds, rng) for _ in range(FUZZ_BATCH)]
    for chunk in inputs:
        victim.feed(link, chunk)
    COUNTER.add("handshake", len(inputs))
    victim.now += data.draw(st.sampled_from([0.0, 0.5, 2.0]))
    victim.run(victim.peer.handle_timer(victim.now))
    assert not victim.is_open(link)
    assert all(isinstance(f, HANDSHAKE_FRAMES) for f in link.received), link.received
    assert not any(isinstance(f, Identify) for f in link.received)
    assert victim.peer.replica.state.digest() == digest
    assert victim.delivered == []
    if link.closed is not None:
        # A reason of ours, or the one word of a stranger's Refuse (quoted detail after it).
        assert re.match(r"[a-z][a-z0-9_-]*: |handshake timed out|squatter\? ", link.closed), link.closed


# ------------------------------------------------------------------------------------------------ an admitted link


@FUZZ
@given(data=st.data())
def test_hostile_frames_on_an_admitted_link_close_only_that_link(data: st.DataObject) -> None:
    victim = Victim.create()
    honest, bob_inc = healthy_peer(victim)
    mallory = victim.admit("m" * 16, 41003)
    assert victim.is_open(mallory)
    seeds = seeds_for(victim, mallory, honest, bob_inc)
    inputs = data.draw(st.lists(hostile_bytes(seeds), min_size=1, max_size=6))
    for chunk in chunks(data.draw, b"".join(inputs)):
        victim.feed(mallory, chunk)
    rng = random.Random(data.draw(st.integers(0, 2**32)))
    for _ in range(FUZZ_BATCH):  # each on a fresh admitted link once the previous one was closed
        if mallory.closed is not None:
            assert mallory.closed.startswith(PROTOCOL_REASONS), mallory.closed
            mallory = victim.admit("m" * 16, 41003 + rng.randrange(1, 1000))
        victim.feed(mallory, random_input(seeds, rng))
        inputs.append(b"")
    COUNTER.add("admitted", len(inputs))
    victim.now += data.draw(st.sampled_from([0.0, 0.2]))
    victim.run(victim.peer.handle_timer(victim.now))
    if mallory.closed is not None:
        assert mallory.closed.startswith(PROTOCOL_REASONS), mallory.closed
    # The honest peer's link is unaffected and the victim answers it as before.
    assert healthy_link_works(victim, honest, bob_inc, "still here")
    # The victim still makes operations of its own (a stamp pushed out of range would fail to encode here).
    alice = victim.peer.hosted["alice"]
    victim.run(victim.peer.submit(RoomMessage(victim.lobby, "alice", alice.incarnation, "mine"), victim.now))
    victim.run(victim.peer.host_agent(alice, victim.now))
    state = victim.peer.replica.state
    for name in list(state.room_names):
        state.room(name)
    answer = victim.peer.frame_received(honest.link_id, SyncRequest(b"", {}), victim.now)
    victim.run(answer)  # encodes every frame of the anti-entropy answer
    copy = Replica.create("f" * 16)
    for frame in honest.received:
        if hasattr(frame, "ops"):
            copy.receive_many(frame.ops)


def test_one_invalid_byte_closes_an_unauthenticated_link() -> None:
    """The harness itself: a decoder error closes the link with its reason, as the runtime does."""
    started = time.perf_counter()
    victim = Victim.create()
    link = victim.accept("e" * 16, 41002)
    victim.feed(link, b"\x00\x00\x00\x01\xc1")  # 0xc1 is never valid msgpack
    assert link.closed is not None
    assert link.closed.startswith("malformed")
    assert time.perf_counter() - started < 5


@pytest.mark.parametrize("relayed", [False, True])
@pytest.mark.parametrize(
    "stamp", [("hlc", 2**64 - 1), ("hlc", -1), ("incarnation", 2**64 - 1), ("hlc", "future")], ids=str
)
def test_an_operation_stamped_out_of_range_is_refused_and_the_clock_stays_sane(
    stamp: tuple[str, object], relayed: bool
) -> None:
    """Regression: an admitted peer could push the victim's hybrid clock to 2**64 - 1 with one operation; the
    victim's next operation of its own then failed to encode and took the runtime down."""
    victim = Victim.create()
    honest, bob_inc = healthy_peer(victim)
    mallory = victim.admit("m" * 16, 41003)
    field, value = stamp
    now_hlc = int((victim.now + WALL) * 1000) << 16
    if value == "future":
        value = now_hlc + (int(victim.peer.config.max_clock_ahead * 1000 + 5000) << 16)
    hlc = value if field == "hlc" else now_hlc
    incarnation = value if field == "incarnation" else now_hlc
    body = AgentUpsert("mallory", "m" * 16, incarnation, 0, "mallory", "t", "/", 0, 0.0)
    op = Op("m" * 16, 1, hlc, body)  # type: ignore[arg-type]
    clock = victim.peer.replica.hlc.last
    victim.feed_frame(mallory, SyncOps((op,)) if relayed else Ops((op,)))
    assert mallory.closed is not None
    assert mallory.closed.startswith("clock"), mallory.closed
    assert victim.peer.replica.hlc.last == clock
    assert "mallory" not in victim.peer.replica.state.agents
    alice = victim.peer.hosted["alice"]
    victim.run(victim.peer.submit(RoomMessage(victim.lobby, "alice", alice.incarnation, "fine"), victim.now))
    victim.run(victim.peer.host_agent(alice, victim.now))
    assert healthy_link_works(victim, honest, bob_inc, "still here")


def test_a_stamp_cannot_raise_the_bound_it_is_checked_against() -> None:
    """The bound on received stamps counts from this peer's own wall-clock readings, never from a stamp it
    accepted: a peer that has the key cannot walk the hybrid clock towards overflow a year at a time."""
    victim = Victim.create()
    honest, bob_inc = healthy_peer(victim)
    mallory = victim.admit("m" * 16, 41003)
    ahead_ms = int(victim.peer.config.max_clock_ahead * 1000)
    stamp = int((victim.now + WALL) * 1000) << 16
    for step in range(2):
        stamp += (ahead_ms - 1000) << 16  # a second inside the bound, counted from the last accepted stamp
        body = AgentUpsert("mallory", "m" * 16, stamp, step, "mallory", "t", "/", 0, 0.0)
        victim.feed_frame(mallory, Ops((Op("m" * 16, step + 1, stamp, body),)))
        if step == 0:
            assert mallory.closed is None  # a year ahead of this clock, at most: accepted
    assert mallory.closed is not None
    assert mallory.closed.startswith("clock"), mallory.closed
    assert hlc_wall_ms(victim.peer.replica.hlc.last) <= (victim.now + WALL) * 1000 + ahead_ms
    assert healthy_link_works(victim, honest, bob_inc, "still here")
