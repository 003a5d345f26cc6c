"""Identities of a machine joined to a hub name the machine: two machines with a directory of the same path (the
same user and project on a laptop and a VM) host two agents, not one identity claimed from both sides."""

from __future__ import annotations

from pathlib import Path

from agent_comms.identity import base_id, claim_identity
from agent_comms.mesh.hub_config import Bundle, bundle_path
from agent_comms.private_files import write_private_file

CERT = "-----BEGIN CERTIFICATE-----\nnot checked here\n-----END CERTIFICATE-----\n"


def join(home: Path, machine: str) -> None:
    bundle = Bundle("tls://127.0.0.1:1", machine, "SUfake", CERT)
    home.mkdir(mode=0o700)
    bundle_path(home).parent.mkdir(mode=0o700)
    write_private_file(bundle_path(home), bundle.to_json().encode())


def test_joined_machines_give_one_directory_two_identities(tmp_path: Path) -> None:
    project = tmp_path / "work" / "project"
    project.mkdir(parents=True)
    alone, laptop, vm = tmp_path / "alone", tmp_path / "laptop", tmp_path / "vm"
    join(laptop, "laptop")
    join(vm, "vm")
    ids = []
    for home in (alone, laptop, vm):
        identity = claim_identity(home, "claude-code", str(project))
        ids.append(identity.agent_id)
        identity.release()
    assert ids[0] == base_id("claude-code", str(project))  # a machine on its own keeps the ids it always had
    assert ids[1] == base_id("claude-code", str(project), "laptop") == f"{ids[0]}@laptop"
    assert len(set(ids)) == 3
    first = claim_identity(laptop, "claude-code", str(project))  # and they stay the same across restarts
    assert first.agent_id == ids[1]
    second = claim_identity(laptop, "claude-code", str(project))  # a second live bridge: the next slot, same machine
    assert second.agent_id == f"{ids[0]}-2@laptop"
    first.release()
    second.release()


def test_an_unreadable_bundle_leaves_the_identities_of_a_machine_on_its_own(tmp_path: Path) -> None:
    home = tmp_path / "home"
    home.mkdir(mode=0o700)
    bundle_path(home).parent.mkdir(mode=0o700)
    write_private_file(bundle_path(home), b"{not json")
    identity = claim_identity(home, "codex", str(tmp_path))
    assert identity.agent_id == base_id("codex", str(tmp_path))
    identity.release()
