"""A PostgreSQL outage in the middle of 100 remediations: nothing waits for the store, nothing is
lost or doubled, and the chain still verifies; then a hand-edited and a deleted row are named.

The orchestrator and the executor run on the real API server with the Tekton stand-in; the audit
store is a real PostgreSQL server of this test's own, stopped for 30 s and started again.
"""

import asyncio
import time
from pathlib import Path
from typing import Any

import psycopg
import pytest
from lightkube import AsyncClient

from kubernaut.audit.factory import open_audit_sink
from kubernaut.audit.writer import AuditWriter
from kubernaut.kube.resources import RemediationRequestResource
from tests.conftest_postgres import running_postgres
from tests.integration.audit_e2e_support import (
    assert_exactly_expected,
    build_expected_events,
    caught_up,
    list_audit_events,
    unique_workflow_id,
    verify_audit,
)
from tests.integration.harness import create_execution_namespace, eventually, running, settings_for
from tests.integration.orchestrator_support import create_rr, recording
from tests.integration.rr import rr_manifest
from tests.integration.tekton_support import played

pytestmark = pytest.mark.tekton

TOTAL = 100
BEFORE, DURING = 30, 40  # created before the outage, during it; the rest after it
OUTAGE_SECONDS = 30.0


def count_stored(url: str) -> int:
    with psycopg.connect(url, connect_timeout=2) as conn:
        row = conn.execute("SELECT count(*) FROM audit_events").fetchone()
    assert row is not None
    return int(row[0])


def run_sql(url: str, statement: str) -> list[tuple[Any, ...]]:
    """What someone with direct database access (the superuser) can do, bypassing the store."""
    with psycopg.connect(url, autocommit=True) as conn:
        cursor = conn.execute(statement.encode())
        return cursor.fetchall() if cursor.description else []


async def completed(kube: AsyncClient, namespace: str) -> set[str]:
    return {
        rr.metadata.name
        async for rr in kube.list(RemediationRequestResource, namespace=namespace)
        if (rr.to_dict().get("status") or {}).get("overallPhase") == "Completed"
    }


async def test_postgres_outage_in_the_middle_of_100_remediations(
    kube: AsyncClient, kubeconfig: Path, namespace: str, tmp_path: Path
) -> None:
    exec_ns = await create_execution_namespace(kube)
    workflow_id = unique_workflow_id()
    names = [f"rr-{i:03d}" for i in range(TOTAL)]

    async def create(batch: list[str]) -> None:
        for name in batch:
            target = {"kind": "Deployment", "name": f"app-{name}", "namespace": namespace}
            bundle = played("succeed:1tasks-0s")
            await create_rr(kube, rr_manifest(name, namespace, target=target, bundle=bundle, workflow_id=workflow_id))

    async def all_completed(batch: list[str], timeout: float) -> None:
        async def probe() -> bool:
            return set(batch) <= await completed(kube, namespace)

        await eventually(probe, timeout=timeout, interval=0.2, what=f"{len(batch)} remediations completed")

    with running_postgres() as server:
        url = server.create_database()
        settings = settings_for(
            exec_ns,
            execution={"cooldown": "1s"},
            audit={"url": url, "bufferPath": str(tmp_path / "outbox.db"), "connectTimeout": "2s"},
        )
        async with recording(kube, RemediationRequestResource, namespace) as requests:
            async with (
                open_audit_sink(settings.audit) as audit,
                running(kubeconfig, settings, ("orchestrator", "executor"), audit=audit),
            ):
                assert isinstance(audit, AuditWriter)
                await create(names[:BEFORE])
                await all_completed(names[:BEFORE], timeout=90)
                await eventually(lambda: asyncio.sleep(0, audit.buffered == 0), what="the first events stored")
                stored_before = count_stored(url)

                server.stop()
                outage_start = time.monotonic()
                await create(names[BEFORE : BEFORE + DURING])
                # Remediations go on while the store is down: all of them finish within the outage.
                await all_completed(names[BEFORE : BEFORE + DURING], timeout=OUTAGE_SECONDS - 2)
                done_during = len(await completed(kube, namespace)) - BEFORE
                await asyncio.sleep(max(0.0, OUTAGE_SECONDS - (time.monotonic() - outage_start)))  # the outage
                buffered = audit.buffered
                with pytest.raises(psycopg.OperationalError):  # the store is really down
                    count_stored(url)

                server.start()
                restarted = time.monotonic()
                await create(names[BEFORE + DURING :])

                async def drained() -> bool:
                    return await asyncio.to_thread(count_stored, url) >= stored_before + buffered

                await eventually(drained, timeout=30, interval=0.1, what="the buffered events delivered")
                drain_seconds = time.monotonic() - restarted
                await all_completed(names, timeout=90)
                await eventually(lambda: asyncio.sleep(0, audit.buffered == 0), what="the outbox empty")
            await caught_up(kube, requests, namespace)
            expected = await build_expected_events(kube, requests, namespace)

        stored = list_audit_events(url)
        counts = assert_exactly_expected(stored, expected)
        assert counts["orchestrator.lifecycle.completed"] == TOTAL
        assert counts["workflow.completed"] == TOTAL
        assert len(stored) == 7 * TOTAL  # started, 2 phase moves, assessed, completed; workflow started, completed
        verified = verify_audit(url)
        assert verified.returncode == 0, verified.stdout + verified.stderr
        assert f"Audit trail intact: {len(stored)} events" in verified.stdout
        print(
            f"\nPostgreSQL down {OUTAGE_SECONDS:.0f}s: {done_during}/{DURING} remediations completed meanwhile; "
            f"{buffered} events buffered, all delivered {drain_seconds:.2f}s after the restart; "
            f"{len(stored)} events checked"
        )

        # Someone with database access edits one event: verify names it.
        edited = stored[len(stored) // 3]
        run_sql(url, "DROP TRIGGER audit_events_append_only ON audit_events")
        run_sql(url, f"UPDATE audit_events SET event_outcome = 'tampered' WHERE sequence = {edited['sequence']}")
        broken = verify_audit(url)
        assert broken.returncode == 1, broken.stdout
        assert f"BROKEN at sequence {edited['sequence']} (event_id {edited['event_id']})" in broken.stdout
        assert "content does not match its hash" in broken.stdout

        # Put back, the chain verifies again; a deleted event is named by its missing sequence.
        original = edited["event_outcome"]
        run_sql(url, f"UPDATE audit_events SET event_outcome = '{original}' WHERE sequence = {edited['sequence']}")
        assert verify_audit(url).returncode == 0
        deleted = stored[2 * len(stored) // 3]
        run_sql(url, f"DELETE FROM audit_events WHERE sequence = {deleted['sequence']}")
        broken = verify_audit(url)
        assert broken.returncode == 1, broken.stdout
        assert f"BROKEN at sequence {deleted['sequence']}" in broken.stdout
        assert f"{deleted['sequence'] - 1} events before it are intact" in broken.stdout
