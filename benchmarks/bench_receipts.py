"""What per-message receipts (protocol version 1) and progress markers (version 2) cost the protocol: bytes on the
wire, protocol CPU and memory held, per DM round trip and per room message, against the messages themselves.
Sans-IO (replicas in one process, no sockets), so the figures are the protocol's own share, without Trio or the
kernel.

    python benchmarks/bench_receipts.py [--rounds 2000] [--chunks 10] [--members 15] [--held 10000]

A DM round trip is what the mesh carries when agent A (on peer pa) sends B (on peer pb) a DM and B answers: two
messages, and for each a ``delivered`` and a ``read`` receipt from the recipient's peer, every operation in a frame
of its own (as live operations are sent today), made and applied by its peer and applied by the other. A room
message is one message and the two receipts of each member, every member on a peer of its own; CPU is what one
member's peer spends on it. Memory is what a replica holds per message, with and without its receipts.

The same traffic with progress markers (:class:`~agent_comms.protocol.ops.Mark`, docs/receipts.md) instead: each
recipient's peer sends one cumulative ``read`` marker per message shown (a push bridge showing it at once: the
``delivered`` one is coalesced into it), built with the store's range builder, made, encoded, decoded and applied
like the rest. That is the markers' worst case: a drain of several messages sends one marker for all of them.
"""

from __future__ import annotations

import argparse
import gc
import statistics
import time
import tracemalloc
from collections.abc import Callable

import msgspec

from agent_comms.protocol.coverage import RangeBuilder
from agent_comms.protocol.framing import encode_frame
from agent_comms.protocol.ops import (
    AgentUpsert,
    Body,
    DirectMessage,
    Mark,
    Membership,
    Op,
    Receipt,
    ReceiptStatus,
    RoomCreate,
    RoomMessage,
    dm_conversation,
    op_id,
    op_key,
)
from agent_comms.protocol.replica import Replica
from agent_comms.protocol.state import MeshState
from agent_comms.protocol.wire import Ops

#: ids as long as real ones (an agent id is ``<harness>-<10 hex digits>``; a peer id about as long)
ALICE, BOB = "claude-code-3f9a1c02be", "codex-77d0e4a1c5"
TEXT = "please rebase onto main and run the protocol tests again"


def _receipt(message: Op, recipient: str, inc: int, status: ReceiptStatus) -> Receipt:
    body = message.body
    conversation = dm_conversation(body.author, body.recipient) if isinstance(body, DirectMessage) else body.room_id  # type: ignore[union-attr]
    return Receipt(op_id(message), conversation, op_key(message), recipient, inc, status)


def _frame_bytes(op: Op) -> int:
    return len(encode_frame(Ops((op,))))  # length prefix included


class Clock:
    """Milliseconds that always move forward."""

    def __init__(self) -> None:
        self.now = int(time.time() * 1000)

    def __call__(self) -> int:
        self.now += 1
        return self.now


def _send(clock: Clock, origin: Replica, others: list[Replica], body: Body, cpu: dict[str, float]) -> Op:
    """Make ``body`` on ``origin`` and deliver it to ``others`` through an encoded frame; add CPU by kind."""
    kind = "receipt" if isinstance(body, Receipt | Mark) else "message"
    decoder = msgspec.msgpack.Decoder(Ops)
    started = time.perf_counter()
    op, _ = origin.make(body, clock())
    data = encode_frame(Ops((op,)))
    made = time.perf_counter()
    for other in others:
        begin = time.perf_counter()
        frame = decoder.decode(memoryview(data)[4:])
        other.receive_many(frame.ops)
        cpu[kind] += time.perf_counter() - begin
    cpu[kind] += made - started
    return op


def _register(clock: Clock, replica: Replica, agent_id: str) -> int:
    inc = replica.hlc.tick(clock())
    replica.make(AgentUpsert(agent_id, replica.peer_id, inc, 1, agent_id, "bench", "/tmp", 1, 0.0), clock())
    return inc


