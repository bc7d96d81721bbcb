"""The RemediationRequest lifecycle functions: names, labels, timeouts, notifications, audit ids."""

import dataclasses
import re
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from kubernaut.api.v1alpha1 import RemediationRequest, WorkflowExecution
from kubernaut.api.v1alpha1.common import ExecutionEngine
from kubernaut.api.v1alpha1.remediationrequest import RemediationPhase
from kubernaut.domain import remediation as rem
from kubernaut.domain.routing import DecisionKind, RoutingDecision
from kubernaut.domain.selection import SelectedWorkflow

T0 = datetime(2025, 12, 15, 10, 0, tzinfo=UTC)
US = timedelta(microseconds=1)
LABEL_VALUE = re.compile(r"^(([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9])?$")
DNS_SUBDOMAIN = re.compile(r"^[a-z0-9]([-a-z0-9.]*[a-z0-9])?$")
DEFAULTS = rem.TimeoutPolicy()


def make_rr(
    name: str = "rr-1",
    *,
    status: dict[str, Any] | None = None,
    created: datetime = T0,
    uid: str = "uid-1",
    **spec: Any,
) -> RemediationRequest:
    return RemediationRequest.from_wire(
        {
            "metadata": {"name": name, "namespace": "team-1", "uid": uid, "creationTimestamp": created},
            "spec": {
                "signalFingerprint": "a" * 64,
                "signalName": "KubePodCrashLooping",
                "severity": "critical",
                "targetResource": {"kind": "Deployment", "name": "api", "namespace": "prod"},
                **spec,
            },
            "status": status or {},
        }
    )


SELECTED = SelectedWorkflow(
    workflow_id="restart", version="1.0.0", container_image="bundle:1", container_digest=None, source="x"
)


# -- names and labels ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("rr_name", "shortened"),
    [
        ("rr-1", False),
        ("r" * 250, False),  # we- + 250 = 253: still fits
        ("r" * 251, True),
        ("a." * 126 + "b", True),  # the cut would end on '.'
        ("a-" * 126 + "b", True),  # the cut would end on '-'
    ],
)
def test_child_names_fit_253_characters_deterministically(rr_name: str, shortened: bool) -> None:
    name = rem.build_child_name("we-", rr_name)
    assert len(name) <= 253
    assert DNS_SUBDOMAIN.match(name)
    assert name == rem.build_child_name("we-", rr_name)
    assert (name != f"we-{rr_name}") is shortened
    if shortened:
        assert name.startswith("we-")
        assert re.search(r"-[0-9a-f]{10}$", name)


def test_shortened_child_names_of_different_requests_differ() -> None:
    first, second = "r" * 260 + "1", "r" * 260 + "2"
    assert rem.build_child_name("nr-manual-review-", first) != rem.build_child_name("nr-manual-review-", second)


@pytest.mark.parametrize(
    ("value", "kept"),
    [("rr-1", True), ("x" * 63, True), ("x" * 64, False), ("a." * 40, False), ("a-" * 40, False)],
)
def test_label_values_fit_63_characters(value: str, kept: bool) -> None:
    label = rem.build_label_value(value)
    assert len(label) <= 63
    assert LABEL_VALUE.match(label)
    assert (label == value) is kept
    assert label == rem.build_label_value(value)


def test_long_request_names_give_valid_execution_and_notification_objects() -> None:
    rr = make_rr("r" * 253)
    wfe = rem.build_workflow_execution(rr, SELECTED)
    note = rem.build_manual_review_notification(rr, rem.ManualReview("S", "R", "m", "high"))
    for manifest in (wfe, note):
        assert len(manifest["metadata"]["name"]) <= 253
        for value in manifest["metadata"]["labels"].values():
            assert len(value) <= 63
            assert LABEL_VALUE.match(value)
    assert wfe["spec"]["remediationRequestRef"]["name"] == "r" * 253


# -- the WorkflowExecution -------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("executing", "expected"),
    [(None, None), ("20m", {"timeout": "20m"}), ("0s", None), ("nonsense", None)],
)
def test_execution_timeout_is_carried_only_when_positive(executing: str | None, expected: Any) -> None:
    rr = make_rr(timeoutConfig={"executing": executing} if executing else None)
    spec = rem.build_workflow_execution(rr, SELECTED)["spec"]
    assert spec.get("executionConfig") == expected


