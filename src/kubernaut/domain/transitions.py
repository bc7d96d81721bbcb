"""The orchestrator's passes as plans: what one reconcile of a RemediationRequest does, decided purely.

A plan per phase takes the request, a read-only `RoutingHistory` (what the informer caches hold
about its signal, target, execution and notification), `now` and the policies, and returns a
frozen `Transition`. The controller applies it in one fixed order: create the execution, record
the audit events, create the notification, write the status, count the metrics.
"""

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from datetime import datetime, timedelta
from enum import StrEnum
from typing import Any, Protocol

from kubernaut.api.audit import AuditEvent
from kubernaut.api.v1alpha1.notificationrequest import NotificationPhase
from kubernaut.api.v1alpha1.remediationapprovalrequest import ApprovalPhase
from kubernaut.api.v1alpha1.remediationrequest import (
    BlockReason,
    DryRunResult,
    Effectiveness,
    NotificationStatus,
    RemediationPhase,
    RemediationRequest,
    RemediationRequestStatus,
)
from kubernaut.api.v1alpha1.remediationworkflow import RemediationWorkflow
from kubernaut.api.v1alpha1.workflowexecution import WorkflowExecution, WorkflowExecutionPhase
from kubernaut.domain import effectiveness as eff
from kubernaut.domain import remediation as rem
from kubernaut.domain.approval import (
    FAILURE_PHASE_APPROVAL,
    ApprovalPolicy,
    ApprovalState,
    build_approval_name,
    build_approval_request,
    build_approval_status,
    decide_approval,
    decide_approval_required,
    describe_decision,
    describe_wait,
    is_approval_for,
)
from kubernaut.domain.dryrun import decide_dry_run
from kubernaut.domain.duration import format_rfc3339
from kubernaut.domain.gates import BREAKER_NAMESPACE, Gates, build_breaker_notification
from kubernaut.domain.routing import (
    BlockedAction,
    DecisionKind,
    LockHolder,
    RoutingDecision,
    RoutingPolicy,
    RoutingStage,
    build_rr_target,
    check_ineffective_chain,
    compute_consecutive_failures,
    compute_target_backoff,
    decide_blocked,
    decide_routing,
)
from kubernaut.domain.selection import SelectedWorkflow, SelectionFailure, select_workflow

Phase = RemediationPhase

CREATION_RETRY = timedelta(seconds=5)
"""When the API server refused the execution, or it vanished between a conflict and its read."""

AT_ONCE = timedelta(0)


# -- what a plan reads ------------------------------------------------------------------------------


@dataclass(frozen=True)
class TrackedNotification:
    """The notification a terminal request mirrors: whether it exists, and its raw delivery phase."""

    found: bool
    phase: str | None = None


class RoutingHistory(Protocol):
    """What the caches hold about one request's signal, target, execution and notification."""

    def same_fingerprint(self) -> Sequence[RemediationRequest]: ...

    def executions_on(self, workflow_id: str = "", lock: LockHolder | None = None) -> Sequence[WorkflowExecution]: ...

    def lock(self) -> LockHolder | None: ...

    def request(self, name: str) -> RemediationRequest | None:
        """Another request in the same namespace, None when it does not exist."""
        ...

    def execution(self, name: str) -> WorkflowExecution | None: ...

    def catalog(self) -> Sequence[RemediationWorkflow]: ...

    def notification(self, namespace: str, name: str) -> TrackedNotification | None:
        """None while it is not known whether it exists (absent before the cache has synced)."""
        ...

    def gates(self) -> Gates | None:
        """What the gates read (scope, cluster-wide executions, the breaker's reset); None: no gates."""
        ...

    def approval(self, name: str) -> Mapping[str, Any] | None:
        """The request's RemediationApprovalRequest (its body), None when it does not exist (yet)."""

    def metric_check(self) -> eff.MetricCheck | None:
        """The answer to this pass's `metric_query`, None when none was run."""
        ...


@dataclass(frozen=True)
class PlanPolicy:
    routing: RoutingPolicy
    timeouts: rem.TimeoutPolicy
    channels: Callable[[str], list[str]]
    """The notification channels of a priority."""
    approval: ApprovalPolicy = field(default_factory=ApprovalPolicy)
    dry_run: bool = False
    """Every request is a dry run (the global `dryRun` setting)."""
    effectiveness: eff.EffectivenessPolicy = field(default_factory=eff.EffectivenessPolicy)


