"""Security tests: the fuzz counts are printed at the end of the session (and written to
``$AGENT_COMMS_FUZZ_REPORT`` as JSON when that is set, for ``nox -s fuzz``)."""

from __future__ import annotations

import json
import os
import time
from typing import Any

from hostile import COUNTER

_STARTED = time.perf_counter()


def pytest_terminal_summary(terminalreporter: Any) -> None:
    if not COUNTER.inputs:
        return
    total = sum(COUNTER.inputs.values())
    seconds = time.perf_counter() - _STARTED
    parts = ", ".join(f"{name} {count}" for name, count in sorted(COUNTER.inputs.items()))
    terminalreporter.write_line(f"hostile inputs fed: {total} ({parts}) in {seconds:.1f} s")
    report = os.environ.get("AGENT_COMMS_FUZZ_REPORT")
    if report:
        with open(report, "w", encoding="utf-8") as out:
            json.dump({"inputs": COUNTER.inputs, "total": total, "seconds": round(seconds, 1)}, out, indent=2)
