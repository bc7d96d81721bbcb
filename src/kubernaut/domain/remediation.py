"""The RemediationRequest lifecycle: status updates, the WorkflowExecution to create, notifications.

Pure: each function takes the request (and what was read), `now` and settings, and returns a new
status, a manifest or a decision. The orchestrator controller performs the I/O around them.
"""

import hashlib
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from kubernaut.api.audit import AuditEvent, build_event_id
from kubernaut.api.v1alpha1.common import API_VERSION, ObjectReference
from kubernaut.api.v1alpha1.notificationrequest import NotificationPhase
from kubernaut.api.v1alpha1.remediationrequest import (
    Assessment,
    BlockReason,
    DryRunResult,
    Effectiveness,
    NotificationStatus,
    Outcome,
    RemediationPhase,
    RemediationRequest,
    RemediationRequestStatus,
    SkipReason,
)
from kubernaut.api.v1alpha1.remediationrequest import (
    SelectedWorkflow as SelectedWorkflowStatus,
)
from kubernaut.domain.audit_events import ORCHESTRATOR_ACTOR
from kubernaut.domain.conditions import set_condition
from kubernaut.domain.dryrun import is_dry_run_outcome
from kubernaut.domain.duration import format_go_duration, format_rfc3339, parse_go_duration
from kubernaut.domain.execution import FINALIZER as EXECUTION_FINALIZER
from kubernaut.domain.routing import RoutingDecision, build_rr_target, is_time_based
from kubernaut.domain.selection import SelectedWorkflow

Phase = RemediationPhase

LABEL_REMEDIATION_REQUEST = "kubernaut.ai/remediation-request"
LABEL_COMPONENT = "kubernaut.ai/component"
FAILURE_PHASE_ANALYSIS = "analysis"
FAILURE_PHASE_WORKFLOW_EXECUTION = "workflow_execution"
FAILURE_PHASE_BLOCKED = "blocked"
FAILURE_PHASE_TIMEOUT = "timeout"

COND_WFE_READY = "WorkflowExecutionReady"
COND_WFE_COMPLETE = "WorkflowExecutionComplete"
COND_RECOVERY = "RecoveryComplete"
COND_NOTIFICATION = "NotificationDelivered"

_MAX_NAME = 253
_LATEST = datetime.max.replace(tzinfo=UTC)


def build_child_name(prefix: str, rr_name: str) -> str:
    """`<prefix><rr>`, shortened deterministically (hash suffix) when it would exceed 253 characters."""
    name = f"{prefix}{rr_name}"
    if len(name) <= _MAX_NAME:
        return name
    digest = hashlib.sha256(rr_name.encode()).hexdigest()[:10]
    return f"{name[: _MAX_NAME - 11].rstrip('-.')}-{digest}"


def build_label_value(value: str) -> str:
    """Label values are at most 63 characters; longer ones keep a prefix and a hash."""
    if len(value) <= 63:
        return value
    return f"{value[:52].rstrip('-._')}-{hashlib.sha256(value.encode()).hexdigest()[:10]}"


def _transition(rr: RemediationRequest, to: Phase) -> RemediationRequestStatus:
    status = rr.status.model_copy(deep=True)
    if status.overall_phase != to:
        status.overall_phase = to
        status.transition_count = (status.transition_count or 0) + 1
    return status


def build_initial_status(rr: RemediationRequest, now: datetime) -> RemediationRequestStatus:
    status = _transition(rr, Phase.PENDING)
    status.start_time = now
    return status


def build_analyzing_status(rr: RemediationRequest, now: datetime) -> RemediationRequestStatus:
    status = _transition(rr, Phase.ANALYZING)
    status.analyzing_start_time = now
    return status


# -- timeouts ---------------------------------------------------------------------------------------


