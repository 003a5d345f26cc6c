"""The slash commands of the chat (``/join``, ``/dm``, ...) and the completion of their arguments.

Each command is an async function of the :class:`~agent_comms.chat.session.ChatSession` and the rest of the line,
registered under its names with :func:`command`; it returns the lines to show.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Final

import attrs

from agent_comms.chat.lines import Line, clean, clock
from agent_comms.errors import CommsError

if TYPE_CHECKING:
    from agent_comms.chat.session import ChatSession

__all__ = ["COMMANDS", "ROOM_TYPES", "Command", "Names", "split_first"]

ROOM_TYPES: Final = ("public", "private", "secret")
_STATUSES: Final = ("active", "idle", "busy")


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
class Command:
    """A slash command: its names, help and what it does."""

    #: the main name (the others are aliases: typed, not offered)
    name: str
    usage: str
    summary: str
    run: Callable[[ChatSession, str], Awaitable[list[Line]]]
    #: what the first argument names, for completion: "room", "agent", "target" (a room or @agent) or ""
    argument: str = ""


#: The slash commands by name, filled in below (aliases point at the same entry).
COMMANDS: dict[str, Command] = {}


def split_first(args: str) -> tuple[str, str]:
    """The first argument (``"quoted"`` when it has spaces) and the rest."""
    args = args.strip()
    if args[:1] in ('"', "'"):
        end = args.find(args[0], 1)
        if end > 0:
            return args[1:end], args[end + 1 :].strip()
    first, _, rest = args.partition(" ")
    return first, rest.strip()


_Run = Callable[["ChatSession", str], Awaitable[list[Line]]]


def command(*names: str, usage: str, summary: str, argument: str = "") -> Callable[[_Run], _Run]:
    """Register a command under ``names`` (the first is its main name)."""

    def add(run: _Run) -> _Run:
        command = Command(names[0], usage, summary, run, argument)
        for name in names:
            COMMANDS[name] = command
        return run

    return add


@command("help", "?", usage="/help", summary="this list")
async def _help(session: ChatSession, _args: str) -> list[Line]:
    seen: set[int] = set()
    lines = [Line("info", "Plain lines go to the current room or DM partner (// sends a line that starts with /).")]
    for command in COMMANDS.values():
        if id(command) not in seen:
            seen.add(id(command))
            lines.append(Line("info", f"  {command.usage:<28} {command.summary}"))
    return lines


@command("join", "j", usage="/join ROOM", summary="join a room and talk in it", argument="room")
async def _join(session: ChatSession, args: str) -> list[Line]:
    room = args.removeprefix("#")
    if not room:
        return [Line("error", "Which room? Usage: /join ROOM (/rooms lists them)")]
    result = await session.call({"action": "join_room", "room": room})
    if result.is_error:
        return [session.error_line(result)]
    session.room, session.partner = room, None
    return [Line("info", result.text)]


@command("leave", "part", usage="/leave [ROOM]", summary="leave the current room (or ROOM)", argument="room")
async def _leave(session: ChatSession, args: str) -> list[Line]:
    room = session.room_or_current(args, "/leave ROOM")
    if isinstance(room, Line):
        return [room]
    result = await session.call({"action": "leave_room", "room": room})
    if result.is_error:
        return [session.error_line(result)]
    if session.room == room:
        session.room = None
    return [Line("info", result.text)]


@command("rooms", usage="/rooms", summary="the rooms you may see ([joined] marks yours)")
async def _rooms(session: ChatSession, _args: str) -> list[Line]:
    return await session.answer({"action": "list_rooms"})


@command("who", "agents", usage="/who", summary="the agents online, with their status and rooms")
async def _who(session: ChatSession, _args: str) -> list[Line]:
    return await session.answer({"action": "list_agents"})


@command(
    "dm",
    "msg",
    usage="/dm AGENT [TEXT]",
    summary="send AGENT a direct message (no TEXT: talk to AGENT)",
    argument="agent",
)
async def _dm(session: ChatSession, args: str) -> list[Line]:
    target, text = split_first(args)
    target = target.removeprefix("@")
    if not target:
        return [Line("error", "Whom? Usage: /dm AGENT [TEXT] (/who lists the agents)")]
    if not text:
        return _switch_to_agent(session, target)
    result = await session.call({"action": "dm", "target": target, "content": text})
    session.remember_dm(result)
    if result.is_error:
        return [session.error_line(result)]
    to = result.data.get("to")
    name = session.name_of(to) if isinstance(to, str) else target
    lines = [Line("mine", f"{clock(0)} [DM to {name}] {clean(text)}")] if session.echo else []
    return lines + session.away_note(result)


@command("reply", "r", usage="/reply TEXT", summary="answer the last direct message you received")
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
        return [Line("error", clean(exc.text) + "; /who lists who is online")]
    if record.agent_id == session.agent.id:
        return [Line("error", "That is you; pick another agent (/who lists them).")]
    session.partner, session.room = record.agent_id, None
    label = session.agent.store.label(record.agent_id)
    return [Line("info", f"Talking to {clean(label)} now: plain lines are direct messages.")]


@command(
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
        return [Line("info", clean(f"Talking in {where}. Joined rooms: {rooms}. Usage: /switch ROOM|@AGENT"))]
    if target.startswith("@"):
        return _switch_to_agent(session, target[1:])
    room = target.removeprefix("#")
    if room not in joined:
        return [Line("error", f"You are not in #{clean(room)}: /join {clean(room)} first (/rooms lists the rooms).")]
    session.room, session.partner = room, None
    return [Line("info", f"Talking in #{clean(room)} now.")]


@command("read", "history", usage="/read [ROOM]", summary="the recent history of a room", argument="room")
async def _read(session: ChatSession, args: str) -> list[Line]:
    room = session.room_or_current(args, "/read ROOM")
    if isinstance(room, Line):
        return [room]
    return await session.answer({"action": "read_room", "room": room})


@command(
    "create", usage="/create ROOM [TYPE] [TEXT]", summary="create a room (TYPE public|private|secret) and talk in it"
)
async def _create(session: ChatSession, args: str) -> list[Line]:
    room, rest = split_first(args)
    room = room.removeprefix("#")
    if not room:
        return [Line("error", "Which room? Usage: /create ROOM [public|private|secret] [description]")]
    kind, _, description = rest.partition(" ")
    if kind not in ROOM_TYPES:
        kind, description = "public", rest
    params = {"action": "create_room", "room": room, "type": kind}
    if description.strip():
        params["description"] = description.strip()
    result = await session.call(params)
    if result.is_error:
        return [session.error_line(result)]
    session.room, session.partner = room, None
    return [Line("info", result.text)]


@command("invite", usage="/invite AGENT [ROOM]", summary="invite an agent to a room you own", argument="agent")
async def _invite(session: ChatSession, args: str) -> list[Line]:
    agent, rest = split_first(args)
    room = session.room_or_current(rest, "/invite AGENT ROOM")
    if not agent:
        return [Line("error", "Whom? Usage: /invite AGENT [ROOM]")]
    if isinstance(room, Line):
        return [room]
    return await session.answer({"action": "invite", "room": room, "agent": agent.removeprefix("@")})


@command("decline", usage="/decline ROOM [REASON]", summary="decline an invite (the owner is told)", argument="room")
async def _decline(session: ChatSession, args: str) -> list[Line]:
    room, reason = split_first(args)
    if not room:
        return [Line("error", "Which room? Usage: /decline ROOM [REASON]")]
    params = {"action": "decline_invite", "room": room.removeprefix("#")}
    if reason:
        params["reason"] = reason
    return await session.answer(params)


@command("kick", usage="/kick AGENT [ROOM]", summary="remove an agent from a room you own", argument="agent")
async def _kick(session: ChatSession, args: str) -> list[Line]:
    agent, rest = split_first(args)
    room = session.room_or_current(rest, "/kick AGENT ROOM")
    if not agent:
        return [Line("error", "Whom? Usage: /kick AGENT [ROOM]")]
    if isinstance(room, Line):
        return [room]
    return await session.answer({"action": "kick", "room": room, "agent": agent.removeprefix("@")})


@command("destroy", usage="/destroy ROOM", summary="destroy a room you own (its members are told)", argument="room")
async def _destroy(session: ChatSession, args: str) -> list[Line]:
    room = args.strip().removeprefix("#")
    if not room:  # never destroy the current room by accident: the name must be typed
        return [Line("error", "Which room? Usage: /destroy ROOM")]
    lines = await session.answer({"action": "destroy_room", "room": room})
    if lines[0].kind != "error" and session.room == room:
        session.room = None
    return lines


@command("name", "nick", usage="/name NEWNAME", summary="change your name (kept for next time)")
async def _rename(session: ChatSession, args: str) -> list[Line]:
    if not args:
        return [Line("error", "Which name? Usage: /name NEWNAME")]
    record = session.agent.store.record(session.agent.id)
    visibility = "visible" if record is None else record.visibility
    result = await session.call({"action": "register", "name": args, "visibility": visibility})
    if result.is_error:
        return [session.error_line(result)]
    return [Line("info", f"You are {clean(session.agent.store.label(session.agent.id))} now.")]


@command("status", usage="/status active|idle|busy", summary="set your status (others see it)")
async def _status(session: ChatSession, args: str) -> list[Line]:
    if args not in _STATUSES:
        return [Line("error", f"Usage: /status {'|'.join(_STATUSES)}")]
    return await session.answer({"action": "update", "status": args})


@command("me", "whoami", usage="/me", summary="who you are, your status and rooms")
async def _whoami(session: ChatSession, _args: str) -> list[Line]:
    return await session.answer({"action": "whoami"})


@command("quit", "exit", "q", usage="/quit", summary="leave the mesh (Ctrl-D and Ctrl-C too)")
async def _quit(session: ChatSession, _args: str) -> list[Line]:
    session.done = True
    return []
