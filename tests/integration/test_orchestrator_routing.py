"""Routing against the real API server: each check blocks, reports and clears as it should.

The orchestrator runs alone (no executor): the test puts WorkflowExecutions, PipelineRuns and
older requests into the states a check looks at, then reads the request, the audit trail and the
metrics.
"""

from datetime import timedelta
from pathlib import Path
from typing import Any

from lightkube import AsyncClient

from kubernaut.audit.memory import MemoryAuditSink
from kubernaut.domain.target import build_lock_name
from kubernaut.kube.resources import PipelineRunResource, RemediationRequestResource, WorkflowExecutionResource
from tests.integration.harness import (
    OffsetClock,
    create_execution_namespace,
    eventually,
    get_or_none,
    hold_lock,
    running,
    settings_for,
    settled,
)
from tests.integration.orchestrator_support import (
    RO,
    blocked_total,
    completed_wfe_status,
    create_rr,
    create_wfe,
    duplicates_skipped,
    failed_wfe_status,
    metric,
    moves_of,
    notifications,
    parse_time,
    poke,
    review_notifications,
    rfc3339,
    set_rr_status,
    set_wfe_status,
    transitions,
    wait_phase,
    wfe_body,
    wfes,
)
from tests.integration.rr import fingerprint, rr_manifest


def the_one(audit: MemoryAuditSink, event_type: str, rr: str) -> dict[str, Any]:
    """The single audit event of a type for a request (fails if there are none or several)."""
    found = audit.of_type(event_type, rr)
    assert len(found) == 1, [e.event_data for e in found]
    event = found[0]
    return {**event.event_data, "event_outcome": event.event_outcome, "correlation": event.correlation_id}


def assert_block_audited(
    audit: MemoryAuditSink, rr: str, *, reason: str, from_phase: str, target: str
) -> dict[str, Any]:
    data = the_one(audit, "orchestrator.routing.blocked", rr)
    assert data["event_outcome"] == "pending"
    assert data["block_reason"] == reason
    assert data["from_phase"] == from_phase
    assert data["to_phase"] == "Blocked"
    assert data["target_resource"] == target
    return data


def history_status(phase: str, completed: str, **extra: Any) -> dict[str, Any]:
    status: dict[str, Any] = {"overallPhase": phase, "startTime": completed, "completedAt": completed, **extra}
    if phase == "Failed":
        status.setdefault("failurePhase", "workflow_execution")
        status.setdefault("failureReason", "WorkflowExecution failed")
    if phase == "Completed":
        status["outcome"] = "Remediated"
    return status


async def make_history(
    kube: AsyncClient, namespace: str, fp: str, target: dict[str, str], states: list[dict[str, Any]]
) -> list[str]:
    """Finished requests for one fingerprint, oldest first (names sort in creation order)."""
    names = []
    for index, status in enumerate(states):
        name = f"h{index:02d}"
        await create_rr(kube, rr_manifest(name, namespace, target=target, fp=fp))
        await set_rr_status(kube, name, namespace, status)
        names.append(name)
    return names


# -- 26: a new request -----------------------------------------------------------------------------


