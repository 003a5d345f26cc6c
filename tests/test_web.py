"""Tests for ``agent-comms web`` (``agent_comms.web``): the real command, real agents, a real browser.

Testing policy: everything runs as it would for a person. ``agent-comms web`` is started as a process on a private
mesh (temporary ``AGENT_COMMS_HOME``, free port), next to other agents that are real ``agent-comms bridge jsonl``
processes driven over their standard input and output; what reaches an agent is read from its bridge. The page is
driven by Debian's ``chromium`` through Playwright (``executable_path``, nothing downloaded), one browser per module
(fresh profile, network features off, ``--host-resolver-rules`` mapping two made-up host names to 127.0.0.1 for the
DNS-rebinding and attacker pages). An attacker page is served by a plain HTTP server on another 127.0.0.1 port.
Raw HTTP requests check the guards byte for byte. Without chromium or Playwright the browser tests are skipped, and
fail when ``CI=true``. Every test has a deadline and waits on events (a page element, a bridge's line), never a
fixed sleep.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import http.server
import json
import os
import queue
import re
import signal
import subprocess
import sys
import threading
from collections.abc import AsyncIterator, Callable, Iterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any, TypeVar

import pytest
import trio
from web_sockets import Closed, act, open_client, prove

from agent_comms.testing.processes import Peer, alive, free_port, mesh_env, open_peer

DEADLINE = 90
CHROMIUM = "/usr/bin/chromium"
#: The launch flags of the test browser (headless; no sandbox in containers; nothing that reaches the network).
CHROMIUM_FLAGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    # DNS rebinding, and an attacker's site: made-up names that resolve to 127.0.0.1
    "--host-resolver-rules=MAP rebind.test 127.0.0.1, MAP attacker.test 127.0.0.1",
]
HOSTILE = '<img src=x onerror="document.title=\'pwned\'"><script>document.title="pwned"</script>'
ARTIFACTS = Path(os.environ.get("AGENT_COMMS_WEB_ARTIFACTS", Path(__file__).parent.parent / "build" / "web"))
T = TypeVar("T")


# ---------------------------------------------------------------- the browser, in a thread of its own


class Browser:
    """One chromium for the module, driven through Playwright's sync API in a dedicated thread.

    Playwright's objects belong to the thread that made them; Trio tests hand that thread functions to run
    (:meth:`run`) and wait for their results without blocking the Trio loop.
    """

    def __init__(self) -> None:
        self._jobs: queue.Queue[tuple[Callable[[Any], Any], concurrent.futures.Future[Any]] | None] = queue.Queue()
        self._ready: concurrent.futures.Future[None] = concurrent.futures.Future()
        self._thread = threading.Thread(target=self._main, name="chromium", daemon=True)
        self._thread.start()
        self._ready.result(timeout=60)

    def _main(self) -> None:
        from playwright.sync_api import sync_playwright

        # An asyncio loop of this thread's own: once trio-asyncio was imported (the hub's gateway, in this same test
        # process), asyncio's loops go through its policy unless a thread sets one.
        asyncio.set_event_loop_policy(asyncio.DefaultEventLoopPolicy())
        try:
            with sync_playwright() as playwright:
                browser = playwright.chromium.launch(executable_path=CHROMIUM, headless=True, args=CHROMIUM_FLAGS)
                self._ready.set_result(None)
                while (job := self._jobs.get()) is not None:
                    function, future = job
                    try:
                        future.set_result(function(browser))
                    except BaseException as exc:  # handed to the test that asked
                        future.set_exception(exc)
                browser.close()
        except BaseException as exc:
            if not self._ready.done():
                self._ready.set_exception(exc)

    async def run(self, function: Callable[[Any], T]) -> T:
        """Run ``function(browser)`` in the browser's thread; its result."""
        future: concurrent.futures.Future[T] = concurrent.futures.Future()
        self._jobs.put((function, future))
        return await trio.to_thread.run_sync(future.result, abandon_on_cancel=True)

    def close(self) -> None:
        self._jobs.put(None)
        self._thread.join(timeout=30)


@pytest.fixture(scope="module")
def browser() -> Iterator[Browser]:
    missing = None
    if not Path(CHROMIUM).exists():
        missing = f"{CHROMIUM} is missing (apt-get install chromium)"
    else:
        try:
            import playwright  # noqa: F401
        except ImportError:
            missing = "playwright is not installed (pip install 'agent-comms[test]')"
    if missing is not None:
        if os.environ.get("CI") == "true":
            pytest.fail(f"the browser tests need chromium and playwright: {missing}")
        pytest.skip(missing)
    shared = Browser()
    yield shared
    shared.close()


