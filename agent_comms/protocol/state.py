"""The replicated mesh state and its merge rules.

Theory of operation
===================

Every peer holds a full replica of the mesh: agents, rooms, room messages, direct messages and progress markers
(and the per-message receipts of protocol version 1).
The replica changes only by applying operations (:mod:`agent_comms.protocol.ops`), which peers broadcast when
they make them and exchange again by anti-entropy. The network may deliver an operation late, twice, or in any
order relative to others, so every rule below is written so that the result depends only on *which* operations a
peer holds, never on the order they came in. That is the whole convergence argument: peers that end up with the
same set of operations have the same state, and anti-entropy (:mod:`agent_comms.protocol.replica`) makes the sets
equal. :meth:`MeshState.digest` hashes the stored set so two peers can compare cheaply.

1. **Operations are immutable and unique.** ``(origin, seq)`` names one operation; applying it twice changes
   nothing. ``(hlc, origin, seq)`` is a total order all peers agree on.

2. **Agents: last writer wins, by the owner only.** An agent's record is written by the peer hosting it. A host's
   *claim* on an agent is ``(incarnation, peer_id)``; a bridge that restarts on a new peer claims the same agent id
   again with a higher incarnation (an HLC stamp). Records merge by the largest ``(incarnation, peer_id, version)``,
   a join. A record is accepted only from the peer it names (``peer_id == origin``): nobody else can edit it. The
   newest record of every claim is kept as well (the newest :data:`MAX_CLAIMS` claims), so every peer knows the
   same claims (the newest, not the first: a replica that forgot an agent and learns it again from a re-stamped
   record must end up holding the same operations as one that never forgot it).

3. **Offline verdicts only grow.** A failure detector anywhere may say "claim ``(i, p)`` of agent ``a`` is
   offline" (:class:`~.ops.AgentSuspect`); the largest verdict is kept. An agent is online if its record says so
   and no verdict covers its current claim. A live host refutes a false verdict by claiming again with a higher
   incarnation, which no older verdict covers.

4. **Acting as an agent needs a claim.** Room operations, messages and receipts name the agent they act as and
   the incarnation of the claim they act under; the claim's peer is the operation's origin. Such an operation
   takes effect only if that claim is known (or the agent is unknown altogether, for instance forgotten, or the
   claim is older than every kept claim, or it is older than the horizon and the operation was made under it
   before the agent's newest claim: rule 8). This is evaluated from the operation's stamp, the final set of claims
   and the horizon, and only ever admits more as either grows, so it converges; and a peer cannot act under a
   current claim of an agent hosted elsewhere without publicly claiming it, nor under an old one without
   backdating the operation before the agent's newest claim (into the past of the total order).

5. **Rooms are folds.** A room instance keeps the set of its operations sorted by the total order and its state is
   the fold of that log (:mod:`agent_comms.protocol.rooms`): concurrent join/leave/kick of an agent resolve the
   same way everywhere, a kicked agent stays out until invited again, only the owner invites, kicks or destroys.
   Instances created with one name concurrently *merge* into one room (:func:`~.rooms.fold_name`): every instance
   of a name is folded in one sweep in the total order, and an instance created while the room of its name is
   alive (not destroyed before the creation) joins that room instead of starting one (a merge lifts no ban and a
   later founder's rights last only while it is a member, so creating a name again takes nothing over). The
   merged room has the id, owner and description
   of the first instance; the other creators are members (unless banned: a merge lifts no ban); operations and
   messages addressed to any merged instance act on it, and its history is the top-N of its instances'
   histories. Nobody loses a room, a membership or a message to a concurrent creation. An instance created after
   its name's room was destroyed starts a new room (a name can be reused). Which instances merge is a function of
   the set of room operations (and of rule 4), so this converges like the rest.

6. **Histories are bounded by top-N.** Each conversation keeps its newest ``history_limit`` messages by the total
   order (:mod:`agent_comms.protocol.history`); top-N of a union is a join, so truncation converges.
   A room message is visible if its author was a member of the room at the message's place in the total order
   (one sent through a merged instance after a destroy that addressed another instance is judged at the destroy:
   :mod:`~agent_comms.protocol.rooms` rule 10).

7. **Markers only grow.** Every message carries ``n``, its origin's count of the messages it made in the
   conversation, so the messages of one origin in one conversation are numbered densely (:class:`~.ops.Mark`).
   A marker says that its recipient was ``delivered`` or ``read`` (which implies ``delivered``) the messages of a
   conversation whose ``(origin, n)`` lie in its per-origin ranges. Its issuer (the recipient's host, rule 4
   strictly: it counts once the claim it was issued under is known) makes it cumulative, so the newest marker per
   (conversation, recipient, status, issuing peer, claim) replaces the older ones: a join. A recipient's
   *effective coverage* is the union of the ranges of its counting markers; it only grows, as markers are
   replaced by larger ones and what counts only grows with the claims and the horizon. (Both rest on the issuer:
   a marker that holds less than the one it replaces, or one stamped under an old claim after the agent's newer
   claim, which does not count, takes the older marker's place all the same. The store issues neither: its
   markers are cumulative and made under the claim its agent holds.) A message's status is
   read off the coverage by its ``(origin, n)`` (:meth:`MeshState.receipt_status`), never inferred from stamps
   or other origins, so a message that arrives late from a partitioned peer is covered only if a marker names
   it. Markers live with their conversation (rule 8). Receipts of protocol version 1 (one per message, recipient
   and status) are still applied: they move ``delivered`` -> ``read``, never back, and live and die with their
   message (one for a message a full history would refuse is refused too); a message's status is the more
   advanced of the two.

8. **Forgetting is by a shared horizon.** :meth:`MeshState.collect_garbage` forgets the records of agents that
   have been offline since before a horizon. An agent operation is accepted however old it is (refusing an old
   one would depend on whether the agent's newer operations came first). A replica collecting later than another
   still offers it what the other forgot; the one that forgot refuses it, as it never takes an operation twice
   (it keeps its per-origin floors for twice the retention after the origin's last operation, and for a retention
   after it first held nothing of the origin:
   :meth:`~.replica.Replica.collect_garbage`). Only a replica that never held it (a new one) takes it, and forgets
   it again at its next collection. Direct conversations are kept whoever is forgotten (each is bounded by its
   history limit, and there is one per pair of agent identities): a conversation must not depend on whether a
   replica still held its parties' records when it collected.

   Forgetting an agent never changes what it did: while it is unknown its operations get the benefit of the doubt
   (rule 4), and when the same identity comes back with a new claim, its claims older than the horizon count as
   known for what it did under them (rule 4, also for receipts), so its rooms, ownerships, memberships and messages
   stay as they were, on every replica, at any later time. No tombstone is needed (nothing is kept per forgotten
   agent): every forgotten claim is older than the horizon, because an agent is forgotten only once its record is
   older than it, and every replica moves the same horizon (a peer moves it as soon as it starts); and everything
   done under a forgotten claim is stamped before the new claim, which is made after the agent came back (and before
   the horizon, for receipts of an agent still unknown). For the same reason a collection trims
   from a known agent its claims older than the horizon and than its newest claim, and a verdict stamped before
   the horizon on a claim older than the current record's: they change nothing, and a replica that forgot the
   agent and learned it again (from a newer record) holds exactly what one that never forgot it holds.

   The premise of forgetting is that the retention is far longer than any delay of an operation: whatever was
   stamped before the horizon has reached every replica. A peer cut off for longer may find some of its old
   operations judged differently (an old room operation refused, a destroy already forgotten).

   A destroyed room keeps its (bounded) history and its membership log while its destroy is younger than the
   horizon: whether a destroy counts can change when a claim arrives late (rule 4), so nothing is thrown away on
   the strength of a fresh one. A room destroyed before the horizon is forgotten whole (log, history, receipts,
   markers),
   and operations and messages for a room this replica does not hold that are stamped before the horizon are
   refused, so anti-entropy cannot bring it back; operations and messages held for a room whose creation never
   came, all stamped before the horizon, are forgotten too, and so are receipts stamped before the horizon for
   messages not held of a room not held, and markers stamped before the horizon for a room not held (taken while
   this replica's horizon was still before them). A room's
   creation is accepted however old it is: a live room may be older than the horizon, and a peer that never held
   it (a new one) must get it (anti-entropy sends a creation before the room's other operations); a destroyed room
   reaches this way only a replica that never held it (one that forgot it refuses its operations as seen, above),
   and goes at its next collection.
"""

