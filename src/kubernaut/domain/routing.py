"""Routing: may a RemediationRequest get a WorkflowExecution now, and when does a block clear.

Pure functions of the request, the listed requests and executions, the lock holder, `now` and
the routing policy. Checks run in a fixed order and the first one that applies decides:

1. UnmanagedResource     the target's namespace (a cluster-scoped target itself) has not opted in
                         with kubernaut.ai/managed=true (clears on the label; fails after a timeout)
2. ConsecutiveFailures   the signal's workflows failed `threshold` times in a row (time-based)
3. DuplicateInProgress   an older request for the same signal is still active (event-based)
4. ResourceBusy          another execution is active on the target or holds its lock (event-based)
5. RecentlyRemediated    the same workflow completed on the target a moment ago (time-based)
6. ExponentialBackoff    the target failed before executing; wait before retrying (time-based)
7. IneffectiveChain      the workflow "succeeded" on the signal `threshold` times in a row without the
   alert resolving (time-based; a person clears it sooner with `kubernaut clear-block`)
8. RateLimited           too many executions running or started in the last hour (until a slot frees)
9. CircuitOpen           too many execution failures cluster-wide; open until a person resets it
10. PreviousExecutionFailed  a run failed mid-execution; a person must look first (permanent,
   only right before an execution is created)

The gates (1, 8, 9) are computed in `domain.gates`.
"""

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from enum import StrEnum

from kubernaut.api.v1alpha1 import RemediationRequest, WorkflowExecution
from kubernaut.api.v1alpha1.remediationrequest import (
    TERMINAL_PHASES,
    Assessment,
    BlockReason,
    RemediationPhase,
    SkipReason,
)
from kubernaut.api.v1alpha1.workflowexecution import FailureReason, WorkflowExecutionPhase
from kubernaut.domain.backoff import build_deterministic_jitter, compute_backoff
from kubernaut.domain.dryrun import is_dry_run_outcome
from kubernaut.domain.duration import format_rfc3339
from kubernaut.domain.execution import ANNOTATION_CLEAR_BLOCK
from kubernaut.domain.gates import BreakerState, Gates, check_breaker, check_rate_limits, check_scope
from kubernaut.domain.target import build_target_string

EVENT_BASED_REQUEUE = timedelta(seconds=30)
"""Safety-net re-check of event-based blocks; the events that clear them wake the request sooner."""

FAILURE_PHASE_WORKFLOW_EXECUTION = "workflow_execution"
FAILURE_PHASE_BLOCKED = "blocked"
FAILURE_PHASE_DEDUPLICATED = "deduplicated"

TIME_BASED_REASONS = frozenset(
    {
        BlockReason.CONSECUTIVE_FAILURES,
        BlockReason.RECENTLY_REMEDIATED,
        BlockReason.EXPONENTIAL_BACKOFF,
        BlockReason.INEFFECTIVE_CHAIN,
        BlockReason.UNMANAGED_RESOURCE,
        BlockReason.RATE_LIMITED,
    }
)


@dataclass(frozen=True)
class RoutingPolicy:
    """The thresholds and cooldowns routing applies (built from the settings' `routing` section)."""

    consecutive_failure_threshold: int = 3
    consecutive_failure_cooldown: timedelta = timedelta(hours=1)
    recently_remediated_cooldown: timedelta = timedelta(minutes=5)
    backoff_base: timedelta = timedelta(minutes=1)
    backoff_max: timedelta = timedelta(minutes=10)
    backoff_jitter_percent: int = 10
    ineffective_chain_threshold: int = 3
    ineffective_chain_cooldown: timedelta = timedelta(hours=4)


_TERMINAL_WFE = (WorkflowExecutionPhase.COMPLETED, WorkflowExecutionPhase.FAILED)
_LATEST = datetime.max.replace(tzinfo=UTC)
_EARLIEST = datetime.min.replace(tzinfo=UTC)


class RoutingStage(StrEnum):
    PENDING = "Pending"
    ANALYZING = "Analyzing"


