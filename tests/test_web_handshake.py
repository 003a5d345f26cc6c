"""The web page's handshake (``agent_comms.web.handshake``): the token never leaves the page.

Testing policy: as in ``tests/test_web.py`` (whose browser and process helpers these tests use), the real
``agent-comms web`` runs as a process and Debian's chromium drives the page. The impostor is a real program on the
real port: a WebSocket server (wsproto) that takes the port after ``agent-comms web`` was SIGKILLed and records
every byte it receives. Whether the page retries is read from the page itself: a counter of the WebSockets it
opens (an init script), with Playwright's clock moving the page's timers ten minutes on, so "it stopped retrying"
is checked without waiting that long. The raw WebSocket client (``tests/web_sockets.py``) checks the server's side.
"""

from __future__ import annotations

import base64
import json
import secrets
import signal
from pathlib import Path
from typing import Any

import pytest
import test_web
import trio
from test_web import DEADLINE, Browser, Tab, open_page, open_tab, open_web
from web_sockets import Closed, act, key_id, mac, open_client, open_impostor, prove

from agent_comms.testing.processes import free_port, mesh_env, open_peer
from agent_comms.web.handshake import key_id as server_key_id
from agent_comms.web.handshake import page_proof, proof_matches, server_proof, valid_nonce
from agent_comms.web.keys import RESUME_WINDOW, key_file_path, new_token, read_previous, write_key_file

#: Counts the WebSockets the page opens (run before the page's own script).
COUNT_SOCKETS = """(() => {
  const Real = WebSocket;
  window.socketsOpened = 0;
  window.WebSocket = function (...args) { window.socketsOpened += 1; return new Real(...args); };
  window.WebSocket.prototype = Real.prototype;
  Object.assign(window.WebSocket, {CONNECTING: 0, OPEN: 1, CLOSING: 2, CLOSED: 3});
})();"""
TEN_MINUTES_MS = 10 * 60 * 1000
browser = test_web.browser  # the chromium fixture of tests/test_web.py (one browser for this module too)


async def until_closed(client: Any) -> int:
    """Read frames until the server closes the socket; its close code."""
    try:
        while True:
            await client.receive()
    except Closed as closed:
        return closed.code


def page_errors(tab: Tab) -> list[str]:
    """The console's errors, but for chromium's own line about each refused connection while nobody listens."""
    return [error for error in tab.errors if "net::ERR_CONNECTION_REFUSED" not in error]


def token_forms(token: str) -> list[bytes]:
    """The token as text, and its bytes (and the text's) in hex and base64: none may reach anyone but the server."""
    raw = base64.urlsafe_b64decode(token + "=" * (-len(token) % 4))
    forms = [token.encode()]
    for data in (token.encode(), raw):
        forms += [data.hex().encode(), base64.b64encode(data), base64.urlsafe_b64encode(data).rstrip(b"=")]
    forms.append(raw)
    return forms


async def sockets_opened(tab: Tab) -> int:
    return int(await tab.do(lambda page: page.evaluate("window.socketsOpened")))


async def counting_tab_ready(tab: Tab) -> None:
    await tab.do(lambda page: page.add_init_script(COUNT_SOCKETS))
    await tab.do(lambda page: page.clock.install())  # time still flows; run_for moves the page's timers on


# ---------------------------------------------------------------- the handshake's parts


def test_proofs_are_bound_to_both_nonces_and_to_a_side() -> None:
    token, page_nonce, server_nonce = "t" * 43, "p" * 43, "s" * 43
    proof = server_proof(token, page_nonce, server_nonce)
    assert proof == mac(token, "agent-comms web server", page_nonce, server_nonce)  # what the page checks
    assert page_proof(token, server_nonce, page_nonce) == mac(token, "agent-comms web page", server_nonce, page_nonce)
    # Neither side's proof passes as the other's, nor for other nonces or another token.
    assert not proof_matches(proof, page_proof(token, server_nonce, page_nonce))
    assert not proof_matches(proof, server_proof(token, page_nonce, "x" * 43))
    assert not proof_matches(proof, server_proof("u" * 43, page_nonce, server_nonce))
    assert proof_matches(proof, server_proof(token, page_nonce, server_nonce))
    assert not proof_matches(None, proof)
    assert not proof_matches(["x"], proof)
    assert valid_nonce(secrets.token_urlsafe(32))
    for bad in ("", "short", "a" * 129, "not base64!" * 3, 42, None):
        assert not valid_nonce(bad)
    # The key id: what the page computes, and distinct for two tokens.
    assert server_key_id(token) == key_id(token) == mac(token, "agent-comms web key id")[:16]
    assert server_key_id(token) != server_key_id("u" * 43)