def test_execution_manifest_names_owner_target_and_workflow() -> None:
    rr = make_rr()
    wfe = rem.build_workflow_execution(rr, SELECTED)
    assert wfe["metadata"]["name"] == "we-rr-1"
    assert wfe["metadata"]["namespace"] == "team-1"
    assert wfe["metadata"]["labels"] == {
        "kubernaut.ai/remediation-request": "rr-1",
        "kubernaut.ai/component": "workflow-execution",
    }
    assert wfe["metadata"]["ownerReferences"] == [
        {
            "apiVersion": "kubernaut.ai/v1alpha1",
            "kind": "RemediationRequest",
            "name": "rr-1",
            "uid": "uid-1",
            "controller": True,
            "blockOwnerDeletion": True,
        }
    ]
    assert wfe["spec"]["targetResource"] == "prod/Deployment/api"
    assert wfe["spec"]["workflowRef"] == {"workflowId": "restart", "version": "1.0.0", "containerImage": "bundle:1"}
    assert wfe["spec"]["executionEngine"] == "tekton"


def test_execution_manifest_snapshots_the_job_engine_command_and_deadline() -> None:
    selected = dataclasses.replace(
        SELECTED, engine=ExecutionEngine.JOB, command=("/restart", "--all"), active_deadline="10m"
    )
    spec = rem.build_workflow_execution(make_rr(), selected)["spec"]
    assert spec["executionEngine"] == "job"
    assert spec["workflowRef"] == {
        "workflowId": "restart",
        "version": "1.0.0",
        "containerImage": "bundle:1",
        "command": ["/restart", "--all"],
        "activeDeadline": "10m",
    }
    assert WorkflowExecution.from_wire({"metadata": {}, "spec": spec}).spec.execution_engine is ExecutionEngine.JOB


# -- timeouts -------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("phase", "started", "phase_started", "elapsed", "overrides", "expected"),
    [
        # global: strict >
        ("Pending", T0, None, timedelta(hours=1), None, None),
        ("Pending", T0, None, timedelta(hours=1) + US, None, ("Pending", True)),
        ("Blocked", T0, None, timedelta(hours=1) + US, None, ("Blocked", True)),
        ("Blocked", T0, None, timedelta(minutes=59), None, None),  # no phase timeout while Blocked
        # phase: strict >
        ("Analyzing", T0, T0, timedelta(minutes=10), None, None),
        ("Analyzing", T0, T0, timedelta(minutes=10) + US, None, ("Analyzing", False)),
        ("Executing", T0, T0, timedelta(minutes=30), None, None),
        ("Executing", T0, T0, timedelta(minutes=30) + US, None, ("Executing", False)),
        # global outranks phase
        ("Executing", T0, T0, timedelta(hours=2), None, ("Executing", True)),
        # per-request overrides, and overrides that cannot be read fall back to the defaults
        ("Executing", T0, T0, timedelta(minutes=5) + US, {"executing": "5m"}, ("Executing", False)),
        ("Pending", T0, None, timedelta(minutes=2) + US, {"global": "2m"}, ("Pending", True)),
        ("Pending", T0, None, timedelta(minutes=2) + US, {"global": "soon"}, None),
        ("Pending", T0, None, timedelta(minutes=2) + US, {"global": "0s"}, None),
    ],
)
def test_timeouts_fire_strictly_after_their_limit(
    phase: str,
    started: datetime,
    phase_started: datetime | None,
    elapsed: timedelta,
    overrides: dict[str, str] | None,
    expected: tuple[str, bool] | None,
) -> None:
    status: dict[str, Any] = {"overallPhase": phase, "startTime": started}
    if phase_started:
        status[f"{phase.lower()}StartTime"] = phase_started
    rr = make_rr(status=status, timeoutConfig=overrides)
    decision = rem.decide_timeout(rr, started + elapsed, DEFAULTS)
    assert (None if decision is None else (decision.phase, decision.is_global)) == expected


