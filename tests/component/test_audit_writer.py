"""The AuditWriter over real stores: outages, crashes and a full outbox lose nothing and double nothing."""

import asyncio
import signal
import sqlite3
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from pathlib import Path

import pytest
import pytest_asyncio
from prometheus_client import REGISTRY

from kubernaut.api.audit import AuditEvent
from kubernaut.audit.postgres import PostgresAuditStore
from kubernaut.audit.sqlite import SqliteAuditStore
from kubernaut.audit.store import AuditError, AuditStore
from kubernaut.audit.writer import AuditWriter
from tests.component.conftest import AuditEventFactory
from tests.conftest_postgres import PostgresServer, running_postgres

DEADLINE = 30.0


def metric(name: str) -> float:
    return REGISTRY.get_sample_value(name) or 0.0


async def wait_until(check: Callable[[], Awaitable[bool]], what: str, timeout: float = DEADLINE) -> None:
    deadline = time.monotonic() + timeout
    while not await check():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting until {what}")
        await asyncio.sleep(0.02)


async def stored_ids(store: AuditStore) -> list[str] | None:
    """Ids in chain order, or None while the store cannot be read."""
    try:
        return [event.event_id for event in await store.list_events()]
    except AuditError:
        return None


async def delivered_exactly_once(store: AuditStore, events: list[AuditEvent]) -> bool:
    ids = await stored_ids(store)
    if ids is None or len(ids) < len(events):
        return False
    assert sorted(ids) == sorted(e.event_id for e in events), "every event stored, each exactly once"
    return True


@pytest_asyncio.fixture(loop_scope="session")
async def sqlite_store(tmp_path: Path) -> AsyncIterator[SqliteAuditStore]:
    store = await SqliteAuditStore.open(tmp_path / "audit.db", busy_timeout=0.1)
    yield store
    await store.close()


@pytest.fixture
def own_postgres() -> Iterator[PostgresServer]:
    """A server of its own: this test stops and restarts it."""
    with running_postgres() as server:
        yield server


async def test_events_recorded_while_postgres_is_down_are_delivered_once_it_returns(
    own_postgres: PostgresServer, tmp_path: Path, audit_event: AuditEventFactory
) -> None:
    store = await PostgresAuditStore.open(own_postgres.url, connect_timeout=2)
    writer = AuditWriter(store, tmp_path / "outbox.db", batch_size=10, flush_interval=0.05, retry_max=0.5)
    await writer.start()
    try:
        before = [audit_event() for _ in range(5)]
        for event in before:
            await writer.record(event)
        await wait_until(lambda: delivered_exactly_once(store, before), "the first events are stored")

        own_postgres.stop()
        failures = metric("kubernaut_audit_write_failures_total")
        during = [audit_event() for _ in range(25)]
        for event in during:
            await writer.record(event)  # returns: the outbox has it
        await wait_until(
            lambda: asyncio.sleep(0, metric("kubernaut_audit_write_failures_total") > failures),
            "the writer has tried the stopped server",
        )
        assert writer.buffered == len(during)

        own_postgres.start()
        await wait_until(lambda: delivered_exactly_once(store, before + during), "the buffered events are stored")
        await wait_until(lambda: asyncio.sleep(0, writer.buffered == 0), "the outbox forgot them")  # after the store
        result = await store.verify()
        assert result.ok, result.reason
        assert result.count == 30
    finally:
        await writer.close()
        await store.close()


async def test_events_recorded_while_the_sqlite_file_is_locked_are_delivered_once_it_is_free(
    sqlite_store: SqliteAuditStore, tmp_path: Path, audit_event: AuditEventFactory
) -> None:
    writer = AuditWriter(sqlite_store, tmp_path / "outbox.db", batch_size=4, flush_interval=0.05, retry_max=0.2)
    await writer.start()
    blocker = sqlite3.connect(sqlite_store.path, isolation_level=None)
    try:
        blocker.execute("BEGIN EXCLUSIVE")  # another process holding the write lock: the store refuses writes
        failures = metric("kubernaut_audit_write_failures_total")
        events = [audit_event() for _ in range(10)]
        for event in events:
            await writer.record(event)
        await wait_until(
            lambda: asyncio.sleep(0, metric("kubernaut_audit_write_failures_total") > failures),
            "the writer has hit the lock",
        )
        assert writer.buffered == len(events)

        blocker.execute("ROLLBACK")
        await wait_until(lambda: delivered_exactly_once(sqlite_store, events), "the buffered events are stored")
        await wait_until(lambda: asyncio.sleep(0, writer.buffered == 0), "the outbox forgot them")  # after the store
        assert (await sqlite_store.verify()).ok
    finally:
        blocker.close()
        await writer.close()


CRASHING_WRITER = """
import asyncio, sys
from pathlib import Path
from datetime import UTC, datetime
from kubernaut.api.audit import AuditEvent
from kubernaut.audit.sqlite import SqliteAuditStore
from kubernaut.audit.writer import AuditWriter

async def main(store_path, outbox_path, count):
    store = await SqliteAuditStore.open(Path(store_path))
    # Nothing is delivered before the kill: a long interval and a batch larger than the events.
    writer = AuditWriter(store, Path(outbox_path), batch_size=10_000, flush_interval=3600)
    await writer.start()
    for i in range(count):
        event = AuditEvent(
            event_id=f"crash-{i:04d}", event_type="workflow.started", event_category="workflow",
            event_action="started", event_outcome="success", actor_type="service", actor_id="crash-test",
            resource_type="WorkflowExecution", resource_id=f"we-{i}", correlation_id="crash",
            event_time=datetime(2025, 1, 1, tzinfo=UTC), event_data={"i": i},
        )
        await writer.record(event)
        print(event.model_dump_json(), flush=True)
    print("recorded", flush=True)
    await asyncio.Event().wait()

asyncio.run(main(sys.argv[1], sys.argv[2], int(sys.argv[3])))
"""


