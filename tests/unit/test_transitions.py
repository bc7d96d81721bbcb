"""The orchestrator's plans: for each phase, the transition one pass makes from a given history."""

from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

from kubernaut.api.v1alpha1 import RemediationRequest, WorkflowExecution
from kubernaut.api.v1alpha1.remediationrequest import NotificationStatus, RemediationPhase
from kubernaut.api.v1alpha1.remediationworkflow import RemediationWorkflow
from kubernaut.domain import remediation as rem
from kubernaut.domain import transitions as tr
from kubernaut.domain.effectiveness import MetricCheck
from kubernaut.domain.gates import GatePolicy, Gates, Scope
from kubernaut.domain.routing import LockHolder, RoutingPolicy

NOW = datetime(2026, 5, 1, 12, 0, tzinfo=UTC)
NS = "team"
FP = "a" * 64
TARGET = "prod/Deployment/api"
WORKFLOW_REF = {"workflowId": "restart", "version": "1.0.0", "containerImage": "reg/restart:1"}
POLICY = tr.PlanPolicy(RoutingPolicy(backoff_jitter_percent=0), rem.TimeoutPolicy(), lambda priority: [priority])


def make_rr(
    name: str = "rr-1",
    *,
    status: dict[str, Any] | None = None,
    created: datetime = NOW - timedelta(minutes=1),
    workflow_ref: dict[str, Any] | None = None,
) -> RemediationRequest:
    spec: dict[str, Any] = {
        "signalFingerprint": FP,
        "signalName": "HighMemory",
        "severity": "critical",
        "targetResource": {"kind": "Deployment", "name": "api", "namespace": "prod"},
    }
    if workflow_ref is not None:
        spec["workflowRef"] = workflow_ref
    return RemediationRequest.model_validate(
        {
            "metadata": {"name": name, "namespace": NS, "uid": f"uid-{name}", "creationTimestamp": created},
            "spec": spec,
            "status": status or {},
        }
    )


def make_wfe(name: str, phase: str | None, *, execution_failure: bool = False, owner: str = "") -> WorkflowExecution:
    status: dict[str, Any] = {"phase": phase, "completionTime": NOW - timedelta(seconds=30) if phase else None}
    if phase == "Failed":
        status["failureDetails"] = {
            "failedTaskIndex": 0,
            "failedTaskName": "",
            "reason": "TaskFailed",
            "message": "exit 3",
            "failedAt": NOW,
            "executionTimeBeforeFailure": "",
            "naturalLanguageSummary": "the task failed",
            "wasExecutionFailure": execution_failure,
            "exitCode": 3,
        }
    owners = [{"apiVersion": "kubernaut.ai/v1alpha1", "kind": "RemediationRequest", "name": "x", "uid": owner}]
    return WorkflowExecution.model_validate(
        {
            "metadata": {
                "name": name,
                "namespace": NS,
                "creationTimestamp": NOW - timedelta(minutes=5),
                "ownerReferences": [{**owners[0], "controller": True}] if owner else [],
            },
            "spec": {
                "remediationRequestRef": {"name": "x", "namespace": NS},
                "workflowRef": {"workflowId": "restart", "version": "1.0.0", "containerImage": "reg/restart:1"},
                "targetResource": TARGET,
            },
            "status": status,
        }
    )


@dataclass
class History:
    """A RoutingHistory from lists, as the caches would give it."""

    requests: list[RemediationRequest] = field(default_factory=list)
    executions: list[WorkflowExecution] = field(default_factory=list)
    holder: LockHolder | None = None
    notifications: dict[str, tr.TrackedNotification] = field(default_factory=dict)
    synced: bool = True
    workflows: list[RemediationWorkflow] = field(default_factory=list)
    metric: MetricCheck | None = None
    gate_inputs: Gates | None = None

    def same_fingerprint(self) -> Sequence[RemediationRequest]:
        return self.requests

    def executions_on(self, workflow_id: str = "", lock: LockHolder | None = None) -> Sequence[WorkflowExecution]:
        return self.executions

    def lock(self) -> LockHolder | None:
        return self.holder

    def request(self, name: str) -> RemediationRequest | None:
        return next((rr for rr in self.requests if rr.metadata.name == name), None)

    def execution(self, name: str) -> WorkflowExecution | None:
        return next((wfe for wfe in self.executions if wfe.metadata.name == name), None)

    def catalog(self) -> Sequence[RemediationWorkflow]:
        return self.workflows

    def metric_check(self) -> MetricCheck | None:
        return self.metric

    def gates(self) -> Gates | None:
        return self.gate_inputs

    def notification(self, namespace: str, name: str) -> tr.TrackedNotification | None:
        found = self.notifications.get(f"{namespace}/{name}")
        return found if found is not None or not self.synced else tr.TrackedNotification(found=False)


