"""At most one PipelineRun per WFE and exactly one audit event per transition, through crashes and
write conflicts. The audit trail is the real SQLite store behind the real writer."""

import asyncio
import logging
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
from lightkube import AsyncClient
from lightkube.types import PatchType

from kubernaut.audit.factory import open_audit_sink, open_audit_store
from kubernaut.domain.target import build_lock_name
from kubernaut.kube.resources import PipelineRunResource, WorkflowExecutionResource
from tests.integration.executor_support import (
    CREATIONS,
    DURATIONS,
    OUTCOMES,
    Metrics,
    condition,
    create_wfe,
    isolated_wfes,  # noqa: F401 - a fixture
    metric,
    on_wfe_status_patch,
    parse_time,
    patch_pipelinerun_status,
    rfc3339,
    sample,
    succeeded,
    wait_events,
    wait_phase,
    watching_pipelineruns,
    wfe_status,
)
from tests.integration.harness import create_execution_namespace, events_for, running, settings_for

CONFLICTS = "kubernaut_reconcile_conflicts_total"

pytestmark = pytest.mark.usefixtures("isolated_wfes")


async def count_audit(url: str, resource: str) -> dict[str, int]:
    counts: dict[str, int] = {}
    async with open_audit_store(url) as store:
        for event in await store.list_events(resource=resource):
            counts[event.event_type] = counts.get(event.event_type, 0) + 1
    return counts


async def test_crash_between_create_and_status_write(
    kube: AsyncClient, kubeconfig: Path, namespace: str, tmp_path: Path
) -> None:
    """The first process dies after creating the PipelineRun, before Running is written; the next one
    adopts that PipelineRun: one creation, one `workflow.started`, startTime from the PipelineRun."""
    exec_ns = await create_execution_namespace(kube)
    url = f"sqlite:///{tmp_path}/audit.db"
    settings = settings_for(exec_ns, audit={"url": url})
    target = f"{namespace}/Deployment/api"
    lock = build_lock_name(target)
    metrics = Metrics()
    async with watching_pipelineruns(kube, exec_ns) as watch:
        crashed = asyncio.Event()

        async def die_before_running(_name: str, body: dict[str, Any]) -> None:
            if (body.get("status") or {}).get("phase") == "Running":
                crashed.set()
                await asyncio.Event().wait()  # the process is gone before this write leaves

        async with (
            open_audit_sink(settings.audit) as audit,
            running(kubeconfig, settings, ("executor",), audit=audit) as manager,
        ):
            on_wfe_status_patch(manager, die_before_running)
            await create_wfe(kube, "wfe-a", namespace, target)
            await asyncio.wait_for(crashed.wait(), 15)

        assert not (await wfe_status(kube, "wfe-a", namespace)).get("phase")
        created = await kube.get(PipelineRunResource, lock, namespace=exec_ns)
        assert metrics.delta() == {sample(CREATIONS): 1}

        async with open_audit_sink(settings.audit) as audit, running(kubeconfig, settings, ("executor",), audit=audit):
            status = await wait_phase(kube, "wfe-a", namespace, "Running")
            adopted = await wait_events(kube, namespace, "wfe-a", "PipelineRunCreated")

        assert status["startTime"] == rfc3339(created.metadata.creationTimestamp)
        assert status["pipelineRunRef"] == {"name": lock}
        assert "already exists" in condition(status, "TektonPipelineCreated")["message"]
        assert adopted == [
            ("Normal", "PipelineRunCreated", f"PipelineRun {exec_ns}/{lock} already exists, ours; adopted")
        ]
        assert watch.created == [(lock, created.metadata.uid)]
        assert (await kube.get(PipelineRunResource, lock, namespace=exec_ns)).metadata.uid == created.metadata.uid

    assert metrics.delta() == {sample(CREATIONS): 1}
    assert await count_audit(url, "wfe-a") == {"workflow.started": 1}


async def test_status_write_conflicts(
    kube: AsyncClient, kubeconfig: Path, namespace: str, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """Every status write first meets real 409s (someone else changed the WFE since it was read):
    the executor retries, and every side effect still happens exactly once."""
    exec_ns = await create_execution_namespace(kube)
    url = f"sqlite:///{tmp_path}/audit.db"
    settings = settings_for(exec_ns, audit={"url": url})
    target = f"{namespace}/Deployment/api"
    lock = build_lock_name(target)
    metrics = Metrics()
    conflicts_before = metric(CONFLICTS, {"controller": "executor"})
    conflicts = {"left": 3, "met": 0}

    async def change_it_first(name: str, _body: dict[str, Any]) -> None:
        if conflicts["left"] > 0:
            conflicts["left"] -= 1
            conflicts["met"] += 1
            await kube.patch(
                WorkflowExecutionResource,
                name,
                {"metadata": {"annotations": {"example.com/touched": str(conflicts["met"])}}},
                namespace=namespace,
                patch_type=PatchType.MERGE,
            )

    async with watching_pipelineruns(kube, exec_ns) as watch:
        async with (
            open_audit_sink(settings.audit) as audit,
            running(kubeconfig, settings, ("executor",), audit=audit) as manager,
        ):
            on_wfe_status_patch(manager, change_it_first)
            await create_wfe(kube, "wfe-a", namespace, target)
            running_status = await wait_phase(kube, "wfe-a", namespace, "Running")
            await wait_events(kube, namespace, "wfe-a", "PipelineRunCreated")
            assert conflicts == {"left": 0, "met": 3}

            # The first write met a conflict, so the retry adopted the PipelineRun it had created.
            created = await kube.get(PipelineRunResource, lock, namespace=exec_ns)
            assert running_status["startTime"] == rfc3339(created.metadata.creationTimestamp)

            conflicts["left"] = 3
            finished = parse_time(running_status["startTime"]) + timedelta(seconds=42)
            await patch_pipelinerun_status(
                kube,
                lock,
                exec_ns,
                {"completionTime": rfc3339(finished), **succeeded("True", "Succeeded", "Tasks Completed: 1")},
            )
            status = await wait_phase(kube, "wfe-a", namespace, "Completed")
            await wait_events(kube, namespace, "wfe-a", "WorkflowCompleted")
            assert conflicts["met"] >= 4  # the terminal write met at least one
            assert status["startTime"] == running_status["startTime"]
            assert (status["completionTime"], status["duration"]) == (rfc3339(finished), "42s")

        # Each change made the next write a real 409, retried quietly: counted, not logged as a warning.
        assert metric(CONFLICTS, {"controller": "executor"}) - conflicts_before == conflicts["met"]
        assert [r.getMessage() for r in caplog.records if r.levelno >= logging.WARNING] == []
        reasons = sorted(reason for _, reason, _ in await events_for(kube, namespace, "wfe-a"))
        assert reasons == ["PipelineRunCreated", "WorkflowCompleted"]
        assert len(watch.created) == 1
        assert watch.max_alive() == 1

    assert metrics.delta() == {
        sample(CREATIONS): 1,
        sample(OUTCOMES, outcome="Completed"): 1,
        sample(f"{DURATIONS}_count", outcome="Completed"): 1,
        sample(f"{DURATIONS}_sum", outcome="Completed"): 42,
        sample(f"{DURATIONS}_bucket", outcome="Completed", le="80.0"): 1,
        sample(f"{DURATIONS}_bucket", outcome="Completed", le="160.0"): 1,
    }
    assert await count_audit(url, "wfe-a") == {"workflow.started": 1, "workflow.completed": 1}