@dataclass(frozen=True)
class TimeoutPolicy:
    """The default timeouts, overridden per request by `spec.timeoutConfig` (built from the
    settings' `timeouts` section)."""

    global_: timedelta = timedelta(hours=1)
    analyzing: timedelta = timedelta(minutes=10)
    executing: timedelta = timedelta(minutes=30)


@dataclass(frozen=True)
class TimeoutDecision:
    phase: str
    is_global: bool
    timeout: timedelta

    @property
    def priority(self) -> str:
        """The priority of its notification: the whole remediation timing out is the graver case."""
        return "critical" if self.is_global else "high"


def _override(value: str | None, default: timedelta) -> timedelta:
    if not value:
        return default
    try:
        parsed = parse_go_duration(value)
    except ValueError:
        return default
    return parsed if parsed > timedelta(0) else default


def decide_timeout(rr: RemediationRequest, now: datetime, config: TimeoutPolicy) -> TimeoutDecision | None:
    """Global timeout first (strict `>`), then the Analyzing/Executing phase timeout."""
    status, overrides = rr.status, rr.spec.timeout_config
    phase = status.overall_phase
    if status.start_time:
        limit = _override(overrides.global_ if overrides else None, config.global_)
        if now - status.start_time > limit:
            return TimeoutDecision(phase=str(phase), is_global=True, timeout=limit)
    phase_start = {
        Phase.ANALYZING: (status.analyzing_start_time, overrides.analyzing if overrides else None, config.analyzing),
        Phase.EXECUTING: (status.executing_start_time, overrides.executing if overrides else None, config.executing),
    }.get(phase or Phase.PENDING)
    if phase_start and phase_start[0]:
        limit = _override(phase_start[1], phase_start[2])
        if now - phase_start[0] > limit:
            return TimeoutDecision(phase=str(phase), is_global=False, timeout=limit)
    return None


def build_timed_out_status(
    rr: RemediationRequest, decision: TimeoutDecision, now: datetime
) -> RemediationRequestStatus:
    status = _transition(rr, Phase.TIMED_OUT)
    status.timeout_phase = decision.phase
    status.timeout_time = now
    status.completed_at = now
    scope = "Remediation" if decision.is_global else f"Phase {decision.phase}"
    status.message = f"{scope} timed out after {format_go_duration(decision.timeout)}"
    return status


# -- routing outcomes -------------------------------------------------------------------------------


def build_blocked_status(
    rr: RemediationRequest, decision: RoutingDecision, from_phase: Phase
) -> RemediationRequestStatus:
    status = _transition(rr, Phase.BLOCKED)
    status.block_reason = decision.reason
    status.block_message = decision.message
    until = decision.blocked_until if is_time_based(decision.reason) else None
    status.blocked_until = build_stored_instant(until) if until else None
    status.blocking_workflow_execution = decision.blocking_workflow_execution or None
    status.duplicate_of = decision.duplicate_of or None
    status.blocked_from_phase = from_phase
    if decision.consecutive_failure_count:
        status.consecutive_failure_count = decision.consecutive_failure_count
        status.next_allowed_execution = (
            build_stored_instant(decision.next_allowed_execution) if decision.next_allowed_execution else None
        )
    return status


def build_stored_instant(moment: datetime) -> datetime:
    """`moment` rounded up to a whole second: the API server keeps times to the second, and a block
    read back must not end before its decision does (the request would resume into the same block)."""
    if moment.microsecond == 0:
        return moment
    return moment.replace(microsecond=0) + timedelta(seconds=1)


def build_resumed_status(rr: RemediationRequest) -> RemediationRequestStatus:
    """The block cleared: route again from the phase it was blocked in."""
    status = _transition(rr, rr.status.blocked_from_phase or Phase.PENDING)
    _clear_block(status)
    return status


def _clear_block(status: RemediationRequestStatus) -> None:
    status.block_reason = None
    status.block_message = None
    status.blocked_until = None
    status.blocking_workflow_execution = None
    status.duplicate_of = None
    status.blocked_from_phase = None


