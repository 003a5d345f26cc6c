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
            except NoMesh as exc:
                if exc.foreign is not None:
                    return exc.foreign  # the holder was given its chance: not asked again
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
    _print_peers(data, snapshot, settings.port)
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


def _print_peers(data: dict[str, Any], snapshot: Any, port: int) -> None:
    """The text view: each peer by its role and the agents it hosts (by name), its links to the other peers, and
    whether every peer holds the same replicated state (its digest: equal digests, same state)."""
    from agent_comms.views import shown_names

    peers = data["peers"]
    coordinator = data["coordinator"]
    leader = display(coordinator["peer_id"], inline=True) if coordinator else "(none)"
    print(f"mesh on 127.0.0.1:{port}: {len(peers)} peer(s), coordinator {leader}")
    if data["coordinator_port_problem"]:
        problem = display(data["coordinator_port_problem"])
        print(f"  warning: {problem}; the peers below met through the registry")
    shown = shown_names(snapshot.state)
    listed = {peer["peer_id"] for peer in peers}
    for peer in peers:
        role = "coordinator" if peer["coordinator"] else "peer"
        agents = ", ".join(display(shown(agent_id), inline=True) for agent_id in peer["agents"]) or "no agents"
        if peer["links"] is None:
            links = "did not answer"
        else:
            others = listed - {peer["peer_id"]}
            links = f"linked to {len(others & set(peer['links']))} of {len(others)} other peer(s)"
        digest = f"state {peer['digest'][:8]}" if peer["digest"] else "state unknown"
        print(
            f"  {display(peer['peer_id'], inline=True)}  {role:<11}  pid {peer['pid']:<7}  up {peer['uptime']:8.1f} s  "
            f"{links}  {digest}\n      agents: {agents}"
        )
    digests = {peer["digest"] for peer in peers if peer["digest"]}
    if len(digests) == 1 and all(peer["digest"] for peer in peers):
        print(f"every peer holds the same state (digest {next(iter(digests))[:8]})")
    elif digests:
        print(f"the peers hold {len(digests)} different states: they are still exchanging operations (try again)")


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
