"""The Trio runtime of one peer: sockets, tasks and time around the sans-IO :class:`~agent_comms.protocol.peer.Peer`.

Structure (each arrow is a memory channel, each box a task)::

    data listener ─┐                         ┌─> writer (link 1) ─> socket
    coordinator  ──┼─> inbox ─> [ owner ] ───┼─> writer (link 2) ─> socket
    reader (link n)┘                         └─> subscribers (changes)

* The **owner** task is the only one that drives the :class:`Peer`: it takes events from the inbox (accepted and
  opened connections, received frames, closed links, bind results, the alarm: one class each in
  :mod:`~agent_comms.mesh.owner_events`), feeds them to the peer, and carries out the commands the peer returns.
  It sleeps until the next event or the peer's next timer (``get_timer``).
* Each link has a **reader** (bytes -> frames) and a **writer** that coalesces everything queued since its last
  write into one write. The writer's queue is bounded, in writes (:data:`LINK_QUEUE_FRAMES`) and in bytes
  (:data:`LINK_QUEUE_BYTES`, operations held for the link included): a link that cannot keep up (a stopped or
  stuck peer) is closed, and its peer catches up by anti-entropy when it comes back, rather than letting memory
  grow.
* **Few hops.** A reader applies what it read itself, in its own task, when no event a reader sent is waiting for
  the owner (the peer does no I/O, so nothing else runs meanwhile and each link's frames keep their order) and the
  scheduler pass is young; otherwise the read becomes an inbox event. The operations made here are held in an outbox
  and leave, per scheduler pass, in one ``Ops`` frame per link (cut by size, each operation encoded once for all
  links) when the link's writer runs; the first operation of a pass on an idle TCP link is written to its socket at
  once instead. Any other frame first flushes the outbox, so nothing overtakes what was made before it. On TCP links
  the reader and the writer use the socket's descriptor directly: one task step per read (wait until readable, then
  read) and none for a write the socket takes whole.
* **Nothing waits behind a flood.** A new connection and a handshake's frames are handled at once, never behind the
  data in the inbox; the owner works in slices of :data:`OWNER_SLICE` and runs due timers between them; a link whose
  whole frames were read is heard even while they wait in the inbox (a part of a frame is not: a slow loris is still
  cut off); a caller that keeps one pass going for a heartbeat interval sends the due heartbeats itself
  (:meth:`MeshNode._keep_alive`), and bytes for an idle TCP link go to its socket at once. The peer's sweep does not
  count the time the peer stood still against its links.
* Expected failures (a refused dial, a reset connection, a malformed frame) become events for the peer;
  anything else propagates and takes the node down, loudly.
* **Neighbours** (any process of any user can connect to the ports): the listeners survive running out of file
  descriptors or memory (``EMFILE``, ``ENFILE``, ``ENOBUFS``, ``ENOMEM``: logged once per burst, accepting again
  after a short pause); at most :data:`MAX_PENDING_LINKS` accepted connections may be waiting for their handshake
  (beyond that the oldest of them is closed to make room), each for ``handshake_timeout`` at most; a reader takes
  frames of at most :data:`~agent_comms.protocol.link.MAX_HANDSHAKE_FRAME` bytes before its link is open; and
  :func:`open_node` raises the soft limit on open files to the hard one.

The public methods (:meth:`MeshNode.submit`, :meth:`MeshNode.host_agent`, ...) run on the caller's task: Trio
never preempts, so they drive the peer directly, carry out its commands and wake the owner to recompute its timer.
"""

from __future__ import annotations

import collections
import contextlib
import errno
import logging
import math
import os
import random
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable, Mapping, Sequence
from contextlib import asynccontextmanager
from typing import Any, Final, assert_never

import trio

from agent_comms.liveness import process_alive
from agent_comms.protocol.changes import Change
from agent_comms.protocol.commands import (
    BindCoordinatorPort,
    CloseLink,
    Command,
    Deliver,
    Dial,
    Notice,
    ReadPeerRegistry,
    ReleaseCoordinatorPort,
    Send,
)
from agent_comms.protocol.errors import RemoteProtocolError
from agent_comms.protocol.framing import DEFAULT_MAX_FRAME, FrameDecoder, encode_frames, encode_op, encode_ops_frames
from agent_comms.protocol.link import MAX_HANDSHAKE_FRAME
from agent_comms.protocol.ops import AgentUpsert, Body, Op
from agent_comms.protocol.peer import Peer, PeerConfig
from agent_comms.protocol.state import MeshState
from agent_comms.protocol.wire import Identify, Ops, SyncOps

from .network import Connection, Listener, Network, PortInUse, TcpNetwork
from .owner_events import (
    Accepted,
    BindFailed,
    Bound,
    DialFailed,
    FramesRead,
    LinkEnded,
    Opened,
    OwnerEvent,
    TimerDue,
)
from .registry import PeerRegistry

__all__ = ["LINK_QUEUE_BYTES", "LINK_QUEUE_FRAMES", "MAX_PENDING_LINKS", "MeshNode", "open_node"]

logger = logging.getLogger("agent_comms.mesh")

#: Reasons for closing a link that mean someone broke the protocol or failed to prove the key (logged as warnings).
_ALARMING = (
    "auth",
    "malformed",
    "oversized",
    "version",
    "authority",
    "unexpected",
    "role",
    "clock",
    "write queue",
    "squatter",
    "refused",
    "mesh",
)

