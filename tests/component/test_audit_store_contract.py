"""One contract for every audit store, run against a real SQLite file and a real PostgreSQL server."""

import asyncio
import random
import sqlite3
from datetime import timedelta
from typing import Any

import psycopg
import pytest

from kubernaut.api.audit import AuditEvent
from kubernaut.audit.chain import GENESIS_HASH, build_canonical_json, compute_link_hash
from kubernaut.audit.postgres import PostgresAuditStore
from kubernaut.audit.sqlite import SqliteAuditStore
from kubernaut.audit.store import AuditStore
from tests.component.conftest import AUDIT_T0, AuditEventFactory


async def open_another(store: AuditStore) -> AuditStore:
    """A second, independent handle on the same store (as another process would have)."""
    if isinstance(store, SqliteAuditStore):
        return await SqliteAuditStore.open(store.path)
    assert isinstance(store, PostgresAuditStore)
    return await PostgresAuditStore.open(store.url)


def run_raw_sql(store: AuditStore, *statements: str) -> None:
    """What someone with direct database access could do, bypassing the store."""
    if isinstance(store, SqliteAuditStore):
        conn = sqlite3.connect(store.path, isolation_level=None)
        try:
            for statement in statements:
                conn.execute(statement)
        finally:
            conn.close()
        return
    assert isinstance(store, PostgresAuditStore)
    with psycopg.connect(store.url, autocommit=True) as pg:
        for statement in statements:
            pg.execute(statement.encode())


def disable_append_only_guard(store: AuditStore) -> None:
    if isinstance(store, SqliteAuditStore):
        run_raw_sql(store, "DROP TRIGGER audit_events_no_update", "DROP TRIGGER audit_events_no_delete")
    else:
        run_raw_sql(store, "ALTER TABLE audit_events DISABLE TRIGGER USER")


def event_fields(event: AuditEvent) -> dict[str, Any]:
    fields = event.model_dump(mode="json")
    return {name: fields[name] for name in AuditEvent.model_fields}


async def test_append_and_list_round_trip_every_field(audit_store: AuditStore, audit_event: AuditEventFactory) -> None:
    events = [
        audit_event(event_data={"nested": {"b": [1, 2.5, None], "a": "ü"}, "flag": False}),
        audit_event(namespace="", event_outcome="failure", actor_type="user", actor_id="alice@example.com"),
        audit_event(version="1.1", event_type="orchestrator.routing.blocked", event_category="orchestration"),
    ]

    assert await audit_store.append(events) == 3

    stored = await audit_store.list_events()
    assert [event_fields(s) for s in stored] == [event_fields(e) for e in events]
    assert [s.sequence for s in stored] == [1, 2, 3]
    prev = GENESIS_HASH
    for item, original in zip(stored, events, strict=True):
        assert item.prev_hash == prev
        assert item.hash == compute_link_hash(prev, build_canonical_json(original))
        assert item.recorded_at is not None
        prev = item.hash


async def test_a_second_write_of_an_id_is_ignored(audit_store: AuditStore, audit_event: AuditEventFactory) -> None:
    first, second = audit_event(), audit_event()
    assert await audit_store.append([first, second]) == 2

    changed_copy = first.model_copy(update={"event_outcome": "failure"})
    assert await audit_store.append([first]) == 0
    assert await audit_store.append([changed_copy, second]) == 0
    third = audit_event()
    assert await audit_store.append([third, third, second]) == 1

    stored = await audit_store.list_events()
    assert [s.event_id for s in stored] == [first.event_id, second.event_id, third.event_id]
    assert stored[0].event_outcome == first.event_outcome  # the first write wins
    assert (await audit_store.verify()).ok


async def test_concurrent_appends_of_the_same_events_store_each_once(
    audit_store: AuditStore, audit_event: AuditEventFactory
) -> None:
    events = [audit_event() for _ in range(40)]
    writers = [audit_store] + [await open_another(audit_store) for _ in range(4)]
    try:

        async def append_all(store: AuditStore, seed: int) -> int:
            shuffled = random.Random(seed).sample(events, len(events))
            return sum([await store.append(shuffled[i : i + 7]) for i in range(0, len(shuffled), 7)])

        counts = await asyncio.gather(*(append_all(store, seed) for seed, store in enumerate(writers)))
    finally:
        for store in writers[1:]:
            await store.close()

    assert sum(counts) == len(events)
    stored = await audit_store.list_events()
    assert sorted(s.event_id for s in stored) == sorted(e.event_id for e in events)
    assert [s.sequence for s in stored] == list(range(1, len(events) + 1))
    result = await audit_store.verify()
    assert result.ok, result.reason
    assert result.count == len(events)


