"""Failed remediations end to end: back-off per target, exhausted retries, execution failures.

Orchestrator, executor and the Tekton stand-in on the real API server, with short durations.
"""

from datetime import timedelta
from pathlib import Path

import pytest
from lightkube import AsyncClient

from kubernaut.audit.memory import MemoryAuditSink
from kubernaut.kube.resources import WorkflowExecutionResource
from tests.integration.harness import (
    create_execution_namespace,
    eventually,
    get_or_none,
    running,
    settings_for,
)
from tests.integration.orchestrator_support import (
    annotate_wfe,
    create_rr,
    notifications,
    parse_time,
    review_notifications,
    rfc3339,
    wait_phase,
    wfes,
)
from tests.integration.rr import fingerprint, rr_manifest
from tests.integration.tekton_support import played

pytestmark = pytest.mark.tekton

BOTH = ("orchestrator", "executor")
PULL_FAILS = "imagepull:0s"
SUCCEEDS = "succeed:1tasks-0s"


async def completion_of(kube: AsyncClient, wfe: str, namespace: str) -> str:
    body = (await kube.get(WorkflowExecutionResource, wfe, namespace=namespace)).to_dict()
    value: str = body["status"]["completionTime"]
    return value


async def test_failures_before_execution_back_off_exponentially_per_target(
    kube: AsyncClient, kubeconfig: Path, namespace: str
) -> None:
    exec_ns = await create_execution_namespace(kube)
    audit = MemoryAuditSink()
    target = {"kind": "Deployment", "name": "api", "namespace": namespace}
    settings = settings_for(
        exec_ns,
        execution={"cooldown": "1s"},
        routing={
            "backoffBase": "2s",
            "backoffMax": "1m",
            "backoffJitterPercent": 0,
            "recentlyRemediatedCooldown": "0s",
        },
    )
    async with running(kubeconfig, settings, BOTH, audit=audit):
        await create_rr(kube, rr_manifest("rr-1", namespace, target=target, bundle=played(PULL_FAILS)))
        first = await wait_phase(kube, "rr-1", namespace, "Failed")
        gate1 = parse_time(await completion_of(kube, "we-rr-1", namespace)) + timedelta(seconds=2)
        assert first["consecutiveFailureCount"] == 1
        assert first["nextAllowedExecution"] == rfc3339(gate1)
        assert first["requiresManualReview"] is False

        await create_rr(kube, rr_manifest("rr-2", namespace, target=target, bundle=played(PULL_FAILS)))
        held = await wait_phase(kube, "rr-2", namespace, "Blocked", blockReason="ExponentialBackoff")
        assert held["blockedUntil"] == rfc3339(gate1)
        second = await wait_phase(kube, "rr-2", namespace, "Failed")
        gate2 = parse_time(await completion_of(kube, "we-rr-2", namespace)) + timedelta(seconds=4)
        assert second["consecutiveFailureCount"] == 2
        assert second["nextAllowedExecution"] == rfc3339(gate2)
        wfe2 = (await kube.get(WorkflowExecutionResource, "we-rr-2", namespace=namespace)).to_dict()
        assert parse_time(wfe2["metadata"]["creationTimestamp"]) >= gate1

        # The third request would succeed, but it waits out the doubled back-off first.
        await create_rr(kube, rr_manifest("rr-3", namespace, target=target, bundle=played(SUCCEEDS)))
        held = await wait_phase(kube, "rr-3", namespace, "Blocked", blockReason="ExponentialBackoff")
        assert held["blockedUntil"] == rfc3339(gate2)
        assert held["nextAllowedExecution"] == rfc3339(gate2)
        assert held["consecutiveFailureCount"] == 2
        assert "Exponential backoff active" in held["blockMessage"]
        third = await wait_phase(kube, "rr-3", namespace, "Completed", timeout=30)
        wfe3 = (await kube.get(WorkflowExecutionResource, "we-rr-3", namespace=namespace)).to_dict()
        assert parse_time(wfe3["metadata"]["creationTimestamp"]) >= gate2

        # A success resets the target: the next request is not held back at all.
        await create_rr(kube, rr_manifest("rr-4", namespace, target=target, bundle=played(SUCCEEDS)))
        await wait_phase(kube, "rr-4", namespace, "Completed", timeout=30)

    assert "consecutiveFailureCount" not in third
    assert "nextAllowedExecution" not in third
    assert {e.event_data["block_reason"] for e in audit.of_type("orchestrator.routing.blocked", "rr-4")} <= {
        "ResourceBusy"
    }
    assert await notifications(kube, namespace) == []