class Tab:
    """A page in a fresh browser context, with its console errors collected."""

    def __init__(self, browser: Browser, page: Any) -> None:
        self.browser = browser
        self.page = page
        self.errors: list[str] = []

    async def do(self, function: Callable[[Any], T]) -> T:
        """Run ``function(page)`` in the browser's thread."""
        return await self.browser.run(lambda _browser: function(self.page))


@asynccontextmanager
async def open_tab(browser: Browser, *, width: int = 1280, height: int = 800) -> AsyncIterator[Tab]:
    def make(shared: Any) -> Tab:
        context = shared.new_context(viewport={"width": width, "height": height})
        context.set_default_timeout(DEADLINE * 1000 / 2)
        tab = Tab(browser, context.new_page())
        tab.page.on("console", lambda message: message.type == "error" and tab.errors.append(message.text))
        tab.page.on("pageerror", lambda exc: tab.errors.append(str(exc)))
        return tab

    tab = await browser.run(make)
    try:
        yield tab
    finally:
        await browser.run(lambda _shared: tab.page.context.close())


# ---------------------------------------------------------------- `agent-comms web` as a process


class Web:
    """A running ``agent-comms web``: its process, port, token and everything it printed."""

    def __init__(self, process: trio.Process, home: Path) -> None:
        self.process = process
        self.home = home
        self.port = 0
        self.token = ""
        self.agent_id = ""
        self.out: list[str] = []
        self.err: list[str] = []
        self._started = trio.Event()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/"

    @property
    def opener(self) -> Path:
        return self.home / "web" / f"open-{self.port}.html"

    async def read(self, stream: trio.abc.ReceiveStream, lines: list[str]) -> None:
        buffer = b""
        while chunk := await stream.receive_some():
            buffer += chunk
            *done, buffer = buffer.split(b"\n")
            for raw in done:
                line = raw.decode(errors="replace")
                lines.append(line)
                found = re.search(r"\((human-[0-9a-f]+)\) is on the mesh\. The page: http://127\.0\.0\.1:(\d+)/", line)
                if found:
                    self.agent_id, self.port = found.group(1), int(found.group(2))
                    text = self.opener.read_text()
                    self.token = re.search(r"#token=([A-Za-z0-9_-]+)", text).group(1)  # type: ignore[union-attr]
                    self._started.set()

    def logs(self) -> str:
        return "\n".join(self.out + self.err)


@asynccontextmanager
async def open_web(env: dict[str, str], cwd: Path, *, port: int = 0, name: str = "alice") -> AsyncIterator[Web]:
    """Run ``agent-comms web --no-open`` in ``cwd`` until the block ends (then SIGKILL it if it still runs)."""
    await trio.Path(cwd).mkdir(parents=True, exist_ok=True)
    command = [sys.executable, "-m", "agent_comms", "web", "--no-open", "--port", str(port), "--name", name]
    process = await trio.lowlevel.open_process(
        command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, env={**env, "AGENT_COMMS_LOAD_PLUGINS": ""}, cwd=cwd
    )
    web = Web(process, Path(env["AGENT_COMMS_HOME"]))
    try:
        async with trio.open_nursery() as nursery:
            assert process.stdout is not None
            assert process.stderr is not None
            nursery.start_soon(web.read, process.stdout, web.out)
            nursery.start_soon(web.read, process.stderr, web.err)
            with trio.fail_after(DEADLINE / 2):
                await web._started.wait()
            yield web
            nursery.cancel_scope.cancel()
    finally:
        if process.poll() is None:
            process.kill()
        with trio.move_on_after(5):
            await process.wait()


@asynccontextmanager
async def mesh(tmp_path: Path, *names: str) -> AsyncIterator[tuple[dict[str, str], Web, list[Peer]]]:
    """A private mesh: ``agent-comms web`` (alice) and one jsonl bridge per name."""
    env = mesh_env(tmp_path, free_port())
    async with open_web(env, tmp_path / "alice") as web:
        peers: list[Peer] = []
        async with _peers(env, tmp_path, names, peers):
            yield env, web, peers