@dataclass(frozen=True)
class LockHolder:
    """The PipelineRun that locks the target exists; who it belongs to, from its labels ("" when absent)."""

    pipeline_run: str
    workflow_execution: str
    namespace: str


class DecisionKind(StrEnum):
    PROCEED = "Proceed"
    BLOCK = "Block"
    FAIL = "Fail"


@dataclass(frozen=True)
class RoutingDecision:
    kind: DecisionKind
    reason: str = ""
    message: str = ""
    blocked_until: datetime | None = None
    blocking_workflow_execution: str = ""
    duplicate_of: str = ""
    requeue_after: timedelta | None = None
    consecutive_failure_count: int = 0
    next_allowed_execution: datetime | None = None
    breaker: BreakerState | None = None  # CircuitOpen: the opening it was decided on


PROCEED = RoutingDecision(kind=DecisionKind.PROCEED)


def is_time_based(reason: str) -> bool:
    """Whether a block of this reason carries `blockedUntil`."""
    return reason in TIME_BASED_REASONS


def build_rr_target(rr: RemediationRequest) -> str:
    target = rr.spec.target_resource
    return build_target_string(target.kind, target.name, target.namespace or "")


def _utc(moment: datetime) -> datetime:
    return moment if moment.tzinfo is not None else moment.replace(tzinfo=UTC)


def _created(obj: RemediationRequest | WorkflowExecution, missing: datetime) -> datetime:
    created = obj.metadata.creation_timestamp
    return _utc(created) if created is not None else missing


def _order_key(rr: RemediationRequest) -> tuple[datetime, str, str, str]:
    """A total order of requests: oldest first; same instant broken by name (then namespace, uid).

    A request not yet stored (no creationTimestamp) sorts as the newest.
    """
    meta = rr.metadata
    return (_created(rr, _LATEST), meta.name, meta.namespace, meta.uid)


def _same_object(a: RemediationRequest, b: RemediationRequest) -> bool:
    if a.metadata.uid and b.metadata.uid:
        return a.metadata.uid == b.metadata.uid
    return a.metadata.namespace == b.metadata.namespace and a.metadata.name == b.metadata.name


def _owned_by(wfe: WorkflowExecution, rr: RemediationRequest) -> bool:
    uid = rr.metadata.uid
    return bool(uid) and any(ref.controller and ref.uid == uid for ref in wfe.metadata.owner_references)


def _completion(wfe: WorkflowExecution) -> datetime | None:
    completed = wfe.status.completion_time
    return _utc(completed) if completed is not None else None


def _on_target(same_target: Iterable[WorkflowExecution], target: str) -> list[WorkflowExecution]:
    return [wfe for wfe in same_target if wfe.spec.target_resource == target]


def _wfe_order_key(wfe: WorkflowExecution) -> tuple[datetime, str, str]:
    return (_created(wfe, _LATEST), wfe.metadata.namespace, wfe.metadata.name)


def _is_execution_failure(wfe: WorkflowExecution) -> bool:
    details = wfe.status.failure_details
    return details is not None and details.was_execution_failure is True


def _block_until(
    reason: BlockReason,
    message: str,
    until: datetime,
    now: datetime,
    *,
    consecutive_failure_count: int = 0,
    next_allowed_execution: datetime | None = None,
) -> RoutingDecision:
    """A time-based block: it ends at `until`, when the request is looked at again."""
    return RoutingDecision(
        kind=DecisionKind.BLOCK,
        reason=reason.value,
        message=message,
        blocked_until=until,
        requeue_after=until - now,
        consecutive_failure_count=consecutive_failure_count,
        next_allowed_execution=next_allowed_execution,
    )


# --- check 1: ConsecutiveFailures -------------------------------------------------------------


def _rr_completion(rr: RemediationRequest) -> datetime | None:
    if rr.status.completed_at is not None:
        return _utc(rr.status.completed_at)
    if rr.metadata.creation_timestamp is not None:
        return _utc(rr.metadata.creation_timestamp)
    return None