async def test_new_request_starts_pending_with_start_time_and_one_started_event(
    kube: AsyncClient, kubeconfig: Path, namespace: str
) -> None:
    exec_ns = await create_execution_namespace(kube)
    audit, clock = MemoryAuditSink(), OffsetClock()
    clock.advance(7 * 24 * 3600)  # a week ahead: startTime must come from the orchestrator's clock
    target = {"kind": "Deployment", "name": "api", "namespace": namespace}
    async with running(kubeconfig, settings_for(exec_ns), ("orchestrator",), audit=audit, clock=clock):
        created = await create_rr(kube, rr_manifest("rr-1", namespace, target=target))
        status = await wait_phase(kube, "rr-1", namespace, "Executing")

    start = parse_time(status["startTime"])
    assert abs(start - clock()) < timedelta(minutes=1)
    assert start - parse_time(created["metadata"]["creationTimestamp"]) > timedelta(days=6)
    # Creation to execution, on the orchestrator's clock: the week it ran ahead.
    assert metric(f"{RO}time_to_execution_seconds_count", {"namespace": namespace}) == 1
    assert metric(f"{RO}time_to_execution_seconds_sum", {"namespace": namespace}) > 6 * 24 * 3600
    started = the_one(audit, "orchestrator.lifecycle.started", "rr-1")
    assert started["event_outcome"] == "pending"
    assert started["correlation"] == created["metadata"]["uid"]
    assert started["rr_name"] == "rr-1"
    assert moves_of(audit, "rr-1") == [("Pending", "Analyzing"), ("Analyzing", "Executing")]
    assert transitions(namespace, "Pending", "Analyzing") == 1
    assert transitions(namespace, "Analyzing", "Executing") == 1
    assert status["transitionCount"] == 3


# -- 27, 48: duplicates ----------------------------------------------------------------------------


async def test_duplicate_is_blocked_then_takes_the_original_outcome(
    kube: AsyncClient, kubeconfig: Path, namespace: str
) -> None:
    exec_ns = await create_execution_namespace(kube)
    audit = MemoryAuditSink()
    fp = fingerprint()
    target = {"kind": "Deployment", "name": "api", "namespace": namespace}
    canonical = f"{namespace}/Deployment/api"
    async with running(kubeconfig, settings_for(exec_ns), ("orchestrator",), audit=audit) as manager:
        await create_rr(kube, rr_manifest("rr-1", namespace, target=target, fp=fp))
        await wait_phase(kube, "rr-1", namespace, "Executing")
        await create_rr(kube, rr_manifest("rr-2", namespace, target=target, fp=fp))
        status = await wait_phase(kube, "rr-2", namespace, "Blocked")
        assert status["blockReason"] == "DuplicateInProgress"
        assert status["duplicateOf"] == "rr-1"
        assert "Duplicate" in status["blockMessage"]
        assert "blockedUntil" not in status
        assert "blockingWorkflowExecution" not in status
        assert sorted(w["metadata"]["name"] for w in await wfes(kube, namespace)) == ["we-rr-1"]
        data = assert_block_audited(audit, "rr-2", reason="DuplicateInProgress", from_phase="Pending", target=canonical)
        assert data["duplicate_of"] == "rr-1"
        assert data["requeue_after_seconds"] == 30
        await settled(manager)
        assert blocked_total(namespace, "DuplicateInProgress") == 1
        assert duplicates_skipped(namespace) == 1
        assert transitions(namespace, "Pending", "Blocked") == 1

        async def gauge_is(value: float) -> bool:
            return metric(f"{RO}current_blocked", {"namespace": namespace}) == value

        await eventually(lambda: gauge_is(1), what="current_blocked 1")

        # The original completes: the duplicate takes its outcome without running anything.
        await set_wfe_status(kube, "we-rr-1", namespace, completed_wfe_status(parse_time(status["startTime"])))
        await wait_phase(kube, "rr-1", namespace, "Completed")
        done = await wait_phase(kube, "rr-2", namespace, "Completed")
        assert done["outcome"] == "Remediated"
        assert done["completedAt"]
        for cleared in ("duplicateOf", "blockReason", "blockMessage", "blockedUntil"):
            assert cleared not in done
        await eventually(lambda: gauge_is(0), what="current_blocked 0")
        assert sorted(w["metadata"]["name"] for w in await wfes(kube, namespace)) == ["we-rr-1"]
        completed = the_one(audit, "orchestrator.lifecycle.completed", "rr-2")
        assert completed["event_outcome"] == "success"
        assert completed["outcome"] == "Remediated"
        assert completed["rr_name"] == "rr-2"
        await settled(manager)
        assert transitions(namespace, "Blocked", "Completed") == 1


