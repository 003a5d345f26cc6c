"""The gateway: one peer per machine carries the machine's operations to the hub and the other machines' back.

The local mesh is untouched: its peers, election and checks work as on a single machine. When the machine has
joined a hub (``agent-comms hub join``), every peer runs :func:`run_gateway`, and the one holding the gateway
*lease* (an exclusive lock on ``<home>/hub/gateway.lock``, released by the kernel when its process dies however
it dies) is the gateway. Its session with the hub:

1. **Out.** Every operation made on this machine (its origin is not a known origin of another machine) is
   published under ``ac.ops.<machine>.<kind>.<hash of its conversation, room or agent>``, with the operation id as
   ``Nats-Msg-Id``, so the hub drops one it already holds. A progress marker goes under ``mark`` with one subject
   per replacement key (conversation, recipient, status, issuing peer, claim), published as a roll-up of its
   subject: a newer marker replaces the older one in the hub too (one that is no longer the newest here when its
   turn comes is not published). A stream made by a hub of the previous version refuses roll-ups until the hub
   server restarts (which updates its configuration; a machine may not): markers then go out as plain messages
   (:meth:`Gateway._allow_rollups`). Operations are queued as this peer applies them and
   published in batches of up to :data:`PUBLISH_BATCH` (sent without waiting for each acknowledgement, then all
   awaited); one leaves the queue only once the hub acknowledged it. A session that reaches the stream the previous
   session of this gateway saw (:meth:`Gateway._queue_for_session`) publishes its queue, which is exactly what the
   hub lacks; any other session (the gateway's first, a wiped or recreated stream) starts by publishing everything
   this peer's replica stores of this machine's origins, which refills a wiped hub. The hub is a transport and a
   cache; it is never the only copy.
2. **In.** A durable consumer per machine (``ac_<machine>``) brings the other machines' operations. Each must
   come from an origin that belongs to the machine named in its subject (:class:`~.hub_origins.OriginBook`); the
   rest are refused and logged. The accepted ones enter the state machine through :meth:`MeshNode.relay
   <agent_comms.mesh.node.MeshNode.relay>`, as if from a link (every authority, visibility and clock check of the
   protocol applies), and are passed on to the local peers. They are acknowledged to the hub only once every
   local peer linked to the gateway confirmed holding them (an anti-entropy round), so a gateway killed at any
   moment loses nothing: the next one resumes from the consumer's acknowledgement floor (what the dead one had been
   handed and not acknowledged comes again after :data:`ACK_WAIT` seconds). A gateway whose local
   mesh holds nothing of the other machines (all of the machine's processes were gone) reads the stream from its
   start instead, its own machine's operations included, so it gets its own history back too. A gateway with no
   linked local peer acknowledges what it applied all the same, after marking it in ``<home>/hub/lone-ack.json``
   (removed once a linked peer holds everything it holds); a new gateway that finds the mark of another peer also
   reads the stream from its start, since what that peer acknowledged may have died with it. Whichever way it
   starts, it first applies the progress markers the stream holds beyond that point (:meth:`Gateway._marks_first`):
   a roll-up sits where it was last published, after the messages it covers, which would otherwise come first and
   be queued as unread for the agents that had read them.
3. **Presence.** The gateway refreshes its machine's key in the presence bucket every :data:`PRESENCE_REFRESH`
   seconds; keys expire :data:`~.hub_client.PRESENCE_TTL` seconds after their last refresh. A machine whose key is
   gone has its agents marked offline (:class:`~agent_comms.protocol.ops.AgentSuspect`, refuted as usual by a host
   that is in fact alive). So all of a machine's processes killed means its agents are offline on the others
   within ``PRESENCE_TTL + PRESENCE_REFRESH`` seconds (7 s).

Any failure of the session (the hub stopped, the connection lost, permissions refused) ends it; a new one starts
after a short back-off (at most :data:`MAX_BACKOFF` seconds) and republishes. Two gateways at once (a lease taken
over while the old process is stopped) do no harm: operations are idempotent and de-duplicated.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import json
import logging
import os
import time
from collections import deque
from pathlib import Path
from typing import TYPE_CHECKING, Any, Final

import msgspec
import trio

from agent_comms.protocol.errors import RemoteProtocolError
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
)
from agent_comms.protocol.replica import sync_order

from .hub_client import Collector, ack_all, aio, next_messages, publish_all
from .hub_config import CONSUMER_PREFIX, OPS_SUBJECT_ROOT, PRESENCE_BUCKET, STREAM, Bundle, load_bundle
from .hub_origins import OriginBook

if TYPE_CHECKING:
    from .node import MeshNode

__all__ = ["ACK_WAIT", "MAX_BACKOFF", "PRESENCE_REFRESH", "Gateway", "run_gateway", "subject_for"]

logger = logging.getLogger("agent_comms.mesh.gateway")

#: Seconds between two refreshes of this machine's presence key (and checks of the others').
PRESENCE_REFRESH: Final = 1.0
#: The longest pause between two sessions with the hub (seconds).
MAX_BACKOFF: Final = 2.0
#: How often a peer without the lease tries to take it (seconds).
LEASE_POLL: Final = 0.5
#: Seconds after which the hub hands an unacknowledged operation out again (to the next gateway, when the one it
#: went to died before acknowledging it); above the few seconds a batch may wait for the local peers.
ACK_WAIT: Final = 10.0
#: Operations published at once (sent without waiting for each acknowledgement, then all awaited), at most.
PUBLISH_BATCH: Final = 256
#: Operations taken from the durable consumer at once, at most.
FETCH_BATCH: Final = 256
#: JetStream's error code for a roll-up header on a stream that does not allow roll-ups (made by an older hub).
ROLLUP_REFUSED: Final = 10111
#: Operations waiting to be published while no session runs, at most (beyond, the next session rebuilds the
#: queue from the replica anyway).
MAX_QUEUED: Final = 100_000

_encoder: Final = msgspec.msgpack.Encoder()
_decoder: Final = msgspec.msgpack.Decoder(Op)


def _token(key: str) -> str:
    return hashlib.blake2b(key.encode(), digest_size=8).hexdigest()


def subject_for(machine: str, op: Op) -> str:
    """The subject an operation of ``machine`` is published under (one per conversation, room or agent, so the
    stream's per-subject limit bounds each history)."""
    body = op.body
    if isinstance(body, AgentUpsert):
        kind, key = "agent", body.agent_id
    elif isinstance(body, AgentSuspect):
        kind, key = "suspect", body.agent_id
    elif isinstance(body, RoomCreate | Membership):
        kind, key = "room", body.room_id
    elif isinstance(body, RoomMessage):
        kind, key = "msg", body.room_id
    elif isinstance(body, DirectMessage):
        kind, key = "dm", dm_conversation(body.author, body.recipient)
    elif isinstance(body, Mark):
        kind, key = "mark", f"{body.conversation}|{body.recipient}|{body.status}|{op.origin}|{body.recipient_inc}"
    elif isinstance(body, Receipt):
        kind, key = "receipt", body.conversation
    else:  # pragma: no cover - a body kind added without a subject
        raise AssertionError(f"no subject for {type(body).__name__}")
    return f"{OPS_SUBJECT_ROOT}.{machine}.{kind}.{_token(key)}"


class Gateway:
    """The gateway state of one peer (whether or not it holds the lease)."""

    def __init__(self, node: MeshNode, home: Path, bundle: Bundle) -> None:
        self.node = node
        self.home = home
        self.bundle = bundle
        self.machine = bundle.machine
        self.book = OriginBook(home)
        self.queue: deque[Op] = deque()
        self._wake = trio.Event()
        self.holds_lease = False
        self.connected = False
        self.published = 0
        self.received = 0
        self.refused = 0
        self.last_acked = ""
        self.last_error = ""
        #: operations queued for publishing when the current session started (all stored, or only what the hub
        #: had not acknowledged: see :meth:`_session`)
        self.resent = 0
        #: the hub's stream as the last session saw it (its creation time) and the highest sequence the hub gave an
        #: operation this gateway published to it; ``None`` before the first session
        self._hub_stream: str | None = None
        self._hub_seq = 0
        #: the message id of the operation the hub stored at ``_hub_seq`` ("" when none)
        self._hub_last_id = ""
        self._overflowed = False
        self._lone_marked = False
        #: whether the hub's stream takes the roll-up header (one made by an older hub does not: markers are then
        #: published as plain messages, see :meth:`_allow_rollups`)
        self._rollups = True
        self._rollups_refusal_logged = False
        #: machine -> present (per the presence bucket), for the machines this one has heard of
        self.machines: dict[str, bool] = {}
        self._status_written = 0.0
        node.peer.replica.observer = self._observe

    # ------------------------------------------------------------------ out

    def _observe(self, op: Op) -> None:
        """Every operation this peer applies: queue it if it was made on this machine."""
        if not self.holds_lease:
            return
        owner = self.book.machine_of(op.origin)
        if owner is not None and owner != self.machine:
            return
        if len(self.queue) < MAX_QUEUED:
            self.queue.append(op)
            self._wake.set()
        else:  # the next session publishes everything stored again
            self._overflowed = True

    def _local_stored(self) -> list[Op]:
        own = self.machine
        ops = [op for op in self.node.peer.replica.state.stored_ops() if self.book.machine_of(op.origin) in (None, own)]
        return sorted(ops, key=sync_order)

    def _allow_rollups(self, allowed: bool) -> None:
        """Whether to publish markers as roll-ups. A stream made by a hub of the previous version refuses the header
        (its configuration is brought up to date only when the hub server restarts, and a machine may not change
        it): markers then go out as plain messages, which the stream keeps up to its per-subject limit (the newest
        of a subject is still the one that counts, since a newer marker of the same key holds all an older one
        said)."""
        if allowed == self._rollups:
            return
        self._rollups = allowed
        if allowed:
            logger.info("gateway of machine %s: the hub's stream allows roll-ups again", self.machine)
        elif not self._rollups_refusal_logged:
            self._rollups_refusal_logged = True
            logger.warning(
                "gateway of machine %s: the hub's stream does not allow roll-ups (made by an older hub; restarting"
                " `agent-comms hub serve` updates it): progress markers are published without replacing each other"
                " meanwhile",
                self.machine,
            )

    async def _publish_loop(self, nc: Any) -> None:
        import nats.js.errors

        while True:
            while not self.queue:
                self._wake = trio.Event()
                await self._wake.wait()
            batch = [self.queue[n] for n in range(min(PUBLISH_BATCH, len(self.queue)))]
            new = {op.origin: self.machine for op in batch if self.book.machine_of(op.origin) is None}
            if new:
                self.book.learn(new)
            state = self.node.peer.replica.state
            rollups = self._rollups
            items = [
                (subject_for(self.machine, op), _encoder.encode(op), op_id(op), rollups and isinstance(op.body, Mark))
                for op in batch
                if not isinstance(op.body, Mark) or state.mark_held(op)  # a superseded marker would roll back
            ]
            try:
                acks = await publish_all(nc, items, seconds=10) if items else []
            except nats.js.errors.APIError as exc:
                if exc.err_code != ROLLUP_REFUSED or not rollups:
                    raise
                self._allow_rollups(False)  # the stream was made (or changed) by an older hub: the batch again
                continue
            for op in batch:  # dropped only once the hub acknowledged them: a failed batch is sent again
                if self.queue and self.queue[0] is op:
                    self.queue.popleft()
            if not items:
                continue
            self.published += len(items)
            self.last_acked = items[-1][2]
            for ack, (_, _, msg_id, _) in zip(acks, items, strict=True):
                if int(ack.seq or 0) > self._hub_seq:
                    self._hub_seq, self._hub_last_id = int(ack.seq), msg_id
            self._write_status()

    # ------------------------------------------------------------------ in

    def _is_local(self, origin: str) -> bool:
        peer = self.node.peer
        return origin == peer.peer_id or origin in peer.known or self.book.machine_of(origin) == self.machine

    def _accept(self, machine: str, data: bytes, learned: dict[str, str]) -> Op | None:
        """The operation in a message under ``machine``'s subjects, or ``None`` (refused, logged)."""
        try:
            op = _decoder.decode(data)
        except (msgspec.DecodeError, msgspec.ValidationError) as exc:
            logger.warning("gateway: malformed operation under machine %s refused: %s", machine, exc)
            return None
        owner = self.book.machine_of(op.origin) or learned.get(op.origin)
        if owner is None and self._is_local(op.origin):
            owner = self.machine
        if owner is not None and owner != machine:
            logger.warning(
                "gateway: operation %s published under machine %s refused: its origin belongs to %s",
                op_id(op),
                machine,
                owner,
            )
            return None
        body = op.body
        if isinstance(body, AgentUpsert):
            bound = body.agent_id.rpartition("@")[2] if "@" in body.agent_id else None
            host = bound or self._machine_of_agent(body.agent_id, learned)
            if host is not None and host != machine:
                logger.warning(
                    "gateway: operation %s published under machine %s refused: agent %s is hosted on %s",
                    op_id(op),
                    machine,
                    body.agent_id,
                    host,
                )
                return None
        learned[op.origin] = machine
        return op

    def _machine_of_agent(self, agent_id: str, learned: dict[str, str]) -> str | None:
        """The machine whose peers claimed ``agent_id`` so far, if this replica knows it. Identities of a joined
        machine name it (``…@machine``) and are its own from the start; an id chosen otherwise (through the Python
        API) belongs to the machine it was first seen hosted on, while it is known."""
        entry = self.node.peer.replica.state.agents.get(agent_id)
        if entry is None:
            return None
        for _incarnation, peer_id in sorted(entry.claims):
            owner = self.book.machine_of(peer_id) or learned.get(peer_id)
            if owner is None and self._is_local(peer_id):
                owner = self.machine
            if owner is not None:
                return owner
        return None

    async def _consume_loop(self, nc: Any, js: Any, fresh: bool) -> None:
        import nats.errors
        from nats.js import api

        durable = f"{CONSUMER_PREFIX}{self.machine}"
        if fresh:
            with contextlib.suppress(nats.js.errors.NotFoundError):  # none yet
                await aio(js.delete_consumer, STREAM, durable)
        await self._marks_first(js, durable, fresh)
        config = api.ConsumerConfig(
            ack_policy=api.AckPolicy.EXPLICIT,
            deliver_policy=api.DeliverPolicy.ALL,
            max_ack_pending=4 * FETCH_BATCH,
            ack_wait=ACK_WAIT,
        )
        collector = Collector()
        await aio(
            js.subscribe,
            f"{OPS_SUBJECT_ROOT}.>",
            durable=durable,
            stream=STREAM,
            cb=collector.put,
            manual_ack=True,
            config=config,
            pending_msgs_limit=8 * FETCH_BATCH,
        )
        while True:
            msgs = await collector.take(FETCH_BATCH, seconds=1.0)
            if not msgs:  # nothing new: wait again
                if nc.is_closed:  # (the callback cannot say so: the session ends here too)
                    raise ConnectionError("the connection to the hub is closed")
                if self._lone_marked and self.node.peer.data_links:
                    await self._settle_locally()  # a peer came: once it holds what was acknowledged alone, unmark
                continue
            learned: dict[str, str] = {}
            ops: list[Op] = []
            for msg in msgs:
                parts = msg.subject.split(".")
                machine = parts[2] if len(parts) > 2 else ""
                # This machine's own operations come back too: usually known already (dropped as duplicates), but
                # after all of the machine's processes were gone they are how it gets its own history back.
                op = self._accept(machine, msg.data, learned)
                if op is None:
                    self.refused += 1
                else:
                    ops.append(op)
            settled = True
            if ops:
                self.book.learn(learned)  # before applying: the process probe and the next gateway read it
                self._relay(ops)
                settled = await self._settle_locally()
            if settled:  # otherwise the hub hands them out again after its ack wait: nothing is lost
                await ack_all(msgs)
            self._write_status()

    async def _marks_first(self, js: Any, durable: str, fresh: bool) -> None:
        """Before catching up through the consumer, apply the progress markers the stream holds beyond where the
        consumer will start (its acknowledgement floor; the stream's start when reading it all).

        A marker is published as a roll-up of its subject: the hub keeps it at the place of its last publication,
        after every message it covers. Taken in the stream's order, those messages would come first, batch after
        batch, each applied and planned on its own: the ones a recipient hosted here had read would be queued for
        it as unread before its marker arrived (and a push bridge would show them again). Applied first, the
        markers make the messages arrive already covered. They come again through the consumer, where they are
        duplicates, and are acknowledged there. A marker stamped before the forgetting horizon for a room this
        replica does not hold yet is left to the stream's order: rule 8 would refuse it now, and a refused
        operation counts as seen (it would not be taken when its room came). An older hub that does not let a
        machine read messages by sequence leaves the markers to the stream's order too."""
        import nats.js.errors

        start = 1
        if not fresh:
            try:
                info = await aio(js.consumer_info, STREAM, durable)
            except nats.js.errors.NotFoundError:
                pass  # created from the stream's start below
            else:
                start = int(info.ack_floor.stream_seq or 0) + 1
        subject = f"{OPS_SUBJECT_ROOT}.*.mark.*"
        state = self.node.peer.replica.state
        while True:
            try:
                msgs = await next_messages(js, subject, start=start, limit=FETCH_BATCH)
            except Exception as exc:
                logger.info("gateway: cannot read the hub's markers first: %s", _describe(exc))
                return
            if not msgs:
                return
            start = int(msgs[-1].seq) + 1
            learned: dict[str, str] = {}
            ops: list[Op] = []
            for msg in msgs:
                parts = str(msg.subject).split(".")
                op = self._accept(parts[2] if len(parts) > 2 else "", msg.data or b"", learned)
                if op is None or not isinstance(op.body, Mark):
                    continue  # refused (logged); counted when the consumer brings it
                conversation = op.body.conversation
                if op.hlc >= state.horizon or conversation.startswith("dm:") or conversation in state.rooms:
                    ops.append(op)
            if ops:
                self.book.learn(learned)
                self._relay(ops)

    def _relay(self, ops: list[Op]) -> None:
        """Feed ``ops`` to the state machine; one the peer refuses (a stamp far in the future, say) is refused alone,
        so a machine publishing a bad operation cannot take the others' operations of the same batch down with it."""
        try:
            self.node.relay(ops)
        except RemoteProtocolError:
            for op in ops:
                try:
                    self.node.relay([op])
                except RemoteProtocolError as exc:
                    logger.warning("gateway: operation %s from the hub refused: %s", op_id(op), exc)
                    self.refused += 1
                else:
                    self.received += 1
        else:
            self.received += len(ops)

    async def _settle_locally(self) -> bool:
        """Wait until every local peer linked to this one holds what was relayed (an anti-entropy round), for a
        few seconds at most; whether they do. The hub is acknowledged only then, so if this process dies another
        peer of the machine still holds the operations, or the hub hands them out again. A peer with no linked
        peer holds them only in its memory: it marks that first (:meth:`_mark_lone`), so that whichever peer of the
        machine is the next gateway reads the stream from its start."""
        node = self.node
        if not node.peer.data_links:
            self._mark_lone()
            return True
        marks = node.request_sync()
        with trio.move_on_after(5.0):
            await node.wait_for(lambda: set(node.peer.synced_with(marks)) >= _linked(node, marks))
            # the linked peers hold everything this one held (a whole anti-entropy round), what it acknowledged
            # alone before included
            self._unmark_lone()
            return True
        return False

    @property
    def _lone_path(self) -> Path:
        return self.home / "hub" / "lone-ack.json"

    def _mark_lone(self) -> None:
        """Record, before acknowledging, that this peer acknowledged operations no other local peer holds."""
        if self._lone_marked:
            return
        from agent_comms.private_files import write_private_file

        write_private_file(self._lone_path, json.dumps({"peer": self.node.peer_id, "pid": os.getpid()}).encode())
        self._lone_marked = True

    def _unmark_lone(self) -> None:
        if self._lone_marked or self._lone_path.exists():
            self._lone_path.unlink(missing_ok=True)
            self._lone_marked = False

    def _lone_acknowledger(self) -> str | None:
        """Another peer that acknowledged operations to the hub while alone and was not seen to pass them on."""
        try:
            data = json.loads(self._lone_path.read_text(encoding="utf-8"))
        except (FileNotFoundError, ValueError):
            return None
        peer = str(data.get("peer", "")) if isinstance(data, dict) else ""
        if peer == self.node.peer_id:
            return None  # this peer, in an earlier session: it still holds them
        return peer or "unknown"

    # ------------------------------------------------------------------ presence

    async def _presence_loop(self, js: Any) -> None:
        import nats.js.errors

        kv = await aio(js.key_value, PRESENCE_BUCKET)
        while True:
            value = json.dumps({"peer": self.node.peer_id, "pid": os.getpid()}).encode()
            await aio(kv.put, self.machine, value)
            self.book.reload()
            for machine in sorted(self.book.machines() - {self.machine}):
                try:
                    await aio(kv.get, machine)
                except nats.js.errors.KeyNotFoundError:
                    present = False
                else:
                    present = True
                self.machines[machine] = present
                if not present:
                    self._mark_offline(machine)
            self._write_status()
            await trio.sleep(PRESENCE_REFRESH)

    def _mark_offline(self, machine: str) -> None:
        """Every agent hosted on ``machine`` that is still online here goes offline (its presence expired)."""
        origins = self.book.origins_of(machine)
        for agent_id, entry in sorted(self.node.peer.replica.state.agents.items()):
            if entry.record is None or not entry.online:
                continue
            body = entry.body
            if body.peer_id in origins:
                self.node.submit(AgentSuspect(agent_id, body.incarnation, body.peer_id))

    # ------------------------------------------------------------------ sessions

    async def _session(self) -> None:
        from .hub_client import connect

        nc = await connect(self.bundle.url, self.bundle.seed, self.bundle.cert, name=f"agent-comms {self.machine}")
        try:
            js = nc.jetstream()
            self.connected = True
            self.last_error = ""
            self.book.reload()
            foreign = {o for m in self.book.machines() - {self.machine} for o in self.book.origins_of(m)}
            # From the stream's start when this replica holds nothing of the others, or when the previous gateway
            # acknowledged operations while it was alone and may have died before passing them on.
            fresh = not any(origin in self.node.peer.replica.seen for origin in foreign)
            fresh = fresh or self._lone_acknowledger() is not None
            await self._queue_for_session(js)
            self._write_status(force=True)
            async with trio.open_nursery() as nursery:
                nursery.start_soon(self._publish_loop, nc)
                nursery.start_soon(self._consume_loop, nc, js, fresh)
                nursery.start_soon(self._presence_loop, js)
        finally:
            self.connected = False
            with trio.CancelScope(shield=True), trio.move_on_after(2):
                await aio(nc.close)

    async def _queue_for_session(self, js: Any) -> None:
        """What this session publishes first. Reconnecting to the same stream (the same creation time, and its
        last message under this machine's subjects the very one this gateway last saw acknowledged, at the same
        sequence), the queue already holds exactly what the hub has not acknowledged: every operation is dropped
        from it only once acknowledged, and the ones applied meanwhile were added. Otherwise (this peer's first
        session, a wiped or recreated stream, a hub that lost acknowledged messages of this machine, as JetStream
        may in a crash since it acknowledges before its disk has them, a queue that overflowed) everything this
        replica stores of this machine is published: the hub drops what it holds within its de-duplication
        window."""
        info = await aio(js.stream_info, STREAM)
        self._allow_rollups(bool(info.config.allow_rollup_hdrs))
        created = str(info.created)
        same = self._hub_stream == created and not self._overflowed and await self._hub_has_last(js)
        if not same:
            self.queue = deque(self._local_stored())
            self._hub_seq = 0
            self._hub_last_id = ""
            self._overflowed = False
        self._hub_stream = created
        self.resent = len(self.queue)

    async def _hub_has_last(self, js: Any) -> bool:
        """Whether the hub still holds the last operation this gateway saw it acknowledge, as the last message under
        this machine's subjects (a count of the stream's messages would not do: the other machines' publications
        make it grow past a loss). ``False`` when it cannot be known (an older hub that does not let a machine
        read a message by subject)."""
        if not self._hub_last_id:
            return self._hub_seq == 0  # nothing acknowledged yet in this peer's sessions
        try:
            last = await aio(js.get_last_msg, STREAM, f"{OPS_SUBJECT_ROOT}.{self.machine}.>")
        except Exception as exc:  # not found (lost), refused or timed out: publish everything again
            logger.info("gateway: the hub's last operation of machine %s is unknown: %s", self.machine, _describe(exc))
            return False
        headers = last.headers or {}
        return int(last.seq or 0) == self._hub_seq and headers.get("Nats-Msg-Id") == self._hub_last_id

    async def run(self) -> None:
        """Take the lease when it is free, then keep a session with the hub for as long as this peer lives."""
        lock_path = self.home / "hub" / "gateway.lock"
        lock_path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
        fd = os.open(lock_path, os.O_RDWR | os.O_CREAT, 0o600)
        try:
            while True:
                try:
                    fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                except BlockingIOError:
                    await trio.sleep(LEASE_POLL)
                    continue
                break
            await self.node.wait_synced()
            self.holds_lease = True
            logger.info("gateway: peer %s is the gateway of machine %s", self.node.peer_id, self.machine)
            backoff = 0.1
            while True:
                try:
                    await self._session()
                except Exception as exc:
                    self.last_error = _describe(exc)
                    logger.info("gateway: session with the hub ended: %s", self.last_error)
                self._write_status(force=True)
                await trio.sleep(backoff)
                backoff = min(MAX_BACKOFF, backoff * 2)
        finally:
            self.holds_lease = False
            os.close(fd)

    # ------------------------------------------------------------------ status

    def status(self) -> dict[str, Any]:
        return {
            "machine": self.machine,
            "url": self.bundle.url,
            "peer_id": self.node.peer_id,
            "pid": os.getpid(),
            "connected": self.connected,
            "lag": len(self.queue),
            "published": self.published,
            "received": self.received,
            "refused": self.refused,
            "last_acknowledged": self.last_acked,
            "resent": self.resent,
            "last_error": self.last_error,
            "machines": dict(sorted(self.machines.items())),
            "updated": time.time(),
        }

    def _write_status(self, force: bool = False) -> None:
        now = time.monotonic()
        if not force and now - self._status_written < 0.5:
            return
        self._status_written = now
        from agent_comms.private_files import write_private_file

        write_private_file(self.home / "hub" / "gateway.json", json.dumps(self.status()).encode())


def _describe(exc: BaseException) -> str:
    """The first real failure inside (possibly nested) exception groups, for the status and the log."""
    while isinstance(exc, BaseExceptionGroup) and exc.exceptions:
        exc = exc.exceptions[0]
    return f"{type(exc).__name__}: {exc}"


def _linked(node: MeshNode, marks: dict[int, int]) -> set[str]:
    """The peers still linked among those asked (a link closed meanwhile no longer counts)."""
    links = node.peer.links
    return {
        entry.peer_id for link_id in marks if (entry := links.get(link_id)) is not None and entry.peer_id is not None
    }


def read_status(home: Path) -> dict[str, Any] | None:
    """The last status the gateway of this machine wrote, or ``None``."""
    try:
        data: dict[str, Any] = json.loads((home / "hub" / "gateway.json").read_text(encoding="utf-8"))
    except (FileNotFoundError, ValueError):
        return None
    return data


async def run_gateway(node: MeshNode, home: Path) -> None:
    """Run this peer's part of the gateway if the machine has joined a hub (see the module docstring)."""
    try:
        bundle = load_bundle(home)
    except Exception as exc:
        logger.warning("gateway: cannot use the hub bundle: %s", exc)
        return
    if bundle is None:
        return
    try:
        import nats  # noqa: F401
        import trio_asyncio  # noqa: F401
    except ImportError:
        logger.warning("gateway: this machine joined a hub but the client is missing: pip install 'agent-comms[hub]'")
        return
    gateway = Gateway(node, home, bundle)
    node.gateway = gateway
    await gateway.run()
