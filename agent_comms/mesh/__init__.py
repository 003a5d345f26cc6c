"""The Trio runtime that drives :mod:`agent_comms.protocol`.

The protocol core is pure: it takes inputs (links opened, frames received, timers fired) and returns commands
(send these frames, dial that peer, bind this port). This package owns the I/O around it: listeners, links,
reader and writer tasks, clocks and timers, each living in a nursery whose owner bounds its lifetime, with a
single task owning the state machine.
"""
