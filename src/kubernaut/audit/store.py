"""The ports: where controllers record audit events, and what a durable store offers."""

from collections.abc import Sequence
from datetime import datetime
from typing import Protocol

from kubernaut.api.audit import AuditEvent, StoredAuditEvent


class AuditError(Exception):
    """An audit event could not be recorded durably."""


class AuditSink(Protocol):
    """What a controller calls. On return the event is durable (or AuditError is raised)."""

    async def record(self, event: AuditEvent) -> None: ...


class AuditQuery(Protocol):
    async def list_events(
        self,
        *,
        correlation_id: str | None = None,
        resource: str | None = None,
        event_type: str | None = None,
        since: datetime | None = None,
    ) -> Sequence[StoredAuditEvent]: ...