class Reads(StrEnum):
    """What a pass must hold or read before it plans."""

    CACHES = "Caches"
    TARGET = "Target"  # one routing decision per target at a time, through the execution's creation
    EXECUTION = "Execution"  # the request's execution, from the API server when the cache lacks it
    METRICS = "Metrics"  # the answer to the workflow's verification query, when one is due


def reads_for(rr: RemediationRequest, now: datetime, timeouts: rem.TimeoutPolicy) -> Reads:
    phase = rr.status.overall_phase
    if phase is None or rr.is_terminal or rem.decide_timeout(rr, now, timeouts) is not None:
        return Reads.CACHES
    return {Phase.ANALYZING: Reads.TARGET, Phase.EXECUTING: Reads.EXECUTION, Phase.VERIFYING: Reads.METRICS}.get(
        phase, Reads.CACHES
    )


def metric_query(rr: RemediationRequest, history: RoutingHistory) -> str:
    """The PromQL query a Verifying pass needs answered before it plans ("" when none)."""
    return eff.pending_metric_query(rr, eff.find_verification(rr, history.catalog()))


def execution_name(rr: RemediationRequest) -> str:
    ref = rr.status.workflow_execution_ref
    return ref.name if ref else rem.build_child_name("we-", rr.metadata.name)


# -- what a plan returns ----------------------------------------------------------------------------


class Metric(StrEnum):
    PHASE_TRANSITIONS = "PhaseTransitions"
    BLOCKED = "Blocked"
    DUPLICATES_SKIPPED = "DuplicatesSkipped"
    BLOCKED_COOLDOWN_EXPIRED = "BlockedCooldownExpired"
    TIMEOUTS = "Timeouts"
    CHILD_CREATIONS = "ChildCreations"
    MANUAL_REVIEW = "ManualReview"
    TIME_TO_EXECUTION = "TimeToExecution"
    ASSESSMENTS = "Assessments"
    TIME_TO_RESOLUTION = "TimeToResolution"


@dataclass(frozen=True)
class Count:
    """One increment of a counter, or (with `value`) one observation of a histogram."""

    metric: Metric
    labels: tuple[tuple[str, str], ...] = ()
    value: float | None = None


def count(metric: Metric, **labels: str) -> Count:
    return Count(metric, tuple(labels.items()))


def observe(metric: Metric, value: float, **labels: str) -> Count:
    return Count(metric, tuple(labels.items()), value)


@dataclass(frozen=True)
class Child:
    """An object to create, and what to count once this pass has created it."""

    manifest: dict[str, Any]
    counts: tuple[Count, ...] = ()


@dataclass(frozen=True)
class ApprovalRecord:
    """The status to write on the request's RemediationApprovalRequest (a decision or its expiry)."""

    name: str
    status: dict[str, Any]


@dataclass(frozen=True)
class DryRunCheck:
    """A dry run's execution, for the API server to validate instead of creating it."""

    execution: dict[str, Any]
    workflow_id: str
    reason: str


@dataclass(frozen=True)
class Transition:
    status: RemediationRequestStatus | None = None  # None: nothing to write
    events: tuple[AuditEvent, ...] = ()
    execution: Child | None = None
    approval: Child | None = None  # the RemediationApprovalRequest to create
    approval_record: ApprovalRecord | None = None  # written before the request's status
    dry_run: DryRunCheck | None = None  # validated by the controller, which then plans its outcome
    notification: Child | None = None
    notices: tuple[Child, ...] = ()  # created by name, not referenced by the request (the breaker's)
    terminal: bool = False
    counts_before_write: tuple[Count, ...] = ()
    counts_after_write: tuple[Count, ...] = ()
    requeue: timedelta | None = None  # None: the next event or resync wakes it


IDLE = Transition()


def goes_on_at_once(transition: Transition) -> bool:
    """A transition that writes nothing but the status and asks to be planned again at once (a new
    request's start, Pending passing its routing): the same pass plans the next one from its status
    and writes once for both, so a request reaches its first wait in one status write."""
    return (
        transition.status is not None
        and transition.requeue == AT_ONCE
        and transition.execution is None
        and transition.approval is None
        and transition.approval_record is None
        and transition.dry_run is None
        and transition.notification is None
        and not transition.notices
        and not transition.terminal
    )