def event_types(transition: tr.Transition) -> list[str]:
    return [event.event_type for event in transition.events]


def counted(counts: tuple[tr.Count, ...]) -> list[tuple[tr.Metric, dict[str, str]]]:
    return [(c.metric, dict(c.labels)) for c in counts]


def moved(from_phase: str, to_phase: str) -> tuple[tr.Metric, dict[str, str]]:
    return (tr.Metric.PHASE_TRANSITIONS, {"from_phase": from_phase, "to_phase": to_phase, "namespace": NS})


# -- a new request ---------------------------------------------------------------------------------


def test_a_new_request_starts_pending_and_is_routed_at_once() -> None:
    transition = tr.plan(make_rr(), History(), NOW, POLICY)
    assert transition.status is not None
    assert transition.status.overall_phase == RemediationPhase.PENDING
    assert transition.status.start_time == NOW
    assert event_types(transition) == ["orchestrator.lifecycle.started"]
    assert transition.events[0].event_outcome == "pending"
    assert transition.requeue == timedelta(0)
    assert (transition.execution, transition.notification, transition.terminal) == (None, None, False)
    assert transition.counts_before_write == transition.counts_after_write == ()


# -- Pending ---------------------------------------------------------------------------------------


def test_a_free_pending_request_moves_to_analyzing() -> None:
    rr = make_rr(status={"overallPhase": "Pending", "startTime": NOW, "transitionCount": 1})
    transition = tr.plan(rr, History(requests=[rr]), NOW, POLICY)
    assert transition.status is not None
    assert transition.status.overall_phase == RemediationPhase.ANALYZING
    assert transition.status.transition_count == 2
    assert event_types(transition) == ["orchestrator.phase.transitioned"]
    assert transition.events[0].event_data["to_phase"] == "Analyzing"
    assert counted(transition.counts_after_write) == [moved("Pending", "Analyzing")]
    assert transition.requeue == timedelta(0)


def test_a_duplicate_pending_request_is_blocked_and_counted_after_the_write() -> None:
    original = make_rr("rr-0", status={"overallPhase": "Executing"}, created=NOW - timedelta(minutes=9))
    rr = make_rr(status={"overallPhase": "Pending", "startTime": NOW, "transitionCount": 1})
    transition = tr.plan_pending(rr, History(requests=[original, rr]), NOW, POLICY)
    assert transition.status is not None
    assert transition.status.overall_phase == RemediationPhase.BLOCKED
    assert transition.status.duplicate_of == "rr-0"
    assert transition.status.blocked_from_phase == RemediationPhase.PENDING
    assert event_types(transition) == ["orchestrator.routing.blocked"]
    assert transition.notification is None
    assert counted(transition.counts_after_write) == [
        (tr.Metric.BLOCKED, {"namespace": NS, "reason": "DuplicateInProgress"}),
        (tr.Metric.DUPLICATES_SKIPPED, {"skip_reason": "DuplicateInProgress", "namespace": NS}),
        moved("Pending", "Blocked"),
    ]
    assert transition.requeue == timedelta(seconds=30)


