"""Finding and loading bridge plugins, and the one registry of their bridges by harness name.

:func:`get_plugin_manager` builds a fresh :class:`pluggy.PluginManager` each time it is called (nothing happens at
import time): it adds the hookspecs of :mod:`agent_comms.hookspecs`, registers the built-in plugins (the ``jsonl``
bridge) like any other plugin, loads the plugins of installed distributions from the entry-point group
``agent_comms``, checks that every hook a plugin implements exists, and collects their registrations once (so a
malformed one, or two plugins registering one harness, is an error as they load).

:func:`list_bridges` and :func:`find_bridge` are how the core finds the :class:`~agent_comms.hookspecs.Bridge` of a
harness: every plugin's ``register_bridges`` is called with a ``register`` that knows which plugin is calling.

``AGENT_COMMS_LOAD_PLUGINS`` limits the entry-point plugins that load:

* unset: all of them;
* empty (or only commas and spaces): none;
* ``name1,name2``: only the entry points with those names; a name that is neither an installed entry point nor a
  built-in plugin is an error (:class:`PluginError` names it).

Built-in plugins always register, whatever the variable says: they are part of ``agent-comms`` itself.
"""

from __future__ import annotations

import contextlib
import enum
import os
from collections.abc import Awaitable, Callable, Iterator
from importlib import import_module, metadata
from typing import TYPE_CHECKING, Final, Literal

import attrs
import pluggy

from agent_comms import hookspecs
from agent_comms.hookspecs import PROJECT, Bridge, HarnessInfo

if TYPE_CHECKING:
    from agent_comms.agent import Agent
    from agent_comms.events import DeliveryEvent

__all__ = [
    "BUILTIN_PLUGINS",
    "ENTRY_POINT_GROUP",
    "LOAD_PLUGINS_ENV",
    "PluginError",
    "PluginInfo",
    "Push",
    "find_bridge",
    "find_harness",
    "get_plugin_manager",
    "list_bridges",
    "list_harnesses",
    "list_plugins",
    "relay_deliveries",
]

#: The entry-point group bridge distributions register their plugin in.
ENTRY_POINT_GROUP: Final = PROJECT
#: The environment variable that limits which entry-point plugins load.
LOAD_PLUGINS_ENV: Final = "AGENT_COMMS_LOAD_PLUGINS"
#: Built-in plugins: name -> module. They register first, under these names, whatever the environment says.
BUILTIN_PLUGINS: Final = {"jsonl": "agent_comms.bridges.jsonl"}


class PluginError(Exception):
    """A plugin could not be loaded or found; the message says which and what to do."""


class _FromEnv(enum.Enum):
    FROM_ENV = enum.auto()


#: The default of :func:`get_plugin_manager`'s ``load``: read ``AGENT_COMMS_LOAD_PLUGINS`` when called.
FROM_ENV: Final = _FromEnv.FROM_ENV


#: A push function for :func:`relay_deliveries`: show one event to the model; ``True`` once it was shown.
Push = Callable[["DeliveryEvent"], Awaitable[bool]]


@attrs.frozen
class PluginInfo:
    """One bridge a plugin registered (or the plugin alone, if it registered none), as ``agent-comms plugins``
    lists it."""

    #: the plugin's name: its entry-point name, or the built-in's name
    name: str
    #: the distribution that provides it (``agent-comms`` for built-ins)
    distribution: str
    version: str
    #: the bridge's hooks, sorted (:attr:`Bridge.hooks <agent_comms.hookspecs.Bridge.hooks>`)
    hooks: tuple[str, ...]
    #: the harness of the bridge (``None`` for a plugin that registered no bridge)
    harness: str | None
    builtin: bool
    #: how events reach the model (:attr:`Bridge.push_paths <agent_comms.hookspecs.Bridge.push_paths>`)
    push: tuple[str, ...] = ()

    def to_json(self) -> dict[str, object]:
        """The shape of ``agent-comms plugins --json``."""
        return {
            "name": self.name,
            "distribution": self.distribution,
            "version": self.version,
            "hooks": list(self.hooks),
            "harness": self.harness,
            "push": list(self.push),
            "builtin": self.builtin,
        }