def advanced(rr: RemediationRequest, transition: Transition) -> RemediationRequest:
    """The request as the next plan of the same pass reads it: with the transition's status."""
    return rr.model_copy(update={"status": transition.status}) if transition.status is not None else rr


def carried_into(first: Transition, then: Transition) -> Transition:
    """`then`, planned from the status of a `first` that went on at once: the events and counts of
    both, and one status write (then's, or first's when then writes none)."""
    if first is IDLE:
        return then
    return replace(
        then,
        status=then.status if then.status is not None else first.status,
        events=(*first.events, *then.events),
        counts_before_write=(*first.counts_before_write, *then.counts_before_write),
        counts_after_write=(*first.counts_after_write, *then.counts_after_write),
    )


# -- building blocks ----------------------------------------------------------------------------------


def _phase_count(rr: RemediationRequest, from_phase: Phase, to_phase: Phase) -> Count:
    return count(
        Metric.PHASE_TRANSITIONS, from_phase=from_phase.value, to_phase=to_phase.value, namespace=rr.metadata.namespace
    )


def _moved(
    rr: RemediationRequest, status: RemediationRequestStatus, from_phase: Phase, now: datetime, **rest: Any
) -> Transition:
    """A transition within the lifecycle: phase.transitioned audit, the write, then its count."""
    to_phase = status.overall_phase or Phase.PENDING
    data = {"from_phase": from_phase.value, "to_phase": to_phase.value}
    event = rem.build_rr_event(rr, status, "orchestrator.phase.transitioned", "success", data, now)
    return Transition(
        status=status, events=(event,), counts_after_write=(_phase_count(rr, from_phase, to_phase),), **rest
    )


def _finished(
    rr: RemediationRequest,
    status: RemediationRequestStatus,
    from_phase: Phase,
    now: datetime,
    *,
    events: tuple[AuditEvent, ...] = (),
    **rest: Any,
) -> Transition:
    """A terminal transition: lifecycle.completed audit (after `events`), the write, then its count."""
    to_phase = status.overall_phase or Phase.FAILED
    success = to_phase == Phase.COMPLETED
    data: dict[str, Any] = {
        "outcome": status.outcome.value if success and status.outcome else to_phase.value,
        "duration_ms": rem.duration_ms(rr, now),
    }
    if not success:
        data["failure_phase"] = status.failure_phase or (status.timeout_phase and rem.FAILURE_PHASE_TIMEOUT) or ""
        data["failure_reason"] = status.failure_reason or status.message or to_phase.value
    completed = rem.build_rr_event(
        rr, status, "orchestrator.lifecycle.completed", "success" if success else "failure", data, now
    )
    return Transition(
        status=status,
        events=(*events, completed),
        terminal=True,
        counts_after_write=(_phase_count(rr, from_phase, to_phase),),
        **rest,
    )


def _review_notice(rr: RemediationRequest, review: rem.ManualReview, policy: PlanPolicy) -> Child:
    manifest = rem.build_manual_review_notification(rr, review, policy.channels(review.priority))
    counted = count(
        Metric.MANUAL_REVIEW,
        source=review.source,
        reason=review.reason,
        sub_reason="none",
        namespace=rr.metadata.namespace,
    )
    return Child(manifest, (counted,))


def _failed_for_review(
    rr: RemediationRequest,
    status: RemediationRequestStatus,
    review: rem.ManualReview,
    from_phase: Phase,
    now: datetime,
    policy: PlanPolicy,
    events: tuple[AuditEvent, ...] = (),
) -> Transition:
    """The one path of a request that ends needing a person: notify them, reference it, finish."""
    return _finished(rr, status, from_phase, now, events=events, notification=_review_notice(rr, review, policy))


def with_notification(status: RemediationRequestStatus, manifest: dict[str, Any], uid: str) -> RemediationRequestStatus:
    """The status referencing the notification this pass created or found (uid "" when unknown)."""
    metadata = {**manifest["metadata"], "uid": uid} if uid else manifest["metadata"]
    status = rem.with_notification_ref(status, {**manifest, "metadata": metadata})
    status.notification_status = status.notification_status or NotificationStatus.PENDING
    return status


