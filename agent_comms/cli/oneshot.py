"""One-shot commands: ``agents``, ``rooms``, ``read ROOM`` (observe) and ``send ROOM TEXT``, ``dm AGENT TEXT`` (act).

The reading commands observe the mesh the way ``agent-comms mesh`` does (:func:`agent_comms.mesh.observe.
observe_mesh`): they prove the mesh key, receive a copy of the replicated state and leave. They register no agent
and host nothing, so they never show up in any listing.

``send`` and ``dm`` act as the user: they put the human's agent on the mesh (:mod:`agent_comms.cli.human`, harness
``human``), join the room if needed (public rooms, or private ones the user was invited to), send, wait until the
linked peers confirm they hold the message (or say it was not confirmed) and leave; the agent goes offline and
receives what is sent to it on its next start (``agent-comms chat`` from the same directory). It carries the
``one-shot`` tag while it does, so that its coming and going is not announced to the members of its rooms.
"""

from __future__ import annotations

import argparse
import json
import signal
import sys
from collections.abc import Awaitable, Callable, Iterable, Sequence
from typing import TYPE_CHECKING, Any, TypeVar

from agent_comms.cli.common import (
    EXIT_CONFIG,
    EXIT_NO_MESH,
    EXIT_NOT_FOUND,
    EXIT_REFUSED,
    EXIT_USAGE,
    ConfigError,
    error,
    load_mesh_settings,
)
from agent_comms.display import display

if TYPE_CHECKING:
    from agent_comms.mesh.observe import MeshSnapshot
    from agent_comms.tool import ToolResult

T = TypeVar("T")

#: Exit status after SIGINT, SIGTERM or SIGHUP (128 + the signal number, as shells report it).
_SIGNALLED = 128

#: Tool error codes -> exit status.
_EXIT_FOR_CODE = {
    "ROOM_NOT_FOUND": EXIT_NOT_FOUND,
    "AGENT_NOT_FOUND": EXIT_NOT_FOUND,
    "NOT_INVITED": EXIT_REFUSED,
    "NOT_MEMBER": EXIT_REFUSED,
    "NOT_OWNER": EXIT_REFUSED,
    "INVALID_PARAMS": EXIT_USAGE,
}


def register(commands: Any) -> None:
    raw = argparse.RawDescriptionHelpFormatter
    agents = commands.add_parser(
        "agents",
        help="list the agents on the mesh",
        description="List the agents online on the mesh (observes it; registers nothing, shows up nowhere).",
        epilog="examples:\n  agent-comms agents\n  agent-comms agents --json | jq -r '.[].name'",
        formatter_class=raw,
    )
    agents.add_argument("--json", action="store_true", help="print JSON instead of a table")
    agents.add_argument("--all", action="store_true", help="also offline, hidden and ghost agents")
    agents.set_defaults(handler=run_agents)

    rooms = commands.add_parser(
        "rooms",
        help="list the rooms",
        description="List the rooms of the mesh, of every type (observes it; registers nothing).",
        epilog="examples:\n  agent-comms rooms\n  agent-comms rooms --json | jq -r '.[].name'",
        formatter_class=raw,
    )
    rooms.add_argument("--json", action="store_true", help="print JSON instead of a list")
    rooms.set_defaults(handler=run_rooms)

    read = commands.add_parser(
        "read",
        help="print a room's messages",
        description=(
            "Print the messages of ROOM, oldest first: the whole kept history unless --since or --limit narrow it\n"
            "(observes the mesh; registers nothing, marks nothing read)."
        ),
        epilog=(
            "examples:\n  agent-comms read review --limit 20\n"
            "  agent-comms read review --since 2026-01-31T09:00 --json | jq -r '.[].content'"
        ),
        formatter_class=raw,
    )
    read.add_argument("room", metavar="ROOM", help="the room's name (with or without a leading #)")
    read.add_argument("--json", action="store_true", help="print JSON instead of lines")
    read.add_argument("--since", metavar="WHEN", help="only after this message id, epoch milliseconds or ISO time")
    read.add_argument("--limit", type=_count, metavar="N", help="only the newest N messages")
    read.set_defaults(handler=run_read)

    send = commands.add_parser(
        "send",
        help="send a message to a room, as yourself",
        description=(
            "Send TEXT to ROOM as your own agent (harness 'human', the same person as 'agent-comms chat' in this\n"
            "directory). Joins ROOM first if you are not a member (public rooms, or ones you were invited to).\n"
            "Returns once the mesh holds the message."
        ),
        epilog=(
            "examples:\n  agent-comms send review 'the build is green, go ahead'\n"
            "  git log -1 --format=%B | agent-comms send review -   # the text from standard input"
        ),
        formatter_class=raw,
    )
    send.add_argument("room", metavar="ROOM", help="the room's name (with or without a leading #)")
    send.add_argument("text", metavar="TEXT", help=_TEXT_HELP)
    _acting_options(send)
    send.set_defaults(handler=run_send)

    dm = commands.add_parser(
        "dm",
        help="send a direct message to an agent, as yourself",
        description=(
            "Send TEXT to AGENT (a name or an id) as your own agent (harness 'human'). An offline agent gets it\n"
            "when it returns. Returns once the mesh holds the message."
        ),
        epilog=(
            "examples:\n  agent-comms dm reviewer 'please look at PR 12 next'\n"
            "  agent-comms dm reviewer - < notes.md   # the text from standard input"
        ),
        formatter_class=raw,
    )
    dm.add_argument("agent", metavar="AGENT", help="the agent's name or id")
    dm.add_argument("text", metavar="TEXT", help=_TEXT_HELP)
    _acting_options(dm)
    dm.set_defaults(handler=run_dm)


