"""The WorkflowExecution state machine: validation, observation of the run, status updates.

A run is whatever the WFE's engine makes (a PipelineRun, a Job); each engine turns its object into
a `RunObservation`, and the status builders here read only that.

Every function is pure: it takes the WFE (and what was read), `now` and settings, and returns a new
status or a decision. The executor controller performs the I/O around them.
"""

import re
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime, timedelta
from enum import StrEnum
from typing import Any

from kubernaut.api.v1alpha1.common import ConditionStatus
from kubernaut.api.v1alpha1.workflowexecution import (
    BlockClearanceDetails,
    ClearMethod,
    FailureDetails,
    FailureReason,
    PipelineRunRef,
    PipelineRunStatusSummary,
    WorkflowExecution,
    WorkflowExecutionPhase,
    WorkflowExecutionStatus,
)
from kubernaut.domain.conditions import set_condition
from kubernaut.domain.duration import format_go_duration
from kubernaut.domain.failure import find_succeeded_condition
from kubernaut.domain.target import parse_target
from kubernaut.errors import InvalidTargetError

FINALIZER = "workflowexecution.kubernaut.ai/workflowexecution-cleanup"
ANNOTATION_CLEAR_BLOCK = "kubernaut.ai/clear-execution-block"
ANNOTATION_CLEARED_BY = "kubernaut.ai/execution-block-cleared-by"
LABEL_CORRELATION_ID = "kubernaut.ai/correlation-id"

COND_CREATED = "TektonPipelineCreated"
COND_RUNNING = "TektonPipelineRunning"
COND_COMPLETE = "TektonPipelineComplete"
COND_AUDIT = "AuditRecorded"

_PARAMETER_NAME = re.compile(r"^[A-Z][A-Z0-9_]*$")

Phase = WorkflowExecutionPhase
_ALLOWED = {
    Phase.PENDING: {Phase.PENDING, Phase.RUNNING, Phase.FAILED},
    Phase.RUNNING: {Phase.RUNNING, Phase.COMPLETED, Phase.FAILED},
    Phase.COMPLETED: {Phase.COMPLETED},
    Phase.FAILED: {Phase.FAILED},
}


class InvalidTransitionError(Exception):
    """A status write would move a WFE backwards or out of a terminal phase."""


def check_transition(current: Phase, new: Phase) -> None:
    if new not in _ALLOWED[current]:
        raise InvalidTransitionError(f"WorkflowExecution cannot go from {current} to {new}")


def validate_workflow_execution(wfe: WorkflowExecution) -> str | None:
    """The first problem with the spec common to every engine, as a message for people; None when it may run."""
    spec = wfe.spec
    if not spec.workflow_ref.container_image.strip():
        return "workflowRef.containerImage is required"
    try:
        parse_target(spec.target_resource)
    except InvalidTargetError as exc:
        return str(exc)
    for key in sorted(spec.parameters or {}):
        if not _PARAMETER_NAME.match(key):
            return f"parameter name {key[:80]!r} must be UPPER_SNAKE_CASE (A-Z, 0-9 and _, starting with a letter)"
    return None


def build_started_status(
    wfe: WorkflowExecution,
    *,
    pipelinerun: str,
    namespace: str,
    start_time: datetime,
    adopted: bool,
    now: datetime,
    kind: str = "PipelineRun",
) -> WorkflowExecutionStatus:
    check_transition(wfe.phase, Phase.RUNNING)
    message = (
        f"{kind} {namespace}/{pipelinerun} already exists and belongs to this execution; adopted"
        if adopted
        else f"Created {kind} {namespace}/{pipelinerun}"
    )
    status = wfe.status.model_copy(deep=True)
    status.phase = Phase.RUNNING
    status.start_time = start_time
    status.pipeline_run_ref = PipelineRunRef(name=pipelinerun)
    status.conditions = set_condition(status.conditions, COND_CREATED, True, "PipelineCreated", message, now)
    return status