async def test_duplicate_of_a_failed_original_fails_as_deduplicated(
    kube: AsyncClient, kubeconfig: Path, namespace: str
) -> None:
    exec_ns = await create_execution_namespace(kube)
    fp = fingerprint()
    target = {"kind": "Deployment", "name": "api", "namespace": namespace}
    async with running(kubeconfig, settings_for(exec_ns), ("orchestrator",)):
        await create_rr(kube, rr_manifest("rr-1", namespace, target=target, fp=fp))
        status = await wait_phase(kube, "rr-1", namespace, "Executing")
        await create_rr(kube, rr_manifest("rr-2", namespace, target=target, fp=fp))
        await wait_phase(kube, "rr-2", namespace, "Blocked")
        await set_wfe_status(
            kube, "we-rr-1", namespace, failed_wfe_status(parse_time(status["startTime"]), execution=False)
        )
        failed = await wait_phase(kube, "rr-2", namespace, "Failed")
    assert failed["failurePhase"] == "deduplicated"
    assert "rr-1" in failed["failureReason"]
    assert "Failed" in failed["failureReason"]
    assert "duplicateOf" not in failed
    assert "consecutiveFailureCount" not in failed


async def test_duplicate_of_a_deleted_original_fails_at_once(
    kube: AsyncClient, kubeconfig: Path, namespace: str
) -> None:
    exec_ns = await create_execution_namespace(kube)
    fp = fingerprint()
    target = {"kind": "Deployment", "name": "api", "namespace": namespace}
    async with running(kubeconfig, settings_for(exec_ns), ("orchestrator",)):
        await create_rr(kube, rr_manifest("rr-1", namespace, target=target, fp=fp))
        await wait_phase(kube, "rr-1", namespace, "Executing")
        await create_rr(kube, rr_manifest("rr-2", namespace, target=target, fp=fp))
        await wait_phase(kube, "rr-2", namespace, "Blocked")
        await kube.delete(RemediationRequestResource, "rr-1", namespace=namespace)
        # Woken by the deletion itself, well before the 30 s safety net.
        failed = await wait_phase(kube, "rr-2", namespace, "Failed", timeout=10)
    assert failed["failurePhase"] == "deduplicated"
    assert "rr-1" in failed["failureReason"]
    assert "deleted" in failed["failureReason"]


# -- 28-31: consecutive failures -------------------------------------------------------------------


async def test_completed_history_lets_a_new_request_run(kube: AsyncClient, kubeconfig: Path, namespace: str) -> None:
    exec_ns = await create_execution_namespace(kube)
    fp = fingerprint()
    target = {"kind": "Deployment", "name": "api", "namespace": namespace}
    await make_history(kube, namespace, fp, target, [history_status("Completed", "2020-01-01T00:00:00Z")])
    async with running(kubeconfig, settings_for(exec_ns), ("orchestrator",)):
        await create_rr(kube, rr_manifest("rr-new", namespace, target=target, fp=fp))
        status = await wait_phase(kube, "rr-new", namespace, "Executing")
    assert status["workflowExecutionRef"]["name"] == "we-rr-new"