def decide_exhausted_retries_notice(rr: RemediationRequest, same_fingerprint: Sequence[RemediationRequest]) -> bool:
    """Whether rr's ConsecutiveFailures block is the first of its streak (one manual review per streak).

    The streak is the signal's requests since its newest success; an earlier request of the streak
    blocked for the same reason has already told people. A success starts a new streak.
    """
    newest_first = sorted(
        (
            other
            for other in same_fingerprint
            if other.metadata.uid != rr.metadata.uid and not is_dry_run_outcome(other)
        ),
        key=lambda other: (other.metadata.creation_timestamp or _LATEST, other.metadata.name),
        reverse=True,
    )
    for other in newest_first:
        if other.status.overall_phase == Phase.COMPLETED:
            return True
        if other.status.block_reason == BlockReason.CONSECUTIVE_FAILURES:
            return False
    return True


def build_previous_execution_failed_status(
    rr: RemediationRequest, decision: RoutingDecision, now: datetime
) -> RemediationRequestStatus:
    status = _transition(rr, Phase.FAILED)
    status.skip_reason = SkipReason.PREVIOUS_EXECUTION_FAILED
    status.skip_message = decision.message
    status.blocking_workflow_execution = decision.blocking_workflow_execution or None
    status.requires_manual_review = True
    status.completed_at = now
    status.failure_phase = "routing"
    status.failure_reason = SkipReason.PREVIOUS_EXECUTION_FAILED.value
    return status


# -- terminal outcomes ------------------------------------------------------------------------------


def build_verifying_status(rr: RemediationRequest, now: datetime) -> RemediationRequestStatus:
    """The workflow completed: watch its alert for the effectiveness window."""
    status = _transition(rr, Phase.VERIFYING)
    status.verifying_start_time = now
    status.conditions = set_condition(
        status.conditions, COND_WFE_COMPLETE, True, "WorkflowSucceeded", "The workflow completed", now
    )
    return status


def build_completed_status(
    rr: RemediationRequest,
    now: datetime,
    *,
    from_duplicate: bool = False,
    effectiveness: Effectiveness | None = None,
    outcome: Outcome | None = None,
) -> RemediationRequestStatus:
    """Completed; `outcome` is the original's for a duplicate (an ineffective run fixed it no more)."""
    status = _transition(rr, Phase.COMPLETED)
    ineffective = effectiveness is not None and effectiveness.assessment == Assessment.INEFFECTIVE
    status.outcome = outcome or (Outcome.INEFFECTIVE if ineffective else Outcome.REMEDIATED)
    if effectiveness is not None:
        status.effectiveness = effectiveness
    status.completed_at = now
    status.next_allowed_execution = None
    status.consecutive_failure_count = None
    _clear_block(status)
    if not from_duplicate:
        status.conditions = set_condition(
            status.conditions, COND_WFE_COMPLETE, True, "WorkflowSucceeded", "The workflow completed", now
        )
        recovered = (True, "RecoverySucceeded", "The target was remediated")
        if ineffective and effectiveness is not None:
            recovered = (False, "RecoveryIneffective", effectiveness.message or "The alert did not resolve")
        status.conditions = set_condition(status.conditions, COND_RECOVERY, *recovered, now)
    return status


def build_dry_run_status(rr: RemediationRequest, now: datetime, result: DryRunResult) -> RemediationRequestStatus:
    """Completed with outcome DryRun: nothing ran, no lock was taken."""
    status = _transition(rr, Phase.COMPLETED)
    status.outcome = Outcome.DRY_RUN
    status.completed_at = now
    status.dry_run = result
    verdict = "validated" if result.validated else "refused by the API server"
    status.message = f"Dry run: {result.execution_name} ({result.lock_name}) {verdict}: {result.message}"
    _clear_block(status)
    return status