@asynccontextmanager
async def _peers(env: dict[str, str], tmp_path: Path, names: tuple[str, ...], into: list[Peer]) -> AsyncIterator[None]:
    if not names:
        yield
        return
    async with open_peer(names[0], env, tmp_path / names[0]) as peer:
        into.append(peer)
        async with _peers(env, tmp_path, names[1:], into):
            yield


async def open_page(tab: Tab, web: Web) -> None:
    """Open the page the way the person's browser does: through the 0600 file, which holds the token."""
    opener = web.opener.as_uri()
    await tab.do(lambda page: page.goto(opener))
    await tab.do(lambda page: page.wait_for_selector('#connection[data-state="live"]'))


# ---------------------------------------------------------------- what the page shows, live


async def test_page_shows_agents_messages_receipts_and_posts(tmp_path: Path, browser: Browser) -> None:
    with trio.fail_after(DEADLINE):
        async with mesh(tmp_path, "bob", "carol") as (_env, web, (bob, carol)), open_tab(browser) as tab:
            await open_page(tab, web)
            # The token left the address bar at once (not in the history, nor in a copied link).
            assert "token" not in await tab.do(lambda page: page.url)
            # Agents with their presence; carol SIGKILLed is shown offline.
            for peer in (bob, carol):
                await tab.do(
                    lambda page, p=peer: page.wait_for_selector(f'li[data-agent-id="{p.agent_id}"][data-online="true"]')
                )
            carol.process.kill()
            await tab.do(
                lambda page: page.wait_for_selector(f'li[data-agent-id="{carol.agent_id}"][data-online="false"]')
            )

            # A room message from bob appears live; so does his direct message, with an unread count.
            assert (await bob.call(action="create_room", room="review"))["is_error"] is False
            await tab.do(lambda page: page.click('#rooms li[data-room="review"] button'))
            await tab.do(lambda page: page.wait_for_selector('#rooms li[data-room="review"][data-joined="true"]'))
            await bob.call(action="send", target="review", content="the diff is up")
            await tab.do(lambda page: page.wait_for_selector('#messages li .content:text-is("the diff is up")'))
            await bob.call(action="dm", target=web.agent_id, content="a private word")
            await tab.do(
                lambda page: page.wait_for_selector(
                    f'#agents li[data-agent-id="{bob.agent_id}"] .badge[data-unread="1"]'
                )
            )

            # Hostile markup from an agent is shown as text, and runs nothing.
            await bob.call(action="send", target="review", content=HOSTILE)
            await tab.do(lambda page: page.locator("#messages li .content").get_by_text(HOSTILE, exact=True).wait_for())
            shown = await tab.do(lambda page: page.locator("#messages li .content").all_text_contents())
            assert shown == ["the diff is up", HOSTILE]
            assert await tab.do(lambda page: page.locator("#messages img, #messages script").count()) == 0
            assert await tab.do(lambda page: page.title()) == "agent-comms"

            # The person posts in the room: bob's bridge gets it, and the page shows it read by bob.
            await tab.do(lambda page: page.fill("#text", "looks good to me"))
            await tab.do(lambda page: page.click("#send"))
            event = await bob.wait_for(
                lambda m: m.get("type") == "event" and m["event"]["content"] == "looks good to me"
            )
            assert event["event"]["sender"] == web.agent_id
            assert event["event"]["room"] == "review"
            await tab.do(lambda page: page.wait_for_selector('#messages li.mine [data-receipt="read by 1/1"]'))

            # The person answers bob's DM (reply): bob's bridge gets it, the page shows it read.
            await tab.do(lambda page: page.click(f'#agents li[data-agent-id="{bob.agent_id}"]'))
            await tab.do(lambda page: page.wait_for_selector('#messages li .content:text-is("a private word")'))
            assert (
                await tab.do(lambda page: page.locator(f'#agents li[data-agent-id="{bob.agent_id}"] .badge').count())
                == 0
            )
            await tab.do(lambda page: page.click("#messages li:last-child .reply-link"))
            await tab.do(lambda page: page.fill("#text", "yes, go ahead"))
            await tab.do(lambda page: page.press("#text", "Enter"))
            event = await bob.wait_for(lambda m: m.get("type") == "event" and m["event"]["type"] == "dm")
            assert event["event"]["content"] == "yes, go ahead"
            assert event["event"]["reply_to"]
            await tab.do(lambda page: page.wait_for_selector('#messages li.mine [data-receipt="read"]'))

            # A chat command typed in the box works as in the chat.
            await tab.do(lambda page: page.fill("#text", "/create notes private"))
            await tab.do(lambda page: page.press("#text", "Enter"))
            await tab.do(lambda page: page.wait_for_selector('#rooms li[data-room="notes"][data-joined="true"]'))
            await tab.do(lambda page: page.click('#rooms li[data-room="notes"]'))
            await tab.do(lambda page: page.click("#leave"))
            await tab.do(lambda page: page.wait_for_selector('#rooms li[data-room="notes"][data-joined="false"]'))

            await tab.do(lambda page: page.click('#rooms li[data-room="review"]'))
            await tab.do(lambda page: page.wait_for_selector('#messages li .content:text-is("looks good to me")'))
            await trio.Path(ARTIFACTS).mkdir(parents=True, exist_ok=True)
            await tab.do(lambda page: page.screenshot(path=str(ARTIFACTS / "web.png")))
            assert tab.errors == []


