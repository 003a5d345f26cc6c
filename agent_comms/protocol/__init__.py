"""The sans-IO protocol core of agent-comms.

Everything here is pure logic: wire types and framing (:mod:`.wire`, :mod:`.framing`), the replicated mesh state
and its merge rules (:mod:`.ops`, :mod:`.state`, :mod:`.rooms`, :mod:`.history`), the anti-entropy bookkeeping of
one replica (:mod:`.replica`), link authentication (:mod:`.auth`, :mod:`.link`) and the peer state machine
(:mod:`.peer`). No module imports trio or socket, reads a clock, or uses the global random generator: time and
randomness are passed in, bytes and decisions are handed back. The Trio runtime in :mod:`agent_comms.mesh`
drives it.
"""
