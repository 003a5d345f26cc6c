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
4. ``invite``, ``kick``, ``destroy``: the owner only (:data:`~agent_comms.protocol.ops.ACTIONS_BY_OWNER`). A kick
   removes a member (or revokes an invite) and bans the agent: it stays out until invited again. Destroy ends the
   room; nothing after it takes effect.
5. ``decline``: the invitee turns an outstanding invite down; the invite is gone.
6. An operation takes effect only if its author acts under a claim the mesh knows (see
   :mod:`agent_comms.protocol.state`), so nobody acts as an agent it does not host.

Who may do what (rules 2 to 5, and the rights of rule 9) is decided by one function, :func:`refusal`; the fold
applies an operation it does not refuse, and a peer's tool asks it before making an operation, so both judge alike.

Concurrent creations of one name merge (:func:`fold_name`). The instances of a name are swept in the total order
of their creations together with all their operations. An instance created while the room of that name is alive
(not destroyed before the creation, in the total order) either *merges* into it or is *refused*:

7. It merges, whenever it was made. A peer lets its agents create rooms only once it has synced with the mesh and
   refuses a name whose room it holds, so an honest creation of a live name is one made in ignorance of the room
   (concurrently, or cut off from it): refusing it would lose the room its creator was told it made and every
   message posted in it. What a late creation could otherwise take, rules 8 and 9 withhold: it lifts no ban and
   its founder's rights last only while the founder is a member. (A time window was considered and rejected: a
   peer cut off for longer than the window, or one whose clock is ahead, would lose acknowledged messages, and a
   peer that forges stamps passes any window anyway.)
8. The merged room keeps the first instance's id, owner, creator and description; its type becomes the most
   restrictive of the merged types (secret over private over public), so bridges stop admitting newcomers that a
   founder wanted kept out. The later instance's creator joins the room, consuming an invite, unless it is banned
   (kicked and not invited since) at that point: a merge never lifts a ban, and a banned creator's instance merges
   without making it a member.
9. Operations and messages addressed to any merged instance id act on the merged room. A join is judged by the
   type the instance it addresses was created with (that is what its author saw, and a join made concurrently
   with the merge must not be lost, nor what its author said). What a later instance's founder brought with it
   holds only while that founder is a member (hence not banned): for operations addressed to its own instance id
   it has the owner's right to invite and kick (never the owner), and joins through it are judged by its type;
   once its founder is out, joins through it are judged by the room's type and its invites and kicks take no
   effect. A destroy a founder addresses to its own instance only makes it leave, so one founder cannot destroy a
   room others created too. An instance created after the room was destroyed starts a new room.
10. A destroy by the owner ends the whole merged room, including instances merged into it that the owner may not
    have heard of yet, whose members may go on posting through them, not knowing of the destroy either. So a
    message addressed to a merged instance other than the one the destroy addressed, stamped after the destroy,
    is judged at the destroy (:meth:`RoomView.was_member` with its instance): it counts if its author was a member
    when the room ended, and it is for those who were. Nothing else changes: the room stays destroyed and no
    membership is reopened. This grants nothing new to a misbehaving member: it could as well stamp its message
    just before the destroy. Messages addressed to the instance the destroy addressed (its author knew that one)
    still end with it, as for a send concurrent with a kick.
"""

from __future__ import annotations

import bisect
import enum
from collections.abc import Callable
from typing import Literal

import attrs

from .ops import ACTIONS_BY_OWNER, Membership, MembershipAction, Op, OpKey, RoomCreate, RoomType, op_key

__all__ = ["ClaimCheck", "Refusal", "RoomChange", "RoomLog", "RoomView", "diff", "fold_name", "refusal", "step"]

ClaimCheck = Callable[[str, int, str, int], bool]
"""``claim_known(agent_id, incarnation, peer_id, stamp)``: may an operation stamped ``stamp`` act under this claim?"""

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
    #: the instance id the destroy addressed
    destroyed_via: str = ""
    #: agent -> membership intervals ``[start, end)``; ``end`` is ``None`` while it is a member.
    intervals: dict[str, list[list[OpKey | None]]] = attrs.field(factory=dict)
    #: instance id -> its creator, for every instance merged into this room, the room's own (first) one first
    founders: dict[str, str] = attrs.field(factory=dict)
    #: instance id -> the type it was created with (a join is judged by the type of the instance it addresses)
    created_as: dict[str, RoomType] = attrs.field(factory=dict)

    @property
    def room_id(self) -> str:
        """The room's id: the id of its first instance (``""`` for a view built by hand)."""
        return next(iter(self.founders), "")

    def was_member(self, agent: str, key: OpKey, instance: str = "") -> bool:
        """Was ``agent`` a member at the instant ``key`` of the total order?

        ``instance``: the instance id a message at ``key`` was addressed to. A message addressed to a merged
        instance other than the one the room's destroy addressed, stamped after the destroy, is judged at the
        destroy (rule 10): ``agent`` counts if it was a member when the room ended.
        """
        destroyed = self.destroyed
        if destroyed is not None and key > destroyed and instance in self.founders and instance != self.destroyed_via:
            spans = self.intervals.get(agent)
            return spans is not None and spans[-1][1] == destroyed
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


