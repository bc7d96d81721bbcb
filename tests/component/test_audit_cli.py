"""`kubernaut audit list|verify` against real stores (SQLite file and PostgreSQL server)."""

import asyncio
import json
import sqlite3
from datetime import UTC, datetime, timedelta
from pathlib import Path

import psycopg
import pytest
from click.testing import Result
from typer.testing import CliRunner

from kubernaut.api.audit import AuditEvent
from kubernaut.audit.postgres import PostgresAuditStore
from kubernaut.audit.sqlite import SqliteAuditStore
from kubernaut.audit.store import AuditStore
from kubernaut.cli import app
from tests.component.conftest import AuditEventFactory


def store_url(store: AuditStore) -> str:
    if isinstance(store, SqliteAuditStore):
        return f"sqlite://{store.path}"
    assert isinstance(store, PostgresAuditStore)
    return store.url


async def run_cli(*args: str) -> Result:
    # In a thread: the command runs its own event loop with asyncio.run.
    return await asyncio.to_thread(CliRunner().invoke, app, list(args))


@pytest.fixture
async def three_events(audit_store: AuditStore, audit_event: AuditEventFactory) -> list[AuditEvent]:
    now = datetime.now(UTC)
    events = [
        audit_event(
            correlation_id="rr-uid-1",
            resource_type="RemediationRequest",
            resource_id="rr-1",
            event_type="orchestrator.lifecycle.started",
            event_time=now - timedelta(hours=3),
        ),
        audit_event(correlation_id="rr-uid-1", resource_id="we-rr-1", event_time=now - timedelta(minutes=5)),
        audit_event(
            correlation_id="rr-uid-2",
            resource_id="we-rr-2",
            event_type="workflow.failed",
            event_outcome="failure",
            event_time=now - timedelta(minutes=1),
        ),
    ]
    await audit_store.append(events)
    return events


async def test_list_prints_a_table(audit_store: AuditStore, three_events: list[AuditEvent]) -> None:
    result = await run_cli("audit", "list", "--audit-url", store_url(audit_store))

    assert result.exit_code == 0, result.output
    assert "orchestrator.lifecycle.started" in result.stdout
    assert "workflow.failed" in result.stdout
    assert "RemediationRequest/rr-1" in result.stdout
    assert "failure" in result.stdout


async def test_list_json_has_every_field_and_filters(audit_store: AuditStore, three_events: list[AuditEvent]) -> None:
    url = store_url(audit_store)

    everything = await run_cli("audit", "list", "-o", "json", "--audit-url", url)
    assert everything.exit_code == 0, everything.output
    listed = json.loads(everything.stdout)
    stored = await audit_store.list_events()
    assert listed == [event.model_dump(mode="json") for event in stored]
    assert set(listed[0]) == set(stored[0].model_dump()) >= {"sequence", "prev_hash", "hash", "recorded_at"}

    async def ids(*filters: str) -> list[str]:
        result = await run_cli("audit", "list", "-o", "json", "--audit-url", url, *filters)
        assert result.exit_code == 0, result.output
        return [item["event_id"] for item in json.loads(result.stdout)]

    first, second, third = (event.event_id for event in three_events)
    assert await ids("--correlation-id", "rr-uid-1") == [first, second]
    assert await ids("--resource", "RemediationRequest/rr-1") == [first]
    assert await ids("--type", "workflow.failed") == [third]
    assert await ids("--since", "1h") == [second, third]
    assert await ids("--since", "2m") == [third]


async def test_verify_intact(audit_store: AuditStore, three_events: list[AuditEvent]) -> None:
    result = await run_cli("audit", "verify", "--audit-url", store_url(audit_store))

    assert result.exit_code == 0, result.output
    assert "intact: 3 events" in result.stdout


async def test_verify_names_the_tampered_event(audit_store: AuditStore, three_events: list[AuditEvent]) -> None:
    tamper = "UPDATE audit_events SET event_outcome = 'success' WHERE sequence = 3"
    if isinstance(audit_store, SqliteAuditStore):
        with sqlite3.connect(audit_store.path) as conn:
            conn.execute("DROP TRIGGER audit_events_no_update")
            conn.execute(tamper)
    else:
        assert isinstance(audit_store, PostgresAuditStore)
        with psycopg.connect(audit_store.url, autocommit=True) as pg:
            pg.execute("ALTER TABLE audit_events DISABLE TRIGGER USER")
            pg.execute(tamper.encode())

    result = await run_cli("audit", "verify", "--audit-url", store_url(audit_store))

    assert result.exit_code == 1, result.output
    assert "BROKEN at sequence 3" in result.stdout
    assert three_events[2].event_id in result.stdout


async def test_the_url_comes_from_the_config_file_else_the_local_default(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, audit_event: AuditEventFactory
) -> None:
    configured = await SqliteAuditStore.open(tmp_path / "configured" / "audit.db")
    local = await SqliteAuditStore.open(tmp_path / "work" / ".kubernaut" / "dev" / "audit.db")
    try:
        await configured.append([audit_event(), audit_event()])
        await local.append([audit_event()])
    finally:
        await configured.close()
        await local.close()
    config = tmp_path / "kubernaut.yaml"
    config.write_text(f"audit: {{url: 'sqlite://{tmp_path}/configured/audit.db'}}\n")
    monkeypatch.chdir(tmp_path / "work")

    from_config = await run_cli("audit", "verify", "--config", str(config))
    from_default = await run_cli("audit", "verify")

    assert "intact: 2 events" in from_config.stdout, from_config.output
    assert "intact: 1 events" in from_default.stdout, from_default.output


async def test_a_missing_or_unreachable_store_is_an_error_naming_audit_url(tmp_path: Path) -> None:
    missing = await run_cli("audit", "list", "--audit-url", f"sqlite://{tmp_path}/nothing.db")
    unreachable = await run_cli("audit", "verify", "--audit-url", "postgresql://nobody@127.0.0.1:1/audit")

    assert missing.exit_code == 2
    assert "audit.url" in missing.stderr
    assert "no audit store" in missing.stderr
    assert not (tmp_path / "nothing.db").exists()
    assert unreachable.exit_code == 2
    assert "audit.url" in unreachable.stderr
