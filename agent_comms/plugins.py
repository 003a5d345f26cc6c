"""Finding and loading bridge plugins.

:func:`get_plugin_manager` builds a fresh :class:`pluggy.PluginManager` each time it is called (nothing happens at
import time): it adds the hookspecs of :mod:`agent_comms.hookspecs`, registers the built-in plugins (the ``jsonl``
bridge) like any other plugin, loads the plugins of installed distributions from the entry-point group
``agent_comms``, and checks that every hook a plugin implements exists.

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
from collections.abc import Iterator
from importlib import import_module, metadata
from typing import TYPE_CHECKING, Final, Literal

import attrs
import pluggy

from agent_comms import hookspecs
from agent_comms.hookspecs import PROJECT, HarnessInfo

if TYPE_CHECKING:
    from agent_comms.agent import Agent

__all__ = [
    "BUILTIN_PLUGINS",
    "ENTRY_POINT_GROUP",
    "LOAD_PLUGINS_ENV",
    "PluginError",
    "PluginInfo",
    "find_harness",
    "get_plugin_manager",
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


@attrs.frozen
class PluginInfo:
    """One registered plugin, as ``agent-comms plugins`` lists it."""

    #: the plugin's name: its entry-point name, or the built-in's name
    name: str
    #: the distribution that provides it (``agent-comms`` for built-ins)
    distribution: str
    version: str
    #: the hooks it implements, sorted
    hooks: tuple[str, ...]
    #: the harness it serves (``None`` if it does not implement ``agent_comms_harness``)
    harness: str | None
    builtin: bool

    def to_json(self) -> dict[str, object]:
        """The shape of ``agent-comms plugins --json``."""
        return {
            "name": self.name,
            "distribution": self.distribution,
            "version": self.version,
            "hooks": list(self.hooks),
            "harness": self.harness,
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
    infos = []
    for name, plugin in pm.list_name_plugin():
        if plugin is None:  # a blocked name
            continue
        dist = dists.get(id(plugin))
        builtin = name in BUILTIN_PLUGINS and dist is None
        infos.append(
            PluginInfo(
                name=name,
                distribution="agent-comms" if dist is None else dist.project_name,
                version=__version__ if dist is None else dist.version,
                hooks=tuple(sorted(caller.name for caller in pm.get_hookcallers(plugin) or ())),
                harness=_harness_of(plugin),
                builtin=builtin,
            )
        )
    return sorted(infos, key=lambda info: (not info.builtin, info.name))


def _harness_of(plugin: object) -> str | None:
    describe = getattr(plugin, "agent_comms_harness", None)
    if describe is None:
        return None
    info = describe()
    return info.name if isinstance(info, HarnessInfo) else None


def list_harnesses(pm: pluggy.PluginManager) -> list[HarnessInfo]:
    """The harnesses the registered plugins serve, by name."""
    results: list[HarnessInfo] = pm.hook.agent_comms_harness()
    return sorted(results, key=lambda info: info.name)


def find_harness(pm: pluggy.PluginManager, name: str) -> HarnessInfo:
    """The harness called ``name``; :class:`PluginError` says which ``pip install`` adds it if no plugin has it."""
    harnesses = list_harnesses(pm)
    for info in harnesses:
        if info.name == name:
            return info
    known = ", ".join(info.name for info in harnesses) or "none"
    hint = ""
    if os.environ.get(LOAD_PLUGINS_ENV) is not None:
        hint = f"; {LOAD_PLUGINS_ENV}={os.environ[LOAD_PLUGINS_ENV]!r} may be leaving its plugin out"
    raise PluginError(
        f"no installed plugin bridges the harness {name!r} (installed: {known}); "
        f"`pip install agent-comms-{name}` adds it{hint}"
    )


async def relay_deliveries(pm: pluggy.PluginManager, harness: str, agent: Agent) -> None:
    """Push every event for ``agent`` through the push hook of ``harness``, one at a time, in order, forever.

    An event the hook showed (``True``) is marked read; one it could not show (``False``, or no plugin pushes for
    the harness) stays unread, so its sender's receipt stays at ``delivered``. Cancel the surrounding scope to stop.
    """
    store = agent.store
    while True:
        await store.wait_pending(agent.id)
        for event in store.take(agent.id, limit=1):
            push = pm.hook.agent_comms_push(harness=harness, agent=agent, event=event)
            if push is not None and await push:
                store.mark_read(agent.id, [event])
