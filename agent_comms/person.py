"""What a person on the mesh sees: the rules shared by ``agent-comms chat`` and ``agent-comms web``.

A person is an agent of the harness ``human``. Both of its frontends show the same things by the same rules, kept
here: the other agents it may see (visible ones, never itself), the rooms it may discover, the members it may see
in a room, which presence changes are news, and which receipts are shown (those of its own direct messages, and
drops; a room message has one receipt per member, which the terminal does not list).
"""

from __future__ import annotations

from collections.abc import Collection
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from agent_comms.events import DeliveryEvent
    from agent_comms.protocol.changes import AgentChanged
    from agent_comms.protocol.ops import AgentUpsert
    from agent_comms.protocol.rooms import RoomView
    from agent_comms.store import MeshStore

__all__ = ["PresenceNews", "others", "presence_news", "receipt_shown", "rooms", "seen_members"]


def others(store: MeshStore, me: str, *, offline: bool = False) -> list[tuple[AgentUpsert, bool]]:
    """The other visible agents with whether each is online (``offline``: those that went offline too)."""
    return [
        (body, online)
        for body, online in store.agents()
        if (online or offline) and body.visibility == "visible" and body.agent_id != me
    ]


def rooms(store: MeshStore, me: str) -> list[tuple[str, RoomView]]:
    """The live rooms the person may discover (a secret room only as a member), by name."""
    return store.rooms(viewer=me)


def seen_members(store: MeshStore, view: RoomView, me: str) -> list[str]:
    """The room's members whose presence the person may see, by id."""
    return store.members_shown(view, me)


#: What a presence change means to the person: ``online``, ``offline``, ``renamed``, ``status``.
PresenceNews = tuple[str, ...]


def presence_news(change: AgentChanged, me: str) -> PresenceNews:
    """What changed about another visible agent that the person is told (empty: nothing to tell)."""
    record = change.record
    if change.agent_id == me or record.visibility != "visible":
        return ()
    previous = change.previous
    if previous is None or change.online != change.was_online:
        if change.online:
            return ("online",)
        return ("offline",) if previous is not None else ()
    if not change.online:
        return ()
    news = []
    if previous.name != record.name:
        news.append("renamed")
    if previous.status != record.status:
        news.append("status")
    return tuple(news)


def receipt_shown(event: DeliveryEvent, my_dms: Collection[str]) -> bool:
    """Whether a ``delivery_status`` event is shown: a drop always, else only for one of the person's own DMs."""
    return event.status == "dropped" or event.message_id in my_dms
