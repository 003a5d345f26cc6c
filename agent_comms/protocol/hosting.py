"""The agents one peer hosts: their claims, refutations, and the offline verdicts a peer gives (rule 6 of
:mod:`~.peer`).

A peer claims an agent it starts hosting with an incarnation above every claim known for it, writes new versions of
that claim as the agent changes, and releases it (offline) when it stops hosting it. When the mesh says a hosted
agent is offline, or hands it to an older claim, the peer refutes by claiming it again. For agents it does not host
it gives verdicts: those of a peer whose data link dropped without a goodbye are suspected offline, as are those
whose processes the runtime found gone.

:class:`Hosting` decides what to write; the :class:`~.peer.Peer` makes each operation (``submit``). The verdicts are
generators, read one operation at a time, so each decision sees the state the operations before it made.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from typing import Any

import attrs
import msgspec

from .changes import AgentChanged
from .errors import LocalProtocolError
from .hlc import hlc_wall_ms
from .ops import AgentSuspect, AgentUpsert, Body
from .state import MeshState

__all__ = ["Hosting"]


@attrs.define
class Hosting:
    """The agents hosted by the peer ``peer_id``, and the rules for what it writes about agents."""

    peer_id: str
    #: agent id -> the record we last wrote for each agent we host
    hosted: dict[str, AgentUpsert] = attrs.field(factory=dict)

    def claim(self, record: AgentUpsert, tick: int, state: MeshState) -> AgentUpsert:
        """Start hosting an agent (or claim it again): an incarnation above ``tick`` (the hybrid clock, ticked) and
        above every claim known for it."""
        incarnation = tick
        entry = state.agents.get(record.agent_id)
        if entry is not None and entry.claims:
            incarnation = max(incarnation, max(entry.claims)[0] + 1)
        claimed = msgspec.structs.replace(record, peer_id=self.peer_id, incarnation=incarnation, version=0, online=True)
        self.hosted[record.agent_id] = claimed
        return claimed

    def update(self, agent_id: str, **changes: Any) -> AgentUpsert:
        """A new version of a hosted agent's claim, with ``changes``."""
        current = self.hosted.get(agent_id)
        if current is None:
            raise LocalProtocolError(f"agent {agent_id} is not hosted by this peer")
        updated = msgspec.structs.replace(current, version=current.version + 1, **changes)
        self.hosted[agent_id] = updated
        return updated

    def release(self, agent_id: str) -> AgentUpsert:
        """Stop hosting an agent: the last version of its claim, offline."""
        released = self.update(agent_id, online=False)
        del self.hosted[agent_id]
        return released

    def refutation(self, change: AgentChanged) -> AgentUpsert | None:
        """Rule 6: the record to claim again when a hosted agent was marked offline (or claimed by an older, dead
        host); ``None`` when there is nothing to refute."""
        hosted = self.hosted.get(change.agent_id)
        if hosted is None or change.online:
            # Online under our claim: nothing to do. Online under another live host's claim: the layer above
            # decides (a second bridge).
            return None
        return hosted

    def stale(self, state: MeshState, horizon_ms: int) -> list[str]:
        """The hosted agents whose record was stamped before ``horizon_ms`` (re-stamped, so a live agent never
        nears the forgetting horizon)."""
        stale = []
        for agent_id in sorted(self.hosted):
            entry = state.agents.get(agent_id)
            stamp = 0 if entry is None or entry.record is None else hlc_wall_ms(entry.record.hlc)
            if stamp < horizon_ms:
                stale.append(agent_id)
        return stale

    def releases(self) -> Iterator[AgentUpsert]:
        """Release every hosted agent (the peer leaves)."""
        for agent_id in sorted(self.hosted):
            yield self.release(agent_id)

    @staticmethod
    def suspects_of(state: MeshState, peer_id: str) -> Iterator[AgentSuspect]:
        """Rule 6: the online agents hosted by ``peer_id``, whose data link dropped without a goodbye, are offline."""
        for agent_id, entry in sorted(state.agents.items()):
            if entry.record is None or not entry.online:
                continue
            body = entry.body
            if body.peer_id == peer_id:
                yield AgentSuspect(agent_id, body.incarnation, body.peer_id)

    def exited(self, state: MeshState, agent_ids: Iterable[str]) -> Iterator[Body]:
        """The runtime's process probe found these agents' processes gone: hosted ones are released, others are
        declared offline for the whole mesh."""
        for agent_id in agent_ids:
            if agent_id in self.hosted:
                yield self.release(agent_id)
                continue
            entry = state.agents.get(agent_id)
            if entry is not None and entry.record is not None and entry.online:
                body = entry.body
                yield AgentSuspect(agent_id, body.incarnation, body.peer_id)
