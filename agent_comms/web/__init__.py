"""``agent-comms web``: a live view of the mesh in the browser, for the person (an agent of the harness ``human``).

:mod:`~agent_comms.web.view` turns the mesh's state into what the page shows (by the rules of
:mod:`agent_comms.person`, the ones ``chat`` follows); :mod:`~agent_comms.web.hub` keeps it current and takes the
person's actions; :mod:`~agent_comms.web.guard` refuses every request that is not the page's own;
:mod:`~agent_comms.web.app` is the Starlette application; :mod:`~agent_comms.web.serve` runs it with Hypercorn
inside the command's ``trio.run``. Needs the ``web`` extra (``pip install 'agent-comms[web]'``).
"""
