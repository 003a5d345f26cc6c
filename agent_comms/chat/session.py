"""The chat's logic without a terminal: a typed line in, lines to show out; events and presence changes rendered.

:class:`ChatSession` keeps what the person is talking to (a room or a direct-message partner), turns a plain line
into a ``send`` or ``dm`` tool call and a slash command into the tool call it names, and renders delivery events
and presence changes as :class:`Line` values. How lines reach the screen is the frontend's business
(:mod:`agent_comms.chat.client`).
"""

from __future__ import annotations

import datetime as dt
import unicodedata
from collections.abc import Awaitable, Callable, Mapping
from typing import TYPE_CHECKING, Final, Literal

import attrs

from agent_comms.errors import CommsError
from agent_comms.events import DeliveryEvent, format_delivery_event

if TYPE_CHECKING:
    from agent_comms.agent import Agent
    from agent_comms.protocol.changes import AgentChanged
    from agent_comms.tool import ToolResult

__all__ = ["COMMANDS", "ROOM_TYPES", "ChatSession", "Kind", "Line", "Names"]

#: How a line is shown: ``message`` (a room message), ``dm``, ``mine`` (what the person sent, when echoed),
#: ``info`` (a command's answer), ``error``, ``event`` (room changes, invites), ``presence``, ``receipt``.
Kind = Literal["message", "dm", "mine", "info", "error", "event", "presence", "receipt"]

ROOM_TYPES: Final = ("public", "private", "secret")
_STATUSES: Final = ("active", "idle", "busy")


@attrs.frozen
class Line:
    """One line (or a few, for multi-line text) to show the person."""

    kind: Kind
    text: str


@attrs.frozen
class Names:
    """Names to complete on the input line (a snapshot: the input runs in another thread than the mesh)."""

    rooms: tuple[str, ...] = ()
    agents: tuple[str, ...] = ()

    def complete(self, text: str) -> list[str]:
        """Completions of the word before the cursor in ``text``: command names, then a room or an agent name."""
        if not text.startswith("/"):
            return []
        command, space, rest = text[1:].partition(" ")
        if not space:
            return sorted({f"/{c.name}" for c in COMMANDS.values() if c.name.startswith(command)})
        if " " in rest:
            return []
        run = COMMANDS.get(command.lower())
        if run is None:
            return []
        if run.argument == "room":
            return [name for name in self.rooms if name.startswith(rest.removeprefix("#"))]
        if run.argument == "agent":
            return [name for name in self.agents if name.startswith(rest.removeprefix("@"))]
        if run.argument == "target":
            targets = [*self.rooms, *(f"@{name}" for name in self.agents)]
            return [name for name in targets if name.startswith(rest)]
        return []


@attrs.frozen
class _Command:
    #: the main name (the others are aliases: typed, not offered)
    name: str
    usage: str
    summary: str
    run: Callable[[ChatSession, str], Awaitable[list[Line]]]
    #: what the first argument names, for completion: "room", "agent", "target" (a room or @agent) or ""
    argument: str = ""


#: The slash commands by name, filled in below the class (aliases point at the same entry).
COMMANDS: dict[str, _Command] = {}


def _clean(text: str) -> str:
    """Text from the mesh, safe for a terminal: control characters (escape sequences!) shown as ``^X``/``\\uXXXX``."""
    out = []
    for char in text:
        if char in "\n\t" or unicodedata.category(char) != "Cc":
            out.append(char)
        elif ord(char) < 32:
            out.append("^" + chr(ord(char) + 64))
        else:
            out.append(f"\\u{ord(char):04x}")
    return "".join(out)


def _split_first(args: str) -> tuple[str, str]:
    """The first argument (``"quoted"`` when it has spaces) and the rest."""
    args = args.strip()
    if args[:1] in ('"', "'"):
        end = args.find(args[0], 1)
        if end > 0:
            return args[1:end], args[end + 1 :].strip()
    first, _, rest = args.partition(" ")
    return first, rest.strip()


def _clock(milliseconds: int) -> str:
    if milliseconds <= 0:
        return dt.datetime.now().strftime("%H:%M")
    return dt.datetime.fromtimestamp(milliseconds / 1000).strftime("%H:%M")