def build_failed_status(
    rr: RemediationRequest,
    now: datetime,
    *,
    failure_phase: str,
    failure_reason: str,
    message: str | None = None,
) -> RemediationRequestStatus:
    status = _transition(rr, Phase.FAILED)
    status.failure_phase = failure_phase
    status.failure_reason = failure_reason
    status.completed_at = now
    if message is not None:
        status.message = message
    if failure_phase != FAILURE_PHASE_BLOCKED:
        _clear_block(status)
    else:
        status.blocked_until = None
    status.conditions = set_condition(status.conditions, COND_RECOVERY, False, "RecoveryFailed", failure_reason, now)
    return status


def build_workflow_failed_status(
    rr: RemediationRequest,
    now: datetime,
    *,
    summary: str | None,
    was_execution_failure: bool,
    failure_count: int,
    next_allowed: datetime | None,
) -> RemediationRequestStatus:
    status = build_failed_status(
        rr,
        now,
        failure_phase=FAILURE_PHASE_WORKFLOW_EXECUTION,
        failure_reason="WorkflowExecution failed",
        message=summary or "Workflow failed with unknown reason",
    )
    status.requires_manual_review = was_execution_failure
    status.consecutive_failure_count = failure_count or None
    status.next_allowed_execution = next_allowed if failure_count else None
    status.conditions = set_condition(
        status.conditions, COND_WFE_COMPLETE, False, "WorkflowFailed", "The workflow failed", now
    )
    return status


# -- the WorkflowExecution ------------------------------------------------------------------------


def build_workflow_execution(rr: RemediationRequest, selected: SelectedWorkflow) -> dict[str, Any]:
    """The WFE `we-<rr>` RO creates when routing passes."""
    meta = rr.metadata
    spec: dict[str, Any] = {
        "remediationRequestRef": {
            "apiVersion": API_VERSION,
            "kind": "RemediationRequest",
            "name": meta.name,
            "namespace": meta.namespace,
            "uid": meta.uid,
        },
        "workflowRef": {
            "workflowId": selected.workflow_id,
            "version": selected.version,
            "containerImage": selected.container_image,
        },
        "targetResource": build_rr_target(rr),
    }
    if selected.container_digest:
        spec["workflowRef"]["containerDigest"] = selected.container_digest
    # Snapshotted with its command and deadline: a later catalog edit changes no run already made.
    spec["executionEngine"] = selected.engine.value
    if selected.command:
        spec["workflowRef"]["command"] = list(selected.command)
    if selected.active_deadline:
        spec["workflowRef"]["activeDeadline"] = selected.active_deadline
    if selected.parameters:
        spec["parameters"] = dict(selected.parameters)
    timeouts = rr.spec.timeout_config
    if timeouts and timeouts.executing and _override(timeouts.executing, timedelta(0)) > timedelta(0):
        spec["executionConfig"] = {"timeout": timeouts.executing}
    return {
        "apiVersion": API_VERSION,
        "kind": "WorkflowExecution",
        "metadata": {
            "name": build_child_name("we-", meta.name),
            "namespace": meta.namespace,
            "labels": {
                LABEL_REMEDIATION_REQUEST: build_label_value(meta.name),
                LABEL_COMPONENT: "workflow-execution",
            },
            "ownerReferences": [_owner(rr)],
            # The executor's cleanup finalizer from the start: it would add it as its first write anyway.
            "finalizers": [EXECUTION_FINALIZER],
        },
        "spec": spec,
    }


def _owner(rr: RemediationRequest) -> dict[str, Any]:
    return {
        "apiVersion": API_VERSION,
        "kind": "RemediationRequest",
        "name": rr.metadata.name,
        "uid": rr.metadata.uid,
        "controller": True,
        "blockOwnerDeletion": True,
    }


def build_awaiting_approval_status(
    rr: RemediationRequest, selected: SelectedWorkflow, message: str
) -> RemediationRequestStatus:
    status = _transition(rr, Phase.AWAITING_APPROVAL)
    status.selected_workflow = selected.to_status()
    status.message = message
    return status


