"""Real peer processes on a free port: crash, graceful stop, stop/continue of the coordinator, and strangers.

Each test starts peers with ``python -m agent_comms.mesh``, acts on them with real signals and sockets, and checks
the result with the read-only observer (the same code as ``agent-comms mesh --json``).
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
from functools import partial

import trio
from conftest import ProcessMesh

from agent_comms.mesh.keyfile import KEY_FILE
from agent_comms.mesh.observe import peer_status
from agent_comms.protocol.framing import FrameDecoder, encode_frames
from agent_comms.protocol.wire import PROTOCOL_VERSION, Hello, Proof


async def test_sigkill_of_the_coordinator(process_mesh: ProcessMesh) -> None:
    mesh = process_mesh
    await mesh.spawn("a", "alpha")
    for name in "bcd":
        await mesh.spawn(name, f"agent-{name}")
    before = await mesh.wait_one_mesh(["a", "b", "c", "d"])
    assert before.coordinator is not None
    assert before.coordinator.peer_id == mesh.processes["a"].peer_id
    mesh.processes["a"].signal(signal.SIGKILL)
    after = await mesh.wait_one_mesh(["b", "c", "d"])
    assert after.coordinator is not None
    # Usually b, the longest-running survivor (its rank binds first); a busy machine may let another win.
    assert after.coordinator.peer_id in {mesh.processes[n].peer_id for n in "bcd"}
    assert not after.state.agents["alpha"].online
    assert all(after.state.agents[f"agent-{n}"].online for n in "bcd")
    await mesh.spawn("e", "agent-e")  # right after the failover: joins the same mesh
    final = await mesh.wait_one_mesh(["b", "c", "d", "e"])
    assert final.state.agents["agent-e"].online


async def test_sigterm_of_the_coordinator_hands_over(process_mesh: ProcessMesh) -> None:
    mesh = process_mesh
    await mesh.spawn("a", "alpha")
    await mesh.spawn("b", "beta")
    await mesh.spawn("c")
    await mesh.wait_one_mesh(["a", "b", "c"])
    mesh.processes["a"].signal(signal.SIGTERM)
    with trio.fail_after(5):
        code = await mesh.processes["a"].process.wait()
    assert code == 0
    after = await mesh.wait_one_mesh(["b", "c"])
    assert after.coordinator is not None
    assert after.coordinator.peer_id == mesh.processes["b"].peer_id
    assert not after.state.agents["alpha"].online
    await mesh.spawn("d")
    await mesh.wait_one_mesh(["b", "c", "d"])


async def test_sigstop_of_the_coordinator_does_not_stop_newcomers(process_mesh: ProcessMesh) -> None:
    mesh = process_mesh
    await mesh.spawn("a", "alpha")
    await mesh.spawn("b", "beta")
    await mesh.spawn("c")
    await mesh.wait_one_mesh(["a", "b", "c"])
    mesh.processes["a"].signal(signal.SIGSTOP)
    started = trio.current_time()
    d = await mesh.spawn("d", "delta")
    b_id, c_id = mesh.processes["b"].peer_id, mesh.processes["c"].peer_id
    joined = False
    with trio.move_on_after(3.0):
        while not joined:
            view = await peer_status(mesh.key, d.data_port)
            joined = view.links is not None and {b_id, c_id} <= set(view.links)
            await trio.sleep(0.05)
    assert joined, "the newcomer did not link to the existing peers within 3 s of starting"
    assert trio.current_time() - started < 5.0
    mesh.processes["a"].signal(signal.SIGCONT)
    final = await mesh.wait_one_mesh(["a", "b", "c", "d"])
    assert final.coordinator is not None
    assert final.state.agents["delta"].online


async def test_a_key_readable_by_others_is_refused(process_mesh: ProcessMesh) -> None:
    mesh = process_mesh
    key_path = mesh.home / KEY_FILE
    assert len(mesh.key) == 32  # creates it
    os.chmod(key_path, 0o644)
    process = await trio.run_process(
        [sys.executable, "-m", "agent_comms.mesh"], env=mesh.env, capture_stderr=True, check=False
    )
    assert process.returncode == 3
    assert b"readable by other users" in process.stderr
    assert b"chmod 600" in process.stderr


async def test_a_peer_with_another_key_cannot_join(process_mesh: ProcessMesh, tmp_path_factory) -> None:  # type: ignore[no-untyped-def]
    mesh = process_mesh
    await mesh.spawn("a", "alpha")
    await mesh.spawn("b")
    await mesh.wait_one_mesh(["a", "b"])
    stranger_home = tmp_path_factory.mktemp("stranger") / "home"
    stranger = await mesh.spawn("stranger", "intruder", home=stranger_home)
    await trio.sleep(1.0)
    snapshot = await mesh.wait_one_mesh(["a", "b"])
    assert "intruder" not in snapshot.state.agents
    assert stranger.process.poll() is None  # it keeps running on its own, harmlessly


async def test_garbage_on_the_coordinator_port_closes_only_that_connection(process_mesh: ProcessMesh) -> None:
    mesh = process_mesh
    await mesh.spawn("a")
    await mesh.spawn("b")
    await mesh.wait_one_mesh(["a", "b"])
    for payload in [b"GET / HTTP/1.1\r\n\r\n", b"\xff" * 64, (2**31).to_bytes(4, "big") + b"x"]:
        stream = await trio.open_tcp_stream("127.0.0.1", mesh.port)
        await stream.send_all(payload)
        with trio.fail_after(5):
            while await stream.receive_some(1024):
                pass  # the peer answers nothing of substance and closes the connection
        await stream.aclose()
    await mesh.wait_one_mesh(["a", "b"])


def test_free_port_helper_never_returns_the_default() -> None:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        assert sock.getsockname()[1] != 19876


async def test_a_squatter_on_the_coordinator_port_is_reported_and_told_nothing(process_mesh: ProcessMesh) -> None:
    """A process that is not a mesh peer of this user holds the port first: peers notice, say so, and reveal only
    a random nonce to it."""
    mesh = process_mesh
    received = bytearray()

    async def squat(stream: trio.SocketStream) -> None:
        with trio.move_on_after(20):
            async for data in stream:
                received.extend(data)
                # It plays along as well as it can without the key: a proper Hello and a made-up proof.
                await stream.send_all(encode_frames([Hello(PROTOCOL_VERSION, os.urandom(16)), Proof(os.urandom(32))]))

    async with trio.open_nursery() as nursery:
        await nursery.start(partial(trio.serve_tcp, squat, mesh.port, host="127.0.0.1"))
        process = await trio.lowlevel.open_process(
            [sys.executable, "-m", "agent_comms.mesh"], env=mesh.env, stdout=subprocess.PIPE, stderr=subprocess.PIPE
        )
        assert process.stderr is not None
        errors = b""
        # Until the peer has said so (a loaded machine may take seconds to start Python), then a little longer.
        with trio.move_on_after(20):
            while b"cannot prove the mesh key" not in errors:
                chunk = await process.stderr.receive_some(1 << 16)
                if not chunk:
                    break
                errors += chunk
        await trio.sleep(0.3)
        process.terminate()
        await process.wait()
        nursery.cancel_scope.cancel()
    decoder = FrameDecoder()
    decoder.feed(bytes(received))
    frames = list(decoder.frames())
    assert frames, "the peer never tried the port"
    assert all(isinstance(frame, Hello) for frame in frames)  # nothing but Hellos: no proof, no identity, no state
    assert b"cannot prove the mesh key" in errors, errors
