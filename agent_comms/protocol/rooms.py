"""A room instance as a deterministic fold over its operation log.

Peers receive a room's operations in different orders, with duplicates, some late. Instead of mutating the room
as operations arrive (which would make the outcome depend on arrival order), a room keeps the *set* of its
operations sorted by the total order ``(hlc, origin, seq)`` and its visible state is the fold of that sorted log
through the rules below. Two peers holding the same set therefore hold the same room, whatever the order of
arrival. An operation appended at the end (the usual case) is applied incrementally; one that lands in the middle
triggers a refold, and the difference before/after is reported as the changes it caused.

Rules of the fold, in log order (an operation that breaks a rule has no effect, on every peer alike):

1. The creator owns the room and is its first member.
2. ``join``: the owner may always join; otherwise an outstanding invite is needed, except in a public room for an
   agent that is not banned. Joining consumes the invite and lifts a ban.
3. ``leave``: a member leaves. If the owner leaves while others remain, ownership passes to the member who has
   been in the room longest (earliest join). An owner leaving an empty room keeps it and may come back.
4. ``invite``, ``kick``, ``destroy``: the owner only. A kick removes a member (or revokes an invite) and bans
   the agent: it stays out until invited again. Destroy ends the room; nothing after it takes effect.
5. ``decline``: the invitee turns an outstanding invite down; the invite is gone.
6. An operation takes effect only if its author acts under a claim the mesh knows (see
   :mod:`agent_comms.protocol.state`), so nobody acts as an agent it does not host.
"""

from __future__ import annotations

import bisect
from collections.abc import Callable
from typing import Literal

import attrs

from .ops import Membership, Op, OpKey, RoomCreate, RoomType, op_key

__all__ = ["ClaimCheck", "RoomChange", "RoomLog", "RoomView"]

ClaimCheck = Callable[[str, int, str], bool]
"""``claim_known(agent_id, incarnation, peer_id)``: does the mesh know this claim on the agent?"""

RoomChangeKind = Literal["created", "joined", "left", "invited", "kicked", "declined", "destroyed", "owner"]


@attrs.frozen
class RoomChange:
    """One visible effect of an operation on a room: ``agent`` did or underwent ``kind``, ``by`` whom.

    ``key`` is the place in the total order of the operation that made the change (the same on every peer, and
    different for every change of one kind to one agent, so it names the change: a second invite after a kick, a
    join after a leave); ``None`` only for an ownership change found by a refold. It names the change rather than
    describes it, so it takes no part in comparisons.
    """

    kind: RoomChangeKind
    agent: str
    by: str = ""
    reason: str = ""
    key: OpKey | None = attrs.field(default=None, eq=False)


@attrs.define
class RoomView:
    """The folded state of a room instance."""

    name: str
    room_type: RoomType
    description: str
    creator: str
    created: OpKey
    owner: str
    #: member -> the key at which it (last) joined; the earliest joiner is the next owner.
    members: dict[str, OpKey] = attrs.field(factory=dict)
    #: invitee -> inviter, for outstanding invites.
    invited: dict[str, str] = attrs.field(factory=dict)
    #: invitee -> the key of its outstanding invite.
    invite_keys: dict[str, OpKey] = attrs.field(factory=dict)
    #: agents kicked and not invited since.
    banned: set[str] = attrs.field(factory=set)
    destroyed: OpKey | None = None
    destroyed_by: str = ""
    #: agent -> membership intervals ``[start, end)``; ``end`` is ``None`` while it is a member.
    intervals: dict[str, list[list[OpKey | None]]] = attrs.field(factory=dict)

    def was_member(self, agent: str, key: OpKey) -> bool:
        """Was ``agent`` a member at the instant ``key`` of the total order?"""
        for start, end in self.intervals.get(agent, ()):
            assert start is not None
            if start <= key and (end is None or key < end):
                return True
        return False


def _open(view: RoomView, agent: str, key: OpKey) -> None:
    view.members[agent] = key
    view.intervals.setdefault(agent, []).append([key, None])


def _close(view: RoomView, agent: str, key: OpKey) -> None:
    del view.members[agent]
    view.intervals[agent][-1][1] = key