async def test_three_failures_exhaust_retries_with_one_notification(
    kube: AsyncClient, kubeconfig: Path, namespace: str
) -> None:
    exec_ns = await create_execution_namespace(kube)
    fp = fingerprint()
    target = {"kind": "Deployment", "name": "api", "namespace": namespace}
    settings = settings_for(
        exec_ns,
        execution={"cooldown": "1s"},
        routing={
            "consecutiveFailureCooldown": "5s",
            "backoffBase": "1s",
            "backoffMax": "1s",
            "backoffJitterPercent": 0,
            "recentlyRemediatedCooldown": "0s",
        },
    )
    async with running(kubeconfig, settings, BOTH):
        for index in (1, 2, 3):
            name = f"rr-{index}"
            await create_rr(kube, rr_manifest(name, namespace, target=target, fp=fp, bundle=played(PULL_FAILS)))
            failed = await wait_phase(kube, name, namespace, "Failed", timeout=30)
            assert failed["failurePhase"] == "workflow_execution"
        until = parse_time(failed["completedAt"]) + timedelta(seconds=5)

        await create_rr(kube, rr_manifest("rr-4", namespace, target=target, fp=fp, bundle=played(SUCCEEDS)))
        fourth = await wait_phase(kube, "rr-4", namespace, "Blocked")
        assert fourth["blockReason"] == "ConsecutiveFailures"
        assert fourth["blockedUntil"] == rfc3339(until)
        assert "3 consecutive failures" in fourth["blockMessage"]
        # Another request for the same signal meanwhile: blocked as well, nobody notified twice.
        await create_rr(kube, rr_manifest("rr-5", namespace, target=target, fp=fp, bundle=played(SUCCEEDS)))
        fifth = await wait_phase(kube, "rr-5", namespace, "Blocked")
        assert fifth["blockReason"] == "ConsecutiveFailures"

        ended = [await wait_phase(kube, name, namespace, "Failed", timeout=30) for name in ("rr-4", "rr-5")]
        notes = await notifications(kube, namespace)
        assert {w["metadata"]["name"] for w in await wfes(kube, namespace)} == {"we-rr-1", "we-rr-2", "we-rr-3"}

        # After the cooldown a new request for the signal runs again.
        await create_rr(kube, rr_manifest("rr-6", namespace, target=target, fp=fp, bundle=played(SUCCEEDS)))
        await wait_phase(kube, "rr-6", namespace, "Completed", timeout=30)

    for status in ended:
        assert status["failurePhase"] == "blocked"
        assert status["failureReason"] == "Cooldown expired after blocking due to ConsecutiveFailures"
    exhausted = [n for n in notes if n["spec"]["metadata"]["reason"] == "ExhaustedRetries"]
    assert [n["metadata"]["name"] for n in exhausted] == ["nr-manual-review-rr-4"]
    assert len(notes) == 1
    assert review_notifications(namespace, "RemediationOrchestrator", "ExhaustedRetries") == 1


async def test_execution_failure_needs_a_person_before_the_target_runs_again(
    kube: AsyncClient, kubeconfig: Path, namespace: str
) -> None:
    exec_ns = await create_execution_namespace(kube)
    audit = MemoryAuditSink()
    target = {"kind": "Deployment", "name": "api", "namespace": namespace}
    settings = settings_for(exec_ns, execution={"cooldown": "1s"}, routing={"recentlyRemediatedCooldown": "0s"})
    async with running(kubeconfig, settings, BOTH, audit=audit):
        bundle = played("fail:task1of1-exit3-0s")
        await create_rr(kube, rr_manifest("rr-1", namespace, target=target, bundle=bundle))
        first = await wait_phase(kube, "rr-1", namespace, "Failed")
        assert first["requiresManualReview"] is True
        assert "exit" in first["message"].lower() or "task" in first["message"].lower()

        await create_rr(kube, rr_manifest("rr-2", namespace, target=target, bundle=played(SUCCEEDS)))
        second = await wait_phase(kube, "rr-2", namespace, "Failed", timeout=30)
        assert second["skipReason"] == "PreviousExecutionFailed"
        assert second["blockingWorkflowExecution"] == "we-rr-1"
        assert second["requiresManualReview"] is True
        assert await get_or_none(kube, WorkflowExecutionResource, "we-rr-2", namespace) is None

        # What `kubernaut clear-block we-rr-1 --reason ...` does; the executor records the clearance.
        await annotate_wfe(kube, "we-rr-1", namespace, {"kubernaut.ai/clear-execution-block": "checked-by-ops"})

        async def cleared() -> bool:
            body = (await kube.get(WorkflowExecutionResource, "we-rr-1", namespace=namespace)).to_dict()
            return "blockClearance" in body["status"]

        await eventually(cleared, what="block clearance recorded")
        await create_rr(kube, rr_manifest("rr-3", namespace, target=target, bundle=played(SUCCEEDS)))
        third = await wait_phase(kube, "rr-3", namespace, "Completed", timeout=30)
        notes = {n["metadata"]["name"]: n for n in await notifications(kube, namespace)}

    assert third["outcome"] == "Remediated"
    assert notes["nr-manual-review-rr-1"]["spec"]["metadata"]["reason"] == "ExecutionFailure"
    assert notes["nr-manual-review-rr-1"]["spec"]["metadata"]["lastExitCode"] == "3"
    assert notes["nr-manual-review-rr-2"]["spec"]["metadata"]["reason"] == "PreviousExecutionFailed"
    assert sorted(notes) == ["nr-manual-review-rr-1", "nr-manual-review-rr-2"]
    assert len(audit.of_type("workflowexecution.block.cleared", "we-rr-1")) == 1
    assert len(audit.of_type("orchestrator.lifecycle.completed", "rr-2")) == 1
