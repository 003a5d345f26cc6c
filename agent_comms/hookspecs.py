"""The hooks a bridge plugin implements: one plugin gives the mesh one harness.

A bridge plugin is a module (or any object) with functions marked ``@hookimpl`` whose names are the hooks below,
registered in the entry-point group ``agent_comms`` of its distribution::

    [project.entry-points.agent_comms]
    my-harness = "agent_comms_my_harness"

Every hook but :func:`agent_comms_harness` receives the harness name first; a plugin returns ``None`` for a harness
that is not its own, so the first plugin that answers for the harness wins (``firstresult``). A plugin may leave
out any hook it has nothing to say for, and a hook implementation may take fewer arguments than the spec.

Importing this module is cheap: the types it names are imported only for type checkers.
"""

from __future__ import annotations

from collections.abc import Awaitable
from pathlib import Path
from typing import TYPE_CHECKING

import attrs
import pluggy

if TYPE_CHECKING:
    from agent_comms.agent import Agent
    from agent_comms.events import DeliveryEvent

__all__ = [
    "PROJECT",
    "BridgeOptions",
    "Detection",
    "HarnessInfo",
    "agent_comms_configure",
    "agent_comms_detect",
    "agent_comms_harness",
    "agent_comms_push",
    "agent_comms_remove",
    "agent_comms_serve",
    "agent_comms_status",
    "hookimpl",
    "hookspec",
]

#: The pluggy project name, which is also the entry-point group plugins register in.
PROJECT = "agent_comms"

hookspec = pluggy.HookspecMarker(PROJECT)
#: Marks a plugin's implementation of a hook: ``from agent_comms import hookimpl``.
hookimpl = pluggy.HookimplMarker(PROJECT)


@attrs.frozen
class HarnessInfo:
    """What a plugin tells about the one harness it bridges."""

    #: the harness name used on the command line (``agent-comms bridge NAME``), e.g. ``"claude-code"``
    name: str
    #: one line for humans
    description: str
    #: whether the bridge pushes events to the model as they arrive (else it drains them into tool results)
    push: bool
    #: the pip distribution that provides the plugin, e.g. ``"agent-comms-claude-code"``
    package: str


@attrs.frozen
class BridgeOptions:
    """How ``agent-comms bridge NAME`` was asked to run the bridge."""

    #: the agent name to register under (``--name``); ``None``: the name it had last time, or a default
    name: str | None
    #: the working directory of the harness session (with the harness, the agent's identity)
    cwd: str
    #: the harness process, whose exit takes the agent offline; ``None``: the bridge process itself
    harness_pid: int | None
    #: free-form settings for the bridge (``--option KEY=VALUE``)
    extra: dict[str, str] = attrs.field(factory=dict)
    #: the plugin manager running the bridge, for calling other hooks (the push hook); ``None`` outside the CLI
    plugin_manager: pluggy.PluginManager | None = attrs.field(default=None, eq=False, repr=False)


@attrs.frozen
class Detection:
    """Whether a harness is installed for this user, as the setup commands see it."""

    installed: bool
    #: one line for humans: the version found, or why it was not found
    detail: str
    #: the configuration file that ``configure`` edits, if the harness has one
    config_path: Path | None = None


@hookspec
def agent_comms_harness() -> HarnessInfo:  # type: ignore[empty-body]
    """Describe the harness this plugin bridges.

    Called by ``agent-comms plugins``, ``agent-comms bridge`` and the setup commands to find which plugin serves
    which harness. Every plugin returns its one :class:`HarnessInfo`; the results are collected as a list.
    """


@hookspec(firstresult=True)
def agent_comms_serve(harness: str, options: BridgeOptions) -> Awaitable[int] | None:
    """The tool hook: run the bridge of ``harness`` (how the harness's tool calls reach the ``agent_comms`` tool).

    Called by ``agent-comms bridge NAME`` outside any event loop. Return, without running it, a coroutine that
    runs the bridge (for an MCP harness, an MCP server on stdio) under Trio until the harness is done with it and
    then returns the process exit code (0 for a normal end); return ``None`` when ``harness`` is not yours.
    """


@hookspec(firstresult=True)
def agent_comms_push(harness: str, agent: Agent, event: DeliveryEvent) -> Awaitable[bool] | None:
    """The push hook: bring ``event`` (for ``agent``) before the model of a ``harness`` session.

    Called inside the bridge's Trio run for every event, in order (see
    :func:`agent_comms.plugins.relay_deliveries`). Return a coroutine that shows the event and returns ``True``
    once it was shown (the caller then marks it read, and the sender gets a ``read`` receipt) or ``False`` if it
    could not be shown (it stays unread); return ``None`` when ``harness`` is not yours or you cannot push.
    """


@hookspec(firstresult=True)
def agent_comms_detect(harness: str, home: Path) -> Detection | None:
    """A setup hook: find out whether ``harness`` is installed for the user whose home directory is ``home``.

    Called by ``agent-comms setup`` and ``agent-comms status``. Read only; never prompt. Return ``None`` when
    ``harness`` is not yours.
    """


@hookspec(firstresult=True)
def agent_comms_configure(harness: str, home: Path, dry_run: bool) -> list[str] | None:
    """A setup hook: configure ``harness`` to start its bridge (``agent-comms setup``).

    Return one human-readable line per change made (with ``dry_run``: per change that would be made, touching
    nothing); an empty list when everything is already in place. Edits keep the file's formatting, back it up
    first and are idempotent; never prompt. Return ``None`` when ``harness`` is not yours.
    """


@hookspec(firstresult=True)
def agent_comms_status(harness: str, home: Path) -> str | None:
    """A setup hook: one human-readable line on how ``harness`` is configured (``agent-comms status``).

    Read only. Return ``None`` when ``harness`` is not yours.
    """


@hookspec(firstresult=True)
def agent_comms_remove(harness: str, home: Path, dry_run: bool) -> list[str] | None:
    """A setup hook: undo what :func:`agent_comms_configure` did (``agent-comms remove``).

    Return one human-readable line per change made (or, with ``dry_run``, that would be made); an empty list when
    there was nothing to remove. Return ``None`` when ``harness`` is not yours.
    """
