"""``CommsTool``: the one ``agent_comms`` tool, for one agent, over a :class:`~agent_comms.store.MeshStore`.

:meth:`CommsTool.call` takes the model's untrusted parameters and always returns a :class:`ToolResult`; errors are
results (``Error: <message> (<CODE>)`` with ``is_error``), never exceptions. Agents appear as ``name (id)`` and may
be named by either.
"""

from __future__ import annotations

import datetime as dt
import os
from collections.abc import Callable, Mapping
from typing import Any, assert_never

import attrs

from . import queries, visibility
from .actions import (
    READ_ROOM_DEFAULT,
    Action,
    CreateRoom,
    DeclineInvite,
    DestroyRoom,
    Dm,
    Invite,
    JoinRoom,
    Kick,
    LeaveRoom,
    ListAgents,
    ListRooms,
    ReadRoom,
    Register,
    Send,
    Update,
    WhoAmI,
    build_action,
)
from .display import display
from .errors import CommsError, ErrorCode
from .events import DeliveryEvent, format_events
from .protocol.hlc import hlc_wall_ms
from .protocol.ops import AgentUpsert, MembershipAction, Op, RoomMessage, op_id, op_key
from .protocol.rooms import Refusal, RoomView, refusal
from .store import MeshStore
from .views import namesakes, shown_names

__all__ = ["READ_ROOM_DEFAULT", "CommsTool", "ToolResult", "ensure_registered", "with_deliveries"]


@attrs.frozen
class ToolResult:
    """What the model sees: ``text``; ``is_error`` for failures; ``data`` for programs (not shown)."""

    text: str
    is_error: bool = False
    data: dict[str, Any] = attrs.field(factory=dict)


