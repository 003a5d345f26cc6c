"""``agent-comms hub serve``: ``nats-server`` in the foreground with the configuration the hub's files hold.

Starts the pinned ``nats-server`` (:func:`~.hub_config.nats_server_binary`), waits until it answers, creates the
operations stream and the presence bucket as the hub's admin (again after a wipe: they are recreated whenever the
hub starts), prints ``hub ready <url>`` and runs until SIGINT or SIGTERM, which stop the server gracefully.
SIGHUP makes the server reload its configuration (``hub remove-machine`` sends it to the server directly).
"""

from __future__ import annotations

import signal
import sys

import trio

from .hub_client import aio, connect, ensure_stream_and_bucket
from .hub_config import HubFiles, nats_server_binary

__all__ = ["serve"]

#: How long the server may take to answer after it was started (seconds).
_START_TIMEOUT = 30.0


async def _prepare(files: HubFiles, url: str) -> None:
    settings = files.settings()
    cert = files.cert_path.read_text(encoding="utf-8")
    with trio.fail_after(_START_TIMEOUT):
        while True:
            try:
                nc = await connect(url, settings["admin_seed"], cert, name="agent-comms hub serve")
            except Exception:
                await trio.sleep(0.05)
                continue
            break
    try:
        await ensure_stream_and_bucket(nc)
    finally:
        await aio(nc.close)


async def serve(files: HubFiles) -> int:
    """Run the hub until signalled; the server's exit status (0 after a graceful stop)."""
    binary = nats_server_binary()
    files.write_config()
    settings = files.settings()
    files.store_dir.mkdir(parents=True, exist_ok=True)
    local_url = (
        f"tls://127.0.0.1:{settings['port']}" if settings["host"] in ("0.0.0.0", "127.0.0.1") else settings["url"]
    )
    with trio.open_signal_receiver(signal.SIGINT, signal.SIGTERM, signal.SIGHUP) as signals:
        # Not tied to this process by PR_SET_PDEATHSIG: trio starts processes from a worker thread, and the signal
        # would come when that thread ends. A SIGKILLed `hub serve` leaves the server running (its pid file says
        # which); every other end stops it.
        process = await trio.lowlevel.open_process([binary, "-c", str(files.config_path)])
        try:
            async with trio.open_nursery() as nursery:

                async def forward() -> None:
                    async for signum in signals:
                        if signum == signal.SIGHUP:
                            process.send_signal(signal.SIGHUP)
                            continue
                        process.send_signal(signal.SIGTERM)
                        return

                async def watch() -> None:
                    await process.wait()
                    nursery.cancel_scope.cancel()

                nursery.start_soon(watch)
                nursery.start_soon(forward)
                await _prepare(files, local_url)
                print(f"hub ready {settings['url']}", flush=True)
        finally:
            if process.returncode is None:
                process.send_signal(signal.SIGTERM)
                with trio.move_on_after(10):
                    await process.wait()
                if process.returncode is None:
                    process.kill()
                    await process.wait()
            files.pid_path.unlink(missing_ok=True)
    code = process.returncode or 0
    print(f"hub stopped (nats-server exit status {code})", file=sys.stderr, flush=True)
    return 0 if code in (0, -signal.SIGTERM) else code