async def test_page_works_at_a_narrow_width(tmp_path: Path, browser: Browser) -> None:
    with trio.fail_after(DEADLINE):
        async with mesh(tmp_path, "bob") as (_env, web, (bob,)), open_tab(browser, width=380, height=760) as tab:
            await open_page(tab, web)
            await bob.call(action="dm", target=web.agent_id, content="short screens too")
            await tab.do(lambda page: page.click(f'#agents li[data-agent-id="{bob.agent_id}"]'))
            await tab.do(lambda page: page.wait_for_selector('#messages li .content:text-is("short screens too")'))
            overflow = await tab.do(lambda page: page.evaluate("document.documentElement.scrollWidth - innerWidth"))
            assert overflow <= 0  # nothing wider than the screen
            assert await tab.do(lambda page: page.is_visible("#send"))
            assert tab.errors == []


async def test_restart_reconnects_and_shows_nothing_twice(tmp_path: Path, browser: Browser) -> None:
    """The same tab, no new link: after a crash and after a clean restart it is live again by itself.

    Each launch has a new token; the page resumes with the previous launch's and is handed the new one.
    """
    env = mesh_env(tmp_path, free_port())
    port = free_port()
    side_badge = '#rooms li[data-room="side"] .badge'

    async def unread_side(tab: Tab) -> str | None:
        return await tab.do(lambda page: page.get_attribute(side_badge, "data-unread"))

    async def held(tab: Tab) -> str | None:
        return await tab.do(lambda page: page.evaluate("sessionStorage.getItem('agent-comms-token')"))

    with trio.fail_after(DEADLINE * 3):
        async with open_peer("bob", env, tmp_path / "bob") as bob, open_tab(browser) as tab:
            await bob.call(action="create_room", room="review")
            await bob.call(action="create_room", room="side")
            async with open_web(env, tmp_path / "alice", port=port) as web:
                await open_page(tab, web)
                for room in ("review", "side"):
                    await tab.do(lambda page, r=room: page.click(f'#rooms li[data-room="{r}"] button'))
                    await tab.do(
                        lambda page, r=room: page.wait_for_selector(f'#rooms li[data-room="{r}"]:not(:has(button))')
                    )
                await tab.do(lambda page: page.click('#rooms li[data-room="review"]'))
                await bob.call(action="send", target="review", content="before the restart")
                await bob.call(action="send", target="side", content="aside 1")
                await tab.do(lambda page: page.wait_for_selector('#messages li .content:text-is("before the restart")'))
                await tab.do(lambda page: page.wait_for_selector(f'{side_badge}[data-unread="1"]'))
                web.process.kill()  # a crash
                await web.process.wait()
                await tab.do(lambda page: page.wait_for_selector('#connection[data-state="connecting"]'))
            async with open_web(env, tmp_path / "alice", port=port) as again:
                assert again.token != web.token
                assert again.agent_id == web.agent_id
                await tab.do(lambda page: page.wait_for_selector('#connection[data-state="live"]'))
                assert await held(tab) == again.token  # moved onto this launch's token
                await bob.call(action="send", target="review", content="after the restart")
                await tab.do(lambda page: page.wait_for_selector('#messages li .content:text-is("after the restart")'))
                contents = await tab.do(lambda page: page.locator("#messages li .content").all_text_contents())
                assert contents == ["before the restart", "after the restart"]
                assert await unread_side(tab) == "1"
                await bob.call(action="send", target="side", content="aside 2")
                await tab.do(lambda page: page.wait_for_selector(f'{side_badge}[data-unread="2"]'))
                again.process.send_signal(signal.SIGTERM)  # a clean exit this time
                assert await again.process.wait() == 0
                assert not again.opener.exists()
                await tab.do(lambda page: page.wait_for_selector('#connection[data-state="connecting"]'))
            async with open_web(env, tmp_path / "alice", port=port) as third:
                await tab.do(lambda page: page.wait_for_selector('#connection[data-state="live"]'))
                assert await held(tab) == third.token
                await bob.call(action="send", target="review", content="after the second restart")
                await tab.do(
                    lambda page: page.wait_for_selector('#messages li .content:text-is("after the second restart")')
                )
                contents = await tab.do(lambda page: page.locator("#messages li .content").all_text_contents())
                assert contents == ["before the restart", "after the restart", "after the second restart"]
                assert await unread_side(tab) == "2"
                await tab.do(lambda page: page.click('#rooms li[data-room="side"]'))
                side = await tab.do(lambda page: page.locator("#messages li .content").all_text_contents())
                assert side == ["aside 1", "aside 2"]
                assert web.token not in third.logs()
                assert again.token not in third.logs()
            # Chromium logs each refused connection while nobody listens; nothing else went wrong on the page.
            assert [error for error in tab.errors if "net::ERR_CONNECTION_REFUSED" not in error] == []


