"""Soak: steady traffic among real bridge processes for a long time, with their resident memory sampled.

Run as a program (``python tests/endurance/soak.py --duration 600``; ``nox -s soak``) or call :func:`run_soak`.
``peers`` ``agent-comms bridge jsonl`` processes (one agent each) post to a shared room and DM each other at a
fixed total rate; every ``sample_interval`` seconds the driver reads each process's resident set size (VmRSS from
``/proc``). Memory must be flat once the bounded structures are full: the histories (1000 messages per
conversation) fill during the first part of the run, so the figure that matters is the slope of a least-squares
line through the samples of the *second half*, in KiB per minute, per process; and the peak.

The default traffic (each agent DMs only the next one, ``--all-pairs`` for every other; 70 % DMs; each agent
sends as fast as its bridge answers, every 0.05 s at most) fills every bounded history within the first two
minutes. The last structure to fill is each agent's set of event ids remembered for de-duplication (20,000),
after some six minutes at that rate; so the slope is also reported over the *last third*, and that is what
``--max-slope`` (KiB/min, default 128) checks. Figures are printed and written as JSON (``--json``); the program
fails (exit 1) if a process died, nothing was delivered, or the last-third slope of a process exceeds it.
"""

from __future__ import annotations

import argparse
import json
import random
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import trio
from chaos import Chaos, ChaosConfig, print_report


def rss_kib(pid: int) -> int | None:
    """Resident set size of a process in KiB (``None`` if it is gone)."""
    try:
        with open(f"/proc/{pid}/status", encoding="ascii") as status:
            for line in status:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1])
    except OSError:
        return None
    return None


def slope_per_minute(samples: list[tuple[float, int]]) -> float:
    """Least-squares slope of (seconds, KiB) samples, in KiB per minute (0 with fewer than two samples)."""
    if len(samples) < 2:
        return 0.0
    n = len(samples)
    mean_t = sum(t for t, _ in samples) / n
    mean_y = sum(y for _, y in samples) / n
    var = sum((t - mean_t) ** 2 for t, _ in samples)
    if var == 0:
        return 0.0
    cov = sum((t - mean_t) * (y - mean_y) for t, y in samples)
    return cov / var * 60.0


