"""What the demo did and measured: the ``--json`` summary and the table a person sees at the end."""

from __future__ import annotations

from typing import Any

import attrs

__all__ = ["DemoReport"]


@attrs.define
class DemoReport:
    """What the demo did and measured (the ``--json`` summary)."""

    port: int = 0
    home: str = ""
    agents: list[dict[str, Any]] = attrs.field(factory=list)
    rooms: list[str] = attrs.field(factory=list)
    room_messages: int = 0
    direct_messages: int = 0
    dm_delivered_ms: float | None = None
    dm_read_ms: float | None = None
    late_joiner_caught_up: int = 0
    coordinator_before: str = ""
    coordinator_after: str = ""
    failover_ms: float | None = None
    mesh_healed_ms: float | None = None
    offline_ms: float | None = None
    new_agent_ready_ms: float | None = None
    history_after_failover: int = 0
    processes_started: int = 0
    processes_left: int = 0
    total_seconds: float = 0.0
    failed_step: str | None = None
    error: str | None = None

    def to_json(self) -> dict[str, Any]:
        """A JSON object (``ok`` is true when no step failed)."""
        return {"ok": self.failed_step is None and self.error is None, **attrs.asdict(self)}

    def rows(self) -> list[tuple[str, str]]:
        """The summary for a person: (label, value) pairs."""

        def ms(value: float | None) -> str:
            return "-" if value is None else f"{value:.1f} ms"

        ready = "-" if self.new_agent_ready_ms is None else f"{self.new_agent_ready_ms / 1000:.2f} s"
        return [
            ("agents", f"{self.processes_started} real bridge processes, 127.0.0.1:{self.port}"),
            ("rooms", ", ".join(self.rooms) or "-"),
            ("messages", f"{self.room_messages} in rooms, {self.direct_messages} direct"),
            ("DM receipts", f"delivered {ms(self.dm_delivered_ms)}, read {ms(self.dm_read_ms)}"),
            ("late joiner", f"caught up on {self.late_joiner_caught_up} messages"),
            ("coordinator", f"{self.coordinator_before} (SIGKILLed) -> {self.coordinator_after}"),
            ("failover", f"{ms(self.failover_ms)}, SIGKILL to new coordinator serving"),
            ("mesh healed", f"{ms(self.mesh_healed_ms)}, survivors linked under one coordinator"),
            ("crashed agent offline", f"{ms(self.offline_ms)} after the SIGKILL"),
            ("new agent after failover", f"registered {ready} after its process started (mostly Python start-up)"),
            ("history kept", f"{self.history_after_failover} messages through the crash"),
            ("processes left running", str(self.processes_left)),
            ("total time", f"{self.total_seconds:.1f} s"),
        ]
