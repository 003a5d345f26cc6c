"""Another Unix user on the same machine: it can neither join the mesh, nor read its state, nor pass as the
coordinator by binding the port first.

These tests create a second user (``useradd``; CI runs as root) and run its processes with that user's uid and gid
(``subprocess`` ``user=``/``group=``); the mesh runs as real ``python -m agent_comms.mesh`` processes of the
current user. They skip, saying why, when not run as root or when ``useradd`` is missing. The user is removed at
the end if these tests created it.
"""

from __future__ import annotations

import json
import os
import pwd
import shutil
import stat
import subprocess
import sys
import tempfile
import textwrap
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import attrs
import pytest
import trio
from tcpmesh import free_port

from agent_comms.mesh.keyfile import KEY_FILE, load_or_create_key
from agent_comms.mesh.observe import MeshSnapshot, NoMesh, observe_mesh
from agent_comms.mesh.registry import PeerRegistry
from agent_comms.protocol.framing import FrameDecoder
from agent_comms.protocol.wire import Hello, Proof, Refuse

OTHER_USER = "agent-comms-other"

#: Run as the other user. Listens on the port first and records every byte it receives (one line of hex per
#: connection). ``silent``: says nothing. ``wrong-key``: answers the handshake as a mesh peer would, with a key
#: of its own making.
SQUATTER = """
import os, socket, sys, threading
from pathlib import Path
port, mode, record = int(sys.argv[1]), sys.argv[2], Path(sys.argv[3])
sock = socket.socket()
sock.bind(("127.0.0.1", port))
sock.listen(64)
lock = threading.Lock()

def serve(conn):
    received = bytearray()
    handshake = None
    if mode == "wrong-key":
        import secrets
        from agent_comms.mesh.keyfile import load_or_create_key
        from agent_comms.protocol.framing import FrameDecoder, encode_frames
        from agent_comms.protocol.link import LinkHandshake
        from agent_comms.protocol.wire import PeerInfo
        key = load_or_create_key(Path(os.environ["AGENT_COMMS_HOME"]))
        local, remote = conn.getsockname(), conn.getpeername()
        handshake = LinkHandshake(
            dialer=False, key=key, nonce=secrets.token_bytes(16), local_addr=f"{local[0]}:{local[1]}",
            remote_addr=f"{remote[0]}:{remote[1]}", identity=PeerInfo("squatter", os.getpid(), 0.0, port),
            coordinator=True,
        )
        decoder = FrameDecoder()
    conn.settimeout(10)
    try:
        while data := conn.recv(65536):
            received += data
            if handshake is not None:
                decoder.feed(data)
                for frame in decoder.frames():
                    conn.sendall(encode_frames(handshake.receive(frame)))
    except Exception:
        pass
    finally:
        conn.close()
        with lock, record.open("a") as out:
            out.write(received.hex() + "\\n")

print("listening", flush=True)
while True:
    conn, _ = sock.accept()
    threading.Thread(target=serve, args=(conn,), daemon=True).start()
"""

#: Run as the other user: dial each port, say Hello, then send a proof made with its own key; print, per port, the
#: frames it got back as JSON (type names), and whether the connection was closed on it.
PROBER = """
import json, os, secrets, socket, sys
from pathlib import Path
from agent_comms.mesh.keyfile import load_or_create_key
from agent_comms.protocol.auth import link_proof
from agent_comms.protocol.framing import FrameDecoder, encode_frames
from agent_comms.protocol.wire import PROTOCOL_VERSION, Hello, Proof, SyncRequest

key = load_or_create_key(Path(os.environ["AGENT_COMMS_HOME"]))
out = {}
for port in map(int, sys.argv[1:]):
    got, closed = [], False
    with socket.create_connection(("127.0.0.1", port), timeout=5) as conn:
        nonce = secrets.token_bytes(16)
        conn.sendall(encode_frames([Hello(PROTOCOL_VERSION, nonce, "observer")]))
        decoder = FrameDecoder()
        sent_proof = False
        try:
            while data := conn.recv(65536):
                decoder.feed(data)
                for frame in decoder.frames():
                    got.append(type(frame).__name__)
                    if isinstance(frame, Hello) and not sent_proof:
                        local, remote = conn.getsockname(), conn.getpeername()
                        mac = link_proof(key, "dialer", dialer_nonce=nonce, listener_nonce=frame.nonce,
                                         dialer_addr=f"{local[0]}:{local[1]}", listener_addr=f"{remote[0]}:{remote[1]}")
                        conn.sendall(encode_frames([Proof(mac), SyncRequest(b"", {})]))
                        sent_proof = True
            closed = True
        except (ConnectionError, TimeoutError) as exc:
            closed = not isinstance(exc, TimeoutError)
        except Exception as exc:
            got.append(f"decode error: {exc}")
    out[port] = {"frames": got, "closed": closed}
print(json.dumps(out), flush=True)
"""