class Refusal(enum.Enum):
    """Why a membership operation takes no effect (:func:`refusal`)."""

    DESTROYED = "the room is destroyed"
    ALREADY_MEMBER = "the actor is a member already"
    NEEDS_INVITE = "the room is not public and the actor has no invite"
    BANNED = "the actor was kicked and has no invite"
    NOT_MEMBER = "the actor is not a member"
    NO_INVITE = "the actor has no invite"
    NOT_OWNER = "the actor does not own the room"
    NO_SUBJECT = "no agent named"
    SUBJECT_MEMBER = "the agent is a member already"
    SUBJECT_INVITED = "the agent is invited already"
    SUBJECT_OWNER = "the agent owns the room"
    SUBJECT_ABSENT = "the agent is neither a member nor invited"


def refusal(
    view: RoomView,
    actor: str,
    action: MembershipAction,
    subject: str | None = None,
    *,
    through: str | None = None,
) -> Refusal | None:
    """Why ``actor`` may not take ``action`` (on ``subject``) in the room ``view``; ``None`` if it takes effect.

    This is the one statement of rules 2 to 5 and of a founder's rights under rule 9. ``through``: the instance id
    the operation addresses (the fold passes it, to judge by what its author saw); ``None`` asks about the room as
    it stands, as a peer's tool does before making an operation: a join is then judged by the room's (merged) type
    and only the owner has the owner's rights. ``subject=None`` asks only about the actor's right.
    """
    if view.destroyed is not None:
        return Refusal.DESTROYED
    if action == "join":
        if actor in view.members:
            return Refusal.ALREADY_MEMBER
        if actor == view.owner or actor in view.invited:
            return None
        room_type = view.room_type if through is None else _type_through(view, through)
        if room_type != "public":
            return Refusal.NEEDS_INVITE
        return Refusal.BANNED if actor in view.banned else None
    if action == "leave":
        return None if actor in view.members else Refusal.NOT_MEMBER
    if action == "decline":
        return None if actor in view.invited else Refusal.NO_INVITE
    assert action in ACTIONS_BY_OWNER
    if actor != view.owner and not _founder_right(view, actor, through):
        return Refusal.NOT_OWNER
    if action == "destroy" or subject is None:
        return None
    if not subject:
        return Refusal.NO_SUBJECT
    if action == "invite":
        if subject in view.members:
            return Refusal.SUBJECT_MEMBER
        return Refusal.SUBJECT_INVITED if subject in view.invited else None
    if subject == view.owner:
        return Refusal.SUBJECT_OWNER
    return None if subject in view.members or subject in view.invited else Refusal.SUBJECT_ABSENT


def _founder_right(view: RoomView, actor: str, through: str | None) -> bool:
    """Rule 9: a merged instance's founder, while a member, has the owner's rights through its own instance."""
    return (
        through is not None
        and through != view.room_id
        and view.founders.get(through) == actor
        and actor in view.members
    )


def step(view: RoomView, op: Op, body: Membership) -> list[RoomChange]:
    """Apply one membership operation to ``view`` in place; return what visibly changed."""
    actor = body.author
    action = body.action
    if refusal(view, actor, action, body.subject, through=body.room_id) is not None:
        return []
    key = op_key(op)
    if action == "join":
        _uninvite(view, actor)
        view.banned.discard(actor)
        _open(view, actor, key)
        return [RoomChange("joined", actor, key=key)]
    if action == "leave":
        _close(view, actor, key)
        changes = [RoomChange("left", actor, reason=body.reason, key=key)]
        if actor == view.owner and view.members:
            view.owner = min(view.members, key=view.members.__getitem__)
            changes.append(RoomChange("owner", view.owner, by=actor, key=key))
        return changes
    if action == "decline":
        inviter = _uninvite(view, actor)
        assert inviter is not None
        return [RoomChange("declined", actor, by=inviter, reason=body.reason, key=key)]
    if action == "destroy" and actor != view.owner:
        # rule 9: a founder's destroy through its own instance only makes it leave
        return step(view, op, Membership(body.room_id, "leave", actor, body.author_inc, reason=body.reason))
    subject = body.subject
    if action == "invite":
        view.invited[subject] = actor
        view.invite_keys[subject] = key
        return [RoomChange("invited", subject, by=actor, key=key)]
    if action == "kick":
        if subject in view.members:
            _close(view, subject, key)
        else:
            _uninvite(view, subject)
        view.banned.add(subject)
        return [RoomChange("kicked", subject, by=actor, reason=body.reason, key=key)]
    # destroy
    for member in list(view.members):
        _close(view, member, key)
    view.destroyed = key
    view.destroyed_by = actor
    view.destroyed_via = body.room_id
    return [RoomChange("destroyed", actor, by=actor, key=key)]


def _type_through(view: RoomView, instance: str) -> RoomType:
    """Rule 9: the type a join addressed to ``instance`` is judged by."""
    founder = view.founders.get(instance)
    if founder is None or (instance != view.room_id and founder not in view.members):
        return view.room_type
    return view.created_as[instance]