# -- the plans, one per phase -----------------------------------------------------------------------


def plan_new(rr: RemediationRequest, now: datetime) -> Transition:
    status = rem.build_initial_status(rr, now)
    event = rem.build_rr_event(rr, status, "orchestrator.lifecycle.started", "pending", {}, now)
    return Transition(status=status, events=(event,), requeue=AT_ONCE)


_NOTIFICATION_PHASES = {phase.value: phase for phase in NotificationPhase}


def plan_terminal(rr: RemediationRequest, history: RoutingHistory, now: datetime) -> Transition:
    """A finished request mirrors the delivery of its newest notification."""
    refs = rr.status.notification_request_refs or []
    if not refs:
        return IDLE
    ref = refs[-1]
    tracked = history.notification(ref.namespace or rr.metadata.namespace, ref.name)
    if tracked is None:
        return IDLE
    phase = _NOTIFICATION_PHASES.get(tracked.phase or "")  # an unknown phase reads as none yet
    return Transition(status=rem.build_notification_mirror(rr, phase, not tracked.found, now))


def plan_timeout(
    rr: RemediationRequest, decision: rem.TimeoutDecision, now: datetime, policy: PlanPolicy
) -> Transition:
    status = rem.build_timed_out_status(rr, decision, now)
    notice = Child(rem.build_timeout_notification(rr, decision, policy.channels(decision.priority)))
    return _finished(
        rr,
        status,
        rr.status.overall_phase or Phase.PENDING,
        now,
        notification=notice,
        counts_before_write=(count(Metric.TIMEOUTS, phase=decision.phase, namespace=rr.metadata.namespace),),
    )


def _selected(rr: RemediationRequest, history: RoutingHistory) -> SelectedWorkflow | SelectionFailure:
    return select_workflow(rr, history.catalog())


def route(
    rr: RemediationRequest,
    history: RoutingHistory,
    *,
    workflow_id: str,
    stage: RoutingStage,
    now: datetime,
    policy: RoutingPolicy,
) -> RoutingDecision:
    """The routing decision from the part of the history that can still decide it."""
    lock = history.lock()
    return decide_routing(
        rr,
        workflow_id=workflow_id,
        stage=stage,
        same_fingerprint=history.same_fingerprint(),
        same_target=history.executions_on(workflow_id, lock),
        lock=lock,
        now=now,
        config=policy,
        gates=history.gates(),
    )


def plan_pending(rr: RemediationRequest, history: RoutingHistory, now: datetime, policy: PlanPolicy) -> Transition:
    # The workflow is already known here (workflowRef or catalog), so the recent-remediation check
    # looks at that workflow only: another workflow's success on the target must not hold it back.
    selected = _selected(rr, history)
    workflow_id = "" if isinstance(selected, SelectionFailure) else selected.workflow_id
    decision = route(rr, history, workflow_id=workflow_id, stage=RoutingStage.PENDING, now=now, policy=policy.routing)
    if decision.kind == DecisionKind.BLOCK:
        return _blocked(rr, decision, Phase.PENDING, workflow_id, history, now, policy)
    return _moved(rr, rem.build_analyzing_status(rr, now), Phase.PENDING, now, requeue=AT_ONCE)


def plan_analyzing(rr: RemediationRequest, history: RoutingHistory, now: datetime, policy: PlanPolicy) -> Transition:
    """Select, route and, when routing passes, create the execution (the caller holds the target)."""
    selected = _selected(rr, history)
    if isinstance(selected, SelectionFailure):
        status = rem.build_failed_status(
            rr, now, failure_phase=rem.FAILURE_PHASE_ANALYSIS, failure_reason=selected.message, message=selected.message
        )
        status.requires_manual_review = True
        review = rem.ManualReview(
            source="WorkflowSelection", reason="WorkflowNotFound", message=selected.message, priority="high"
        )
        return _failed_for_review(rr, status, review, Phase.ANALYZING, now, policy)
    workflow_id = selected.workflow_id
    decision = route(rr, history, workflow_id=workflow_id, stage=RoutingStage.ANALYZING, now=now, policy=policy.routing)
    if decision.kind == DecisionKind.BLOCK:
        return _blocked(rr, decision, Phase.ANALYZING, workflow_id, history, now, policy)
    if decision.kind == DecisionKind.FAIL:
        return _previous_execution_failed(rr, decision, workflow_id, now, policy)
    reason = decide_approval_required(rr, selected, policy.approval)
    if reason:
        approval = _own_approval(rr, history)
        if approval is None or decide_approval(approval, now).phase != ApprovalPhase.APPROVED:
            return _awaiting_approval(rr, selected, reason, now, policy)
    dry_run = decide_dry_run(rr, selected, policy.dry_run)
    if dry_run:
        return Transition(
            dry_run=DryRunCheck(rem.build_workflow_execution(rr, selected), selected.workflow_id, dry_run)
        )
    return _execute(rr, selected, now)