def test_timed_out_status_records_phase_time_and_message() -> None:
    rr = make_rr(status={"overallPhase": "Executing", "startTime": T0, "transitionCount": 3})
    now = T0 + timedelta(minutes=31)
    status = rem.build_timed_out_status(rr, rem.TimeoutDecision("Executing", False, timedelta(minutes=30)), now)
    assert status.overall_phase == RemediationPhase.TIMED_OUT
    assert status.timeout_phase == "Executing"
    assert status.timeout_time == now
    assert status.completed_at == now
    assert status.message == "Phase Executing timed out after 30m0s"
    assert status.transition_count == 4


@pytest.mark.parametrize(
    ("is_global", "name", "priority"),
    [(True, "timeout-rr-1", "critical"), (False, "phase-timeout-executing-rr-1", "high")],
)
def test_timeout_notifications(is_global: bool, name: str, priority: str) -> None:
    decision = rem.TimeoutDecision("Executing", is_global, timedelta(1))
    note = rem.build_timeout_notification(make_rr(), decision, ["webhook", "console"])
    assert note["metadata"]["name"] == name
    assert note["spec"]["type"] == "escalation"
    assert note["spec"]["priority"] == priority
    assert note["spec"]["channels"] == ["webhook", "console"]
    assert decision.priority == priority


@pytest.mark.parametrize("is_global", [True, False])
def test_timeout_notification_channels_default_by_priority(is_global: bool) -> None:
    decision = rem.TimeoutDecision("Executing", is_global, timedelta(1))
    note = rem.build_timeout_notification(make_rr(), decision)
    assert note["spec"]["channels"] == rem.default_channels(decision.priority) == ["slack", "email"]


# -- notifications ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("priority", "channels"),
    [("critical", ["slack", "email"]), ("high", ["slack", "email"]), ("medium", ["slack"]), ("low", ["slack"])],
)
def test_manual_review_channels_follow_priority(priority: str, channels: list[str]) -> None:
    note = rem.build_manual_review_notification(make_rr(), rem.ManualReview("S", "R", "m", priority))
    assert note["spec"]["priority"] == priority
    assert note["spec"]["channels"] == channels


def test_manual_review_manifest() -> None:
    review = rem.ManualReview(
        source="WorkflowExecution",
        reason="ExecutionFailure",
        message="task 1 exited 3",
        priority="critical",
        previous_execution="we-rr-1",
        last_exit_code=3,
        retry_count=3,
        max_retries=3,
    )
    note = rem.build_manual_review_notification(make_rr(), review)
    assert note["metadata"]["name"] == "nr-manual-review-rr-1"
    assert note["metadata"]["labels"] == {
        "kubernaut.ai/remediation-request": "rr-1",
        "kubernaut.ai/component": "remediation-orchestrator",
        "kubernaut.ai/notification-type": "manual-review",
        "kubernaut.ai/review-source": "WorkflowExecution",
        "kubernaut.ai/severity": "critical",
    }
    assert note["metadata"]["ownerReferences"][0]["uid"] == "uid-1"
    assert note["spec"]["type"] == "manual-review"
    assert note["spec"]["subject"] == "Manual Review Required: KubePodCrashLooping"
    assert note["spec"]["metadata"] == {
        "remediationRequest": "rr-1",
        "source": "WorkflowExecution",
        "reason": "ExecutionFailure",
        "previousExecution": "we-rr-1",
        "lastExitCode": "3",
        "retryCount": "3",
        "maxRetries": "3",
    }
    for text in ("KubePodCrashLooping", "critical", "ExecutionFailure", "task 1 exited 3", "prod/Deployment/api"):
        assert text in note["spec"]["body"]


def test_manual_review_metadata_leaves_out_what_is_absent() -> None:
    note = rem.build_manual_review_notification(make_rr(), rem.ManualReview("S", "R", "", "low", last_exit_code=0))
    assert note["spec"]["metadata"] == {"remediationRequest": "rr-1", "source": "S", "reason": "R"}


def test_notification_refs_are_appended_once() -> None:
    note = rem.build_manual_review_notification(make_rr(), rem.ManualReview("S", "R", "m", "high"))
    note["metadata"]["uid"] = "nr-uid"
    status = rem.with_notification_ref(make_rr().status, note)
    status = rem.with_notification_ref(status, note)
    assert [(r.name, r.uid, r.api_version) for r in status.notification_request_refs or []] == [
        ("nr-manual-review-rr-1", "nr-uid", "kubernaut.ai/v1alpha1")
    ]