async def test_three_failures_block_with_one_exhausted_retries_notification(
    kube: AsyncClient, kubeconfig: Path, namespace: str
) -> None:
    exec_ns = await create_execution_namespace(kube)
    audit, clock = MemoryAuditSink(), OffsetClock()
    fp = fingerprint()
    target = {"kind": "Deployment", "name": "api", "namespace": namespace}
    newest = clock() - timedelta(minutes=10)
    await make_history(
        kube,
        namespace,
        fp,
        target,
        [
            history_status("Failed", rfc3339(newest - timedelta(minutes=20))),
            history_status("Failed", rfc3339(newest - timedelta(minutes=10))),
            history_status("Failed", rfc3339(newest)),
            # Non-terminal and held by a person: check 1 outranks check 2 (item 31).
            {"overallPhase": "Blocked", "blockReason": "ManualHold", "startTime": rfc3339(newest)},
        ],
    )
    async with running(kubeconfig, settings_for(exec_ns), ("orchestrator",), audit=audit, clock=clock):
        await create_rr(kube, rr_manifest("rr-4", namespace, target=target, fp=fp))
        status = await wait_phase(kube, "rr-4", namespace, "Blocked")
        until = newest.replace(microsecond=0) + timedelta(hours=1)
        assert status["blockReason"] == "ConsecutiveFailures"
        assert status["blockedUntil"] == rfc3339(until)
        assert "3 consecutive failures" in status["blockMessage"]
        assert f"Cooldown expires: {rfc3339(until)}" in status["blockMessage"]
        assert "duplicateOf" not in status
        data = assert_block_audited(
            audit, "rr-4", reason="ConsecutiveFailures", from_phase="Pending", target=f"{namespace}/Deployment/api"
        )
        assert data["blocked_until"] == rfc3339(until)
        assert 3000 - 60 <= data["requeue_after_seconds"] <= 3000

        # A fifth request in the same streak is blocked too, without a second notification.
        await create_rr(kube, rr_manifest("rr-5", namespace, target=target, fp=fp))
        fifth = await wait_phase(kube, "rr-5", namespace, "Blocked")
        assert fifth["blockReason"] == "ConsecutiveFailures"
        notes = await notifications(kube, namespace)

    assert [n["metadata"]["name"] for n in notes] == ["nr-manual-review-rr-4"]
    note = notes[0]
    assert note["spec"]["type"] == "manual-review"
    assert note["spec"]["priority"] == "critical"
    assert note["spec"]["channels"] == ["slack", "email"]
    assert note["spec"]["metadata"]["reason"] == "ExhaustedRetries"
    assert note["spec"]["metadata"]["retryCount"] == "3"
    assert note["spec"]["metadata"]["maxRetries"] == "3"
    assert note["metadata"]["labels"]["kubernaut.ai/review-source"] == "RemediationOrchestrator"
    assert [r["name"] for r in status["notificationRequestRefs"]] == ["nr-manual-review-rr-4"]
    assert status["notificationRequestRefs"][0]["uid"] == note["metadata"]["uid"]
    assert "notificationRequestRefs" not in fifth
    assert review_notifications(namespace, "RemediationOrchestrator", "ExhaustedRetries") == 1
    assert blocked_total(namespace, "ConsecutiveFailures") == 2
    assert blocked_total(namespace, "DuplicateInProgress") == 0


async def test_a_success_breaks_the_streak(kube: AsyncClient, kubeconfig: Path, namespace: str) -> None:
    exec_ns = await create_execution_namespace(kube)
    fp = fingerprint()
    target = {"kind": "Deployment", "name": "api", "namespace": namespace}
    at = "2020-01-01T00:00:00Z"
    # Newest first this reads Failed, Failed, Completed, Failed, Failed (item 30).
    await make_history(
        kube,
        namespace,
        fp,
        target,
        [history_status(p, at) for p in ("Failed", "Failed", "Completed", "Failed", "Failed")],
    )
    async with running(kubeconfig, settings_for(exec_ns), ("orchestrator",)):
        await create_rr(kube, rr_manifest("rr-new", namespace, target=target, fp=fp))
        await wait_phase(kube, "rr-new", namespace, "Executing")


async def test_only_workflow_failures_count(kube: AsyncClient, kubeconfig: Path, namespace: str) -> None:
    """Failures in analysis, by dedup, by an expired block or a timeout neither count nor break the streak."""
    exec_ns = await create_execution_namespace(kube)
    fp = fingerprint()
    target = {"kind": "Deployment", "name": "api", "namespace": namespace}
    at = "2099-01-01T00:00:00Z"  # far ahead: a counted streak would certainly still block
    await make_history(
        kube,
        namespace,
        fp,
        target,
        [
            history_status("Failed", at),
            history_status("Failed", at, failurePhase="analysis", failureReason="no workflow"),
            history_status("Failed", at),
            history_status("TimedOut", at),
            history_status("Failed", at, failurePhase="deduplicated", failureReason="original failed"),
            history_status("Failed", at, failurePhase="blocked", failureReason="Cooldown expired"),
        ],
    )
    async with running(kubeconfig, settings_for(exec_ns), ("orchestrator",)):
        await create_rr(kube, rr_manifest("rr-new", namespace, target=target, fp=fp))
        await wait_phase(kube, "rr-new", namespace, "Executing")