#: Writes queued on one link before the link is judged too slow and closed.
LINK_QUEUE_FRAMES: Final = 65536
#: Bytes queued on one link (written to it but not yet taken by the socket) before it is judged too slow and closed;
#: anti-entropy answers are counted apart, against the same limit (see :meth:`MeshNode._write_answer`).
LINK_QUEUE_BYTES: Final = 32 << 20
#: Accepted connections whose handshake has not finished, at most (beyond it the oldest is closed to make room):
#: honest peers finish within a round trip, so only a flood of strangers ever comes near it.
MAX_PENDING_LINKS: Final = 128
#: ``accept`` errors that mean "out of resources for now" (not "this listener is broken"): wait, then accept again.
_SHORT_OF_RESOURCES: Final = frozenset({errno.EMFILE, errno.ENFILE, errno.ENOBUFS, errno.ENOMEM})
#: How long a listener (or a bind, or a dial) pauses when the process is short of file descriptors or memory.
_RESOURCE_PAUSE: Final = 0.1
_INBOX: Final = 1024
_READ_SIZE: Final = 1 << 16
#: What a writer queue holds: bytes to write, and whether they answer an anti-entropy request.
_Chunk = tuple[bytes, bool]
_CLOSE: Final[_Chunk] = (b"", False)  # sentinel on a writer queue: flush, then close
_WAKE: Final[_Chunk] = (b"", True)  # sentinel on a writer queue: operations wait in the outbox
#: Bytes joined into one socket write at most (unless one queued write alone is larger).
WRITE_BYTES: Final = 1 << 20
#: Operations held in the outbox at most (then they are written at once, without waiting for a writer to wake).
OUTBOX_OPS: Final = 1024
#: The longest the owner task handles events before it lets the other tasks run (seconds).
OWNER_SLICE: Final = 0.02


class _PassCounter(trio.abc.Instrument):
    """Counts the passes of Trio's run loop (each waits for I/O once): the operations made within one pass are
    written together. Also notes when the current pass began (:meth:`spent`)."""

    def __init__(self) -> None:
        self.passes = 0
        self.began = time.perf_counter()

    def before_io_wait(self, timeout: float) -> None:
        self.passes += 1

    def after_io_wait(self, timeout: float) -> None:
        self.began = time.perf_counter()

    def spent(self) -> float:
        """Seconds since the current pass began."""
        return time.perf_counter() - self.began


