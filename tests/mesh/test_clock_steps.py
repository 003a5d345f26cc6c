"""Real bridge processes whose wall clocks are moved while they run: a suspend, steps back and forward by days.

Each process (``agent-comms bridge jsonl``) runs under libfaketime (Debian package ``faketime``) with its own
``FAKETIME_TIMESTAMP_FILE``, re-read at every clock read (``FAKETIME_NO_CACHE=1``): rewriting the file moves the
process's wall clock at once. ``FAKETIME_DONT_FAKE_MONOTONIC=1`` leaves its monotonic clock alone, so moving the
wall clock of a stopped process and continuing it is, to the process, a suspend (its monotonic clock barely moved,
its wall clock jumped); moving the wall clock of a running process is an NTP step. The direct messages between the
agents started before and after must keep flowing both ways.
"""

from __future__ import annotations

import glob
import os
import signal
from contextlib import AsyncExitStack
from pathlib import Path

import pytest
import trio

from agent_comms.testing.processes import Peer, free_port, mesh_env, open_peer

DAY = 24 * 3600

LIBFAKETIME = next(
    iter(
        sorted(
            glob.glob("/usr/lib/*/faketime/libfaketime.so.1")
            + glob.glob("/usr/lib/faketime/libfaketime.so.1")
            + glob.glob("/usr/local/lib/faketime/libfaketime.so.1")
        )
    ),
    None,
)

pytestmark = pytest.mark.skipif(
    LIBFAKETIME is None,
    reason="libfaketime is not installed (apt-get install faketime): it moves the wall clock of running processes",
)


class Clocks:
    """One faketime file per process: its wall-clock offset from the real time, in seconds."""

    def __init__(self, directory: Path) -> None:
        self.directory = directory
        self.offsets: dict[str, int] = {}

    def path(self, name: str) -> Path:
        return self.directory / f"{name}.faketime"

    def set(self, name: str, offset: int) -> None:
        """Move ``name``'s wall clock to ``offset`` seconds from the real time (written atomically)."""
        self.offsets[name] = offset
        tmp = self.directory / f"{name}.tmp"
        tmp.write_text(f"{offset:+d}\n")
        os.replace(tmp, self.path(name))

    def env(self, name: str, base: dict[str, str], offset: int) -> dict[str, str]:
        self.set(name, offset)
        assert LIBFAKETIME is not None
        return {
            **base,
            "LD_PRELOAD": LIBFAKETIME,
            "FAKETIME_TIMESTAMP_FILE": str(self.path(name)),
            "FAKETIME_NO_CACHE": "1",
            "FAKETIME_DONT_FAKE_MONOTONIC": "1",
        }


async def received(peer: Peer, text: str) -> None:
    """Wait until ``peer`` has printed the event of a direct message ``text``."""

    def seen() -> bool:
        return any(m.get("type") == "event" and m["event"].get("content") == text for m in peer.seen)

    while not seen():  # noqa: ASYNC110 - another process's output
        await trio.sleep(0.02)


async def dm(sender: Peer, recipient: Peer, text: str) -> None:
    """A direct message that must be accepted by the sender and reach the recipient."""
    with trio.fail_after(15):
        result = await sender.call(action="dm", target=recipient.agent_id, content=text)
        assert not result["is_error"], result["text"]
        await received(recipient, text)


async def all_ways(peers: dict[str, Peer], tag: str) -> None:
    for sender_name, sender in peers.items():
        for recipient_name, recipient in peers.items():
            if sender is not recipient:
                await dm(sender, recipient, f"{tag}: {sender_name} to {recipient_name}")


async def start(stack: AsyncExitStack, clocks: Clocks, env: dict[str, str], cwd: Path, name: str, offset: int) -> Peer:
    """Start agent ``name`` (until ``stack`` closes) with its wall clock ``offset`` seconds from the real time (the
    test's overall deadline bounds it: a scope opened here would be left while the process's nursery is open)."""
    return await stack.enter_async_context(open_peer(name, clocks.env(name, env, offset), cwd / name))


async def test_direct_messages_flow_across_a_suspend_and_clock_steps_of_days(tmp_path: Path) -> None:
    clocks = Clocks(tmp_path)
    base = mesh_env(tmp_path, free_port())
    with trio.fail_after(240):
        async with AsyncExitStack() as stack:
            alice = await start(stack, clocks, base, tmp_path, "alice", 0)
            peers = {"alice": alice}

            # The machine sleeps ten minutes: alice is stopped, its wall clock jumps, and it continues (its monotonic
            # clock moved by a fraction of a second). bob starts after the suspend.
            alice.process.send_signal(signal.SIGSTOP)
            clocks.set("alice", 600)
            alice.process.send_signal(signal.SIGCONT)
            bob = peers["bob"] = await start(stack, clocks, base, tmp_path, "bob", 600)
            with trio.fail_after(15):
                await bob.wait_until(alice.agent_id, online=True)
                await alice.wait_until(bob.agent_id, online=True)
            await all_ways(peers, "after the suspend")

            # NTP (or the user) sets alice's clock back a day while it runs: it now lags everything it has seen.
            clocks.set("alice", 600 - DAY)
            await all_ways(peers, "alice set back a day")

            # bob's clock is set two days forward: its stamps are now three days ahead of alice's clock.
            clocks.set("bob", 600 + 2 * DAY)
            await all_ways(peers, "bob set forward two days")

            # A newcomer with the real time joins: days behind bob, days ahead of alice.
            carol = peers["carol"] = await start(stack, clocks, base, tmp_path, "carol", 0)
            with trio.fail_after(15):
                for name in ("alice", "bob"):
                    await carol.wait_until(peers[name].agent_id, online=True)
                    await peers[name].wait_until(carol.agent_id, online=True)
            await all_ways(peers, "with carol")
