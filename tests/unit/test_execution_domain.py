"""The WorkflowExecution state machine: validation, phases, conditions, cooldown and block clearance."""

from datetime import UTC, datetime, timedelta
from itertools import product
from typing import Any

import pytest

from kubernaut.api.v1alpha1.common import Condition, ConditionStatus
from kubernaut.api.v1alpha1.workflowexecution import (
    ClearMethod,
    FailureReason,
    WorkflowExecution,
    WorkflowExecutionPhase,
)
from kubernaut.domain import execution as ex
from kubernaut.domain.audit_events import build_block_cleared_event, build_workflow_event
from kubernaut.domain.conditions import find_condition, set_condition
from kubernaut.domain.failure import build_execution_failure, build_pre_execution_failure

P = WorkflowExecutionPhase
R = FailureReason
NOW = datetime(2025, 12, 15, 10, 30, tzinfo=UTC)
US = timedelta(microseconds=1)
COOLDOWN = timedelta(minutes=5)


def make_wfe(
    *,
    name: str = "wfe-a",
    namespace: str = "default",
    target: str = "default/deployment/test-app",
    image: str = "quay.io/wf/restart:1",
    parameters: dict[str, str] | None = None,
    status: dict[str, Any] | None = None,
    labels: dict[str, str] | None = None,
    annotations: dict[str, str] | None = None,
) -> WorkflowExecution:
    spec: dict[str, Any] = {
        "remediationRequestRef": {"kind": "RemediationRequest", "name": "rr-1", "namespace": namespace},
        "workflowRef": {"workflowId": "restart-pod", "version": "1.0.0", "containerImage": image},
        "targetResource": target,
    }
    if parameters is not None:
        spec["parameters"] = parameters
    meta = {"name": name, "namespace": namespace, "uid": "uid-1", "labels": labels or {}}
    meta["annotations"] = annotations or {}
    return WorkflowExecution.from_wire({"metadata": meta, "spec": spec, "status": status or {}})


def with_phase(phase: P | None, **status: Any) -> WorkflowExecution:
    return make_wfe(status={"phase": phase.value if phase else None, **status})


# -- phase machine ---------------------------------------------------------------------------------

ALLOWED = {
    (P.PENDING, P.PENDING),
    (P.PENDING, P.RUNNING),
    (P.PENDING, P.FAILED),
    (P.RUNNING, P.RUNNING),
    (P.RUNNING, P.COMPLETED),
    (P.RUNNING, P.FAILED),
    (P.COMPLETED, P.COMPLETED),
    (P.FAILED, P.FAILED),
}


@pytest.mark.parametrize(("current", "new"), list(product(P, P)))
def test_phase_machine(current: P, new: P) -> None:
    if (current, new) in ALLOWED:
        ex.check_transition(current, new)
    else:
        with pytest.raises(ex.InvalidTransitionError, match=f"from {current} to {new}"):
            ex.check_transition(current, new)


def test_empty_phase_reads_as_pending() -> None:
    assert with_phase(None).phase is P.PENDING


@pytest.mark.parametrize("phase", [P.COMPLETED, P.FAILED])
def test_terminal_phases_are_never_left(phase: P) -> None:
    wfe = with_phase(phase, startTime="2025-12-15T10:00:00Z")
    failure = build_execution_failure(
        pipelinerun=None, taskruns={}, start_time=None, now=NOW, workflow_id="w", target="t"
    )
    with pytest.raises(ex.InvalidTransitionError):
        ex.build_started_status(wfe, pipelinerun="p", namespace="ns", start_time=NOW, adopted=False, now=NOW)
    if phase is P.FAILED:
        with pytest.raises(ex.InvalidTransitionError):
            ex.build_completed_status(wfe, ex.observe_pipelinerun({}), NOW)
    else:
        with pytest.raises(ex.InvalidTransitionError):
            ex.build_execution_failed_status(wfe, failure, NOW)
        with pytest.raises(ex.InvalidTransitionError):
            ex.build_pre_execution_failed_status(wfe, failure, NOW)