# -- transitions and audit ids --------------------------------------------------------------------


def test_each_phase_change_counts_once_and_names_its_audit_event() -> None:
    rr = make_rr()
    pending = rem.build_initial_status(rr, T0)
    assert pending.transition_count == 1
    again = rem.build_initial_status(make_rr(status=pending.to_wire()), T0)
    assert again.transition_count == 1  # no phase change, no new transition

    def event_id(status: Any, event_type: str = "orchestrator.phase.transitioned") -> str:
        return rem.build_rr_event(rr, status, event_type, "success", {}, T0).event_id

    analyzing = rem.build_analyzing_status(make_rr(status=pending.to_wire()), T0)
    assert analyzing.transition_count == 2
    assert event_id(analyzing) == event_id(analyzing.model_copy())  # a retried transition: same id
    assert event_id(analyzing) != event_id(pending)
    assert event_id(analyzing) != event_id(analyzing, "orchestrator.routing.blocked")
    other = rem.build_rr_event(make_rr(uid="uid-2"), analyzing, "orchestrator.phase.transitioned", "success", {}, T0)
    assert other.event_id != event_id(analyzing)


def test_rr_events_carry_the_common_fields() -> None:
    rr = make_rr()
    event = rem.build_rr_event(rr, rr.status, "orchestrator.lifecycle.started", "pending", {"x": 1}, T0)
    assert event.event_category == "orchestration"
    assert event.event_action == "started"
    assert event.actor_type == "service"
    assert event.resource_type == "RemediationRequest"
    assert event.resource_id == "rr-1"
    assert event.correlation_id == "uid-1"
    assert event.event_data == {"rr_name": "rr-1", "namespace": "team-1", "x": 1}


def block(reason: str, **fields: Any) -> RoutingDecision:
    return RoutingDecision(kind=DecisionKind.BLOCK, reason=reason, message=f"{reason}!", **fields)


@pytest.mark.parametrize(
    ("decision", "workflow_id", "present", "absent"),
    [
        (block("ResourceBusy", blocking_workflow_execution="we-x"), "", {"blocking_wfe": "we-x"}, ["workflow_id"]),
        (
            block(
                "RecentlyRemediated", blocked_until=T0 + timedelta(minutes=3), requeue_after=timedelta(seconds=179.9)
            ),
            "wf-1",
            {"workflow_id": "wf-1", "blocked_until": "2025-12-15T10:03:00Z", "requeue_after_seconds": 179},
            ["consecutive_failures", "backoff_seconds"],
        ),
        (
            block(
                "ExponentialBackoff",
                blocked_until=T0 + timedelta(seconds=90),
                consecutive_failure_count=2,
                next_allowed_execution=T0 + timedelta(seconds=90),
            ),
            "wf-1",
            {"consecutive_failures": 2, "backoff_seconds": 90},
            [],
        ),
    ],
)
def test_blocked_event_data(
    decision: RoutingDecision, workflow_id: str, present: dict[str, Any], absent: list[str]
) -> None:
    data = rem.build_blocked_event_data(
        make_rr(), decision, RemediationPhase.PENDING, RemediationPhase.BLOCKED, workflow_id, T0
    )
    assert data["block_reason"] == decision.reason
    assert data["from_phase"] == "Pending"
    assert data["to_phase"] == "Blocked"
    assert data["target_resource"] == "prod/Deployment/api"
    for key, value in present.items():
        assert data[key] == value
    for key in absent:
        assert key not in data


# -- block, resume, fail ---------------------------------------------------------------------------


def test_block_then_resume_returns_to_the_phase_it_was_blocked_in() -> None:
    rr = make_rr(status={"overallPhase": "Analyzing", "transitionCount": 2})
    blocked = rem.build_blocked_status(
        rr, block("ResourceBusy", blocking_workflow_execution="we-x"), RemediationPhase.ANALYZING
    )
    assert blocked.overall_phase == RemediationPhase.BLOCKED
    assert blocked.blocked_from_phase == RemediationPhase.ANALYZING
    assert blocked.blocking_workflow_execution == "we-x"
    assert blocked.blocked_until is None
    resumed = rem.build_resumed_status(make_rr(status=blocked.to_wire()))
    assert resumed.overall_phase == RemediationPhase.ANALYZING
    assert resumed.transition_count == 4
    for field in ("block_reason", "block_message", "blocked_until", "blocking_workflow_execution", "duplicate_of"):
        assert getattr(resumed, field) is None


