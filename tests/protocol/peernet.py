"""An in-memory network of :class:`~agent_comms.protocol.peer.Peer` state machines, driven by virtual time.

It plays the part of the Trio runtime and the operating system: it carries out the peers' commands (dials,
binds of the coordinator port, frames, closes), delivers frames through the real framing code, fires timers in
time order, and can kill a peer (its connections reset) or stop and continue it (its connections stay open but it
processes nothing, like SIGSTOP). No sockets, no clock, no event loop.

Each process has two clocks, as a real one does: a monotonic clock (``now`` of its inputs, its timers) that lags the
machine's time by what it spent suspended (:meth:`PeerNet.suspend`), and a wall clock (read by the peer when it
stamps) that can be stepped forward or back (:meth:`PeerNet.step_wall`). Without suspends or steps both are the
machine's time.
"""

from __future__ import annotations

import random
from collections import deque
from typing import Any

import attrs

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
from agent_comms.protocol.framing import FrameDecoder, encode_frames
from agent_comms.protocol.peer import Peer, PeerConfig
from agent_comms.protocol.wire import PeerInfo

COORDINATOR_PORT = 40000
KEY = bytes(range(32))


@attrs.define
class Node:
    """One simulated process."""

    name: str
    peer: Peer
    alive: bool = True
    stopped: bool = False
    held: list[tuple[str, tuple[Any, ...]]] = attrs.field(factory=list)
    delivered: list[Any] = attrs.field(factory=list)
    closed_links: list[tuple[int, str]] = attrs.field(factory=list)
    #: why this peer closed links itself (``CloseLink`` reasons), and what it told the log (``Notice`` texts)
    closes: list[str] = attrs.field(factory=list)
    notices: list[str] = attrs.field(factory=list)
    #: how far the process's monotonic clock is behind the machine's time (time spent suspended)
    lag: float = 0.0
    #: how far its wall clock has been stepped from the machine's time
    wall_step: float = 0.0


