"""The idiomatic Trio entry point: ``open_agent`` puts one agent on the mesh for the duration of a block.

::

    async with agent_comms.open_agent(harness="my-harness", name="reviewer") as agent:
        result = await agent.call({"action": "send", "target": "review", "content": "done"})
        async for event in agent.deliveries():      # push bridges: each event once, in order
            ...
        pending = agent.drain()                      # drain bridges: everything waiting, now

An event yielded by :meth:`Agent.deliveries` counts as *read* once the loop body has finished with it (the push
succeeded); :meth:`Agent.drain` marks what it returns as read (it goes into a tool result the model sees).
"""

from __future__ import annotations

import logging
import os
from collections.abc import AsyncIterator, Callable, Mapping
from contextlib import asynccontextmanager
from typing import Any, Final

import trio

from .events import DeliveryEvent
from .store import MeshStore
from .tool import CommsTool, ToolResult

__all__ = ["CALLS_PER_YIELD", "Agent", "AgentError", "open_agent"]

#: :meth:`Agent.call` lets other tasks run once in this many calls
CALLS_PER_YIELD: Final = 32


class AgentError(Exception):
    """The agent could not be put on the mesh (registration refused); the message says why."""


class Agent:
    """One agent on the mesh: its tool, its deliveries."""

    def __init__(self, tool: CommsTool, on_close: Callable[[], None] | None = None) -> None:
        self.tool = tool
        self.store: MeshStore = tool.store
        #: when it registered: the line saying its name was already in use (``None``: it was not)
        self.name_note: str | None = None
        self._on_close = on_close
        self._calls = 0

    @property
    def id(self) -> str:
        """The agent's stable id."""
        return self.tool.agent_id

    @property
    def name(self) -> str:
        """The agent's current name."""
        record = self.store.record(self.id)
        return self.id if record is None else record.name

    async def call(self, params: Mapping[str, object]) -> ToolResult:
        """Run one ``agent_comms`` tool call (``result.text``, ``result.is_error``).

        The call itself never waits, and most calls do not yield to other tasks (a tool call costs no hop through
        the scheduler); every :data:`CALLS_PER_YIELD`-th one does, so that a loop of calls alone still lets the
        mesh's tasks run and its deadlines (``trio.fail_after``) expire."""
        self._calls += 1
        if self._calls % CALLS_PER_YIELD:
            await trio.lowlevel.checkpoint_if_cancelled()
        else:
            await trio.lowlevel.checkpoint()
        return self.tool.call(params)

    async def deliveries(self) -> AsyncIterator[DeliveryEvent]:
        """Every event for this agent, exactly once, in order; marked read when the loop body is done with it."""
        while True:
            await self.store.wait_pending(self.id)
            for event in self.store.take(self.id, limit=1):
                yield event
                self.store.mark_read(self.id, [event])

    def drain(self) -> list[DeliveryEvent]:
        """Take every waiting event (marked read: the caller shows them to the model)."""
        events = self.store.take(self.id)
        self.store.mark_read(self.id, events)
        return events

    def pending_count(self) -> int:
        """How many events are waiting."""
        return len(self.store.pending(self.id))

    def close(self) -> None:
        """Go offline (the mesh is told at once)."""
        self.store.release(self.id)
        if self._on_close is not None:
            self._on_close()
            self._on_close = None


@asynccontextmanager
async def open_agent(
    harness: str,
    name: str | None = None,
    *,
    cwd: str | None = None,
    visibility: str = "visible",
    tags: tuple[str, ...] = (),
    pid: int | None = None,
    **node_options: Any,
) -> AsyncIterator[Agent]:
    """Join the mesh of this user (``AGENT_COMMS_PORT``, ``AGENT_COMMS_HOME``) as an agent of ``harness``.

    The agent's id is stable for (harness, working directory); ``name`` defaults to the name it had last time,
    else ``<harness>-<directory name>``. ``pid`` is the process whose exit takes the agent offline (default:
    this process). Extra keyword arguments go to :func:`agent_comms.mesh.node.open_node`.

    The block begins once the agent's peer is synced with the mesh (:meth:`~agent_comms.mesh.node.MeshNode.
    wait_synced`: at once when alone, within ``handshake_timeout`` (1 s) past a stopped peer, ``ready_timeout``
    (2 s) at most) and the agent is registered, so its first call sees the agents, rooms and messages already there.
    """
    from .identity import claim_identity, default_name
    from .liveness import process_start_time
    from .mesh.keyfile import load_or_create_key
    from .mesh.node import open_node
    from .mesh.registry import PeerRegistry
    from .mesh.settings import MeshSettings

    settings = MeshSettings.from_env()
    cwd = os.getcwd() if cwd is None else cwd
    key = load_or_create_key(settings.home)
    identity = claim_identity(settings.home, harness, cwd)
    try:
        async with open_node(key, port=settings.port, registry=PeerRegistry(settings.home), **node_options) as node:
            # Ready means synced: registering, and every call after it, see what the mesh knows.
            await node.wait_synced()
            store = MeshStore(node)
            owner = os.getpid() if pid is None else pid
            tool = CommsTool(
                store,
                agent_id=identity.agent_id,
                harness=harness,
                cwd=cwd,
                pid=owner,
                process_start=_start_or_zero(process_start_time, owner),
            )
            chosen = name or identity.last_name or default_name(harness, identity.cwd)
            tool.on_register = identity.remember_name  # a rename is the default name of the next start
            result = tool.call({"action": "register", "name": chosen, "visibility": visibility, "tags": list(tags)})
            if result.is_error:
                raise AgentError(result.text)
            agent = Agent(tool)
            agent.name_note = result.data.get("name_in_use")
            if agent.name_note is not None:  # said in the log a bridge writes on its standard error
                logging.getLogger("agent_comms").warning("agent %s: %s", identity.agent_id, agent.name_note)
            try:
                yield agent
            finally:
                agent.close()
    finally:
        identity.release()


def _start_or_zero(reader: Callable[[int], float], pid: int) -> float:
    try:
        return reader(pid)
    except (ProcessLookupError, OSError, ValueError):
        return 0.0
