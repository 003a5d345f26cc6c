"""``agent-comms mesh``: the peers, the coordinator and the agents each peer hosts."""

from __future__ import annotations

import argparse
import json
from typing import Any

from agent_comms.cli.common import EXIT_CONFIG, EXIT_NO_MESH, ConfigError, error, load_mesh_settings
from agent_comms.display import display


def register(commands: Any) -> None:
    parser = commands.add_parser(
        "mesh",
        help="show the peers, the coordinator and the agents each peer hosts",
        description="Observe the mesh without joining it (no agent is registered).",
        epilog="example: agent-comms mesh --json | jq '.coordinator'",
    )
    parser.add_argument("--json", action="store_true", help="print JSON instead of a table")
    parser.set_defaults(handler=run)


def run(args: argparse.Namespace) -> int:
    import trio

    from agent_comms.mesh.observe import MeshSnapshot, NoMesh, explain_no_mesh, observe_mesh
    from agent_comms.mesh.registry import PeerRegistry

    try:
        settings, key = load_mesh_settings()  # looking creates nothing
    except ConfigError as exc:
        error(str(exc))
        return EXIT_CONFIG

    async def observe() -> MeshSnapshot | str:
        registry = PeerRegistry(settings.home)
        if key is not None:
            try:
                return await observe_mesh(key, port=settings.port, registry=registry)
            except NoMesh:
                pass
        # say why: nothing listens, or what holds the port
        return await explain_no_mesh(key, settings.port, registry=registry)

    snapshot = trio.run(observe)
    if isinstance(snapshot, str):
        if args.json:
            print(json.dumps({"coordinator": None, "peers": []}))
        error(snapshot)
        return EXIT_NO_MESH
    data = snapshot.to_json()
    others = {port: count for port, count in PeerRegistry(settings.home).ports().items() if port != settings.port}
    data["other_meshes"] = [{"port": port, "peers": count} for port, count in sorted(others.items()) if port]
    data["gateway"], data["machines"] = _hub_part(settings.home)
    if args.json:
        print(json.dumps(data, indent=2))
        return 0
    coordinator = data["coordinator"]
    leader = display(coordinator["peer_id"], inline=True) if coordinator else "(none)"
    print(f"mesh on 127.0.0.1:{settings.port}, coordinator {leader}")
    if data["coordinator_port_problem"]:
        problem = display(data["coordinator_port_problem"])
        print(f"  warning: {problem}; the peers below met through the registry")
    for peer in data["peers"]:
        role = "coordinator" if peer["coordinator"] else "peer"
        agents = display(", ".join(peer["agents"]), inline=True) or "-"
        peer_id = display(peer["peer_id"], inline=True)
        print(f"  {peer_id}  pid {peer['pid']:<7}  up {peer['uptime']:8.1f} s  {role:<11}  agents: {agents}")
    if data["other_meshes"]:  # a mesh is its port: the same home may hold others, which this one never links to
        listed = ", ".join(
            f"port {m['port']} ({m['peers']} peer{'s' * (m['peers'] != 1)})" for m in data["other_meshes"]
        )
        print(f"other meshes in this home (another AGENT_COMMS_PORT): {listed}")
    gateway = data["gateway"]
    if gateway is not None:
        state = "connected" if gateway["connected"] else "not connected"
        print(f"hub: this machine is {gateway['machine']}; gateway peer {gateway['peer_id']} {state}")
        for machine in data["machines"]:
            print(f"  machine {machine['name']}: {'present' if machine['present'] else 'away'}")
    return 0


def _hub_part(home: Any) -> tuple[dict[str, Any] | None, list[dict[str, Any]]]:
    """The gateway's last status (``None`` when this machine has not joined a hub or no gateway ran yet) and the
    other machines it has seen, with whether each is present."""
    from agent_comms.liveness import process_alive
    from agent_comms.mesh.gateway import read_status
    from agent_comms.mesh.hub_config import bundle_path

    if not bundle_path(home).exists():
        return None, []
    status = read_status(home)
    if status is None:
        return None, []
    if not process_alive(int(status.get("pid", 0)), 0.0):
        status["connected"] = False
    machines = [{"name": name, "present": present} for name, present in sorted(status.get("machines", {}).items())]
    return status, machines
