"""Who holds a TCP port of 127.0.0.1, and whether it is a peer of this mesh: for quick, precise errors.

A one-shot command, ``chat`` or a bridge that finds the coordinator port held by a program that is not one of the
mesh's peers should say so at once, and name the program, rather than wait for a handshake that will never come.
On Linux the kernel's socket table (``/proc/net/tcp``) gives the listening socket's owner (a user id) and inode;
the owner's open descriptors (``/proc/PID/fd``, readable for this user's processes only) give the process. A peer
of this mesh is always listed in the peer registry before it binds the coordinator port
(:func:`agent_comms.mesh.node.open_node` publishes first), so a listener whose process is not in the registry,
or that belongs to another user, looks like another program; the callers still give it a brief handshake (a peer
in another pid namespace has another pid in the registry) before they name it. A listener on ``::`` counts only
when 127.0.0.1:PORT accepts a connection (with ``IPV6_V6ONLY`` it does not reach 127.0.0.1, and the table does not
say). Elsewhere, or when the table cannot be read, nothing is known and the callers fall back to the handshake.
"""

from __future__ import annotations

import os
import socket
from pathlib import Path

import attrs

from .registry import PeerRegistry

__all__ = ["PortHolder", "foreign_holder", "foreign_port_message", "port_holder"]

_LISTEN = "0A"
_ANY6 = "00000000000000000000000000000000"  # ::
#: Local addresses a listener on 127.0.0.1:PORT may have bound (hex, as the kernel writes them), the one the kernel
#: prefers first. A listener on ``::`` reaches 127.0.0.1 only without ``IPV6_V6ONLY``, which the table does not
#: show: it counts only if a connection to 127.0.0.1:PORT is accepted (:func:`_loopback_answers`).
_REACHING_LOOPBACK = (
    "0100007F",  # 127.0.0.1
    "0000000000000000FFFF00000100007F",  # ::ffff:127.0.0.1
    "00000000",  # 0.0.0.0
    _ANY6,
)


@attrs.frozen
class PortHolder:
    """The process listening on a port, as far as it can be known."""

    uid: int
    pid: int | None = None
    command: str = ""

    def describe(self) -> str:
        """``pid 123: python -m http.server``, ``a process of user bob`` or ``unknown``, for a person."""
        if self.uid != os.getuid():
            return f"a process of user {_user_name(self.uid)}"
        if self.pid is None:
            return "unknown"
        return f"pid {self.pid}: {self.command[:80]}" if self.command else f"pid {self.pid}"


def port_holder(port: int, proc: Path = Path("/proc")) -> PortHolder | None:
    """The listener on TCP ``port`` reachable at 127.0.0.1 (``None``: none found, or not knowable here)."""
    listeners: dict[str, tuple[str, int]] = {}  # local address -> (inode, owner uid) of its first listener
    for table in ("net/tcp", "net/tcp6"):
        try:
            lines = (proc / table).read_text(encoding="ascii").splitlines()[1:]
        except (OSError, ValueError):
            continue
        for line in lines:
            fields = line.split()
            if len(fields) < 10 or fields[3] != _LISTEN:
                continue
            address, _, hex_port = fields[1].partition(":")
            try:
                if int(hex_port, 16) == port and address in _REACHING_LOOPBACK:
                    listeners.setdefault(address, (fields[9], int(fields[7])))
            except ValueError:
                continue
    if set(listeners) == {_ANY6} and not _loopback_answers(port):
        return None  # a listener of IPv6 only (IPV6_V6ONLY): nothing listens on 127.0.0.1
    chosen = next((listeners[address] for address in _REACHING_LOOPBACK if address in listeners), None)
    if chosen is None:
        return None
    inode, uid = chosen  # the process and the user of one and the same socket
    if uid != os.getuid():
        return PortHolder(uid)  # another user's descriptors cannot be read
    pid = _pid_of(proc, {f"socket:[{inode}]"})
    return PortHolder(uid, pid, "" if pid is None else _command(proc, pid))


def _loopback_answers(port: int) -> bool:
    """Whether a connection to 127.0.0.1:``port`` is accepted (closed at once, without a byte)."""
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=0.5):
            return True
    except OSError:
        return False


def foreign_holder(port: int, registry: PeerRegistry) -> PortHolder | None:
    """The holder of ``port`` when it is known not to be a peer of this home's meshes (``None``: a peer, nobody,
    or not knowable)."""
    holder = port_holder(port)
    if holder is None:
        return None
    if holder.uid != os.getuid():
        return holder
    if holder.pid is None or holder.pid in {info.pid for info in registry.live()}:
        return None
    return holder


def foreign_port_message(port: int, holder: PortHolder | None) -> str:
    """What to tell a person whose coordinator port is held by another program (``holder``: ``None`` if unknown)."""
    who = "unknown" if holder is None else holder.describe()
    return (
        f"port {port} is held by another program, not a mesh peer of this user ({who}); stop it, "
        "or choose another port for the mesh with AGENT_COMMS_PORT"
    )


def _pid_of(proc: Path, wanted: set[str]) -> int | None:
    try:
        pids = [entry.name for entry in proc.iterdir() if entry.name.isdigit()]
    except OSError:
        return None
    for pid in pids:
        try:
            fds = os.listdir(proc / pid / "fd")
        except OSError:
            continue  # another user's process, or gone
        for fd in fds:
            try:
                if os.readlink(proc / pid / "fd" / fd) in wanted:
                    return int(pid)
            except OSError:
                continue
    return None


def _command(proc: Path, pid: int) -> str:
    try:
        raw = (proc / str(pid) / "cmdline").read_bytes()
    except OSError:
        return ""
    return raw.replace(b"\0", b" ").decode(errors="replace").strip()


def _user_name(uid: int) -> str:
    try:
        import pwd

        return f"{pwd.getpwuid(uid).pw_name} (uid {uid})"
    except (ImportError, KeyError):
        return f"uid {uid}"
