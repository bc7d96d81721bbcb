"""Whole remediations: orchestrator, executor and the Tekton stand-in on the real API server.

Side effects are counted from watches, the audit sink and the metrics: how many executions and
PipelineRuns came to exist, and in which order.
"""

from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from lightkube import AsyncClient

from kubernaut.audit.memory import MemoryAuditSink
from kubernaut.domain.target import build_lock_name
from kubernaut.kube.resources import PipelineRunResource, WorkflowExecutionResource
from tests.integration.harness import (
    create_execution_namespace,
    eventually,
    get_or_none,
    running,
    settings_for,
)
from tests.integration.orchestrator_support import (
    condition,
    create_rr,
    create_wfe,
    metric,
    moves_of,
    notifications,
    parse_time,
    recording,
    rfc3339,
    set_rr_status,
    wait_phase,
    wfe_body,
    wfes,
)
from tests.integration.rr import rr_manifest
from tests.integration.tekton_support import played

pytestmark = pytest.mark.tekton

BOTH = ("orchestrator", "executor")
PR_LABEL = "kubernaut.ai/workflow-execution"


def owners(recorded_events: list[tuple[str, str, str, dict[str, Any]]]) -> dict[str, str]:
    """PipelineRun uid -> the execution named by its label, for every PipelineRun that ever existed."""
    return {uid: body["metadata"]["labels"][PR_LABEL] for _, _, uid, body in recorded_events}


async def test_happy_path_runs_one_execution_and_one_pipelinerun(
    kube: AsyncClient, kubeconfig: Path, namespace: str
) -> None:
    exec_ns = await create_execution_namespace(kube)
    audit = MemoryAuditSink()
    target = {"kind": "Deployment", "name": "api", "namespace": namespace}
    lock = build_lock_name(f"{namespace}/Deployment/api")
    settings = settings_for(exec_ns, execution={"cooldown": "1s"})
    async with (
        recording(kube, PipelineRunResource, exec_ns) as runs,
        recording(kube, WorkflowExecutionResource, namespace) as executions,
        running(kubeconfig, settings, BOTH, audit=audit),
    ):
        await create_rr(kube, rr_manifest("rr-1", namespace, target=target, bundle=played("succeed:2tasks-1s")))
        status = await wait_phase(kube, "rr-1", namespace, "Completed")

        async def released() -> bool:
            return await get_or_none(kube, PipelineRunResource, lock, exec_ns) is None

        await eventually(released, what="the lock released after the cooldown")
        wfe = (await kube.get(WorkflowExecutionResource, "we-rr-1", namespace=namespace)).to_dict()

    assert status["outcome"] == "Remediated"
    assert condition(status, "RecoveryComplete")["status"] == "True"
    assert wfe["status"]["phase"] == "Completed"
    assert wfe["status"]["pipelineRunRef"]["name"] == lock
    assert executions.created() == ["we-rr-1"]
    assert runs.created() == [lock]
    assert owners(runs.events) == {next(iter(runs.uids())): "we-rr-1"}
    assert [t for t, *_ in runs.events][-1] == "DELETED"
    assert len(audit.of_type("orchestrator.lifecycle.started", "rr-1")) == 1
    assert moves_of(audit, "rr-1") == [("Pending", "Analyzing"), ("Analyzing", "Executing")]
    assert len(audit.of_type("orchestrator.lifecycle.completed", "rr-1")) == 1
    assert len(audit.of_type("orchestrator.routing.blocked")) == 0
    assert len(audit.of_type("workflow.started", "we-rr-1")) == 1
    assert len(audit.of_type("workflow.completed", "we-rr-1")) == 1
    assert await notifications(kube, namespace) == []


async def test_busy_target_blocks_a_second_request_until_the_lock_is_released(
    kube: AsyncClient, kubeconfig: Path, namespace: str
) -> None:
    exec_ns = await create_execution_namespace(kube)
    audit = MemoryAuditSink()
    target = {"kind": "Deployment", "name": "api", "namespace": namespace}
    settings = settings_for(exec_ns, execution={"cooldown": "1s"}, routing={"recentlyRemediatedCooldown": "0s"})
    async with (
        recording(kube, PipelineRunResource, exec_ns) as runs,
        recording(kube, WorkflowExecutionResource, namespace) as executions,
        running(kubeconfig, settings, BOTH, audit=audit),
    ):
        await create_rr(kube, rr_manifest("rr-1", namespace, target=target, bundle=played("succeed:1tasks-2s")))
        await wait_phase(kube, "rr-1", namespace, "Executing")
        await create_rr(kube, rr_manifest("rr-2", namespace, target=target))
        blocked = await wait_phase(kube, "rr-2", namespace, "Blocked")
        assert blocked["blockReason"] == "ResourceBusy"
        assert blocked["blockingWorkflowExecution"] == "we-rr-1"
        assert "blockedUntil" not in blocked
        assert await get_or_none(kube, WorkflowExecutionResource, "we-rr-2", namespace) is None

        first = await wait_phase(kube, "rr-1", namespace, "Completed")
        second = await wait_phase(kube, "rr-2", namespace, "Completed", timeout=30)
        names = [w["metadata"]["name"] for w in await wfes(kube, namespace)]

    assert first["outcome"] == "Remediated"
    assert second["outcome"] == "Remediated"
    assert sorted(names) == ["we-rr-1", "we-rr-2"]
    assert executions.created() == ["we-rr-1", "we-rr-2"]
    # Had the second execution been created while the lock was held, it would have lost a race.
    wfe2 = (await kube.get(WorkflowExecutionResource, "we-rr-2", namespace=namespace)).to_dict()
    assert wfe2["status"]["phase"] == "Completed"
    assert sorted(owners(runs.events).values()) == ["we-rr-1", "we-rr-2"]
    # One block (possibly renewed while the lock was held), cleared by itself, never by the 30 s net.
    assert {e.event_data["block_reason"] for e in audit.of_type("orchestrator.routing.blocked", "rr-2")} == {
        "ResourceBusy"
    }
    assert ("Blocked", "Analyzing") in moves_of(audit, "rr-2") or ("Blocked", "Pending") in moves_of(audit, "rr-2")


