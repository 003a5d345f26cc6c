"""The short chaos run: six real bridge processes, ten seconds of kills, restarts, stops and resumes.

The full run (ten peers, sixty seconds) is ``nox -s chaos``; see ``chaos.py`` beside this file for what is checked.
"""

from __future__ import annotations

import os
from pathlib import Path

from chaos import ChaosConfig, print_report, run_chaos


async def test_short_chaos_keeps_one_mesh_and_loses_nothing(tmp_path: Path) -> None:
    seed = int(os.environ.get("AGENT_COMMS_CHAOS_SEED", "20261125"))
    report = await run_chaos(ChaosConfig(peers=6, duration=10.0, seed=seed, workdir=tmp_path))
    print_report(report)
    assert report["kills"] + report["stops"] >= 3, "the adversary did too little to test anything"
    assert report["messages_sent"] >= 20
    assert report["checked_deliveries"] > 0
    assert report["dead_at_end"], "at least one peer is dead at the end, for the liveness check"
    assert report["start_failures"] == [], f"seed {seed}: bridges that never got ready"
    assert report["mesh_problems"] == [], f"seed {seed}: {report['mesh_problems']}"
    assert report["lost"] == 0, f"seed {seed}: {report['lost_examples']}"
    assert report["missing_in_history"] == 0, f"seed {seed}: {report['missing_examples']}"
    assert report["duplicates"] == 0, f"seed {seed}"
    assert report["redelivered_after_crash"] <= report["kills"] * 5, f"seed {seed}"
