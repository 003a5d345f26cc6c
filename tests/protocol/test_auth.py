"""Tests of the link proof: :mod:`agent_comms.protocol.auth`."""

from __future__ import annotations

import hashlib
import hmac
from typing import Any

import pytest

from agent_comms.protocol.auth import KEY_SIZE, NONCE_SIZE, link_proof, verify_link_proof

KEY = bytes(range(KEY_SIZE))
OTHER_KEY = bytes(range(1, KEY_SIZE + 1))
NONCE_D = bytes.fromhex("00112233445566778899aabbccddeeff")
NONCE_L = bytes.fromhex("ffeeddccbbaa99887766554433221100")
DIALER_ADDR = "127.0.0.1:5555"
LISTENER_ADDR = "127.0.0.1:40000"

CONTEXT: dict[str, Any] = {
    "dialer_nonce": NONCE_D,
    "listener_nonce": NONCE_L,
    "dialer_addr": DIALER_ADDR,
    "listener_addr": LISTENER_ADDR,
}


def _proof(key: bytes = KEY, role: Any = "dialer", **changes: Any) -> bytes:
    return link_proof(key, role, **{**CONTEXT, **changes})


def _verify(mac: bytes, key: bytes = KEY, role: Any = "dialer", **changes: Any) -> bool:
    return verify_link_proof(key, role, mac, **{**CONTEXT, **changes})


def test_constants() -> None:
    assert KEY_SIZE == 32
    assert NONCE_SIZE == 16
    assert len(KEY) == KEY_SIZE
    assert len(NONCE_D) == len(NONCE_L) == NONCE_SIZE


@pytest.mark.parametrize("role", ["dialer", "listener"])
def test_link_proof_is_deterministic(role: Any) -> None:
    first = _proof(role=role)
    second = link_proof(
        bytes(KEY),
        role,
        dialer_nonce=bytes(NONCE_D),
        listener_nonce=bytes(NONCE_L),
        dialer_addr="127.0.0.1:" + "5555",
        listener_addr="127.0.0.1:" + "40000",
    )
    assert first == second
    assert isinstance(first, bytes)
    assert len(first) == hashlib.sha256().digest_size


@pytest.mark.parametrize("role", ["dialer", "listener"])
def test_link_proof_known_answer(role: str) -> None:
    # Protocol v1: HMAC-SHA256 over length-prefixed (2-byte big-endian) label, role, nonces and addresses.
    # Pinned because peers of one user built from different versions must compute the same proofs.
    parts = [
        b"agent-comms link proof v1",
        role.encode(),
        NONCE_D,
        NONCE_L,
        DIALER_ADDR.encode(),
        LISTENER_ADDR.encode(),
    ]
    transcript = b"".join(len(p).to_bytes(2, "big") + p for p in parts)
    assert _proof(role=role) == hmac.new(KEY, transcript, hashlib.sha256).digest()


CHANGES: list[Any] = [
    pytest.param({"key": OTHER_KEY}, id="key"),
    pytest.param({"key": KEY[:-1] + bytes([KEY[-1] ^ 1])}, id="key-one-bit"),
    pytest.param({"role": "listener"}, id="role"),
    pytest.param({"dialer_nonce": NONCE_D[:-1] + b"\x00"}, id="dialer-nonce"),
    pytest.param({"listener_nonce": b"\x01" + NONCE_L[1:]}, id="listener-nonce"),
    pytest.param({"dialer_nonce": NONCE_L, "listener_nonce": NONCE_D}, id="nonces-swapped"),
    pytest.param({"dialer_addr": "127.0.0.1:5556"}, id="dialer-addr"),
    pytest.param({"dialer_addr": "127.0.0.2:5555"}, id="dialer-host"),
    pytest.param({"listener_addr": "127.0.0.1:40001"}, id="listener-addr"),
    pytest.param({"listener_addr": "[::1]:40000"}, id="listener-host"),
    pytest.param({"dialer_addr": LISTENER_ADDR, "listener_addr": DIALER_ADDR}, id="addrs-swapped"),
]


