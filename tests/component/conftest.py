"""Fixtures of the component tests: audit stores on real SQLite files and a real PostgreSQL server."""

import itertools
from collections.abc import AsyncIterator, Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
import pytest_asyncio

from kubernaut.api.audit import AuditEvent, build_event_id
from kubernaut.audit.postgres import PostgresAuditStore
from kubernaut.audit.sqlite import SqliteAuditStore
from kubernaut.audit.store import AuditStore

AUDIT_T0 = datetime(2025, 12, 15, 10, 30, tzinfo=UTC)
AuditEventFactory = Callable[..., AuditEvent]
_counter = itertools.count(1)


def build_audit_event(**overrides: Any) -> AuditEvent:
    """A complete event with every field set; ids are unique unless given."""
    n = next(_counter)
    fields: dict[str, Any] = {
        "event_id": build_event_id("uid-test", f"transition-{n}"),
        "event_type": "workflow.started",
        "event_category": "workflow",
        "event_action": "started",
        "event_outcome": "success",
        "actor_type": "service",
        "actor_id": "workflowexecution-controller",
        "resource_type": "WorkflowExecution",
        "resource_id": f"we-{n}",
        "correlation_id": "corr-1",
        "namespace": "default",
        "event_time": AUDIT_T0 + timedelta(seconds=n),
        "event_data": {"phase": "Running", "pipelinerun_name": f"wfe-{n:016x}", "attempt": n, "ok": True},
    }
    fields.update(overrides)
    return AuditEvent(**fields)


@pytest.fixture
def audit_event() -> AuditEventFactory:
    return build_audit_event


@pytest_asyncio.fixture(params=["sqlite", "postgres"], loop_scope="session")
async def audit_store(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[AuditStore]:
    """An empty store of each kind; the test runs once per kind."""
    store: AuditStore
    if request.param == "sqlite":
        store = await SqliteAuditStore.open(tmp_path / "audit.db")
    else:
        database: str = request.getfixturevalue("postgres_database")
        store = await PostgresAuditStore.open(database)
    try:
        yield store
    finally:
        await store.close()
