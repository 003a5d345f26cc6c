"""pytest fixtures for bridge authors (pytest-trio): add ``pytest_plugins = ["agent_comms.testing.fixtures"]``.

* ``comms_mesh``: an :class:`~agent_comms.testing.InMemoryMesh`; create agents with ``await comms_mesh.agent(...)``.
"""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest

from agent_comms.testing import InMemoryMesh, open_in_memory_mesh


@pytest.fixture
async def comms_mesh() -> AsyncIterator[InMemoryMesh]:
    """A fresh in-memory mesh for one test."""
    async with open_in_memory_mesh() as mesh:
        yield mesh