def _key_file(home: Path, port: int, record: object, mode: int = 0o600) -> Path:
    path = key_file_path(home, port)
    path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    path.write_text(json.dumps(record))
    path.chmod(mode)
    return path


def test_the_previous_token_is_read_only_from_a_fresh_0600_key_file_of_the_same_port(tmp_path: Path) -> None:
    """Every condition of ``agent_comms.web.keys`` on its own (but the owner: a test cannot give a file away)."""
    home, port, now = tmp_path / "home", 40123, 1_800_000_000.0
    token = new_token()
    assert read_previous(home, port, now) is None  # no file
    write_key_file(home, port, token)
    path = key_file_path(home, port)
    assert path.stat().st_mode & 0o777 == 0o600
    record = json.loads(path.read_text())
    assert record["port"] == port
    assert record["token"] == token
    assert read_previous(home, port) == token  # as written, now
    assert read_previous(home, port + 1) is None  # another port's file does not exist
    fresh = {"port": port, "token": token, "alive": now - RESUME_WINDOW + 60}
    _key_file(home, port, fresh)
    assert read_previous(home, port, now) == token
    for mode in (0o640, 0o644, 0o400, 0o700, 0o660):
        _key_file(home, port, fresh, mode)
        assert read_previous(home, port, now) is None, oct(mode)
    refused: list[object] = [
        {**fresh, "alive": now - RESUME_WINDOW},  # its launch ended 24 hours ago
        {**fresh, "alive": now + 3600},  # ahead of the clock
        {**fresh, "alive": True},
        {**fresh, "alive": "now"},
        {**fresh, "port": port + 1},  # a file renamed from another port's
        {**fresh, "port": str(port)},
        {**fresh, "token": token[:-1]},
        {**fresh, "token": token + "=="},
        {"port": port, "alive": now},
        [fresh],
    ]
    for record in refused:
        _key_file(home, port, record)
        assert read_previous(home, port, now) is None, record
    path.write_text("not json")
    assert read_previous(home, port, now) is None
    # A link to a good file, even our own, is not followed.
    good = _key_file(home, port + 2, {**fresh, "port": port})
    path.unlink()
    path.symlink_to(good)
    assert read_previous(home, port, now) is None


async def test_server_refuses_every_handshake_but_the_page_s(tmp_path: Path) -> None:
    """The old first frame (the token itself), bad frames, a wrong proof and a replayed one: all closed with 4401."""
    env = mesh_env(tmp_path, free_port())
    with trio.fail_after(DEADLINE):
        async with open_web(env, tmp_path / "alice") as web:
            token = web.token
            nonce = secrets.token_urlsafe(32)
            hello_of = {"type": "hello", "nonce": nonce}
            for first in (
                {"token": token},
                "not json",
                b"\x00binary",
                {"type": "hello", "nonce": "short", "key": key_id(token)},
                {},
                hello_of,  # no key id
                {**hello_of, "key": key_id(new_token())},  # a token the launch does not know
                {**hello_of, "key": ["x"]},
            ):
                async with open_client(web.port) as client:
                    await client.send(first)
                    assert await until_closed(client) == 4401, first
            # A proof recorded on one connection is worth nothing on the next (the server's nonce is new).
            recorded = ""
            for attempt in range(2):
                async with open_client(web.port) as client:
                    await client.send({**hello_of, "key": key_id(token)})
                    challenge = await client.receive()
                    assert challenge["proof"] == server_proof(token, nonce, challenge["nonce"])
                    proof = page_proof(token, challenge["nonce"], nonce) if attempt == 0 else recorded
                    if attempt == 0:
                        recorded = proof
                        await client.send({"type": "proof", "proof": "0" * 64})  # a wrong proof
                    else:
                        await client.send({"type": "proof", "proof": proof})  # the replay
                    assert await until_closed(client) == 4401
            async with open_client(web.port) as client:
                assert (await prove(client, token))["type"] == "state"
            logs = web.logs()
            assert "refused WebSocket /ws: the first frame is not a hello with a nonce" in logs
            assert "refused WebSocket /ws: a frame that is not JSON" in logs
            assert "refused WebSocket /ws: a frame that is not text" in logs
            assert "refused WebSocket /ws: wrong proof of the key" in logs
            assert "refused WebSocket /ws: a key this launch does not know" in logs
            assert token not in logs
            assert "Traceback" not in logs