def compute_consecutive_failures(
    rr: RemediationRequest, same_fingerprint: Sequence[RemediationRequest]
) -> tuple[int, datetime | None]:
    """(count, completion of the newest counted failure) of workflow failures since the last success."""
    fingerprint = rr.spec.signal_fingerprint
    history = sorted(
        (
            other
            for other in same_fingerprint
            if other.spec.signal_fingerprint == fingerprint
            and not _same_object(other, rr)
            and not is_dry_run_outcome(other)  # a dry run changed nothing: it ends no streak
        ),
        key=_order_key,
        reverse=True,
    )
    count = 0
    newest: datetime | None = None
    for other in history:
        phase = other.status.overall_phase
        if phase == RemediationPhase.COMPLETED:
            break
        if phase == RemediationPhase.FAILED and other.status.failure_phase == FAILURE_PHASE_WORKFLOW_EXECUTION:
            if count == 0:
                newest = _rr_completion(other)
            count += 1
    return count, newest


def _check_consecutive_failures(
    rr: RemediationRequest, same_fingerprint: Sequence[RemediationRequest], now: datetime, config: RoutingPolicy
) -> RoutingDecision | None:
    count, newest = compute_consecutive_failures(rr, same_fingerprint)
    if count < config.consecutive_failure_threshold or newest is None:
        return None
    until = newest + config.consecutive_failure_cooldown
    if not now < until:
        return None
    message = f"{count} consecutive failures. Cooldown expires: {format_rfc3339(until)}"
    return _block_until(BlockReason.CONSECUTIVE_FAILURES, message, until, now)


# --- check 2: DuplicateInProgress -------------------------------------------------------------


def _find_original(rr: RemediationRequest, same_fingerprint: Sequence[RemediationRequest]) -> RemediationRequest | None:
    """The oldest active request for the same signal that is older than rr (ties by name)."""
    fingerprint = rr.spec.signal_fingerprint
    own_key = _order_key(rr)
    older = [
        other
        for other in same_fingerprint
        if other.spec.signal_fingerprint == fingerprint
        and not _same_object(other, rr)
        and other.status.overall_phase not in TERMINAL_PHASES
        and _order_key(other) < own_key
    ]
    return min(older, key=_order_key) if older else None


def _check_duplicate(rr: RemediationRequest, same_fingerprint: Sequence[RemediationRequest]) -> RoutingDecision | None:
    original = _find_original(rr, same_fingerprint)
    if original is None:
        return None
    name = original.metadata.name
    other_ns = original.metadata.namespace
    where = f" in namespace {other_ns}" if other_ns != rr.metadata.namespace else ""
    phase = original.status.overall_phase or RemediationPhase.PENDING
    return RoutingDecision(
        kind=DecisionKind.BLOCK,
        reason=BlockReason.DUPLICATE_IN_PROGRESS.value,
        message=f"Duplicate of active remediation {name}{where} (phase {phase.value}); "
        "this request takes its outcome when it ends",
        duplicate_of=name,
        requeue_after=EVENT_BASED_REQUEUE,
    )


# --- check 3: ResourceBusy ----------------------------------------------------------------------


def _active_other(rr: RemediationRequest, on_target: Sequence[WorkflowExecution]) -> WorkflowExecution | None:
    active = [wfe for wfe in on_target if wfe.phase not in _TERMINAL_WFE and not _owned_by(wfe, rr)]
    return min(active, key=_wfe_order_key) if active else None


def _lock_is_own(rr: RemediationRequest, lock: LockHolder, on_target: Sequence[WorkflowExecution]) -> bool:
    if lock.workflow_execution == f"we-{rr.metadata.name}" and lock.namespace == rr.metadata.namespace:
        return True
    return any(
        wfe.metadata.name == lock.workflow_execution and wfe.metadata.namespace == lock.namespace and _owned_by(wfe, rr)
        for wfe in on_target
    )


def _foreign_lock(
    rr: RemediationRequest, lock: LockHolder | None, on_target: Sequence[WorkflowExecution]
) -> LockHolder | None:
    if lock is None or _lock_is_own(rr, lock, on_target):
        return None
    return lock