def get_plugin_manager(load: str | Literal[_FromEnv.FROM_ENV] | None = FROM_ENV) -> pluggy.PluginManager:
    """Build a plugin manager with the built-in plugins and the installed ones that ``load`` allows.

    ``load`` has the meaning of ``AGENT_COMMS_LOAD_PLUGINS`` (``None``: load every entry-point plugin; ``""``: none;
    ``"a,b"``: those); by default the variable is read now. Raises :class:`PluginError` for an unknown name in
    ``load``, a plugin that fails to import, or a plugin implementing a hook that does not exist.
    """
    if load is FROM_ENV:
        load = os.environ.get(LOAD_PLUGINS_ENV)
    pm = pluggy.PluginManager(PROJECT)
    pm.add_hookspecs(hookspecs)
    for name, module in BUILTIN_PLUGINS.items():
        with _loading(name):
            pm.register(import_module(module), name=name)
    installed = sorted({ep.name for ep in metadata.entry_points(group=ENTRY_POINT_GROUP)})
    if load is None:
        wanted = installed
    else:
        wanted = [name for name in (part.strip() for part in load.split(",")) if name]
        unknown = [name for name in wanted if name not in installed and name not in BUILTIN_PLUGINS]
        if unknown:
            choices = ", ".join(sorted({*installed, *BUILTIN_PLUGINS}))
            raise PluginError(
                f"{LOAD_PLUGINS_ENV} names plugins that are not installed: {', '.join(unknown)} (installed: {choices})"
            )
    for name in wanted:
        if name not in BUILTIN_PLUGINS:  # a distribution may declare a built-in's name too; the built-in wins
            with _loading(name):
                pm.load_setuptools_entrypoints(ENTRY_POINT_GROUP, name=name)
    try:
        pm.check_pending()
    except pluggy.PluginValidationError as exc:
        raise PluginError(f"plugin {_plugin_name(pm, exc.plugin)!r}: {exc}") from exc
    _registrations(pm)  # a malformed registration, or a harness registered twice, fails here
    return pm


@contextlib.contextmanager
def _loading(name: str) -> Iterator[None]:
    """Turn any failure to load or register the plugin ``name`` into a :class:`PluginError` naming it."""
    try:
        yield
    except pluggy.PluginValidationError as exc:
        raise PluginError(f"plugin {name!r}: {exc}") from exc
    except Exception as exc:  # an import error, or anything the plugin's module raised while importing
        raise PluginError(
            f"plugin {name!r} failed to load: {type(exc).__name__}: {exc} "
            f"(leave it out with {LOAD_PLUGINS_ENV}, or reinstall it)"
        ) from exc


def _plugin_name(pm: pluggy.PluginManager, plugin: object) -> str:
    return pm.get_name(plugin) or repr(plugin)


def list_plugins(pm: pluggy.PluginManager) -> list[PluginInfo]:
    """Every registered plugin, built-ins first, then by name."""
    from agent_comms import __version__

    dists = {id(plugin): dist for plugin, dist in pm.list_plugin_distinfo()}
    bridges: dict[str, list[Bridge]] = {}
    for plugin_name, bridge in _registrations(pm):
        bridges.setdefault(plugin_name, []).append(bridge)
    infos = []
    for name, plugin in pm.list_name_plugin():
        if plugin is None:  # a blocked name
            continue
        dist = dists.get(id(plugin))
        plugin_info = PluginInfo(
            name=name,
            distribution="agent-comms" if dist is None else dist.project_name,
            version=__version__ if dist is None else dist.version,
            hooks=(),
            harness=None,
            builtin=name in BUILTIN_PLUGINS and dist is None,
        )
        registered: list[Bridge | None] = [*bridges.get(name, ())] or [None]
        infos += [
            plugin_info
            if bridge is None
            else attrs.evolve(plugin_info, hooks=bridge.hooks, harness=bridge.name, push=bridge.push_paths)
            for bridge in registered
        ]
    return sorted(infos, key=lambda info: (not info.builtin, info.name, info.harness or ""))


