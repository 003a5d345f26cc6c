"""Who may see what: the visibility rules of agents and rooms, in one place.

Every answer, listing, member list, owner label, event and error an agent gets goes through these predicates, so
the two tables of the contract hold on every surface:

=========  =======  ================  ===========================
agent      listed   can be DM'd       in a room's member list
=========  =======  ================  ===========================
visible    yes      yes               yes
hidden     no       yes, by id        to members only
ghost      no       no                no
=========  =======  ================  ===========================

=========  ========================  ============  ============
room       discovery                 join          read history
=========  ========================  ============  ============
public     listed                    anyone        anyone
private    name visible              invite only   members only
secret     invisible to non-members  invite only   members only
=========  ========================  ============  ============

Theory of operation:

1. An agent always sees itself.
2. *Presence* (being listed, being in a member list or a member count, being a room's owner, joining, leaving,
   changing status, issuing a read receipt) shows an agent only as the tables allow.
3. *Acts* show their actor: who posts a message, sends a DM, invites, kicks or destroys a room is named to those
   the act is addressed to (they must know who acted). A ghost that speaks in a room is seen as the author of
   what it says, and of nothing else.
4. What an agent may not see answers exactly as what does not exist: same text, same code.
5. An agent whose record is not known (forgotten) is not shown: nothing says it was visible.

The person's own command line (``agent-comms agents --all``, ``rooms``, ``read``) observes the mesh without being an
agent in it and may show everything, with hidden and ghost agents marked.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Protocol

from agent_comms.protocol.ops import AgentUpsert, DirectMessage, Op, RoomMessage, op_key
from agent_comms.protocol.rooms import RoomView

__all__ = [
    "Records",
    "addressable",
    "can_read_history",
    "involved",
    "listed",
    "readable",
    "room_discoverable",
    "shown_in_room",
]


class Records(Protocol):
    """Where agent records are looked up (a :class:`~agent_comms.store.MeshStore`)."""

    def record(self, agent_id: str) -> AgentUpsert | None:
        """The agent's current record, if known."""
        ...


def involved(view: RoomView, viewer: str) -> bool:
    """Whether ``viewer`` is a member of, invited to, or the owner of the room."""
    return viewer in view.members or viewer in view.invited or viewer == view.owner


def room_discoverable(view: RoomView, viewer: str) -> bool:
    """Whether the room exists for ``viewer``: every public or private room; a secret one only if involved."""
    return view.room_type != "secret" or involved(view, viewer)


def can_read_history(view: RoomView, viewer: str) -> bool:
    """Whether ``viewer`` may read the room's history: anyone a public room's, members only otherwise."""
    return view.room_type == "public" or viewer in view.members


def listed(record: AgentUpsert | None, viewer: str) -> bool:
    """Whether the agent appears in ``viewer``'s listings of agents (``list_agents``, ``register``'s answer)."""
    if record is None:
        return False
    return record.agent_id == viewer or record.visibility == "visible"


def shown_in_room(record: AgentUpsert | None, view: RoomView, viewer: str) -> bool:
    """Whether the agent's presence in the room (member list and count, owner label, joined, left, status,
    receipts of the room's messages) is shown to ``viewer``: visible agents to whoever may see the room, hidden
    agents to the room's members only, ghosts to nobody but themselves."""
    if record is None:
        return False
    if record.agent_id == viewer:
        return True
    if not room_discoverable(view, viewer):
        return False
    if record.visibility == "visible":
        return True
    return record.visibility == "hidden" and viewer in view.members


def addressable(
    record: AgentUpsert, *, by_id: bool, viewer: str, rooms: Mapping[str, RoomView], include_ghosts: bool = False
) -> bool:
    """Whether ``viewer`` may name the agent in an action (``dm``, ``invite``, ``kick``).

    Visible agents by name or id; hidden agents by id, or by name where ``viewer`` sees them in a member list;
    ghosts never (``include_ghosts``: by id, where the caller checks more narrowly itself). Oneself always.
    """
    if record.agent_id == viewer or record.visibility == "visible":
        return True
    if record.visibility == "ghost":
        return include_ghosts and by_id
    return by_id or any(
        record.agent_id in view.members and shown_in_room(record, view, viewer) for view in rooms.values()
    )


def revealed_in_room(author: str, view: RoomView, messages: list[Op]) -> bool:
    """Whether ``author`` posted one of the room's kept ``messages`` (an act shows its actor, rule 3)."""
    return any(isinstance(op.body, RoomMessage) and op.body.author == author for op in messages) and (
        author in view.members or author in view.invited
    )


def readable(op: Op, viewer: str, view: RoomView | None, *, live: bool) -> bool:
    """Whether ``viewer`` may read (and so reply to) the message: its own DMs; room messages of a live room whose
    history it may read, or sent to it (it was a member then, even if the room is gone since). ``view``: the
    message's room, if known; ``live``: whether that room is the live room of its name."""
    body = op.body
    if isinstance(body, DirectMessage):
        return viewer in (body.author, body.recipient)
    assert isinstance(body, RoomMessage)
    if view is None:
        return False
    return (live and can_read_history(view, viewer)) or view.was_member(viewer, op_key(op), body.room_id)