def plan_dry_run_validated(
    rr: RemediationRequest, check: DryRunCheck, lock_name: str, refusal: str | None, now: datetime
) -> Transition:
    """A dry run ends Completed (outcome DryRun) with what the API server said about its execution."""
    result = DryRunResult(
        workflow_id=check.workflow_id,
        execution_name=check.execution["metadata"]["name"],
        lock_name=lock_name,
        validated=refusal is None,
        message=refusal if refusal is not None else f"would run ({check.reason})",
    )
    return _finished(rr, rem.build_dry_run_status(rr, now, result), Phase.ANALYZING, now)


def _awaiting_approval(
    rr: RemediationRequest, selected: SelectedWorkflow, reason: str, now: datetime, policy: PlanPolicy
) -> Transition:
    """Routing passed but a person must say yes: ask (the approval request and its notification)."""
    manifest = build_approval_request(rr, selected, reason, now, policy.approval)
    spec = manifest["spec"]
    message = describe_wait(reason, rr.metadata.name, rr.metadata.namespace, policy.approval)
    status = rem.build_awaiting_approval_status(rr, selected, message)
    channels = policy.channels(rem.build_approval_priority(rr))
    notice = rem.build_approval_notification(
        rr, manifest["metadata"]["name"], selected.workflow_id, reason, spec["requiredBy"], channels
    )
    return _moved(
        rr,
        status,
        Phase.ANALYZING,
        now,
        approval=Child(manifest),
        notification=Child(notice),
        requeue=policy.approval.timeout,  # the approval request's events wake it sooner
    )


def plan_awaiting_approval(
    rr: RemediationRequest, history: RoutingHistory, now: datetime, policy: PlanPolicy
) -> Transition:
    """Wait for the decision; approved runs routing again (the world may have changed while waiting),
    rejected or expired fails the request."""
    name = build_approval_name(rr.metadata.name)
    body = _own_approval(rr, history)
    if body is None:  # created by the pass that moved here; the cache has not seen it yet
        return Transition(requeue=CREATION_RETRY)
    state = decide_approval(body, now)
    if not state.decided:
        return Transition(requeue=state.requeue_after)
    record = None if state.recorded else ApprovalRecord(name, build_approval_status(state))
    if state.phase == ApprovalPhase.APPROVED:
        status = rem.build_analyzing_status(rr, now)
        moved = _moved(rr, status, Phase.AWAITING_APPROVAL, now, requeue=AT_ONCE, approval_record=record)
        return replace(moved, events=(_decision_event(rr, status, name, state, now), *moved.events))
    status = rem.build_failed_status(
        rr, now, failure_phase=FAILURE_PHASE_APPROVAL, failure_reason=describe_decision(state)
    )
    event = _decision_event(rr, status, name, state, now)
    return _finished(rr, status, Phase.AWAITING_APPROVAL, now, events=(event,), approval_record=record)


def _own_approval(rr: RemediationRequest, history: RoutingHistory) -> Mapping[str, Any] | None:
    body = history.approval(build_approval_name(rr.metadata.name))
    return body if body is not None and is_approval_for(body, rr) else None


def _decision_event(
    rr: RemediationRequest, status: RemediationRequestStatus, name: str, state: ApprovalState, now: datetime
) -> AuditEvent:
    """The one audit event of a decision (or expiry), naming who made it."""
    data = {
        "approval_request": name,
        "decision": state.phase.value,
        "decided_by": state.decided_by,
        "decided_via": state.decided_via.value if state.decided_via else "",
        "reason": state.message,
    }
    outcome = "success" if state.phase == ApprovalPhase.APPROVED else "failure"
    event = rem.build_rr_event(rr, status, "orchestrator.approval.decided", outcome, data, now)
    if state.phase == ApprovalPhase.EXPIRED:
        return event
    return event.model_copy(update={"actor_type": "user", "actor_id": state.decided_by})


