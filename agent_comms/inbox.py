"""One hosted agent's events on their way to its model: the one owner of what waits and what is being shown.

An event is *waiting* from the moment the store queues it until a bridge takes it; *held* while the bridge shows it
(a tool result on its way to the client, a line the relay has not acknowledged yet, a hook's output), under a key
of the bridge's choosing (a JSON-RPC request id, an event id); then either *settled* (it was shown: ``read``
receipts go out through ``on_shown``) or *given back* (it was not: it waits again, ahead of newer events). Every
bridge goes through this one object, so what waits for an agent is always :meth:`Inbox.pending`, whichever bridge
took events and gave some back.

The inbox holds at most ``limit`` waiting events and never drops one it accepted: :meth:`Inbox.put` refuses an
event when it is full, and once events leave it (taken, or read elsewhere) ``on_room`` is called so the owner can
queue what was refused, from the replicated state (a message is acknowledged as delivered only once it was kept).
"""

from __future__ import annotations

import collections
from collections.abc import Callable, Hashable

import trio

from agent_comms.events import DeliveryEvent

__all__ = ["Inbox"]


class Inbox:
    """The events of one hosted agent: waiting (at most ``limit``; more are refused, and ``on_room`` is called once
    there is room again), and held by a bridge until shown or given back."""

    def __init__(
        self,
        limit: int,
        on_shown: Callable[[list[DeliveryEvent]], None],
        on_room: Callable[[], None] | None = None,
    ) -> None:
        self.limit = limit
        self._queue: collections.deque[DeliveryEvent] = collections.deque()
        #: events given back (not shown), oldest first: they come before the queue
        self._returned: list[DeliveryEvent] = []
        self._held: dict[Hashable, list[DeliveryEvent]] = {}
        self._on_shown = on_shown
        self._on_room = on_room
        #: an event was refused since ``on_room`` was last called
        self._refused = False
        self._wakeup: trio.Event | None = None

    def put(self, event: DeliveryEvent) -> bool:
        """Queue a new event (the store's side); ``False`` (not kept) when the inbox is full."""
        if self.full:
            self._refused = True
            return False
        self._queue.append(event)
        self._wake()
        return True

    def more_to_put(self) -> None:
        """The owner has more events to queue than fit now: ``on_room`` is called once there is room, as after a
        refused :meth:`put` (at once if there is room already)."""
        self._refused = True
        self._made_room()

    @property
    def full(self) -> bool:
        """Whether :meth:`put` would refuse an event."""
        return len(self) >= self.limit

    def pending(self) -> list[DeliveryEvent]:
        """What waits to be shown, oldest first, events given back first (they stay waiting)."""
        return [*self._returned, *self._queue]

    def __len__(self) -> int:
        return len(self._returned) + len(self._queue)

    def take(self, limit: int | None = None) -> list[DeliveryEvent]:
        """Remove and return up to ``limit`` waiting events (all if ``None``), in :meth:`pending`'s order."""
        count = len(self) if limit is None else min(limit, len(self))
        events = self._returned[:count]
        del self._returned[:count]
        while len(events) < count:
            events.append(self._queue.popleft())
        if events:
            self._made_room()
        return events

    async def wait_pending(self) -> None:
        """Wait until at least one event waits."""
        while not len(self):
            if self._wakeup is None:
                self._wakeup = trio.Event()
            await self._wakeup.wait()

    def hold(self, key: Hashable, events: list[DeliveryEvent], *, keep: int | None = None) -> None:
        """``events`` are being shown under ``key``; ``keep``: forget the oldest holdings beyond that many events
        (they stay unread, and are not shown again)."""
        if not events:
            return
        self._held.setdefault(key, []).extend(events)
        if keep is not None:
            while self.held > keep:
                oldest = next(iter(self._held))
                self._held[oldest].pop(0)
                if not self._held[oldest]:
                    del self._held[oldest]

    def settle(self, key: Hashable) -> list[DeliveryEvent]:
        """The events held under ``key`` were shown: they count as read. Returns them (none for an unknown key)."""
        events = self._held.pop(key, [])
        if events:
            self._on_shown(events)
        return events

    def give_back(self, key: Hashable) -> None:
        """The events held under ``key`` were not shown: they wait again, before the newer ones."""
        events = self._held.pop(key, [])
        if events:
            self._returned += events
            self._wake()

    def give_back_all(self) -> None:
        """None of the held events were shown: they all wait again, oldest first, before the newer ones."""
        for key in list(self._held):
            self.give_back(key)

    @property
    def held(self) -> int:
        """How many events are being shown."""
        return sum(map(len, self._held.values()))

    def drop_message(self, message_id: str) -> None:
        """The agent read this message elsewhere (an earlier bridge of it): its waiting message events go."""

        def read(event: DeliveryEvent) -> bool:
            return event.message_id == message_id and event.type in ("dm", "room_message")

        if any(map(read, self._returned)):
            self._returned = [e for e in self._returned if not read(e)]
        if any(map(read, self._queue)):
            kept = [e for e in self._queue if not read(e)]
            self._queue.clear()
            self._queue.extend(kept)
        self._made_room()

    def _made_room(self) -> None:
        """Call ``on_room`` if events were refused and there is room now (it may :meth:`put` again)."""
        if self._refused and not self.full and self._on_room is not None:
            self._refused = False
            self._on_room()

    def _wake(self) -> None:
        if self._wakeup is not None:
            self._wakeup.set()
            self._wakeup = None