def build_executing_status(
    rr: RemediationRequest, wfe_name: str, selected: SelectedWorkflow, now: datetime
) -> RemediationRequestStatus:
    status = _transition(rr, Phase.EXECUTING)
    status.executing_start_time = now
    status.workflow_execution_ref = ObjectReference(
        api_version=API_VERSION, kind="WorkflowExecution", name=wfe_name, namespace=rr.metadata.namespace
    )
    status.selected_workflow = SelectedWorkflowStatus(
        workflow_id=selected.workflow_id,
        version=selected.version,
        container_image=selected.container_image,
        container_digest=selected.container_digest,
        parameters=dict(selected.parameters) or None,
        source=selected.source,
    )
    status.conditions = set_condition(
        status.conditions,
        COND_WFE_READY,
        True,
        "WorkflowExecutionCreated",
        f"Created WorkflowExecution {wfe_name}",
        now,
    )
    return status


def build_creation_failed_status(rr: RemediationRequest, error: str, now: datetime) -> RemediationRequestStatus:
    """The WorkflowExecution could not be created: the request stays where it is and says why."""
    status = rr.status.model_copy(deep=True)
    status.conditions = set_condition(
        status.conditions,
        COND_WFE_READY,
        False,
        "WorkflowExecutionCreationFailed",
        f"Failed to create WorkflowExecution: {error}",
        now,
    )
    return status


# -- notifications --------------------------------------------------------------------------------


@dataclass(frozen=True)
class ManualReview:
    source: str
    reason: str
    message: str
    priority: str
    sub_reason: str = ""
    previous_execution: str = ""
    last_exit_code: int | None = None
    retry_count: int | None = None
    max_retries: int | None = None


def default_channels(priority: str) -> list[str]:
    """The channels of a notification when the caller passes none (as the settings' defaults)."""
    return ["slack", "email"] if priority in ("critical", "high") else ["slack"]


def build_manual_review_notification(
    rr: RemediationRequest, review: ManualReview, channels: list[str] | None = None
) -> dict[str, Any]:
    """`nr-manual-review-<rr>`: one per request, telling people what needs them and why."""
    if channels is None:
        channels = default_channels(review.priority)
    metadata = {"remediationRequest": rr.metadata.name, "source": review.source, "reason": review.reason}
    if review.sub_reason:
        metadata["subReason"] = review.sub_reason
    if review.previous_execution:
        metadata["previousExecution"] = review.previous_execution
    if review.last_exit_code:
        metadata["lastExitCode"] = str(review.last_exit_code)
    if review.retry_count is not None:
        metadata["retryCount"] = str(review.retry_count)
    if review.max_retries is not None:
        metadata["maxRetries"] = str(review.max_retries)
    target = build_rr_target(rr)
    body = (
        f"**Manual review required** for remediation `{rr.metadata.namespace}/{rr.metadata.name}`.\n\n"
        f"- Signal: {rr.spec.signal_name} ({rr.spec.severity.value})\n"
        f"- Target: `{target}`\n"
        f"- Source: {review.source}\n"
        f"- Reason: {review.reason}{f' ({review.sub_reason})' if review.sub_reason else ''}\n"
        + (f"- Previous execution: {review.previous_execution}\n" if review.previous_execution else "")
        + f"\n{review.message or 'No further details.'}\n"
    )
    return _notification(
        rr,
        build_child_name("nr-manual-review-", rr.metadata.name),
        "manual-review",
        review.priority,
        channels,
        f"Manual Review Required: {rr.spec.signal_name}"[:500],
        body,
        metadata,
        {
            "kubernaut.ai/notification-type": "manual-review",
            "kubernaut.ai/review-source": review.source,
            "kubernaut.ai/severity": rr.spec.severity.value,
        },
    )