async def test_pages_leaving_and_bad_frames_end_their_socket_cleanly(tmp_path: Path) -> None:
    """A page that goes, or sends a frame of no known shape, ends its socket alone: no error, the server serves on.

    The socket's reader runs in a nursery, so what it raises arrives as an ExceptionGroup: a plain ``except`` would
    let it through, and the server would log an application error and close the socket as failed (1011).
    """
    env = mesh_env(tmp_path, free_port())
    with trio.fail_after(DEADLINE):
        async with open_web(env, tmp_path / "alice") as web:
            for _ in range(3):  # pages that go away (their TCP connection closes)
                async with open_client(web.port) as client:
                    await prove(client, web.token)
            for bad in (b"\x00binary", "not json", {"type": "nope"}, {"type": "act", "id": "1", "request": {}}):
                async with open_client(web.port) as client:
                    await prove(client, web.token)
                    await client.send(bad)
                    assert await until_closed(client) == 1008, bad
            async with open_client(web.port) as client:
                await prove(client, web.token)
                refused = await act(client, {"call": {"action": "whoami"}})
                assert refused["ok"] is False
                assert "'call' must be a tool call" in refused["error"]
                incomplete = await act(client, {"call": {"action": "send"}}, 3)  # the tool's own error, same socket
                assert incomplete["ok"] is False, incomplete
                created = await act(client, {"command": "/create afterwards"}, 2)
                assert created["ok"] is True, created
            logs = web.logs()
            assert "closed WebSocket /ws: a frame that is not text" in logs
            assert "closed WebSocket /ws: a frame that is not an action" in logs
            assert "Traceback" not in logs
            assert "Error in ASGI" not in logs
            web.process.send_signal(signal.SIGTERM)
            assert await web.process.wait() == 0


# ---------------------------------------------------------------- the page, against an impostor and a relaunch


@pytest.mark.parametrize("mode", ["fake-proof", "close-4401"])
async def test_an_impostor_on_the_port_gets_nothing_and_the_page_stops(
    tmp_path: Path, browser: Browser, mode: str
) -> None:
    env = mesh_env(tmp_path, free_port())
    port = free_port()
    with trio.fail_after(DEADLINE * 2):
        async with open_tab(browser) as tab:
            await counting_tab_ready(tab)
            async with open_web(env, tmp_path / "alice", port=port) as web:
                await open_page(tab, web)
                token = web.token
                web.process.kill()  # a crash: the page keeps retrying its port
                await web.process.wait()
                await tab.do(lambda page: page.wait_for_selector('#connection[data-state="connecting"]'))
            # Nobody on the port: a plain disconnect, so the page keeps trying (with backoff).
            for _ in range(3):
                before = await sockets_opened(tab)
                await tab.do(lambda page: page.clock.run_for(TEN_MINUTES_MS))
                # The timer fired; the next one is set once the refused connection's close event came (real I/O).
                await tab.do(lambda page, n=before: page.wait_for_function(f"window.socketsOpened > {n}"))
            async with open_impostor(port, mode) as impostor:
                await tab.do(lambda page: page.wait_for_selector('#connection[data-state="ended"]'))
                text = await tab.do(lambda page: page.text_content("#connection"))
                assert text == "this page's session ended: open the new link printed by agent-comms web"
                # It stopped: ten minutes of the page's timers open no new socket, and nothing more reaches the port.
                opened, seen = await sockets_opened(tab), impostor.websockets
                await tab.do(lambda page: page.clock.run_for(TEN_MINUTES_MS))
                await tab.do(lambda page: page.clock.run_for(TEN_MINUTES_MS))
                assert await sockets_opened(tab) == opened
                assert impostor.websockets == seen >= 1
                # (More than one upgrade may reach the port before the page stopped: a socket the page gave up
                # while it was still connecting, its handshake timer run out by the page's fast-forwarded clock,
                # can still be connected by the browser's network service on a loaded machine. The page sends
                # nothing on it: only one hello ever arrives, checked below.)
                assert await tab.do(lambda page: page.evaluate("sessionStorage.getItem('agent-comms-token')")) is None
            # What the impostor got: one hello with a random nonce; not the token in any form, no proof to replay.
            assert [json.loads(frame)["type"] for frame in impostor.frames] == ["hello"]
            received = bytes(impostor.raw) + b"".join(
                frame.encode() if isinstance(frame, str) else frame for frame in impostor.frames
            )
            for form in token_forms(token):
                assert form not in received, form
            assert page_errors(tab) == []


