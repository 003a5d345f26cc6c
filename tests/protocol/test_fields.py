"""The field rules of operations (:mod:`agent_comms.protocol.fields`): what :func:`check_body` refuses as malformed
is exactly what a peer's frame decoder refuses, and the text rules name the field."""

from __future__ import annotations

from typing import Any

import msgspec
import pytest

from agent_comms.protocol.errors import RemoteProtocolError
from agent_comms.protocol.fields import MAX_BODY_BYTES, InvalidField, check_body
from agent_comms.protocol.framing import FrameDecoder, encode_frame
from agent_comms.protocol.ops import AgentUpsert, Body, DirectMessage, Membership, Op, RoomCreate, RoomMessage
from agent_comms.protocol.wire import Ops

AGENT = AgentUpsert("a", "p", 1, 1, "alice", "test", "/work", 1, 1.0)
ROOM = RoomCreate("p-1", "lobby", "public", "", "a", 1)
MEMBER = Membership("p-1", "join", "a", 1)
POST = RoomMessage("p-1", "a", 1, "hello")
DM = DirectMessage("a", 1, "b", "hi")


def _peer_refuses(body: Body) -> bool:
    """Whether a peer closes the link that brings an operation with this body."""
    decoder = FrameDecoder()
    decoder.feed(encode_frame(Ops((Op("p", 1, 1, body),))))
    try:
        list(decoder.frames())
    except RemoteProtocolError:
        return True
    return False


def _with(body: Body, **changes: Any) -> Body:
    return msgspec.structs.replace(body, **changes)


WIRE_MALFORMED = [
    (_with(AGENT, status="busy\x1b[31m"), "status"),
    (_with(AGENT, visibility="invisible"), "visibility"),
    (_with(AGENT, tags=("ok", 3)), "tags"),
    (_with(AGENT, name=None), "name"),
    (_with(ROOM, room_type="open"), "room_type"),
    (_with(MEMBER, action="promote"), "action"),
    (_with(POST, streaming="now"), "streaming"),
    (_with(DM, streaming="Steer"), "streaming"),
    (_with(DM, recipient=7), "recipient"),
]


@pytest.mark.parametrize(("body", "field"), WIRE_MALFORMED)
def test_what_peers_refuse_is_refused_before_it_is_made_naming_the_field(body: Body, field: str) -> None:
    assert _peer_refuses(body)
    with pytest.raises(InvalidField) as caught:
        check_body(body)
    assert caught.value.field == field


@pytest.mark.parametrize("body", [AGENT, ROOM, MEMBER, POST, DM, _with(AGENT, tags=("x",) * 16)])
def test_what_passes_the_check_passes_a_peer(body: Body) -> None:
    check_body(body)
    assert not _peer_refuses(body)


TEXT_RULES = [
    (_with(AGENT, name="alice\x1b[2J"), "name"),
    (_with(AGENT, name=" alice"), "name"),
    (_with(AGENT, name="x" * 65), "name"),
    (_with(AGENT, tags=("ok", "red\x1b[31m")), "tags"),
    (_with(AGENT, tags=("line\nbreak",)), "tags"),
    (_with(AGENT, tags=("",)), "tags"),
    (_with(AGENT, tags=("t",) * 17), "tags"),
    (_with(ROOM, name="lob\u2028by"), "name"),
    (_with(ROOM, description="bell\x07"), "description"),
    (_with(ROOM, description="x" * 501), "description"),
    (_with(MEMBER, reason="\x1b]0;title\x07"), "reason"),
    (_with(POST, content=""), "content"),
    (_with(POST, content="nul\x00"), "content"),
    (_with(DM, content="x" * 32_001), "content"),
    (_with(DM, reply_to="id\x1b[1m"), "reply_to"),
    (_with(POST, reply_to="x" * 201), "reply_to"),
]


@pytest.mark.parametrize(("body", "field"), TEXT_RULES)
def test_text_an_agent_may_not_write_is_refused_naming_the_field(body: Body, field: str) -> None:
    with pytest.raises(InvalidField) as caught:
        check_body(body)
    assert caught.value.field == field


def test_a_body_too_large_for_a_frame_is_refused() -> None:
    huge = _with(AGENT, harness="h" * MAX_BODY_BYTES)
    with pytest.raises(InvalidField, match="fit a frame"):
        check_body(huge)