async def test_a_new_streak_gets_its_own_exhausted_retries_notification(
    kube: AsyncClient, kubeconfig: Path, namespace: str
) -> None:
    exec_ns = await create_execution_namespace(kube)
    fp = fingerprint()
    target = {"kind": "Deployment", "name": "api", "namespace": namespace}
    old, recent = "2020-01-01T00:00:00Z", rfc3339(OffsetClock()() - timedelta(minutes=1))
    await make_history(
        kube,
        namespace,
        fp,
        target,
        [
            history_status("Failed", old),
            history_status("Failed", old),
            history_status("Failed", old),
            # The first streak ended blocked (and notified), then a run succeeded.
            history_status(
                "Failed",
                old,
                failurePhase="blocked",
                failureReason="Cooldown expired after blocking due to ConsecutiveFailures",
                blockReason="ConsecutiveFailures",
            ),
            history_status("Completed", old),
            history_status("Failed", recent),
            history_status("Failed", recent),
            history_status("Failed", recent),
        ],
    )
    async with running(kubeconfig, settings_for(exec_ns), ("orchestrator",)):
        await create_rr(kube, rr_manifest("rr-new", namespace, target=target, fp=fp))
        status = await wait_phase(kube, "rr-new", namespace, "Blocked")
        assert status["blockReason"] == "ConsecutiveFailures"
        notes = await notifications(kube, namespace)
    assert [n["metadata"]["name"] for n in notes] == ["nr-manual-review-rr-new"]
    assert notes[0]["spec"]["metadata"]["reason"] == "ExhaustedRetries"


# -- 32, 33 and the lock itself: ResourceBusy ------------------------------------------------------


async def test_running_execution_blocks_until_it_ends(kube: AsyncClient, kubeconfig: Path, namespace: str) -> None:
    exec_ns = await create_execution_namespace(kube)
    audit, clock = MemoryAuditSink(), OffsetClock()
    target = {"kind": "Deployment", "name": "api", "namespace": namespace}
    canonical = f"{namespace}/Deployment/api"
    await create_wfe(kube, wfe_body("we-x", namespace, canonical), {"phase": "Running", "startTime": rfc3339(clock())})
    settings = settings_for(exec_ns, routing={"recentlyRemediatedCooldown": "0s"})
    async with running(kubeconfig, settings, ("orchestrator",), audit=audit, clock=clock) as manager:
        await create_rr(kube, rr_manifest("rr-y", namespace, target=target))
        status = await wait_phase(kube, "rr-y", namespace, "Blocked")
        assert status["blockReason"] == "ResourceBusy"
        assert status["blockingWorkflowExecution"] == "we-x"
        assert "we-x" in status["blockMessage"]
        assert "blockedUntil" not in status
        data = assert_block_audited(audit, "rr-y", reason="ResourceBusy", from_phase="Pending", target=canonical)
        assert data["blocking_wfe"] == "we-x"
        await settled(manager)
        assert blocked_total(namespace, "ResourceBusy") == 1
        assert await get_or_none(kube, WorkflowExecutionResource, "we-rr-y", namespace) is None

        # The execution ends: the block clears by itself, well before the 30 s safety net.
        await set_wfe_status(kube, "we-x", namespace, completed_wfe_status(clock()))
        status = await wait_phase(kube, "rr-y", namespace, "Executing", timeout=10)
    for cleared in ("blockReason", "blockMessage", "blockingWorkflowExecution", "blockedFromPhase"):
        assert cleared not in status
    assert moves_of(audit, "rr-y") == [("Blocked", "Pending"), ("Pending", "Analyzing"), ("Analyzing", "Executing")]
    assert transitions(namespace, "Blocked", "Pending") == 1