@attrs.define
class PeerNet:
    """The simulated machine: processes, ports, connections and a clock."""

    config: PeerConfig = attrs.field(factory=lambda: PeerConfig(coordinator_port=COORDINATOR_PORT))
    now: float = 0.0
    nodes: dict[str, Node] = attrs.field(factory=dict)
    ports: dict[int, str] = attrs.field(factory=dict)
    #: (node, link id) -> (node, link id) at the other end
    wires: dict[tuple[str, int], tuple[str, int]] = attrs.field(factory=dict)
    queue: deque[tuple[str, str, tuple[Any, ...]]] = attrs.field(factory=deque)
    registry: dict[str, PeerInfo] = attrs.field(factory=dict)
    rng: random.Random = attrs.field(factory=lambda: random.Random(7))
    _next_port: int = 41000

    # ------------------------------------------------------------------ processes

    def spawn(self, name: str, *, key: bytes = KEY, wall_step: float = 0.0) -> Node:
        """Start a peer process now: it listens on its data port and begins (rule 1). ``wall_step``: its wall clock
        differs from the machine's time by that much from the start (see :meth:`step_wall`)."""
        port = self._next_port
        self._next_port += 1
        peer = Peer.create(
            key=key,
            config=self.config,
            rng=random.Random(self.rng.getrandbits(64)),
            pid=1000 + len(self.nodes),
            started_at=self.now,
            data_port=port,
            wall_clock=lambda: self.now + self.nodes[name].wall_step,
        )
        node = self.nodes[name] = Node(name, peer, wall_step=wall_step)
        self.ports[port] = name
        self.registry[peer.peer_id] = peer.info
        self._run(node, peer.start(self.clock(node)))
        self.settle()
        return node

    def kill(self, name: str) -> None:
        """SIGKILL: the process is gone; its ports are free; the other ends see their connections reset."""
        node = self.nodes[name]
        node.alive = False
        for port in [p for p, owner in self.ports.items() if owner == name]:
            del self.ports[port]
        self.registry.pop(node.peer.peer_id, None)
        for (owner, link_id), (other, other_link) in list(self.wires.items()):
            if owner == name:
                del self.wires[(owner, link_id)]
                self.wires.pop((other, other_link), None)
                self.queue.append((other, "closed", (other_link, "connection reset")))
        self.settle()

    def stop(self, name: str) -> None:
        """SIGSTOP: ports and connections stay, but the process handles nothing until :meth:`cont`."""
        self.nodes[name].stopped = True

    def cont(self, name: str) -> None:
        """SIGCONT: the process handles what piled up, at the current time."""
        node = self.nodes[name]
        node.stopped = False
        held, node.held = node.held, []
        for kind, args in held:
            self.queue.append((name, kind, args))
        self._run(node, node.peer.handle_timer(self.clock(node)))
        self.settle()

    def graceful(self, name: str) -> None:
        """SIGTERM: the peer leaves by the book (rule 4)."""
        node = self.nodes[name]
        self._run(node, node.peer.close(self.clock(node)))
        self.settle()
        self.kill(name)

    # ------------------------------------------------------------------ time

    def settle(self) -> None:
        """Deliver everything in flight (time does not move)."""
        guard = 0
        while self.queue:
            guard += 1
            assert guard < 100_000, "the network never went quiet"
            name, kind, args = self.queue.popleft()
            self._dispatch(name, kind, args)

    def advance(self, seconds: float) -> None:
        """Let virtual time pass, firing every timer that falls due, in order."""
        end = self.now + seconds
        while True:
            self.settle()
            due = [
                (timer + node.lag, node.name)
                for node in self.nodes.values()
                if node.alive and not node.stopped and (timer := node.peer.get_timer()) is not None
            ]
            if not due:
                break
            timer, name = min(due)
            if timer > end:
                break
            self.now = max(self.now, timer)
            node = self.nodes[name]
            self._run(node, node.peer.handle_timer(self.clock(node)))
        self.now = end
        self.settle()

    def clock(self, node: Node) -> float:
        """The monotonic clock of a process: the machine's time less what it spent suspended."""
        return self.now - node.lag

    def wall(self, name: str) -> float:
        """The wall clock of a process, as its peer reads it."""
        return self.now + self.nodes[name].wall_step

    def step_wall(self, name: str, seconds: float) -> None:
        """Step the wall clock of one process (NTP, a user setting the time): forward, or back if negative."""
        self.nodes[name].wall_step += seconds

    def suspend(self, names: list[str], seconds: float) -> None:
        """Suspend these processes for ``seconds`` (all of them: the machine): their monotonic clocks stand still
        while the wall clock and the other processes go on; they then handle what piled up."""
        for name in names:
            self.stop(name)
        self.advance(seconds)
        for name in names:
            self.nodes[name].lag += seconds
        for name in names:
            self.cont(name)

    # ------------------------------------------------------------------ observations

    def live(self) -> list[Node]:
        return [n for n in self.nodes.values() if n.alive]

    def coordinators(self) -> list[str]:
        return [n.name for n in self.live() if n.peer.is_coordinator]

    def fully_linked(self, names: list[str] | None = None) -> bool:
        """Every live, running peer has an open data link to every other one (one mesh)."""
        nodes = [n for n in self.live() if not n.stopped and (names is None or n.name in names)]
        ids = {n.peer.peer_id for n in nodes}
        return all(set(n.peer.data_links) == ids - {n.peer.peer_id} for n in nodes)

    # ------------------------------------------------------------------ the machine

    def _dispatch(self, name: str, kind: str, args: tuple[Any, ...]) -> None:
        node = self.nodes[name]
        if not node.alive:
            return
        if node.stopped:
            node.held.append((kind, args))
            return
        peer = node.peer
        if kind == "frame":
            src, src_link, link_id, data = args
            if link_id == -1:  # sent before we accepted the connection: find out which link it is now
                other = self.wires.get((src, src_link))
                if other is None:
                    return
                link_id = other[1]
            decoder = FrameDecoder()
            decoder.feed(data)
            commands: list[Command] = []
            for frame in decoder.frames():
                commands += peer.frame_received(link_id, frame, self.clock(node))
            self._run(node, commands)
        elif kind == "closed":
            link_id, reason = args
            if link_id == -1:
                return  # closed before it was ever accepted
            node.closed_links.append((link_id, reason))
            self._run(node, peer.link_closed(link_id, self.clock(node), reason))
        elif kind == "accepted":
            dialer, dialer_link, dialer_addr, local_addr = args
            if (dialer, dialer_link) not in self.wires:
                return  # the dialer gave up before we got to it
            link_id, commands = peer.accept(self.clock(node), local_addr=local_addr, remote_addr=dialer_addr)
            self.wires[(name, link_id)] = (dialer, dialer_link)
            self.wires[(dialer, dialer_link)] = (name, link_id)
            self._run(node, commands)
        else:
            raise AssertionError(kind)

    def _run(self, node: Node, commands: list[Command]) -> None:
        peer = node.peer
        for command in commands:
            if isinstance(command, Send):
                other = self.wires.get((node.name, command.link_id))
                if other is not None:
                    data = encode_frames(command.frames)
                    self.queue.append((other[0], "frame", (node.name, command.link_id, other[1], data)))
            elif isinstance(command, Dial):
                self._dial(node, command)
            elif isinstance(command, CloseLink):
                node.closes.append(command.reason)
                other = self.wires.pop((node.name, command.link_id), None)
                if other is not None:
                    self.wires.pop(other, None)
                    self.queue.append((other[0], "closed", (other[1], "closed by the other end")))
            elif isinstance(command, BindCoordinatorPort):
                if self.config.coordinator_port in self.ports:
                    self._run(node, peer.coordinator_bind_failed(self.clock(node)))
                else:
                    self.ports[self.config.coordinator_port] = node.name
                    self._run(node, peer.coordinator_bound(self.clock(node)))
            elif isinstance(command, ReleaseCoordinatorPort):
                if self.ports.get(self.config.coordinator_port) == node.name:
                    del self.ports[self.config.coordinator_port]
            elif isinstance(command, ReadPeerRegistry):
                self._run(node, peer.peers_discovered(list(self.registry.values()), self.clock(node)))
            elif isinstance(command, Deliver):
                node.delivered.extend(command.changes)
            elif isinstance(command, Notice):
                node.notices.append(command.text)
            else:
                raise AssertionError(command)

    def _dial(self, node: Node, command: Dial) -> None:
        owner = self.ports.get(command.port)
        if owner is None or not self.nodes[owner].alive:
            self._run(node, node.peer.dial_failed(command.link_id, self.clock(node), "connection refused"))
            return
        ephemeral = self._next_port
        self._next_port += 1
        dialer_addr = f"127.0.0.1:{ephemeral}"
        listener_addr = f"127.0.0.1:{command.port}"
        # The kernel completes the connection even if the listener is stopped; it accepts when it runs.
        self.wires[(node.name, command.link_id)] = (owner, -1)
        self.queue.append((owner, "accepted", (node.name, command.link_id, dialer_addr, listener_addr)))
        self._run(
            node,
            node.peer.link_opened(command.link_id, self.clock(node), local_addr=dialer_addr, remote_addr=listener_addr),
        )
