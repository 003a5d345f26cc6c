"""Packaging-level guarantees that no single module can check for itself.

Each check runs in a fresh interpreter, because the test process has long since imported Trio.
"""

import subprocess
import sys
import time

import pytest


def _run_python(code: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-c", code],
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )


def test_protocol_core_does_not_import_trio() -> None:
    # The sans-IO core must stay usable (and testable) without any event loop.
    result = _run_python(
        "import sys, agent_comms.protocol; print(sorted(m for m in sys.modules if m.split('.')[0] == 'trio'))"
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "[]"


@pytest.mark.parametrize("module", ["agent_comms", "agent_comms.cli"])
def test_top_level_import_does_not_import_trio(module: str) -> None:
    result = _run_python(f"import sys, {module}; print('trio' in sys.modules)")
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "False"


def test_import_agent_comms_is_quick() -> None:
    # A smoke check with a generous bound, not a benchmark (the benchmark tracks the real 150 ms target).
    start = time.perf_counter()
    result = _run_python("import agent_comms")
    elapsed = time.perf_counter() - start
    assert result.returncode == 0, result.stderr
    assert elapsed < 1.0, f"`import agent_comms` in a fresh interpreter took {elapsed:.2f} s"