def test_pending_cannot_complete() -> None:
    with pytest.raises(ex.InvalidTransitionError):
        ex.build_completed_status(with_phase(P.PENDING), ex.observe_pipelinerun({}), NOW)


# -- validation ------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("kwargs", "problem"),
    [
        ({}, None),
        ({"target": "Node/worker-1"}, None),
        ({"parameters": {"REPLICA_COUNT": "3", "A1_B": "x"}}, None),
        ({"image": ""}, "workflowRef.containerImage is required"),
        ({"image": "   "}, "workflowRef.containerImage is required"),
        ({"image": "", "target": ""}, "workflowRef.containerImage is required"),  # image is checked first
        ({"target": ""}, "targetResource is required"),
        ({"target": "deployment"}, "got 1 parts"),
        ({"target": "a/b/c/d"}, "got 4 parts"),
        ({"target": "ns//x"}, "empty part at position 1"),
        ({"target": "/Deployment/x"}, "empty part at position 0"),
        ({"target": "ns/Deployment/" + "n" * 300}, "not a valid object name"),
        ({"parameters": {"replicaCount": "3"}}, "parameter name 'replicaCount' must be UPPER_SNAKE_CASE"),
        ({"parameters": {"1ABC": "3"}}, "parameter name '1ABC' must be UPPER_SNAKE_CASE"),
        ({"parameters": {"A-B": "3"}}, "parameter name 'A-B' must be UPPER_SNAKE_CASE"),
        ({"parameters": {"": "3"}}, "parameter name '' must be UPPER_SNAKE_CASE"),
        ({"target": "x", "parameters": {"bad": "1"}}, "got 1 parts"),  # target before parameters
    ],
)
def test_validation_first_problem_wins(kwargs: dict[str, Any], problem: str | None) -> None:
    found = ex.validate_workflow_execution(make_wfe(**kwargs))
    if problem is None:
        assert found is None
    else:
        assert found is not None
        assert problem in found


def test_parts_message_names_the_format() -> None:
    message = ex.validate_workflow_execution(make_wfe(target="deployment"))
    assert message == "targetResource must have the format {namespace}/{kind}/{name} or {kind}/{name}, got 1 parts"


# -- conditions ------------------------------------------------------------------------------------


def test_condition_transition_time_changes_only_with_status() -> None:
    t1, t2, t3 = NOW, NOW + timedelta(seconds=10), NOW + timedelta(seconds=20)
    first = set_condition(None, "X", True, "A", "one", t1)
    same = set_condition(first, "X", ConditionStatus.TRUE, "B", "two", t2)
    flipped = set_condition(same, "X", False, "C", "three", t3)
    assert first[0].last_transition_time == t1
    assert (same[0].reason, same[0].message, same[0].last_transition_time) == ("B", "two", t1)
    assert (flipped[0].status, flipped[0].last_transition_time) == (ConditionStatus.FALSE, t3)


def test_set_condition_keeps_other_conditions_in_order_and_does_not_mutate() -> None:
    existing = [Condition(type="A", status=ConditionStatus.TRUE), Condition(type="B", status=ConditionStatus.FALSE)]
    updated = set_condition(existing, "A", False, "R", "m", NOW)
    assert [c.type for c in updated] == ["A", "B"]
    assert existing[0].status is ConditionStatus.TRUE
    assert [c.type for c in set_condition(existing, "C", True, "R", "m", NOW)] == ["A", "B", "C"]


# -- status builders -------------------------------------------------------------------------------


def test_started_status() -> None:
    status = ex.build_started_status(
        with_phase(None), pipelinerun="wfe-196200272a2c85fd", namespace="kw", start_time=NOW, adopted=False, now=NOW
    )
    assert (status.phase, status.start_time) == (P.RUNNING, NOW)
    assert status.pipeline_run_ref is not None
    assert status.pipeline_run_ref.name == "wfe-196200272a2c85fd"
    created = find_condition(status.conditions, ex.COND_CREATED)
    assert created is not None
    assert (created.status, created.reason) == (ConditionStatus.TRUE, "PipelineCreated")
    assert created.message == "Created PipelineRun kw/wfe-196200272a2c85fd"