class ChatSession:
    """One person's chat over an :class:`~agent_comms.agent.Agent` (harness ``human``).

    ``echo`` shows the person's own messages as lines (for scripted use, where no prompt line stays on screen).
    """

    def __init__(self, agent: Agent, *, echo: bool = False) -> None:
        self.agent = agent
        self.echo = echo
        #: the room plain lines go to, if any
        self.room: str | None = None
        #: the agent id plain lines go to as direct messages, if any (a room and a partner exclude each other)
        self.partner: str | None = None
        #: who sent the last direct message (``/reply`` answers it)
        self.last_dm_from: str | None = None
        #: set by /quit
        self.done = False
        self._my_dms: set[str] = set()

    # ------------------------------------------------------------------ what the person sees around the input

    def prompt(self) -> str:
        """The prompt: where a plain line goes."""
        if self.room is not None:
            return f"#{self.room}> "
        if self.partner is not None:
            return f"@{self._name(self.partner)}> "
        return "> "

    def names(self) -> Names:
        """What the input line can complete now: room names and the names of the visible online agents."""
        store = self.agent.store
        rooms = tuple(view.name for _room_id, view in store.rooms(viewer=self.agent.id))
        agents = tuple(
            body.name
            for body, online in store.agents()
            if online and body.visibility == "visible" and body.agent_id != self.agent.id
        )
        return Names(rooms, agents)

    def welcome(self) -> list[Line]:
        """The first lines: who the person is, who is online, how to get help."""
        store = self.agent.store
        others = [
            store.label(body.agent_id)
            for body, online in store.agents()
            if online and body.visibility == "visible" and body.agent_id != self.agent.id
        ]
        rooms = [view.name for _room_id, view in store.rooms(viewer=self.agent.id)]
        lines = [
            f"You are {store.label(self.agent.id)} on the agent mesh. /help lists the commands.",
            f"Online: {', '.join(others)}." if others else "Nobody else is online yet.",
            f"Rooms: {', '.join('#' + r for r in rooms) if rooms else 'none yet; /create ROOM'}.",
        ]
        return [Line("info", _clean(text)) for text in lines]

    # ------------------------------------------------------------------ input

    async def handle(self, line: str) -> list[Line]:
        """Act on one typed line; the lines to show in answer."""
        text = line.rstrip("\r\n")
        if not text.strip():
            return []
        if text.startswith("//"):
            return await self.say(text[1:])
        if not text.startswith("/"):
            return await self.say(text)
        name, _, args = text[1:].partition(" ")
        command = COMMANDS.get(name.lower())
        if command is None:
            return [Line("error", f"Unknown command /{name}; /help lists the commands (// starts a line with /).")]
        return await command.run(self, args.strip())

    async def say(self, text: str) -> list[Line]:
        """Send ``text`` to the current room or partner."""
        if self.room is not None:
            result = await self._call({"action": "send", "target": self.room, "content": text})
            where = f"#{self.room}"
        elif self.partner is not None:
            result = await self._call({"action": "dm", "target": self.partner, "content": text})
            where = f"@{self._name(self.partner)}"
            self._remember_dm(result)
        else:
            return [Line("error", "You are not talking to anyone yet: /join ROOM, /dm AGENT, or /help.")]
        if result.is_error:
            return [self._error(result)]
        lines = [Line("mine", f"{_clock(0)} [{where}] {self.agent.name}: {text}")] if self.echo else []
        return lines + self._away_note(result)

    # ------------------------------------------------------------------ events

    def render_event(self, event: DeliveryEvent) -> list[Line]:
        """How a delivery event is shown (some are not: receipts of room messages, echoes of presence)."""
        kind = event.type
        who = _clean(event.sender_name or event.sender)
        room = _clean(event.room)
        if kind == "room_message":
            reply = f" (reply to {event.reply_to})" if event.reply_to else ""
            return [Line("message", f"{_clock(event.timestamp)} [#{room}] {who}{reply}: {_clean(event.content)}")]
        if kind == "dm":
            self.last_dm_from = event.sender
            reply = f" (reply to {event.reply_to})" if event.reply_to else ""
            return [Line("dm", f"{_clock(event.timestamp)} [DM from {who}]{reply} {_clean(event.content)}")]
        if kind == "delivery_status":
            if event.status == "dropped" or event.message_id in self._my_dms:
                return [Line("receipt", _clean(format_delivery_event(event)))]
            return []  # receipts of room messages: one per member, too many to show
        if kind in ("member_status", "room_members"):
            # presence comes from the mesh's agent records (render_presence); the join answer lists the members
            return []
        gone = kind == "room_destroyed" or (kind == "member_kicked" and event.subject == self.agent.id)
        if gone and event.room == self.room:
            self.room = None
        if kind == "room_invite":
            return [Line("event", f"[#{room}] {who} invited you: /join {room} to accept, /decline {room} to refuse")]
        return [Line("event", _clean(format_delivery_event(event)))]

    def render_presence(self, change: AgentChanged) -> list[Line]:
        """An agent came online, went offline, changed its name or status (visible agents other than oneself)."""
        record = change.record
        if change.agent_id == self.agent.id or record.visibility != "visible":
            return []
        label = _clean(f"{record.name} ({record.agent_id})")
        previous = change.previous
        if previous is None or change.online != change.was_online:
            if change.online:
                return [Line("presence", f"* {label} is online ({_clean(record.harness)})")]
            return [Line("presence", f"* {label} went offline")] if previous is not None else []
        if not change.online:
            return []
        lines = []
        if previous.name != record.name:
            lines.append(Line("presence", f"* {_clean(previous.name)} is now known as {label}"))
        if previous.status != record.status:
            lines.append(Line("presence", f"* {label} is {record.status}"))
        return lines

    # ------------------------------------------------------------------ helpers

    async def _call(self, params: Mapping[str, object]) -> ToolResult:
        return await self.agent.call(params)

    async def _answer(self, params: Mapping[str, object]) -> list[Line]:
        result = await self._call(params)
        return [self._error(result) if result.is_error else Line("info", _clean(result.text))]

    def _error(self, result: ToolResult) -> Line:
        text = result.text
        if result.data.get("code") == "ROOM_NOT_FOUND":
            text += "; /rooms lists the rooms, /create ROOM makes one"
        elif result.data.get("code") == "AGENT_NOT_FOUND":
            text += "; /who lists who is online"
        return Line("error", _clean(text))

    def _away_note(self, result: ToolResult) -> list[Line]:
        """For a DM to an agent that is offline: it gets the message when it returns (the tool's answer says so)."""
        to = result.data.get("to")
        if isinstance(to, str) and not self.agent.store.online(to):
            return [Line("info", _clean(result.text))]
        return []

    def _name(self, agent_id: str) -> str:
        record = self.agent.store.record(agent_id)
        return agent_id if record is None else record.name

    def _remember_dm(self, result: ToolResult) -> None:
        message_id = result.data.get("message_id")
        if isinstance(message_id, str):
            if len(self._my_dms) > 10_000:
                self._my_dms.clear()
            self._my_dms.add(message_id)

    def _room_or_current(self, args: str, usage: str) -> str | Line:
        room = args.strip().removeprefix("#")
        if room:
            return room
        if self.room is not None:
            return self.room
        return Line("error", f"Which room? Usage: {usage}")