def _check_resource_busy(
    rr: RemediationRequest, target: str, on_target: Sequence[WorkflowExecution], lock: LockHolder | None
) -> RoutingDecision | None:
    active = _active_other(rr, on_target)
    if active is not None:
        name = active.metadata.name
        message = f"WorkflowExecution {name} ({active.phase.value}) is running on the same target {target}"
    else:
        foreign = _foreign_lock(rr, lock, on_target)
        if foreign is None:
            return None
        name = foreign.workflow_execution or foreign.pipeline_run
        message = (
            f"WorkflowExecution {name} is running on the same target {target} or cooling down "
            f"after its run (lock {foreign.pipeline_run} is held)"
        )
    return RoutingDecision(
        kind=DecisionKind.BLOCK,
        reason=BlockReason.RESOURCE_BUSY.value,
        message=message,
        blocking_workflow_execution=name,
        requeue_after=EVENT_BASED_REQUEUE,
    )


def is_target_busy(rr: RemediationRequest, same_target: Sequence[WorkflowExecution], lock: LockHolder | None) -> bool:
    """Whether another execution is active on rr's target or holds its lock."""
    on_target = _on_target(same_target, build_rr_target(rr))
    return _active_other(rr, on_target) is not None or _foreign_lock(rr, lock, on_target) is not None


# --- check 4: RecentlyRemediated ----------------------------------------------------------------


def _check_recently_remediated(
    target: str, workflow_id: str, on_target: Sequence[WorkflowExecution], now: datetime, config: RoutingPolicy
) -> RoutingDecision | None:
    completed = [
        (completion, wfe)
        for wfe in on_target
        if wfe.phase == WorkflowExecutionPhase.COMPLETED
        and (completion := _completion(wfe)) is not None
        and (not workflow_id or wfe.spec.workflow_ref.workflow_id == workflow_id)
    ]
    if not completed:
        return None
    completion, latest = max(completed, key=lambda item: (item[0], *_wfe_order_key(item[1])))
    cooldown = config.recently_remediated_cooldown
    if not now - completion < cooldown:
        return None
    until = completion + cooldown
    message = (
        f"WorkflowExecution {latest.metadata.name} (workflow {latest.spec.workflow_ref.workflow_id}) "
        f"remediated target {target} recently. Cooldown expires: {format_rfc3339(until)}"
    )
    return _block_until(BlockReason.RECENTLY_REMEDIATED, message, until, now)


# --- check 5: ExponentialBackoff ----------------------------------------------------------------


def compute_target_backoff(
    same_target: Sequence[WorkflowExecution], target: str, now: datetime, config: RoutingPolicy
) -> tuple[int, datetime | None]:
    """(n, next allowed execution) for a target from its history alone.

    n counts the runs that failed before executing (races excluded) since the target's newest
    success; the gate is the newest such failure plus backoff(n). `now` plays no part: the same
    history always gives the same answer.
    """
    on_target = _on_target(same_target, target)
    successes = [
        completion
        for wfe in on_target
        if wfe.phase == WorkflowExecutionPhase.COMPLETED and (completion := _completion(wfe)) is not None
    ]
    since = max(successes, default=_EARLIEST)
    failures = [
        completion
        for wfe in on_target
        if wfe.phase == WorkflowExecutionPhase.FAILED
        and not _is_execution_failure(wfe)
        and not (
            wfe.status.failure_details is not None
            and wfe.status.failure_details.reason == FailureReason.EXECUTION_RACE_CONDITION
        )
        and (completion := _completion(wfe)) is not None
        and completion > since
    ]
    n = len(failures)
    if n == 0:
        return 0, None
    jitter = build_deterministic_jitter(f"{target}|{n}") if config.backoff_jitter_percent > 0 else None
    delay = compute_backoff(
        n,
        base=config.backoff_base,
        maximum=config.backoff_max,
        jitter_percent=config.backoff_jitter_percent,
        jitter=jitter,
    )
    return n, max(failures) + delay