@pytest.fixture(scope="module")
def other_user() -> Iterator[pwd.struct_passwd]:
    """A second Unix user (created if missing; removed afterwards if created here)."""
    if not hasattr(os, "geteuid") or os.geteuid() != 0:
        pytest.skip("needs root to create and act as a second Unix user (CI runs as root)")
    useradd, userdel = shutil.which("useradd"), shutil.which("userdel")
    if useradd is None:
        pytest.skip("no useradd on this machine: cannot create a second Unix user")
    created = False
    try:
        info = pwd.getpwnam(OTHER_USER)
    except KeyError:
        done = subprocess.run(
            [useradd, "--system", "--no-create-home", "--shell", "/usr/sbin/nologin", OTHER_USER],
            capture_output=True,
            text=True,
            check=False,
        )
        if done.returncode not in (0, 9):  # 9: created meanwhile by someone else
            pytest.skip(f"useradd failed: {done.stderr.strip()}")
        created = done.returncode == 0
        info = pwd.getpwnam(OTHER_USER)
    yield info
    if created and userdel is not None:
        subprocess.run([userdel, OTHER_USER], capture_output=True, check=False)


def _interpreter(user: pwd.struct_passwd) -> tuple[str, str]:
    """A Python the other user may execute (ours, or the system's of the same version) and the ``PYTHONPATH``
    that gives it our packages (the virtualenv's site-packages and the editable checkouts)."""
    base = Path(sys.base_prefix).resolve()
    paths = [p for p in sys.path if p and not Path(p).resolve().is_relative_to(base)]
    version = f"python{sys.version_info.major}.{sys.version_info.minor}"
    for candidate in (sys.executable, shutil.which(version, path="/usr/local/bin:/usr/bin:/bin")):
        if candidate is None:
            continue
        try:
            probe = subprocess.run(
                [candidate, "-c", "import trio, msgspec, agent_comms"],
                user=user.pw_uid,
                group=user.pw_gid,
                extra_groups=[],
                env={"PYTHONPATH": os.pathsep.join(paths), "PYTHONDONTWRITEBYTECODE": "1"},
                cwd="/",
                capture_output=True,
                check=False,
            )
        except PermissionError:
            continue  # not executable for that user (inside a private directory, say)
        if probe.returncode == 0:
            return candidate, os.pathsep.join(paths)
    pytest.skip(f"no {version} with our packages that user {user.pw_name} may run")


@attrs.define
class Other:
    """The other user's world: its uid/gid and a private directory it owns (its HOME and AGENT_COMMS_HOME)."""

    user: pwd.struct_passwd
    root: Path
    port: int
    python: str
    pythonpath: str

    @property
    def home(self) -> Path:
        return self.root / "agent-comms"

    def env(self, **extra: str) -> dict[str, str]:
        return {
            "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
            "HOME": str(self.root),
            "AGENT_COMMS_HOME": str(self.home),
            "AGENT_COMMS_PORT": str(self.port),
            "PYTHONDONTWRITEBYTECODE": "1",
            "PYTHONPATH": self.pythonpath,
            **extra,
        }

    def script(self, name: str, text: str) -> Path:
        path = self.root / name
        path.write_text(textwrap.dedent(text))
        os.chown(path, self.user.pw_uid, self.user.pw_gid)
        return path

    def run(self, *args: str, **extra: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [self.python, *args],
            user=self.user.pw_uid,
            group=self.user.pw_gid,
            extra_groups=[],
            env=self.env(**extra),
            cwd=self.root,
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )

    async def start(self, *args: str) -> trio.Process:
        return await trio.lowlevel.open_process(
            [self.python, *args],
            user=self.user.pw_uid,
            group=self.user.pw_gid,
            extra_groups=[],
            env=self.env(),
            cwd=self.root,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
        )


@pytest.fixture
def other(other_user: pwd.struct_passwd) -> Iterator[Other]:
    root = Path(tempfile.mkdtemp(prefix="agent-comms-other-"))
    os.chown(root, other_user.pw_uid, other_user.pw_gid)
    os.chmod(root, 0o700)
    try:
        yield Other(other_user, root, free_port(), *_interpreter(other_user))
    finally:
        shutil.rmtree(root, ignore_errors=True)