def test_adopted_status_says_already_exists() -> None:
    earlier = NOW - timedelta(seconds=30)
    status = ex.build_started_status(
        with_phase(P.PENDING), pipelinerun="wfe-x", namespace="kw", start_time=earlier, adopted=True, now=NOW
    )
    created = find_condition(status.conditions, ex.COND_CREATED)
    assert created is not None
    assert "already exists" in created.message
    assert status.start_time == earlier


@pytest.mark.parametrize(
    ("succeeded", "outcome", "summary", "message"),
    [
        (None, ex.RunOutcome.RUNNING, ("Unknown", None, None), "Pipeline created; waiting for Tekton to start it"),
        (
            {"status": "Unknown", "reason": "Running", "message": "Tasks Completed: 0"},
            ex.RunOutcome.RUNNING,
            ("Unknown", "Running", "Tasks Completed: 0"),
            "Pipeline executing (Running)",
        ),
        (
            {"status": "Unknown", "reason": "PipelineRunPending"},
            ex.RunOutcome.RUNNING,
            ("Unknown", "PipelineRunPending", None),
            "Pipeline executing (PipelineRunPending)",
        ),
        ({"status": "True", "reason": "Succeeded"}, ex.RunOutcome.SUCCEEDED, None, None),
        ({"status": "False", "reason": "Cancelled"}, ex.RunOutcome.FAILED, None, None),
    ],
)
def test_observing_the_pipelinerun(
    succeeded: dict[str, str] | None,
    outcome: ex.RunOutcome,
    summary: tuple[str, str | None, str | None] | None,
    message: str | None,
) -> None:
    children = [{"kind": "TaskRun", "name": "a"}, {"kind": "Run", "name": "b"}]
    status: dict[str, Any] = {"childReferences": children}
    if succeeded:
        status["conditions"] = [{"type": "Succeeded", **succeeded}]
    pipelinerun = {"status": status}
    observation = ex.observe_pipelinerun(pipelinerun)
    assert observation.outcome is outcome
    if summary is None:
        return
    running = ex.build_running_status(with_phase(P.RUNNING), observation, NOW)
    assert running.phase is P.RUNNING
    assert running.pipeline_run_status is not None
    got = running.pipeline_run_status
    assert (got.status, got.reason, got.message, got.total_tasks) == (*summary, 2)
    assert got.completed_tasks is None
    cond = find_condition(running.conditions, ex.COND_RUNNING)
    assert cond is not None
    assert (cond.status, cond.reason, cond.message) == (ConditionStatus.TRUE, "PipelineStarted", message)


def test_completed_status_takes_tekton_completion_time() -> None:
    start = NOW - timedelta(seconds=200)
    wfe = with_phase(P.RUNNING, startTime="2025-12-15T10:26:40Z")
    assert wfe.status.start_time == start
    pipelinerun = {
        "status": {"completionTime": "2025-12-15T10:28:10Z", "conditions": [{"type": "Succeeded", "status": "True"}]}
    }
    status = ex.build_completed_status(wfe, ex.observe_pipelinerun(pipelinerun), NOW)
    assert status.phase is P.COMPLETED
    assert status.completion_time == start + timedelta(seconds=90)
    assert status.duration == "1m30s"
    assert status.failure_details is None
    cond = find_condition(status.conditions, ex.COND_COMPLETE)
    assert cond is not None
    assert (cond.status, cond.reason) == (ConditionStatus.TRUE, "PipelineSucceeded")
    assert cond.message == "All tasks completed successfully in 1m30s"