async def test_filters(audit_store: AuditStore, audit_event: AuditEventFactory) -> None:
    a1 = audit_event(correlation_id="a", resource_type="RemediationRequest", resource_id="rr-1", event_time=AUDIT_T0)
    a2 = audit_event(
        correlation_id="a",
        resource_type="WorkflowExecution",
        resource_id="rr-1",
        event_type="workflow.failed",
        event_time=AUDIT_T0 + timedelta(hours=1),
    )
    b1 = audit_event(
        correlation_id="b",
        resource_type="RemediationRequest",
        resource_id="rr-2",
        event_type="workflow.failed",
        event_time=AUDIT_T0 + timedelta(hours=2),
    )
    await audit_store.append([a1, a2, b1])

    async def ids(**query: Any) -> list[str]:
        return [s.event_id for s in await audit_store.list_events(**query)]

    assert await ids(correlation_id="a") == [a1.event_id, a2.event_id]
    assert await ids(correlation_id="none") == []
    assert await ids(resource="RemediationRequest/rr-1") == [a1.event_id]
    assert await ids(resource="rr-1") == [a1.event_id, a2.event_id]
    assert await ids(event_type="workflow.failed") == [a2.event_id, b1.event_id]
    assert await ids(since=AUDIT_T0 + timedelta(hours=1)) == [a2.event_id, b1.event_id]
    assert await ids(since=AUDIT_T0 + timedelta(hours=1, microseconds=1)) == [b1.event_id]
    assert await ids(correlation_id="a", event_type="workflow.failed") == [a2.event_id]
    assert await ids(limit=2) == [a1.event_id, a2.event_id]


async def test_verify_passes_on_an_intact_chain(audit_store: AuditStore, audit_event: AuditEventFactory) -> None:
    empty = await audit_store.verify()
    assert empty.ok
    assert empty.count == 0

    for _ in range(3):
        await audit_store.append([audit_event() for _ in range(5)])

    result = await audit_store.verify()
    assert result.ok, result.reason
    assert (result.count, result.head_sequence) == (15, 15)
    assert result.head_hash == (await audit_store.list_events())[-1].hash


async def test_the_store_refuses_changes_to_stored_events(
    audit_store: AuditStore, audit_event: AuditEventFactory
) -> None:
    await audit_store.append([audit_event()])
    error = sqlite3.DatabaseError if isinstance(audit_store, SqliteAuditStore) else psycopg.errors.RaiseException
    with pytest.raises(error, match="append-only"):
        run_raw_sql(audit_store, "UPDATE audit_events SET event_outcome = 'failure'")
    with pytest.raises(error, match="append-only"):
        run_raw_sql(audit_store, "DELETE FROM audit_events")
    assert (await audit_store.verify()).ok


@pytest.mark.parametrize(
    ("tamper", "broken_sequence", "names_event"),
    [
        pytest.param("UPDATE audit_events SET event_outcome = 'success' WHERE sequence = 3", 3, True, id="edit-field"),
        pytest.param("UPDATE audit_events SET event_data = '{}' WHERE sequence = 2", 2, True, id="edit-data"),
        pytest.param("UPDATE audit_events SET hash = prev_hash WHERE sequence = 4", 4, True, id="edit-hash"),
        pytest.param("DELETE FROM audit_events WHERE sequence = 3", 3, False, id="delete-middle"),
        pytest.param("DELETE FROM audit_events WHERE sequence = 5", 5, False, id="delete-newest"),
    ],
)
async def test_tampering_breaks_verify_at_that_event(
    audit_store: AuditStore,
    audit_event: AuditEventFactory,
    tamper: str,
    broken_sequence: int,
    names_event: bool,
) -> None:
    events = [audit_event(event_outcome="failure") for _ in range(5)]
    await audit_store.append(events)
    disable_append_only_guard(audit_store)

    run_raw_sql(audit_store, tamper)

    result = await audit_store.verify()
    assert not result.ok
    assert result.broken_sequence == broken_sequence
    assert result.count == broken_sequence - 1
    if names_event:
        assert result.broken_event_id == events[broken_sequence - 1].event_id
    else:
        assert "missing" in result.reason


async def test_reopening_keeps_events_and_migrates_once(
    audit_store: AuditStore, audit_event: AuditEventFactory
) -> None:
    await audit_store.append([audit_event(), audit_event()])
    again = await open_another(audit_store)
    try:
        assert await again.append([audit_event()]) == 1
        assert [s.sequence for s in await again.list_events()] == [1, 2, 3]
        assert (await again.verify()).ok
    finally:
        await again.close()
    if isinstance(audit_store, SqliteAuditStore):
        conn = sqlite3.connect(audit_store.path)
        versions = [row[0] for row in conn.execute("SELECT version FROM schema_migrations")]
        conn.close()
    else:
        assert isinstance(audit_store, PostgresAuditStore)
        with psycopg.connect(audit_store.url) as pg:
            versions = [row[0] for row in pg.execute("SELECT version FROM schema_migrations")]
    assert versions == [1]
