"""Where the mesh lives: the coordinator port and the per-user home directory, from the environment."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Final

import attrs

__all__ = ["DEFAULT_PORT", "MeshSettings", "SettingsError"]

#: The well-known coordinator port (``AGENT_COMMS_PORT`` overrides it).
DEFAULT_PORT: Final = 19876


class SettingsError(ValueError):
    """An environment variable holds something unusable; the message names it."""


@attrs.frozen
class MeshSettings:
    """The coordinator port and the directory holding the mesh key, the peer registry and agent identities."""

    port: int = DEFAULT_PORT
    home: Path = attrs.field(factory=lambda: _default_home())

    @classmethod
    def from_env(cls, environ: dict[str, str] | None = None) -> MeshSettings:
        """Read ``AGENT_COMMS_PORT`` and ``AGENT_COMMS_HOME`` (defaults: 19876, the per-user state directory)."""
        env = os.environ if environ is None else environ
        raw_port = env.get("AGENT_COMMS_PORT", "").strip()
        port = DEFAULT_PORT
        if raw_port:
            try:
                port = int(raw_port)
            except ValueError:
                raise SettingsError(f"AGENT_COMMS_PORT must be a port number, not {raw_port!r}") from None
            if not 1 <= port <= 65535:
                raise SettingsError(f"AGENT_COMMS_PORT must be between 1 and 65535, not {port}")
        raw_home = env.get("AGENT_COMMS_HOME", "").strip()
        home = Path(raw_home).expanduser() if raw_home else _default_home()
        return cls(port=port, home=home)


def _default_home() -> Path:
    import platformdirs

    return Path(platformdirs.user_state_dir("agent-comms", appauthor=False))
