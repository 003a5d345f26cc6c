"""``agent-comms hub``: one mesh across machines, through a NATS hub (needs ``pip install 'agent-comms[hub]'``).

On the machine that runs the hub: ``hub init``, ``hub add-machine NAME`` (once per machine), ``hub serve``. On
every machine (the hub's own too, if agents run there): ``hub join BUNDLE``. Then that machine's mesh connects to
the hub by itself (its gateway is one of its peers).
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

from agent_comms.cli.common import EXIT_CONFIG, EXIT_NOT_FOUND, EXIT_REFUSED, ConfigError, error


def register(commands: Any) -> None:
    parser = commands.add_parser(
        "hub",
        help="join meshes of several machines into one, through a NATS hub",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    sub = parser.add_subparsers(dest="hub_command", metavar="HUB_COMMAND", required=True)
    init = sub.add_parser("init", help="write the hub's configuration (certificate, keys, permissions)")
    init.add_argument("--listen", default="0.0.0.0:4222", help="HOST:PORT the hub listens on (default 0.0.0.0:4222)")
    init.add_argument("--advertise", help="the host machines reach the hub by (default: the listen host or hostname)")
    init.set_defaults(handler=run_init)
    add = sub.add_parser("add-machine", help="admit a machine: write its 0600 bundle (URL, pinned certificate, key)")
    add.add_argument("name")
    add.add_argument("--out", type=Path, help="where to write the bundle (default: <home>/hub/bundles/NAME.json)")
    add.set_defaults(handler=run_add)
    remove = sub.add_parser("remove-machine", help="revoke a machine's key (a running hub drops its connection)")
    remove.add_argument("name")
    remove.set_defaults(handler=run_remove)
    serve = sub.add_parser("serve", help="run the hub (nats-server) in the foreground")
    serve.set_defaults(handler=run_serve)
    join = sub.add_parser("join", help="connect this machine's mesh to the hub of a bundle")
    join.add_argument("bundle", type=Path)
    join.set_defaults(handler=run_join)
    leave = sub.add_parser("leave", help="disconnect this machine's mesh from its hub")
    leave.set_defaults(handler=run_leave)
    status = sub.add_parser("status", help="the hub this machine joined, the machines seen, the gateway's state")
    status.add_argument("--json", action="store_true", help="print JSON")
    status.set_defaults(handler=run_status)


def _home() -> Path:
    from agent_comms.mesh.settings import MeshSettings, SettingsError

    try:
        return MeshSettings.from_env().home
    except SettingsError as exc:
        raise ConfigError(str(exc)) from exc


def _guarded(run: Any) -> Any:
    def handler(args: argparse.Namespace) -> int:
        from agent_comms.mesh.hub_config import HubError

        try:
            status: int = run(args)
        except (HubError, ConfigError) as exc:
            error(str(exc))
            return EXIT_CONFIG
        return status

    return handler


@_guarded
def run_init(args: argparse.Namespace) -> int:
    from agent_comms.mesh.hub_config import HubFiles

    files = HubFiles(_home())
    settings = files.init(args.listen, args.advertise)
    print(f"hub configured in {files.directory}; machines will reach it at {settings['url']}")
    print("next: agent-comms hub add-machine NAME (once per machine), then agent-comms hub serve")
    return 0


@_guarded
def run_add(args: argparse.Namespace) -> int:
    from agent_comms.mesh.hub_config import HubFiles, _write_private

    home = _home()
    bundle = HubFiles(home).add_machine(args.name)
    out: Path = args.out or home / "hub" / "bundles" / f"{args.name}.json"
    _write_private(out, bundle.to_json())
    print(f"bundle for machine {args.name} written to {out} (0600: it holds the machine's key)")
    print(f"on that machine: agent-comms hub join {out.name}")
    return 0


@_guarded
def run_remove(args: argparse.Namespace) -> int:
    from agent_comms.mesh.hub_config import HubFiles

    HubFiles(_home()).remove_machine(args.name)
    print(f"machine {args.name} revoked")
    return 0


@_guarded
def run_serve(args: argparse.Namespace) -> int:
    import trio

    from agent_comms.mesh.hub_config import HubFiles
    from agent_comms.mesh.hub_server import serve

    files = HubFiles(_home())
    files.settings()  # a clear error if there is no hub here
    return trio.run(serve, files)


@_guarded
def run_join(args: argparse.Namespace) -> int:
    from agent_comms.mesh.hub_config import Bundle, _write_private, bundle_path

    try:
        text = args.bundle.read_text(encoding="utf-8")
    except OSError as exc:
        error(f"cannot read the bundle: {exc}")
        return EXIT_NOT_FOUND
    bundle = Bundle.from_json(text)
    home = _home()
    _write_private(bundle_path(home), bundle.to_json())
    print(f"this machine is {bundle.machine} on the hub {bundle.url}; its mesh connects from now on")
    print("(peers already running connect when they restart)")
    return 0


@_guarded
def run_leave(args: argparse.Namespace) -> int:
    from agent_comms.mesh.hub_config import bundle_path

    home = _home()
    path = bundle_path(home)
    if not path.exists():
        error("this machine has not joined a hub")
        return EXIT_NOT_FOUND
    from agent_comms.mesh.registry import PeerRegistry

    running = sum(PeerRegistry(home).ports().values())
    if running:
        # Their gateway and process probe read the hub's files (which peer ids are other machines'): removing them
        # under running peers would make those judge other machines' agents as their own.
        error(
            f"{running} peer(s) of this machine's mesh are running (agents' bridges, 'agent-comms' commands):"
            " end them first, then run 'agent-comms hub leave' again"
        )
        return EXIT_REFUSED
    path.unlink()
    for name in ("origins.json", "gateway.json", "lone-ack.json"):
        (home / "hub" / name).unlink(missing_ok=True)
    print("left the hub")
    return 0


@_guarded
def run_status(args: argparse.Namespace) -> int:
    from agent_comms.liveness import process_alive
    from agent_comms.mesh.gateway import read_status
    from agent_comms.mesh.hub_config import HubFiles, load_bundle

    home = _home()
    bundle = load_bundle(home)
    files = HubFiles(home)
    data: dict[str, Any] = {"joined": bundle is not None, "machine": None, "url": None, "gateway": None, "hub": None}
    if bundle is not None:
        data["machine"], data["url"] = bundle.machine, bundle.url
        gateway = read_status(home)
        if gateway is not None and not process_alive(int(gateway.get("pid", 0)), 0.0):
            gateway["connected"] = False
            gateway["running"] = False
        elif gateway is not None:
            gateway["running"] = True
        data["gateway"] = gateway
    if files.exists():
        settings = files.settings()
        data["hub"] = {"url": settings["url"], "machines": sorted(settings["machines"])}
    if args.json:
        print(json.dumps(data, indent=2))
        return 0
    if data["hub"] is not None:
        print(f"hub here: {data['hub']['url']}, machines admitted: {', '.join(data['hub']['machines']) or '-'}")
    if bundle is None:
        print("this machine has not joined a hub")
        return 0
    print(f"this machine: {bundle.machine}, hub {bundle.url}")
    gw = data["gateway"]
    if gw is None:
        print("gateway: not started (no peer of this mesh is running)")
        return 0
    state = "connected" if gw["connected"] else "not connected" + (f" ({gw['last_error']})" if gw["last_error"] else "")
    print(f"gateway: peer {gw['peer_id']} (pid {gw['pid']}), {state}, lag {gw['lag']} operations")
    print(f"  published {gw['published']}, received {gw['received']}, refused {gw['refused']}")
    print(f"  last acknowledged operation: {gw['last_acknowledged'] or '-'}")
    if "resent" in gw:
        print(f"  operations its current session started by publishing: {gw['resent']}")
    for machine, present in gw["machines"].items():
        print(f"  machine {machine}: {'present' if present else 'away'}")
    return 0


__all__ = ["register"]