def test_a_new_request_goes_on_through_pending_and_writes_once_where_it_waits() -> None:
    rr = make_rr()
    started = tr.plan(rr, History(requests=[rr]), NOW, POLICY)
    assert tr.goes_on_at_once(started)
    step = tr.advanced(rr, started)
    assert rr.status.overall_phase is None  # the request as read is left as it was
    routed = tr.plan(step, History(requests=[rr]), NOW, POLICY)
    assert tr.goes_on_at_once(routed)
    carried = tr.carried_into(tr.carried_into(tr.IDLE, started), routed)

    assert carried.status is not None
    assert carried.status.overall_phase == RemediationPhase.ANALYZING
    assert carried.status.transition_count == 2
    assert carried.status.start_time == NOW
    assert event_types(carried) == ["orchestrator.lifecycle.started", "orchestrator.phase.transitioned"]
    assert [e.event_id for e in carried.events] == [e.event_id for e in (*started.events, *routed.events)]
    assert counted(carried.counts_after_write) == [moved("Pending", "Analyzing")]


def test_a_block_or_a_child_ends_what_goes_on_at_once() -> None:
    original = make_rr("rr-0", status={"overallPhase": "Executing"}, created=NOW - timedelta(minutes=9))
    pending = make_rr(status={"overallPhase": "Pending", "startTime": NOW, "transitionCount": 1})
    blocked = tr.plan(pending, History(requests=[original, pending]), NOW, POLICY)
    analyzing = make_rr(
        status={"overallPhase": "Analyzing", "startTime": NOW, "transitionCount": 2}, workflow_ref=WORKFLOW_REF
    )
    executing = tr.plan(analyzing, History(requests=[analyzing]), NOW, POLICY)
    assert executing.execution is not None
    assert not tr.goes_on_at_once(blocked)
    assert not tr.goes_on_at_once(executing)
    assert not tr.goes_on_at_once(tr.IDLE)


def test_a_plan_that_writes_nothing_after_one_that_went_on_writes_the_first() -> None:
    rr = make_rr()
    started = tr.plan(rr, History(requests=[rr]), NOW, POLICY)
    carried = tr.carried_into(started, tr.IDLE)
    assert carried.status == started.status
    assert event_types(carried) == ["orchestrator.lifecycle.started"]
    assert carried.requeue is None  # the next plan already said it waits


def test_the_first_consecutive_failures_block_of_a_streak_asks_for_a_review() -> None:
    failed = [
        make_rr(
            f"rr-f{i}",
            status={
                "overallPhase": "Failed",
                "failurePhase": "workflow_execution",
                "completedAt": NOW - timedelta(minutes=i),
            },
            created=NOW - timedelta(minutes=10 + i),
        )
        for i in range(3)
    ]
    rr = make_rr(status={"overallPhase": "Pending", "startTime": NOW, "transitionCount": 1})
    transition = tr.plan_pending(rr, History(requests=[*failed, rr]), NOW, POLICY)
    assert transition.status is not None
    assert transition.status.block_reason == "ConsecutiveFailures"
    assert transition.notification is not None
    spec = transition.notification.manifest["spec"]
    assert spec["metadata"]["reason"] == "ExhaustedRetries"
    assert spec["metadata"]["retryCount"] == "3"
    assert spec["channels"] == ["critical"]
    assert counted(transition.notification.counts) == [
        (
            tr.Metric.MANUAL_REVIEW,
            {"source": "RemediationOrchestrator", "reason": "ExhaustedRetries", "sub_reason": "none", "namespace": NS},
        )
    ]
    assert transition.requeue == timedelta(hours=1)


# -- Analyzing -------------------------------------------------------------------------------------


def analyzing(**kwargs: Any) -> RemediationRequest:
    status = {"overallPhase": "Analyzing", "startTime": NOW, "analyzingStartTime": NOW, "transitionCount": 2}
    return make_rr(status=status, **kwargs)


def test_a_routed_request_creates_its_execution_and_moves_to_executing() -> None:
    transition = tr.plan(analyzing(workflow_ref=WORKFLOW_REF), History(), NOW, POLICY)
    assert transition.execution is not None
    assert transition.execution.manifest["metadata"]["name"] == "we-rr-1"
    assert counted(transition.execution.counts) == [
        (tr.Metric.CHILD_CREATIONS, {"child_type": "WorkflowExecution", "namespace": NS}),
        (tr.Metric.TIME_TO_EXECUTION, {"namespace": NS}),
    ]
    assert transition.execution.counts[1].value == 60.0  # created a minute before this pass
    assert transition.status is not None
    assert transition.status.overall_phase == RemediationPhase.EXECUTING
    assert transition.status.workflow_execution_ref is not None
    assert transition.status.workflow_execution_ref.name == "we-rr-1"
    assert event_types(transition) == ["orchestrator.phase.transitioned"]
    assert counted(transition.counts_after_write) == [moved("Analyzing", "Executing")]
    assert transition.requeue is None


