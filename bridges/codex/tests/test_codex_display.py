"""What Codex's model receives of another agent's text: the inbox lines the bridge writes, the hooks' notices.

The bridge writes each event's :func:`agent_comms.events.format_delivery_event` line; a hook shows it flattened to
one line and shows it through :func:`agent_comms.display.display` again, since it reads it from a file.
"""

from __future__ import annotations

import trio
from agent_comms_codex.bridge import inbox_snapshot
from agent_comms_codex.hooks import notice

from agent_comms.testing import open_in_memory_mesh
from agent_comms.testing.display import HOSTILE_CONTENT, HOSTILE_LINES, assert_shown_safely


def _no_raw_characters(text: str) -> None:
    assert text.isprintable() or all(c.isprintable() or c == "\n" for c in text), repr(text)


async def test_inbox_lines_and_notices_show_hostile_text_safely() -> None:
    with trio.fail_after(30):
        async with open_in_memory_mesh() as mesh:
            codex = await mesh.agent("codex", name="codex")
            mallory = await mesh.agent("test", name="mallory")
            assert not (await mallory.call({"action": "dm", "target": "codex", "content": HOSTILE_CONTENT})).is_error
            await mesh.settle()
            inbox = inbox_snapshot(codex, harness_pid=None, cwd="/work")
    [event] = inbox["events"]
    assert_shown_safely(event["line"])
    text = notice(inbox, inbox["events"])
    _no_raw_characters(text)
    lines = text.split("\n")
    assert len(lines) == 2  # the heading and one line for the one event: the content added no line
    assert not any(line.startswith(start) for line in lines for start in HOSTILE_LINES)


def test_a_notice_shows_a_planted_inbox_line_safely() -> None:
    inbox = {"name": "co\x1b[2Jdex", "agent_id": "c\u202e1", "waiting": 1}
    text = notice(inbox, [{"id": "e1", "line": HOSTILE_CONTENT}])
    _no_raw_characters(text)
    assert len(text.split("\n")) == 2