class MeshNode:
    """A running peer. Create it with :func:`open_node`."""

    def __init__(
        self,
        peer: Peer,
        network: Network,
        nursery: trio.Nursery,
        registry: PeerRegistry | None,
        passes: _PassCounter | None = None,
    ) -> None:
        self.peer = peer
        self.network = network
        self.registry = registry
        self._nursery = nursery
        self._inbox_send, self._inbox = trio.open_memory_channel[OwnerEvent](_INBOX)
        self._writers: dict[int, trio.MemorySendChannel[_Chunk]] = {}
        #: link id -> bytes queued on its writer and not yet sent, anti-entropy answers excepted
        self._queued: dict[int, int] = {}
        #: link id -> bytes of anti-entropy answers queued on its writer and not yet sent
        self._owed: dict[int, int] = {}
        self.link_queue_bytes = LINK_QUEUE_BYTES
        self._link_scopes: dict[int, trio.CancelScope] = {}
        #: operations made here and not yet written, in order, each with the links it goes to (see :meth:`_hold_ops`)
        self._outbox: collections.deque[tuple[Ops, list[bytes], list[int]]] = collections.deque()
        #: link id -> bytes of the outbox's operations held for it
        self._held: dict[int, int] = {}
        #: links whose writer has been woken for the outbox since it was last flushed
        self._woken: set[int] = set()
        self._flushing = False
        #: commands are being carried out (:meth:`_execute`, :meth:`_flush_outbox`): links found full meanwhile
        #: are closed once they are done (:meth:`_queue_full`)
        self._busy = 0
        self._overflowed: list[tuple[int, str]] = []
        #: link id -> the file descriptor of its socket (TCP links), for :meth:`_write_direct`
        self._fds: dict[int, int] = {}
        #: link id -> the scheduler pass of its last direct write (one per pass; the rest of a pass is batched)
        self._direct_pass: dict[int, int] = {}
        self._direct_frame: tuple[Ops, bytes] | None = None
        self._passes = passes if passes is not None else _PassCounter()
        self._coordinator_scope: trio.CancelScope | None = None
        self._subscribers: list[trio.MemorySendChannel[Change]] = []
        self._listeners: list[Callable[[tuple[Change, ...]], None]] = []
        #: batches of changes applied and not yet handed to listeners and subscribers (see :meth:`_deliver`)
        self._deliveries: collections.deque[tuple[Change, ...]] = collections.deque()
        self._delivering = False
        self._progress: trio.Event | None = None
        self._alarm_scope: trio.CancelScope | None = None
        self._alarm_deadline = math.inf
        #: set when the last link task ends after :meth:`aclose` began (goodbyes flushed)
        self._links_drained: trio.Event | None = None
        #: connections accepted by a listener and not yet handed to the peer (they count as pending links)
        self._accepted_unhandled = 0
        #: when :meth:`_keep_alive` may next send heartbeats (``time.perf_counter``)
        self._next_keep_alive = 0.0
        #: link id -> frames read from it waiting in the inbox (events): such a link is not silent
        self._unhandled_reads: dict[int, int] = {}
        #: pending connections closed to make room in the current burst (logged once per burst)
        self._dropped_pending = 0
        #: pending links closed to make room whose tasks have not ended yet (no longer counted as pending)
        self._dropping: set[int] = set()
        self.closed = False
        #: the hub gateway of this peer (:mod:`.gateway`), when its machine joined a hub
        self.gateway: Any = None
        #: when its machine joined a hub: the other machine a peer id belongs to (``None``: this machine's); the
        #: periodic probe does not judge other machines' processes
        self.remote_machine_of: Callable[[str], str | None] | None = None

    # ------------------------------------------------------------------ public API

    @property
    def peer_id(self) -> str:
        """This peer's id."""
        return self.peer.peer_id

    # The narrow read interface for the layers above (the store, views, tests): they read the state and the hosted
    # agents through these, never through ``peer``, and change them only through the methods that follow.

    @property
    def state(self) -> MeshState:
        """The replicated state, to read (only the peer changes it, as operations are made and received)."""
        return self.peer.replica.state

    @property
    def hosted(self) -> Mapping[str, AgentUpsert]:
        """Agent id -> the record this peer last wrote for each agent it hosts (to read)."""
        return self.peer.hosting.hosted

    def next_op_id(self) -> str:
        """The id the next operation made here will get (a room's id is the id of the operation creating it)."""
        return self.peer.replica.next_op_id()

    def submit(self, body: Body) -> Op:
        """Make an operation (applied here at once, broadcast to every linked peer); return it."""
        op, commands = self.peer.make(body, trio.current_time())
        self._execute(commands)
        return op

    def submit_all(self, bodies: Sequence[Body]) -> list[Op]:
        """:meth:`submit` several operations, in order, broadcast together (one frame, one write per link)."""
        ops, commands = self.peer.make_all(bodies, trio.current_time())
        self._execute(commands)
        return ops

    def _keep_alive(self) -> None:
        """The caller has kept this scheduler pass going for a heartbeat interval or more (a loop of tool calls that
        never yields): no task of the node runs meanwhile, so send the heartbeats that are due from here (written
        to the sockets at once when their links are idle), or the other peers would judge this one silent. Only
        heartbeats: the timeouts wait for a pass in which the readers have read."""
        clock = time.perf_counter()
        if clock < self._next_keep_alive:
            return
        self._next_keep_alive = clock + self.peer.config.heartbeat_interval / 2
        self._execute(self.peer.heartbeats(trio.current_time()))

    def host_agent(self, record: AgentUpsert) -> AgentUpsert:
        """Host an agent on this peer; returns the record as claimed (with its incarnation).

        If the record names a process (``pid``), the agent is released as soon as that process exits (on Linux
        through a pidfd, at once; elsewhere by the periodic probe).
        """
        first = record.agent_id not in self.hosted
        self._execute(self.peer.host_agent(record, trio.current_time()))
        if first and record.pid > 0 and hasattr(os, "pidfd_open"):
            self._nursery.start_soon(self._watch_process, record.agent_id, record.pid, record.process_start)
        return self.hosted[record.agent_id]

    def update_agent(self, agent_id: str, **changes: object) -> None:
        """Change a hosted agent's record."""
        self._execute(self.peer.update_agent(agent_id, trio.current_time(), **changes))

    def release_agent(self, agent_id: str) -> None:
        """Stop hosting an agent (the mesh sees it offline)."""
        self._execute(self.peer.release_agent(agent_id, trio.current_time()))

    def relay(self, ops: Iterable[Op]) -> None:
        """Apply operations of other machines brought by the hub gateway, as if received on a link (every check
        applies; a refused batch raises :class:`~agent_comms.protocol.errors.RemoteProtocolError`). Wakes
        :meth:`wait_for` like anything the owner task processes."""
        self._execute(self.peer.relay(ops, trio.current_time()))
        progress = self._progress
        if progress is not None:
            self._progress = None
            progress.set()

    def request_sync(self) -> dict[int, int]:
        """Ask every linked peer for anti-entropy now; ``peer.synced_with(marks)`` then names those that answered,
        which hold everything made here before this call (:meth:`~agent_comms.protocol.peer.Peer.request_sync`)."""
        marks, commands = self.peer.request_sync(trio.current_time())
        self._execute(commands)
        return marks

    def subscribe(self) -> trio.MemoryReceiveChannel[Change]:
        """A channel of every change to the replicated state from now on (unbounded; close it when done: the node
        then stops sending to it)."""
        send, receive = trio.open_memory_channel[Change](math.inf)
        self._subscribers.append(send)
        return receive

    def add_listener(self, listener: Callable[[tuple[Change, ...]], None]) -> None:
        """Call ``listener`` synchronously with every batch of changes, in order, once they are applied.

        It is called after the node has executed the commands that applied them, never from inside another
        listener's call: it must not block; it may call :meth:`submit` and friends, whose changes reach the listeners
        after it returns.
        """
        self._listeners.append(listener)

    async def wait_for(self, condition: Callable[[], bool]) -> None:
        """Wait until ``condition()`` holds; it is re-checked whenever the node has processed something."""
        while not condition():
            if self._progress is None:
                self._progress = trio.Event()
            await self._progress.wait()

    @property
    def synced(self) -> bool:
        """Whether the first anti-entropy round with the mesh is done (rule 9 of :mod:`agent_comms.protocol.peer`)."""
        return self.peer.synced

    async def wait_synced(self) -> None:
        """Wait until this peer has met the mesh and every peer it knows of has synced it (rule 9 of
        :mod:`agent_comms.protocol.peer`): what an agent reads then is what the mesh knows. At once when alone;
        a stopped peer holds it up for ``handshake_timeout`` at most, anything else for ``ready_timeout``."""
        await self.wait_for(lambda: self.peer.synced)

    def start_soon(self, task: Callable[[], Awaitable[object]]) -> None:
        """Run ``task`` for as long as the node runs (cancelled when it stops)."""
        self._nursery.start_soon(task)

    def abort(self) -> None:
        """Make the coming shutdown abrupt, like a killed process (for tests): no goodbyes, no handover."""
        self.closed = True

    async def aclose(self) -> None:
        """Leave gracefully: agents offline, coordinator role handed over, goodbyes flushed, links closed."""
        if self.closed:
            return
        self._execute(self.peer.close(trio.current_time()))
        self.closed = True
        if self.registry is not None:
            self.registry.withdraw(self.peer_id)
        if self._link_scopes:
            drained = self._links_drained = trio.Event()
            with trio.move_on_after(0.5):
                await drained.wait()

    # ------------------------------------------------------------------ the owner

    async def _owner(self, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        """Handle the inbox's events in order, in slices of at most :data:`OWNER_SLICE` seconds: between slices the
        other tasks run (writers send, readers read, heartbeats leave), and the peer's timers run if they are due,
        ahead of the events still waiting (timers depend on time, not on their order with events)."""
        self._execute(self.peer.start(trio.current_time()))
        task_status.started()
        inbox = self._inbox
        clock = time.perf_counter
        while True:
            event = await inbox.receive()
            until = clock() + OWNER_SLICE
            while True:
                self._handle(event)
                try:
                    event = inbox.receive_nowait()
                except trio.WouldBlock:
                    break
                if clock() >= until:
                    self._progressed()
                    await trio.lowlevel.checkpoint()
                    self._run_due_timers()
                    until = clock() + OWNER_SLICE
            self._progressed()

    def _run_due_timers(self) -> None:
        """Run the peer's timers if they are due. Links whose frames wait in the inbox are heard first: they are
        not silent, only not handled yet."""
        peer = self.peer
        due = peer.get_timer()
        now = trio.current_time()
        if due is not None and now >= due:
            for link_id in self._unhandled_reads:
                peer.link_heard(link_id, now)
            self._execute(peer.handle_timer(now))

    def _progressed(self) -> None:
        """After events were handled: point the alarm at the peer's next timer and wake :meth:`wait_for`."""
        self._reschedule()
        progress = self._progress
        if progress is not None:
            self._progress = None
            progress.set()

    async def _alarm(self) -> None:
        """Sleeps until the peer's next timer (the owner moves the deadline) and then tells the owner."""
        while True:
            with trio.CancelScope() as scope:
                self._alarm_scope = scope
                self._alarm_deadline = math.inf
                self._reschedule()
                await trio.sleep_forever()
            await self._inbox_send.send(TimerDue())

    def _reschedule(self) -> None:
        """Point the alarm at the peer's next timer (cheap: no task switch, and nothing when it did not move)."""
        scope = self._alarm_scope
        if scope is not None:
            timer = self.peer.get_timer()
            deadline = math.inf if timer is None else timer
            if deadline != self._alarm_deadline:
                self._alarm_deadline = deadline
                scope.deadline = deadline

    def _handle(self, event: OwnerEvent) -> None:
        """One event from the inbox, fed to the peer as the input it is."""
        peer = self.peer
        now = trio.current_time()
        match event:
            case FramesRead(link_id, frames):
                unhandled = self._unhandled_reads
                count = unhandled.pop(link_id, 0) - 1
                if count > 0:
                    unhandled[link_id] = count
                for frame in frames:
                    self._execute(peer.frame_received(link_id, frame, now))
            case LinkEnded(link_id, reason):
                if link_id in peer.links:
                    self._log_close(link_id, reason)
                self._drop_writer(link_id)
                self._unhandled_reads.pop(link_id, None)  # (its frames come before its end: none is left)
                self._execute(peer.link_closed(link_id, now, reason))
            case Accepted(conn):
                self._accepted_unhandled -= 1
                link_id, commands = peer.accept(now, local_addr=conn.local_addr, remote_addr=conn.remote_addr)
                self._start_link(link_id, conn)
                self._execute(commands)
            case Opened(link_id, conn):
                self._start_link(link_id, conn)
                self._execute(peer.link_opened(link_id, now, local_addr=conn.local_addr, remote_addr=conn.remote_addr))
            case DialFailed(link_id, reason):
                self._execute(peer.dial_failed(link_id, now, reason))
            case Bound(listener):
                if self.closed:
                    self._nursery.start_soon(listener.aclose)
                    return
                scope = self._coordinator_scope = trio.CancelScope()
                self._nursery.start_soon(self._accept_loop, listener, scope)
                self._execute(peer.coordinator_bound(now))
            case BindFailed():
                self._execute(peer.coordinator_bind_failed(now))
            case TimerDue():
                self._run_due_timers()
            case _:
                assert_never(event)

    def _execute(self, commands: Iterable[Command]) -> None:
        self._busy += 1
        try:
            self._carry_out(commands)
        finally:
            self._busy -= 1
        self._close_overflowed()
        if self._passes.spent() >= self.peer.config.heartbeat_interval:
            self._keep_alive()

    def _carry_out(self, commands: Iterable[Command]) -> None:
        for command in commands:
            if isinstance(command, Send):
                frames = command.frames
                if len(frames) == 1 and isinstance(frames[0], Ops):
                    self._hold_ops(command.link_id, frames[0])
                    continue
                self._flush_outbox()  # what was made before this frame goes out before it
                if all(isinstance(frame, SyncOps) for frame in frames):
                    self._write_answer(command.link_id, encode_frames(frames))
                else:
                    self._write_bytes(command.link_id, encode_frames(frames))
            elif isinstance(command, Deliver):
                self._deliveries.append(command.changes)
            elif isinstance(command, Dial):
                self._nursery.start_soon(self._dial, command)
            elif isinstance(command, CloseLink):
                self._log_close(command.link_id, command.reason, command.remote)
                self._close_link(command.link_id)
            elif isinstance(command, BindCoordinatorPort):
                self._nursery.start_soon(self._bind)
            elif isinstance(command, ReleaseCoordinatorPort):
                if self._coordinator_scope is not None:
                    self._coordinator_scope.cancel()
                    self._coordinator_scope = None
            elif isinstance(command, ReadPeerRegistry):
                port = self.peer.config.coordinator_port
                found = [] if self.registry is None else self.registry.read(port)
                self._execute(self.peer.peers_discovered(found, trio.current_time()))
            elif isinstance(command, Notice):
                logger.warning("peer %s: %s", self.peer_id, command.text)
            else:  # pragma: no cover - a bug in this module
                raise AssertionError(f"unknown command {command!r}")
        self._reschedule()
        self._deliver()

    def _deliver(self) -> None:
        """Hand the changes applied so far to listeners and subscribers, batch by batch, in order.

        Runs once the commands that applied them are executed. A listener that makes an operation (the store's
        receipts) runs :meth:`_execute` again; that inner run only queues its changes, and this loop delivers them
        after the listener has returned, so no listener is ever entered while it is running.
        """
        if self._delivering:
            return
        self._delivering = True
        try:
            while self._deliveries:
                changes = self._deliveries.popleft()
                for listener in self._listeners:
                    listener(changes)
                for subscriber in list(self._subscribers):
                    try:
                        for change in changes:
                            subscriber.send_nowait(change)
                    except trio.BrokenResourceError:  # the subscriber closed its end: it wants no more
                        self._subscribers.remove(subscriber)
        finally:
            self._delivering = False

    def _log_close(self, link_id: int, reason: str, remote: str = "") -> None:
        entry = self.peer.links.get(link_id)
        who = remote or ("?" if entry is None else (entry.peer_id or entry.handshake.remote_addr))
        level = logging.WARNING if reason.startswith(_ALARMING) else logging.INFO
        logger.log(level, "peer %s: link %d to %s closed: %s", self.peer_id, link_id, who, reason)

    # ------------------------------------------------------------------ process liveness

    async def _watch_process(self, agent_id: str, pid: int, start_time: float) -> None:
        """Release a hosted agent the moment its process exits (Linux pidfd)."""
        try:
            fd = os.pidfd_open(pid)
        except OSError:
            return  # already gone, or not permitted: the periodic probe covers it
        try:
            if process_alive(pid, start_time):
                await trio.lowlevel.wait_readable(fd)
        finally:
            os.close(fd)
        if agent_id in self.peer.hosted and not self.closed:
            self._execute(self.peer.processes_exited([agent_id], trio.current_time()))

    async def _probe_processes(self) -> None:
        """Every ``probe_interval``: agents whose process is gone (pid and start time) go offline."""
        while True:
            await trio.sleep(self.peer.config.probe_interval)
            remote = self.remote_machine_of
            gone = [
                agent_id
                for agent_id, entry in self.peer.replica.state.agents.items()
                if entry.record is not None
                and entry.online
                and entry.body.pid > 0
                and (remote is None or remote(entry.body.peer_id) is None)
                and not process_alive(entry.body.pid, entry.body.process_start)
            ]
            if gone and not self.closed:
                self._execute(self.peer.processes_exited(gone, trio.current_time()))

    # ------------------------------------------------------------------ ports and dials

    async def _bind(self) -> None:
        try:
            listener = await self.network.listen(self.peer.config.coordinator_port)
        except PortInUse:
            await self._inbox_send.send(BindFailed())
        except OSError as exc:
            if exc.errno not in _SHORT_OF_RESOURCES:
                raise
            # No descriptor for a socket right now (a flood of connections, say): as good as a failed bind, once a
            # short pause has passed, so the retries that follow do not spin.
            logger.warning("peer %s: cannot bind the coordinator port for now: %s", self.peer_id, exc)
            await trio.sleep(_RESOURCE_PAUSE)
            await self._inbox_send.send(BindFailed())
        else:
            await self._inbox_send.send(Bound(listener))

    def pending_links(self) -> int:
        """Accepted connections whose handshake has not finished (see :data:`MAX_PENDING_LINKS`)."""
        return len(self._waiting_links()) + self._accepted_unhandled

    def _waiting_links(self) -> list[int]:
        """Inbound links still in their handshake, other than those already being closed to make room."""
        return [
            entry.link_id
            for entry in self.peer.links.values()
            if not entry.outbound
            and not entry.is_open
            and entry.link_id not in self._dropping
            and entry.link_id in self._link_scopes  # else its task has ended and its close is on the way
        ]

    def _drop_oldest_pending(self) -> bool:
        """Close the accepted connection that has waited longest for its handshake, to make room for a new one.

        An honest peer finishes its handshake within a round trip, so under a flood of idle connections the oldest
        pending one is the least likely to be honest: dropping it (rather than refusing the newcomer) keeps the
        port open to honest peers for as long as the flood lasts. Logged once per burst. ``False`` if none could be
        dropped (every pending connection is still on its way to the owner task)."""
        waiting = self._waiting_links()
        if not waiting:
            return False
        oldest = min(waiting)
        if not self._dropped_pending:
            logger.warning(
                "peer %s: %d connections waiting for their handshake: closing the oldest to make room (another "
                "process flooding the port?)",
                self.peer_id,
                MAX_PENDING_LINKS,
            )
        self._dropped_pending += 1
        self._dropping.add(oldest)
        self._link_scopes[oldest].cancel()
        return True

    async def _accept_loop(self, listener: Listener, scope: trio.CancelScope | None = None) -> None:
        """Accept connections until cancelled. Running out of descriptors or memory pauses it (logged once per
        burst); past :data:`MAX_PENDING_LINKS` pending connections, the oldest pending one is closed to make room
        for the new one (also logged once per burst)."""
        failures = 0
        with scope if scope is not None else trio.CancelScope():
            try:
                while True:
                    try:
                        conn = await listener.accept()
                    except OSError as exc:
                        if exc.errno not in _SHORT_OF_RESOURCES:
                            raise
                        if not failures:
                            logger.warning(
                                "peer %s: cannot accept connections on port %d for now (%s); pausing %g s and "
                                "trying again (another process flooding the port?)",
                                self.peer_id,
                                listener.port,
                                exc,
                                _RESOURCE_PAUSE,
                            )
                        failures += 1
                        await trio.sleep(_RESOURCE_PAUSE)
                        continue
                    if failures:
                        logger.warning(
                            "peer %s: accepting on port %d again (%d attempts failed)",
                            self.peer_id,
                            listener.port,
                            failures,
                        )
                        failures = 0
                    if self.pending_links() >= MAX_PENDING_LINKS and not self._drop_oldest_pending():
                        await trio.aclose_forcefully(conn.stream)  # all still in the owner's inbox: no older to drop
                        continue
                    if self._dropped_pending and self.pending_links() < MAX_PENDING_LINKS // 2:
                        logger.warning(
                            "peer %s: %d waiting connections were closed to make room",
                            self.peer_id,
                            self._dropped_pending,
                        )
                        self._dropped_pending = 0
                    # At once, not behind the data in the inbox: the dialer's handshake timeout is running.
                    self._accepted_unhandled += 1
                    self._handle_now(Accepted(conn))
            finally:
                with trio.CancelScope(shield=True):
                    await listener.aclose()

    async def _dial(self, command: Dial) -> None:
        try:
            with trio.fail_after(self.peer.config.handshake_timeout):
                conn = await self.network.connect(command.port)
        except (OSError, trio.TooSlowError) as exc:
            if isinstance(exc, OSError) and exc.errno in _SHORT_OF_RESOURCES:
                await trio.sleep(_RESOURCE_PAUSE)  # so that what follows a failed dial does not spin meanwhile
            await self._inbox_send.send(DialFailed(command.link_id, f"{type(exc).__name__}: {exc}"))
        else:
            self._handle_now(Opened(command.link_id, conn))  # the handshake starts at once, not behind data

    # ------------------------------------------------------------------ links

    def _start_link(self, link_id: int, conn: Connection) -> None:
        send, receive = trio.open_memory_channel[_Chunk](LINK_QUEUE_FRAMES)
        self._writers[link_id] = send
        if isinstance(conn.stream, trio.SocketStream):
            self._fds[link_id] = conn.stream.socket.fileno()
        scope = self._link_scopes[link_id] = trio.CancelScope()
        self._nursery.start_soon(self._run_link, link_id, conn, receive, scope)

    def _write_bytes(self, link_id: int, data: bytes) -> None:
        """Queue ``data`` on a link; past ``link_queue_bytes`` unsent (answers excepted) the link is closed. On an
        idle TCP link (nothing queued), what the socket takes at once is written to it here, without waiting for
        the writer task to run (which a caller that does not yield, or a busy pass, may hold up)."""
        writer = self._writers.get(link_id)
        if writer is None:
            return
        fd = self._fds.get(link_id)
        if fd is not None and link_id not in self._queued and link_id not in self._owed:
            try:
                written = os.write(fd, data)
            except OSError:  # full (BlockingIOError) or broken: the writer sends it or meets the error
                written = 0
            if written == len(data):
                return
            data = data[written:]
        queued = self._queued.get(link_id, 0) + len(data)
        try:
            if queued > self.link_queue_bytes:
                raise trio.WouldBlock
            writer.send_nowait((data, False))
        except trio.WouldBlock:
            self._queue_full(link_id, f"{queued} bytes unsent: the other end does not keep up")
        else:
            self._queued[link_id] = queued

    def _write_answer(self, link_id: int, data: bytes) -> None:
        """Queue an anti-entropy answer on a link. It is as large as what the other end lacks, which may be more
        than ``link_queue_bytes`` (a peer that was away, a new one), so it does not count towards that limit: it
        is owed, not a backlog. Answers are bounded on their own: one may be queued only while the answers still
        unsent are within ``link_queue_bytes`` (an end that asks again and again without reading is closed)."""
        writer = self._writers.get(link_id)
        if writer is None:
            return
        owed = self._owed.get(link_id, 0)
        try:
            if owed > self.link_queue_bytes:
                raise trio.WouldBlock
            writer.send_nowait((data, True))
        except trio.WouldBlock:
            self._queue_full(
                link_id, f"{owed} bytes of anti-entropy answers unsent: the other end asks faster than it reads"
            )
        else:
            self._owed[link_id] = owed + len(data)

    def _hold_ops(self, link_id: int, frame: Ops) -> None:
        """Hold an operation made here for a link: everything made before the link's writer next runs (in this
        scheduler pass) goes out in one ``Ops`` frame, each operation encoded once for every link it goes to. The
        first operation of a pass on an idle TCP link is written to the socket at once instead (no hop at all).

        Order is kept: any other frame written to any link first flushes the outbox (:meth:`_flush_outbox`), so
        what waits in the outbox is always younger than everything in the writers' queues. Held bytes count
        towards the link's ``link_queue_bytes``."""
        if link_id not in self._writers:
            return  # closed on our side: nothing more is written to it
        fd = self._fds.get(link_id)
        passes = self._passes.passes
        if (
            fd is not None
            and not self._flushing
            and link_id not in self._woken
            and self._direct_pass.get(link_id) != passes
            and link_id not in self._queued
            and link_id not in self._owed
        ):
            self._write_direct(link_id, fd, frame, passes)
            return
        outbox = self._outbox
        if outbox and outbox[-1][0] is frame:
            _, encoded, links = outbox[-1]
            links.append(link_id)
        else:
            if len(outbox) >= OUTBOX_OPS:
                self._flush_outbox()
            encoded = [encode_op(op) for op in frame.ops]
            outbox.append((frame, encoded, [link_id]))
        held = self._held[link_id] = self._held.get(link_id, 0) + sum(map(len, encoded))
        if self._queued.get(link_id, 0) + held > self.link_queue_bytes:
            self._queue_full(
                link_id, f"{self._queued.get(link_id, 0) + held} bytes unsent: the other end does not keep up"
            )
            return
        if link_id in self._woken:
            return
        self._woken.add(link_id)
        try:
            self._writers[link_id].send_nowait(_WAKE)
        except trio.WouldBlock:
            self._queue_full(link_id, f"{LINK_QUEUE_FRAMES} writes unsent: the other end does not keep up")

    def _write_direct(self, link_id: int, fd: int, frame: Ops, passes: int) -> None:
        """Write the first operation of a scheduler pass on an idle link straight to its socket (no hop through
        the writer task); what the socket does not take at once is queued for the writer."""
        cached = self._direct_frame
        if cached is not None and cached[0] is frame:
            data = cached[1]
        else:
            data = encode_frames([frame])
            self._direct_frame = (frame, data)
        self._direct_pass[link_id] = passes
        try:
            written = os.write(fd, data)
        except OSError:  # full (BlockingIOError) or broken: the writer sends it or meets the error and ends the link
            written = 0
        if written < len(data):
            self._write_bytes(link_id, data[written:])

    def _flush_outbox(self) -> None:
        """Write the operations held in the outbox: each run going to the same links as frames (cut to stay well
        under the frame cap), built once for all of them."""
        if self._flushing:
            return
        if not self._outbox:
            self._woken.clear()
            self._held.clear()
            return
        self._flushing = True
        self._busy += 1
        try:
            outbox = self._outbox
            self._woken.clear()
            self._held.clear()
            max_body = self.peer.config.sync_chunk_bytes
            while outbox:
                links = outbox[0][2]
                run: list[bytes] = []
                while outbox and outbox[0][2] == links:
                    run += outbox.popleft()[1]
                data = encode_ops_frames(run, max_body)
                for link_id in links:
                    self._write_bytes(link_id, data)
        finally:
            self._flushing = False
            self._busy -= 1
        self._close_overflowed()

    def _queue_full(self, link_id: int, detail: str) -> None:
        """A link's other end does not keep up: nothing more is queued on it (the outbox's operations included) and
        its writer ends it. The peer is told once the commands being carried out are done, so that what the loss
        makes it do (the agents reached through the link go offline) comes after them on every other link."""
        if link_id not in self._writers:
            return  # already closed on our side
        reason = f"write queue full ({detail})"
        self._log_close(link_id, reason)
        self._end_writer(link_id, self._writers.pop(link_id))
        self._overflowed.append((link_id, reason))
        self._close_overflowed()

    def _close_overflowed(self) -> None:
        """Tell the peer of the links closed for a full queue, unless commands are still being carried out."""
        while self._overflowed and not self._busy:
            link_id, reason = self._overflowed.pop(0)
            self._execute(self.peer.link_closed(link_id, trio.current_time(), reason))

    def queued_bytes(self, link_id: int) -> int:
        """Bytes written to a link and not yet handed to its socket (anti-entropy answers and operations held for
        the link's next write included)."""
        return self._queued.get(link_id, 0) + self._owed.get(link_id, 0) + self._held.get(link_id, 0)

    def _sent(self, link_id: int, size: int, answered: int) -> None:
        """The socket took ``size`` bytes of a link, ``answered`` of them from anti-entropy answers."""
        for counts, taken in ((self._queued, size - answered), (self._owed, answered)):
            left = counts.get(link_id, 0) - taken
            if left > 0:
                counts[link_id] = left
            else:
                counts.pop(link_id, None)

    def _close_link(self, link_id: int) -> None:
        if link_id in self._writers:
            self._flush_outbox()  # what was made for it before the close goes out before it
        writer = self._writers.pop(link_id, None)
        if writer is not None:
            self._end_writer(link_id, writer)

    def _end_writer(self, link_id: int, writer: trio.MemorySendChannel[_Chunk]) -> None:
        """The writer of a link closed on our side: it flushes what is queued, then closes the link."""
        self._forget_fd(link_id)
        self._queued.pop(link_id, None)
        self._owed.pop(link_id, None)
        self._held.pop(link_id, None)
        try:
            writer.send_nowait(_CLOSE)
        except trio.WouldBlock:
            scope = self._link_scopes.get(link_id)
            if scope is not None:  # (its task may have ended already)
                scope.cancel()
        writer.close()

    def _forget_fd(self, link_id: int) -> None:
        self._fds.pop(link_id, None)
        self._direct_pass.pop(link_id, None)

    def _drop_writer(self, link_id: int) -> None:
        self._forget_fd(link_id)
        self._queued.pop(link_id, None)
        self._owed.pop(link_id, None)
        self._held.pop(link_id, None)
        writer = self._writers.pop(link_id, None)
        if writer is not None:
            writer.close()

    async def _run_link(
        self, link_id: int, conn: Connection, queue: trio.MemoryReceiveChannel[_Chunk], scope: trio.CancelScope
    ) -> None:
        reason = "closed"
        try:
            with scope:
                async with trio.open_nursery() as nursery:
                    nursery.start_soon(self._writer, link_id, conn.stream, queue, nursery.cancel_scope)
                    reason = await self._reader(link_id, conn.stream)
                    nursery.cancel_scope.cancel()
        finally:
            self._forget_fd(link_id)  # before the socket is closed: its number may be reused at once
            self._link_scopes.pop(link_id, None)
            self._dropping.discard(link_id)
            if not self._link_scopes and self._links_drained is not None:
                self._links_drained.set()
            await trio.aclose_forcefully(conn.stream)
            event = LinkEnded(link_id, reason)
            try:
                self._inbox_send.send_nowait(event)
            except trio.WouldBlock:
                with trio.CancelScope(shield=True), trio.move_on_after(1.0):
                    await self._inbox_send.send(event)
            except (trio.ClosedResourceError, trio.BrokenResourceError):
                pass

    async def _reader(self, link_id: int, stream: trio.abc.Stream) -> str:
        """Bytes to frames. Until the link is open, reads are small and frames capped at ``MAX_HANDSHAKE_FRAME``:
        after an ``Identify`` (the last frame of a handshake) the reader waits for the owner's verdict on it and
        lifts the cap only if the link opened."""
        decoder = FrameDecoder(MAX_HANDSHAKE_FRAME)
        authenticated = False
        fd = self._fds.get(link_id)
        while True:
            size = _READ_SIZE if authenticated else MAX_HANDSHAKE_FRAME
            try:
                if fd is None:
                    data = await stream.receive_some(size)
                else:
                    # One task step per read: wait until readable (always a scheduling point, so a busy link
                    # never starves the others), then read without the extra round through the scheduler.
                    await trio.lowlevel.wait_readable(fd)
                    try:
                        data = os.read(fd, size)
                    except BlockingIOError:
                        continue
            except (trio.BrokenResourceError, trio.ClosedResourceError, OSError) as exc:
                return f"{type(exc).__name__}: {exc}"
            if not data:
                return "end of stream"
            decoder.feed(data)
            while True:
                frames = []
                verdict = False
                try:
                    while (frame := decoder.next_frame()) is not None:
                        frames.append(frame)
                        if not authenticated and isinstance(frame, Identify):
                            verdict = True
                            break
                except RemoteProtocolError as exc:
                    return f"{exc.reason}: {exc}"
                if frames:
                    await self._frames_read(FramesRead(link_id, frames))
                if not verdict:
                    break
                await self.wait_for(lambda: self._link_settled(link_id))
                entry = self.peer.links.get(link_id)
                if entry is None:
                    return "closed"
                authenticated = True
                decoder.max_frame = DEFAULT_MAX_FRAME

    async def _frames_read(self, event: FramesRead) -> None:
        """Hand frames read from a link to the peer: applied here, in the reader's task, when the owner task waits
        with nothing sent to it unhandled (the peer does no I/O, so nothing else can run meanwhile); otherwise
        queued behind those events in the owner's inbox, so that the peer sees every event in the order it
        happened (a link's frames after that link's earlier frames, and after a link that ended before them).

        A link's handshake never waits behind data: its frames are always applied here. None of that link's
        frames can be in the inbox before them (all of them were applied here), and other links' events are
        independent of it (they arrived on other sockets, in no order with it).

        Readers apply here only while the current scheduler pass is younger than :data:`OWNER_SLICE`: a pass in
        which many links bring data does not hold up timers and writers for the sum of them (the rest goes to the
        owner, which applies it in slices)."""
        entry = self.peer.links.get(event.link_id)
        if (entry is not None and not entry.is_open) or (self._owner_idle() and self._passes.spent() < OWNER_SLICE):
            self._handle_now(event)
            return
        # Applied by the owner, in its slices; meanwhile the link counts as heard (its frames are here, unhandled).
        unhandled = self._unhandled_reads
        unhandled[event.link_id] = unhandled.get(event.link_id, 0) + 1
        await self._inbox_send.send(event)

    def _handle_now(self, event: OwnerEvent) -> None:
        """Handle an event in the calling task, ahead of what waits in the owner's inbox (only for events that
        depend on none of those: a new connection, a handshake's frames)."""
        self._handle(event)
        self._progressed()

    def _owner_idle(self) -> bool:
        """Whether the owner task waits for its next event and none is queued or handed to it unhandled (a value
        sent to a waiting receiver is handed over at once, and the receiver stops waiting)."""
        stats = self._inbox_send.statistics()
        return stats.tasks_waiting_receive > 0 and not stats.current_buffer_used and not stats.tasks_waiting_send

    def _link_settled(self, link_id: int) -> bool:
        entry = self.peer.links.get(link_id)
        return entry is None or entry.is_open

    async def _writer(
        self,
        link_id: int,
        stream: trio.abc.Stream,
        queue: trio.MemoryReceiveChannel[_Chunk],
        link_scope: trio.CancelScope,
    ) -> None:
        backlog: collections.deque[_Chunk] = collections.deque()  # taken from the queue, not written yet
        try:
            while True:
                if not backlog:
                    try:
                        backlog.append(await queue.receive())
                    except trio.EndOfChannel:
                        break
                else:
                    await trio.lowlevel.checkpoint()  # a backlog written write after write still lets others run
                self._flush_outbox()  # this pass's operations join this write
                while True:
                    try:
                        backlog.append(queue.receive_nowait())
                    except (trio.WouldBlock, trio.EndOfChannel):
                        break
                batch: list[_Chunk] = []
                size = 0
                closing = False
                while backlog and (not batch or size + len(backlog[0][0]) <= WRITE_BYTES):
                    chunk = backlog.popleft()
                    if chunk == _CLOSE:
                        closing = True
                        break
                    batch.append(chunk)
                    size += len(chunk[0])
                if batch:
                    data = b"".join(chunk for chunk, _ in batch)
                    fd = self._fds.get(link_id)
                    written = 0
                    if fd is not None and data:
                        try:  # as much as the socket takes now, without the round through the scheduler
                            written = os.write(fd, data)
                        except OSError:  # full (BlockingIOError), or broken: send_all meets the error
                            written = 0
                    if written < len(data):
                        await stream.send_all(memoryview(data)[written:])
                    self._sent(link_id, len(data), sum(len(chunk) for chunk, answer in batch if answer))
                if closing:
                    break
        except (trio.BrokenResourceError, trio.ClosedResourceError, OSError):
            pass
        link_scope.cancel()


def _raise_file_limit() -> None:
    """Raise this process's soft limit on open files to its hard limit (every link and every connection a
    neighbour opens is a descriptor; the usual soft limit of 1024 is far below what the kernel allows). Harmless
    where that is not permitted or not supported."""
    try:
        import resource
    except ImportError:  # pragma: no cover - not on this platform
        return
    try:
        soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
        if soft != resource.RLIM_INFINITY and soft != hard:
            resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    except (OSError, ValueError):
        pass  # not permitted (or an infinite hard limit the kernel refuses as a soft one): keep the soft limit


def _warn_of_foreign_holder(peer_id: str, port: int, network: Network, registry: PeerRegistry) -> None:
    """Say at start (in the log a bridge writes on its standard error, which ``chat`` shows) when the coordinator
    port is held by a program that is not a peer: this peer then meets the others through the registry only."""
    from .port_holder import foreign_holder, foreign_port_message

    if not isinstance(network, TcpNetwork):
        return
    holder = foreign_holder(port, registry)
    if holder is not None:
        logger.warning("peer %s: %s; meeting peers through the registry", peer_id, foreign_port_message(port, holder))


@asynccontextmanager
async def open_node(
    key: bytes,
    *,
    port: int,
    network: Network | None = None,
    registry: PeerRegistry | None = None,
    config: PeerConfig | None = None,
    rng: random.Random | None = None,
    pid: int | None = None,
    process_start: float = 0.0,
    probe_processes: bool = True,
) -> AsyncIterator[MeshNode]:
    """Run a peer for the duration of the block; leave gracefully at the end.

    ``port`` is the coordinator port. The peer listens for data links on a free port of its own, publishes
    itself in ``registry`` (if given), and starts meeting the mesh; the block begins as soon as it is listening.
    ``probe_processes`` runs the periodic check of agents' processes (off for in-memory simulations whose
    agents name no real process).
    """
    network = TcpNetwork() if network is None else network
    config = PeerConfig(coordinator_port=port) if config is None else config
    _raise_file_limit()
    data_listener = await network.listen(0)
    peer = Peer.create(
        key=key,
        config=config,
        rng=random.SystemRandom() if rng is None else rng,
        pid=os.getpid() if pid is None else pid,
        started_at=time.time(),
        data_port=data_listener.port,
        process_start=process_start,
        wall_clock=time.time,  # read at each use: trio's clock is monotonic and stands still during a suspend
    )
    passes = _PassCounter()
    trio.lowlevel.add_instrument(passes)
    try:
        async with trio.open_nursery() as nursery:
            node = MeshNode(peer, network, nursery, registry, passes)
            nursery.start_soon(node._accept_loop, data_listener)
            if probe_processes:
                nursery.start_soon(node._probe_processes)
            if registry is not None:
                registry.publish(peer.info)
                _warn_of_foreign_holder(peer.peer_id, port, network, registry)
            nursery.start_soon(node._alarm)
            await nursery.start(node._owner)
            if registry is not None:
                from .hub_join import start_hub_gateway

                start_hub_gateway(node, registry.directory.parent, nursery)
            try:
                yield node
            finally:
                with trio.CancelScope(shield=True):
                    await node.aclose()
                nursery.cancel_scope.cancel()
    finally:
        with contextlib.suppress(KeyError):  # already removed (Trio drops an instrument that raised)
            trio.lowlevel.remove_instrument(passes)
