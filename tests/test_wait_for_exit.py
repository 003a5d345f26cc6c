"""``liveness.wait_for_exit``: on a pidfd, and polling where there is none."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest
import trio

from agent_comms import liveness

DEADLINE = 30


@pytest.mark.parametrize("pidfd", [True, False], ids=["pidfd", "polling"])
async def test_returns_once_the_process_exits_and_not_before(pidfd: bool, monkeypatch: pytest.MonkeyPatch) -> None:
    if not pidfd:
        monkeypatch.delattr(os, "pidfd_open", raising=False)
    elif not hasattr(os, "pidfd_open"):
        pytest.skip("no pidfd on this system")
    with trio.fail_after(DEADLINE):
        process = await trio.lowlevel.open_process(
            [sys.executable, "-c", "import sys; sys.stdin.read()"], stdin=subprocess.PIPE
        )
        assert process.stdin is not None
        done = trio.Event()

        async def wait() -> None:
            await liveness.wait_for_exit(process.pid)
            done.set()

        async with trio.open_nursery() as nursery:
            nursery.start_soon(wait)
            await trio.sleep(2 * liveness.POLL_INTERVAL)  # a poll or two while it runs: still waiting
            assert not done.is_set()
            await process.stdin.aclose()  # it exits (a zombie until reaped: gone all the same)
            await done.wait()
        await process.wait()


async def test_a_process_that_is_not_the_one_meant_is_not_waited_for() -> None:
    with trio.fail_after(DEADLINE):
        await liveness.wait_for_exit(os.getpid(), lambda: False)  # e.g. its pid was reused: returns at once