async def test_sigterm_with_the_page_open_exits_zero_and_goes_offline(tmp_path: Path, browser: Browser) -> None:
    with trio.fail_after(DEADLINE):
        async with mesh(tmp_path, "bob") as (_env, web, (bob,)), open_tab(browser) as tab:
            await open_page(tab, web)
            await bob.wait_until(web.agent_id, online=True)
            with trio.fail_after(10):  # promptly, with the page's WebSocket open
                web.process.send_signal(signal.SIGTERM)
                assert await web.process.wait() == 0
            await bob.wait_until(web.agent_id, online=False)
            assert "alice left the mesh." in web.out
            assert not web.opener.exists()
            await tab.do(lambda page: page.wait_for_selector('#connection[data-state="connecting"]'))


# ---------------------------------------------------------------- safe by construction


async def raw_http(port: int, request: str) -> tuple[int, dict[str, str], bytes]:
    """Send one raw HTTP/1.1 request to 127.0.0.1:``port``; the status, headers (lower-case names) and body."""
    stream = await trio.open_tcp_stream("127.0.0.1", port)
    async with stream:
        await stream.send_all(request.replace("\n", "\r\n").encode())
        data = b""
        while chunk := await stream.receive_some():
            data += chunk
    head, _, body = data.partition(b"\r\n\r\n")
    status_line, *lines = head.decode("latin-1").split("\r\n")
    headers = {name.lower(): value.strip() for name, _, value in (line.partition(":") for line in lines)}
    return int(status_line.split()[1]), headers, body


def get(path: str, host: str, *extra: str) -> str:
    return "\n".join([f"GET {path} HTTP/1.1", f"Host: {host}", "Connection: close", *extra, "", ""])


def post(path: str, host: str, body: str, *extra: str) -> str:
    head = [f"POST {path} HTTP/1.1", f"Host: {host}", "Connection: close", f"Content-Length: {len(body)}", *extra]
    return "\n".join([*head, "", body])


