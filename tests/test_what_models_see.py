"""What of the events reaches a model: one receipt line per message, one status line per agent, flips not shown.

The events stay as they are (per recipient and state, with stable ids) for bridge authors; the lines a model is
shown are :func:`agent_comms.events.format_events`'s, which every bridge's text goes through.
"""

from __future__ import annotations

import trio

from agent_comms.events import DeliveryEvent, Member, format_delivery_event, format_events
from agent_comms.testing import open_in_memory_mesh
from agent_comms.tool import ToolResult, with_deliveries

DEADLINE = 60


def _receipt(message_id: str, reader: str, status: str, *states: tuple[str, str]) -> DeliveryEvent:
    return DeliveryEvent(
        id=f"{message_id}/{reader}/{status}",
        type="delivery_status",
        to="alice",
        sender=reader,
        sender_name=reader,
        content="the lexer is in",
        message_id=message_id,
        status=status,
        members=tuple(Member(who, who, state) for who, state in states),
    )


def _status(agent: str, room: str, before: str, after: str) -> DeliveryEvent:
    return DeliveryEvent(
        id=f"{room}/status/{agent}/{after}",
        type="member_status",
        to="alice",
        sender=agent,
        sender_name=agent,
        room=room,
        room_id=room,
        status=after,
        previous=before,
    )


def test_the_receipts_of_a_message_are_one_line_with_its_latest_state() -> None:
    events = [
        _receipt("m1", "bob", "delivered", ("bob", "delivered"), ("carol", "sent")),
        _receipt("m1", "carol", "delivered", ("bob", "delivered"), ("carol", "delivered")),
        _receipt("m1", "bob", "read", ("bob", "read"), ("carol", "delivered")),
    ]
    assert format_events(events) == ['your message m1 "the lexer is in": read by bob; delivered to carol']
    # one event alone (a push bridge) says where the message stood then
    assert format_delivery_event(events[0]) == 'your message m1 "the lexer is in": delivered to bob'


def test_a_large_room_counts_its_readers() -> None:
    states = [(f"a{n}", "read" if n < 3 else "delivered" if n < 5 else "sent") for n in range(7)]
    assert format_events([_receipt("m1", "a0", "read", *states)]) == [
        'your message m1 "the lexer is in": read by 3 of 7; delivered to 2'
    ]


def test_status_flips_within_a_batch_are_not_shown_and_rooms_share_a_line() -> None:
    flips = [
        _status("bob", "dev", "active", "offline"),
        _status("bob", "ops", "active", "offline"),
        _status("bob", "dev", "offline", "active"),
        _status("bob", "ops", "offline", "active"),
    ]
    assert format_events(flips) == []
    gone = [_status("carol", "dev", "active", "offline"), _status("carol", "ops", "active", "offline")]
    assert format_events(gone) == ["[#dev, #ops] carol is now offline"]
    assert with_deliveries(ToolResult("ok"), flips).text == "ok"  # nothing to show: no event header either


async def test_a_room_message_gets_one_receipt_line_per_result_through_the_tool() -> None:
    with trio.fail_after(DEADLINE):
        async with open_in_memory_mesh() as mesh:
            alice = await mesh.agent("test", name="alice")
            others = [await mesh.agent("test", name=name) for name in ("bob", "carol", "dave")]
            await alice.call({"action": "create_room", "room": "dev"})
            await mesh.settle()
            for agent in others:
                assert not (await agent.call({"action": "join_room", "room": "dev"})).is_error
            await mesh.settle()
            alice.drain()
            sent = await alice.call({"action": "send", "target": "dev", "content": "the lexer is in"})
            message_id = sent.data["message_id"]
            await mesh.settle()
            bob, carol, _dave = others
            bob.drain()  # shown to bob's model: read
            carol.drain()
            await mesh.settle()

            events = alice.drain()
            # bridge authors still get every receipt, per recipient and state, under stable ids
            receipts = {e.id for e in events if e.type == "delivery_status"}
            assert receipts == {f"{message_id}/{agent.id}/delivered" for agent in others} | {
                f"{message_id}/{agent.id}/read" for agent in (bob, carol)
            }
            shown = with_deliveries(ToolResult("ok"), events).text.splitlines()
            receipt_lines = [line for line in shown if line.startswith("your message")]
            assert receipt_lines == [
                f'your message {message_id} "the lexer is in": read by bob, carol; delivered to dave'
            ]
            assert "--- 1 new event(s) ---" in shown


async def test_a_status_changed_back_within_the_quiet_window_is_never_told() -> None:
    with trio.fail_after(DEADLINE):
        # a window much longer than the few calls below take, however loaded the machine
        async with open_in_memory_mesh(presence_quiet_s=5.0) as mesh:
            alice = await mesh.agent("test", name="alice")
            bob = await mesh.agent("test", name="bob")
            await alice.call({"action": "create_room", "room": "dev"})
            await mesh.settle()
            await bob.call({"action": "join_room", "room": "dev"})
            await mesh.settle()
            alice.drain()
            for status in ("busy", "active", "idle", "busy"):  # back where it was; then changed twice
                assert not (await bob.call({"action": "update", "status": status})).is_error
            await mesh.settle()  # the window included
            told = [(e.type, e.status, e.previous) for e in alice.drain()]
            assert told == [("member_status", "busy", "active")]  # told once, as the latest