def test_completed_without_tekton_completion_time_uses_now() -> None:
    wfe = with_phase(P.RUNNING, startTime="2025-12-15T10:29:15Z")
    status = ex.build_completed_status(wfe, ex.observe_pipelinerun({"status": {}}), NOW)
    assert (status.completion_time, status.duration) == (NOW, "45s")


@pytest.mark.parametrize(
    ("reason", "cond_reason", "cond_message"),
    [
        (R.TASK_FAILED, "TaskFailed", "the message"),
        (R.DEADLINE_EXCEEDED, "DeadlineExceeded", "The pipeline exceeded its timeout deadline"),
        (R.OOM_KILLED, "OOMKilled", "A task was killed for running out of memory (OOMKilled)"),
        (R.FORBIDDEN, "PipelineFailed", "the message"),
        (R.UNKNOWN, "PipelineFailed", "the message"),
        (R.IMAGE_PULL_BACK_OFF, "PipelineFailed", "the message"),
    ],
)
def test_execution_failed_status(reason: R, cond_reason: str, cond_message: str) -> None:
    wfe = with_phase(P.RUNNING, startTime="2025-12-15T10:27:30Z")
    failure = build_pre_execution_failure(reason=reason, message="the message", now=NOW, workflow_id="w", target="t")
    status = ex.build_execution_failed_status(wfe, failure, NOW)
    assert (status.phase, status.completion_time, status.duration) == (P.FAILED, NOW, "2m30s")
    assert status.failure_details == failure
    cond = find_condition(status.conditions, ex.COND_COMPLETE)
    assert cond is not None
    assert (cond.status, cond.reason, cond.message) == (ConditionStatus.FALSE, cond_reason, cond_message)


@pytest.mark.parametrize(
    ("reason", "cond_reason"),
    [
        (R.CONFIGURATION_ERROR, "PipelineCreationFailed"),
        (R.FORBIDDEN, "RBACDenied"),
        (R.RESOURCE_EXHAUSTED, "QuotaExceeded"),
        (R.IMAGE_PULL_BACK_OFF, "ImagePullFailed"),
        (R.EXECUTION_RACE_CONDITION, "ExecutionRaceCondition"),
        (R.UNKNOWN, "PipelineCreationFailed"),
    ],
)
def test_pre_execution_failed_status(reason: R, cond_reason: str) -> None:
    failure = build_pre_execution_failure(reason=reason, message="why", now=NOW, workflow_id="w", target="t")
    status = ex.build_pre_execution_failed_status(with_phase(None), failure, NOW)
    assert (status.phase, status.completion_time) == (P.FAILED, NOW)
    assert status.start_time is None
    assert status.duration is None
    cond = find_condition(status.conditions, ex.COND_CREATED)
    assert cond is not None
    assert (cond.status, cond.reason, cond.message) == (
        ConditionStatus.FALSE,
        cond_reason,
        "Failed to create PipelineRun: why",
    )
    assert "wasExecutionFailure" not in status.to_wire()["failureDetails"]


def test_audit_condition() -> None:
    ok = ex.with_audit_condition(with_phase(None).status, "workflow.started", None, NOW)
    cond = find_condition(ok.conditions, ex.COND_AUDIT)
    assert cond is not None
    assert (cond.status, cond.reason, cond.message) == (
        ConditionStatus.TRUE,
        "AuditSucceeded",
        "Audit event workflow.started recorded",
    )
    failed = ex.with_audit_condition(ok, "workflow.failed", "disk full", NOW + timedelta(seconds=1))
    cond = find_condition(failed.conditions, ex.COND_AUDIT)
    assert cond is not None
    assert (cond.status, cond.reason) == (ConditionStatus.FALSE, "AuditFailed")
    assert "disk full" in cond.message
    assert cond.last_transition_time == NOW + timedelta(seconds=1)


def test_race_message() -> None:
    message = ex.build_race_message("wfe-196200272a2c85fd", "wfe-b", "team-2")
    assert message.startswith("Race condition:")
    assert "wfe-196200272a2c85fd" in message
    assert "team-2/wfe-b" in message
    assert "an unknown execution" in ex.build_race_message("wfe-x", "", "")