def _step(view: RoomView, op: Op, body: Membership) -> list[RoomChange]:
    """Apply one membership operation to ``view`` in place; return what visibly changed."""
    if view.destroyed is not None:
        return []
    key = op_key(op)
    actor = body.author
    action = body.action
    if action == "join":
        if actor in view.members:
            return []
        public_ok = view.room_type == "public" and actor not in view.banned
        if not (actor == view.owner or actor in view.invited or public_ok):
            return []
        _uninvite(view, actor)
        view.banned.discard(actor)
        _open(view, actor, key)
        return [RoomChange("joined", actor, key=key)]
    if action == "leave":
        if actor not in view.members:
            return []
        _close(view, actor, key)
        changes = [RoomChange("left", actor, reason=body.reason, key=key)]
        if actor == view.owner and view.members:
            view.owner = min(view.members, key=view.members.__getitem__)
            changes.append(RoomChange("owner", view.owner, by=actor, key=key))
        return changes
    if action == "decline":
        inviter = _uninvite(view, actor)
        return [] if inviter is None else [RoomChange("declined", actor, by=inviter, reason=body.reason, key=key)]
    # invite, kick and destroy: the owner only
    if actor != view.owner:
        return []
    subject = body.subject
    if action == "invite":
        if not subject or subject in view.members or subject in view.invited:
            return []
        view.invited[subject] = actor
        view.invite_keys[subject] = key
        return [RoomChange("invited", subject, by=actor, key=key)]
    if action == "kick":
        if not subject or subject == view.owner:
            return []
        if subject in view.members:
            _close(view, subject, key)
        elif _uninvite(view, subject) is None:
            return []
        view.banned.add(subject)
        return [RoomChange("kicked", subject, by=actor, reason=body.reason, key=key)]
    # destroy
    for member in list(view.members):
        _close(view, member, key)
    view.destroyed = key
    view.destroyed_by = actor
    return [RoomChange("destroyed", actor, by=actor, key=key)]


def _uninvite(view: RoomView, agent: str) -> str | None:
    """Drop the agent's outstanding invite, if any; its inviter."""
    view.invite_keys.pop(agent, None)
    return view.invited.pop(agent, None)


def _diff(old: RoomView | None, new: RoomView | None) -> list[RoomChange]:
    """Changes that turn ``old`` into ``new`` (used after a refold)."""
    if new is None:
        return []
    changes: list[RoomChange] = []
    old_members: dict[str, OpKey] = {} if old is None else old.members
    old_invited: dict[str, str] = {} if old is None else old.invited
    if old is None:
        changes.append(RoomChange("created", new.creator, key=new.created))
    for agent in old_members.keys() - new.members.keys():
        # The operation that closed its membership, or, if the refold undid the join itself, that join.
        spans = new.intervals.get(agent)
        end = spans[-1][1] if spans else None
        changes.append(RoomChange("kicked" if agent in new.banned else "left", agent, key=end or old_members[agent]))
    for agent in new.members.keys() - old_members.keys():
        changes.append(RoomChange("joined", agent, key=new.members[agent]))
    for agent in new.invited.keys() - old_invited.keys():
        changes.append(RoomChange("invited", agent, by=new.invited[agent], key=new.invite_keys[agent]))
    if old is not None and old.owner != new.owner:
        changes.append(RoomChange("owner", new.owner))
    if new.destroyed is not None and (old is None or old.destroyed is None):
        changes.append(RoomChange("destroyed", new.destroyed_by, by=new.destroyed_by, key=new.destroyed))
    return changes


@attrs.define
class RoomLog:
    """Every operation known for one room instance, kept sorted, and the fold of them (:attr:`view`).

    ``view`` is ``None`` until the creating operation is known and its author's claim is known.
    """

    room_id: str
    create: Op | None = None
    ops: list[Op] = attrs.field(factory=list)
    keys: list[OpKey] = attrs.field(factory=list)
    view: RoomView | None = None

    def add(self, op: Op, claim_known: ClaimCheck) -> list[RoomChange]:
        """Add one operation (a duplicate is ignored) and return the visible changes it caused."""
        body = op.body
        if isinstance(body, RoomCreate):
            if self.create is not None:
                return []
            self.create = op
            return self.refold(claim_known)
        assert isinstance(body, Membership)
        key = op_key(op)
        index = bisect.bisect_left(self.keys, key)
        if index < len(self.keys) and self.keys[index] == key:
            return []
        self.keys.insert(index, key)
        self.ops.insert(index, op)
        view = self.view
        if view is None or key <= view.created:
            return []
        if index == len(self.keys) - 1:
            if not claim_known(body.author, body.author_inc, op.origin):
                return []
            return _step(view, op, body)
        return self.refold(claim_known)

    def refold(self, claim_known: ClaimCheck) -> list[RoomChange]:
        """Recompute :attr:`view` from the whole log; return the difference from the previous view."""
        old = self.view
        self.view = self._fold(claim_known)
        return _diff(old, self.view)

    def _fold(self, claim_known: ClaimCheck) -> RoomView | None:
        create = self.create
        if create is None:
            return None
        body = create.body
        assert isinstance(body, RoomCreate)
        if not claim_known(body.author, body.author_inc, create.origin):
            return None
        created = op_key(create)
        view = RoomView(
            name=body.name,
            room_type=body.room_type,
            description=body.description,
            creator=body.author,
            created=created,
            owner=body.author,
        )
        _open(view, body.author, created)
        start = bisect.bisect_right(self.keys, created)
        for op in self.ops[start:]:
            member = op.body
            assert isinstance(member, Membership)
            if claim_known(member.author, member.author_inc, op.origin):
                _step(view, op, member)
        return view

    def stored_ops(self) -> list[Op]:
        """Every operation this log stores (for anti-entropy and digests)."""
        return self.ops if self.create is None else [self.create, *self.ops]
