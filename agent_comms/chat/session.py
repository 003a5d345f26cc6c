"""The chat's logic without a terminal: a typed line in, lines to show out; events and presence changes rendered.

:class:`ChatSession` keeps what the person is talking to (a room or a direct-message partner), turns a plain line
into a ``send`` or ``dm`` tool call and a slash command (:mod:`agent_comms.chat.commands`) into the tool call it
names, and renders delivery events and presence changes as :class:`~agent_comms.chat.lines.Line` values. How lines
reach the screen is the frontend's business (:mod:`agent_comms.chat.client`).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING

from agent_comms import person
from agent_comms.chat.commands import COMMANDS, Names
from agent_comms.chat.lines import Line, clean, clean_name, clock
from agent_comms.events import DeliveryEvent, format_delivery_event
from agent_comms.views import author_of, shown_names

if TYPE_CHECKING:
    from agent_comms.agent import Agent
    from agent_comms.protocol.changes import AgentChanged
    from agent_comms.tool import ToolResult

__all__ = ["ChatSession"]


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
            return f"#{clean_name(self.room)}> "
        if self.partner is not None:
            return f"@{self.name_of(self.partner)}> "
        return "> "

    def names(self) -> Names:
        """What the input line can complete now: room names and the names of the visible online agents."""
        store = self.agent.store
        rooms = tuple(view.name for _room_id, view in person.rooms(store, self.agent.id))
        agents = tuple(body.name for body, _online in person.others(store, self.agent.id))
        return Names(rooms, agents)

    def welcome(self) -> list[Line]:
        """The first lines: who the person is, who is online, how to get help."""
        store = self.agent.store
        others = [store.label(body.agent_id) for body, _online in person.others(store, self.agent.id)]
        rooms = [view.name for _room_id, view in person.rooms(store, self.agent.id)]
        lines = [
            f"You are {store.label(self.agent.id)} on the agent mesh. /help lists the commands.",
            f"Online: {', '.join(others)}." if others else "Nobody else is online yet.",
            f"Rooms: {', '.join('#' + r for r in rooms) if rooms else 'none yet; /create ROOM'}.",
        ]
        return [Line("info", clean(text)) for text in lines]

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
            unknown = f"Unknown command /{clean_name(name)}; /help lists the commands (// starts a line with /)."
            return [Line("error", unknown)]
        return await command.run(self, args.strip())

    async def say(self, text: str) -> list[Line]:
        """Send ``text`` to the current room or partner."""
        if self.room is not None:
            result = await self.call({"action": "send", "target": self.room, "content": text})
            where = f"#{self.room}"
        elif self.partner is not None:
            result = await self.call({"action": "dm", "target": self.partner, "content": text})
            where = f"@{self.name_of(self.partner)}"
            self.remember_dm(result)
        else:
            return [Line("error", "You are not talking to anyone yet: /join ROOM, /dm AGENT, or /help.")]
        if result.is_error:
            return [self.error_line(result)]
        lines = [Line("mine", clean(f"{clock(0)} [{where}] {self.agent.name}: {text}"))] if self.echo else []
        return lines + self.away_note(result)

    # ------------------------------------------------------------------ events

    def render_event(self, event: DeliveryEvent) -> list[Line]:
        """How a delivery event is shown (some are not: receipts of room messages, echoes of presence)."""
        kind = event.type
        known = self.agent.store.record(event.sender) is not None
        who = self.name_of(event.sender) if known else clean_name(event.sender_name or event.sender)
        room = clean_name(event.room)
        if kind == "room_message":
            reply = self.reply_note(event.reply_to)
            return [Line("message", f"{clock(event.timestamp)} [#{room}] {who}{reply}: {clean(event.content)}")]
        if kind == "dm":
            self.last_dm_from = event.sender
            reply = self.reply_note(event.reply_to)
            return [Line("dm", f"{clock(event.timestamp)} [DM from {who}]{reply} {clean(event.content)}")]
        if kind == "delivery_status":
            if person.receipt_shown(event, self._my_dms):
                return [Line("receipt", format_delivery_event(event))]
            return []  # receipts of room messages: one per member, too many to show
        if kind in ("member_status", "room_members"):
            # presence comes from the mesh's agent records (render_presence); the join answer lists the members
            return []
        gone = kind == "room_destroyed" or (kind == "member_kicked" and event.subject == self.agent.id)
        if gone and event.room == self.room:
            self.room = None
        if kind == "room_invite":
            return [Line("event", f"[#{room}] {who} invited you: /join {room} to accept, /decline {room} to refuse")]
        return [Line("event", format_delivery_event(event))]

    def render_presence(self, change: AgentChanged) -> list[Line]:
        """An agent came online, went offline, changed its name or status (visible agents other than oneself)."""
        record = change.record
        label = clean_name(f"{record.name} ({record.agent_id})")
        lines = []
        for news in person.presence_news(change, self.agent.id):
            if news == "online":
                lines.append(Line("presence", f"* {label} is online ({clean_name(record.harness)})"))
            elif news == "offline":
                lines.append(Line("presence", f"* {label} went offline"))
            elif news == "renamed" and change.previous is not None:
                lines.append(Line("presence", f"* {clean_name(change.previous.name)} is now known as {label}"))
            elif news == "status":
                lines.append(Line("presence", f"* {label} is {clean_name(record.status)}"))
        return lines

    # ------------------------------------------------------------------ helpers

    async def call(self, params: Mapping[str, object]) -> ToolResult:
        """One ``agent_comms`` tool call as this agent."""
        return await self.agent.call(params)

    async def answer(self, params: Mapping[str, object]) -> list[Line]:
        """The tool's answer to ``params`` as one line (an error line if it failed)."""
        result = await self.call(params)
        return [self.error_line(result) if result.is_error else Line("info", result.text)]

    def error_line(self, result: ToolResult) -> Line:
        """A failed call's error, with a hint where one helps."""
        text = result.text
        if result.data.get("code") == "ROOM_NOT_FOUND":
            text += "; /rooms lists the rooms, /create ROOM makes one"
        elif result.data.get("code") == "AGENT_NOT_FOUND":
            text += "; /who lists who is online"
        return Line("error", text)

    def away_note(self, result: ToolResult) -> list[Line]:
        """For a DM to an agent that is offline: it gets the message when it returns (the tool's answer says so)."""
        to = result.data.get("to")
        if isinstance(to, str) and not self.agent.store.online(to):
            return [Line("info", result.text)]
        return []

    def name_of(self, agent_id: str) -> str:
        """The agent's current name (its id if unknown), as it may be shown: ``name (short id)`` where agents
        share the name (:func:`agent_comms.views.shown_names`)."""
        return clean_name(shown_names(self.agent.store.state, also=(agent_id,))(agent_id))

    def reply_note(self, message_id: str) -> str:
        """`` (reply to AUTHOR)`` for a message that answers ``message_id`` (its id when it is no longer held)."""
        if not message_id:
            return ""
        author = author_of(self.agent.store.state, message_id)
        return f" (reply to {clean_name(message_id) if author is None else self.name_of(author)})"

    def remember_dm(self, result: ToolResult) -> None:
        """Note a sent DM, so that its receipts are shown."""
        message_id = result.data.get("message_id")
        if isinstance(message_id, str):
            if len(self._my_dms) > 10_000:
                self._my_dms.clear()
            self._my_dms.add(message_id)

    def room_or_current(self, args: str, usage: str) -> str | Line:
        """The room named in ``args``, else the current room, else an error line with ``usage``."""
        room = args.strip().removeprefix("#")
        if room:
            return room
        if self.room is not None:
            return self.room
        return Line("error", f"Which room? Usage: {usage}")