def test_event_based_block_never_carries_an_instant() -> None:
    decision = block("DuplicateInProgress", duplicate_of="rr-0", blocked_until=T0)
    status = rem.build_blocked_status(make_rr(), decision, RemediationPhase.PENDING)
    assert status.blocked_until is None
    assert status.duplicate_of == "rr-0"


@pytest.mark.parametrize(
    ("count", "gate"),
    [(0, None), (1, T0 + timedelta(minutes=1)), (2, T0 + timedelta(minutes=2))],
)
def test_workflow_failure_records_the_target_gate_only_when_counted(count: int, gate: datetime | None) -> None:
    rr = make_rr(status={"overallPhase": "Executing", "transitionCount": 3})
    status = rem.build_workflow_failed_status(
        rr, T0, summary=None, was_execution_failure=False, failure_count=count, next_allowed=gate
    )
    assert status.overall_phase == RemediationPhase.FAILED
    assert status.failure_phase == "workflow_execution"
    assert status.failure_reason == "WorkflowExecution failed"
    assert status.message == "Workflow failed with unknown reason"
    assert status.completed_at == T0
    assert status.consecutive_failure_count == (count or None)
    assert status.next_allowed_execution == gate


def test_expired_block_failure_keeps_the_reason_for_the_record() -> None:
    rr = make_rr(status={"overallPhase": "Blocked", "blockReason": "ConsecutiveFailures", "blockedUntil": T0})
    status = rem.build_failed_status(rr, T0, failure_phase="blocked", failure_reason="Cooldown expired")
    assert status.block_reason == "ConsecutiveFailures"
    assert status.blocked_until is None


def test_creation_failure_keeps_the_phase_and_says_why() -> None:
    rr = make_rr(status={"overallPhase": "Analyzing", "transitionCount": 2})
    status = rem.build_creation_failed_status(rr, "name taken", T0)
    assert status.overall_phase == RemediationPhase.ANALYZING
    assert status.transition_count == 2
    [condition] = status.conditions or []
    assert (condition.type, condition.status, condition.reason) == (
        "WorkflowExecutionReady",
        "False",
        "WorkflowExecutionCreationFailed",
    )
    assert condition.message == "Failed to create WorkflowExecution: name taken"


# -- one ExhaustedRetries notice per streak --------------------------------------------------------


def history(*entries: tuple[str, dict[str, Any]]) -> list[RemediationRequest]:
    return [
        make_rr(f"h{index:02d}", uid=f"h{index}", created=T0 + timedelta(minutes=index), status=status)
        for index, (_, status) in enumerate(entries)
    ]


FAILED = ("F", {"overallPhase": "Failed", "failurePhase": "workflow_execution"})
COMPLETED = ("C", {"overallPhase": "Completed"})
NOTIFIED = ("B", {"overallPhase": "Blocked", "blockReason": "ConsecutiveFailures"})
NOTIFIED_THEN_EXPIRED = (
    "X",
    {"overallPhase": "Failed", "failurePhase": "blocked", "blockReason": "ConsecutiveFailures"},
)


@pytest.mark.parametrize(
    ("entries", "first"),
    [
        ([FAILED, FAILED, FAILED], True),
        ([FAILED, FAILED, FAILED, NOTIFIED], False),
        ([FAILED, FAILED, FAILED, NOTIFIED_THEN_EXPIRED, FAILED], False),
        ([FAILED, FAILED, FAILED, NOTIFIED_THEN_EXPIRED, COMPLETED, FAILED, FAILED, FAILED], True),
        ([], True),
    ],
)
def test_exhausted_retries_notice_once_per_streak(entries: list[tuple[str, dict[str, Any]]], first: bool) -> None:
    rr = make_rr("rr-new", uid="new", created=T0 + timedelta(hours=1))
    assert rem.decide_exhausted_retries_notice(rr, [*history(*entries), rr]) is first