async def read_until_recorded(process: asyncio.subprocess.Process) -> list[str]:
    assert process.stdout is not None
    lines = []
    while line := (await process.stdout.readline()).decode():
        if line == "recorded\n":
            return lines
        lines.append(line)
    raise AssertionError("the writer process ended before recording everything")


async def test_a_killed_writer_delivers_everything_exactly_once_after_restart(
    sqlite_store: SqliteAuditStore, tmp_path: Path
) -> None:
    outbox = tmp_path / "outbox.db"
    process = await asyncio.create_subprocess_exec(
        sys.executable, "-c", CRASHING_WRITER, str(sqlite_store.path), str(outbox), "40", stdout=subprocess.PIPE
    )
    try:
        lines = await asyncio.wait_for(read_until_recorded(process), DEADLINE)
    finally:
        process.send_signal(signal.SIGKILL)  # no close, no flush: a crash
        await process.wait()
    events = [AuditEvent.model_validate_json(line) for line in lines]
    assert len(events) == 40
    assert await stored_ids(sqlite_store) == []
    # As if the crash came after the store accepted a batch but before the outbox forgot it.
    assert await sqlite_store.append(events[:15]) == 15

    writer = AuditWriter(sqlite_store, outbox, batch_size=8, flush_interval=0.05)
    await writer.start()
    try:
        await wait_until(lambda: delivered_exactly_once(sqlite_store, events), "the outbox is replayed")
        await wait_until(lambda: asyncio.sleep(0, writer.buffered == 0), "the outbox is empty")
    finally:
        await writer.close()
    assert (await sqlite_store.verify()).count == 40


async def test_a_full_outbox_refuses_loudly_and_loses_nothing(
    sqlite_store: SqliteAuditStore, tmp_path: Path, audit_event: AuditEventFactory
) -> None:
    writer = AuditWriter(sqlite_store, tmp_path / "outbox.db", batch_size=1000, flush_interval=3600, max_buffered=5)
    await writer.start()
    try:
        events = [audit_event() for _ in range(5)]
        for event in events:
            await writer.record(event)
        full_before = metric("kubernaut_audit_buffer_full_total")

        with pytest.raises(AuditError, match="full"):
            await writer.record(audit_event())

        assert metric("kubernaut_audit_buffer_full_total") == full_before + 1
        await writer.record(events[0])  # an id already waiting is not a new event
        assert writer.buffered == 5
    finally:
        await writer.close()  # delivers the outbox
    assert await delivered_exactly_once(sqlite_store, events)


async def test_an_unwritable_outbox_makes_record_raise(
    sqlite_store: SqliteAuditStore, tmp_path: Path, audit_event: AuditEventFactory
) -> None:
    outbox = tmp_path / "outbox.db"
    writer = AuditWriter(sqlite_store, outbox, flush_interval=3600, outbox_busy_timeout=0.05)
    await writer.start()
    blocker = sqlite3.connect(outbox, isolation_level=None)
    try:
        blocker.execute("BEGIN EXCLUSIVE")
        with pytest.raises(AuditError, match="cannot write the audit outbox"):
            await writer.record(audit_event())
        blocker.execute("ROLLBACK")
        event = audit_event()
        await writer.record(event)
    finally:
        blocker.close()
        await writer.close()
    assert await delivered_exactly_once(sqlite_store, [event])


async def test_concurrent_records_are_all_delivered_once(
    sqlite_store: SqliteAuditStore, tmp_path: Path, audit_event: AuditEventFactory
) -> None:
    writer = AuditWriter(sqlite_store, tmp_path / "outbox.db", batch_size=16, flush_interval=0.05)
    await writer.start()
    events = [audit_event() for _ in range(200)]
    written = metric("kubernaut_audit_events_written_total")
    try:
        await asyncio.gather(*(writer.record(event) for event in events + events[:50]))
        await wait_until(lambda: delivered_exactly_once(sqlite_store, events), "all events are stored")
    finally:
        await writer.close()
    assert metric("kubernaut_audit_events_written_total") == written + 200
    assert (await sqlite_store.verify()).ok


async def test_close_delivers_what_is_buffered_and_then_refuses(
    sqlite_store: SqliteAuditStore, tmp_path: Path, audit_event: AuditEventFactory
) -> None:
    writer = AuditWriter(sqlite_store, tmp_path / "outbox.db", batch_size=1000, flush_interval=3600)
    await writer.start()
    events = [audit_event() for _ in range(7)]
    for event in events:
        await writer.record(event)
    assert await stored_ids(sqlite_store) == []

    await writer.close()

    assert await delivered_exactly_once(sqlite_store, events)
    with pytest.raises(AuditError, match="not running"):
        await writer.record(audit_event())


async def test_an_event_no_store_can_keep_is_refused_at_record(
    sqlite_store: SqliteAuditStore, tmp_path: Path, audit_event: AuditEventFactory
) -> None:
    writer = AuditWriter(sqlite_store, tmp_path / "outbox.db")
    await writer.start()
    try:
        with pytest.raises(AuditError, match="resource_id"):
            await writer.record(audit_event(resource_id="bad\x00name"))
    finally:
        await writer.close()
    assert await stored_ids(sqlite_store) == []
