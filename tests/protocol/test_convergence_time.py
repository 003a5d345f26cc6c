"""The mesh stays one under the clocks of a workstation: a Hypothesis state machine over real peer state machines.

Peers (``peernet.PeerNet``: the real :class:`~agent_comms.protocol.peer.Peer`, frames through the real framing code)
start at any time, each with a wall clock that may differ from the machine's; rules step one peer's wall clock
forward or back (NTP, a user setting the time: up to days), suspend one process (its monotonic clock stands still
while the others run) or the whole machine (every monotonic clock stands still while the wall clock moves on),
and send direct messages between the agents. Invariants: no link is ever closed for clock reasons, and after the
network settles every live peer is linked to every other, the replicas are equal and every message sent is held
everywhere.

The forgetting horizon is kept beyond the steps made here: forgetting is the subject of its own tests.
"""

from __future__ import annotations

from hypothesis import event, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, initialize, invariant, precondition, rule
from peernet import PeerNet

from agent_comms.protocol.ops import AgentUpsert, DirectMessage
from agent_comms.protocol.peer import PeerConfig

START = 1_796_000_000.0
MINUTE = 60.0
DAY = 24 * 3600.0
MAX_PEERS = 5
#: wall-clock steps of one process, either way
STEPS = [-2 * DAY, -DAY, -3600.0, -10 * MINUTE, -5.0, 5.0, 10 * MINUTE, 3600.0, DAY, 2 * DAY]
CONFIG = PeerConfig(coordinator_port=40000, offline_retention=30 * DAY)

peer_index = st.integers(0, MAX_PEERS - 1)


class ClockMachine(RuleBasedStateMachine):
    """A mesh of 2-5 peers under wall-clock steps and suspends."""

    net: PeerNet

    def __init__(self) -> None:
        super().__init__()
        self.names: list[str] = []
        self.sent: set[str] = set()
        self.serial = 0
        #: wall-clock steps, suspends and starts so far
        self.clock_events = 0

    @initialize(n=st.integers(2, 3), steps=st.lists(st.sampled_from([0.0, *STEPS]), min_size=3, max_size=3))
    def start(self, n: int, steps: list[float]) -> None:
        self.net = PeerNet(config=CONFIG, now=START)
        for index in range(n):
            self.spawn(steps[index])

    # ------------------------------------------------------------------ helpers

    def name(self, index: int) -> str:
        return self.names[index % len(self.names)]

    def agent(self, name: str) -> str:
        return f"agent-{name}"

    # ------------------------------------------------------------------ rules

    @precondition(lambda self: len(self.names) < MAX_PEERS)
    @rule(step=st.sampled_from([0.0, *STEPS]))
    def spawn(self, step: float) -> None:
        """A peer starts now, its wall clock ``step`` from the machine's (0: the same)."""
        name = f"p{len(self.names)}"
        self.clock_events += 1
        self.names.append(name)
        node = self.net.spawn(name, wall_step=step)
        agent = self.agent(name)
        record = AgentUpsert(agent, "", 0, 0, agent, "test", "/w", 1, 1.0)
        self.net._run(node, node.peer.host_agent(record, self.net.clock(node)))
        self.net.settle()

    @rule(index=peer_index, step=st.sampled_from(STEPS))
    def step_wall(self, index: int, step: float) -> None:
        self.net.step_wall(self.name(index), step)
        self.clock_events += 1
        event("wall clock stepped")

    @rule(index=peer_index, seconds=st.sampled_from([2.0, MINUTE, 10 * MINUTE]))
    def suspend_one(self, index: int, seconds: float) -> None:
        """One process suspended: its monotonic clock stands still, the others' run (their links to it time out)."""
        self.net.suspend([self.name(index)], seconds)
        self.clock_events += 1
        event("one process suspended")

    @rule(seconds=st.sampled_from([10 * MINUTE, 8 * 3600.0, 2 * DAY]))
    def suspend_machine(self, seconds: float) -> None:
        """The machine suspended: every monotonic clock stands still while the wall clock moves on."""
        self.net.suspend([n.name for n in self.net.live()], seconds)
        self.clock_events += 1
        event("machine suspended")

    @rule(sender=peer_index, recipient=peer_index)
    def dm(self, sender: int, recipient: int) -> None:
        source, target = self.name(sender), self.name(recipient)
        node = self.net.nodes[source]
        me = self.agent(source)
        self.serial += 1
        text = f"{self.serial}: {source} -> {target}"
        body = DirectMessage(me, node.peer.hosted[me].incarnation, self.agent(target), text)
        self.net._run(node, node.peer.submit(body, self.net.clock(node)))
        self.net.settle()
        self.sent.add(text)

    @rule(seconds=st.sampled_from([0.01, 0.3, 2.0]))
    def wait(self, seconds: float) -> None:
        self.net.advance(seconds)

    @rule()
    def settle(self) -> None:
        """Enough time for links to be repaired and anti-entropy to run everywhere: the mesh is one again."""
        self.net.advance(CONFIG.anti_entropy_interval * 3)
        self.no_link_is_refused_for_clock_reasons()
        nodes = self.net.live()
        assert self.net.fully_linked(), {n.name: sorted(n.peer.data_links) for n in nodes}
        assert len({n.peer.replica.state.digest() for n in nodes}) == 1, "the replicas differ after settling"
        for node in nodes:
            held = {
                op.body.content
                for op in node.peer.replica.state.messages.values()
                if isinstance(op.body, DirectMessage)
            }
            assert self.sent <= held, f"{node.name} lacks {sorted(self.sent - held)}"
        notes = sum(1 for n in nodes for text in n.notices if text.startswith("clock"))
        event(f"clock notices: {'some' if notes else 'none'}")

    # ------------------------------------------------------------------ invariants

    @invariant()
    def no_link_is_refused_for_clock_reasons(self) -> None:
        for node in self.net.nodes.values():
            refused = [reason for reason in node.closes if reason.startswith("clock")]
            assert not refused, f"{node.name} refused a link: {refused[0]}"

    @invariant()
    def a_clock_notice_is_said_once_per_clock_event(self) -> None:
        """A notice is said once per episode of a clock behind: never more often than clocks were stepped,
        suspended or started, however many operations and links came after."""
        for node in self.net.nodes.values():
            notes = [text for text in node.notices if text.startswith("clock")]
            assert len(notes) <= self.clock_events, (node.name, node.notices)

    def teardown(self) -> None:
        if getattr(self, "net", None) is not None and self.names:
            self.settle()


#: a step here costs several simulated seconds of a whole mesh: a fifth of the profile's examples (20 by default,
#: 100 in CI), 30 steps each
_PROFILE = settings()  # the profile loaded by conftest
TestClockConvergence = ClockMachine.TestCase
TestClockConvergence.settings = settings(
    _PROFILE,
    max_examples=max(20, _PROFILE.max_examples // 5),
    stateful_step_count=min(_PROFILE.stateful_step_count, 30),
)
