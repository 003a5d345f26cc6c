"""Bridge start benchmark: from launching the MCP bridge to its answer to ``initialize``, against a bare Trio start.

What a harness waits for when it starts an MCP server (Codex gives up after 10 s by default): the time from
``exec`` of ``agent-comms-mcp`` (as ``python -m agent_comms_mcp``) to the first line it writes, the answer to the
``initialize`` request sent at once. The bridge joins the mesh before it reads stdin, so this includes the join (the
bridge is the first peer of a fresh mesh on a free port; its home, and so its identity, persists across rounds as a
harness restarting it would see). The baseline is ``python -c "import trio"`` from launch to exit, in the same rounds.
Also reported: the bridge's resident memory once initialized and idle.

Rounds are interleaved (baseline, bridge, and the bridge from ``--baseline-tree`` if given, in a rotating order), so
a noisy machine moves them alike; the figures are medians and spread over the rounds. ``--hog N`` repeats the run
with N busy-looping processes (default: one per core) to show the start under load.

Run with ``python benchmarks/bench_bridge_start.py [--rounds N] [--hog N] [--baseline-tree DIR]``; ``--baseline-tree``
names another checkout (``git worktree add /tmp/before main``) whose bridge is measured beside this one's, from the
same interpreter (its sources first on ``PYTHONPATH``). Prints a table and writes ``bench-results/bridge_start.json``.
Not a test: nothing fails because a figure is large.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import trio

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import free_port, write_results

INITIALIZE = (
    json.dumps(
        {
            "jsonrpc": "2.0",
            "id": 1,
            "method": "initialize",
            "params": {
                "protocolVersion": "2025-06-18",
                "capabilities": {},
                "clientInfo": {"name": "bench", "version": "0"},
            },
        }
    )
    + "\n"
).encode()
INITIALIZED = b'{"jsonrpc": "2.0", "method": "notifications/initialized"}\n'
#: How long a bridge may take to answer before the round counts as failed.
TIMEOUT = 60.0


async def time_trio_import() -> float:
    """Launch to exit of ``python -c "import trio"``."""
    start = time.perf_counter()
    await trio.run_process([sys.executable, "-c", "import trio"])
    return time.perf_counter() - start


def _rss_kib(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    return 0


async def time_bridge(home: Path, tree: Path | None) -> tuple[float, int]:
    """Launch to the first line written (the ``initialize`` answer), and the idle RSS (KiB) after ``initialized``."""
    env = {**os.environ, "AGENT_COMMS_HOME": str(home), "AGENT_COMMS_PORT": str(free_port())}
    if tree is not None:
        env["PYTHONPATH"] = os.pathsep.join([str(tree / "bridges" / "mcp"), str(tree), env.get("PYTHONPATH", "")])
    start = time.perf_counter()
    process = await trio.lowlevel.open_process(
        [sys.executable, "-m", "agent_comms_mcp", "--name", "bench"],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        env=env,
        cwd=home,
    )
    assert process.stdin is not None
    assert process.stdout is not None
    try:
        with trio.fail_after(TIMEOUT):
            await process.stdin.send_all(INITIALIZE)
            answer = b""
            while b"\n" not in answer:
                chunk = await process.stdout.receive_some(65536)
                if not chunk:
                    raise RuntimeError("the bridge ended before it answered initialize")
                answer += chunk
            elapsed = time.perf_counter() - start
            if b'"result"' not in answer.split(b"\n", 1)[0]:
                raise RuntimeError(f"initialize was not answered with a result: {answer[:300]!r}")
            await process.stdin.send_all(INITIALIZED)
            await trio.sleep(0.3)  # idle: the answer is out, nothing else asked
            rss = _rss_kib(process.pid)
            await process.stdin.aclose()
            await process.wait()
    finally:
        if process.returncode is None:
            process.kill()
            await process.wait()
    return elapsed, rss


def summary(values: list[float]) -> dict[str, float]:
    """Median, quartiles, extremes (ms)."""
    ordered = sorted(values)
    quartiles = statistics.quantiles(ordered, n=4) if len(ordered) > 1 else [ordered[0]] * 3
    return {
        "median_ms": statistics.median(ordered) * 1000,
        "q1_ms": quartiles[0] * 1000,
        "q3_ms": quartiles[2] * 1000,
        "min_ms": ordered[0] * 1000,
        "max_ms": ordered[-1] * 1000,
        "n": len(ordered),
    }


async def run_rounds(rounds: int, trees: dict[str, Path | None], workdir: Path) -> dict[str, Any]:
    """Interleaved rounds of the baseline and each bridge variant."""
    names = ["import trio", *trees]
    times: dict[str, list[float]] = {name: [] for name in names}
    rss: dict[str, list[int]] = {name: [] for name in trees}
    homes = {name: workdir / f"home-{index}" for index, name in enumerate(trees)}
    for home in homes.values():
        home.mkdir(mode=0o700, exist_ok=True)  # the mesh refuses a home other users can read
    for name in trees:  # a first start makes the identity and keys: not what is measured
        await time_bridge(homes[name], trees[name])
    for round_ in range(rounds):
        order = names[round_ % len(names) :] + names[: round_ % len(names)]
        for name in order:
            if name == "import trio":
                times[name].append(await time_trio_import())
            else:
                elapsed, kib = await time_bridge(homes[name], trees[name])
                times[name].append(elapsed)
                rss[name].append(kib)
    result: dict[str, Any] = {name: summary(values) for name, values in times.items()}
    for name in trees:
        result[name]["ratio_to_import_trio"] = result[name]["median_ms"] / result["import trio"]["median_ms"]
        result[name]["idle_rss_mib"] = statistics.median(rss[name]) / 1024
    return result


def print_table(title: str, result: dict[str, Any]) -> None:
    print(f"\n{title}")
    print(f"{'':<28}{'median':>9}{'q1':>9}{'q3':>9}{'min':>9}{'max':>9}{'ratio':>8}{'RSS MiB':>9}")
    for name, row in result.items():
        ratio = f"{row['ratio_to_import_trio']:.1f}x" if "ratio_to_import_trio" in row else ""
        memory = f"{row['idle_rss_mib']:.1f}" if "idle_rss_mib" in row else ""
        print(
            f"{name:<28}{row['median_ms']:>9.0f}{row['q1_ms']:>9.0f}{row['q3_ms']:>9.0f}{row['min_ms']:>9.0f}"
            f"{row['max_ms']:>9.0f}{ratio:>8}{memory:>9}"
        )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=15)
    parser.add_argument("--hog", type=int, default=os.cpu_count() or 1, help="busy processes for the loaded run")
    parser.add_argument("--no-load", action="store_true", help="skip the run under load")
    parser.add_argument("--baseline-tree", type=Path, help="another checkout whose bridge is measured beside this one")
    parser.add_argument("--json", default="bench-results/bridge_start.json")
    parser.add_argument("--quick", action="store_true", help="3 rounds, no run under load")
    args = parser.parse_args()
    if args.quick:
        args.rounds, args.no_load = 3, True
    trees: dict[str, Path | None] = {"bridge (this tree)": None}
    if args.baseline_tree is not None:
        trees[f"bridge ({args.baseline_tree})"] = args.baseline_tree.resolve()
    results: dict[str, Any] = {"rounds": args.rounds, "cores": os.cpu_count()}
    with tempfile.TemporaryDirectory(prefix="bench-bridge-") as workdir:
        results["quiet"] = trio.run(run_rounds, args.rounds, trees, Path(workdir))
        print_table("launch to initialize answered (ms), quiet", results["quiet"])
        if not args.no_load:
            hogs = [subprocess.Popen([sys.executable, "-c", "while True: pass"]) for _ in range(args.hog)]
            try:
                results["loaded"] = trio.run(run_rounds, args.rounds, trees, Path(workdir))
            finally:
                for hog in hogs:
                    hog.kill()
                    hog.wait()
            results["hogs"] = args.hog
            print_table(f"launch to initialize answered (ms), {args.hog} busy processes", results["loaded"])
    write_results(args.json, results)


if __name__ == "__main__":
    main()
