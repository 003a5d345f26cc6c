"""Bridges built into ``agent-comms`` itself, registered as plugins like any other (see :mod:`agent_comms.plugins`).

* :mod:`agent_comms.bridges.jsonl`: line-delimited JSON over stdin/stdout, for harnesses that can spawn a process
  and relay tool calls and events through it (``agent-comms bridge jsonl``).

The bridges of particular harnesses (Claude Code, Codex, OpenCode, pi, any MCP client) are distributions of their
own (``pip install agent-comms-<harness>``), found through the entry-point group ``agent_comms``.
"""