def test_a_request_without_a_workflow_fails_for_review() -> None:
    transition = tr.plan_analyzing(analyzing(), History(), NOW, POLICY)
    assert transition.status is not None
    assert transition.status.overall_phase == RemediationPhase.FAILED
    assert transition.status.failure_phase == "analysis"
    assert transition.status.requires_manual_review is True
    assert transition.execution is None
    assert transition.notification is not None
    assert transition.notification.manifest["spec"]["metadata"]["reason"] == "WorkflowNotFound"
    assert transition.notification.manifest["spec"]["priority"] == "high"
    assert event_types(transition) == ["orchestrator.lifecycle.completed"]
    assert transition.terminal is True
    assert counted(transition.counts_after_write) == [moved("Analyzing", "Failed")]


def test_a_previous_execution_failure_ends_the_request_for_review() -> None:
    failed = make_wfe("we-old", "Failed", execution_failure=True)
    transition = tr.plan_analyzing(analyzing(workflow_ref=WORKFLOW_REF), History(executions=[failed]), NOW, POLICY)
    assert transition.status is not None
    assert transition.status.overall_phase == RemediationPhase.FAILED
    assert transition.status.skip_reason == "PreviousExecutionFailed"
    assert event_types(transition) == ["orchestrator.routing.blocked", "orchestrator.lifecycle.completed"]
    assert transition.notification is not None
    assert transition.notification.manifest["spec"]["metadata"]["previousExecution"] == "we-old"
    assert transition.execution is None
    assert transition.terminal is True


def test_a_refused_creation_keeps_the_request_analyzing_and_says_why() -> None:
    rr = analyzing()
    transition = tr.plan_creation_refused(rr, "forbidden", NOW)
    assert transition.status is not None
    assert transition.status.overall_phase == RemediationPhase.ANALYZING
    assert transition.status.transition_count == rr.status.transition_count
    ready = next(c for c in transition.status.conditions or [] if c.type == rem.COND_WFE_READY)
    assert ready.message == "Failed to create WorkflowExecution: forbidden"
    assert transition.events == ()
    assert transition.requeue == tr.CREATION_RETRY


# -- Executing -------------------------------------------------------------------------------------


def executing() -> RemediationRequest:
    status = {"overallPhase": "Executing", "startTime": NOW, "executingStartTime": NOW, "transitionCount": 3}
    return make_rr(status=status)


def test_a_completed_execution_completes_a_request_made_by_hand_not_assessed() -> None:
    transition = tr.plan(executing(), History(executions=[make_wfe("we-rr-1", "Completed")]), NOW, POLICY)
    assert transition.status is not None
    assert transition.status.overall_phase == RemediationPhase.COMPLETED
    assert transition.status.effectiveness is not None
    assert transition.status.effectiveness.assessment == "NotAssessed"
    assert event_types(transition) == ["orchestrator.effectiveness.assessed", "orchestrator.lifecycle.completed"]
    assert all(event.event_outcome == "success" for event in transition.events)
    assert transition.terminal is True
    assert transition.notification is None
    assert counted(transition.counts_after_write) == [moved("Executing", "Completed")]


def test_a_running_execution_leaves_the_request_alone() -> None:
    transition = tr.plan_executing(executing(), History(executions=[make_wfe("we-rr-1", "Running")]), NOW, POLICY)
    assert transition == tr.IDLE


def test_a_missing_execution_fails_the_request() -> None:
    transition = tr.plan_executing(executing(), History(), NOW, POLICY)
    assert transition.status is not None
    assert transition.status.failure_reason == "WorkflowExecution not found"
    assert transition.terminal is True