def _uninvite(view: RoomView, agent: str) -> str | None:
    """Drop the agent's outstanding invite, if any; its inviter."""
    view.invite_keys.pop(agent, None)
    return view.invited.pop(agent, None)


def diff(old: RoomView | None, new: RoomView | None) -> list[RoomChange]:
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

    def insert(self, op: Op) -> bool:
        """Store one operation without folding (a duplicate is ignored); return whether it was new."""
        if isinstance(op.body, RoomCreate):
            if self.create is not None:
                return False
            self.create = op
            return True
        key = op_key(op)
        index = bisect.bisect_left(self.keys, key)
        if index < len(self.keys) and self.keys[index] == key:
            return False
        self.keys.insert(index, key)
        self.ops.insert(index, op)
        return True

    def add(self, op: Op, claim_known: ClaimCheck) -> list[RoomChange]:
        """Add one operation (a duplicate is ignored) and return the visible changes it caused."""
        if not self.insert(op):
            return []
        body = op.body
        if isinstance(body, RoomCreate):
            return self.refold(claim_known)
        assert isinstance(body, Membership)
        key = op_key(op)
        view = self.view
        if view is None or key <= view.created:
            return []
        if key == self.keys[-1]:
            if not claim_known(body.author, body.author_inc, op.origin, op.hlc):
                return []
            return step(view, op, body)
        return self.refold(claim_known)

    def refold(self, claim_known: ClaimCheck) -> list[RoomChange]:
        """Recompute :attr:`view` from the whole log; return the difference from the previous view."""
        old = self.view
        self.view = self._fold(claim_known)
        return diff(old, self.view)

    def _fold(self, claim_known: ClaimCheck) -> RoomView | None:
        create = self.create
        if create is None:
            return None
        body = create.body
        assert isinstance(body, RoomCreate)
        if not claim_known(body.author, body.author_inc, create.origin, create.hlc):
            return None
        created = op_key(create)
        view = _new_view(create, body)
        start = bisect.bisect_right(self.keys, created)
        for op in self.ops[start:]:
            member = op.body
            assert isinstance(member, Membership)
            if claim_known(member.author, member.author_inc, op.origin, op.hlc):
                step(view, op, member)
        return view

    def stored_ops(self) -> list[Op]:
        """Every operation this log stores (for anti-entropy and digests)."""
        return self.ops if self.create is None else [self.create, *self.ops]


_STRICTNESS: dict[RoomType, int] = {"public": 0, "private": 1, "secret": 2}


def _new_view(create: Op, body: RoomCreate) -> RoomView:
    """The view of a room right after its (first) creation."""
    created = op_key(create)
    view = RoomView(
        name=body.name,
        room_type=body.room_type,
        description=body.description,
        creator=body.author,
        created=created,
        owner=body.author,
        founders={body.room_id: body.author},
        created_as={body.room_id: body.room_type},
    )
    _open(view, body.author, created)
    return view


def _merge(view: RoomView, create: Op, body: RoomCreate) -> list[RoomChange]:
    """Rule 8: instance ``body`` was created concurrently with ``view``'s room: it merges into it."""
    view.founders[body.room_id] = body.author
    view.created_as[body.room_id] = body.room_type
    if _STRICTNESS[body.room_type] > _STRICTNESS[view.room_type]:
        view.room_type = body.room_type
    if body.author in view.members or body.author in view.banned:
        return []
    _uninvite(view, body.author)
    view.banned.discard(body.author)
    _open(view, body.author, op_key(create))
    return [RoomChange("joined", body.author, key=op_key(create))]


def fold_name(logs: list[RoomLog], claim_known: ClaimCheck) -> list[RoomView]:
    """Fold every instance of one room name into its rooms, oldest first (rules 7 to 9).

    The creations and operations of all instances are swept in the total order. An instance whose creator's claim
    is not known does not exist (its operations are ignored); one created while the current room is alive merges
    into it if it is concurrent with it (rule 7) and is refused (ignored likewise) otherwise; one created after the
    current room was destroyed starts the next room. Each room's
    :attr:`RoomView.founders` lists the instances it holds. The result depends only on the set of operations.
    """
    sweep: list[tuple[OpKey, Op]] = []
    for log in logs:
        if log.create is None:
            continue
        sweep.append((op_key(log.create), log.create))
        sweep.extend(zip(log.keys, log.ops, strict=True))
    sweep.sort(key=lambda item: item[0])
    rooms: list[RoomView] = []
    current: RoomView | None = None
    for _key, op in sweep:
        body = op.body
        if isinstance(body, RoomCreate):
            if not claim_known(body.author, body.author_inc, op.origin, op.hlc):
                continue
            if current is None or current.destroyed is not None:
                current = _new_view(op, body)
                rooms.append(current)
            else:
                _merge(current, op, body)
            continue
        assert isinstance(body, Membership)
        if current is None or body.room_id not in current.founders:
            continue  # before its instance was created, or addressed to a room destroyed since
        if claim_known(body.author, body.author_inc, op.origin, op.hlc):
            step(current, op, body)
    return rooms