# -- cooldown --------------------------------------------------------------------------------------


def completed_at(moment: datetime | None) -> WorkflowExecution:
    wfe = with_phase(P.COMPLETED)
    wfe.status.completion_time = moment
    return wfe


@pytest.mark.parametrize(
    ("elapsed", "release", "requeue"),
    [
        (COOLDOWN, True, None),  # elapsed == cooldown releases
        (COOLDOWN + US, True, None),
        (COOLDOWN - US, False, US),  # one microsecond short: requeue the remainder
        (timedelta(minutes=2), False, timedelta(minutes=3)),
        (timedelta(minutes=6), True, None),
        (timedelta(0), False, COOLDOWN),
        (-timedelta(seconds=1), False, COOLDOWN + timedelta(seconds=1)),  # clock behind the writer
    ],
)
def test_decide_cooldown(elapsed: timedelta, release: bool, requeue: timedelta | None) -> None:
    decision = ex.decide_cooldown(completed_at(NOW - elapsed), cooldown=COOLDOWN, now=NOW)
    assert decision == ex.CooldownDecision(release=release, requeue_after=requeue)


def test_no_completion_time_means_nothing() -> None:
    decision = ex.decide_cooldown(completed_at(None), cooldown=COOLDOWN, now=NOW)
    assert decision == ex.CooldownDecision(release=False, requeue_after=None)


# -- block clearance -------------------------------------------------------------------------------

EXEC_FAILURE = {
    "failedTaskIndex": 0,
    "failedTaskName": "",
    "reason": "TaskFailed",
    "message": "m",
    "failedAt": "2025-12-15T10:00:00Z",
    "executionTimeBeforeFailure": "1s",
    "naturalLanguageSummary": "s",
    "wasExecutionFailure": True,
}
PRE_FAILURE = {**EXEC_FAILURE, "wasExecutionFailure": None}
CLEARED = {"clearedAt": "2025-12-15T10:10:00Z", "clearedBy": "alice", "clearReason": "r", "clearMethod": "Annotation"}
ASK = {"kubernaut.ai/clear-execution-block": "ack-by-bob"}
STAMPED = {**ASK, "kubernaut.ai/execution-block-cleared-by": "bob@example.com"}


@pytest.mark.parametrize(
    ("phase", "failure", "annotations", "existing", "cleared_by"),
    [
        (P.FAILED, EXEC_FAILURE, ASK, None, "unverified:ack-by-bob"),
        (P.FAILED, EXEC_FAILURE, STAMPED, None, "bob@example.com"),
        (
            P.FAILED,
            EXEC_FAILURE,
            {**ASK, "kubernaut.ai/execution-block-cleared-by": "  "},
            None,
            "unverified:ack-by-bob",
        ),
        (P.FAILED, EXEC_FAILURE, {}, None, None),  # no annotation
        (P.FAILED, EXEC_FAILURE, {"kubernaut.ai/clear-execution-block": "  "}, None, None),  # blank reason
        (P.FAILED, EXEC_FAILURE, ASK, CLEARED, None),  # already cleared
        (P.FAILED, PRE_FAILURE, ASK, None, None),  # nothing to clear: it never ran
        (P.FAILED, None, ASK, None, None),
        (P.COMPLETED, None, ASK, None, None),
        (P.RUNNING, None, ASK, None, None),
        (None, None, ASK, None, None),
    ],
)
def test_decide_block_clearance(
    phase: P | None,
    failure: dict[str, Any] | None,
    annotations: dict[str, str],
    existing: dict[str, str] | None,
    cleared_by: str | None,
) -> None:
    status: dict[str, Any] = {"phase": phase.value if phase else None}
    if failure:
        status["failureDetails"] = failure
    if existing:
        status["blockClearance"] = existing
    wfe = make_wfe(status=status, annotations=annotations)
    clearance = ex.decide_block_clearance(wfe, NOW)
    if cleared_by is None:
        assert clearance is None
        return
    assert clearance is not None
    assert clearance.cleared_by == cleared_by
    assert clearance.clear_reason == "ack-by-bob"
    assert clearance.clear_method is ClearMethod.ANNOTATION
    assert clearance.cleared_at == NOW