# ---------------------------------------------------------------------- the commands


_Run = Callable[[ChatSession, str], Awaitable[list[Line]]]


def _command(*names: str, usage: str, summary: str, argument: str = "") -> Callable[[_Run], _Run]:
    """Register a command under ``names`` (the first is its main name)."""

    def add(run: _Run) -> _Run:
        command = _Command(names[0], usage, summary, run, argument)
        for name in names:
            COMMANDS[name] = command
        return run

    return add


@_command("help", "?", usage="/help", summary="this list")
async def _help(session: ChatSession, _args: str) -> list[Line]:
    seen: set[int] = set()
    lines = [Line("info", "Plain lines go to the current room or DM partner (// sends a line that starts with /).")]
    for command in COMMANDS.values():
        if id(command) not in seen:
            seen.add(id(command))
            lines.append(Line("info", f"  {command.usage:<28} {command.summary}"))
    return lines


@_command("join", "j", usage="/join ROOM", summary="join a room and talk in it", argument="room")
async def _join(session: ChatSession, args: str) -> list[Line]:
    room = args.removeprefix("#")
    if not room:
        return [Line("error", "Which room? Usage: /join ROOM (/rooms lists them)")]
    result = await session._call({"action": "join_room", "room": room})
    if result.is_error:
        return [session._error(result)]
    session.room, session.partner = room, None
    return [Line("info", _clean(result.text))]