_TEXT_HELP = "the message; - reads it from standard input (all of it, up to its end; trailing newlines dropped)"


def _acting_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--name", help="your agent's name (default: the name it had last time, else human-<dir>)")
    parser.add_argument("--reply-to", metavar="MESSAGE_ID", help="the message this one answers")
    parser.add_argument("--json", action="store_true", help="print the result as JSON")


def _count(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number, not {text!r}") from None
    if value < 0:
        raise argparse.ArgumentTypeError(f"expected a number of 0 or more, not {value}")
    return value


# ---------------------------------------------------------------------------------------------- observing


def _observe(json_output: bool, empty: object) -> tuple[MeshSnapshot | None, int]:
    """Observe the mesh; on failure print why (and ``empty`` as JSON for scripts) and return the exit status."""

    from agent_comms.mesh.observe import NoMesh, explain_no_mesh, observe_mesh
    from agent_comms.mesh.registry import PeerRegistry

    try:
        settings, key = load_mesh_settings()
    except ConfigError as exc:
        error(str(exc))
        return None, EXIT_CONFIG

    async def observe() -> MeshSnapshot | str:
        registry = PeerRegistry(settings.home)
        if key is not None:
            try:
                return await observe_mesh(key, port=settings.port, registry=registry, each_peer=False)
            except NoMesh as exc:
                if exc.foreign is not None:
                    return exc.foreign  # the holder was given its chance: not asked again
        return await explain_no_mesh(key, settings.port, registry=registry)

    found = _run_interruptibly(observe)
    if isinstance(found, int):
        return None, found
    if isinstance(found, str):
        if json_output:
            print(json.dumps(empty))
        error(found)
        return None, EXIT_NO_MESH
    return found, 0


def run_agents(args: argparse.Namespace) -> int:
    from agent_comms.views import agent_rows, marked

    snapshot, status = _observe(args.json, [])
    if snapshot is None:
        return status
    rows = agent_rows(snapshot.state, everyone=args.all)
    _mark_machines(rows)
    if args.json:
        print(json.dumps(rows, indent=2))
        return 0
    if not rows:
        print("no agents online" if not args.all else "no agents known")
        return 0
    table = [
        tuple(
            display(cell, inline=True)
            for cell in (
                marked(row["label"] + (f"@{row['machine']}" if row["machine"] else ""), row["visibility"]),
                row["id"],
                row["harness"],
                row["status"],
                _room_list(row["rooms"]) or "-",
            )
        )
        for row in rows
    ]
    _print_table(("NAME", "ID", "HARNESS", "STATUS", "ROOMS"), table)
    return 0


def _mark_machines(rows: list[dict[str, Any]]) -> None:
    """Each row's ``machine``: the other machine hosting the agent (through the hub), ``None`` for this one's."""
    from agent_comms.mesh.hub_origins import remote_machine_of
    from agent_comms.mesh.settings import MeshSettings

    machine_of = remote_machine_of(MeshSettings.from_env().home)
    for row in rows:
        row["machine"] = machine_of(row["peer_id"])


def run_rooms(args: argparse.Namespace) -> int:
    from agent_comms.views import room_rows

    snapshot, status = _observe(args.json, [])
    if snapshot is None:
        return status
    rows = room_rows(snapshot.state)
    if args.json:
        print(json.dumps(rows, indent=2))
        return 0
    if not rows:
        print("no rooms")
        return 0
    for row in rows:
        about = f": {display(row['description'])}" if row["description"] else ""
        members = ", ".join(display(label, inline=True) for label in row["member_labels"]) or "nobody"
        name, owner = display(row["name"], inline=True), display(row["owner_label"], inline=True)
        print(f"#{name} ({row['type']}, owner {owner}, {row['messages']} message(s)){about}\n    members: {members}")
    return 0


def run_read(args: argparse.Namespace) -> int:
    from agent_comms.views import SinceError, message_rows, room_history, room_rows, select_messages

    room = args.room.removeprefix("#")
    snapshot, status = _observe(args.json, [])
    if snapshot is None:
        return status
    messages = room_history(snapshot.state, room)
    if messages is None:
        names = _room_list(row["name"] for row in room_rows(snapshot.state)) or "none"
        error(f"no room #{room} (rooms: {names})")
        return EXIT_NOT_FOUND
    try:
        shown = select_messages(messages, since=args.since, limit=args.limit)
    except SinceError as exc:
        error(f"--since {exc}")
        return EXIT_USAGE
    rows = message_rows(snapshot.state, shown)
    if args.json:
        print(json.dumps(rows, indent=2))
        return 0
    earlier = len(messages) - len(shown)
    print(display(f"#{room}: {len(shown)} message(s)", inline=True) + (f" ({earlier} not shown)" if earlier else ""))
    for row in rows:
        replied = row["reply_to_label"] or row["reply_to"]  # the id of a message no longer held
        reply = f" (reply to {display(replied, inline=True)})" if replied else ""
        sender, content = display(row["from_label"], inline=True), display(row["content"])
        print(f"[{row['time'][11:19]}] {sender}{reply}: {content}  [id {display(row['id'], inline=True)}]")
    return 0


def _room_list(names: Iterable[str]) -> str:
    """``#a, #b``, each name as it may be shown."""
    return ", ".join("#" + display(name, inline=True) for name in names)


def _print_table(header: tuple[str, ...], rows: Sequence[tuple[str, ...]]) -> None:
    widths = [max(len(row[column]) for row in (header, *rows)) for column in range(len(header) - 1)]
    for row in (header, *rows):
        print("  ".join([*(cell.ljust(width) for cell, width in zip(row, widths, strict=False)), row[-1]]))


# ---------------------------------------------------------------------------------------------- acting


def run_send(args: argparse.Namespace) -> int:
    room = args.room.removeprefix("#")
    return _act(args, {"action": "send", "target": room}, check=lambda state: _room_exists(state, room))


def run_dm(args: argparse.Namespace) -> int:
    return _act(args, {"action": "dm", "target": args.agent}, check=lambda state: _agent_exists(state, args.agent))


def _room_exists(state: Any, room: str) -> str | None:
    if state.room(room) is not None:
        return None
    names = _room_list(name for name in sorted(state.room_names) if state.room(name) is not None) or "none"
    return f"no room #{room} (rooms: {names})"


def _agent_exists(state: Any, ref: str) -> str | None:
    """Why a DM to ``ref`` cannot go anywhere, or ``None``.

    The person's own command line sees every agent (``agents --all`` marks hidden and ghost ones), so it may say
    what the tool, acting as the person's agent, would answer as "no such agent": a ghost takes no direct messages.
    A hidden agent named by name passes: the tool decides (by name only where the person shares a room with it),
    and :func:`_dm_hint` explains a refusal.
    """
    entry = state.agents.get(ref)
    records = [e.body for e in state.agents.values() if e.record is not None]
    by_id = [entry.body] if entry is not None and entry.record is not None else []
    named = [body for body in records if body.name == ref]
    if any(body.visibility != "ghost" for body in by_id + named):
        return None
    if by_id or named:
        return f"{ref!r} is a ghost agent: nobody can send it direct messages"
    return f"no agent named or with id {ref!r} (agent-comms agents --all lists them)"


def _dm_hint(state: Any, ref: str) -> str | None:
    """The answer to a DM refused by name because every agent of that name is hidden: by id it goes through."""
    hidden = sorted(
        entry.body.agent_id
        for entry in state.agents.values()
        if entry.record is not None and entry.body.name == ref and entry.body.visibility == "hidden"
    )
    if not hidden:
        return None
    ids = " or ".join(hidden)
    return (
        f"{ref!r} is a hidden agent: it takes direct messages by its id (unless it is in a room "
        f"with you): agent-comms dm {ids} TEXT (agent-comms agents --all shows it, marked hidden)"
    )


def _act(args: argparse.Namespace, call: dict[str, object], check: Callable[[Any], str | None]) -> int:
    """Check (observing), then act as the human's agent: join a room if needed, send, wait for the mesh's copy."""
    text = args.text
    if text == "-":
        try:
            text = sys.stdin.buffer.read().decode("utf-8").rstrip("\r\n")
        except UnicodeDecodeError as exc:
            error(f"standard input is not UTF-8 text ({exc.reason} at byte {exc.start}); nothing was sent")
            return EXIT_USAGE
        if not text.strip():
            error("standard input was empty: no message to send (TEXT is -)")
            return EXIT_USAGE
    elif not text.strip():
        error("the message is empty")
        return EXIT_USAGE
    snapshot, status = _observe(False, None)
    if snapshot is None:
        return status
    problem = check(snapshot.state)
    if problem is not None:
        error(problem)
        return EXIT_NOT_FOUND
    params = {**call, "content": text}
    if args.reply_to:
        params["replyTo"] = args.reply_to
    outcome = _run_interruptibly(lambda: _act_as_human(args.name, params))
    if isinstance(outcome, int):
        return outcome
    return _report(outcome, params, json_output=args.json)


async def _act_as_human(name: str | None, params: dict[str, object]) -> dict[str, Any] | int:
    import trio

    from agent_comms.agent import AgentError
    from agent_comms.cli.human import NotJoined, open_human, wait_acknowledged
    from agent_comms.deliveries import ONE_SHOT_TAG
    from agent_comms.identity import IdentityError
    from agent_comms.mesh.keyfile import MeshKeyError
    from agent_comms.mesh.settings import SettingsError

    try:
        async with open_human(name, tags=(ONE_SHOT_TAG,)) as agent:
            if params["action"] == "send":
                room = str(params["target"])
                state = agent.store.state
                view = state.room(room)
                if view is None:
                    error(f"no room #{room}")
                    return EXIT_NOT_FOUND
                if agent.id not in view.members and view.room_type != "public" and agent.id not in view.invited:
                    error(f"#{room} is {view.room_type}: you need an invite from its owner")
                    return EXIT_REFUSED
                if agent.id not in view.members:
                    joined = await agent.call({"action": "join_room", "room": room})
                    if joined.is_error:
                        return _tool_failure(joined)
            result = await agent.call(params)
            if result.is_error:
                hint = None
                if params["action"] == "dm" and result.data.get("code") == "AGENT_NOT_FOUND":
                    hint = _dm_hint(agent.store.state, str(params["target"]))
                if hint is not None:
                    error(hint)
                    return EXIT_NOT_FOUND
                return _tool_failure(result)
            confirmed: list[str] = []
            with trio.move_on_after(5.0):
                confirmed = await wait_acknowledged(agent.store.node)
            if not confirmed:
                error(
                    "no peer of the mesh confirmed the message within 5 s (the mesh went away?); "
                    "it may not have been delivered"
                )
                return EXIT_NO_MESH
            return {
                "id": result.data.get("message_id"),
                "from": agent.id,
                "from_name": agent.name,
                "text": result.text,
                "confirmed_by": confirmed,
            }
    except NotJoined as exc:
        error(f"{exc}; is the mesh still running? (agent-comms mesh)")
        return EXIT_NO_MESH
    except (AgentError, IdentityError, MeshKeyError, SettingsError) as exc:  # the observation checked the last two
        error(str(exc))
        return EXIT_CONFIG


def _tool_failure(result: ToolResult) -> int:
    message = result.text.removeprefix("Error: ")
    error(message)
    return _EXIT_FOR_CODE.get(str(result.data.get("code", "")), EXIT_USAGE)


def _report(outcome: dict[str, Any], params: dict[str, object], *, json_output: bool) -> int:
    if json_output:
        print(json.dumps({**outcome, "action": params["action"], "target": params["target"]}, indent=2))
        return 0
    peers = len(outcome["confirmed_by"])
    print(f"{outcome['text']} (as {display(outcome['from_name'], inline=True)}; held by {peers} peer(s))")
    return 0


# ---------------------------------------------------------------------------------------------- signals


def _run_interruptibly(work: Callable[[], Awaitable[T]]) -> T | int:
    """Run ``work`` under Trio; SIGINT, SIGTERM or SIGHUP cancel it (cleanup runs) and give 128 + the signal."""
    import trio

    async def main() -> T | int:
        received: list[int] = []
        result: list[T] = []
        with trio.open_signal_receiver(signal.SIGINT, signal.SIGTERM, signal.SIGHUP) as signals:
            async with trio.open_nursery() as nursery:

                async def run() -> None:
                    result.append(await work())
                    nursery.cancel_scope.cancel()

                nursery.start_soon(run)
                async for signum in signals:
                    received.append(signum)
                    nursery.cancel_scope.cancel()
                    break
        if result:
            return result[0]
        error(f"interrupted by {signal.Signals(received[0]).name}" if received else "interrupted")
        return _SIGNALLED + (received[0] if received else signal.SIGINT)

    return trio.run(main)