async def test_recently_remediated_target_waits_for_the_cooldown_then_runs(
    kube: AsyncClient, kubeconfig: Path, namespace: str
) -> None:
    exec_ns = await create_execution_namespace(kube)
    target = {"kind": "Deployment", "name": "api", "namespace": namespace}
    settings = settings_for(exec_ns, execution={"cooldown": "1s"}, routing={"recentlyRemediatedCooldown": "4s"})
    async with running(kubeconfig, settings, BOTH):
        await create_rr(kube, rr_manifest("rr-1", namespace, target=target, bundle=played("succeed:1tasks-0s")))
        await wait_phase(kube, "rr-1", namespace, "Completed")
        done = (await kube.get(WorkflowExecutionResource, "we-rr-1", namespace=namespace)).to_dict()
        until = parse_time(done["status"]["completionTime"]) + timedelta(seconds=4)

        await create_rr(kube, rr_manifest("rr-2", namespace, target=target, bundle=played("succeed:1tasks-0s")))
        blocked = await wait_phase(kube, "rr-2", namespace, "Blocked", blockReason="RecentlyRemediated")
        assert blocked["blockedUntil"] == rfc3339(until)
        assert "blockingWorkflowExecution" not in blocked
        assert "we-rr-1" in blocked["blockMessage"]
        assert await get_or_none(kube, WorkflowExecutionResource, "we-rr-2", namespace) is None

        second = await wait_phase(kube, "rr-2", namespace, "Completed", timeout=30)
        wfe2 = (await kube.get(WorkflowExecutionResource, "we-rr-2", namespace=namespace)).to_dict()
    assert second["outcome"] == "Remediated"
    assert parse_time(wfe2["metadata"]["creationTimestamp"]) >= until


async def test_two_executions_that_slip_past_routing_never_run_together(
    kube: AsyncClient, kubeconfig: Path, namespace: str
) -> None:
    """Both requests' executions exist before any controller runs: the lock lets exactly one run."""
    exec_ns = await create_execution_namespace(kube)
    audit = MemoryAuditSink()
    target = {"kind": "Deployment", "name": "api", "namespace": namespace}
    canonical = f"{namespace}/Deployment/api"
    now = rfc3339(datetime.now(UTC))
    for name in ("rr-a", "rr-b"):
        rr = await create_rr(kube, rr_manifest(name, namespace, target=target))
        await create_wfe(kube, wfe_body(f"we-{name}", namespace, canonical, owner=rr, bundle=played("succeed:1s")))
        await set_rr_status(
            kube,
            name,
            namespace,
            {
                "overallPhase": "Executing",
                "startTime": now,
                "executingStartTime": now,
                "transitionCount": 3,
                "workflowExecutionRef": {
                    "apiVersion": "kubernaut.ai/v1alpha1",
                    "kind": "WorkflowExecution",
                    "name": f"we-{name}",
                    "namespace": namespace,
                },
            },
        )
    creations = metric("workflowexecution_reconciler_pipelinerun_creations_total")
    settings = settings_for(exec_ns, execution={"cooldown": "1s"})
    async with (
        recording(kube, PipelineRunResource, exec_ns) as runs,
        running(kubeconfig, settings, BOTH, audit=audit),
    ):
        statuses = {name: await wait_phase(kube, name, namespace, "Completed", "Failed") for name in ("rr-a", "rr-b")}
        executions = {w["metadata"]["name"]: w for w in await wfes(kube, namespace)}

    phases = sorted(s["overallPhase"] for s in statuses.values())
    assert phases == ["Completed", "Failed"]
    loser = next(name for name, s in statuses.items() if s["overallPhase"] == "Failed")
    winner = next(name for name, s in statuses.items() if s["overallPhase"] == "Completed")
    lost = executions[f"we-{loser}"]["status"]
    assert lost["failureDetails"]["reason"] == "ExecutionRaceCondition"
    assert lost["failureDetails"]["message"].startswith("Race condition:")
    assert f"we-{winner}" in lost["failureDetails"]["message"]
    assert lost["failureDetails"].get("wasExecutionFailure", False) is False
    assert condition(lost, "TektonPipelineCreated")["reason"] == "ExecutionRaceCondition"
    assert statuses[loser]["failurePhase"] == "workflow_execution"
    assert "consecutiveFailureCount" not in statuses[loser]  # a lost race is no back-off failure
    assert "notificationRequestRefs" not in statuses[loser]
    assert set(owners(runs.events).values()) == {f"we-{winner}"}
    assert len(runs.uids()) == 1
    assert metric("workflowexecution_reconciler_pipelinerun_creations_total") == creations + 1