def test_an_execution_failure_fails_the_request_for_review() -> None:
    wfe = make_wfe("we-rr-1", "Failed", execution_failure=True)
    transition = tr.plan_executing(executing(), History(executions=[wfe]), NOW, POLICY)
    assert transition.status is not None
    assert transition.status.overall_phase == RemediationPhase.FAILED
    assert transition.status.requires_manual_review is True
    assert transition.notification is not None
    metadata = transition.notification.manifest["spec"]["metadata"]
    assert (metadata["reason"], metadata["lastExitCode"]) == ("ExecutionFailure", "3")
    assert event_types(transition) == ["orchestrator.lifecycle.completed"]


# -- Blocked ---------------------------------------------------------------------------------------


def blocked(reason: str, **status: Any) -> RemediationRequest:
    base = {"overallPhase": "Blocked", "startTime": NOW, "transitionCount": 2, "blockReason": reason}
    return make_rr(status={**base, "blockedFromPhase": "Analyzing", **status})


def test_a_block_whose_cooldown_runs_stays_until_it_ends() -> None:
    rr = blocked("RecentlyRemediated", blockedUntil=NOW + timedelta(seconds=40))
    assert tr.plan(rr, History(), NOW, POLICY) == tr.Transition(requeue=timedelta(seconds=40))


def test_a_cleared_block_resumes_in_the_phase_it_was_blocked_in() -> None:
    transition = tr.plan_blocked(blocked("ResourceBusy"), History(), NOW, POLICY)
    assert transition.status is not None
    assert transition.status.overall_phase == RemediationPhase.ANALYZING
    assert transition.status.block_reason is None
    assert counted(transition.counts_after_write) == [moved("Blocked", "Analyzing")]
    assert transition.requeue == timedelta(0)


def test_an_expired_consecutive_failures_block_fails_and_counts_before_the_write() -> None:
    rr = blocked("ConsecutiveFailures", blockedUntil=NOW - timedelta(seconds=1))
    transition = tr.plan_blocked(rr, History(), NOW, POLICY)
    assert transition.status is not None
    assert transition.status.failure_phase == "blocked"
    assert counted(transition.counts_before_write) == [(tr.Metric.BLOCKED_COOLDOWN_EXPIRED, {})]
    assert counted(transition.counts_after_write) == [moved("Blocked", "Failed")]
    assert transition.terminal is True


def test_a_duplicate_takes_the_outcome_of_its_completed_original() -> None:
    original = make_rr("rr-0", status={"overallPhase": "Completed"})
    transition = tr.plan_blocked(
        blocked("DuplicateInProgress", duplicateOf="rr-0"), History(requests=[original]), NOW, POLICY
    )
    assert transition.status is not None
    assert transition.status.overall_phase == RemediationPhase.COMPLETED
    assert transition.status.outcome == "Remediated"
    assert event_types(transition) == ["orchestrator.lifecycle.completed"]
    ineffective = make_rr("rr-0", status={"overallPhase": "Completed", "outcome": "Ineffective"})
    transition = tr.plan_blocked(
        blocked("DuplicateInProgress", duplicateOf="rr-0"), History(requests=[ineffective]), NOW, POLICY
    )
    assert transition.status is not None
    assert transition.status.outcome == "Ineffective"


# -- timeouts and finished requests ------------------------------------------------------------------


def test_a_timed_out_request_notifies_and_counts_the_timeout_before_the_write() -> None:
    rr = make_rr(status={"overallPhase": "Executing", "startTime": NOW - timedelta(hours=2), "transitionCount": 3})
    transition = tr.plan(rr, History(), NOW, POLICY)
    assert transition.status is not None
    assert transition.status.overall_phase == RemediationPhase.TIMED_OUT
    assert transition.notification is not None
    assert transition.notification.manifest["metadata"]["name"] == "timeout-rr-1"
    assert transition.notification.counts == ()  # not a manual review
    assert counted(transition.counts_before_write) == [(tr.Metric.TIMEOUTS, {"phase": "Executing", "namespace": NS})]
    assert counted(transition.counts_after_write) == [moved("Executing", "TimedOut")]
    assert transition.terminal is True