async def test_a_relaunch_has_a_new_token_and_moves_the_old_page_onto_it(tmp_path: Path, browser: Browser) -> None:
    """A relaunch on the same port makes a new token (never one planted in a file left behind); the old page proves
    the previous launch's token to it, is handed the new one over the proved socket, and shows every message once."""
    env = mesh_env(tmp_path, free_port())
    port = free_port()
    frames: list[Any] = []

    def record_frames(page: Any) -> None:
        page.on("websocket", lambda socket: socket.on("framereceived", lambda payload: frames.append(payload)))

    with trio.fail_after(DEADLINE * 2):
        async with open_peer("bob", env, tmp_path / "bob") as bob, open_tab(browser) as tab:
            await counting_tab_ready(tab)
            await tab.do(record_frames)
            await bob.call(action="create_room", room="review")
            async with open_web(env, tmp_path / "alice", port=port) as web:
                await open_page(tab, web)
                await tab.do(lambda page: page.click('#rooms li[data-room="review"] button'))
                await bob.call(action="send", target="review", content="before the restart")
                await tab.do(lambda page: page.wait_for_selector('#messages li .content:text-is("before the restart")'))
                web.process.kill()
                await web.process.wait()
                await tab.do(lambda page: page.wait_for_selector('#connection[data-state="connecting"]'))
            # The killed launch's opener is still there; plant a token of our choosing in it: a relaunch takes
            # neither as its own (it accepts the killed launch's only as the previous one, from its key file).
            planted = secrets.token_urlsafe(32)
            web.opener.write_text(web.opener.read_text().replace(web.token, planted))
            frames.clear()
            async with open_web(env, tmp_path / "alice", port=port) as again:
                assert again.token not in (web.token, planted)
                assert again.agent_id == web.agent_id
                await tab.do(lambda page: page.wait_for_selector('#connection[data-state="live"]'))
                # The challenge, then (the page's proof accepted) this launch's token, then the data.
                kinds = [json.loads(frame)["type"] for frame in frames]
                assert kinds[:3] == ["challenge", "rotate", "state"], kinds
                assert json.loads(frames[1])["token"] == again.token
                held = await tab.do(lambda page: page.evaluate("sessionStorage.getItem('agent-comms-token')"))
                assert held == again.token
                await bob.call(action="send", target="review", content="after the restart")
                await tab.do(lambda page: page.wait_for_selector('#messages li .content:text-is("after the restart")'))
                contents = await tab.do(lambda page: page.locator("#messages li .content").all_text_contents())
                assert contents == ["before the restart", "after the restart"]
                # A socket of the old token now would be moved on too; one of the planted token is refused.
                async with open_client(port) as client:
                    rotated: list[str] = []
                    await prove(client, web.token, rotated)
                    assert rotated == [again.token]
                async with open_client(port) as client:
                    await client.send({"type": "hello", "nonce": secrets.token_urlsafe(32), "key": key_id(planted)})
                    assert await until_closed(client) == 4401
                again.process.send_signal(signal.SIGTERM)
                assert await again.process.wait() == 0
                assert not again.opener.exists()
            assert page_errors(tab) == []