@attrs.define
class Mesh:
    """Peers of the current user as real processes (``python -m agent_comms.mesh``), their stderr in files."""

    home: Path
    port: int
    logs: Path
    processes: list[tuple[trio.Process, str, int, Path]] = attrs.field(factory=list)

    @property
    def env(self) -> dict[str, str]:
        return {
            **os.environ,
            "AGENT_COMMS_HOME": str(self.home),
            "AGENT_COMMS_PORT": str(self.port),
            "AGENT_COMMS_LOG": "WARNING",
        }

    async def spawn(self, *agents: str) -> tuple[str, int]:
        log = self.logs / f"peer-{len(self.processes)}.stderr"
        with log.open("wb") as err:
            process = await trio.lowlevel.open_process(
                [sys.executable, "-m", "agent_comms.mesh", *[x for a in agents for x in ("--agent", a)]],
                env=self.env,
                stdout=subprocess.PIPE,
                stderr=err,
            )
        assert process.stdout is not None
        line = b""
        with trio.fail_after(20):
            while not line.endswith(b"\n"):
                chunk = await process.stdout.receive_some(1)
                assert chunk, f"peer exited before it was ready: {log.read_text()}"
                line += chunk
        _, peer_id, data_port = line.decode().split()
        self.processes.append((process, peer_id, int(data_port), log))
        return peer_id, int(data_port)

    async def observe(self) -> MeshSnapshot:
        key = load_or_create_key(self.home)
        return await observe_mesh(key, port=self.port, registry=PeerRegistry(self.home), attempt_seconds=1.5)

    async def wait_linked(self, *, within: float = 15.0) -> MeshSnapshot:
        """Until every peer is linked to every other and all hold the same state (with or without a coordinator)."""
        expected = {peer_id for _, peer_id, _, _ in self.processes}
        last: MeshSnapshot | None = None
        with trio.move_on_after(within):
            while True:
                try:
                    last = await self.observe()
                except NoMesh:
                    last = None
                if last is not None and _linked(last, expected):
                    return last
                await trio.sleep(0.1)
        raise AssertionError(f"the peers did not form one mesh within {within} s: {last and last.to_json()}")

    def stderr(self) -> str:
        return "\n".join(log.read_text(errors="replace") for _, _, _, log in self.processes)


def _linked(snapshot: MeshSnapshot, expected: set[str]) -> bool:
    views = {v.info.peer_id: v for v in snapshot.peers}
    if set(views) != expected:
        return False
    if any(v.links is None or set(v.links) != expected - {peer_id} for peer_id, v in views.items()):
        return False
    return len({v.digest for v in views.values()}) == 1


@pytest.fixture
async def mesh(tmp_path: Path) -> AsyncIterator[Mesh]:
    logs = tmp_path / "logs"
    logs.mkdir()
    m = Mesh(tmp_path / "home", free_port(), logs)
    try:
        yield m
    finally:
        for process, *_ in m.processes:
            if process.poll() is None:
                process.terminate()
        for process, *_ in m.processes:
            with trio.move_on_after(5):
                await process.wait()
            if process.poll() is None:
                process.kill()


# ------------------------------------------------------------------------------------------ no key, no state


def test_the_other_user_cannot_read_the_key_nor_use_the_home(other: Other) -> None:
    # The home in a directory the other user may traverse, so that only the home's own mode protects it.
    parent = Path(tempfile.mkdtemp(prefix="agent-comms-owner-"))
    try:
        os.chmod(parent, 0o755)
        home = parent / "home"
        key = load_or_create_key(home)
        assert stat.S_IMODE(home.stat().st_mode) == 0o700
        assert stat.S_IMODE((home / KEY_FILE).stat().st_mode) == 0o600
        read = other.run("-c", f"open({str(home / KEY_FILE)!r}, 'rb').read()")
        assert read.returncode != 0
        assert "PermissionError" in read.stderr
        listing = other.run("-c", f"import os; os.listdir({str(home)!r})")
        assert "PermissionError" in listing.stderr
        # Pointing its own peer at our home: refused with a clear message, not a traceback.
        peer = other.run("-m", "agent_comms.mesh", AGENT_COMMS_HOME=str(home))
        assert peer.returncode == 3, peer.stderr
        assert "belongs to another user" in peer.stderr
        assert "Traceback" not in peer.stderr
        assert load_or_create_key(home) == key  # untouched
    finally:
        shutil.rmtree(parent, ignore_errors=True)


def test_a_home_the_other_user_cannot_even_reach_is_a_clear_error(other: Other, tmp_path: Path) -> None:
    home = tmp_path / "home"  # under pytest's private temporary directory: not even traversable for others
    load_or_create_key(home)
    peer = other.run("-m", "agent_comms.mesh", AGENT_COMMS_HOME=str(home))
    assert peer.returncode == 3, peer.stderr
    assert "Traceback" not in peer.stderr
    assert str(home) in peer.stderr


