"""Creating the WorkflowExecution, reacting to its outcome, the Blocked phase and timeouts.

The orchestrator runs alone; the test plays the executor by writing WorkflowExecution status.
"""

import asyncio
from datetime import timedelta
from pathlib import Path
from typing import Any

from lightkube import AsyncClient

from kubernaut.audit.memory import MemoryAuditSink
from kubernaut.kube.resources import RemediationRequestResource, WorkflowExecutionResource
from tests.integration.harness import (
    OffsetClock,
    create_execution_namespace,
    create_namespace,
    create_node,
    eventually,
    get_or_none,
    running,
    settings_for,
)
from tests.integration.orchestrator_support import (
    RO,
    completed_wfe_status,
    condition,
    create_rr,
    create_wfe,
    failed_wfe_status,
    metric,
    moves_of,
    notifications,
    parse_time,
    poke,
    reconciles,
    review_notifications,
    rfc3339,
    set_rr_status,
    set_wfe_status,
    transitions,
    wait_phase,
    wfe_body,
    wfes,
)
from tests.integration.rr import rr_manifest

NO_JITTER = {"backoffJitterPercent": 0}


def one_event(audit: MemoryAuditSink, event_type: str, rr: str) -> dict[str, Any]:
    found = audit.of_type(event_type, rr)
    assert len(found) == 1, [e.event_data for e in found]
    return {**found[0].event_data, "event_outcome": found[0].event_outcome}


# -- 39-41: the WorkflowExecution ----------------------------------------------------------------


async def test_routing_passes_and_the_execution_is_created(kube: AsyncClient, kubeconfig: Path, namespace: str) -> None:
    exec_ns = await create_execution_namespace(kube)
    audit, clock = MemoryAuditSink(), OffsetClock()
    clock.advance(3 * 3600)
    payment = await create_namespace(kube, "payment")  # the target's namespace, opted in
    target = {"kind": "Deployment", "name": "payment-api", "namespace": payment}
    async with running(kubeconfig, settings_for(exec_ns), ("orchestrator",), audit=audit, clock=clock):
        rr = await create_rr(kube, rr_manifest("rr-9", namespace, target=target))
        status = await wait_phase(kube, "rr-9", namespace, "Executing")
        await create_rr(
            kube,
            rr_manifest(
                "rr-10",
                namespace,
                target={**target, "name": "other"},
                timeoutConfig={"executing": "20m"},
            ),
        )
        await wait_phase(kube, "rr-10", namespace, "Executing")
        created = {w["metadata"]["name"]: w for w in await wfes(kube, namespace)}

    wfe = created["we-rr-9"]
    assert wfe["spec"]["targetResource"] == f"{payment}/Deployment/payment-api"
    assert wfe["metadata"]["labels"] == {
        "kubernaut.ai/remediation-request": "rr-9",
        "kubernaut.ai/component": "workflow-execution",
    }
    [owner] = wfe["metadata"]["ownerReferences"]
    assert owner["uid"] == rr["metadata"]["uid"]
    assert owner["kind"] == "RemediationRequest"
    assert owner["controller"] is True
    assert wfe["spec"]["remediationRequestRef"]["uid"] == rr["metadata"]["uid"]
    assert wfe["spec"]["workflowRef"]["workflowId"] == "restart-deployment"
    assert "executionConfig" not in wfe["spec"]
    assert created["we-rr-10"]["spec"]["executionConfig"] == {"timeout": "20m"}

    assert status["workflowExecutionRef"]["name"] == "we-rr-9"
    assert status["workflowExecutionRef"]["kind"] == "WorkflowExecution"
    assert abs(parse_time(status["executingStartTime"]) - clock()) < timedelta(minutes=1)
    ready = condition(status, "WorkflowExecutionReady")
    assert ready["status"] == "True"
    assert ready["reason"] == "WorkflowExecutionCreated"
    assert status["selectedWorkflow"]["source"] == "spec.workflowRef"
    assert metric(f"{RO}child_crd_creations_total", {"child_type": "WorkflowExecution", "namespace": namespace}) == 2
    assert moves_of(audit, "rr-9") == [("Pending", "Analyzing"), ("Analyzing", "Executing")]