async def test_a_page_two_launches_old_is_refused_and_says_its_session_ended(tmp_path: Path, browser: Browser) -> None:
    """Only one generation back: a page that slept through a whole launch holds a token no launch accepts now."""
    env = mesh_env(tmp_path, free_port())
    port = free_port()
    with trio.fail_after(DEADLINE * 2):
        async with open_tab(browser) as tab:
            await counting_tab_ready(tab)
            async with open_web(env, tmp_path / "alice", port=port) as first:
                await open_page(tab, first)
                first.process.kill()
                await first.process.wait()
                await tab.do(lambda page: page.wait_for_selector('#connection[data-state="connecting"]'))
            # The page's timers stop (its retry waits), while a whole launch comes and goes.
            await tab.do(lambda page: page.clock.pause_at(page.evaluate("Date.now()") + 1000))
            opened = await sockets_opened(tab)
            async with open_web(env, tmp_path / "alice", port=port) as second:
                async with open_client(port) as client:  # the first launch's token is still accepted here
                    rotated: list[str] = []
                    await prove(client, first.token, rotated)
                    assert rotated == [second.token]
                second.process.send_signal(signal.SIGTERM)
                assert await second.process.wait() == 0
            assert await sockets_opened(tab) == opened  # the page slept through it
            async with open_web(env, tmp_path / "alice", port=port) as third:
                await tab.do(lambda page: page.clock.resume())
                await tab.do(lambda page: page.clock.run_for(TEN_MINUTES_MS))
                await tab.do(lambda page: page.wait_for_selector('#connection[data-state="ended"]'))
                text = await tab.do(lambda page: page.text_content("#connection"))
                assert text == "this page's session ended: open the new link printed by agent-comms web"
                assert await tab.do(lambda page: page.evaluate("sessionStorage.getItem('agent-comms-token')")) is None
                assert "refused WebSocket /ws: a key this launch does not know" in third.logs()
                async with open_client(port) as client:  # the second launch's token is the one accepted now
                    rotated = []
                    await prove(client, second.token, rotated)
                    assert rotated == [third.token]
                # The new link, in the same tab: live again.
                await tab.do(lambda page: page.goto("about:blank"))
                await open_page(tab, third)
            assert page_errors(tab) == []


async def test_a_launch_on_another_port_does_not_accept_the_old_token(tmp_path: Path) -> None:
    """The previous token belongs to its port: not to a launch on another, not even from a key file copied there."""
    env = mesh_env(tmp_path, free_port())
    home = Path(env["AGENT_COMMS_HOME"])
    port, other = free_port(), free_port()
    with trio.fail_after(DEADLINE * 2):
        async with open_web(env, tmp_path / "alice", port=port) as first:
            first.process.send_signal(signal.SIGTERM)
            assert await first.process.wait() == 0
        copied = key_file_path(home, other)
        copied.write_bytes(key_file_path(home, port).read_bytes())
        copied.chmod(0o600)
        async with open_web(env, tmp_path / "alice", port=other) as elsewhere:
            async with open_client(other) as client:
                await client.send({"type": "hello", "nonce": secrets.token_urlsafe(32), "key": key_id(first.token)})
                assert await until_closed(client) == 4401
            assert "refused WebSocket /ws: a key this launch does not know" in elsewhere.logs()
            assert json.loads(copied.read_text())["token"] == elsewhere.token  # its own, in place of the copy
            async with open_client(other) as client:
                assert (await prove(client, elsewhere.token))["type"] == "state"
        # The same port again: accepted.
        async with open_web(env, tmp_path / "alice", port=port) as back, open_client(port) as client:
            rotated: list[str] = []
            await prove(client, first.token, rotated)
            assert rotated == [back.token]
