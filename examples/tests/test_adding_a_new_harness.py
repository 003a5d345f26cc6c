"""The runnable examples run and print what they promise."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

EXAMPLES = Path(__file__).resolve().parent.parent


def test_adding_a_new_harness_example_shows_the_reply() -> None:
    result = subprocess.run(
        [sys.executable, str(EXAMPLES / "adding_a_new_harness.py")],
        capture_output=True,
        text=True,
        encoding="utf-8",
        env={**os.environ, "PYTHONIOENCODING": "utf-8"},
        timeout=60,
        check=False,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    lines = result.stdout.splitlines()
    assert lines[0].startswith("registered my-agent (my-harness-")
    assert lines[1].startswith("Dm -> Sent to reviewer (other-harness-")
    assert any(
        line.startswith("reviewer's bridge shows its model: [DM from my-agent (")
        and "] Batch 3 done; can you review?  [id " in line
        for line in lines
    ), lines
    assert lines[-1].startswith("  my-harness shows its model: 📬 [DM from reviewer (other-harness-")
    assert "] On it.  [id " in lines[-1]