async def test_an_existing_execution_of_the_request_is_reused_unchanged(
    kube: AsyncClient, kubeconfig: Path, namespace: str
) -> None:
    exec_ns = await create_execution_namespace(kube)
    target = {"kind": "Deployment", "name": "api", "namespace": namespace}
    rr = await create_rr(kube, rr_manifest("rr-9", namespace, target=target))
    # As after a crash between creating the execution and recording it on the request.
    existing = await create_wfe(kube, wfe_body("we-rr-9", namespace, f"{namespace}/Deployment/api", owner=rr))
    async with running(kubeconfig, settings_for(exec_ns), ("orchestrator",)):
        status = await wait_phase(kube, "rr-9", namespace, "Executing")
    after = await kube.get(WorkflowExecutionResource, "we-rr-9", namespace=namespace)
    assert after.metadata.resourceVersion == existing["metadata"]["resourceVersion"]
    assert status["workflowExecutionRef"]["name"] == "we-rr-9"
    assert [w["metadata"]["name"] for w in await wfes(kube, namespace)] == ["we-rr-9"]


# -- 42-45: outcomes -------------------------------------------------------------------------------


async def test_completed_execution_completes_the_request(kube: AsyncClient, kubeconfig: Path, namespace: str) -> None:
    exec_ns = await create_execution_namespace(kube)
    audit, clock = MemoryAuditSink(), OffsetClock()
    target = {"kind": "Deployment", "name": "api", "namespace": namespace}
    async with running(kubeconfig, settings_for(exec_ns), ("orchestrator",), audit=audit, clock=clock):
        await create_rr(kube, rr_manifest("rr-1", namespace, target=target))
        await wait_phase(kube, "rr-1", namespace, "Executing")
        await set_wfe_status(kube, "we-rr-1", namespace, completed_wfe_status(clock()))
        status = await wait_phase(kube, "rr-1", namespace, "Completed")

    assert status["outcome"] == "Remediated"
    assert abs(parse_time(status["completedAt"]) - clock()) < timedelta(minutes=1)
    assert status.get("consecutiveFailureCount", 0) == 0
    assert "nextAllowedExecution" not in status
    assert condition(status, "WorkflowExecutionComplete")["status"] == "True"
    assert condition(status, "WorkflowExecutionComplete")["reason"] == "WorkflowSucceeded"
    assert condition(status, "RecoveryComplete")["status"] == "True"
    assert condition(status, "RecoveryComplete")["reason"] == "RecoverySucceeded"
    done = one_event(audit, "orchestrator.lifecycle.completed", "rr-1")
    assert done["event_outcome"] == "success"
    assert done["outcome"] == "Remediated"
    assert done["duration_ms"] >= 0
    assert transitions(namespace, "Executing", "Completed") == 1
    assert await notifications(kube, namespace) == []


async def test_failure_before_execution_fails_the_request_with_the_target_gate(
    kube: AsyncClient, kubeconfig: Path, namespace: str
) -> None:
    exec_ns = await create_execution_namespace(kube)
    audit, clock = MemoryAuditSink(), OffsetClock()
    target = {"kind": "Deployment", "name": "api", "namespace": namespace}
    settings = settings_for(exec_ns, routing=NO_JITTER)
    async with running(kubeconfig, settings, ("orchestrator",), audit=audit, clock=clock):
        await create_rr(kube, rr_manifest("rr-1", namespace, target=target))
        await wait_phase(kube, "rr-1", namespace, "Executing")
        failed_at = clock().replace(microsecond=0)
        await set_wfe_status(
            kube,
            "we-rr-1",
            namespace,
            failed_wfe_status(failed_at, execution=False, reason="ImagePullBackOff", summary="could not pull"),
        )
        status = await wait_phase(kube, "rr-1", namespace, "Failed")

    assert status["failurePhase"] == "workflow_execution"
    assert status["failureReason"] == "WorkflowExecution failed"
    assert status["consecutiveFailureCount"] == 1
    assert status["nextAllowedExecution"] == rfc3339(failed_at + timedelta(seconds=60))
    assert status["requiresManualReview"] is False
    assert status["message"] == "could not pull"
    assert status["completedAt"]
    assert condition(status, "WorkflowExecutionComplete")["reason"] == "WorkflowFailed"
    assert condition(status, "RecoveryComplete")["status"] == "False"
    assert "notificationRequestRefs" not in status
    assert await notifications(kube, namespace) == []
    done = one_event(audit, "orchestrator.lifecycle.completed", "rr-1")
    assert done["event_outcome"] == "failure"
    assert done["failure_phase"] == "workflow_execution"
    assert done["failure_reason"] == "WorkflowExecution failed"
    assert transitions(namespace, "Executing", "Failed") == 1