@_command("leave", "part", usage="/leave [ROOM]", summary="leave the current room (or ROOM)", argument="room")
async def _leave(session: ChatSession, args: str) -> list[Line]:
    room = session._room_or_current(args, "/leave ROOM")
    if isinstance(room, Line):
        return [room]
    result = await session._call({"action": "leave_room", "room": room})
    if result.is_error:
        return [session._error(result)]
    if session.room == room:
        session.room = None
    return [Line("info", _clean(result.text))]


@_command("rooms", usage="/rooms", summary="the rooms you may see ([joined] marks yours)")
async def _rooms(session: ChatSession, _args: str) -> list[Line]:
    return await session._answer({"action": "list_rooms"})


@_command("who", "agents", usage="/who", summary="the agents online, with their status and rooms")
async def _who(session: ChatSession, _args: str) -> list[Line]:
    return await session._answer({"action": "list_agents"})


@_command(
    "dm",
    "msg",
    usage="/dm AGENT [TEXT]",
    summary="send AGENT a direct message (no TEXT: talk to AGENT)",
    argument="agent",
)
async def _dm(session: ChatSession, args: str) -> list[Line]:
    target, text = _split_first(args)
    target = target.removeprefix("@")
    if not target:
        return [Line("error", "Whom? Usage: /dm AGENT [TEXT] (/who lists the agents)")]
    if not text:
        return _switch_to_agent(session, target)
    result = await session._call({"action": "dm", "target": target, "content": text})
    session._remember_dm(result)
    if result.is_error:
        return [session._error(result)]
    to = result.data.get("to")
    name = session._name(to) if isinstance(to, str) else target
    lines = [Line("mine", f"{_clock(0)} [DM to {_clean(name)}] {text}")] if session.echo else []
    return lines + session._away_note(result)


@_command("reply", "r", usage="/reply TEXT", summary="answer the last direct message you received")
async def _reply(session: ChatSession, args: str) -> list[Line]:
    if session.last_dm_from is None:
        return [Line("error", "No direct message to answer yet; /dm AGENT TEXT writes one.")]
    if not args:
        return [Line("error", "What? Usage: /reply TEXT")]
    return await _dm(session, f'"{session.last_dm_from}" {args}')


def _switch_to_agent(session: ChatSession, ref: str) -> list[Line]:
    try:
        record = session.agent.store.find_agent(ref, viewer=session.agent.id, allow_ghost=False)
    except CommsError as exc:
        return [Line("error", _clean(exc.text) + "; /who lists who is online")]
    if record.agent_id == session.agent.id:
        return [Line("error", "That is you; pick another agent (/who lists them).")]
    session.partner, session.room = record.agent_id, None
    label = session.agent.store.label(record.agent_id)
    return [Line("info", f"Talking to {_clean(label)} now: plain lines are direct messages.")]


@_command(
    "switch",
    "room",
    "go",
    usage="/switch ROOM|@AGENT",
    summary="talk in another joined room, or to an agent",
    argument="target",
)
async def _switch(session: ChatSession, args: str) -> list[Line]:
    target = args.strip()
    joined = session.agent.store.rooms_of(session.agent.id)
    if not target:
        where = session.prompt().rstrip("> ") or "nowhere"
        rooms = ", ".join(f"#{r}" for r in joined) or "none"
        return [Line("info", f"Talking in {where}. Joined rooms: {rooms}. Usage: /switch ROOM|@AGENT")]
    if target.startswith("@"):
        return _switch_to_agent(session, target[1:])
    room = target.removeprefix("#")
    if room not in joined:
        return [Line("error", f"You are not in #{_clean(room)}: /join {_clean(room)} first (/rooms lists the rooms).")]
    session.room, session.partner = room, None
    return [Line("info", f"Talking in #{_clean(room)} now.")]


@_command("read", "history", usage="/read [ROOM]", summary="the recent history of a room", argument="room")
async def _read(session: ChatSession, args: str) -> list[Line]:
    room = session._room_or_current(args, "/read ROOM")
    if isinstance(room, Line):
        return [room]
    return await session._answer({"action": "read_room", "room": room})


