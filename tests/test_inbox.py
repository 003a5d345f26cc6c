"""One agent's inbox: waiting, held, settled, given back (no mesh needed)."""

from __future__ import annotations

import trio
import trio.testing

from agent_comms.events import DeliveryEvent, EventType
from agent_comms.inbox import Inbox


def _event(n: int, kind: EventType = "dm") -> DeliveryEvent:
    return DeliveryEvent(id=f"e{n}", type=kind, to="a", sender="b", message_id=f"m{n}")


def test_given_back_events_wait_first_and_settled_ones_are_shown_once() -> None:
    shown: list[list[str]] = []
    inbox = Inbox(10, lambda events: shown.append([e.id for e in events]))
    for n in range(4):
        inbox.put(_event(n))
    first = inbox.take(2)
    inbox.hold("r1", first[:1])
    inbox.hold("r2", first[1:])
    assert (len(inbox), inbox.held) == (2, 2)
    inbox.give_back("r2")
    assert [e.id for e in inbox.pending()] == ["e1", "e2", "e3"]
    assert inbox.settle("r1") == first[:1]
    assert inbox.settle("r1") == []  # once
    assert inbox.settle("unknown") == []
    assert shown == [["e0"]]
    assert [e.id for e in inbox.take()] == ["e1", "e2", "e3"]
    assert len(inbox) == 0


def test_limits_and_messages_read_elsewhere() -> None:
    rooms: list[int] = []
    inbox = Inbox(3, lambda events: None, on_room=lambda: rooms.append(len(inbox)))
    assert [inbox.put(_event(n)) for n in range(2, 6)] == [True, True, True, False]  # full: refused, not dropped
    assert [e.id for e in inbox.pending()] == ["e2", "e3", "e4"]
    inbox.hold("h", inbox.take(1))
    assert rooms == [2]  # told once there is room
    inbox.give_back("h")  # given back even when that fills it
    assert not inbox.put(_event(3, "member_joined"))
    inbox.drop_message("m3")  # its message events go, other events about it stay
    assert rooms == [2, 2]
    inbox.drop_message("m2")
    assert rooms == [2, 2]  # nothing was refused since
    assert inbox.put(_event(3, "member_joined"))
    assert [(e.id, e.type) for e in inbox.pending()] == [("e4", "dm"), ("e3", "member_joined")]
    for n in range(5):
        inbox.hold(f"k{n}", [_event(n)], keep=2)
    assert inbox.held == 2
    assert inbox.settle("k0") == []  # forgotten, not shown
    assert [e.id for e in inbox.settle("k4")] == ["e4"]


async def test_wait_pending_wakes_on_put_and_on_give_back() -> None:
    inbox = Inbox(10, lambda events: None)
    with trio.fail_after(5):
        async with trio.open_nursery() as nursery:
            nursery.start_soon(inbox.wait_pending)
            await trio.testing.wait_all_tasks_blocked()
            inbox.put(_event(1))
        inbox.hold("h", inbox.take())
        async with trio.open_nursery() as nursery:
            nursery.start_soon(inbox.wait_pending)
            await trio.testing.wait_all_tasks_blocked()
            inbox.give_back("h")
    assert len(inbox) == 1


def test_an_owner_with_more_to_put_is_told_once_there_is_room() -> None:
    rooms: list[int] = []
    inbox = Inbox(2, lambda events: None, on_room=lambda: rooms.append(len(inbox)))
    assert inbox.put(_event(1))
    assert inbox.put(_event(2))
    inbox.more_to_put()  # full: told later
    assert rooms == []
    inbox.take(1)
    assert rooms == [1]
    inbox.take(1)
    assert rooms == [1]  # once
    inbox.more_to_put()  # room already: told at once
    assert rooms == [1, 0]