def build_timeout_notification(
    rr: RemediationRequest, decision: TimeoutDecision, channels: list[str] | None = None
) -> dict[str, Any]:
    if decision.is_global:
        name = build_child_name("timeout-", rr.metadata.name)
    else:
        name = build_child_name(f"phase-timeout-{decision.phase.lower()}-", rr.metadata.name)
    priority = decision.priority
    if channels is None:
        channels = default_channels(priority)
    subject = f"Remediation timed out: {rr.spec.signal_name}"[:500]
    body = (
        f"Remediation `{rr.metadata.namespace}/{rr.metadata.name}` on `{build_rr_target(rr)}` timed out in phase "
        f"{decision.phase} after {format_go_duration(decision.timeout)}. Running workflows are not cancelled.\n"
    )
    metadata = {"remediationRequest": rr.metadata.name, "timeoutPhase": decision.phase}
    return _notification(
        rr,
        name,
        "escalation",
        priority,
        channels,
        subject,
        body,
        metadata,
        {"kubernaut.ai/notification-type": "escalation"},
    )


def build_approval_notification(
    rr: RemediationRequest, approval_name: str, workflow_id: str, reason: str, required_by: str, channels: list[str]
) -> dict[str, Any]:
    """`nr-approval-<rr>`: a person must approve or reject before the workflow runs."""
    namespace = rr.metadata.namespace
    body = (
        f"**Approval required** for remediation `{namespace}/{rr.metadata.name}`.\n\n"
        f"- Signal: {rr.spec.signal_name} ({rr.spec.severity.value})\n"
        f"- Target: `{build_rr_target(rr)}`\n"
        f"- Workflow: {workflow_id}\n"
        f"- Why: {reason}\n"
        f"- Decide by: {required_by}\n\n"
        f"`kubernaut approve {rr.metadata.name} -n {namespace}` or "
        f"`kubernaut reject {rr.metadata.name} -n {namespace} --reason TEXT`\n"
    )
    metadata = {
        "remediationRequest": rr.metadata.name,
        "approvalRequest": approval_name,
        "namespace": namespace,
        "workflowId": workflow_id,
    }
    return _notification(
        rr,
        build_child_name("nr-approval-", rr.metadata.name),
        "approval",
        build_approval_priority(rr),
        channels,
        f"Approval required: {rr.spec.signal_name} on {build_rr_target(rr)}"[:500],
        body,
        metadata,
        {"kubernaut.ai/notification-type": "approval"},
    )


def build_approval_priority(rr: RemediationRequest) -> str:
    """The priority of the request, by its signal's severity."""
    return {"critical": "critical", "warning": "high"}.get(rr.spec.severity.value, "medium")


def _notification(
    rr: RemediationRequest,
    name: str,
    type_: str,
    priority: str,
    channels: list[str],
    subject: str,
    body: str,
    metadata: dict[str, str],
    labels: dict[str, str],
) -> dict[str, Any]:
    return {
        "apiVersion": API_VERSION,
        "kind": "NotificationRequest",
        "metadata": {
            "name": name,
            "namespace": rr.metadata.namespace,
            "labels": {
                LABEL_REMEDIATION_REQUEST: build_label_value(rr.metadata.name),
                LABEL_COMPONENT: "remediation-orchestrator",
                **labels,
            },
            "ownerReferences": [_owner(rr)],
        },
        "spec": {
            "type": type_,
            "priority": priority,
            "subject": subject,
            "body": body,
            "channels": channels,
            "metadata": metadata,
        },
    }


def with_notification_ref(status: RemediationRequestStatus, notification: dict[str, Any]) -> RemediationRequestStatus:
    meta = notification["metadata"]
    refs = list(status.notification_request_refs or [])
    if not any(ref.name == meta["name"] for ref in refs):
        refs.append(
            ObjectReference(
                api_version=API_VERSION,
                kind="NotificationRequest",
                name=meta["name"],
                namespace=meta["namespace"],
                uid=meta.get("uid", ""),
            )
        )
    status = status.model_copy(deep=True)
    status.notification_request_refs = refs
    return status


