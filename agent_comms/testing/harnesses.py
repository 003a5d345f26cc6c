"""Find the real harness command-line programs (``claude``, ``codex``, ``opencode``, ``pi``) for a bridge's tests.

The project's test session installs them from npm into ``tests/harnesses/node_modules`` (see the ``package.json``
there) and names that ``.bin`` directory in ``AGENT_COMMS_HARNESS_BIN``; a bridge author can point the variable at
any directory holding the programs. When ``AGENT_COMMS_REQUIRE_HARNESSES=1`` (set by the test session) a missing
program fails the test instead of skipping it, so CI never passes by skipping.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path

__all__ = ["harness_bin_dir", "harness_cli", "node_modules_dir"]

_REPO_BIN = Path(__file__).resolve().parents[2] / "tests" / "harnesses" / "node_modules" / ".bin"


def harness_bin_dir() -> Path:
    """The directory holding the harness programs: ``$AGENT_COMMS_HARNESS_BIN``, else the checkout's npm install."""
    configured = os.environ.get("AGENT_COMMS_HARNESS_BIN")
    return Path(configured) if configured else _REPO_BIN


def node_modules_dir() -> Path:
    """The ``node_modules`` directory next to :func:`harness_bin_dir` (for ``NODE_PATH`` and the TypeScript SDK)."""
    return harness_bin_dir().parent


def harness_cli(name: str) -> Path:
    """The path of harness program ``name``; skips the calling test (or fails it, if required) when absent."""
    import pytest

    candidate = harness_bin_dir() / name
    if candidate.exists():
        return candidate
    found = shutil.which(name)
    if found is None or os.environ.get("AGENT_COMMS_HARNESS_BIN"):
        message = f"{name!r} not found in {harness_bin_dir()} (run `npm install` in tests/harnesses)"
        if os.environ.get("AGENT_COMMS_REQUIRE_HARNESSES") == "1":
            pytest.fail(message, pytrace=False)
        pytest.skip(message)
    return Path(found)