async def test_execution_without_phase_blocks_until_deleted(
    kube: AsyncClient, kubeconfig: Path, namespace: str
) -> None:
    exec_ns = await create_execution_namespace(kube)
    target = {"kind": "Deployment", "name": "api", "namespace": namespace}
    await create_wfe(kube, wfe_body("we-x", namespace, f"{namespace}/Deployment/api"))
    async with running(kubeconfig, settings_for(exec_ns), ("orchestrator",)):
        await create_rr(kube, rr_manifest("rr-y", namespace, target=target))
        status = await wait_phase(kube, "rr-y", namespace, "Blocked")
        assert status["blockReason"] == "ResourceBusy"
        assert status["blockingWorkflowExecution"] == "we-x"
        await kube.delete(WorkflowExecutionResource, "we-x", namespace=namespace)
        await wait_phase(kube, "rr-y", namespace, "Executing", timeout=10)


async def test_held_lock_blocks_until_the_pipelinerun_is_deleted(
    kube: AsyncClient, kubeconfig: Path, namespace: str
) -> None:
    """A finished execution cooling down still holds its PipelineRun: the target is busy."""
    exec_ns = await create_execution_namespace(kube)
    clock = OffsetClock()
    target = {"kind": "Deployment", "name": "api", "namespace": namespace}
    canonical = f"{namespace}/Deployment/api"
    lock = build_lock_name(canonical)
    await create_wfe(
        kube,
        wfe_body("we-old", namespace, canonical, workflow_id="scale-up"),
        failed_wfe_status(clock() - timedelta(hours=1), execution=False, reason="ExecutionRaceCondition"),
    )
    await hold_lock(kube, lock, exec_ns, holder="we-old", source_namespace=namespace, target=canonical)
    async with running(kubeconfig, settings_for(exec_ns), ("orchestrator",), clock=clock):
        await create_rr(kube, rr_manifest("rr-y", namespace, target=target))
        status = await wait_phase(kube, "rr-y", namespace, "Blocked")
        assert status["blockReason"] == "ResourceBusy"
        assert status["blockingWorkflowExecution"] == "we-old"
        assert lock in status["blockMessage"]
        await kube.delete(PipelineRunResource, lock, namespace=exec_ns)
        await wait_phase(kube, "rr-y", namespace, "Executing", timeout=10)


# -- 34-36: RecentlyRemediated ---------------------------------------------------------------------


