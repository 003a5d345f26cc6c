"""What the sub-commands share: exit codes, error output and loading the mesh settings and key."""

from __future__ import annotations

import sys

TYPE_CHECKING = False  # as typing's, without importing it: see agent_comms/__init__.py
if TYPE_CHECKING:
    from typing import Final

    from agent_comms.mesh.settings import MeshSettings

__all__ = [
    "EXIT_CONFIG",
    "EXIT_NOT_FOUND",
    "EXIT_NO_HARNESS",
    "EXIT_NO_MESH",
    "EXIT_REFUSED",
    "EXIT_USAGE",
    "ConfigError",
    "error",
    "load_mesh_config",
    "load_mesh_settings",
]

#: No mesh is running (for commands that observe or talk to one).
EXIT_NO_MESH: Final = 1
#: A usage error, matching argparse's own convention.
EXIT_USAGE: Final = 2
#: A configuration error: the mesh key or an environment variable is unusable (the message says how to fix it).
EXIT_CONFIG: Final = 3
#: What the command names does not exist (a room, an agent, a harness's plugin).
EXIT_NOT_FOUND: Final = 4
#: ``setup``, ``status`` or ``remove`` found no installed harness to work on.
EXIT_NO_HARNESS: Final = 5
#: The mesh refused the action (a private room you are not invited to, say); the message says why.
EXIT_REFUSED: Final = 6


class ConfigError(Exception):
    """The settings or the mesh key cannot be used; the message says why and how to fix it."""


def error(message: str) -> None:
    """Print ``message`` for a person on standard error, prefixed with the program name.

    It may quote names from the mesh or the command line: it is shown through :func:`agent_comms.display.display`.
    """
    from agent_comms.display import display

    print(f"agent-comms: {display(message)}", file=sys.stderr)


def load_mesh_config() -> tuple[MeshSettings, bytes]:
    """The settings from the environment and the mesh key (created on first use); :class:`ConfigError` if unusable."""
    from agent_comms.mesh.keyfile import MeshKeyError, load_or_create_key
    from agent_comms.mesh.settings import MeshSettings, SettingsError

    try:
        settings = MeshSettings.from_env()
        return settings, load_or_create_key(settings.home)
    except (MeshKeyError, SettingsError) as exc:
        raise ConfigError(str(exc)) from exc


def load_mesh_settings() -> tuple[MeshSettings, bytes | None]:
    """The settings and the mesh key if it exists, for commands that only look: they create nothing (no home, no
    key). ``None``: no key, so no peer of this user ever ran in this home. :class:`ConfigError` if unusable."""
    from agent_comms.mesh.keyfile import KEY_FILE, MeshKeyError, load_or_create_key
    from agent_comms.mesh.settings import MeshSettings, SettingsError

    try:
        settings = MeshSettings.from_env()
        if not (settings.home / KEY_FILE).exists():
            return settings, None
        return settings, load_or_create_key(settings.home)  # it exists: only read and checked
    except (MeshKeyError, SettingsError) as exc:
        raise ConfigError(str(exc)) from exc