from __future__ import annotations

import bisect
import heapq
import sys
from collections.abc import Iterator, Mapping
from typing import Final

import attrs
from msgspec.structs import force_setattr

from .changes import (
    AgentChanged,
    Change,
    MarkAdvanced,
    MessageAdded,
    MessageEvicted,
    ReceiptAdvanced,
    RoomChanged,
)
from .coverage import Bounds, difference, from_wire, intervals, union
from .history import History
from .hlc import COUNTER_BITS
from .ops import (
    AgentSuspect,
    AgentUpsert,
    DirectMessage,
    Mark,
    Membership,
    Op,
    OpKey,
    Receipt,
    RoomCreate,
    RoomMessage,
    dm_conversation,
    dm_parties,
    message_conversation,
    op_id,
    op_key,
)
from .rooms import RoomLog, RoomView, diff, fold_name, step
from .stored import DIGEST_MODULUS, StoredOps, op_hash

__all__ = ["DEFAULT_HISTORY_LIMIT", "MAX_CLAIMS", "AgentEntry", "MeshState"]

#: Messages kept per conversation unless configured otherwise.
DEFAULT_HISTORY_LIMIT: Final = 1000
#: Claims kept per agent (one per restart of its bridge); older ones are forgotten.
MAX_CLAIMS: Final = 16

_STATUS_RANK: Final = {"delivered": 1, "read": 2}

Claim = tuple[int, str]
#: per status (``read``; ``delivered``, which ``read`` implies), per origin: the message numbers covered
Coverage = dict[str, dict[str, Bounds]]


@attrs.define
class AgentEntry:
    """What the replica holds for one agent. ``record`` is ``None`` while only an offline verdict is known."""

    record: Op | None = None
    claims: dict[Claim, Op] = attrs.field(factory=dict)
    suspect: Op | None = None

    @property
    def body(self) -> AgentUpsert:
        """The agent's current record (only call when :attr:`record` is set)."""
        assert self.record is not None
        body = self.record.body
        assert isinstance(body, AgentUpsert)
        return body

    @property
    def online(self) -> bool:
        """Online: the record says so and no offline verdict covers the current claim."""
        if self.record is None:
            return False
        body = self.body
        if not body.online:
            return False
        suspect = self.suspect
        if suspect is None:
            return True
        verdict = suspect.body
        assert isinstance(verdict, AgentSuspect)
        return (verdict.incarnation, verdict.peer_id) < (body.incarnation, body.peer_id)


def _record_rank(op: Op) -> tuple[int, str, int, OpKey]:
    body = op.body
    assert isinstance(body, AgentUpsert)
    return (body.incarnation, body.peer_id, body.version, op_key(op))


def _suspect_rank(op: Op) -> tuple[int, str, OpKey]:
    body = op.body
    assert isinstance(body, AgentSuspect)
    return (body.incarnation, body.peer_id, op_key(op))