async def test_guards_refuse_wrong_host_origin_token_and_type(tmp_path: Path) -> None:
    env = mesh_env(tmp_path, free_port())
    with trio.fail_after(DEADLINE):
        async with open_web(env, tmp_path / "alice") as web:
            port, token = web.port, web.token
            here = f"127.0.0.1:{port}"
            status, headers, _ = await raw_http(port, get("/", here))
            assert status == 200
            assert headers["content-security-policy"] == "default-src 'self'; frame-ancestors 'none'"
            assert headers["x-content-type-options"] == "nosniff"
            assert headers["cache-control"] == "no-store"
            assert headers["referrer-policy"] == "no-referrer"
            assert not [name for name in headers if name.startswith("access-control")]
            assert (await raw_http(port, get("/web.js", f"localhost:{port}")))[0] == 200
            # The Host must be exactly the page's; a present Origin must be the page's: for pages and the WebSocket.
            for host in (f"rebind.test:{port}", "127.0.0.1", f"127.0.0.1:{port + 1}", f"[::1]:{port}"):
                status, headers, _ = await raw_http(port, get("/", host))
                assert status == 403, host
                assert headers["content-security-policy"].startswith("default-src 'self'")
                with pytest.raises(Closed) as refused:
                    async with open_client(port, host=host):
                        pass
                assert refused.value.code == 403, host
            for origin in (f"http://127.0.0.1:{port + 1}", "null", f"https://{here}"):
                assert (await raw_http(port, get("/", here, f"Origin: {origin}")))[0] == 403
                with pytest.raises(Closed) as refused:
                    async with open_client(port, origin=origin):
                        pass
                assert refused.value.code == 403, origin
            assert (await raw_http(port, get("/", here, f"Origin: http://{here}")))[0] == 200
            # No HTTP data endpoint: nothing to read or post, with or without the token, of any type.
            call = json.dumps({"call": {"action": "create_room", "room": "stolen"}})
            for kind in ("application/json", "application/x-www-form-urlencoded", "text/plain"):
                for path in ("/api/action", "/"):
                    status, headers, _ = await raw_http(
                        port, post(path, here, call, f"Content-Type: {kind}", f"Authorization: Bearer {token}")
                    )
                    assert status in (404, 405), (path, kind)
                    assert headers["cache-control"] == "no-store"
            assert (await raw_http(port, get("/api/state", here, f"Authorization: Bearer {token}")))[0] == 404
            # No CORS: a preflight is not answered with any access-control header.
            preflight = get("/", here, f"Origin: http://{here}", "Access-Control-Request-Method: POST")
            status, headers, _ = await raw_http(port, preflight.replace("GET", "OPTIONS", 1))
            assert status >= 400
            assert not [name for name in headers if name.startswith("access-control")]
            # Nothing above acted: no room was created. The page's own handshake works, and so do its actions.
            async with open_client(port, origin=f"http://{here}") as client:
                assert (await prove(client, token))["rooms"] == []
                answer = await act(client, json.loads(call), 7)
                assert answer["ok"] is True, answer
            assert "refused GET /: wrong Host header" in web.logs()
            assert "refused WebSocket /ws: foreign Origin" in web.logs()


async def test_missing_or_wrong_token_refused_in_the_browser(tmp_path: Path, browser: Browser) -> None:
    with trio.fail_after(DEADLINE):
        async with mesh(tmp_path) as (_env, web, _peers), open_tab(browser) as tab:
            await tab.do(lambda page: page.goto(web.url))  # no fragment: no key
            await tab.do(lambda page: page.wait_for_selector('#connection[data-state="refused"]'))
            await tab.do(lambda page: page.goto("about:blank"))  # else only the fragment changes: no new load
            await tab.do(lambda page: page.goto(web.url + "#token=wrong-token-of-the-right-length-000000000"))
            # The server cannot prove it knows that token: the page's session is over (it sent no proof of its own).
            await tab.do(lambda page: page.wait_for_selector('#connection[data-state="ended"]'))
            assert "open the new link" in await tab.do(lambda page: page.text_content("#connection"))
            assert await tab.do(lambda page: page.locator("#agents li[data-agent-id]").count()) == 0
            script = """async () => {
                const codes = [];
                for (const first of ['{"token": "wrong"}', 'not json', '{}', '{"type": "hello", "nonce": "x"}']) {
                    codes.push(await new Promise((done) => {
                        const socket = new WebSocket(`ws://${location.host}/ws`);
                        socket.onopen = () => socket.send(first);
                        socket.onmessage = () => done('data');
                        socket.onclose = (event) => done(event.code);
                    }));
                }
                const action = await fetch('/api/action', {method: 'POST',
                    headers: {'Content-Type': 'application/json'},
                    body: JSON.stringify({call: {action: 'create_room', room: 'stolen'}})});
                return {codes, action: action.status};
            }"""
            result = await tab.do(lambda page: page.evaluate(script))
            assert result == {"codes": [4401, 4401, 4401, 4401], "action": 404}
            async with open_client(web.port) as client:
                assert (await prove(client, web.token))["rooms"] == []
            assert "refused WebSocket /ws: the first frame is not a hello with a nonce" in web.logs()


class _AttackerPage(http.server.BaseHTTPRequestHandler):
    page = b""

    def do_GET(self) -> None:
        self.send_response(200)
        self.send_header("Content-Type", "text/html")
        self.end_headers()
        self.wfile.write(self.page)

    def log_message(self, format: str, *args: Any) -> None:
        pass