# -- audit events ----------------------------------------------------------------------------------


def test_workflow_started_event() -> None:
    wfe = with_phase(None)
    status = ex.build_started_status(wfe, pipelinerun="wfe-x", namespace="kw", start_time=NOW, adopted=False, now=NOW)
    event = build_workflow_event(wfe, status, "started", NOW)
    assert (event.event_type, event.event_category, event.event_action, event.event_outcome) == (
        "workflow.started",
        "workflow",
        "started",
        "success",
    )
    assert (event.actor_type, event.actor_id) == ("service", "workflowexecution-controller")
    assert (event.resource_type, event.resource_id, event.namespace) == ("WorkflowExecution", "wfe-a", "default")
    assert event.correlation_id == "wfe-a"
    assert event.event_data == {
        "workflow_id": "restart-pod",
        "workflow_version": "1.0.0",
        "target_resource": "default/deployment/test-app",
        "phase": "Running",
        "container_image": "quay.io/wf/restart:1",
        "execution_name": "wfe-a",
        "started_at": "2025-12-15T10:30:00Z",
        "pipelinerun_name": "wfe-x",
    }


def test_event_id_is_deterministic_per_uid_and_transition() -> None:
    wfe = with_phase(None)
    status = ex.build_started_status(wfe, pipelinerun="p", namespace="n", start_time=NOW, adopted=False, now=NOW)
    later = build_workflow_event(wfe, status, "started", NOW + timedelta(minutes=1))
    assert build_workflow_event(wfe, status, "started", NOW).event_id == later.event_id
    assert build_workflow_event(wfe, status, "failed", NOW).event_id != later.event_id
    other = make_wfe(name="wfe-a")
    other.metadata.uid = "uid-2"  # the same name recreated is another object
    assert build_workflow_event(other, status, "started", NOW).event_id != later.event_id


def test_correlation_label_wins() -> None:
    wfe = make_wfe(labels={"kubernaut.ai/correlation-id": "corr-42"})
    assert build_workflow_event(wfe, wfe.status, "started", NOW).correlation_id == "corr-42"


def test_failed_event_carries_failure() -> None:
    wfe = with_phase(P.RUNNING, startTime="2025-12-15T10:29:00Z")
    failure = build_pre_execution_failure(reason=R.TASK_FAILED, message="boom", now=NOW, workflow_id="w", target="t")
    failure.failed_task_name = "tr-b"
    event = build_workflow_event(wfe, ex.build_execution_failed_status(wfe, failure, NOW), "failed", NOW)
    assert event.event_outcome == "failure"
    assert event.event_data["phase"] == "Failed"
    assert event.event_data["failure_reason"] == "TaskFailed"
    assert event.event_data["failure_message"] == "boom"
    assert event.event_data["failed_task_name"] == "tr-b"
    assert event.event_data["duration"] == "1m0s"


def test_block_cleared_event_actor_is_the_clearer() -> None:
    wfe = make_wfe(status={"phase": "Failed", "failureDetails": EXEC_FAILURE}, annotations=STAMPED)
    status = wfe.status.model_copy(deep=True)
    status.block_clearance = ex.decide_block_clearance(wfe, NOW)
    event = build_block_cleared_event(wfe, status, NOW)
    assert (event.event_type, event.actor_type, event.actor_id) == (
        "workflowexecution.block.cleared",
        "user",
        "bob@example.com",
    )
    assert event.event_data == {
        "cleared_by": "bob@example.com",
        "clear_reason": "ack-by-bob",
        "clear_method": "Annotation",
    }