async def test_failure_during_execution_asks_for_manual_review(
    kube: AsyncClient, kubeconfig: Path, namespace: str
) -> None:
    exec_ns = await create_execution_namespace(kube)
    clock = OffsetClock()
    target = {"kind": "Deployment", "name": "api", "namespace": namespace}
    async with running(kubeconfig, settings_for(exec_ns), ("orchestrator",), clock=clock):
        await create_rr(kube, rr_manifest("rr-1", namespace, target=target))
        await wait_phase(kube, "rr-1", namespace, "Executing")
        await set_wfe_status(
            kube, "we-rr-1", namespace, failed_wfe_status(clock(), execution=True, summary="task 1 exited 3")
        )
        status = await wait_phase(kube, "rr-1", namespace, "Failed")
        notes = await notifications(kube, namespace)

    assert status["requiresManualReview"] is True
    assert status["message"] == "task 1 exited 3"
    # Failures while executing are not back-off failures: no count, no gate.
    assert "consecutiveFailureCount" not in status
    assert "nextAllowedExecution" not in status
    [note] = notes
    assert note["metadata"]["name"] == "nr-manual-review-rr-1"
    assert note["spec"]["type"] == "manual-review"
    assert note["spec"]["priority"] == "critical"
    assert note["spec"]["channels"] == ["slack", "email"]
    assert note["metadata"]["labels"]["kubernaut.ai/review-source"] == "WorkflowExecution"
    assert note["metadata"]["labels"]["kubernaut.ai/notification-type"] == "manual-review"
    assert note["spec"]["metadata"]["reason"] == "ExecutionFailure"
    assert note["spec"]["metadata"]["previousExecution"] == "we-rr-1"
    assert note["spec"]["metadata"]["lastExitCode"] == "3"
    assert "Manual Review Required: KubePodCrashLooping" in note["spec"]["subject"]
    [ref] = status["notificationRequestRefs"]
    assert ref["name"] == "nr-manual-review-rr-1"
    assert ref["uid"] == note["metadata"]["uid"]
    assert ref["apiVersion"] == "kubernaut.ai/v1alpha1"
    assert review_notifications(namespace, "WorkflowExecution", "ExecutionFailure") == 1


async def test_deleted_execution_fails_the_request(kube: AsyncClient, kubeconfig: Path, namespace: str) -> None:
    exec_ns = await create_execution_namespace(kube)
    target = {"kind": "Deployment", "name": "api", "namespace": namespace}
    async with running(kubeconfig, settings_for(exec_ns), ("orchestrator",)):
        await create_rr(kube, rr_manifest("rr-1", namespace, target=target))
        await wait_phase(kube, "rr-1", namespace, "Executing")
        await kube.delete(WorkflowExecutionResource, "we-rr-1", namespace=namespace)
        status = await wait_phase(kube, "rr-1", namespace, "Failed")
    assert status["failurePhase"] == "workflow_execution"
    assert status["failureReason"] == "WorkflowExecution not found"


# -- 46, 47: the Blocked phase ---------------------------------------------------------------------


def blocked(reason: str, until: str | None, start: str) -> dict[str, Any]:
    status: dict[str, Any] = {
        "overallPhase": "Blocked",
        "startTime": start,
        "blockReason": reason,
        "blockMessage": f"held: {reason}",
        "blockedFromPhase": "Pending",
        "transitionCount": 2,
    }
    if until:
        status["blockedUntil"] = until
    return status