def dm_round_trips(rounds: int) -> dict[str, float]:
    clock = Clock()
    pa, pb = Replica.create("pa-5d1e0c7b9a2f"), Replica.create("pb-0e8c4a6d3b1f")
    inc_a, inc_b = _register(clock, pa, ALICE), _register(clock, pb, BOB)
    for op in pa.state.stored_ops():
        pb.receive(op)
    for op in pb.state.stored_ops():
        pa.receive(op)
    totals: dict[str, list[float]] = {"message": [], "receipt": []}
    sizes = {"message": 0, "receipt": 0}
    for _ in range(rounds):
        cpu = {"message": 0.0, "receipt": 0.0}
        ask = _send(clock, pa, [pb], DirectMessage(ALICE, inc_a, BOB, TEXT), cpu)
        delivered = _send(clock, pb, [pa], _receipt(ask, BOB, inc_b, "delivered"), cpu)
        read = _send(clock, pb, [pa], _receipt(ask, BOB, inc_b, "read"), cpu)
        answer = _send(clock, pb, [pa], DirectMessage(BOB, inc_b, ALICE, TEXT), cpu)
        delivered2 = _send(clock, pa, [pb], _receipt(answer, ALICE, inc_a, "delivered"), cpu)
        read2 = _send(clock, pa, [pb], _receipt(answer, ALICE, inc_a, "read"), cpu)
        for kind, seconds in cpu.items():
            totals[kind].append(seconds)
        sizes = {
            "message": _frame_bytes(ask) + _frame_bytes(answer),
            "receipt": sum(map(_frame_bytes, (delivered, read, delivered2, read2))),
        }
    return {
        "message_cpu_us": statistics.median(totals["message"]) * 1e6,
        "receipt_cpu_us": statistics.median(totals["receipt"]) * 1e6,
        "message_bytes": sizes["message"],
        "receipt_bytes": sizes["receipt"],
    }


def dm_round_trips_marked(rounds: int) -> dict[str, float]:
    """The same round trips with one cumulative ``read`` marker per message instead of its two receipts."""
    clock = Clock()
    pa, pb = Replica.create("pa-5d1e0c7b9a2f"), Replica.create("pb-0e8c4a6d3b1f")
    inc_a, inc_b = _register(clock, pa, ALICE), _register(clock, pb, BOB)
    for op in pa.state.stored_ops():
        pb.receive(op)
    for op in pb.state.stored_ops():
        pa.receive(op)
    conversation = dm_conversation(ALICE, BOB)
    shown_b, shown_a = RangeBuilder(), RangeBuilder()
    totals: dict[str, list[float]] = {"message": [], "receipt": []}
    sizes = {"message": 0, "receipt": 0}
    for _ in range(rounds):
        cpu = {"message": 0.0, "receipt": 0.0}
        ask = _send(clock, pa, [pb], DirectMessage(ALICE, inc_a, BOB, TEXT), cpu)
        started = time.perf_counter()
        shown_b.add(ask.origin, ask.body.n)  # type: ignore[union-attr]
        body = Mark(conversation, BOB, inc_b, "read", shown_b.wire())
        cpu["receipt"] += time.perf_counter() - started
        read = _send(clock, pb, [pa], body, cpu)
        answer = _send(clock, pb, [pa], DirectMessage(BOB, inc_b, ALICE, TEXT), cpu)
        started = time.perf_counter()
        shown_a.add(answer.origin, answer.body.n)  # type: ignore[union-attr]
        body = Mark(conversation, ALICE, inc_a, "read", shown_a.wire())
        cpu["receipt"] += time.perf_counter() - started
        read2 = _send(clock, pa, [pb], body, cpu)
        for kind, seconds in cpu.items():
            totals[kind].append(seconds)
        sizes = {
            "message": _frame_bytes(ask) + _frame_bytes(answer),
            "receipt": _frame_bytes(read) + _frame_bytes(read2),
        }
    assert pa.state.receipt_status(op_id(ask), BOB) == "read"
    assert pb.state.receipt_status(op_id(answer), ALICE) == "read"
    return {
        "message_cpu_us": statistics.median(totals["message"]) * 1e6,
        "receipt_cpu_us": statistics.median(totals["receipt"]) * 1e6,
        "message_bytes": sizes["message"],
        "receipt_bytes": sizes["receipt"],
    }


