"""``agent-comms chat``: a person in the mesh, as an agent of the harness ``human``.

:mod:`agent_comms.chat.session` holds the logic (commands, what is shown for each event) without a terminal;
:mod:`agent_comms.chat.client` runs it under Trio with a terminal frontend (prompt_toolkit) or a line frontend
(scripts and pipes).
"""
