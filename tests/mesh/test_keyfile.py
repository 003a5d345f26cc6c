"""The mesh key when several processes start at once in a fresh home (two bridges launched together, say)."""

from __future__ import annotations

import secrets
from pathlib import Path

import pytest

from agent_comms.mesh.keyfile import KEY_FILE, load_or_create_key


def test_a_process_reading_the_key_while_another_creates_it_gets_the_whole_key(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The other process asks for the key at the worst moment: after this one began creating it, before the random
    bytes are written. Both must end up with one and the same complete key."""
    home = tmp_path / "home"
    real = secrets.token_bytes
    raced: list[bytes] = []

    def token_bytes(size: int | None = None) -> bytes:
        if not raced:
            raced.append(b"")
            raced[0] = load_or_create_key(home)  # the other process, in the middle of our creation
        return real(size)

    monkeypatch.setattr(secrets, "token_bytes", token_bytes)
    key = load_or_create_key(home)
    assert raced == [key]
    assert len(key) == 32
    assert (home / KEY_FILE).read_bytes() == key
    assert sorted(p.name for p in home.iterdir()) == [KEY_FILE]  # no temporary file left behind
