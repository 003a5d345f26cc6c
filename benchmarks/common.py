"""Pieces both benchmarks use: free ports, the bare Trio + msgspec echo baseline, and the report format."""

from __future__ import annotations

import json
import os
import socket
import statistics
from pathlib import Path

import msgspec
import trio
import trio.abc

ROOT = Path(__file__).resolve().parent.parent


def free_port() -> int:
    """A port nobody listens on right now."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
    return port


class Echo(msgspec.Struct, array_like=True):
    """The baseline's message."""

    seq: int
    body: str


async def read_frame(stream: trio.abc.ReceiveStream, buf: bytearray) -> bytes:
    """One length-prefixed frame (the baseline's framing, written plainly)."""
    while True:
        if len(buf) >= 4:
            size = int.from_bytes(buf[:4], "big")
            if len(buf) >= 4 + size:
                body = bytes(buf[4 : 4 + size])
                del buf[: 4 + size]
                return body
        data = await stream.receive_some(65536)
        if not data:
            raise EOFError
        buf += data


def ms(values: list[float]) -> dict[str, float]:
    """Median, 90th percentile and minimum in milliseconds."""
    ordered = sorted(values)
    return {
        "median_ms": statistics.median(values) * 1000,
        "p90_ms": ordered[max(0, int(len(ordered) * 0.9) - 1)] * 1000,
        "min_ms": ordered[0] * 1000,
        "n": len(values),
    }


def write_results(path: str, results: dict[str, object]) -> None:
    """Write a benchmark's results as JSON (creating the folder) and say where."""
    out = Path(path)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(results, indent=2))
    print(f"written to {out}")


class StepCounter(trio.abc.Instrument):
    """Counts task steps and scheduler passes (each pass of Trio's run loop waits for I/O once) while installed."""

    def __init__(self) -> None:
        self.steps = 0
        self.passes = 0

    def before_task_step(self, task: trio.lowlevel.Task) -> None:
        self.steps += 1

    def before_io_wait(self, timeout: float) -> None:
        self.passes += 1


def process_cpu(pid: int) -> float:
    """CPU seconds (user + system) used so far by process ``pid`` (Linux ``/proc``)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