@pytest.mark.parametrize("change", CHANGES)
def test_link_proof_differs_when_any_input_changes(change: dict[str, Any]) -> None:
    base = _proof()
    changed = _proof(**change)
    assert len(changed) == len(base)
    assert changed != base


@pytest.mark.parametrize("change", CHANGES)
def test_verify_rejects_a_proof_made_for_another_context(change: dict[str, Any]) -> None:
    mac = _proof()
    assert _verify(mac)
    assert not _verify(mac, **change)


@pytest.mark.parametrize("role", ["dialer", "listener"])
def test_verify_accepts_the_right_mac(role: Any) -> None:
    assert _verify(_proof(role=role), role=role)


@pytest.mark.parametrize("bit", [0, 1, 7, 8, 100, 128, 255])
def test_verify_rejects_a_flipped_bit(bit: int) -> None:
    mac = bytearray(_proof())
    mac[bit // 8] ^= 1 << (bit % 8)
    assert not _verify(bytes(mac))


@pytest.mark.parametrize(
    "mac",
    [
        pytest.param(b"", id="empty"),
        pytest.param(bytes(32), id="zeros"),
        pytest.param(None, id="truncated"),
        pytest.param(..., id="extended"),
    ],
)
def test_verify_rejects_garbage(mac: Any) -> None:
    good = _proof()
    if mac is None:
        mac = good[:16]
    elif mac is ...:
        mac = good + b"\x00"
    assert not _verify(mac)


def test_reflection_dialer_proof_does_not_verify_as_listener_proof() -> None:
    dialer_mac = _proof(role="dialer")
    listener_mac = _proof(role="listener")
    assert dialer_mac != listener_mac
    assert not _verify(dialer_mac, role="listener")
    assert not _verify(listener_mac, role="dialer")
    assert _verify(dialer_mac, role="dialer")
    assert _verify(listener_mac, role="listener")


@pytest.mark.parametrize(
    ("first", "second"),
    [
        pytest.param(
            {"dialer_addr": "127.0.0.1:1", "listener_addr": "2127.0.0.1:40000"},
            {"dialer_addr": "127.0.0.1:12", "listener_addr": "127.0.0.1:40000"},
            id="byte-moved-between-addresses",
        ),
        pytest.param(
            {"dialer_addr": "", "listener_addr": "ab"},
            {"dialer_addr": "a", "listener_addr": "b"},
            id="empty-address",
        ),
        pytest.param(
            {"dialer_addr": "a", "listener_addr": "b"},
            {"dialer_addr": "ab", "listener_addr": ""},
            id="empty-listener-address",
        ),
        pytest.param(
            {"dialer_nonce": NONCE_D + NONCE_L[:1], "listener_nonce": NONCE_L[1:]},
            {"dialer_nonce": NONCE_D, "listener_nonce": NONCE_L},
            id="byte-moved-between-nonces",
        ),
        pytest.param(
            {"listener_nonce": NONCE_L + DIALER_ADDR[:1].encode(), "dialer_addr": DIALER_ADDR[1:]},
            {"listener_nonce": NONCE_L, "dialer_addr": DIALER_ADDR},
            id="byte-moved-between-nonce-and-address",
        ),
    ],
)
@pytest.mark.parametrize("role", ["dialer", "listener"])
def test_transcript_is_unambiguous(first: dict[str, Any], second: dict[str, Any], role: Any) -> None:
    # The concatenation of the fields is the same in both cases: only the field boundaries differ.
    def concat(fields: dict[str, Any]) -> bytes:
        merged = {**CONTEXT, **fields}
        return b"".join(
            v.encode() if isinstance(v, str) else v
            for v in (merged["dialer_nonce"], merged["listener_nonce"], merged["dialer_addr"], merged["listener_addr"])
        )

    assert concat(first) == concat(second)
    proof_first = _proof(role=role, **first)
    proof_second = _proof(role=role, **second)
    assert proof_first != proof_second
    assert not _verify(proof_first, role=role, **second)
    assert not _verify(proof_second, role=role, **first)