def test_reads_follow_the_phase() -> None:
    assert tr.reads_for(analyzing(), NOW, POLICY.timeouts) == tr.Reads.TARGET
    assert tr.reads_for(executing(), NOW, POLICY.timeouts) == tr.Reads.EXECUTION
    assert tr.reads_for(make_rr(), NOW, POLICY.timeouts) == tr.Reads.CACHES
    assert tr.reads_for(analyzing(), NOW + timedelta(hours=2), POLICY.timeouts) == tr.Reads.CACHES


def terminal() -> RemediationRequest:
    ref = {"apiVersion": "kubernaut.ai/v1alpha1", "kind": "NotificationRequest", "name": "nr-1", "namespace": NS}
    return make_rr(status={"overallPhase": "Failed", "notificationRequestRefs": [ref], "transitionCount": 4})


def test_a_finished_request_mirrors_its_notification() -> None:
    history = History(notifications={f"{NS}/nr-1": tr.TrackedNotification(found=True, phase="Sent")})
    transition = tr.plan(terminal(), history, NOW, POLICY)
    assert transition.status is not None
    assert transition.status.notification_status == NotificationStatus.SENT
    assert transition.events == ()
    assert transition.requeue is None


def test_a_finished_request_waits_while_its_notification_is_not_known() -> None:
    assert tr.plan_terminal(terminal(), History(synced=False), NOW) == tr.IDLE
    deleted = tr.plan_terminal(terminal(), History(), NOW)
    assert deleted.status is not None
    assert deleted.status.notification_status == NotificationStatus.CANCELLED


def test_a_referenced_notification_sets_the_pending_delivery() -> None:
    status = make_rr().status
    manifest = {"metadata": {"name": "nr-1", "namespace": NS}}
    referenced = tr.with_notification(status, manifest, "uid-nr")
    assert [(ref.name, ref.uid) for ref in referenced.notification_request_refs or []] == [("nr-1", "uid-nr")]
    assert referenced.notification_status == NotificationStatus.PENDING
    assert "uid" not in manifest["metadata"]


# -- the gates ---------------------------------------------------------------------------------------


def _failure(name: str) -> WorkflowExecution:
    wfe = make_wfe(name, "Failed", execution_failure=True)
    wfe.spec.target_resource = f"prod/Deployment/{name}"
    return wfe


def test_an_unmanaged_request_is_blocked_until_the_scope_timeout() -> None:
    rr = make_rr(status={"overallPhase": "Pending", "startTime": NOW, "transitionCount": 1})
    gates = Gates(policy=GatePolicy(), scope=Scope(managed=False, where="Namespace prod"))
    transition = tr.plan_pending(rr, History(gate_inputs=gates), NOW, POLICY)
    assert transition.status is not None
    assert transition.status.block_reason == "UnmanagedResource"
    assert transition.status.blocked_until == NOW - timedelta(minutes=1) + timedelta(hours=1)
    assert transition.notices == ()


def test_every_circuit_open_block_names_the_one_critical_notice_of_the_opening() -> None:
    failures = [_failure(f"we-{i}") for i in range(3)]
    policy = GatePolicy(breaker_failure_threshold=3)
    gates = Gates(policy=policy, scope=Scope(managed=True, where="Namespace prod"), executions=failures)
    names = []
    for name in ("rr-1", "rr-2"):
        rr = make_rr(
            name,
            status={"overallPhase": "Analyzing", "startTime": NOW, "transitionCount": 2},
            workflow_ref=WORKFLOW_REF,
        )
        transition = tr.plan_analyzing(rr, History(gate_inputs=gates), NOW, POLICY)
        assert transition.status is not None
        assert transition.status.block_reason == "CircuitOpen"
        assert transition.execution is None
        (notice,) = transition.notices
        assert notice.manifest["spec"]["priority"] == "critical"
        assert notice.manifest["spec"]["channels"] == ["critical"]
        assert notice.manifest["metadata"]["namespace"] == "kubernaut-system"
        names.append(notice.manifest["metadata"]["name"])
    assert names[0] == names[1]
