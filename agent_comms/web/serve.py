"""``agent-comms web`` under Trio: the person's agent, the page's server (Hypercorn's Trio worker), the browser.

The launch's token is made here (:func:`secrets.token_urlsafe`), written into a 0600 file in ``AGENT_COMMS_HOME``
(``web/open-PORT.html``, a page that sends the browser to ``http://127.0.0.1:PORT/#token=...``), and the browser is
given the path of that file: the token is never on a command line (``/proc/*/cmdline`` is readable by every user),
never in a request line or a log. The file is removed when the command ends. Every launch makes a new token,
even on the same ``--port`` after a crash (the opener left behind is overwritten, never read). So that a page left
open resumes after a restart, the launch keeps its token in a second 0600 file, ``web/key-PORT.json``, which
outlives it; the next launch on the same port accepts that token as the previous one under the conditions of
:mod:`~agent_comms.web.keys` (same port, 0600, ours, alive less than 24 hours ago) and moves a page that proves it
onto its own token (:mod:`~agent_comms.web.handshake`).
"""

from __future__ import annotations

import logging
import signal
import sys
import webbrowser
from collections.abc import Callable
from functools import partial
from pathlib import Path
from typing import Any, cast

import trio

from agent_comms.agent import Agent
from agent_comms.private_files import UnsafePathError, ensure_private_dir, write_private_file
from agent_comms.web.app import MAX_FRAME, build_app
from agent_comms.web.hub import Hub
from agent_comms.web.keys import ALIVE_EVERY, Keys, key_file_path, new_token, read_previous, write_key_file

__all__ = ["open_file_path", "serve_web"]


def open_file_path(home: Path, port: int) -> Path:
    """The 0600 file that opens the page of the server on ``port`` (it holds the token)."""
    return home / "web" / f"open-{port}.html"


def _opener(port: int, token: str) -> bytes:
    url = f"http://127.0.0.1:{port}/#token={token}"
    return (
        "<!doctype html>\n<meta charset=utf-8>\n<meta name=referrer content=no-referrer>\n"
        f'<meta http-equiv=refresh content="0;url={url}">\n<title>agent-comms web</title>\n'
        f'<p>Opening <a href="{url}">agent-comms web</a> on 127.0.0.1:{port}.</p>\n'
    ).encode()


async def serve_web(
    agent: Agent,
    home: Path,
    *,
    port: int = 0,
    open_browser: bool = True,
    say: Callable[[str], None] = print,
) -> None:
    """Serve the page for ``agent`` on 127.0.0.1 until SIGINT, SIGTERM or SIGHUP (then return)."""
    from hypercorn.config import Config
    from hypercorn.trio import serve

    token = new_token()  # new for every launch: never taken from a file or an earlier run
    keys = Keys(token)
    keys_ready = trio.Event()
    if port:  # known before binding: a page waiting to reconnect is never refused for want of it
        keys.previous = read_previous(home, port)
        keys_ready.set()
    hub = Hub(agent)
    bound = {"port": port}
    app = build_app(hub, keys, lambda: bound["port"], keys_ready=keys_ready)
    config = Config()
    config.bind = [f"127.0.0.1:{port}"]
    config.accesslog = None  # request lines carry no token anyway (it is in the fragment); refusals are logged
    config.errorlog = _error_log()  # the server's own errors (a failing request); never a request line
    config.include_server_header = False
    config.graceful_timeout = 1.0
    config.websocket_max_message_size = MAX_FRAME  # the page's proof, and its actions
    with trio.open_signal_receiver(signal.SIGINT, signal.SIGTERM, signal.SIGHUP) as signals:
        async with trio.open_nursery() as nursery:
            binds = await nursery.start(partial(serve, cast("Any", app), config))  # an ASGI 3 app, typed by Starlette
            bound["port"] = int(binds[0].rsplit(":", 1)[1])
            if not keys_ready.is_set():
                keys.previous = read_previous(home, bound["port"])
                keys_ready.set()
            opener = open_file_path(home, bound["port"])
            ensure_private_dir(opener.parent)
            write_key_file(home, bound["port"], token)
            write_private_file(opener, _opener(bound["port"], token))
            try:
                nursery.start_soon(_keep_alive, home, bound["port"], token)
                nursery.start_soon(hub.run)
                say(f"{agent.name} ({agent.id}) is on the mesh. The page: http://127.0.0.1:{bound['port']}/")
                say(f"Open it with its key from {opener.as_uri()} (readable only by you). Ctrl-C leaves.")
                if open_browser:
                    nursery.start_soon(_open_browser, opener.as_uri())
                async for _signum in signals:
                    break
                nursery.cancel_scope.cancel()
            finally:
                opener.unlink(missing_ok=True)
                _refresh_key_file(home, bound["port"], token)  # when this launch ended: the next may resume its pages


def _refresh_key_file(home: Path, port: int, token: str) -> None:
    """Rewrite the key file as alive now; a failure only costs open pages their resuming, so it is just said."""
    try:
        write_key_file(home, port, token)
    except (OSError, UnsafePathError) as exc:
        print(f"agent-comms web: could not refresh {key_file_path(home, port)}: {exc}", file=sys.stderr, flush=True)


async def _keep_alive(home: Path, port: int, token: str) -> None:
    """Refresh the key file's ``alive`` every :data:`~agent_comms.web.keys.ALIVE_EVERY` seconds."""
    while True:
        await trio.sleep(ALIVE_EVERY)
        _refresh_key_file(home, port, token)


def _error_log() -> logging.Logger:
    """Warnings and errors of the server, on standard error (Hypercorn's "Running on" notices are left out)."""
    logger = logging.getLogger("agent_comms.web.server")
    if not logger.handlers:
        handler = logging.StreamHandler(sys.stderr)
        handler.setFormatter(logging.Formatter("agent-comms web: %(message)s"))
        logger.addHandler(handler)
        logger.setLevel(logging.WARNING)
        logger.propagate = False
    return logger


async def _open_browser(uri: str) -> None:
    """Open the 0600 file in the person's browser (its path on the command line, never the token)."""
    opened = await trio.to_thread.run_sync(webbrowser.open, uri, abandon_on_cancel=True)
    if not opened:
        print(f"agent-comms web: no browser found; open {uri}", file=sys.stderr, flush=True)
