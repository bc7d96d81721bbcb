"""What both stores share: the event columns, query filters and the mapping of rows to events."""

import json
from datetime import UTC, datetime, timedelta
from typing import Any

from kubernaut.api.audit import AuditEvent, StoredAuditEvent
from kubernaut.audit.chain import ChainRow

EVENT_COLUMNS = (
    "event_id",
    "version",
    "event_type",
    "event_category",
    "event_action",
    "event_outcome",
    "actor_type",
    "actor_id",
    "resource_type",
    "resource_id",
    "correlation_id",
    "namespace",
    "event_time",
    "event_data",
)
CHAIN_COLUMNS = ("sequence", "prev_hash", "hash")
ALL_COLUMNS = (*CHAIN_COLUMNS, *EVENT_COLUMNS, "recorded_at")


def parse_resource_filter(resource: str) -> tuple[str | None, str]:
    """`Kind/name` -> (Kind, name); a bare `name` matches any kind."""
    kind, sep, name = resource.partition("/")
    if not sep:
        return None, resource
    return kind, name


def build_since_bound(since: datetime) -> datetime:
    """Event times are kept to the second: round `since` up so both stores filter alike."""
    if since.tzinfo is None:
        since = since.replace(tzinfo=UTC)
    whole = since.replace(microsecond=0)
    return whole if whole == since else whole + timedelta(seconds=1)


def format_event_time(moment: datetime) -> str:
    """The stored text form of an event time (fixed width, so text order is time order)."""
    return moment.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def build_event(row: dict[str, Any]) -> AuditEvent:
    fields = {name: row[name] for name in EVENT_COLUMNS}
    fields["event_data"] = json.loads(row["event_data"])
    return AuditEvent.model_validate(fields)


def build_stored_event(row: dict[str, Any]) -> StoredAuditEvent:
    fields = {name: row[name] for name in ALL_COLUMNS}
    fields["event_data"] = json.loads(row["event_data"])
    return StoredAuditEvent.model_validate(fields)


def build_chain_row(row: dict[str, Any]) -> ChainRow:
    return ChainRow(event=build_event(row), sequence=row["sequence"], prev_hash=row["prev_hash"], hash=row["hash"])