def _execute(rr: RemediationRequest, selected: SelectedWorkflow, now: datetime) -> Transition:
    manifest = rem.build_workflow_execution(rr, selected)
    namespace = rr.metadata.namespace
    created = [count(Metric.CHILD_CREATIONS, child_type="WorkflowExecution", namespace=namespace)]
    if rr.metadata.creation_timestamp is not None:
        waited = max(0.0, (now - rr.metadata.creation_timestamp).total_seconds())
        created.append(observe(Metric.TIME_TO_EXECUTION, waited, namespace=namespace))
    status = rem.build_executing_status(rr, manifest["metadata"]["name"], selected, now)
    # requeue None: the execution's events wake it; the resync period bounds the wait
    return _moved(rr, status, Phase.ANALYZING, now, execution=Child(manifest, tuple(created)))


def plan_creation_refused(rr: RemediationRequest, error: str, now: datetime) -> Transition:
    """The API server will not create the execution: the request stays in Analyzing (its timeout
    bounds the wait) and says why."""
    return Transition(status=rem.build_creation_failed_status(rr, error, now), requeue=CREATION_RETRY)


def _blocked(
    rr: RemediationRequest,
    decision: RoutingDecision,
    from_phase: Phase,
    workflow_id: str,
    history: RoutingHistory,
    now: datetime,
    policy: PlanPolicy,
) -> Transition:
    status = rem.build_blocked_status(rr, decision, from_phase)
    data = rem.build_blocked_event_data(rr, decision, from_phase, Phase.BLOCKED, workflow_id, now)
    namespace = rr.metadata.namespace
    counts = [count(Metric.BLOCKED, namespace=namespace, reason=decision.reason)]
    if decision.duplicate_of:
        counts.append(count(Metric.DUPLICATES_SKIPPED, skip_reason="DuplicateInProgress", namespace=namespace))
    counts.append(_phase_count(rr, from_phase, Phase.BLOCKED))
    return Transition(
        status=status,
        events=(rem.build_rr_event(rr, status, "orchestrator.routing.blocked", "pending", data, now),),
        notification=_exhausted_retries_notice(rr, decision, history, policy)
        or _ineffective_chain_notice(rr, decision, history, policy),
        notices=_breaker_notice(decision, policy),
        counts_after_write=tuple(counts),
        requeue=decision.requeue_after,
    )


def _breaker_notice(decision: RoutingDecision, policy: PlanPolicy) -> tuple[Child, ...]:
    """Every CircuitOpen block names its opening's one notification; creating it again finds it."""
    if decision.reason != BlockReason.CIRCUIT_OPEN or decision.breaker is None:
        return ()
    return (Child(build_breaker_notification(decision.breaker, BREAKER_NAMESPACE, policy.channels("critical"))),)


def _exhausted_retries_notice(
    rr: RemediationRequest, decision: RoutingDecision, history: RoutingHistory, policy: PlanPolicy
) -> Child | None:
    """One manual review per failure streak, on its first ConsecutiveFailures block."""
    if decision.reason != BlockReason.CONSECUTIVE_FAILURES:
        return None
    same_fingerprint = history.same_fingerprint()
    if not rem.decide_exhausted_retries_notice(rr, same_fingerprint):
        return None
    review = rem.ManualReview(
        source="RemediationOrchestrator",
        reason="ExhaustedRetries",
        message=decision.message,
        priority="critical",
        # the block decision carries no count; the streak it was decided on does
        retry_count=compute_consecutive_failures(rr, same_fingerprint)[0],
        max_retries=policy.routing.consecutive_failure_threshold,
    )
    return _review_notice(rr, review, policy)


def _ineffective_chain_notice(
    rr: RemediationRequest, decision: RoutingDecision, history: RoutingHistory, policy: PlanPolicy
) -> Child | None:
    """One manual review per IneffectiveChain block."""
    if decision.reason != BlockReason.INEFFECTIVE_CHAIN:
        return None
    if not eff.decide_chain_notice(rr, history.same_fingerprint()):
        return None
    review = rem.ManualReview(
        source="RemediationOrchestrator", reason="IneffectiveChain", message=decision.message, priority="high"
    )
    return _review_notice(rr, review, policy)