async def test_recent_success_of_the_same_workflow_blocks_until_the_cooldown_ends(
    kube: AsyncClient, kubeconfig: Path, namespace: str
) -> None:
    exec_ns = await create_execution_namespace(kube)
    audit, clock = MemoryAuditSink(), OffsetClock()
    target = {"kind": "Deployment", "name": "api", "namespace": namespace}
    canonical = f"{namespace}/Deployment/api"
    finished = (clock() - timedelta(minutes=2)).replace(microsecond=0)
    await create_wfe(
        kube, wfe_body("we-done", namespace, canonical, workflow_id="wf-1"), completed_wfe_status(finished)
    )
    async with running(kubeconfig, settings_for(exec_ns), ("orchestrator",), audit=audit, clock=clock):
        await create_rr(kube, rr_manifest("rr-same", namespace, target=target, workflow_id="wf-1"))
        status = await wait_phase(kube, "rr-same", namespace, "Blocked")
        until = finished + timedelta(minutes=5)
        assert status["blockReason"] == "RecentlyRemediated"
        assert status["blockedUntil"] == rfc3339(until)
        assert "blockingWorkflowExecution" not in status
        assert "we-done" in status["blockMessage"]
        assert f"Cooldown expires: {rfc3339(until)}" in status["blockMessage"]
        data = assert_block_audited(
            audit, "rr-same", reason="RecentlyRemediated", from_phase="Pending", target=canonical
        )
        assert data["workflow_id"] == "wf-1"
        assert 170 <= data["requeue_after_seconds"] <= 180
        assert data["blocked_until"] == rfc3339(until)

        # Another workflow on the same target is not held back by that success (item 35).
        await create_rr(kube, rr_manifest("rr-other", namespace, target=target, workflow_id="wf-2"))
        other = await wait_phase(kube, "rr-other", namespace, "Executing")
        assert other["workflowExecutionRef"]["name"] == "we-rr-other"
        assert await get_or_none(kube, WorkflowExecutionResource, "we-rr-same", namespace) is None

        # The cooldown passes on the orchestrator's clock: the block clears and the request runs.
        await set_wfe_status(kube, "we-rr-other", namespace, completed_wfe_status(clock() - timedelta(hours=1)))
        clock.advance(4 * 60)
        await poke(kube, "rr-same", namespace)
        status = await wait_phase(kube, "rr-same", namespace, "Executing")
    assert status["workflowExecutionRef"]["name"] == "we-rr-same"
    assert transitions(namespace, "Blocked", "Pending") == 1


async def test_a_failed_run_is_no_recent_remediation(kube: AsyncClient, kubeconfig: Path, namespace: str) -> None:
    exec_ns = await create_execution_namespace(kube)
    target = {"kind": "Deployment", "name": "api", "namespace": namespace}
    canonical = f"{namespace}/Deployment/api"
    await create_wfe(
        kube,
        wfe_body("we-lost", namespace, canonical),
        failed_wfe_status(OffsetClock()() - timedelta(minutes=1), execution=False, reason="ExecutionRaceCondition"),
    )
    async with running(kubeconfig, settings_for(exec_ns), ("orchestrator",)):
        await create_rr(kube, rr_manifest("rr-1", namespace, target=target))
        status = await wait_phase(kube, "rr-1", namespace, "Executing")
    assert "blockReason" not in status


# -- 37: ExponentialBackoff ------------------------------------------------------------------------


async def test_failures_before_execution_back_off_per_target(
    kube: AsyncClient, kubeconfig: Path, namespace: str
) -> None:
    exec_ns = await create_execution_namespace(kube)
    audit, clock = MemoryAuditSink(), OffsetClock()
    target = {"kind": "Deployment", "name": "api", "namespace": namespace}
    canonical = f"{namespace}/Deployment/api"
    failed_at = clock().replace(microsecond=0)
    await create_wfe(
        kube,
        wfe_body("we-pull", namespace, canonical),
        failed_wfe_status(failed_at, execution=False, reason="ImagePullBackOff"),
    )
    settings = settings_for(exec_ns, routing={"backoffBase": "90s", "backoffJitterPercent": 0})
    async with running(kubeconfig, settings, ("orchestrator",), audit=audit, clock=clock):
        await create_rr(kube, rr_manifest("rr-1", namespace, target=target))
        status = await wait_phase(kube, "rr-1", namespace, "Blocked")
        gate = failed_at + timedelta(seconds=90)
        assert status["blockReason"] == "ExponentialBackoff"
        assert status["blockedUntil"] == rfc3339(gate)
        assert status["nextAllowedExecution"] == rfc3339(gate)
        assert status["consecutiveFailureCount"] == 1
        assert "Exponential backoff active" in status["blockMessage"]
        data = assert_block_audited(audit, "rr-1", reason="ExponentialBackoff", from_phase="Pending", target=canonical)
        assert data["consecutive_failures"] == 1
        assert 80 <= data["backoff_seconds"] <= 90
        assert 80 <= data["requeue_after_seconds"] <= 90

        clock.advance(91)
        await poke(kube, "rr-1", namespace)
        await wait_phase(kube, "rr-1", namespace, "Executing")