@_command(
    "create", usage="/create ROOM [TYPE] [TEXT]", summary="create a room (TYPE public|private|secret) and talk in it"
)
async def _create(session: ChatSession, args: str) -> list[Line]:
    room, rest = _split_first(args)
    room = room.removeprefix("#")
    if not room:
        return [Line("error", "Which room? Usage: /create ROOM [public|private|secret] [description]")]
    kind, _, description = rest.partition(" ")
    if kind not in ROOM_TYPES:
        kind, description = "public", rest
    params = {"action": "create_room", "room": room, "type": kind}
    if description.strip():
        params["description"] = description.strip()
    result = await session._call(params)
    if result.is_error:
        return [session._error(result)]
    session.room, session.partner = room, None
    return [Line("info", _clean(result.text))]


@_command("invite", usage="/invite AGENT [ROOM]", summary="invite an agent to a room you own", argument="agent")
async def _invite(session: ChatSession, args: str) -> list[Line]:
    agent, rest = _split_first(args)
    room = session._room_or_current(rest, "/invite AGENT ROOM")
    if not agent:
        return [Line("error", "Whom? Usage: /invite AGENT [ROOM]")]
    if isinstance(room, Line):
        return [room]
    return await session._answer({"action": "invite", "room": room, "agent": agent.removeprefix("@")})


@_command("decline", usage="/decline ROOM [REASON]", summary="decline an invite (the owner is told)", argument="room")
async def _decline(session: ChatSession, args: str) -> list[Line]:
    room, reason = _split_first(args)
    if not room:
        return [Line("error", "Which room? Usage: /decline ROOM [REASON]")]
    params = {"action": "decline_invite", "room": room.removeprefix("#")}
    if reason:
        params["reason"] = reason
    return await session._answer(params)


@_command("kick", usage="/kick AGENT [ROOM]", summary="remove an agent from a room you own", argument="agent")
async def _kick(session: ChatSession, args: str) -> list[Line]:
    agent, rest = _split_first(args)
    room = session._room_or_current(rest, "/kick AGENT ROOM")
    if not agent:
        return [Line("error", "Whom? Usage: /kick AGENT [ROOM]")]
    if isinstance(room, Line):
        return [room]
    return await session._answer({"action": "kick", "room": room, "agent": agent.removeprefix("@")})


@_command("destroy", usage="/destroy ROOM", summary="destroy a room you own (its members are told)", argument="room")
async def _destroy(session: ChatSession, args: str) -> list[Line]:
    room = args.strip().removeprefix("#")
    if not room:  # never destroy the current room by accident: the name must be typed
        return [Line("error", "Which room? Usage: /destroy ROOM")]
    lines = await session._answer({"action": "destroy_room", "room": room})
    if lines[0].kind != "error" and session.room == room:
        session.room = None
    return lines


@_command("name", "nick", usage="/name NEWNAME", summary="change your name (kept for next time)")
async def _rename(session: ChatSession, args: str) -> list[Line]:
    if not args:
        return [Line("error", "Which name? Usage: /name NEWNAME")]
    record = session.agent.store.record(session.agent.id)
    visibility = "visible" if record is None else record.visibility
    result = await session._call({"action": "register", "name": args, "visibility": visibility})
    if result.is_error:
        return [session._error(result)]
    return [Line("info", f"You are {_clean(session.agent.store.label(session.agent.id))} now.")]


@_command("status", usage="/status active|idle|busy", summary="set your status (others see it)")
async def _status(session: ChatSession, args: str) -> list[Line]:
    if args not in _STATUSES:
        return [Line("error", f"Usage: /status {'|'.join(_STATUSES)}")]
    return await session._answer({"action": "update", "status": args})


@_command("me", "whoami", usage="/me", summary="who you are, your status and rooms")
async def _whoami(session: ChatSession, _args: str) -> list[Line]:
    return await session._answer({"action": "whoami"})


@_command("quit", "exit", "q", usage="/quit", summary="leave the mesh (Ctrl-D and Ctrl-C too)")
async def _quit(session: ChatSession, _args: str) -> list[Line]:
    session.done = True
    return []
