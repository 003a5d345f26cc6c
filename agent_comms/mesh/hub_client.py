"""Connecting to the hub from Trio: the official ``nats-py`` client (asyncio) through ``trio-asyncio``.

Every coroutine of the client is awaited through :func:`trio_asyncio.aio_as_trio` inside a loop opened with
:func:`trio_asyncio.open_loop`; nothing here uses the client's callbacks, so no asyncio code calls into Trio.
Measured on loopback, a request/reply through this bridge costs about 1 ms, so a Trio-native client was not
written.
"""

from __future__ import annotations

import logging
import ssl
from typing import Any, Final

from .hub_config import OPS_SUBJECT_ROOT, PRESENCE_BUCKET, SERVER_NAME, STREAM

__all__ = [
    "DUPLICATE_WINDOW",
    "PER_SUBJECT_LIMIT",
    "PRESENCE_TTL",
    "client_tls",
    "connect",
    "ensure_stream_and_bucket",
]

logger = logging.getLogger("agent_comms.mesh.hub")


class _QuietSslEof(logging.Filter):
    """asyncio warns at every close of a TLS connection that the NATS client's protocol returned true from
    ``eof_received``; it is harmless, and would otherwise reach the user's terminal at every reconnection."""

    def filter(self, record: logging.LogRecord) -> bool:
        return "eof_received" not in record.getMessage()


logging.getLogger("asyncio").addFilter(_QuietSslEof())

#: Messages kept per subject (one subject per machine and conversation, agent or room): twice the default history
#: limit, the margin an arrival-order limit needs to always hold the newest ``history_limit`` by the total order.
PER_SUBJECT_LIMIT: Final = 2000
#: How long the hub remembers message ids to drop a republished operation (seconds).
DUPLICATE_WINDOW: Final = 120.0
#: A machine's presence key expires this long (seconds) after its gateway last refreshed it.
PRESENCE_TTL: Final = 6.0


def client_tls(cert_pem: str) -> ssl.SSLContext:
    """A TLS context that trusts exactly the hub's certificate (pinned: it is the only trust anchor)."""
    context = ssl.create_default_context(ssl.Purpose.SERVER_AUTH, cadata=cert_pem)
    context.check_hostname = True
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    return context


async def connect(url: str, seed: str, cert_pem: str, *, name: str) -> Any:
    """A connected ``nats.aio.client.Client`` (call inside :func:`trio_asyncio.open_loop`). It does not reconnect by
    itself: the gateway starts a whole new session instead (and republishes), which also covers a wiped hub."""
    import nats
    from trio_asyncio import aio_as_trio

    async def quiet(exc: Exception) -> None:  # the failure reaches the caller as an exception: no second report
        logger.debug("hub client: %s", exc)

    return await aio_as_trio(nats.connect)(
        url,
        error_cb=quiet,
        tls=client_tls(cert_pem),
        tls_hostname=SERVER_NAME,
        nkeys_seed_str=seed,
        name=name,
        allow_reconnect=False,
        connect_timeout=3,
        ping_interval=2,
        max_outstanding_pings=2,
    )


async def ensure_stream_and_bucket(nc: Any) -> None:
    """Create (or update) the operations stream and the presence bucket, as the hub's admin."""
    from nats.js import api
    from trio_asyncio import aio_as_trio

    js = nc.jetstream()
    config = api.StreamConfig(
        name=STREAM,
        subjects=[f"{OPS_SUBJECT_ROOT}.>"],
        storage=api.StorageType.FILE,
        max_msgs_per_subject=PER_SUBJECT_LIMIT,
        duplicate_window=DUPLICATE_WINDOW,
        discard=api.DiscardPolicy.OLD,
    )
    try:
        await aio_as_trio(js.add_stream)(config)
    except Exception:  # exists with another configuration: bring it to this one
        await aio_as_trio(js.update_stream)(config)
    await aio_as_trio(js.create_key_value)(
        api.KeyValueConfig(bucket=PRESENCE_BUCKET, history=1, ttl=PRESENCE_TTL, direct=True)
    )
