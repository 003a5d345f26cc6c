"""Connecting to the hub from Trio: the official ``nats-py`` client (asyncio) through ``trio-asyncio``.

Every coroutine of the client is awaited through :func:`aio` (``trio_asyncio.aio_as_trio`` on the one loop of
the Trio run, :func:`hub_loop`). The only subscription callbacks (the durable consumer's, :class:`Collector`, and
the acknowledgements of a batch, :func:`publish_all`) append to structures of the asyncio side and set an asyncio
event, so no asyncio code calls into Trio. Measured on loopback, a request/reply through this bridge costs about
1 ms, so a Trio-native client was not written; what costs is per-message asyncio work crossing the bridge (a task
and a timer per request or ``next_msg``), so messages cross it in batches.
"""

from __future__ import annotations

import logging
import ssl
from collections import deque
from typing import Any, Final

import trio

from .hub_config import OPS_SUBJECT_ROOT, PRESENCE_BUCKET, SERVER_NAME, STREAM

__all__ = [
    "DUPLICATE_WINDOW",
    "PER_SUBJECT_LIMIT",
    "PRESENCE_TTL",
    "Collector",
    "ack_all",
    "aio",
    "client_tls",
    "connect",
    "ensure_stream_and_bucket",
    "hub_loop",
    "next_messages",
    "publish_all",
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


_LOOP: trio.lowlevel.RunVar[Any] = trio.lowlevel.RunVar("agent_comms_hub_loop")


async def _hold_loop(holder: dict[str, Any], ready: trio.Event) -> None:
    import trio_asyncio

    async with trio_asyncio.open_loop() as loop:
        holder["loop"] = loop
        ready.set()
        await trio.sleep_forever()


async def hub_loop() -> Any:
    """The one asyncio loop (trio-asyncio) of this Trio run, started on first use and kept until the run ends.

    One per run, not one per gateway: asyncio keeps one running loop per thread, and two trio-asyncio loops in one
    thread (several simulated machines in one test process) hand each other's callbacks to the wrong loop, where
    they wait for its next wake-up."""
    try:
        holder: dict[str, Any] = _LOOP.get()
    except LookupError:
        holder = {}
        _LOOP.set(holder)
        ready = trio.Event()
        holder["ready"] = ready
        trio.lowlevel.spawn_system_task(_hold_loop, holder, ready)
    await holder["ready"].wait()
    return holder["loop"]


async def aio(function: Any, *args: Any, **kwargs: Any) -> Any:
    """Await the asyncio coroutine function ``function(*args, **kwargs)`` from Trio, on :func:`hub_loop`."""
    from trio_asyncio import aio_as_trio

    return await aio_as_trio(function, loop=await hub_loop())(*args, **kwargs)


async def _publish_all(nc: Any, items: list[tuple[str, bytes, str, bool]], seconds: float) -> list[Any]:
    import asyncio
    import json

    import nats.js.errors
    from nats.js import api

    inbox = nc.new_inbox()
    replies: dict[int, Any] = {}
    done = asyncio.Event()

    async def on_reply(msg: Any) -> None:
        replies[int(msg.subject.rpartition(".")[2])] = msg
        if len(replies) == len(items):
            done.set()

    sub = await nc.subscribe(f"{inbox}.*", cb=on_reply)  # sent before the publications: no reply can miss it
    try:
        for n, (subject, data, msg_id, rollup) in enumerate(items):
            headers = {"Nats-Msg-Id": msg_id, "Nats-Rollup": "sub"} if rollup else {"Nats-Msg-Id": msg_id}
            await nc.publish(subject, data, reply=f"{inbox}.{n}", headers=headers)
        await asyncio.wait_for(done.wait(), seconds)
    finally:
        await sub.unsubscribe()
    acks = []
    for n in range(len(items)):
        data = replies[n].data
        if not data:  # a status without a body: no stream takes these subjects
            raise nats.js.errors.NoStreamResponseError
        answer = json.loads(data)
        if "error" in answer:
            raise nats.js.errors.APIError.from_error(answer["error"])
        acks.append(api.PubAck.from_response(answer))
    return acks


async def publish_all(nc: Any, items: list[tuple[str, bytes, str, bool]], *, seconds: float) -> list[Any]:
    """Publish every ``(subject, payload, message id, roll-up)`` of ``items`` (``roll-up``: the message replaces
    every earlier one of its subject) to JetStream on the connection ``nc`` without waiting for each one's
    acknowledgement before sending the next: each carries a reply subject under one inbox of the batch, one
    subscription collects the acknowledgements, and all are awaited together (``seconds`` at most), in one crossing
    into asyncio for the batch (a request per message costs an asyncio task and a timer each, which dominated a
    flood). Their acknowledgements (``PubAck``), in order. The first failure is raised
    (the others may have been stored: publishing them again is harmless, the message id de-duplicates)."""
    return list(await aio(_publish_all, nc, items, seconds))


async def _next_messages(js: Any, subject: str, start: int, limit: int) -> list[Any]:
    import nats.js.errors

    found: list[Any] = []
    while len(found) < limit:
        try:
            msg = await js.get_msg(STREAM, seq=start, subject=subject, next=True)
        except nats.js.errors.NotFoundError:  # none left at or after ``start``
            break
        found.append(msg)
        start = int(msg.seq) + 1
    return found


async def next_messages(js: Any, subject: str, *, start: int, limit: int) -> list[Any]:
    """The messages of the operations stream under ``subject`` (wildcards allowed) from its sequence ``start`` on,
    oldest first, at most ``limit`` (``RawStreamMsg``: ``subject``, ``seq``, ``data``), read one by one by
    sequence (``next_by_subj``), in one crossing into asyncio. No consumer is needed, only the right to read a
    message of the stream."""
    return list(await aio(_next_messages, js, subject, start, limit))


class Collector:
    """The messages a subscription's callback hands over (on the asyncio side), taken in batches from Trio.

    The callback only appends: no asyncio code calls into Trio. Taking what is here costs one crossing for the
    whole batch, where ``next_msg`` costs an asyncio task and a timer per message. Its size is bounded by the
    consumer's ``max_ack_pending`` (messages are acknowledged only once handled)."""

    def __init__(self) -> None:
        import asyncio

        self._items: deque[Any] = deque()
        self._ready = asyncio.Event()

    async def put(self, msg: Any) -> None:
        """The subscription's callback."""
        self._items.append(msg)
        self._ready.set()

    async def _take(self, limit: int, seconds: float) -> list[Any]:
        import asyncio

        if not self._items:
            self._ready.clear()
            try:
                await asyncio.wait_for(self._ready.wait(), seconds)
            except TimeoutError:
                return []
        return [self._items.popleft() for _ in range(min(limit, len(self._items)))]

    async def take(self, limit: int, *, seconds: float) -> list[Any]:
        """What has come, at most ``limit`` messages, after waiting up to ``seconds`` for the first one (none: an
        empty list)."""
        return list(await aio(self._take, limit, seconds))


async def _ack_all(msgs: list[Any]) -> None:
    for msg in msgs:
        await msg.ack()


async def ack_all(msgs: list[Any]) -> None:
    """Acknowledge every message of ``msgs`` to JetStream (one crossing into asyncio, one flush for the batch)."""
    await aio(_ack_all, msgs)


def client_tls(cert_pem: str) -> ssl.SSLContext:
    """A TLS context that trusts exactly the hub's certificate (pinned: it is the only trust anchor)."""
    context = ssl.create_default_context(ssl.Purpose.SERVER_AUTH, cadata=cert_pem)
    context.check_hostname = True
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    return context


async def connect(url: str, seed: str, cert_pem: str, *, name: str) -> Any:
    """A connected ``nats.aio.client.Client`` (on :func:`hub_loop`). It does not reconnect by
    itself: the gateway starts a whole new session instead (and republishes), which also covers a wiped hub."""
    import nats

    async def quiet(exc: Exception) -> None:  # the failure reaches the caller as an exception: no second report
        logger.debug("hub client: %s", exc)

    return await aio(
        nats.connect,
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

    js = nc.jetstream()
    config = api.StreamConfig(
        name=STREAM,
        subjects=[f"{OPS_SUBJECT_ROOT}.>"],
        storage=api.StorageType.FILE,
        max_msgs_per_subject=PER_SUBJECT_LIMIT,
        duplicate_window=DUPLICATE_WINDOW,
        allow_rollup_hdrs=True,  # a progress marker replaces the older one of its subject
        discard=api.DiscardPolicy.OLD,
    )
    try:
        await aio(js.add_stream, config)
    except Exception:  # exists with another configuration: bring it to this one
        await aio(js.update_stream, config)
    await aio(js.create_key_value, api.KeyValueConfig(bucket=PRESENCE_BUCKET, history=1, ttl=PRESENCE_TTL, direct=True))