def _previous_execution_failed(
    rr: RemediationRequest, decision: RoutingDecision, workflow_id: str, now: datetime, policy: PlanPolicy
) -> Transition:
    status = rem.build_previous_execution_failed_status(rr, decision, now)
    data = rem.build_blocked_event_data(rr, decision, Phase.ANALYZING, Phase.FAILED, workflow_id, now)
    blocked = rem.build_rr_event(rr, status, "orchestrator.routing.blocked", "pending", data, now)
    review = rem.ManualReview(
        source="WorkflowExecution",
        reason="PreviousExecutionFailed",
        message=decision.message,
        priority="critical",
        previous_execution=decision.blocking_workflow_execution,
    )
    return _failed_for_review(rr, status, review, Phase.ANALYZING, now, policy, events=(blocked,))


def _deleted_unfinished(wfe: WorkflowExecution) -> bool:
    """Deleted before it finished (it may linger while the executor's finalizer releases its lock)."""
    return wfe.metadata.deletion_timestamp is not None and not wfe.is_terminal


def plan_executing(rr: RemediationRequest, history: RoutingHistory, now: datetime, policy: PlanPolicy) -> Transition:
    wfe = history.execution(execution_name(rr))
    if wfe is None or _deleted_unfinished(wfe):  # gone as far as the request is concerned
        status = rem.build_failed_status(
            rr, now, failure_phase=rem.FAILURE_PHASE_WORKFLOW_EXECUTION, failure_reason="WorkflowExecution not found"
        )
        return _finished(rr, status, Phase.EXECUTING, now)
    if wfe.phase == WorkflowExecutionPhase.COMPLETED:
        if eff.is_assessed(rr):
            return _moved(rr, rem.build_verifying_status(rr, now), Phase.EXECUTING, now, requeue=AT_ONCE)
        return _assessed(rr, eff.build_not_assessed(now), Phase.EXECUTING, now)
    if wfe.phase != WorkflowExecutionPhase.FAILED:
        return IDLE  # the execution's events wake it; the resync period bounds the wait
    return _execution_failed(rr, wfe, history, now, policy)


def _execution_failed(
    rr: RemediationRequest, wfe: WorkflowExecution, history: RoutingHistory, now: datetime, policy: PlanPolicy
) -> Transition:
    details = wfe.status.failure_details
    was_execution = bool(details and details.was_execution_failure)
    target = build_rr_target(rr)
    failures, next_allowed = compute_target_backoff(history.executions_on(), target, now, policy.routing)
    status = rem.build_workflow_failed_status(
        rr,
        now,
        summary=details.natural_language_summary if details else None,
        was_execution_failure=was_execution,
        failure_count=failures,
        next_allowed=next_allowed,
    )
    if not (was_execution and details is not None):
        return _finished(rr, status, Phase.EXECUTING, now)
    review = rem.ManualReview(
        source="WorkflowExecution",
        reason="ExecutionFailure",
        message=details.message,
        priority="critical",
        previous_execution=wfe.metadata.name,
        last_exit_code=details.exit_code,
    )
    return _failed_for_review(rr, status, review, Phase.EXECUTING, now, policy)


def plan_verifying(rr: RemediationRequest, history: RoutingHistory, now: datetime, policy: PlanPolicy) -> Transition:
    """Wait for the alert to resolve; the gateway's writes on the request wake it, the window's end
    is a scheduled requeue."""
    verification = eff.find_verification(rr, history.catalog())
    decision = eff.decide_verifying(
        rr,
        window=eff.verification_window(verification, policy.effectiveness),
        promql=(verification.promql or "") if verification else "",
        metric=history.metric_check(),
        now=now,
    )
    if decision.effectiveness is None:
        return Transition(requeue=decision.requeue_after)
    return _assessed(rr, decision.effectiveness, Phase.VERIFYING, now)