@attrs.define
class MeshState:
    """One peer's replica of the whole mesh. Change it only through :meth:`apply`."""

    history_limit: int = DEFAULT_HISTORY_LIMIT
    agents: dict[str, AgentEntry] = attrs.field(factory=dict)
    rooms: dict[str, RoomLog] = attrs.field(factory=dict)
    #: room name -> ids of every instance created with that name
    room_names: dict[str, list[str]] = attrs.field(factory=dict)
    #: conversation (room id, or :func:`~.ops.dm_conversation`) -> its bounded history
    histories: dict[str, History] = attrs.field(factory=dict)
    #: message id -> the message, for every message held in a history
    messages: dict[str, Op] = attrs.field(factory=dict)
    #: message id -> (recipient, issuing peer, claim incarnation) -> the most advanced receipt under that claim.
    #: Kept per claim: a newer receipt under a claim not yet known must not hide one under a known claim.
    receipts: dict[str, dict[tuple[str, str, int], Op]] = attrs.field(factory=dict)
    #: conversation -> heap of (message key, message id) for receipts whose message is not held (yet)
    orphan_receipts: dict[str, list[tuple[OpKey, str]]] = attrs.field(factory=dict)
    #: conversation -> recipient -> (status, issuing peer, claim incarnation) -> the newest marker under that key
    #: (each is cumulative, so it replaces the older one; kept per claim, like receipts)
    marks: dict[str, dict[str, dict[tuple[str, str, int], Op]]] = attrs.field(factory=dict)
    #: conversation -> origin -> message number -> the message, for every numbered message held (of two held
    #: under one number, which only a misbehaving origin makes, the first in the total order)
    numbered: dict[str, dict[str, dict[int, Op]]] = attrs.field(factory=dict)
    #: (conversation, origin, number) -> the other held messages under a number taken twice, to take its place
    renumbered: dict[tuple[str, str, int], list[Op]] = attrs.field(factory=dict, eq=False)
    #: agent -> rooms whose logs hold operations it authored (refolded when its claims change)
    authored_rooms: dict[str, set[str]] = attrs.field(factory=dict)
    #: operations stamped before this HLC that would be forgotten at once are refused (rule 8)
    horizon: int = 0
    #: room name -> its rooms (:func:`~.rooms.fold_name`), oldest first; refolded when an operation needs it
    _named: dict[str, list[RoomView]] = attrs.field(factory=dict, repr=False, eq=False)
    #: room name -> the newest key among the operations of its instances (an operation after it is just folded on)
    _frontier: dict[str, OpKey] = attrs.field(factory=dict, repr=False, eq=False)
    #: every stored operation by (origin, seq), counted per place that keeps it, and the digest (:meth:`_store`)
    _stored: StoredOps = attrs.field(factory=StoredOps, repr=False, eq=False)
    #: message id -> recipient -> :meth:`receipt_status`, as last computed. Dropped for a message when its receipts
    #: or whether it is held change, and wholly when claims can change (a record applied, garbage collected).
    _statuses: dict[str, dict[str, str | None]] = attrs.field(factory=dict, repr=False, eq=False)
    #: (conversation, recipient) -> its effective :data:`Coverage`, as last computed. Dropped for a key when one of
    #: its markers is stored or forgotten, and wholly when claims can change (like :attr:`_statuses`).
    _coverage: dict[tuple[str, str], Coverage] = attrs.field(factory=dict, repr=False, eq=False)

    # ------------------------------------------------------------------ queries

    def claim_known(self, agent_id: str, incarnation: int, peer_id: str, stamp: int, *, strict: bool = False) -> bool:
        """Rule 4: may an operation stamped ``stamp`` act as ``agent_id`` under claim ``(incarnation, peer_id)``?

        ``strict`` (used for receipts) requires the agent to be known, or the claim and the operation to be older
        than the horizon (a forgotten agent's receipts still count); otherwise an agent this replica does not know
        at all is given the benefit of the doubt (so the history of forgotten agents stays readable). A claim
        stamped before the horizon and older than the agent's newest claim counts as known as well for an operation
        made under it before that newest claim: the claims of an agent that was forgotten and came back (or whose
        old claims were trimmed) are gone, and what it did under them must stay as it was (rule 8). An operation
        stamped now cannot take an old claim on trust: it would have to be backdated before the agent's newest
        claim. Validity only grows as claims arrive and as the horizon advances, which keeps receipts monotonic
        (rule 7).
        """
        entry = self.agents.get(agent_id)
        if entry is None or not entry.claims:
            return not strict or incarnation <= stamp < self.horizon
        claims = entry.claims
        if (incarnation, peer_id) in claims:
            return True
        if len(claims) >= MAX_CLAIMS and (incarnation, peer_id) < min(claims):
            return True
        return incarnation < self.horizon and incarnation <= stamp < max(claims)[0]

    def rooms_named(self, name: str) -> list[RoomView]:
        """The rooms called ``name`` that exist or existed, oldest first (concurrent creations merged, rule 5)."""
        return self._named.get(name, [])

    def room(self, name: str) -> RoomView | None:
        """The live room called ``name``, if there is one."""
        rooms = self.rooms_named(name)
        if not rooms or rooms[-1].destroyed is not None:
            return None
        return rooms[-1]

    def room_id(self, name: str) -> str | None:
        """The id of the live room called ``name``, if there is one (the id of its first instance)."""
        view = self.room(name)
        return None if view is None else view.room_id

    def room_accepted(self, room_id: str) -> bool:
        """Whether instance ``room_id`` exists: it was created and its creator's claim is known (rule 5: it is
        then a room of its own, or merged into the room of its name created concurrently)."""
        log = self.rooms.get(room_id)
        return log is not None and log.view is not None

    def room_messages(self, room_id: str) -> list[Op]:
        """The visible messages of the room that instance ``room_id`` is (or was merged into), oldest first.

        A merged room's history is the newest ``history_limit`` messages of the union of its instances' histories
        (each of them keeps its newest ``history_limit``, so this is the top-N of everything, a join again).
        """
        log = self.rooms.get(room_id)
        if log is None or log.view is None:
            return []
        parts = [self.histories[i].messages for i in log.view.founders if i in self.histories]
        merged = list(heapq.merge(*parts, key=op_key))[-self.history_limit :]
        return [op for op in merged if self.message_visible(op)]

    def message_visible(self, op: Op) -> bool:
        """Whether a held message counts: its author's claim is known and, in a room, it was a member then."""
        body = op.body
        if isinstance(body, DirectMessage):
            return self.claim_known(body.author, body.author_inc, op.origin, op.hlc)
        assert isinstance(body, RoomMessage)
        if not self.claim_known(body.author, body.author_inc, op.origin, op.hlc):
            return False
        log = self.rooms.get(body.room_id)
        if log is None or log.view is None:
            return False
        return log.view.was_member(body.author, op_key(op), body.room_id)

    def receipt_status(self, message_id: str, recipient: str) -> str | None:
        """How far ``recipient`` got with ``message_id``: ``read``, ``delivered`` or ``None``.

        For a held, numbered message, its conversation's effective markers (:meth:`coverage`: two bisections);
        and, for any message, the receipts of protocol version 1 (:meth:`_receipt_only_status`); the more
        advanced of the two.
        """
        marked: str | None = None
        message = self.messages.get(message_id)
        if message is not None:
            body = message.body
            assert isinstance(body, RoomMessage | DirectMessage)
            if body.n:
                marked = self._marked_status(message_conversation(body), recipient, message.origin, body.n)
                if marked == "read":
                    return marked
        if message_id not in self.receipts:
            return marked
        receipted = self._receipt_only_status(message_id, recipient)
        if marked is None or receipted == "read":
            return receipted
        return marked

    def coverage(self, conversation: str, recipient: str) -> Coverage:
        """``recipient``'s effective coverage of ``conversation``: the union of the ranges of its markers whose
        claim is known (rule 4, strictly), per status (``delivered`` includes ``read``) and origin. Remembered
        until a marker of the key is stored or forgotten, or claims can change."""
        key = (conversation, recipient)
        known = self._coverage.get(key)
        if known is None:
            known = self._coverage[key] = self.coverage_from_scratch(conversation, recipient)
        return known

    def coverage_from_scratch(self, conversation: str, recipient: str) -> Coverage:
        """:meth:`coverage` computed again from the markers held (to check the remembered one)."""
        read: dict[str, list[Bounds]] = {}
        delivered: dict[str, list[Bounds]] = {}
        for (status, issuer, inc), op in self.marks.get(conversation, {}).get(recipient, {}).items():
            if not self.claim_known(recipient, inc, issuer, op.hlc, strict=True):
                continue
            body = op.body
            assert isinstance(body, Mark)
            for origin, flat in body.ranges.items():
                bounds = from_wire(flat)
                assert bounds is not None  # checked when applied
                delivered.setdefault(origin, []).append(bounds)
                if status == "read":
                    read.setdefault(origin, []).append(bounds)
        return {
            "read": {origin: union(*parts) for origin, parts in read.items()},
            "delivered": {origin: union(*parts) for origin, parts in delivered.items()},
        }

    def _marked_status(self, conversation: str, recipient: str, origin: str, n: int) -> str | None:
        by_recipient = self.marks.get(conversation)
        if by_recipient is None or recipient not in by_recipient:
            return None
        coverage = self.coverage(conversation, recipient)
        bounds = coverage["read"].get(origin)
        if bounds and bisect.bisect_right(bounds, n) & 1:
            return "read"
        bounds = coverage["delivered"].get(origin)
        if bounds and bisect.bisect_right(bounds, n) & 1:
            return "delivered"
        return None

    def _receipt_only_status(self, message_id: str, recipient: str) -> str | None:
        """The most advanced effective receipt (protocol version 1) of ``recipient`` for ``message_id``.

        Once the message is held here, a receipt counts only if it names the message's own conversation (its
        sender always holds it, and it is the one told about receipts); see :meth:`_apply_receipt` for the rest.
        Asked several times per message applied and delivered, so it is remembered until something it reads
        changes.
        """
        known = self._statuses.get(message_id)
        if known is not None and recipient in known:
            return known[recipient]
        status = self._receipt_only_from_scratch(message_id, recipient)
        if len(self._statuses) >= _MAX_STATUSES:
            self._statuses.clear()  # the hot path asks about recent messages: a bound, not an eviction policy
        self._statuses.setdefault(message_id, {})[recipient] = status
        return status

    def receipt_status_from_scratch(self, message_id: str, recipient: str) -> str | None:
        """:meth:`receipt_status` computed again from the markers and receipts held (to check the remembered one)."""
        marked: str | None = None
        message = self.messages.get(message_id)
        if message is not None:
            body = message.body
            assert isinstance(body, RoomMessage | DirectMessage)
            if body.n:
                coverage = self.coverage_from_scratch(message_conversation(body), recipient)
                for status in ("read", "delivered"):
                    bounds = coverage[status].get(message.origin)
                    if bounds and bisect.bisect_right(bounds, body.n) & 1:
                        marked = status
                        break
        receipted = self._receipt_only_from_scratch(message_id, recipient)
        if marked is None or receipted == "read":
            return receipted
        return marked

    def _receipt_only_from_scratch(self, message_id: str, recipient: str) -> str | None:
        message = self.messages.get(message_id)
        conversation = None if message is None else _conversation_of(message)
        best: Op | None = None
        for (who, _peer, _inc), op in self.receipts.get(message_id, {}).items():
            body = op.body
            assert isinstance(body, Receipt)
            if who != recipient or not self.claim_known(who, body.recipient_inc, op.origin, op.hlc, strict=True):
                continue
            if conversation is not None and body.conversation != conversation:
                continue
            if best is None or _receipt_rank(op) > _receipt_rank(best):
                best = op
        if best is None:
            return None
        body = best.body
        assert isinstance(body, Receipt)
        return body.status

    # ------------------------------------------------------------------ apply

    def apply(self, op: Op) -> list[Change]:
        """Apply one operation (idempotent, order-independent); return what visibly changed."""
        body = op.body
        if isinstance(body, RoomMessage):
            return self._apply_message(op, body.room_id)
        if isinstance(body, DirectMessage):
            return self._apply_message(op, dm_conversation(body.author, body.recipient))
        if isinstance(body, Mark):
            return self._apply_mark(op, body)
        if isinstance(body, Receipt):
            return self._apply_receipt(op, body)
        if isinstance(body, Membership):
            return self._apply_room_op(op, body.room_id, body.author)
        if isinstance(body, RoomCreate):
            if body.room_id != op_id(op):
                return []  # a room id is the id of the operation that created it, so it cannot be taken over
            return self._apply_room_op(op, body.room_id, body.author, name=body.name)
        if isinstance(body, AgentUpsert):
            self._statuses.clear()  # a claim may become known: receipts under it start to count
            self._coverage.clear()  # and markers
            return self._apply_upsert(op, body)
        return self._apply_suspect(op, body)

    def _apply_upsert(self, op: Op, body: AgentUpsert) -> list[Change]:
        if body.peer_id != op.origin:
            return []  # rule 2: only the host writes an agent's record
        entry = self.agents.get(body.agent_id)
        if entry is None:
            entry = self.agents[body.agent_id] = AgentEntry()
        if entry.record is None:
            entry.record = op
            entry.claims[(body.incarnation, body.peer_id)] = op
            self._store(op, op)
            changes: list[Change] = [AgentChanged(body.agent_id, body, entry.online, None, False)]
            return changes + self._refold_authored(body.agent_id)
        previous, was_online = entry.body, entry.online
        changes = []
        claim = (body.incarnation, body.peer_id)
        known = entry.claims.get(claim)
        if known is None:
            if len(entry.claims) >= MAX_CLAIMS and claim < min(entry.claims):
                return []  # older than every claim kept: refused like a truncated message
            entry.claims[claim] = op
            self._store(op)
            if len(entry.claims) > MAX_CLAIMS:
                self._unstore(entry.claims.pop(min(entry.claims)))
            changes.extend(self._refold_authored(body.agent_id))
        elif op_key(op) > op_key(known):
            entry.claims[claim] = op  # the newest record of each claim: a join, whatever was forgotten before
            self._unstore(known)
            self._store(op)
        if _record_rank(op) > _record_rank(entry.record):
            self._unstore(entry.record)
            entry.record = op
            self._store(op)
        if entry.body != previous or entry.online != was_online:
            changes.insert(0, AgentChanged(body.agent_id, entry.body, entry.online, previous, was_online))
        return changes

    def _apply_suspect(self, op: Op, body: AgentSuspect) -> list[Change]:
        entry = self.agents.get(body.agent_id)
        if entry is None:
            # Kept even before the record arrives, or the outcome would depend on arrival order.
            entry = self.agents[body.agent_id] = AgentEntry()
        if entry.suspect is not None and _suspect_rank(op) <= _suspect_rank(entry.suspect):
            return []
        was_online = entry.online
        if entry.suspect is not None:
            self._unstore(entry.suspect)
        entry.suspect = op
        self._store(op)
        if entry.record is None or entry.online == was_online:
            return []
        return [AgentChanged(body.agent_id, entry.body, entry.online, entry.body, was_online)]

    def _apply_room_op(self, op: Op, room_id: str, author: str, name: str | None = None) -> list[Change]:
        log = self.rooms.get(room_id)
        if log is None and op.hlc < self.horizon and name is None:
            return []  # rule 8: a forgotten room stays forgotten (its creation would have come first)
        if log is None:
            log = self.rooms[room_id] = RoomLog(room_id)
        if not log.insert(op):
            return []
        self._store(op)
        self.authored_rooms.setdefault(author, set()).add(room_id)
        if name is not None:
            self.room_names.setdefault(name, []).append(room_id)
        name = _name_of(log)
        if name is None:
            return []  # waits for its instance's creation
        key = op_key(op)
        frontier = self._frontier.get(name)
        body = op.body
        if not isinstance(body, Membership) or frontier is None or key <= frontier:
            return self._refold_name(name)
        # The usual case: after everything else of this name, so the fold only steps on (or ignores it).
        self._frontier[name] = key
        view = log.view
        rooms = self._named.get(name)
        if view is None or not rooms or view is not rooms[-1]:
            return []
        if not self.claim_known(body.author, body.author_inc, op.origin, op.hlc):
            return []
        return [RoomChanged(view.room_id, name, change) for change in step(view, op, body)]

    def _refold_name(self, name: str) -> list[Change]:
        """Fold every instance of ``name`` again (rule 5) and report how its rooms changed."""
        logs = [self.rooms[i] for i in self.room_names.get(name, ())]
        before = {log.room_id: log.view for log in logs}
        rooms = fold_name(logs, self.claim_known)
        for log in logs:
            log.view = None
        for view in rooms:
            for instance in view.founders:
                self.rooms[instance].view = view
        self._named[name] = rooms
        self._frontier[name] = max(
            (key for log in logs for key in (*log.keys, *([op_key(log.create)] if log.create else []))),
            default=(0, "", 0),
        )
        if not rooms:
            del self._named[name]
        changes: list[Change] = []
        for view in rooms:
            # compared with what the room was before: its own first instance, else one it merged
            old = next((before[i] for i in view.founders if before.get(i) is not None), None)
            changes.extend(RoomChanged(view.room_id, name, change) for change in diff(old, view))
        return changes

    def _refold_authored(self, agent_id: str) -> list[Change]:
        """Rule 4 depends on claims: after an agent's claims change, refold the rooms it acted in."""
        names = {_name_of(self.rooms[room_id]) for room_id in self.authored_rooms.get(agent_id, ())}
        changes: list[Change] = []
        for name in sorted(n for n in names if n is not None):
            changes.extend(self._refold_name(name))
        return changes

    def _apply_message(self, op: Op, conversation: str) -> list[Change]:
        if op.hlc < self.horizon and self._forgotten(conversation):
            return []  # rule 8: a forgotten conversation stays forgotten
        history = self.histories.get(conversation)
        if history is None:
            history = self.histories[conversation] = History(self.history_limit)
        _share_strings(op)  # first: the history keeps the origin in its key
        kept, evicted = history.add(op)
        if not kept:
            return []
        self.messages[op_id(op)] = op
        self._statuses.pop(op_id(op), None)  # held now: only receipts naming its conversation count
        self._store(op)
        number = op.body.n  # type: ignore[union-attr]
        if number:
            self._number(conversation, op, number)
        changes: list[Change] = []
        for old in evicted:
            old_id = op_id(old)
            body = old.body
            reached = not isinstance(body, DirectMessage) or self.receipt_status(old_id, body.recipient) is not None
            self._unnumber(conversation, old)
            del self.messages[old_id]
            self._statuses.pop(old_id, None)
            self._unstore(old)
            self._drop_receipts(old_id)
            changes.append(MessageEvicted(old, reached))
        if history.full:
            self._prune_orphans(conversation, history.keys[0])
        if self.message_visible(op):
            changes.append(MessageAdded(op, conversation))
        return changes

    def _number(self, conversation: str, op: Op, number: int) -> None:
        """``op`` is held: index it by its number (the first in the total order if the number is taken)."""
        numbers = self.numbered.setdefault(conversation, {}).setdefault(op.origin, {})
        other = numbers.setdefault(number, op)
        if other is op:
            return
        first, second = (op, other) if op_key(op) < op_key(other) else (other, op)
        numbers[number] = first
        self.renumbered.setdefault((conversation, op.origin, number), []).append(second)

    def _unnumber(self, conversation: str, op: Op) -> None:
        """``op`` is no longer held: take it out of :attr:`numbered`."""
        number = op.body.n  # type: ignore[union-attr]
        by_origin = self.numbered.get(conversation)
        if not number or by_origin is None:
            return
        numbers = by_origin.get(op.origin)
        if numbers is None:
            return
        key = (conversation, op.origin, number)
        others = self.renumbered.get(key)
        if others is not None:
            if op in others:
                others.remove(op)
            elif numbers.get(number) is op:
                numbers[number] = others.pop(others.index(min(others, key=op_key)))
            if not others:
                del self.renumbered[key]
            return
        if numbers.get(number) is not op:
            return
        del numbers[number]
        if not numbers:
            del by_origin[op.origin]
            if not by_origin:
                del self.numbered[conversation]

    def held_numbered(self, conversation: str, origin: str, bounds: Bounds) -> list[Op]:
        """The held messages of ``conversation`` made by ``origin`` whose number lies in ``bounds``, by number."""
        numbers = self.numbered.get(conversation, {}).get(origin)
        if not numbers:
            return []
        if sum(end - lo for lo, end in intervals(bounds)) <= len(numbers):
            return [numbers[n] for lo, end in intervals(bounds) for n in range(lo, end) if n in numbers]
        return [numbers[n] for n in sorted(numbers) if bisect.bisect_right(bounds, n) & 1]

    def mark_anchor(self, op: Op) -> OpKey:
        """The key of the oldest held message a marker covers (its own key if it covers none held): anti-entropy
        sends the marker right after it (:func:`~.replica.sync_order`), so it arrives before the other messages it
        covers, in whatever frame they come, and a bridge catching up is not given them (they are read already).
        (After the conversation's creation, which is older than its messages: rule 8 would refuse an old marker
        for a room not held yet.)"""
        body = op.body
        assert isinstance(body, Mark)
        oldest: OpKey | None = None
        for origin, flat in body.ranges.items():
            bounds = from_wire(flat)
            if bounds is None:
                continue
            held = self.held_numbered(body.conversation, origin, bounds)
            if held:
                key = min(op_key(message) for message in held)
                if oldest is None or key < oldest:
                    oldest = key
        return op_key(op) if oldest is None else oldest

    def mark_held(self, op: Op) -> bool:
        """Whether marker ``op`` is the one held for its key (not superseded, not refused, not forgotten)."""
        body = op.body
        assert isinstance(body, Mark)
        slot = self.marks.get(body.conversation, {}).get(body.recipient, {})
        held = slot.get((body.status, op.origin, body.recipient_inc))
        return held is not None and held.seq == op.seq

    def _apply_mark(self, op: Op, body: Mark) -> list[Change]:
        conversation, recipient = body.conversation, body.recipient
        if conversation.startswith("dm:") and recipient not in _dm_parties(conversation):
            return []  # only the two parties of a direct conversation report on its messages
        if op.hlc < self.horizon and self._forgotten(conversation):
            return []  # rule 8
        slot = self.marks.setdefault(conversation, {}).setdefault(recipient, {})
        who = (body.status, op.origin, body.recipient_inc)
        current = slot.get(who)
        if current is not None and op_key(current) >= op_key(op):
            return []  # an older marker of the same issuer: the newer one already says more
        replaced = current.body.ranges if current is not None else {}  # type: ignore[union-attr]
        # Only the origins whose ranges differ from the marker it replaces are parsed and merged: the others were
        # checked (and, in the usual case below, counted) with that marker, so a cumulative marker costs what
        # changed, not everything its recipient ever read in the conversation.
        parsed: dict[str, Bounds] = {}
        for origin, flat in body.ranges.items():
            if replaced.get(origin) == flat:
                continue
            if len(flat) == 2 and 1 <= flat[0] <= flat[1]:
                parsed[origin] = [flat[0], flat[1] + 1]  # one range: the usual case
                continue
            bounds = from_wire(flat)
            if bounds is None:
                return []  # malformed ranges: refused everywhere alike
            parsed[origin] = bounds
        key = (conversation, recipient)
        coverage = self.coverage(conversation, recipient)
        before = coverage[body.status]
        slot[who] = op
        if current is not None:
            self._unstore(current)
        self._store(op)
        if _contains(parsed, body.ranges, current) and self.claim_known(
            recipient, body.recipient_inc, op.origin, op.hlc, strict=True
        ):
            # The usual case: it says all the marker it replaces said, so the coverage only takes its ranges in.
            # (In place: the remembered coverage is this key's own, and ``before`` is read first.)
            was = {origin: before.get(origin) for origin in parsed}
            for status in ("read", "delivered") if body.status == "read" else ("delivered",):
                by_origin = coverage[status]
                for origin, bounds in parsed.items():
                    mine = by_origin.get(origin)
                    by_origin[origin] = bounds if not mine else union(mine, bounds)
            after = coverage[body.status]
            grown_bounds = {
                origin: difference(after[origin], old) if old else after[origin] for origin, old in was.items()
            }
        else:
            self._coverage.pop(key, None)
            after = self.coverage(conversation, recipient)[body.status]
            grown_bounds = {origin: difference(bounds, before.get(origin, [])) for origin, bounds in after.items()}
        grown = {
            origin: ((new[0], new[1] - 1),) if len(new) == 2 else tuple((lo, end - 1) for lo, end in intervals(new))
            for origin, new in grown_bounds.items()
            if new
        }
        if not grown:
            return []
        return [MarkAdvanced(conversation, recipient, body.status, grown, op)]

    def _prune_orphans(self, conversation: str, oldest: OpKey) -> None:
        heap = self.orphan_receipts.get(conversation)
        if not heap:
            return
        while heap and heap[0][0] < oldest:
            _key, message_id = heapq.heappop(heap)
            if message_id not in self.messages:
                self._drop_receipts(message_id)
        if not heap:
            del self.orphan_receipts[conversation]

    def _apply_receipt(self, op: Op, body: Receipt) -> list[Change]:
        if body.conversation.startswith("dm:") and body.recipient not in _dm_parties(body.conversation):
            return []  # only the two parties of a direct conversation report on its messages
        message_id = body.message_id
        held = message_id in self.messages
        if op.hlc < self.horizon and self._forgotten(body.conversation):
            return []  # rule 8
        if not held:
            history = self.histories.get(body.conversation)
            if history is not None and not history.admits(body.message_key):
                return []  # rule 7: its message is (or would be) truncated away
        slot = self.receipts.setdefault(message_id, {})
        key = (body.recipient, op.origin, body.recipient_inc)
        current = slot.get(key)
        if current is not None and _receipt_rank(op) <= _receipt_rank(current):
            return []
        before = self.receipt_status(message_id, body.recipient)
        slot[key] = op
        self._statuses.pop(message_id, None)
        if current is not None:
            self._unstore(current)
        self._store(op)
        if not held and current is None:
            heapq.heappush(self.orphan_receipts.setdefault(body.conversation, []), (body.message_key, message_id))
        after = self.receipt_status(message_id, body.recipient)
        if after is None or after == before:
            return []
        return [ReceiptAdvanced(message_id, body.recipient, body.status, op)]

    # ------------------------------------------------------------------ forgetting

    def collect_garbage(self, horizon_ms: int) -> None:
        """Rule 8: forget what went offline or was destroyed before ``horizon_ms`` (wall-clock milliseconds)."""
        horizon = horizon_ms << COUNTER_BITS
        advanced = horizon > self.horizon
        self.horizon = max(self.horizon, horizon)
        self._statuses.clear()  # rule 4 reads the horizon and the claims, both about to change
        self._coverage.clear()
        gone = [
            agent_id
            for agent_id, entry in self.agents.items()
            if not entry.online and _last_change(entry) < self.horizon
        ]
        for agent_id in gone:
            self._unstore(*_entry_ops(self.agents.pop(agent_id)))
            self._refold_authored(agent_id)  # rule 4 reads the claims just forgotten
        for entry in self.agents.values():
            self._trim(entry)
        touched: set[str] = set()
        for room_id, log in list(self.rooms.items()):
            view = log.view
            if view is not None and view.destroyed is not None and view.destroyed[0] < self.horizon:
                self._forget_room(room_id, view.name)
                touched.add(view.name)
            elif log.create is None and (not log.keys or log.keys[-1][0] < self.horizon):
                self._forget_room(room_id, "")  # operations for a room whose creation never came, all old
        for conversation, history in list(self.histories.items()):
            orphan = not conversation.startswith("dm:") and conversation not in self.rooms
            if orphan and (not history.keys or history.keys[-1][0] < self.horizon):
                self._drop_conversation(conversation)  # messages for a room never held, all old
        for conversation in list(self.orphan_receipts):
            if not conversation.startswith("dm:") and conversation not in self.rooms:
                self._drop_old_orphan_receipts(conversation)  # receipts for a room not held: refused elsewhere
        for conversation in list(self.marks):
            if not conversation.startswith("dm:") and conversation not in self.rooms:
                self._drop_old_marks(conversation)  # markers for a room not held: refused elsewhere
        # Rule 4 reads the horizon: once it advanced, claims older than it may count as known.
        for name in sorted(self.room_names if advanced else touched & self.room_names.keys()):
            self._refold_name(name)
        self._statuses.clear()
        self._coverage.clear()

    def _drop_old_marks(self, conversation: str) -> None:
        """Rule 8: markers stamped before the horizon for a room this replica does not hold go."""
        by_recipient = self.marks[conversation]
        for recipient in list(by_recipient):
            slot = by_recipient[recipient]
            for who in [who for who, op in slot.items() if op.hlc < self.horizon]:
                self._unstore(slot.pop(who))
            if not slot:
                del by_recipient[recipient]
        if not by_recipient:
            del self.marks[conversation]

    def _drop_old_orphan_receipts(self, conversation: str) -> None:
        """Rule 8: receipts stamped before the horizon, for messages not held, of a room this replica does not hold,
        go (a replica that forgot the room refuses them; one took them while its horizon was still before them)."""
        kept: list[tuple[OpKey, str]] = []
        for key, message_id in self.orphan_receipts.pop(conversation):
            slot = self.receipts.get(message_id)
            if slot is None or message_id in self.messages:
                continue
            for who in [who for who, op in slot.items() if op.hlc < self.horizon]:
                self._unstore(slot.pop(who))
            if slot:
                kept.append((key, message_id))
            else:
                del self.receipts[message_id]
        if kept:
            heapq.heapify(kept)
            self.orphan_receipts[conversation] = kept

    def _trim(self, entry: AgentEntry) -> None:
        """Rule 8 for a known agent: forget what the horizon makes redundant, so replicas that forgot the agent and
        learned it again hold the same as those that never forgot it. Claims older than the horizon and than the
        newest claim count as known anyway (rule 4); a verdict stamped before the horizon on an older claim than
        the current record's changes nothing."""
        if entry.claims:
            newest = max(entry.claims)
            for claim in [c for c in entry.claims if c[0] < self.horizon and c != newest]:
                self._unstore(entry.claims.pop(claim))
        suspect = entry.suspect
        if suspect is not None and entry.record is not None and suspect.hlc < self.horizon:
            verdict = suspect.body
            assert isinstance(verdict, AgentSuspect)
            if (verdict.incarnation, verdict.peer_id) < (entry.body.incarnation, entry.body.peer_id):
                entry.suspect = None
                self._unstore(suspect)

    def _forget_room(self, room_id: str, name: str) -> None:
        """Rule 8: a room destroyed before the horizon goes, with its history and receipts."""
        self._unstore(*self.rooms.pop(room_id).stored_ops())
        instances = self.room_names.get(name)
        if instances is not None:
            instances[:] = [i for i in instances if i != room_id]
            if not instances:
                del self.room_names[name]
        for agent_id in list(self.authored_rooms):
            rooms = self.authored_rooms[agent_id]
            rooms.discard(room_id)
            if not rooms:
                del self.authored_rooms[agent_id]
        self._drop_conversation(room_id)
        self._frontier.pop(name, None)
        self._named.pop(name, None)

    def _forgotten(self, conversation: str) -> bool:
        """Whether room ``conversation`` was forgotten (or never held): this replica holds nothing of the room. Only
        asked for operations stamped before the horizon. Direct conversations are never forgotten (rule 8)."""
        return not conversation.startswith("dm:") and conversation not in self.rooms

    def _drop_conversation(self, conversation: str) -> None:
        history = self.histories.pop(conversation, None)
        if history is not None:
            for op in history.messages:
                message_id = op_id(op)
                if self.messages.pop(message_id, None) is not None:
                    self._unstore(op)
                    self._statuses.pop(message_id, None)
                self._drop_receipts(message_id)
        for _key, message_id in self.orphan_receipts.pop(conversation, []):
            self._drop_receipts(message_id)
        self.numbered.pop(conversation, None)
        for key in [key for key in self.renumbered if key[0] == conversation]:
            del self.renumbered[key]
        for recipient, slot in self.marks.pop(conversation, {}).items():
            self._unstore(*slot.values())
            self._coverage.pop((conversation, recipient), None)

    # ------------------------------------------------------------------ digests

    def stored_ops(self) -> Iterator[Op]:
        """Every operation the replica holds (what anti-entropy may send). May repeat an operation."""
        for entry in self.agents.values():
            if entry.record is not None:
                yield entry.record
            yield from entry.claims.values()
            if entry.suspect is not None:
                yield entry.suspect
        for log in self.rooms.values():
            yield from log.stored_ops()
        for history in self.histories.values():
            yield from history.messages
        for slot in self.receipts.values():
            yield from slot.values()
        for by_recipient in self.marks.values():
            for marks in by_recipient.values():
                yield from marks.values()

    def digest(self) -> bytes:
        """A hash of the set of stored operations: equal digests mean equal replicas.

        The sum (modulo 2**128) of a 128-bit hash of each stored operation's ``(origin, seq)``: order-independent,
        so it is kept up to date as operations are stored and forgotten (:class:`~.stored.StoredOps`), and costs
        nothing to read."""
        return self._stored.digest()

    def digest_from_scratch(self) -> bytes:
        """:meth:`digest` computed again from every stored operation (to check the maintained one)."""
        total = sum(op_hash(origin, seq) for origin, seq in {(op.origin, op.seq) for op in self.stored_ops()})
        return (total % DIGEST_MODULUS).to_bytes(16, "big")

    def stored_above(self, floors: Mapping[str, int]) -> Iterator[Op]:
        """Every stored operation whose sequence number is above its origin's floor in ``floors`` (0 if absent),
        each once: what an anti-entropy answer sends (:meth:`~.replica.Replica.sync_answer`). Found by bisection
        per origin in the maintained index, so it costs what it yields, not what the replica stores."""
        return self._stored.above(floors)

    def stored_above_from_scratch(self, floors: Mapping[str, int]) -> list[Op]:
        """:meth:`stored_above` computed again by scanning every stored operation, by origin and sequence number
        (to check the maintained index)."""
        unique = {(op.origin, op.seq): op for op in self.stored_ops() if op.seq > floors.get(op.origin, 0)}
        return [unique[key] for key in sorted(unique)]

    def stored_origins(self) -> set[str]:
        """The origins of which this replica stores some operation."""
        return self._stored.origins()

    def _store(self, *ops: Op) -> None:
        """``ops`` are stored in one more place each: every place that keeps an operation says so here and in
        :meth:`_unstore` (the digest and the anti-entropy index follow)."""
        stored = self._stored
        for op in ops:
            stored.add(op)

    def _unstore(self, *ops: Op) -> None:
        """``ops`` are stored in one place fewer each."""
        stored = self._stored
        for op in ops:
            stored.discard(op)

    def _drop_receipts(self, message_id: str) -> None:
        self._statuses.pop(message_id, None)
        slot = self.receipts.pop(message_id, None)
        if slot:
            self._unstore(*slot.values())