class Soak(Chaos):
    """The chaos driver's processes and traffic, without the adversary, plus a memory sampler."""

    def __init__(self, config: ChaosConfig, workdir: Path, sample_interval: float, *, ring: bool = False) -> None:
        super().__init__(config, workdir)
        self.sample_interval = sample_interval
        self.ring = ring
        #: slot name -> [(seconds since traffic began, RSS KiB)]
        self.samples: dict[str, list[tuple[float, int]]] = {s.name: [] for s in self.slots}
        self.received = 0

    def dm_targets(self, slot: Any) -> list[str]:
        """With ``ring``, each agent DMs only the next one, so there are as many DM conversations as agents and
        every bounded history fills early in the run (what a flat second half needs)."""
        if not self.ring:
            return super().dm_targets(slot)
        index = self.slots.index(slot)
        target = self.slots[(index + 1) % len(self.slots)].agent_id
        return [target] if target else []

    async def sample(self, began: float) -> None:
        while True:
            now = time.monotonic() - began
            for slot in self.slots:
                inc = slot.current
                if inc is not None:
                    value = rss_kib(inc.process.pid)
                    if value is not None:
                        self.samples[slot.name].append((now, value))
            await trio.sleep(self.sample_interval)

    async def run(self) -> dict[str, Any]:
        started = time.monotonic()
        try:
            async with trio.open_nursery() as nursery:
                self._nursery = nursery
                await self.start(self.slots[0])
                async with trio.open_nursery() as starting:
                    for slot in self.slots[1:]:
                        starting.start_soon(self.start, slot)
                await self.call(self.slots[0], action="create_room", room="chaos")
                for slot in self.slots:
                    await self.join(slot)
                began = time.monotonic()
                with trio.move_on_after(self.config.duration):
                    async with trio.open_nursery() as traffic:
                        traffic.start_soon(self.sample, began)
                        for slot in self.slots:
                            traffic.start_soon(self.talk, slot, random.Random(self.rng.getrandbits(64)))
                soaked = time.monotonic() - began
                died = [s.name for s in self.slots if not s.alive()]
                nursery.cancel_scope.cancel()
        finally:
            for slot in self.slots:
                inc = slot.current
                if inc is not None and inc.process.returncode is None:
                    inc.process.kill()
                    with trio.move_on_after(5):
                        await inc.process.wait()
        per_process = {}
        for name, samples in self.samples.items():
            second_half = [(t, v) for t, v in samples if t >= soaked / 2]
            last_third = [(t, v) for t, v in samples if t >= soaked * 2 / 3]
            per_process[name] = {
                "slope_last_third_kib_per_min": round(slope_per_minute(last_third), 1),
                "series": [(round(t, 1), v) for t, v in samples],
                "start_kib": samples[0][1] if samples else None,
                "peak_kib": max((v for _, v in samples), default=None),
                "end_kib": samples[-1][1] if samples else None,
                "slope_second_half_kib_per_min": round(slope_per_minute(second_half), 1),
                "samples": len(samples),
            }
        shown = sum(len(inc.messages) for s in self.slots for inc in s.incarnations)
        return {
            "seed": self.config.seed,
            "peers": self.config.peers,
            "duration_s": round(soaked, 1),
            "messages_sent": len(self.ledger.sent),
            "send_rate_per_s": round(len(self.ledger.sent) / soaked, 1) if soaked else 0.0,
            "messages_shown": shown,
            "send_errors": dict(self.ledger.send_errors),
            "died": died,
            "peak_rss_kib": max((p["peak_kib"] or 0 for p in per_process.values()), default=0),
            "max_slope_kib_per_min": max(
                (p["slope_second_half_kib_per_min"] for p in per_process.values()), default=0.0
            ),
            "max_slope_last_third_kib_per_min": max(
                (p["slope_last_third_kib_per_min"] for p in per_process.values()), default=0.0
            ),
            "per_process": per_process,
            "timeline_mean_rss_kib": self.timeline(),
            "total_s": round(time.monotonic() - started, 1),
        }

    def timeline(self) -> list[tuple[int, int]]:
        """Mean RSS over the processes, per minute of the run (minute, KiB)."""
        buckets: dict[int, list[int]] = {}
        for samples in self.samples.values():
            for t, value in samples:
                buckets.setdefault(int(t // 60), []).append(value)
        return [(minute, sum(v) // len(v)) for minute, v in sorted(buckets.items())]


async def run_soak(
    *,
    peers: int = 5,
    duration: float = 600.0,
    seed: int = 1,
    send_interval: float = 0.2,
    sample_interval: float = 5.0,
    ring: bool = False,
    dm_share: float = 0.5,
) -> dict[str, Any]:
    """Run a soak; return its figures (see the module docstring)."""
    config = ChaosConfig(peers=peers, duration=duration, seed=seed, send_interval=send_interval)
    with tempfile.TemporaryDirectory(prefix="agent-comms-soak-") as tmp:
        soak = Soak(config, Path(tmp), sample_interval, ring=ring)
        soak.dm_share = dm_share
        report = await soak.run()
        report.update(ring=ring, dm_share=dm_share, send_interval=send_interval)
        return report


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--duration", type=float, default=600.0, help="seconds of traffic (default 600)")
    parser.add_argument("--peers", type=int, default=3, help="bridge processes (default 3)")
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument(
        "--send-interval", type=float, default=0.05, help="mean seconds between two messages of one agent"
    )
    parser.add_argument("--sample-interval", type=float, default=5.0, help="seconds between memory samples")
    parser.add_argument("--all-pairs", action="store_true", help="every agent DMs every other (more conversations)")
    parser.add_argument("--dm-share", type=float, default=0.7, help="share of messages that are DMs (default 0.7)")
    parser.add_argument("--max-slope", type=float, default=128.0, help="KiB/min allowed over the last third")
    parser.add_argument("--json", default="bench-results/soak.json", help="where to write the figures")
    args = parser.parse_args(argv)
    print(f"soak: {args.peers} peers, {args.duration:g} s, seed {args.seed}", flush=True)
    report = trio.run(
        lambda: run_soak(
            peers=args.peers,
            duration=args.duration,
            seed=args.seed,
            send_interval=args.send_interval,
            sample_interval=args.sample_interval,
            ring=not args.all_pairs,
            dm_share=args.dm_share,
        )
    )
    print_report({k: v for k, v in report.items() if k != "per_process"})
    for name, figures in report["per_process"].items():
        print(f"{name:>26}: { ({k: v for k, v in figures.items() if k != 'series'}) }")
    out = Path(args.json)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(report, indent=2))
    print(f"written to {out}")
    ok = (
        not report["died"]
        and report["messages_shown"] > 0
        and report["max_slope_last_third_kib_per_min"] <= args.max_slope
    )
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