async def test_the_other_users_connections_get_nothing_but_a_nonce_and_a_refusal(other: Other, mesh: Mesh) -> None:
    mesh.port = other.port
    _, data_a = await mesh.spawn("alpha")
    _, data_b = await mesh.spawn("beta")
    await mesh.wait_linked()
    prober = other.script("prober.py", PROBER)
    done = await trio.to_thread.run_sync(lambda: other.run(str(prober), str(mesh.port), str(data_a), str(data_b)))
    assert done.returncode == 0, done.stderr
    answers: dict[str, Any] = json.loads(done.stdout)
    assert set(answers) == {str(mesh.port), str(data_a), str(data_b)}
    for port, answer in answers.items():
        # The listener's Hello (a nonce), its proof (an HMAC that reveals nothing), then the refusal; then closed.
        assert answer["frames"][:2] == ["Hello", "Proof"], (port, answer)
        assert set(answer["frames"]) <= {"Hello", "Proof", "Refuse"}, (port, answer)
        assert answer["closed"], (port, answer)
    snapshot = await mesh.wait_linked()
    assert set(snapshot.state.agents) == {"alpha", "beta"}


async def test_a_peer_of_the_other_user_with_a_key_of_its_own_cannot_join(other: Other, mesh: Mesh) -> None:
    mesh.port = other.port
    await mesh.spawn("alpha")
    await mesh.spawn("beta")
    await mesh.wait_linked()
    intruder = await other.start("-m", "agent_comms.mesh", "--agent", "intruder")
    try:
        assert intruder.stdout is not None
        with trio.fail_after(20):
            ready = await intruder.stdout.receive_some(4096)
        assert ready.startswith(b"ready"), ready  # it runs, on a key of its own, alone
        await trio.sleep(2.0)  # time to try the coordinator port and the (unreadable) registry, and retry
        snapshot = await mesh.wait_linked()
        assert "intruder" not in snapshot.state.agents
        assert len(snapshot.peers) == 2
    finally:
        intruder.terminate()
        with trio.move_on_after(5):
            await intruder.wait()
        if intruder.poll() is None:
            intruder.kill()
    assert intruder.stderr is not None
    errors = await intruder.stderr.receive_some(1 << 16)
    # Our coordinator proves first; the intruder sees that proof fail (its key is not ours) and gives up.
    assert b"cannot prove the mesh key" in errors, errors


# ------------------------------------------------------------------------------------------ squatting on the port


@pytest.mark.parametrize("mode", ["silent", "wrong-key"])
async def test_a_squatter_of_the_other_user_on_the_coordinator_port_is_detected_and_bypassed(
    other: Other, mesh: Mesh, mode: str
) -> None:
    mesh.port = other.port
    record = other.root / "received.hex"
    squatter = await other.start(str(other.script("squatter.py", SQUATTER)), str(other.port), mode, str(record))
    try:
        assert squatter.stdout is not None
        with trio.fail_after(20):
            assert (await squatter.stdout.receive_some(100)).startswith(b"listening")
        # Now the mesh: three peers of ours, started after the squatter holds the port.
        for name in ("alpha", "beta", "gamma"):
            await mesh.spawn(name)
        snapshot = await mesh.wait_linked(within=20)
        assert snapshot.coordinator is None  # nobody of ours holds the port; they met through the registry
        assert set(snapshot.state.agents) == {"alpha", "beta", "gamma"}
        assert snapshot.port_problem is not None
        assert "not a mesh peer of this user" in snapshot.port_problem
        # The CLI says so too.
        shown = await trio.run_process(
            [sys.executable, "-m", "agent_comms", "mesh"], env=mesh.env, capture_stdout=True, check=False
        )
        text = shown.stdout.decode()
        assert "warning:" in text
        assert "not a mesh peer of this user" in text
        assert text.count(" peer ") + text.count(" coordinator ") >= 3, text
        # Each peer said it in its log (a silent squatter only once the peer's handshake with it timed out: the
        # observer above no longer waits for it, since it knows the port's holder is not one of ours).
        expected = "squatter?" if mode == "silent" else "cannot prove the mesh key"
        with trio.move_on_after(20):
            while not all(expected in log.read_text() for *_, log in mesh.processes):  # noqa: ASYNC110 - a log file has no event to wait on
                await trio.sleep(0.1)
        logs = mesh.stderr()
        assert all(expected in log.read_text() for *_, log in mesh.processes), logs
        # Said once per peer, not at every retry of the port.
        assert all(log.read_text().count(expected) <= 2 for *_, log in mesh.processes), logs
    finally:
        squatter.terminate()
        with trio.move_on_after(5):
            await squatter.wait()
        if squatter.poll() is None:
            squatter.kill()
    # Everything the squatter got from our peers: Hellos (a version and a random nonce), nothing else.
    lines = [bytes.fromhex(line) for line in record.read_text().split()] if record.exists() else []
    assert lines, "the peers never tried the coordinator port"
    for data in lines:
        decoder = FrameDecoder()
        decoder.feed(data)
        frames = list(decoder.frames())
        assert decoder.buffered == 0
        assert all(isinstance(f, Hello) for f in frames), frames
        assert not any(isinstance(f, Proof | Refuse) for f in frames)
