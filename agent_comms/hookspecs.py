"""The one hook a bridge plugin implements, and the :class:`Bridge` it registers for each harness it serves.

A bridge plugin is a module (or any object) with a function marked ``@hookimpl`` named :func:`register_bridges`,
registered in the entry-point group ``agent_comms`` of its distribution::

    [project.entry-points.agent_comms]
    my-harness = "agent_comms_my_harness"

The hook gets a ``register`` function and calls it once per harness the plugin serves, with a :class:`Bridge`: the
harness's name, what to tell people about it, how events reach its model (:class:`PushPath`) and the functions
that do the work (``serve``, and the setup functions ``detect``, ``configure``, ``status``, ``remove``). The core
keeps one registry of them by harness name (:mod:`agent_comms.plugins`), so a function registered for a harness is
only ever called for that harness: it takes no harness argument and never has to check one.

Importing this module is cheap: the types it names are imported only for type checkers.
"""

from __future__ import annotations

import enum
import re
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Final

import attrs
import pluggy

__all__ = [
    "HARNESS_NAME",
    "PROJECT",
    "PUSHED",
    "Bridge",
    "BridgeOptions",
    "Configure",
    "Detect",
    "Detection",
    "HarnessInfo",
    "PushPath",
    "Register",
    "Remove",
    "Serve",
    "Status",
    "hookimpl",
    "hookspec",
    "register_bridges",
]

#: The pluggy project name, which is also the entry-point group plugins register in.
PROJECT = "agent_comms"

hookspec = pluggy.HookspecMarker(PROJECT)
#: Marks a plugin's implementation of a hook: ``from agent_comms import hookimpl``.
hookimpl = pluggy.HookimplMarker(PROJECT)

#: What a harness name may look like: it is typed on the command line and ends a package name (``agent-comms-NAME``).
HARNESS_NAME: Final = re.compile(r"[a-z0-9][a-z0-9._-]*")


class PushPath(enum.Flag):
    """How events reach a harness's model. A bridge declares every path it uses (``PushPath.A | PushPath.B``).

    Every path shows an event at most once, and only an event that was shown counts as read (its sender gets a
    ``read`` receipt).
    """

    #: Drained into the result of the model's next ``agent_comms`` call (``agent.drain()`` and ``with_deliveries``;
    #: the MCP bridge does it for every MCP-family bridge). Alone, the model sees nothing until it calls the tool.
    TOOL_RESULTS = enum.auto()
    #: Handed one at a time, as they arrive, to a push function by :func:`agent_comms.plugins.relay_deliveries`,
    #: which marks read what the function says it showed. The JSON-lines family: the ``jsonl`` bridge's push
    #: function writes an event line for the program that started it (the pi extension, the OpenCode plugin).
    RELAY = enum.auto()
    #: Sent, as they arrive, as MCP notifications from inside the MCP bridge (its extension's ``run`` with
    #: ``RunningBridge.notify``): the MCP family's push, e.g. Claude Code's ``claude/channel``.
    NOTIFICATION = enum.auto()
    #: Added to the model's context by the harness's own hooks at its next step (the events, or a notice of them):
    #: Claude Code's and Codex's hooks.
    HARNESS_HOOKS = enum.auto()
    #: An event can make the harness take a turn by itself: a Stop hook that continues or wakes the session
    #: (Claude Code, Codex), pi's ``triggerTurn``, an OpenCode prompt.
    CONTINUE_TURN = enum.auto()


#: The paths that push an event to the model as it arrives (a bridge with none of them only drains or announces).
PUSHED: Final = PushPath.RELAY | PushPath.NOTIFICATION


@attrs.frozen
class HarnessInfo:
    """What people are told about a harness a plugin bridges (:attr:`Bridge.info`)."""

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
    #: the plugin manager running the bridge (to look other bridges up); ``None`` outside the CLI
    plugin_manager: pluggy.PluginManager | None = attrs.field(default=None, eq=False, repr=False)


@attrs.frozen
class Detection:
    """Whether a harness is installed for this user, as the setup commands see it."""

    installed: bool
    #: one line for humans: the version found, or why it was not found
    detail: str
    #: the configuration file that ``configure`` edits, if the harness has one
    config_path: Path | None = None


