"""The ports: where controllers record audit events, and what a durable store offers."""

from collections.abc import Sequence
from datetime import datetime
from typing import Protocol

from kubernaut.api.audit import AuditEvent, StoredAuditEvent
from kubernaut.audit.chain import VerifyResult

__all__ = ["AuditError", "AuditQuery", "AuditSink", "AuditStore", "VerifyResult"]


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


class AuditStore(AuditQuery, Protocol):
    """A durable, append-only, hash-chained store. There is no way to change or remove an event.

    `list_events` returns events in chain order; `resource` is `Kind/name` or just `name`.
    """

    async def append(self, events: Sequence[AuditEvent]) -> int:
        """Store the events whose ids are new, in order, as one transaction; return how many were new.

        Raises AuditError when the store cannot be reached or refuses the write (nothing is stored then).
        """
        ...

    async def verify(self) -> VerifyResult:
        """Walk the whole chain and the recorded head; the first break, if any, is named."""
        ...

    async def close(self) -> None: ...
