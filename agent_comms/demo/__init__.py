"""``agent-comms demo``: a private mesh of real agent processes, shown step by step, with measured figures.

:func:`run_demo` runs the script of :mod:`agent_comms.demo.scenario` with the agents of
:mod:`agent_comms.demo.bridges` and tells it through a narrator of :mod:`agent_comms.demo.show`.
"""

from __future__ import annotations

from .report import DemoReport
from .scenario import StepFailed, run_demo
from .show import narrator_for

__all__ = ["DemoReport", "StepFailed", "narrator_for", "run_demo"]
