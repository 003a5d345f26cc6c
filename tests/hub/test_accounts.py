"""Another account on the hub's server sees nothing of the mesh and can put nothing into it.

The other account is configured as an operator would (``other_accounts`` in the hub's ``hub.json``, JetStream enabled
for it too), the running server reloads it, and a user of that account connects with the hub's certificate: it may
use its own account, but the mesh's operations, stream and presence bucket are out of its reach both ways. (That
one machine cannot publish as another is tested in ``test_admission.py``: under another machine's subjects the server
refuses it, and under its own the receivers refuse operations of another machine's origins or agents.)"""

from __future__ import annotations

import json
from typing import Any

import pytest
import trio

from agent_comms.mesh.hub_client import aio, connect
from agent_comms.mesh.hub_config import PRESENCE_BUCKET, STREAM, Bundle, HubError, HubFiles, _new_user_seed

from .conftest import HubWorld, dm_contents, eventually
from .test_admission import admin_count, bundle_of


async def _connect_when_reloaded(bundle: Bundle) -> Any:
    """Connect as ``bundle`` once the server has reloaded its configuration (SIGHUP is asynchronous) and enabled
    JetStream for the new account."""
    with trio.fail_after(30):
        while True:
            try:
                nc = await connect(bundle.url, bundle.seed, bundle.cert, name="other account")
            except Exception:
                await trio.sleep(0.1)
                continue
            try:
                await aio(nc.jetstream().account_info)
            except Exception:
                await aio(nc.close)
                await trio.sleep(0.1)
                continue
            return nc


async def admin_presence(world: HubWorld, machine: str) -> bytes:
    files = HubFiles(world.hub.home)
    settings = files.settings()
    nc = await connect(settings["url"], settings["admin_seed"], files.cert_path.read_text(), name="admin")
    try:
        kv = await aio(nc.jetstream().key_value, PRESENCE_BUCKET)
        entry = await aio(kv.get, machine)
        value: bytes = entry.value
        return value
    finally:
        await aio(nc.close)


async def test_another_account_can_neither_read_nor_publish_the_mesh(world: HubWorld) -> None:
    import nats.errors
    import nats.js.errors

    files = HubFiles(world.hub.home)
    settings = files.settings()
    seed, public = _new_user_seed()
    settings["other_accounts"] = {"TEAM_B": {"jetstream": "enabled", "users": [{"nkey": public}]}}
    files.settings_path.write_text(json.dumps(settings))
    files.regenerate()
    stranger = Bundle(settings["url"], "stranger", seed, files.cert_path.read_text())
    nc = await _connect_when_reloaded(stranger)
    try:
        # everything published on the server, as this account sees it
        everything = await aio(nc.subscribe, ">")
        a, b = world.machine("alpha"), world.machine("beta")
        async with a.agent("alice") as alice, b.agent("bob") as bob:
            await eventually(lambda: bob.store.online("alice-id") and alice.store.online("bob-id"))
            assert not alice.call({"action": "dm", "target": "bob", "content": "secret"}).is_error
            await eventually(lambda: dm_contents(bob.store, "bob-id") == ["secret"])
            try:
                msg = await aio(everything.next_msg, timeout=2)
            except nats.errors.TimeoutError:
                pass  # nothing reached it
            else:
                pytest.fail(f"the other account saw {msg.subject}")
            await aio(everything.unsubscribe)  # (it would be a responder to the publications below)
            # its JetStream is its own: the mesh's stream and presence bucket do not exist there
            js = nc.jetstream()
            with pytest.raises(nats.js.errors.NotFoundError):
                await aio(js.stream_info, STREAM)
            with pytest.raises(nats.js.errors.NotFoundError):
                await aio(js.stream_info, f"KV_{PRESENCE_BUCKET}")
            # publishing on the mesh's subjects reaches no stream (none listens in this account) and changes nothing
            with pytest.raises(nats.js.errors.NoStreamResponseError):
                await aio(js.publish, "ac.ops.alpha.dm.0", b"forged", timeout=5)
            await aio(nc.publish, "ac.ops.beta.dm.0", b"forged")
            await aio(nc.publish, f"$KV.{PRESENCE_BUCKET}.alpha", b"forged")
            await aio(nc.flush)
            assert not alice.call({"action": "dm", "target": "bob", "content": "after"}).is_error
            await eventually(lambda: dm_contents(bob.store, "bob-id") == ["secret", "after"])
            # (the mesh's own subjects end with a hash of a conversation, never "0")
            assert await admin_count(world, "ac.ops.alpha.dm.0") == 0
            assert await admin_count(world, "ac.ops.beta.dm.0") == 0
            assert await admin_presence(world, "alpha") != b"forged"
            assert bob.store.node.gateway.refused == 0
            # while the account's own JetStream works for it
            await aio(js.add_stream, name="TEAM_B_OWN", subjects=["team.>"])
            ack = await aio(js.publish, "team.x", b"its own", timeout=5)
            assert ack.stream == "TEAM_B_OWN"
        # and the mesh's machines still connect (the other account changed nothing for them)
        assert bundle_of(world, "alpha").machine == "alpha"
    finally:
        await aio(nc.close)


async def test_another_account_may_not_take_the_mesh_accounts_name(world: HubWorld) -> None:
    files = HubFiles(world.hub.home)
    settings = files.settings()
    settings["other_accounts"] = {"AGENT_COMMS": {"users": []}}
    files.settings_path.write_text(json.dumps(settings))
    with pytest.raises(HubError, match="other_accounts"):
        files.regenerate()