_NOTIFICATION_STATUS = {
    NotificationPhase.PENDING: NotificationStatus.PENDING,
    NotificationPhase.SENDING: NotificationStatus.IN_PROGRESS,
    NotificationPhase.RETRYING: NotificationStatus.IN_PROGRESS,
    NotificationPhase.SENT: NotificationStatus.SENT,
    NotificationPhase.PARTIALLY_SENT: NotificationStatus.SENT,
    NotificationPhase.FAILED: NotificationStatus.FAILED,
}


def build_notification_mirror(
    rr: RemediationRequest, phase: NotificationPhase | None, deleted: bool, now: datetime
) -> RemediationRequestStatus:
    """RO mirrors the tracked notification's delivery into the request."""
    status = rr.status.model_copy(deep=True)
    if deleted:
        status.notification_status = NotificationStatus.CANCELLED
        status.conditions = set_condition(
            status.conditions, COND_NOTIFICATION, False, "UserCancelled", "The notification was deleted", now
        )
        return status
    mirrored = _NOTIFICATION_STATUS.get(phase) if phase else NotificationStatus.PENDING
    status.notification_status = mirrored
    if mirrored == NotificationStatus.SENT:
        status.conditions = set_condition(
            status.conditions, COND_NOTIFICATION, True, "DeliverySucceeded", f"Notification {phase}", now
        )
    elif mirrored == NotificationStatus.FAILED:
        status.conditions = set_condition(
            status.conditions, COND_NOTIFICATION, False, "DeliveryFailed", "Notification delivery failed", now
        )
    return status


# -- audit ----------------------------------------------------------------------------------------


def build_rr_event(
    rr: RemediationRequest,
    new_status: RemediationRequestStatus,
    event_type: str,
    outcome: str,
    data: dict[str, Any],
    now: datetime,
) -> AuditEvent:
    """An orchestrator event; its id includes the transition number, so a retried transition dedupes."""
    meta = rr.metadata
    transition = str(new_status.transition_count or 0)
    return AuditEvent(
        event_id=build_event_id(meta.uid, event_type, transition),
        event_type=event_type,
        event_category="orchestration",
        event_action=event_type.rsplit(".", 1)[-1],
        event_outcome=outcome,
        actor_type="service",
        actor_id=ORCHESTRATOR_ACTOR,
        resource_type="RemediationRequest",
        resource_id=meta.name,
        correlation_id=meta.uid,
        namespace=meta.namespace,
        event_time=now,
        event_data={"rr_name": meta.name, "namespace": meta.namespace, **data},
    )


def build_blocked_event_data(
    rr: RemediationRequest,
    decision: RoutingDecision,
    from_phase: Phase,
    to_phase: Phase,
    workflow_id: str,
    now: datetime,
) -> dict[str, Any]:
    data: dict[str, Any] = {
        "block_reason": decision.reason,
        "block_message": decision.message,
        "from_phase": from_phase.value,
        "to_phase": to_phase.value,
        "target_resource": build_rr_target(rr),
        "requeue_after_seconds": int(decision.requeue_after.total_seconds()) if decision.requeue_after else 0,
        "blocking_wfe": decision.blocking_workflow_execution,
        "duplicate_of": decision.duplicate_of,
    }
    if workflow_id:
        data["workflow_id"] = workflow_id
    if decision.blocked_until:
        data["blocked_until"] = format_rfc3339(decision.blocked_until)
    if decision.consecutive_failure_count:
        data["consecutive_failures"] = decision.consecutive_failure_count
    if decision.next_allowed_execution and decision.next_allowed_execution > now:
        data["backoff_seconds"] = int((decision.next_allowed_execution - now).total_seconds())
    return data


def duration_ms(rr: RemediationRequest, now: datetime) -> int:
    created = rr.metadata.creation_timestamp or rr.status.start_time or now
    return max(0, int((now - created).total_seconds() * 1000))