def _check_backoff(
    target: str, on_target: Sequence[WorkflowExecution], now: datetime, config: RoutingPolicy
) -> RoutingDecision | None:
    n, next_allowed = compute_target_backoff(on_target, target, now, config)
    if next_allowed is None or not now < next_allowed:
        return None
    message = (
        f"Exponential backoff active. Next execution allowed at {format_rfc3339(next_allowed)} "
        f"({n} consecutive failures on target {target})"
    )
    return _block_until(
        BlockReason.EXPONENTIAL_BACKOFF,
        message,
        next_allowed,
        now,
        consecutive_failure_count=n,
        next_allowed_execution=next_allowed,
    )


# --- check 6: IneffectiveChain ------------------------------------------------------------------


def is_chain_link(rr: RemediationRequest) -> bool:
    """A completed request whose workflow ran without fixing anything, and nobody cleared it since.

    Any other completed request of the signal ends an ineffective chain (walking newest first)."""
    effectiveness = rr.status.effectiveness
    return (
        rr.status.overall_phase == RemediationPhase.COMPLETED
        and effectiveness is not None
        and effectiveness.assessment == Assessment.INEFFECTIVE
        and not rr.metadata.annotations.get(ANNOTATION_CLEAR_BLOCK, "").strip()
    )


def compute_ineffective_chain(
    rr: RemediationRequest, same_fingerprint: Sequence[RemediationRequest], workflow_id: str
) -> tuple[int, RemediationRequest | None]:
    """(count, newest) of the signal's Ineffective outcomes of `workflow_id` since its newest other
    completed outcome (Effective, Inconclusive, NotAssessed, or an Ineffective one a person cleared)."""
    fingerprint = rr.spec.signal_fingerprint
    completed = sorted(
        (
            other
            for other in same_fingerprint
            if other.spec.signal_fingerprint == fingerprint
            and not _same_object(other, rr)
            and other.status.overall_phase == RemediationPhase.COMPLETED
            and not is_dry_run_outcome(other)  # a dry run changed nothing: it ends no chain
        ),
        key=_order_key,
        reverse=True,
    )
    count = 0
    newest: RemediationRequest | None = None
    for other in completed:
        if not is_chain_link(other):
            break
        selected = other.status.selected_workflow
        if selected is not None and selected.workflow_id == workflow_id:
            newest = newest or other
            count += 1
    return count, newest


def check_ineffective_chain(
    rr: RemediationRequest,
    workflow_id: str,
    same_fingerprint: Sequence[RemediationRequest],
    now: datetime,
    config: RoutingPolicy,
) -> RoutingDecision | None:
    """The IneffectiveChain block while it holds; None once it has cleared (or never applied)."""
    if not workflow_id:
        return None
    count, newest = compute_ineffective_chain(rr, same_fingerprint, workflow_id)
    if count < config.ineffective_chain_threshold or newest is None:
        return None
    completed = _rr_completion(newest)
    if completed is None:
        return None
    until = completed + config.ineffective_chain_cooldown
    if not _utc(now) < until:
        return None
    name = newest.metadata.name
    message = (
        f"Workflow {workflow_id} completed {count} times in a row for this signal without the alert resolving "
        f"(newest: {name}). Look at the target, then clear the block with "
        f"`kubernaut clear-block {name} --reason <text>`; else it expires: {format_rfc3339(until)}"
    )
    return _block_until(BlockReason.INEFFECTIVE_CHAIN, message, until, _utc(now))


# --- check 7: PreviousExecutionFailed -----------------------------------------------------------


def _check_previous_execution_failed(target: str, on_target: Sequence[WorkflowExecution]) -> RoutingDecision | None:
    finished = [
        (completion, wfe)
        for wfe in on_target
        if wfe.phase in _TERMINAL_WFE and (completion := _completion(wfe)) is not None
    ]
    if not finished:
        return None
    _, latest = max(finished, key=lambda item: (item[0], *_wfe_order_key(item[1])))
    if not (
        latest.phase == WorkflowExecutionPhase.FAILED
        and _is_execution_failure(latest)
        and latest.status.block_clearance is None
    ):
        return None
    name = latest.metadata.name
    return RoutingDecision(
        kind=DecisionKind.FAIL,
        reason=SkipReason.PREVIOUS_EXECUTION_FAILED.value,
        message=f"WorkflowExecution {name} (namespace {latest.metadata.namespace}) failed during execution on "
        f"target {target} and may have changed it. Manual intervention is required: verify the target, "
        f"then clear the block with `kubernaut clear-block {name} --reason <text>`",
        blocking_workflow_execution=name,
    )