def summarize_pipelinerun(pipelinerun: Mapping[str, Any]) -> PipelineRunStatusSummary:
    status = pipelinerun.get("status") or {}
    refs = status.get("childReferences") or []
    condition = find_succeeded_condition(pipelinerun)
    if condition is None:
        return PipelineRunStatusSummary(status="Unknown", total_tasks=len(refs))
    return PipelineRunStatusSummary(
        status=str(condition.get("status") or "Unknown"),
        reason=str(condition.get("reason") or "") or None,
        message=str(condition.get("message") or "") or None,
        total_tasks=len(refs),
    )


class RunOutcome(StrEnum):
    RUNNING = "Running"
    SUCCEEDED = "Succeeded"
    FAILED = "Failed"
    CANNOT_START = "CannotStart"  # it never will (an image that cannot be pulled): fail before execution


@dataclass(frozen=True)
class RunObservation:
    """What an engine's run says: its outcome, a summary for the status and, when failed, the details."""

    outcome: RunOutcome
    summary: PipelineRunStatusSummary
    message: str = ""  # while running
    completion_time: datetime | None = None  # when succeeded, if the run says
    failure: FailureDetails | None = None  # when failed or unable to start


def observe_pipelinerun(pipelinerun: Mapping[str, Any]) -> RunObservation:
    """The outcome of a PipelineRun (failure details need its TaskRuns: `build_execution_failure`)."""
    summary = summarize_pipelinerun(pipelinerun)
    condition = find_succeeded_condition(pipelinerun)
    value = condition.get("status") if condition else None
    if value == "True":
        completed = parse_time((pipelinerun.get("status") or {}).get("completionTime"))
        return RunObservation(RunOutcome.SUCCEEDED, summary, completion_time=completed)
    if value == "False":
        return RunObservation(RunOutcome.FAILED, summary)
    if condition is None:
        message = "Pipeline created; waiting for Tekton to start it"
    else:
        message = f"Pipeline executing ({summary.reason or summary.status})"
    return RunObservation(RunOutcome.RUNNING, summary, message=message)


def build_running_status(wfe: WorkflowExecution, observation: RunObservation, now: datetime) -> WorkflowExecutionStatus:
    status = wfe.status.model_copy(deep=True)
    status.pipeline_run_status = observation.summary
    status.conditions = set_condition(
        status.conditions, COND_RUNNING, True, "PipelineStarted", observation.message, now
    )
    return status


def parse_time(value: object) -> datetime | None:
    if not isinstance(value, str) or not value:
        return None
    try:
        return datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        return None


def build_completed_status(
    wfe: WorkflowExecution, observation: RunObservation, now: datetime
) -> WorkflowExecutionStatus:
    check_transition(wfe.phase, Phase.COMPLETED)
    completed = observation.completion_time or now
    status = wfe.status.model_copy(deep=True)
    started = status.start_time or completed
    status.phase = Phase.COMPLETED
    status.completion_time = completed
    status.duration = format_go_duration(completed - started)
    status.failure_details = None
    status.conditions = set_condition(
        status.conditions,
        COND_COMPLETE,
        True,
        "PipelineSucceeded",
        f"All tasks completed successfully in {status.duration}",
        now,
    )
    return status


_COMPLETE_REASON = {
    FailureReason.TASK_FAILED: "TaskFailed",
    FailureReason.DEADLINE_EXCEEDED: "DeadlineExceeded",
    FailureReason.OOM_KILLED: "OOMKilled",
}
_COMPLETE_MESSAGE = {
    FailureReason.DEADLINE_EXCEEDED: "The pipeline exceeded its timeout deadline",
    FailureReason.OOM_KILLED: "A task was killed for running out of memory (OOMKilled)",
}