def member_receive_cpu(rounds: int, members: int, *, marked: bool = False, drain: int = 1) -> dict[str, float]:
    """One member's peer: CPU to receive a room message and the other members' two receipts each (decoded frames);
    ``marked``: each member's one cumulative ``read`` marker instead, once every ``drain`` messages (a bridge that
    shows ``drain`` messages at a time). With ``drain`` above 1, the markers' CPU (median per drain) and bytes are
    divided by ``drain``: per message."""
    clock = Clock()
    member = Replica.create("pm-0f1e2d3c4b5a")
    author_inc = clock() << 16
    member.receive(
        Op(
            "ps-7a2b9c4d1e0f",
            1,
            author_inc,
            AgentUpsert(ALICE, "ps-7a2b9c4d1e0f", author_inc, 1, "a", "b", "/", 1, 0.0),
        )
    )
    create = Op(
        "ps-7a2b9c4d1e0f", 2, clock() << 16, RoomCreate("ps-7a2b9c4d1e0f-2", "bench", "public", "", ALICE, author_inc)
    )
    member.receive(create)
    room_id = op_id(create)
    seqs = {"ps-7a2b9c4d1e0f": 2}
    others = [(f"pm{i:02d}-{i:010x}", f"member-{i:02d}-{i:08x}") for i in range(members)]
    incs: dict[str, int] = {}
    for peer, agent in others:
        inc = incs[agent] = clock() << 16
        member.receive(Op(peer, 1, inc, AgentUpsert(agent, peer, inc, 1, agent, "b", "/", 1, 0.0)))
        member.receive(Op(peer, 2, clock() << 16, Membership(room_id, "join", agent, inc)))
        seqs[peer] = 2

    def frame(origin: str, body: Body) -> bytes:
        seqs[origin] += 1
        return encode_frame(Ops((Op(origin, seqs[origin], clock() << 16, body),)))

    decoder = msgspec.msgpack.Decoder(Ops)
    message_cpu, receipt_cpu = [], []
    shown = {agent: RangeBuilder() for _peer, agent in others}
    for n in range(1, rounds + 1):
        data = frame("ps-7a2b9c4d1e0f", RoomMessage(room_id, ALICE, author_inc, TEXT, n=n if marked else 0))
        started = time.perf_counter()
        ops = decoder.decode(memoryview(data)[4:]).ops
        member.receive_many(ops)
        message_cpu.append(time.perf_counter() - started)
        message_bytes = len(data)
        message = ops[0]
        if marked:
            frames = []
            for peer, agent in others:
                shown[agent].add(message.origin, n)
                if n % drain == 0:
                    frames.append(frame(peer, Mark(room_id, agent, incs[agent], "read", shown[agent].wire())))
            if frames:
                marker_bytes = sum(map(len, frames))
        else:
            frames = [
                frame(peer, _receipt(message, agent, incs[agent], s))
                for s in ("delivered", "read")
                for peer, agent in others
            ]
        started = time.perf_counter()
        for chunk in frames:
            member.receive_many(decoder.decode(memoryview(chunk)[4:]).ops)
        if frames:
            receipt_cpu.append(time.perf_counter() - started)
    assert all(member.state.receipt_status(op_id(message), agent) == "read" for _peer, agent in others)
    if drain > 1:
        return {
            "message_cpu_us": statistics.median(message_cpu) * 1e6,
            "receipt_cpu_us": statistics.median(receipt_cpu) * 1e6 / drain,
            "message_bytes": message_bytes,
            "receipt_bytes": marker_bytes / drain,
        }
    return {
        "message_cpu_us": statistics.median(message_cpu) * 1e6,
        "receipt_cpu_us": statistics.median(receipt_cpu) * 1e6,
        "message_bytes": message_bytes,
        "receipt_bytes": sum(map(len, frames)),
    }