# --- gates: UnmanagedResource (1), RateLimited (7), CircuitOpen (8) ----------------------------


def _check_scope(rr: RemediationRequest, gates: Gates | None, now: datetime) -> RoutingDecision | None:
    block = check_scope(rr, gates) if gates is not None else None
    if block is None:
        return None
    until = block.blocked_until
    return RoutingDecision(
        kind=DecisionKind.BLOCK,
        reason=BlockReason.UNMANAGED_RESOURCE.value,
        message=block.message,
        blocked_until=until,
        # the Namespace's label event wakes it; the deadline fails it
        requeue_after=min(until - now, EVENT_BASED_REQUEUE) if until is not None else EVENT_BASED_REQUEUE,
    )


def _check_rate_limits(rr: RemediationRequest, gates: Gates | None, now: datetime) -> RoutingDecision | None:
    block = check_rate_limits(rr, gates, now) if gates is not None else None
    if block is None:
        return None
    until = block.blocked_until
    return RoutingDecision(
        kind=DecisionKind.BLOCK,
        reason=BlockReason.RATE_LIMITED.value,
        message=block.message,
        blocked_until=until,
        # an execution ending wakes it; the slot's instant otherwise
        requeue_after=until - now if until is not None else EVENT_BASED_REQUEUE,
    )


def _check_breaker(gates: Gates | None, now: datetime) -> RoutingDecision | None:
    found = check_breaker(gates, now) if gates is not None else None
    if found is None:
        return None
    block, state = found
    return RoutingDecision(
        kind=DecisionKind.BLOCK,
        reason=BlockReason.CIRCUIT_OPEN.value,
        message=block.message,
        requeue_after=EVENT_BASED_REQUEUE,  # the reset wakes it
        breaker=state,
    )


# --- routing ------------------------------------------------------------------------------------


def decide_routing(
    rr: RemediationRequest,
    *,
    workflow_id: str,
    stage: RoutingStage,
    same_fingerprint: Sequence[RemediationRequest],
    same_target: Sequence[WorkflowExecution],
    lock: LockHolder | None,
    now: datetime,
    config: RoutingPolicy,
    gates: Gates | None = None,
) -> RoutingDecision:
    """Run the routing checks in order; the first that applies decides, else PROCEED.

    Without `gates` the gate checks do not apply."""
    now = _utc(now)
    target = build_rr_target(rr)
    on_target = _on_target(same_target, target)
    decision = (
        _check_scope(rr, gates, now)
        or _check_consecutive_failures(rr, same_fingerprint, now, config)
        or _check_duplicate(rr, same_fingerprint)
        or _check_resource_busy(rr, target, on_target, lock)
        or _check_recently_remediated(target, workflow_id, on_target, now, config)
        or _check_backoff(target, on_target, now, config)
        or check_ineffective_chain(rr, workflow_id, same_fingerprint, now, config)
        or _check_rate_limits(rr, gates, now)
        or _check_breaker(gates, now)
    )
    if decision is None and stage == RoutingStage.ANALYZING:
        decision = _check_previous_execution_failed(target, on_target)
    return decision or PROCEED


# --- the Blocked phase --------------------------------------------------------------------------


class BlockedAction(StrEnum):
    STAY = "Stay"
    RESUME = "Resume"
    COMPLETE = "Complete"
    FAIL = "Fail"


@dataclass(frozen=True)
class BlockedDecision:
    action: BlockedAction
    requeue_after: timedelta | None = None
    failure_phase: str = ""
    failure_reason: str = ""


def _stay(requeue_after: timedelta | None) -> BlockedDecision:
    return BlockedDecision(action=BlockedAction.STAY, requeue_after=requeue_after)


_RESUME = BlockedDecision(action=BlockedAction.RESUME)


