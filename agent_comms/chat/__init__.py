"""``agent-comms chat``: a person in the mesh, as an agent of the harness ``human``.

:mod:`agent_comms.chat.session` holds the logic without a terminal (what is shown for each event), with the slash
commands in :mod:`agent_comms.chat.commands` and the lines to show in :mod:`agent_comms.chat.lines`;
:mod:`agent_comms.chat.client` runs it under Trio with a terminal frontend (prompt_toolkit) or a line frontend
(scripts and pipes).
"""