#: Messages whose receipt statuses :meth:`MeshState.receipt_status` remembers at most.
_MAX_STATUSES: Final = 4096


def _share_strings(op: Op) -> None:
    """Make a held message refer to one shared copy of its origin, room, author and recipient.

    Each decoded operation comes with copies of its own of these few strings, which thousands of held messages
    repeat: about 140 B per message a member holds. They are swapped for equal interned strings (the operation
    is otherwise unchanged and compares, hashes and encodes as before).
    """
    intern = sys.intern
    force_setattr(op, "origin", intern(op.origin))
    body = op.body
    if isinstance(body, RoomMessage):
        force_setattr(body, "room_id", intern(body.room_id))
        force_setattr(body, "author", intern(body.author))
    elif isinstance(body, DirectMessage):
        force_setattr(body, "author", intern(body.author))
        force_setattr(body, "recipient", intern(body.recipient))


def _entry_ops(entry: AgentEntry) -> list[Op]:
    """Every stored place of an agent's entry (its record is also its claim's: two places)."""
    ops = [*entry.claims.values()]
    if entry.record is not None:
        ops.append(entry.record)
    if entry.suspect is not None:
        ops.append(entry.suspect)
    return ops


def _conversation_of(op: Op) -> str:
    body = op.body
    if isinstance(body, DirectMessage):
        return dm_conversation(body.author, body.recipient)
    assert isinstance(body, RoomMessage)
    return body.room_id


