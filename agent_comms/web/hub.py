"""The person's side of the page: a snapshot kept current, the page's actions run as the person's agent.

One :class:`Hub` per ``agent-comms web``. It reads the person's deliveries (marked read from the first page
on, so nothing counts as read before someone could see it) and the node's changes; each change bumps
:attr:`Hub.version`, and every connected page is sent the snapshot of the newest version (changes that come
together are sent once). Activity lines (room events, invites, presence, receipts) are the chat's own lines
(:class:`~agent_comms.chat.session.ChatSession`), so the page and the terminal tell the same things.
"""

from __future__ import annotations

import collections
import json
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any, Final

import trio

from agent_comms.chat.lines import Line
from agent_comms.chat.session import ChatSession
from agent_comms.web.view import snapshot

if TYPE_CHECKING:
    from agent_comms.agent import Agent

__all__ = ["ACTIONS", "ActionRefused", "Hub"]

#: The tool actions the page may call (what the person does in the chat too); ``command`` runs a chat command line.
ACTIONS: Final = frozenset(
    {"send", "dm", "join_room", "leave_room", "create_room", "invite", "kick", "destroy_room", "decline_invite"}
)
#: Activity lines kept for the page.
ACTIVITY_LIMIT: Final = 200
#: Time given to changes that come together to be sent as one snapshot.
COALESCE: Final = 0.03


class ActionRefused(ValueError):
    """The page asked for something that is not an action it may take (the message says what)."""


class Hub:
    """The snapshot the page shows, kept current; the page's actions."""

    def __init__(self, agent: Agent) -> None:
        self.agent = agent
        self.session = ChatSession(agent)
        self.version = 0
        self.pages = 0
        self._changed = trio.Event()
        self._page_connected = trio.Event()
        self._activity: collections.deque[dict[str, Any]] = collections.deque(maxlen=ACTIVITY_LIMIT)
        self._serial = 0
        self._cached: tuple[int, str] | None = None

    # ------------------------------------------------------------------ what the page shows

    def snapshot_json(self) -> str:
        """The snapshot of the current version, as JSON text (built once per version)."""
        if self._cached is None or self._cached[0] != self.version:
            data = snapshot(self.agent.store, self.agent.id, list(self._activity))
            self._cached = (self.version, json.dumps(data, ensure_ascii=False))
        return self._cached[1]

    async def wait_newer(self, version: int) -> int:
        """Wait until the version is past ``version``; the current version."""
        while self.version <= version:
            await self._changed.wait()
        return self.version

    def bump(self) -> None:
        """Something changed: pages get a new snapshot."""
        self.version += 1
        self._changed.set()
        self._changed = trio.Event()

    def page_opened(self) -> None:
        """A page connected (deliveries are read while one is)."""
        self.pages += 1
        self._page_connected.set()

    def page_closed(self) -> None:
        """A page went away (with the last one, deliveries wait: nobody could read them)."""
        self.pages -= 1
        if self.pages <= 0:
            self._page_connected = trio.Event()

    def note(self, lines: list[Line]) -> None:
        """Add activity lines (the chat's lines: the page shows their text as text)."""
        for line in lines:
            self._serial += 1
            self._activity.append({"id": self._serial, "kind": line.kind, "text": line.text})
        if lines:
            self.bump()

    # ------------------------------------------------------------------ keeping it current

    async def run(self) -> None:
        """Follow deliveries and the node's changes until cancelled."""
        changes = self.agent.store.node.subscribe()
        async with trio.open_nursery() as nursery:
            nursery.start_soon(self._follow_deliveries)
            nursery.start_soon(self._follow_changes, changes)

    async def _follow_deliveries(self) -> None:
        store, me = self.agent.store, self.agent.id
        while True:
            await self._page_connected.wait()  # nothing counts as read while no page could show it
            await store.wait_pending(me)
            if self.pages <= 0:
                continue  # the last page went while this waited: the event stays unread
            for event in store.take(me, limit=1):
                self.note(self.session.render_event(event))
                self.bump()
                store.mark_read(me, [event])

    async def _follow_changes(self, changes: trio.MemoryReceiveChannel[object]) -> None:
        from agent_comms.protocol.changes import AgentChanged

        async for change in changes:
            if isinstance(change, AgentChanged):
                self.note(self.session.render_presence(change))
            self.bump()
            await trio.sleep(COALESCE)  # changes that arrive meanwhile go into the same snapshot
            while True:
                try:
                    change = changes.receive_nowait()
                except trio.WouldBlock:
                    break
                if isinstance(change, AgentChanged):
                    self.note(self.session.render_presence(change))
            self.bump()

    # ------------------------------------------------------------------ the person's actions

    async def act(self, request: object) -> dict[str, Any]:
        """Run one action of the page: ``{"call": {tool params}}`` or ``{"command": "/join room"}``.

        Raises :class:`ActionRefused` for anything else. The answer: ``ok``, ``text`` and (for calls) ``data``.
        """
        if not isinstance(request, Mapping):
            raise ActionRefused("the request must be a JSON object")
        if "command" in request:
            line = request["command"]
            if not isinstance(line, str) or not line.startswith("/"):
                raise ActionRefused("'command' must be a line that starts with /")
            lines = await self.session.handle(line)
            self.note(lines)
            return {"ok": not any(line.kind == "error" for line in lines), "text": "\n".join(x.text for x in lines)}
        params = request.get("call")
        if not isinstance(params, Mapping) or params.get("action") not in ACTIONS:
            raise ActionRefused(f"'call' must be a tool call with an action among: {', '.join(sorted(ACTIONS))}")
        result = await self.agent.call(params)
        if params.get("action") == "dm":
            self.session.remember_dm(result)
        self.bump()
        return {"ok": not result.is_error, "text": result.text, "data": result.data}
