"""Shared test configuration: Hypothesis profiles.

``HYPOTHESIS_PROFILE`` selects one: ``dev`` (default, quick), ``ci`` (what CI runs: at least 500 examples of the
convergence machine, 50 steps each) and ``long`` (ten times CI, for ``nox -s hypothesis_long``).
"""

from __future__ import annotations

import os

from hypothesis import HealthCheck, settings

_COMMON = {"deadline": None, "suppress_health_check": [HealthCheck.too_slow, HealthCheck.data_too_large]}

settings.register_profile("dev", max_examples=100, stateful_step_count=50, **_COMMON)  # type: ignore[arg-type]
settings.register_profile("ci", max_examples=500, stateful_step_count=50, print_blob=True, **_COMMON)  # type: ignore[arg-type]
settings.register_profile("long", max_examples=5000, stateful_step_count=80, print_blob=True, **_COMMON)  # type: ignore[arg-type]
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "dev"))