#: The tool hook: ``serve(options)`` returns, without running it, a coroutine that runs the bridge under Trio (for
#: an MCP harness, an MCP server on stdio) until the harness is done with it, then returns the exit status (0 for a
#: normal end). Called by ``agent-comms bridge NAME`` outside any event loop.
Serve = Callable[[BridgeOptions], Awaitable[int]]
#: A setup hook: ``detect(home)``, whether the harness is installed for the user whose home directory is ``home``.
#: Read only; never prompts. A bridge with ``detect`` has setup support (``agent-comms setup``, ``status``).
Detect = Callable[[Path], Detection]
#: A setup hook: ``configure(home, dry_run)`` configures the harness to start its bridge; one human-readable line
#: per change made (with ``dry_run``: that would be made, touching nothing), ``[]`` when all is in place. Edits keep
#: the file's formatting, back it up first and are idempotent; never prompts. ``None``: setup edits nothing for
#: this harness (it is configured in another program's own settings); ``setup`` then prints the status line.
Configure = Callable[[Path, bool], list[str] | None]
#: A setup hook: ``status(home)``, one human-readable line on how the harness is configured. Read only.
Status = Callable[[Path], str]
#: A setup hook: ``remove(home, dry_run)`` undoes what ``configure`` did; one line per change made (or that would
#: be), ``[]`` or ``None`` when there was nothing to remove.
Remove = Callable[[Path, bool], list[str] | None]

_callable_or_none = attrs.validators.optional(attrs.validators.is_callable())


def _harness_name(_instance: object, _attribute: object, value: str) -> None:
    if not isinstance(value, str) or not HARNESS_NAME.fullmatch(value):
        raise ValueError(
            f"a harness name is lowercase letters, digits, '.', '_' and '-', starting with a letter or digit; "
            f"not {value!r}"
        )


def _push_path(_instance: object, _attribute: object, value: PushPath) -> None:
    if not isinstance(value, PushPath) or not value:
        raise ValueError(f"push_path must name at least one PushPath (how events reach the model), not {value!r}")


@attrs.frozen(kw_only=True)
class Bridge:
    """One harness a plugin bridges, as it registers it: ``register(Bridge(name=..., ...))``.

    Only ``name``, ``description``, ``package`` and ``push_path`` are required; a function left out is a hook the
    bridge does not have (without ``detect`` the setup commands leave the harness alone; ``configure`` and
    ``remove`` then change nothing and ``status`` says nothing).
    """

    #: the harness name used on the command line (``agent-comms bridge NAME``), e.g. ``"claude-code"``
    name: str = attrs.field(validator=_harness_name)
    #: one line for humans
    description: str = attrs.field(validator=attrs.validators.instance_of(str))
    #: the pip distribution that provides the plugin, e.g. ``"agent-comms-claude-code"``
    package: str = attrs.field(validator=attrs.validators.instance_of(str))
    #: how events reach the harness's model (every path it uses)
    push_path: PushPath = attrs.field(validator=_push_path)
    #: the tool hook, see :data:`Serve`
    serve: Serve | None = attrs.field(default=None, validator=_callable_or_none)
    #: the setup hooks, see :data:`Detect`, :data:`Configure`, :data:`Status`, :data:`Remove`
    detect: Detect | None = attrs.field(default=None, validator=_callable_or_none)
    configure: Configure | None = attrs.field(default=None, validator=_callable_or_none)
    status: Status | None = attrs.field(default=None, validator=_callable_or_none)
    remove: Remove | None = attrs.field(default=None, validator=_callable_or_none)

    @property
    def pushes(self) -> bool:
        """Whether events reach the model as they arrive (:data:`PUSHED`), rather than with its next step."""
        return bool(self.push_path & PUSHED)

    @property
    def info(self) -> HarnessInfo:
        """What people are told about the harness."""
        return HarnessInfo(name=self.name, description=self.description, push=self.pushes, package=self.package)

    @property
    def hooks(self) -> tuple[str, ...]:
        """The hooks the bridge has, sorted: ``serve`` and the setup hooks it was given."""
        names = ("configure", "detect", "remove", "serve", "status")
        return tuple(name for name in names if getattr(self, name) is not None)

    @property
    def push_paths(self) -> tuple[str, ...]:
        """The declared push paths as names, e.g. ``("tool-results", "notification")``."""
        return tuple((path.name or "").lower().replace("_", "-") for path in self.push_path)


#: The ``register`` function :func:`register_bridges` is given.
Register = Callable[[Bridge], None]


@hookspec
def register_bridges(register: Register) -> None:
    """Register the bridges this plugin provides: call ``register(Bridge(...))`` once per harness it serves.

    Called when the plugin manager is built (so a malformed registration is an error as the plugin loads) and
    whenever the core looks a harness up, once per plugin, so every bridge is known by the plugin that registered
    it. Return nothing. Two plugins registering the same harness name is an error that names both; so is
    registering anything but a :class:`Bridge`.
    """
