"""An in-memory AuditSink for component tests; keeps one event per id, like the real stores."""

from kubernaut.api.audit import AuditEvent
from kubernaut.audit.store import AuditError


class MemoryAuditSink:
    def __init__(self) -> None:
        self.events: dict[str, AuditEvent] = {}
        self.attempts = 0
        self.failing = False

    async def record(self, event: AuditEvent) -> None:
        self.attempts += 1
        if self.failing:
            raise AuditError("audit sink is rejecting writes")
        self.events.setdefault(event.event_id, event)

    def of_type(self, event_type: str, resource_id: str | None = None) -> list[AuditEvent]:
        return [
            e
            for e in self.events.values()
            if e.event_type == event_type and (resource_id is None or e.resource_id == resource_id)
        ]