def build_execution_failed_status(
    wfe: WorkflowExecution, failure: FailureDetails, now: datetime
) -> WorkflowExecutionStatus:
    check_transition(wfe.phase, Phase.FAILED)
    status = wfe.status.model_copy(deep=True)
    status.phase = Phase.FAILED
    status.completion_time = now
    status.duration = format_go_duration(now - status.start_time) if status.start_time else None
    status.failure_details = failure
    status.conditions = set_condition(
        status.conditions,
        COND_COMPLETE,
        False,
        _COMPLETE_REASON.get(failure.reason, "PipelineFailed"),
        _COMPLETE_MESSAGE.get(failure.reason, failure.message),
        now,
    )
    return status


_CREATED_REASON = {
    FailureReason.RESOURCE_EXHAUSTED: "QuotaExceeded",
    FailureReason.FORBIDDEN: "RBACDenied",
    FailureReason.IMAGE_PULL_BACK_OFF: "ImagePullFailed",
    FailureReason.EXECUTION_RACE_CONDITION: "ExecutionRaceCondition",
}


def build_pre_execution_failed_status(
    wfe: WorkflowExecution, failure: FailureDetails, now: datetime, *, failed_to: str = "create PipelineRun"
) -> WorkflowExecutionStatus:
    check_transition(wfe.phase, Phase.FAILED)
    status = wfe.status.model_copy(deep=True)
    status.phase = Phase.FAILED
    status.completion_time = now
    status.failure_details = failure
    status.conditions = set_condition(
        status.conditions,
        COND_CREATED,
        False,
        _CREATED_REASON.get(failure.reason, "PipelineCreationFailed"),
        f"Failed to {failed_to}: {failure.message}",
        now,
    )
    return status


def with_audit_condition(
    status: WorkflowExecutionStatus, event_type: str, error: str | None, now: datetime
) -> WorkflowExecutionStatus:
    status = status.model_copy(deep=True)
    if error is None:
        status.conditions = set_condition(
            status.conditions, COND_AUDIT, True, "AuditSucceeded", f"Audit event {event_type} recorded", now
        )
    else:
        status.conditions = set_condition(
            status.conditions,
            COND_AUDIT,
            ConditionStatus.FALSE,
            "AuditFailed",
            f"Audit event {event_type} not recorded: {error}",
            now,
        )
    return status


def build_race_message(pipelinerun: str, other_wfe: str, other_namespace: str, kind: str = "PipelineRun") -> str:
    holder = f"{other_namespace}/{other_wfe}" if other_namespace else (other_wfe or "an unknown execution")
    return (
        f"Race condition: {kind} {pipelinerun} already exists for WorkflowExecution {holder}; "
        "another workflow holds the lock on this target"
    )


@dataclass(frozen=True)
class CooldownDecision:
    release: bool
    requeue_after: timedelta | None


def decide_cooldown(wfe: WorkflowExecution, *, cooldown: timedelta, now: datetime) -> CooldownDecision:
    """Terminal WFEs keep the lock for `cooldown` after completion, then release it."""
    completed = wfe.status.completion_time
    if completed is None:
        return CooldownDecision(release=False, requeue_after=None)
    elapsed = now - completed
    if elapsed < cooldown:
        return CooldownDecision(release=False, requeue_after=cooldown - elapsed)
    return CooldownDecision(release=True, requeue_after=None)


def decide_block_clearance(wfe: WorkflowExecution, now: datetime) -> BlockClearanceDetails | None:
    """The clearance to record when an operator annotated a failed execution; None otherwise."""
    reason = wfe.metadata.annotations.get(ANNOTATION_CLEAR_BLOCK, "").strip()
    details = wfe.status.failure_details
    if (
        not reason
        or wfe.phase != Phase.FAILED
        or details is None
        or not details.was_execution_failure
        or wfe.status.block_clearance is not None
    ):
        return None
    cleared_by = wfe.metadata.annotations.get(ANNOTATION_CLEARED_BY, "").strip() or f"unverified:{reason}"
    return BlockClearanceDetails(
        cleared_at=now, cleared_by=cleared_by, clear_reason=reason, clear_method=ClearMethod.ANNOTATION
    )


def correlation_id(wfe: WorkflowExecution) -> str:
    return wfe.metadata.labels.get(LABEL_CORRELATION_ID) or wfe.metadata.name