class CommsTool:
    """The ``agent_comms`` tool of one agent slot (``agent_id``) of a harness."""

    def __init__(
        self,
        store: MeshStore,
        *,
        agent_id: str,
        harness: str,
        cwd: str | None = None,
        pid: int | None = None,
        process_start: float = 0.0,
    ) -> None:
        self.store = store
        self.agent_id = agent_id
        self.harness = harness
        self.cwd = os.getcwd() if cwd is None else cwd
        self.pid = os.getpid() if pid is None else pid
        self.process_start = process_start
        #: called with the new name after every successful register (``open_agent`` remembers it for next start)
        self.on_register: Callable[[str], None] | None = None

    @property
    def registered(self) -> bool:
        """Whether the agent is on the mesh (hosted by this store's node)."""
        return self.store.is_hosted(self.agent_id)

    def call(self, params: Mapping[str, object]) -> ToolResult:
        """Run one tool call."""
        try:
            action = build_action(params)
            if not isinstance(action, Register) and not self.registered:
                raise CommsError(ErrorCode.INVALID_PARAMS, "not registered yet: call action 'register' with a name")
            return self._run(action)
        except CommsError as exc:
            return ToolResult(exc.text, is_error=True, data={"code": str(exc.code)})

    # ------------------------------------------------------------------ dispatch

    def _run(self, action: Action) -> ToolResult:
        """Execute one action (the type checker sees that every member of :data:`~agent_comms.actions.Action` has
        its case)."""
        match action:
            case Register():
                return self._register(action)
            case Update():
                return self._update(action)
            case WhoAmI():
                return self._whoami(action)
            case ListAgents():
                return self._listagents(action)
            case CreateRoom():
                return self._createroom(action)
            case ListRooms():
                return self._listrooms(action)
            case JoinRoom():
                return self._joinroom(action)
            case LeaveRoom():
                return self._leaveroom(action)
            case Send():
                return self._send(action)
            case Dm():
                return self._dm(action)
            case ReadRoom():
                return self._readroom(action)
            case Invite():
                return self._invite(action)
            case DeclineInvite():
                return self._declineinvite(action)
            case Kick():
                return self._kick(action)
            case DestroyRoom():
                return self._destroyroom(action)
            case _:
                assert_never(action)

    def _register(self, action: Register) -> ToolResult:
        store = self.store
        if self.registered:
            store.update(self.agent_id, name=action.name, visibility=action.visibility, tags=action.tags)
            verb = "Re-registered"
        else:
            record = AgentUpsert(
                self.agent_id,
                "",
                0,
                0,
                action.name,
                self.harness,
                self.cwd,
                self.pid,
                self.process_start,
                visibility=action.visibility,
                tags=action.tags,
            )
            store.host(record)
            verb = "Registered"
        others = [
            store.label(body.agent_id)
            for body, online in store.agents()
            if online and body.agent_id != self.agent_id and visibility.listed(body, self.agent_id)
        ]
        listing = ", ".join(others) if others else "no other agents"
        text = f"{verb} as {store.label(self.agent_id)} ({action.visibility}). Online: {listing}."
        data: dict[str, Any] = {"id": self.agent_id, "name": action.name}
        note = self._name_in_use(action.name)
        if note is not None:
            text += "\n" + note
            data["name_in_use"] = note
        if self.on_register is not None:
            self.on_register(action.name)
        return ToolResult(text, data=data)

    def _name_in_use(self, name: str) -> str | None:
        """One line for an agent that took a name another online agent it can see already bears, else ``None``."""
        store = self.store
        same = [
            other
            for other in namesakes(store.state, self.agent_id)
            if (body := store.record(other)) is not None and visibility.listed(body, self.agent_id)
        ]
        if not same:
            return None
        shown = shown_names(store.state)(self.agent_id)
        return (
            f"Note: the name {display(name, inline=True)} is already in use by {len(same)} other agent(s); "
            f"people see you as {display(shown, inline=True)} (update with a new name to be told apart)."
        )

    def _update(self, action: Update) -> ToolResult:
        fields = {k: v for k, v in attrs.asdict(action).items() if v is not None}
        self.store.update(self.agent_id, **fields)
        changed = ", ".join(f"{k}={v!r}" for k, v in fields.items())
        return ToolResult(f"Updated {self.store.label(self.agent_id)}: {changed}.", data=fields)

    def _whoami(self, _action: WhoAmI) -> ToolResult:
        record = self.store.record(self.agent_id)
        assert record is not None
        rooms = self.store.rooms_of(self.agent_id)
        text = display(
            f"You are {self.store.label(self.agent_id)}: {record.status}, {record.visibility}, "
            f"harness {record.harness}, cwd {record.cwd}; tags: {', '.join(record.tags) or '-'}; rooms: "
            + (", ".join(f"#{r}" for r in rooms) or "none"),
            inline=True,
        )
        return ToolResult(text, data={"id": self.agent_id, "name": record.name, "rooms": rooms})

    def _listagents(self, _action: ListAgents) -> ToolResult:
        store = self.store
        lines = []
        listed = []
        for body, online in store.agents():
            mine = body.agent_id == self.agent_id
            if not online or not visibility.listed(body, self.agent_id):
                continue
            rooms = ", ".join(f"#{r}" for r in store.rooms_of(body.agent_id, viewer=self.agent_id)) or "no rooms"
            you = " (you)" if mine else ""
            about = display(f"[{body.status}] {body.harness} in {body.cwd}; {rooms}", inline=True)
            lines.append(f"- {store.label(body.agent_id)}{you} {about}")
            listed.append(body.agent_id)
        text = f"{len(lines)} agent(s) online:\n" + "\n".join(lines)
        return ToolResult(text, data={"agents": listed})

    def _createroom(self, action: CreateRoom) -> ToolResult:
        room_id = self.store.create_room(self.agent_id, action.room, action.type, action.description)
        return ToolResult(
            f"Created #{action.room} ({action.type}); you own it and are its first member.", data={"room_id": room_id}
        )

    def _listrooms(self, _action: ListRooms) -> ToolResult:
        store = self.store
        lines = []
        for _room_id, view in store.rooms(viewer=self.agent_id):
            joined = " [joined]" if self.agent_id in view.members else ""
            invited = " [invited]" if self.agent_id in view.invited else ""
            about = f": {display(view.description)}" if view.description else ""
            name = display(view.name, inline=True)
            count = len(store.members_shown(view, self.agent_id))
            owner = store.owner_shown(view, self.agent_id)
            lines.append(
                f"- #{name} ({view.room_type}, {count} member(s)"
                + (f", owner {owner}" if owner is not None else "")
                + f"){joined}{invited}{about}"
            )
        text = f"{len(lines)} room(s):\n" + "\n".join(lines) if lines else "No rooms yet; create one with create_room."
        return ToolResult(text)

    def _joinroom(self, action: JoinRoom) -> ToolResult:
        room_id, view = self.store.room(action.room, viewer=self.agent_id)
        me = self.agent_id
        if self._refused(view, "join") is Refusal.ALREADY_MEMBER:
            return ToolResult(f"You are already in #{action.room}.")
        self.store.change_membership(me, room_id, "join")
        # Read after joining (the view folds the join at once): as a member, it sees whom members see.
        others = [self.store.label(m) for m in self.store.members_shown(view, me) if m != me]
        return ToolResult(f"Joined #{action.room}. Members: {', '.join(others) or 'just you'}.")

    def _leaveroom(self, action: LeaveRoom) -> ToolResult:
        room_id, view = self.store.room(action.room, viewer=self.agent_id)
        self._refused(view, "leave")
        was_owner = view.owner == self.agent_id
        shown = set(self.store.members_shown(view, self.agent_id))  # whom it saw as a member, before leaving
        self.store.change_membership(self.agent_id, room_id, "leave")
        after = self.store.state.room(action.room)
        note = ""
        if was_owner and after is not None:
            if after.owner == self.agent_id:
                note = " It is empty; you still own it and may come back."
            elif after.owner in shown:
                note = f" {self.store.label(after.owner)} owns it now."
            else:
                note = " You no longer own it."
        return ToolResult(f"Left #{action.room}.{note}")

    def _send(self, action: Send) -> ToolResult:
        room_id, view = self.store.room(action.target, viewer=self.agent_id)
        if self.agent_id not in view.members:
            raise CommsError(ErrorCode.NOT_MEMBER, f"you are not a member of #{action.target}; join_room first")
        self._check_reply(action.reply_to)
        message_id = self.store.send(self.agent_id, room_id, action.content, action.reply_to or "", action.streaming)
        others = len(self.store.members_shown(view, self.agent_id)) - 1
        return ToolResult(
            f"Sent to #{action.target} ({others} other member(s)); message id {message_id}.",
            data={"message_id": message_id},
        )

    def _dm(self, action: Dm) -> ToolResult:
        target = self.store.find_agent(action.target, viewer=self.agent_id)
        if target.agent_id == self.agent_id:
            raise CommsError(ErrorCode.INVALID_PARAMS, "you cannot send a direct message to yourself")
        self._check_reply(action.reply_to)
        message_id = self.store.dm(
            self.agent_id, target.agent_id, action.content, action.reply_to or "", action.streaming
        )
        note = "" if self.store.online(target.agent_id) else " It is offline; it gets the message when it returns."
        return ToolResult(
            f"Sent to {self.store.label(target.agent_id)}; message id {message_id}.{note}",
            data={"message_id": message_id, "to": target.agent_id},
        )

    def _readroom(self, action: ReadRoom) -> ToolResult:
        room_id, view = self.store.room(action.room, viewer=self.agent_id)
        if not visibility.can_read_history(view, self.agent_id):
            raise CommsError(ErrorCode.NOT_MEMBER, f"#{action.room} is {view.room_type}: only members read it")
        messages = self.store.history(room_id)
        total = len(messages)
        if action.since is not None:
            try:
                shown = queries.messages_after(messages, action.since)
            except queries.SinceError as exc:
                raise CommsError(
                    ErrorCode.INVALID_PARAMS,
                    f"invalid 'since': {exc.since!r} is neither a message id here nor an ISO time",
                ) from None
            header = f"#{action.room}: {len(shown)} message(s) since {action.since}"
        else:
            shown = messages[-READ_ROOM_DEFAULT:]
            earlier = total - len(shown)
            header = f"#{action.room}: last {len(shown)} of {total} message(s)" + (
                f" ({earlier} earlier; pass since=<message id> to read on from one)" if earlier else ""
            )
        lines = [self._line(op) for op in shown]
        # Only messages that were sent to this agent (it was a member then) get a read receipt from it.
        self.store.mark_read(
            self.agent_id,
            [self.store.message_event(op, self.agent_id) for op in shown if self._addressed(op, view)],
        )
        return ToolResult(
            header + (":\n" + "\n".join(lines) if lines else "."),
            data={"messages": [op_id(op) for op in shown], "total": total},
        )

    def _invite(self, action: Invite) -> ToolResult:
        room_id, view = self._owned(action.room, "invite")
        target = self.store.find_agent(action.agent, viewer=self.agent_id)
        if self._refused(view, "invite", target.agent_id) is Refusal.SUBJECT_INVITED:
            return ToolResult(f"{self.store.label(target.agent_id)} is already invited to #{action.room}.")
        self.store.change_membership(self.agent_id, room_id, "invite", target.agent_id)
        return ToolResult(f"Invited {self.store.label(target.agent_id)} to #{action.room}.")

    def _declineinvite(self, action: DeclineInvite) -> ToolResult:
        room_id, view = self.store.room(action.room, viewer=self.agent_id)
        self._refused(view, "decline")
        owner = self.store.owner_shown(view, self.agent_id) or "the owner"  # before the invite is gone
        self.store.change_membership(self.agent_id, room_id, "decline", reason=action.reason)
        return ToolResult(f"Declined the invite to #{action.room}; {owner} is told.")

    def _kick(self, action: Kick) -> ToolResult:
        room_id, view = self._owned(action.room, "kick")
        target = self.store.find_agent(action.agent, viewer=self.agent_id, allow_ghost=True)
        ghost = target.visibility == "ghost" and target.agent_id != self.agent_id
        if ghost and not visibility.revealed_in_room(target.agent_id, view, self.store.history(room_id)):
            # A ghost is kickable only where it showed itself by posting; elsewhere it does not exist.
            raise CommsError(ErrorCode.AGENT_NOT_FOUND, f"no agent named or with id {action.agent!r}")
        self._refused(view, "kick", target.agent_id)
        self.store.change_membership(self.agent_id, room_id, "kick", target.agent_id)
        return ToolResult(f"Kicked {self.store.label(target.agent_id)} from #{action.room}; it needs a new invite.")

    def _destroyroom(self, action: DestroyRoom) -> ToolResult:
        room_id, view = self._owned(action.room, "destroy")
        others = len([m for m in self.store.members_shown(view, self.agent_id) if m != self.agent_id])
        self.store.change_membership(self.agent_id, room_id, "destroy")
        return ToolResult(f"Destroyed #{action.room}; its {others} other member(s) are told.")

    # ------------------------------------------------------------------ helpers

    def _owned(self, name: str, action: MembershipAction) -> tuple[str, RoomView]:
        """The room called ``name``, if this agent has the right to take ``action`` in it."""
        room_id, view = self.store.room(name, viewer=self.agent_id)
        self._refused(view, action)
        return room_id, view

    def _refused(self, view: RoomView, action: MembershipAction, subject: str | None = None) -> Refusal | None:
        """Ask the room's rules (:func:`~agent_comms.protocol.rooms.refusal`) whether this agent may take ``action``
        now; raise the model's error for a refusal, return the refusals that are not errors (already done)."""
        why = refusal(view, self.agent_id, action, subject)
        room = f"#{view.name}"
        match why:
            case None | Refusal.ALREADY_MEMBER | Refusal.SUBJECT_INVITED:
                return why
            case Refusal.NEEDS_INVITE:
                raise CommsError(ErrorCode.NOT_INVITED, f"{room} is {view.room_type}: you need an invite")
            case Refusal.BANNED:
                raise CommsError(ErrorCode.NOT_INVITED, f"you were kicked from {room}: you need a new invite")
            case Refusal.NOT_MEMBER:
                raise CommsError(ErrorCode.NOT_MEMBER, f"you are not a member of {room}")
            case Refusal.NO_INVITE:
                raise CommsError(ErrorCode.NOT_INVITED, f"you have no invite to {room}")
            case Refusal.NOT_OWNER:
                owner = self.store.owner_shown(view, self.agent_id)
                named = "" if owner is None else f" ({owner})"
                raise CommsError(ErrorCode.NOT_OWNER, f"only the owner of {room}{named} can")
            case Refusal.SUBJECT_MEMBER:
                raise CommsError(ErrorCode.INVALID_PARAMS, f"{self.store.label(subject or '')} is already a member")
            case Refusal.SUBJECT_OWNER:
                # the owner asking (it passed the owner check) is the subject
                raise CommsError(
                    ErrorCode.INVALID_PARAMS, "you cannot kick yourself; leave_room or destroy_room instead"
                )
            case Refusal.SUBJECT_ABSENT:
                raise CommsError(ErrorCode.NOT_MEMBER, f"{self.store.label(subject or '')} is not in {room}")
            case Refusal.DESTROYED | Refusal.NO_SUBJECT:
                # store.room finds live rooms only, and the tool always names an agent
                raise CommsError(ErrorCode.ROOM_NOT_FOUND, f"no room {room}")
            case _:
                assert_never(why)

    def _check_reply(self, reply_to: str | None) -> None:
        # A message the agent may not read answers exactly as one that does not exist.
        if reply_to and not self.store.readable(reply_to, self.agent_id):
            raise CommsError(ErrorCode.INVALID_PARAMS, f"invalid 'replyTo': no message {reply_to!r} in the history")

    def _addressed(self, op: Op, view: RoomView) -> bool:
        body = op.body
        return (
            isinstance(body, RoomMessage)
            and body.author != self.agent_id
            and view.was_member(self.agent_id, op_key(op), body.room_id)
        )

    def _line(self, op: Op) -> str:
        body = op.body
        assert isinstance(body, RoomMessage)
        stamp = dt.datetime.fromtimestamp(hlc_wall_ms(op.hlc) / 1000, dt.UTC).strftime("%H:%M:%S")
        reply = f" (reply to {display(body.reply_to, inline=True)})" if body.reply_to else ""
        return f"[{stamp}] {self.store.label(body.author)}{reply}: {display(body.content)}  [id {op_id(op)}]"


def ensure_registered(tool: CommsTool, name: str, **params: object) -> ToolResult | None:
    """Register the tool's agent under ``name`` unless it already is (what bridges do on start)."""
    if tool.registered:
        return None
    return tool.call({"action": "register", "name": name, **params})


def with_deliveries(result: ToolResult, events: list[DeliveryEvent], *, waiting: int = 0) -> ToolResult:
    """A drain bridge's result: the tool's answer followed by the lines of the events it drained
    (:func:`~agent_comms.events.format_events`: one per message for receipts, one per agent for status changes),
    and how many events still wait."""
    lines = format_events(events)
    if not lines and not waiting:
        return result
    footer = f"\n({waiting} more event(s) waiting; they come with your next agent_comms call)" if waiting else ""
    text = result.text + f"\n\n--- {len(lines)} new event(s) ---\n" + "\n".join(lines) + footer
    return attrs.evolve(result, text=text)