def _decide_duplicate(
    rr: RemediationRequest, original: RemediationRequest | None, original_exists: bool
) -> BlockedDecision:
    name = rr.status.duplicate_of or ""
    if not name:
        return _RESUME
    if not original_exists:
        return BlockedDecision(
            action=BlockedAction.FAIL,
            failure_phase=FAILURE_PHASE_DEDUPLICATED,
            failure_reason=f"Original remediation {name} was deleted before it finished",
        )
    if original is None or not original.is_terminal:
        return _stay(EVENT_BASED_REQUEUE)
    phase = original.status.overall_phase
    if phase == RemediationPhase.COMPLETED:
        return BlockedDecision(action=BlockedAction.COMPLETE)
    phase_text = phase.value if phase is not None else "unknown"
    return BlockedDecision(
        action=BlockedAction.FAIL,
        failure_phase=FAILURE_PHASE_DEDUPLICATED,
        failure_reason=f"Original remediation {name} ended {phase_text}",
    )


def decide_blocked(
    rr: RemediationRequest,
    *,
    original: RemediationRequest | None,
    original_exists: bool,
    same_target: Sequence[WorkflowExecution],
    lock: LockHolder | None,
    now: datetime,
    ineffective_chain: RoutingDecision | None = None,
    gates: Gates | None = None,
) -> BlockedDecision:
    """What a Blocked request does now: stay, route again, or end as its cause dictates.

    `ineffective_chain` is the IneffectiveChain check made now: the block clears with it (a person's
    clearance or its cooldown), not only at the instant it was written with."""
    now = _utc(now)
    reason = rr.status.block_reason or ""
    until = _utc(rr.status.blocked_until) if rr.status.blocked_until is not None else None

    if reason in _GATE_REASONS:
        return _decide_gate(rr, reason, until, gates, now)
    if reason == BlockReason.RESOURCE_BUSY:
        return _stay(EVENT_BASED_REQUEUE) if is_target_busy(rr, same_target, lock) else _RESUME
    if reason == BlockReason.DUPLICATE_IN_PROGRESS:
        return _decide_duplicate(rr, original, original_exists)
    if reason == BlockReason.INEFFECTIVE_CHAIN:
        return _RESUME if ineffective_chain is None else _stay(ineffective_chain.requeue_after)
    if until is None:
        # A time-based block without its instant cannot expire: route again to recompute it.
        # Any other reason is a hold set by a person; it lasts until they lift it.
        return _RESUME if is_time_based(reason) else _stay(None)
    if now < until:
        return _stay(until - now)
    if reason == BlockReason.CONSECUTIVE_FAILURES:
        return BlockedDecision(
            action=BlockedAction.FAIL,
            failure_phase=FAILURE_PHASE_BLOCKED,
            failure_reason=f"Cooldown expired after blocking due to {reason}",
        )
    return _RESUME


_GATE_REASONS = frozenset({BlockReason.UNMANAGED_RESOURCE, BlockReason.RATE_LIMITED, BlockReason.CIRCUIT_OPEN})


def _decide_gate(
    rr: RemediationRequest, reason: str, until: datetime | None, gates: Gates | None, now: datetime
) -> BlockedDecision:
    """A gate's block lasts while its gate is closed; routing again decides afresh."""
    if gates is None:
        return _RESUME
    if reason == BlockReason.UNMANAGED_RESOURCE:
        if _check_scope(rr, gates, now) is None:
            return _RESUME
        if until is not None and not now < until:
            return BlockedDecision(
                action=BlockedAction.FAIL,
                failure_phase=FAILURE_PHASE_BLOCKED,
                failure_reason=f"Blocked due to {reason} for longer than scope.unmanagedTimeout",
            )
        return _stay(min(until - now, EVENT_BASED_REQUEUE) if until is not None else EVENT_BASED_REQUEUE)
    if reason == BlockReason.RATE_LIMITED:
        limited = _check_rate_limits(rr, gates, now)
        return _RESUME if limited is None else _stay(limited.requeue_after)
    return _RESUME if _check_breaker(gates, now) is None else _stay(EVENT_BASED_REQUEUE)