def held_bytes(held: int, recipients: int) -> dict[str, float]:
    """Bytes a replica holds per message (``held`` DMs in conversations of 1,000), without and with ``recipients``
    read receipts each (a ``read`` supersedes the ``delivered`` under the same claim, so one op per recipient), and
    with each recipient's cumulative ``read`` marker instead (one per conversation, replaced as it grows)."""

    def build(extra: str) -> Callable[[], MeshState]:
        def make() -> MeshState:
            state = MeshState(history_limit=1000)
            seq = 0
            shown: dict[str, RangeBuilder] = {}
            for n in range(held):
                seq += 1
                author, recipient = f"agent-{n % 10:02d}-0123456789", f"agent-{n % 10 + 10:02d}-0123456789"
                number = n // 10 + 1
                body = DirectMessage(author, 0, recipient, f"{TEXT} {n}", n=number if extra == "marks" else 0)
                message = Op("pa-5d1e0c7b9a2f", seq, seq << 16, body)
                state.apply(message)
                for r in range(recipients if extra else 0):
                    seq += 1
                    reader = recipient if r == 0 else f"{recipient}-{r}"
                    if extra == "receipts":
                        receipt: Body = _receipt(message, reader, 0, "read")
                    else:
                        builder = shown.setdefault(reader, RangeBuilder())
                        builder.add(message.origin, number)
                        receipt = Mark(dm_conversation(author, recipient), reader, 0, "read", builder.wire())
                    state.apply(Op("pb-0e8c4a6d3b1f", seq, seq << 16, receipt))
            return state

        return make

    results = {}
    for label, extra in (("without", ""), ("with", "receipts"), ("marks", "marks")):
        gc.collect()
        tracemalloc.start()
        state = build(extra)()
        current, _peak = tracemalloc.get_traced_memory()
        tracemalloc.stop()
        results[label] = current / held
        del state
    return {
        "bytes_per_message": results["without"],
        "receipt_bytes_per_message": results["with"] - results["without"],
        "marker_bytes_per_message": results["marks"] - results["without"],
    }


def interleaved(variants: dict[str, Callable[[], dict[str, float]]], chunks: int) -> dict[str, dict[str, float]]:
    """Run the variants alternately, ``chunks`` times each (so a change in the machine's load falls on all of them
    alike); per variant and figure, the median of the chunks' figures."""
    seen: dict[str, list[dict[str, float]]] = {label: [] for label in variants}
    for _ in range(chunks):
        for label, run in variants.items():
            seen[label].append(run())
    return {
        label: {key: statistics.median(result[key] for result in results) for key in results[0]}
        for label, results in seen.items()
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--rounds", type=int, default=2000)
    parser.add_argument("--chunks", type=int, default=10, help="the rounds run in this many alternating chunks")
    parser.add_argument("--members", type=int, default=15)
    parser.add_argument("--held", type=int, default=10_000)
    args = parser.parse_args()
    per_chunk = max(10, args.rounds // args.chunks // 10 * 10)
    print(f"{args.chunks} chunks of {per_chunk} rounds per variant, receipts and markers alternately")
    dms = interleaved(
        {
            "4 receipts": lambda: dm_round_trips(per_chunk),
            "2 markers": lambda: dm_round_trips_marked(per_chunk),
        },
        args.chunks,
    )
    for label, dm in dms.items():
        total_bytes = dm["message_bytes"] + dm["receipt_bytes"]
        total_cpu = dm["message_cpu_us"] + dm["receipt_cpu_us"]
        print(f"DM round trip (2 messages, {label}, one op per frame)")
        mb, rb, mc, rc = dm["message_bytes"], dm["receipt_bytes"], dm["message_cpu_us"], dm["receipt_cpu_us"]
        print(f"  bytes: messages {mb:.0f}, {label[2:]} {rb:.0f} ({rb / total_bytes:.0%})")
        print(f"  protocol CPU, both peers: messages {mc:.1f} us, {label[2:]} {rc:.1f} us ({rc / total_cpu:.0%})")
    for members in (1, args.members):

        def variant(marked: bool, drain: int, members: int = members) -> Callable[[], dict[str, float]]:
            return lambda: member_receive_cpu(per_chunk, members, marked=marked, drain=drain)

        rooms = interleaved(
            {
                f"{2 * members} receipts": variant(False, 1),
                f"{members} markers": variant(True, 1),
                f"{members} markers every 10 messages, per message": variant(True, 10),
            },
            args.chunks,
        )
        for what, room in rooms.items():
            share = room["receipt_cpu_us"] / (room["receipt_cpu_us"] + room["message_cpu_us"])
            print(
                f"room message, {members} other member(s): a member's peer receives it in "
                f"{room['message_cpu_us']:.1f} us, the members' {what} in {room['receipt_cpu_us']:.1f} us "
                f"({share:.0%} of its CPU); bytes: message {room['message_bytes']:.0f}, {what} "
                f"{room['receipt_bytes']:.0f}"
            )
    mem = held_bytes(args.held, 1)
    print(
        f"held per DM ({args.held} held): {mem['bytes_per_message']:.0f} B without receipts, "
        f"+{mem['receipt_bytes_per_message']:.0f} B for its recipient's receipt, "
        f"+{mem['marker_bytes_per_message']:.0f} B for its recipient's markers instead"
    )


if __name__ == "__main__":
    main()