def _dm_parties(conversation: str) -> tuple[str, ...]:
    """The parties of a direct conversation key, or none if the key is malformed (it comes from the network)."""
    try:
        return dm_parties(conversation)
    except ValueError:
        return ()


def _name_of(log: RoomLog) -> str | None:
    """The name an instance was created with (``None`` while its creation has not arrived)."""
    if log.create is None:
        return None
    body = log.create.body
    assert isinstance(body, RoomCreate)
    return body.name


def _contains(parsed: dict[str, Bounds], ranges: dict[str, tuple[int, ...]], marker: Op | None) -> bool:
    """Whether a marker's ``ranges`` hold every number of ``marker``'s (``None``: no marker); ``parsed`` has the
    bounds of those of its origins whose ranges differ from ``marker``'s."""
    if marker is None:
        return True
    body = marker.body
    assert isinstance(body, Mark)
    for origin, flat in body.ranges.items():
        mine = parsed.get(origin)
        if mine is None:
            if ranges.get(origin) == flat:
                continue  # the same ranges as before
            return False
        if len(mine) == 2 and mine[0] <= flat[0] and flat[-1] < mine[1]:
            continue  # one range holding all of the older marker's (the usual case)
        bounds = from_wire(flat)
        assert bounds is not None  # checked when applied
        if difference(bounds, mine):
            return False
    return True


def _receipt_rank(op: Op) -> tuple[int, OpKey]:
    body = op.body
    assert isinstance(body, Receipt)
    return (_STATUS_RANK[body.status], op_key(op))


def _last_change(entry: AgentEntry) -> int:
    stamp = 0 if entry.record is None else entry.record.hlc
    if entry.suspect is not None:
        stamp = max(stamp, entry.suspect.hlc)
    return stamp