@asynccontextmanager
async def attacker_site(page: str) -> AsyncIterator[int]:
    """Serve ``page`` at / on another 127.0.0.1 port (a plain HTTP server in a thread); its port."""
    handler = type("Handler", (_AttackerPage,), {"page": page.encode()})
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield server.server_address[1]
    finally:
        server.shutdown()
        server.server_close()


ATTACK = """<!doctype html><title>attacker</title><body>
<form id=f method=POST enctype=text/plain target=sink>
<input name='{"call":{"action":"send","target":"review","content":"form' value='"}}'></form>
<iframe name=sink></iframe>
<script>
const target = "TARGET", token = "TOKEN", call = {call: {action: "send", target: "review", content: "pwned"}};
async function attack() {
  const results = {};
  document.getElementById("f").action = target + "/api/action";
  document.getElementById("f").submit();
  try {
    await fetch(target + "/api/action", {method: "POST", mode: "no-cors", headers: {"Content-Type": "text/plain"},
      body: JSON.stringify(call)});
    results.noCors = "sent";
  } catch (e) { results.noCors = "failed"; }
  try {
    const answer = await fetch(target + "/api/action", {method: "POST",
      headers: {"Content-Type": "application/json", "Authorization": "Bearer " + token}, body: JSON.stringify(call)});
    results.json = "read " + answer.status;
  } catch (e) { results.json = "blocked"; }
  try {
    const answer = await fetch(target + "/api/state", {headers: {"Authorization": "Bearer " + token}});
    results.state = "read " + answer.status;
  } catch (e) { results.state = "blocked"; }
  results.socket = await new Promise((done) => {
    const socket = new WebSocket(target.replace("http", "ws") + "/ws");
    socket.onopen = () => socket.send(JSON.stringify({token}));
    socket.onmessage = () => done("data");
    socket.onclose = (event) => done("closed " + event.code);
  });
  return results;
}
</script></body>"""


async def test_attacker_page_cannot_post_even_with_the_token(tmp_path: Path, browser: Browser) -> None:
    """Another site on another 127.0.0.1 port, even one that knows the token, reaches nothing on the mesh."""
    with trio.fail_after(DEADLINE):
        async with mesh(tmp_path, "bob") as (_env, web, (bob,)), open_tab(browser) as tab:
            await bob.call(action="create_room", room="review")
            async with open_client(web.port) as client:
                await prove(client, web.token)
                await client.send(
                    {"type": "act", "id": 1, "request": {"call": {"action": "join_room", "room": "review"}}}
                )
                while (answer := await client.receive())["type"] != "answer":
                    pass
                assert answer["ok"] is True, answer
            for origin in (f"http://127.0.0.1:{web.port}", f"http://rebind.test:{web.port}"):
                page = ATTACK.replace("TARGET", origin).replace("TOKEN", web.token)
                async with attacker_site(page) as attacker_port:
                    for site in (f"http://127.0.0.1:{attacker_port}/", f"http://attacker.test:{attacker_port}/"):
                        await tab.do(lambda p, s=site: p.goto(s))
                        results = await tab.do(lambda p: p.evaluate("attack()"))
                        assert results["json"] == "blocked", results
                        assert results["state"] == "blocked", results
                        assert results["socket"] == "closed 1006", results  # the handshake was refused
            # Nothing reached the mesh: bob's bridge saw no message, and the room has none.
            marker = (await bob.call(action="send", target="review", content="marker"))["data"]["message_id"]
            assert (await bob.call(action="read_room", room="review"))["data"]["messages"] == [marker]
            assert not [m for m in bob.seen if m.get("type") == "event" and m["event"]["type"] == "room_message"]
            logs = web.logs()
            assert "refused POST /api/action: foreign Origin" in logs
            assert "refused WebSocket /ws: foreign Origin" in logs
            assert "refused WebSocket /ws: wrong Host header" in logs


