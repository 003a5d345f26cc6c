"""Only admitted machines get in, each only as itself: unknown keys, a wrong certificate, publishing under another
machine's subjects, forging another machine's operations and a revoked key are all refused."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import msgspec
import pytest
import trio

from agent_comms.mesh.hub_client import aio, connect
from agent_comms.mesh.hub_config import STREAM, Bundle, HubFiles, _new_user_seed, _self_signed, bundle_path
from agent_comms.protocol.ops import DirectMessage, Op

from .conftest import HubWorld, _require_nats_server, cli, dm_contents, eventually, free_port


def bundle_of(world: HubWorld, name: str) -> Bundle:
    return Bundle.from_json(bundle_path(world.machine(name).home).read_text())


@asynccontextmanager
async def client(bundle: Bundle) -> AsyncIterator[Any]:
    nc = await connect(bundle.url, bundle.seed, bundle.cert, name="test")
    try:
        yield nc
    finally:
        await aio(nc.close)


async def refusal(bundle: Bundle) -> str:
    """Try to connect with ``bundle``; the reason it was refused (fails the test if it was not)."""
    try:
        async with client(bundle):
            pass
    except BaseException as exc:
        while isinstance(exc, BaseExceptionGroup):
            exc = exc.exceptions[0]
        return f"{type(exc).__name__}: {exc}"
    raise AssertionError("connected")


async def admin_count(world: HubWorld, subjects: str) -> int:
    files = HubFiles(world.hub.home)
    settings = files.settings()
    admin = Bundle(settings["url"], "admin", settings["admin_seed"], files.cert_path.read_text())
    async with client(admin) as nc:
        info = await aio(nc.jetstream().stream_info, STREAM, subjects_filter=subjects)
        return sum((info.state.subjects or {}).values())


async def test_an_unknown_key_is_refused(world: HubWorld) -> None:
    stranger = Bundle(bundle_of(world, "alpha").url, "stranger", _new_user_seed()[0], bundle_of(world, "alpha").cert)
    assert "Authorization Violation" in await refusal(stranger)


async def test_a_hub_with_another_certificate_is_refused(world: HubWorld) -> None:
    genuine = bundle_of(world, "alpha")
    other_cert, _ = _self_signed("127.0.0.1")
    pinned_elsewhere = Bundle(genuine.url, genuine.machine, genuine.seed, other_cert)
    assert "CERTIFICATE_VERIFY_FAILED" in await refusal(pinned_elsewhere)


async def test_a_machine_cannot_publish_under_another_machines_subjects(world: HubWorld) -> None:
    async with client(bundle_of(world, "beta")) as nc:
        js = nc.jetstream()
        with pytest.raises(TimeoutError):  # the server refuses it: no acknowledgement comes
            await aio(js.publish, "ac.ops.alpha.dm.0", b"forged", timeout=2)
        await aio(js.publish, "ac.ops.beta.dm.0", b"own subject", timeout=10)  # its own subjects work
    assert await admin_count(world, "ac.ops.alpha.>") == 0
    assert await admin_count(world, "ac.ops.beta.>") == 1


async def test_operations_forged_under_a_machines_own_subjects_are_refused_by_the_others(world: HubWorld) -> None:
    a, c = world.machine("alpha"), world.machine("gamma")
    async with a.agent("alice") as alice, c.agent("carol") as carol:
        # each side holds the other's record (they cross the hub independently) before alice addresses carol
        await eventually(lambda: carol.store.online("alice-id") and alice.store.online("carol-id"))
        result = alice.call({"action": "dm", "target": "carol", "content": "genuine"})
        assert not result.is_error
        await eventually(lambda: dm_contents(carol.store, "carol-id") == ["genuine"])
        origin = alice.store.node.peer_id
        inc = alice.store.record("alice-id").incarnation  # type: ignore[union-attr]
        forged = Op(
            origin,
            10_000,
            alice.store.node.peer.replica.hlc.last + 1,
            DirectMessage("alice-id", inc, "carol-id", "forged"),
        )
        async with client(bundle_of(world, "beta")) as nc:
            await aio(
                nc.jetstream().publish,
                "ac.ops.beta.dm.0",
                msgspec.msgpack.encode(forged),
                timeout=10,
                headers={"Nats-Msg-Id": "forged"},
            )
        gateway = carol.store.node.gateway
        await eventually(lambda: gateway.refused >= 1)
        assert dm_contents(carol.store, "carol-id") == ["genuine"]
        assert dm_contents(alice.store, "carol-id") == ["genuine"]


async def test_a_machine_cannot_claim_another_machines_agent(world: HubWorld) -> None:
    """Beta publishes, under its own subjects and from an origin of its own, a newer claim on alpha's agent and a DM
    as it: the others keep alice on alpha, and the DM counts nowhere."""
    a, c = world.machine("alpha"), world.machine("gamma")
    async with a.agent("alice") as alice, c.agent("carol") as carol:
        await eventually(lambda: carol.store.online("alice-id"))
        genuine = alice.store.record("alice-id")
        assert genuine is not None
        stamp = alice.store.node.peer.replica.hlc.last + (1 << 16)
        claim = msgspec.structs.replace(genuine, peer_id="beta-forger", incarnation=stamp, version=0)
        # and an identity of alpha's not seen yet: its id names its machine, so it is alpha's from the start
        early = msgspec.structs.replace(claim, agent_id="claude-code-0123456789@alpha")
        ops = [
            Op("beta-forger", 1, stamp, claim),
            Op("beta-forger", 2, stamp + 1, DirectMessage("alice-id", stamp, "carol-id", "taken over")),
            Op("beta-forger", 3, stamp + 2, early),
        ]
        async with client(bundle_of(world, "beta")) as nc:
            for n, op in enumerate(ops):
                await aio(
                    nc.jetstream().publish,
                    f"ac.ops.beta.agent.{n}",
                    msgspec.msgpack.encode(op),
                    timeout=10,
                    headers={"Nats-Msg-Id": f"beta-forger-{n}"},
                )
        gateway = carol.store.node.gateway
        await eventually(lambda: gateway.refused >= 2)
        await trio.sleep(1.0)  # the DM may be held (beta's own operation) but must count nowhere
        for store in (alice.store, carol.store):
            record = store.record("alice-id")
            assert record is not None
            assert record.peer_id == genuine.peer_id
            assert store.record("claude-code-0123456789@alpha") is None
            shown = [op for op in store.state.messages.values() if store.state.message_visible(op)]
            assert "taken over" not in [getattr(op.body, "content", "") for op in shown]


async def test_a_removed_machine_is_disconnected_and_kept_out(world: HubWorld) -> None:
    b = world.machine("beta")
    async with b.agent("bob") as bob:
        gateway = bob.store.node.gateway
        await eventually(lambda: gateway.connected)
        files = HubFiles(world.hub.home)
        assert files.is_our_server(int(files.pid_path.read_text()))  # so remove-machine makes it reload
        cli(world.hub.home, "hub", "remove-machine", "beta")
        await eventually(lambda: not gateway.connected and "uthorization" in gateway.last_error, within=60)
        await trio.sleep(1)
        assert not gateway.connected
    status = json.loads(cli(b.home, "hub", "status", "--json").stdout)
    assert status["machine"] == "beta"
    assert status["gateway"]["connected"] is False


async def test_a_hub_reload_signals_only_its_own_server(tmp_path: Path) -> None:
    """A pid file left by a server that died may name a pid now reused by another process: adding or removing a
    machine must not send that process SIGHUP (which would end it)."""
    _require_nats_server()  # (the hub's extra: its files need its key and certificate libraries)
    home = tmp_path / "hub"
    cli(home, "hub", "init", "--listen", f"127.0.0.1:{free_port()}")
    files = HubFiles(home)
    other = await trio.lowlevel.open_process(["sleep", "60"])
    try:
        files.pid_path.write_text(f"{other.pid}\n")
        assert not files.is_our_server(other.pid)
        cli(home, "hub", "add-machine", "alpha", "--out", str(tmp_path / "alpha.json"))
        cli(home, "hub", "remove-machine", "alpha")
        with trio.move_on_after(0.5):
            await other.wait()
        assert other.returncode is None, "the unrelated process was signalled"
    finally:
        other.kill()
        await other.wait()


async def test_leaving_the_hub_is_refused_while_peers_of_the_machine_run(world: HubWorld) -> None:
    a = world.machine("alpha")
    async with a.node():
        refused = cli(a.home, "hub", "leave", check=False)
        assert refused.returncode == 6, refused
        assert "running" in refused.stderr
        assert "end them first" in refused.stderr
        assert bundle_path(a.home).exists()
    left = cli(a.home, "hub", "leave")
    assert "left the hub" in left.stdout
    assert not bundle_path(a.home).exists()