def _registrations(pm: pluggy.PluginManager) -> list[tuple[str, Bridge]]:
    """Every bridge the plugins register, with the name of the plugin that registered it, in registration order.

    Each plugin's ``register_bridges`` is called on its own, with a ``register`` that knows the plugin. Raises
    :class:`PluginError` naming the plugin for anything but a :class:`Bridge` registered, a hook that fails or
    returns a value, and naming both plugins for a harness registered twice.
    """
    found: list[tuple[str, Bridge]] = []
    by_harness: dict[str, str] = {}
    for impl in pm.hook.register_bridges.get_hookimpls():
        plugin = impl.plugin_name

        def register(bridge: Bridge, plugin: str = plugin) -> None:
            if not isinstance(bridge, Bridge):
                raise PluginError(
                    f"plugin {plugin!r}: register_bridges registered {bridge!r}; "
                    "register takes an agent_comms.hookspecs.Bridge"
                )
            other = by_harness.get(bridge.name)
            if other is not None:
                raise PluginError(
                    f"the harness {bridge.name!r} is registered twice: by the plugin {other!r} "
                    f"({_distribution(pm, other)}) and by the plugin {plugin!r} ({_distribution(pm, plugin)}); "
                    f"uninstall one, or leave one out with {LOAD_PLUGINS_ENV}"
                )
            by_harness[bridge.name] = plugin
            found.append((plugin, bridge))

        try:
            returned = impl.function(**dict.fromkeys(impl.argnames, register))
        except PluginError:
            raise
        except Exception as exc:  # a Bridge with a bad field, or any bug in the hook
            raise PluginError(f"plugin {plugin!r}: register_bridges failed: {type(exc).__name__}: {exc}") from exc
        if returned is not None:
            raise PluginError(
                f"plugin {plugin!r}: register_bridges returned {returned!r}; "
                "it should call register(Bridge(...)) for each harness and return nothing"
            )
    return found


def _distribution(pm: pluggy.PluginManager, plugin_name: str) -> str:
    plugin = pm.get_plugin(plugin_name)
    for candidate, dist in pm.list_plugin_distinfo():
        if candidate is plugin:
            return f"{dist.project_name} {dist.version}"
    return "built into agent-comms" if plugin_name in BUILTIN_PLUGINS else "registered directly"


def list_bridges(pm: pluggy.PluginManager) -> list[Bridge]:
    """The bridges the registered plugins provide, by harness name."""
    return sorted((bridge for _, bridge in _registrations(pm)), key=lambda bridge: bridge.name)


def find_bridge(pm: pluggy.PluginManager, name: str) -> Bridge:
    """The bridge of the harness ``name``; :class:`PluginError` says which ``pip install`` adds it if none has it."""
    bridges = list_bridges(pm)
    for bridge in bridges:
        if bridge.name == name:
            return bridge
    known = ", ".join(bridge.name for bridge in bridges) or "none"
    hint = ""
    if os.environ.get(LOAD_PLUGINS_ENV) is not None:
        hint = f"; {LOAD_PLUGINS_ENV}={os.environ[LOAD_PLUGINS_ENV]!r} may be leaving its plugin out"
    raise PluginError(
        f"no installed plugin bridges the harness {name!r} (installed: {known}); "
        f"`pip install agent-comms-{name}` adds it{hint}"
    )


def list_harnesses(pm: pluggy.PluginManager) -> list[HarnessInfo]:
    """What people are told about the harnesses the registered plugins bridge, by name."""
    return [bridge.info for bridge in list_bridges(pm)]


def find_harness(pm: pluggy.PluginManager, name: str) -> HarnessInfo:
    """What people are told about the harness ``name``; :class:`PluginError` as :func:`find_bridge`."""
    return find_bridge(pm, name).info


async def relay_deliveries(push: Push, agent: Agent) -> None:
    """Hand every event for ``agent`` to ``push``, one at a time, in order, forever (:attr:`PushPath.RELAY
    <agent_comms.hookspecs.PushPath.RELAY>`).

    An event ``push`` showed (``True``) is marked read; one it could not show (``False``) stays unread, so its
    sender's receipt stays at ``delivered``. Cancel the surrounding scope to stop.
    """
    store = agent.store
    while True:
        await store.wait_pending(agent.id)
        for event in store.take(agent.id, limit=1):
            if await push(event):
                store.mark_read(agent.id, [event])