async def test_expired_blocks_route_again_or_fail_by_reason(
    kube: AsyncClient, kubeconfig: Path, namespace: str
) -> None:
    exec_ns = await create_execution_namespace(kube)
    audit, clock = MemoryAuditSink(), OffsetClock()
    now = clock()
    past, start = rfc3339(now - timedelta(seconds=1)), rfc3339(now - timedelta(minutes=1))
    for index, reason in enumerate(("RecentlyRemediated", "ExponentialBackoff", "ConsecutiveFailures")):
        name = f"rr-{reason.lower()}"
        target = {"kind": "Deployment", "name": f"app-{index}", "namespace": namespace}
        await create_rr(kube, rr_manifest(name, namespace, target=target))
        await set_rr_status(kube, name, namespace, blocked(reason, past, start))
    expired = metric(f"{RO}blocked_cooldown_expired_total")
    async with running(kubeconfig, settings_for(exec_ns), ("orchestrator",), audit=audit, clock=clock):
        for reason in ("RecentlyRemediated", "ExponentialBackoff"):
            status = await wait_phase(kube, f"rr-{reason.lower()}", namespace, "Executing")
            assert "blockReason" not in status
            assert moves_of(audit, f"rr-{reason.lower()}")[0] == ("Blocked", "Pending")
        failed = await wait_phase(kube, "rr-consecutivefailures", namespace, "Failed")

        async def gauge_zero() -> bool:
            return metric(f"{RO}current_blocked", {"namespace": namespace}) == 0

        await eventually(gauge_zero, what="current_blocked 0")
    assert failed["failurePhase"] == "blocked"
    assert failed["failureReason"] == "Cooldown expired after blocking due to ConsecutiveFailures"
    assert failed["blockReason"] == "ConsecutiveFailures"
    assert "blockedUntil" not in failed
    assert metric(f"{RO}blocked_cooldown_expired_total") == expired + 1
    assert one_event(audit, "orchestrator.lifecycle.completed", "rr-consecutivefailures")["event_outcome"] == "failure"


async def test_a_hold_without_expiry_stays_untouched(kube: AsyncClient, kubeconfig: Path, namespace: str) -> None:
    exec_ns = await create_execution_namespace(kube)
    target = {"kind": "Deployment", "name": "api", "namespace": namespace}
    await create_rr(kube, rr_manifest("rr-held", namespace, target=target))
    held = await set_rr_status(kube, "rr-held", namespace, blocked("ManualHold", None, rfc3339(OffsetClock()())))
    async with running(kubeconfig, settings_for(exec_ns), ("orchestrator",)):

        async def seen() -> float:
            return reconciles(namespace)

        first = await eventually(seen, what="the held request reconciled once")
        await asyncio.sleep(3)  # an observation window: nothing may happen in it
        assert reconciles(namespace) == first
    after = await kube.get(RemediationRequestResource, "rr-held", namespace=namespace)
    assert after.metadata.resourceVersion == held["metadata"]["resourceVersion"]


# -- 51: a previous execution failed -----------------------------------------------------------------