async def test_dns_rebinding_is_refused(tmp_path: Path, browser: Browser) -> None:
    """A name that resolves to 127.0.0.1 (``--host-resolver-rules``): the page, its API and WebSocket refuse it."""
    with trio.fail_after(DEADLINE):
        async with mesh(tmp_path) as (_env, web, _peers), open_tab(browser) as tab:
            rebound = f"http://rebind.test:{web.port}"
            for path in ("/", "/api/state", "/web.js"):
                response = await tab.do(lambda page, p=path: page.goto(rebound + p))
                assert response.status == 403, path
            # The rebinding page runs on its own origin (here: the refusal's page) and talks to the server by name.
            script = """async () => {
                const api = await fetch('/api/state', {headers: {Authorization: 'Bearer TOKEN'}});
                const post = await fetch('/api/action', {method: 'POST', headers: {'Content-Type': 'application/json',
                    Authorization: 'Bearer TOKEN'}, body: JSON.stringify({command: '/create rebound'})});
                const socket = await new Promise((done) => {
                    const ws = new WebSocket(`ws://${location.host}/ws`);
                    ws.onopen = () => ws.send(JSON.stringify({token: 'TOKEN'}));
                    ws.onmessage = () => done('data');
                    ws.onclose = (event) => done('closed ' + event.code);
                });
                return [api.status, post.status, socket];
            }""".replace("TOKEN", web.token)
            assert await tab.do(lambda page: page.evaluate(script)) == [403, 403, "closed 1006"]
            async with open_client(web.port) as client:
                assert (await prove(client, web.token))["rooms"] == []
            assert "refused WebSocket /ws: wrong Host header" in web.logs()


async def test_token_is_in_no_log_and_no_command_line(tmp_path: Path, browser: Browser) -> None:
    """The browser is handed a 0600 file's path; the token never appears in argv, output, or the opener's mode."""
    env = mesh_env(tmp_path, free_port())
    record = tmp_path / "browser-argv"
    fake_browser = tmp_path / "browser"
    # A stand-in for the person's browser (none can open a window here): it records the command line it gets.
    fake_browser.write_text(f'#!/bin/sh\nprintf "%s\\n" "$@" > {record}\n')
    fake_browser.chmod(0o700)
    with trio.fail_after(DEADLINE):
        cwd = tmp_path / "alice"
        await trio.Path(cwd).mkdir()
        command = [sys.executable, "-m", "agent_comms", "web", "--name", "alice"]
        process = await trio.lowlevel.open_process(
            command,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            cwd=cwd,
            env={**env, "BROWSER": str(fake_browser), "AGENT_COMMS_LOAD_PLUGINS": ""},
        )
        web = Web(process, Path(env["AGENT_COMMS_HOME"]))
        async with open_tab(browser) as tab, trio.open_nursery() as nursery:
            assert process.stdout is not None
            nursery.start_soon(web.read, process.stdout, web.out)
            await web._started.wait()
            while not record.exists():  # noqa: ASYNC110 - another process writes it
                await trio.sleep(0.05)
            argv = record.read_text().split()
            assert argv == [web.opener.as_uri()]
            assert web.opener.stat().st_mode & 0o777 == 0o600
            await open_page(tab, web)
            await tab.do(lambda page: page.fill("#text", "/create logged"))
            await tab.do(lambda page: page.press("#text", "Enter"))
            await tab.do(lambda page: page.wait_for_selector('#rooms li[data-room="logged"]'))
            for pid in (int(p) for p in os.listdir("/proc") if p.isdigit()):
                try:
                    cmdline = await trio.Path(f"/proc/{pid}/cmdline").read_bytes()
                except OSError:
                    continue
                assert web.token.encode() not in cmdline, pid
            process.send_signal(signal.SIGTERM)
            assert await process.wait() == 0
            nursery.cancel_scope.cancel()
        assert web.token not in web.logs()
        assert "alice left the mesh." in web.logs()
        assert not alive(process.pid)


async def test_a_port_in_use_is_a_clear_error(tmp_path: Path) -> None:
    env = mesh_env(tmp_path, free_port())
    with trio.socket.socket() as taken, trio.fail_after(DEADLINE):
        await taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        command = [sys.executable, "-m", "agent_comms", "web", "--no-open", "--port", str(port)]
        result = await trio.run_process(
            command, env=env, cwd=tmp_path, capture_stdout=True, capture_stderr=True, check=False
        )
        assert result.returncode == 3
        assert (
            result.stderr.decode()
            == f"agent-comms: could not serve the page on 127.0.0.1:{port}: Address already in use\n"
        )
        assert not (Path(env["AGENT_COMMS_HOME"]) / "web" / f"open-{port}.html").exists()
        assert not (Path(env["AGENT_COMMS_HOME"]) / "web" / f"key-{port}.json").exists()  # nor its key file