def _assessed(rr: RemediationRequest, effectiveness: Effectiveness, from_phase: Phase, now: datetime) -> Transition:
    """Completed with its assessment: one effectiveness.assessed audit event, and its metrics."""
    status = rem.build_completed_status(rr, now, effectiveness=effectiveness)
    selected = rr.status.selected_workflow
    data: dict[str, Any] = {
        "assessment": effectiveness.assessment.value,
        "message": effectiveness.message or "",
        "workflow_id": selected.workflow_id if selected else "",
    }
    if effectiveness.resolved_at is not None:
        data["resolved_at"] = format_rfc3339(effectiveness.resolved_at)
    event = rem.build_rr_event(rr, status, "orchestrator.effectiveness.assessed", "success", data, now)
    namespace = rr.metadata.namespace
    counts = [count(Metric.ASSESSMENTS, assessment=effectiveness.assessment.value, namespace=namespace)]
    started = rr.spec.firing_time or rr.metadata.creation_timestamp
    if effectiveness.resolved_at is not None and started is not None:
        waited = max(0.0, (effectiveness.resolved_at - started).total_seconds())
        counts.append(observe(Metric.TIME_TO_RESOLUTION, waited, namespace=namespace))
    return _finished(rr, status, from_phase, now, events=(event,), counts_before_write=tuple(counts))


def plan_blocked(rr: RemediationRequest, history: RoutingHistory, now: datetime, policy: PlanPolicy) -> Transition:
    original: RemediationRequest | None = None
    original_exists = True
    if rr.status.block_reason == BlockReason.DUPLICATE_IN_PROGRESS and rr.status.duplicate_of:
        original = history.request(rr.status.duplicate_of)
        original_exists = original is not None
    chain: RoutingDecision | None = None
    if rr.status.block_reason == BlockReason.INEFFECTIVE_CHAIN:
        selected = _selected(rr, history)
        workflow_id = "" if isinstance(selected, SelectionFailure) else selected.workflow_id
        chain = check_ineffective_chain(rr, workflow_id, history.same_fingerprint(), now, policy.routing)
    lock = history.lock()
    decision = decide_blocked(
        rr,
        original=original,
        original_exists=original_exists,
        same_target=history.executions_on(lock=lock),
        lock=lock,
        now=now,
        ineffective_chain=chain,
        gates=history.gates(),
    )
    match decision.action:
        case BlockedAction.RESUME:
            return _moved(rr, rem.build_resumed_status(rr), Phase.BLOCKED, now, requeue=AT_ONCE)
        case BlockedAction.COMPLETE:
            # The original's outcome: Ineffective, or DryRun (it changed nothing; neither did its duplicate).
            outcome = original.status.outcome if original is not None else None
            status = rem.build_completed_status(rr, now, from_duplicate=True, outcome=outcome)
            return _finished(rr, status, Phase.BLOCKED, now)
        case BlockedAction.FAIL:
            status = rem.build_failed_status(
                rr, now, failure_phase=decision.failure_phase, failure_reason=decision.failure_reason
            )
            expired = decision.failure_phase == rem.FAILURE_PHASE_BLOCKED
            counts = (count(Metric.BLOCKED_COOLDOWN_EXPIRED),) if expired else ()
            return _finished(rr, status, Phase.BLOCKED, now, counts_before_write=counts)
    return Transition(requeue=decision.requeue_after)  # Stay


_PLANS: dict[Phase, Callable[[RemediationRequest, RoutingHistory, datetime, PlanPolicy], Transition]] = {
    Phase.PENDING: plan_pending,
    Phase.ANALYZING: plan_analyzing,
    Phase.EXECUTING: plan_executing,
    Phase.VERIFYING: plan_verifying,
    Phase.BLOCKED: plan_blocked,
    Phase.AWAITING_APPROVAL: plan_awaiting_approval,
}


def plan(rr: RemediationRequest, history: RoutingHistory, now: datetime, policy: PlanPolicy) -> Transition:
    """The pass for rr now: start, mirror a finished one's notification, time out, or its phase's plan."""
    phase = rr.status.overall_phase
    if phase is None:
        return plan_new(rr, now)
    if rr.is_terminal:
        return plan_terminal(rr, history, now)
    timeout = rem.decide_timeout(rr, now, policy.timeouts)
    if timeout is not None:
        return plan_timeout(rr, timeout, now, policy)
    planner = _PLANS.get(phase)
    # Processing is not used by this orchestrator
    return planner(rr, history, now, policy) if planner else IDLE