async def test_previous_execution_failure_fails_the_request_until_cleared(
    kube: AsyncClient, kubeconfig: Path, namespace: str
) -> None:
    exec_ns = await create_execution_namespace(kube)
    audit, clock = MemoryAuditSink(), OffsetClock()
    target = {"kind": "Deployment", "name": "api", "namespace": namespace}
    canonical = f"{namespace}/Deployment/api"
    await create_wfe(
        kube,
        wfe_body("we-broke", namespace, canonical),
        failed_wfe_status(clock() - timedelta(hours=2), execution=True),
    )
    async with running(kubeconfig, settings_for(exec_ns), ("orchestrator",), audit=audit, clock=clock):
        await create_rr(kube, rr_manifest("rr-1", namespace, target=target))
        status = await wait_phase(kube, "rr-1", namespace, "Failed")
        assert status["skipReason"] == "PreviousExecutionFailed"
        assert "we-broke" in status["skipMessage"]
        assert canonical in status["skipMessage"]
        assert "Manual intervention" in status["skipMessage"]
        assert status["blockingWorkflowExecution"] == "we-broke"
        assert status["requiresManualReview"] is True
        assert status["completedAt"]
        assert "blockReason" not in status
        assert await get_or_none(kube, WorkflowExecutionResource, "we-rr-1", namespace) is None
        [note] = await notifications(kube, namespace)
        assert note["metadata"]["name"] == "nr-manual-review-rr-1"
        assert note["spec"]["metadata"]["reason"] == "PreviousExecutionFailed"
        assert note["spec"]["metadata"]["previousExecution"] == "we-broke"
        assert note["spec"]["priority"] == "critical"
        assert [r["name"] for r in status["notificationRequestRefs"]] == ["nr-manual-review-rr-1"]
        routed = one_event(audit, "orchestrator.routing.blocked", "rr-1")
        assert routed["block_reason"] == "PreviousExecutionFailed"
        assert routed["from_phase"] == "Analyzing"
        assert routed["to_phase"] == "Failed"
        assert routed["blocking_wfe"] == "we-broke"
        done = one_event(audit, "orchestrator.lifecycle.completed", "rr-1")
        assert done["event_outcome"] == "failure"
        assert done["failure_reason"] == "PreviousExecutionFailed"
        assert review_notifications(namespace, "WorkflowExecution", "PreviousExecutionFailed") == 1

        # A person verified the target and cleared the block: the next request runs.
        cleared = failed_wfe_status(clock() - timedelta(hours=2), execution=True)
        cleared["blockClearance"] = {
            "clearedAt": rfc3339(clock()),
            "clearedBy": "unverified:checked",
            "clearReason": "checked",
            "clearMethod": "Annotation",
        }
        await set_wfe_status(kube, "we-broke", namespace, cleared)
        await create_rr(kube, rr_manifest("rr-2", namespace, target=target))
        await wait_phase(kube, "rr-2", namespace, "Executing")


# -- timeouts --------------------------------------------------------------------------------------


async def test_phase_and_global_timeouts_end_the_request_and_notify(
    kube: AsyncClient, kubeconfig: Path, namespace: str
) -> None:
    exec_ns = await create_execution_namespace(kube)
    audit, clock = MemoryAuditSink(), OffsetClock()
    async with running(kubeconfig, settings_for(exec_ns), ("orchestrator",), audit=audit, clock=clock):
        node = await create_node(kube, "worker-a")  # a cluster-scoped target opts in itself
        await create_rr(kube, rr_manifest("rr-a", namespace, target={"kind": "Node", "name": node}))
        await wait_phase(kube, "rr-a", namespace, "Executing")
        clock.advance(31 * 60)  # past the 30m Executing timeout, within the 1h global one
        await poke(kube, "rr-a", namespace)
        phase_out = await wait_phase(kube, "rr-a", namespace, "TimedOut")

        node_b = await create_node(kube, "worker-b")
        await create_rr(kube, rr_manifest("rr-b", namespace, target={"kind": "Node", "name": node_b}))
        await wait_phase(kube, "rr-b", namespace, "Executing")
        clock.advance(2 * 3600)
        await poke(kube, "rr-b", namespace)
        global_out = await wait_phase(kube, "rr-b", namespace, "TimedOut")
        notes = {n["metadata"]["name"]: n for n in await notifications(kube, namespace)}

    assert phase_out["timeoutPhase"] == "Executing"
    assert phase_out["completedAt"]
    assert phase_out["timeoutTime"]
    assert "Executing" in phase_out["message"]
    assert global_out["timeoutPhase"] == "Executing"
    assert notes["phase-timeout-executing-rr-a"]["spec"]["priority"] == "high"
    assert notes["timeout-rr-b"]["spec"]["priority"] == "critical"
    assert notes["timeout-rr-b"]["spec"]["channels"] == ["slack", "email"]
    assert metric(f"{RO}timeouts_total", {"phase": "Executing", "namespace": namespace}) == 2
    # Timing out never cancels a run: both executions are still there.
    assert sorted(w["metadata"]["name"] for w in await wfes(kube, namespace)) == ["we-rr-a", "we-rr-b"]
    assert one_event(audit, "orchestrator.lifecycle.completed", "rr-a")["event_outcome"] == "failure"
