"""Safety gates of routing: opt-in scope, rate limits and the circuit breaker.

Pure functions of the request, what is known of its target's opt-in, the executions cluster-wide
(their history, so a restart changes nothing), the breaker's latest recorded reset, `now` and the
gate policy. `routing.decide_routing` calls them at their places in the routing order.
"""

import hashlib
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

from kubernaut.api.audit import AuditEvent, build_event_id
from kubernaut.api.v1alpha1 import RemediationRequest, WorkflowExecution
from kubernaut.api.v1alpha1.workflowexecution import WorkflowExecutionPhase

MANAGED_LABEL = "kubernaut.ai/managed"
MANAGED_VALUE = "true"
RATE_WINDOW = timedelta(hours=1)

# The breaker's recorded reset: annotations on one ConfigMap in the operator's namespace. The CLI
# sets the reason and the moment it asked; the admission webhook stamps who and when.
BREAKER_CONFIGMAP = "kubernaut-breaker"
BREAKER_NAMESPACE = "kubernaut-system"
BREAKER_LABEL = "kubernaut.ai/breaker"
ANNOTATION_RESET_REASON = "kubernaut.ai/breaker-reset-reason"
ANNOTATION_RESET_REQUESTED_AT = "kubernaut.ai/breaker-reset-requested-at"
ANNOTATION_RESET_BY = "kubernaut.ai/breaker-reset-by"
ANNOTATION_RESET_AT = "kubernaut.ai/breaker-reset-at"

_TERMINAL = (WorkflowExecutionPhase.COMPLETED, WorkflowExecutionPhase.FAILED)


@dataclass(frozen=True)
class GatePolicy:
    """The gates' settings (the `scope`, `limits` and `breaker` sections)."""

    require_managed_label: bool = True
    unmanaged_timeout: timedelta = timedelta(hours=1)
    max_concurrent_executions: int = 10
    max_executions_per_hour: int = 100
    max_executions_per_namespace_per_hour: int = 20
    breaker_failure_threshold: int = 5
    breaker_window: timedelta = timedelta(minutes=10)


@dataclass(frozen=True)
class Scope:
    """Whether the target opted in, and where the label is looked for (for the message)."""

    managed: bool
    where: str


@dataclass(frozen=True)
class BreakerReset:
    at: datetime
    by: str
    reason: str


@dataclass(frozen=True)
class Gates:
    """What the gates read for one decision. `executions`: every execution cluster-wide that is
    active, was created within the last hour, or failed during execution since the latest reset."""

    policy: GatePolicy
    scope: Scope
    executions: Sequence[WorkflowExecution] = ()
    reset: BreakerReset | None = None


@dataclass(frozen=True)
class GateBlock:
    message: str
    blocked_until: datetime | None = None


def is_managed(labels: dict[str, str] | None) -> bool:
    return (labels or {}).get(MANAGED_LABEL) == MANAGED_VALUE


def _utc(moment: datetime) -> datetime:
    return moment if moment.tzinfo is not None else moment.replace(tzinfo=UTC)


def _owned_by(wfe: WorkflowExecution, rr: RemediationRequest) -> bool:
    uid = rr.metadata.uid
    return bool(uid) and any(ref.controller and ref.uid == uid for ref in wfe.metadata.owner_references)


def build_scope_key(target_kind: str, target_name: str, target_namespace: str) -> str:
    """The object whose label opts a target in: its namespace, or a cluster-scoped target itself."""
    return f"Namespace/{target_namespace}" if target_namespace else f"{target_kind}/{target_name}"


# -- UnmanagedResource ------------------------------------------------------------------------------


def unmanaged_deadline(rr: RemediationRequest, policy: GatePolicy) -> datetime | None:
    """When an unmanaged request gives up: its creation plus `scope.unmanagedTimeout`."""
    created = rr.metadata.creation_timestamp
    return _utc(created) + policy.unmanaged_timeout if created is not None else None


def check_scope(rr: RemediationRequest, gates: Gates) -> GateBlock | None:
    if not gates.policy.require_managed_label or gates.scope.managed:
        return None
    return GateBlock(
        message=f"{gates.scope.where} does not carry the label {MANAGED_LABEL}={MANAGED_VALUE}; "
        "kubernaut remediates only what is opted in. Label it to let this request run",
        blocked_until=unmanaged_deadline(rr, gates.policy),
    )


# -- RateLimited ----------------------------------------------------------------------------------


def _slot_frees(created: list[datetime], limit: int) -> datetime:
    """With len(created) >= limit executions in the window: when enough age out to leave one free."""
    ordered = sorted(created)
    return ordered[len(ordered) - limit] + RATE_WINDOW


def check_rate_limits(rr: RemediationRequest, gates: Gates, now: datetime) -> GateBlock | None:
    """Over a limit: the block, until the hourly slot frees (None when only running ones must end)."""
    policy = gates.policy
    others = [wfe for wfe in gates.executions if not _owned_by(wfe, rr)]
    active = sum(1 for wfe in others if wfe.phase not in _TERMINAL)
    recent = [
        created
        for wfe in others
        if wfe.metadata.creation_timestamp is not None
        and now - RATE_WINDOW < (created := _utc(wfe.metadata.creation_timestamp)) <= now
    ]
    namespace = rr.metadata.namespace
    in_namespace = [
        _utc(wfe.metadata.creation_timestamp)
        for wfe in others
        if wfe.metadata.namespace == namespace
        and wfe.metadata.creation_timestamp is not None
        and now - RATE_WINDOW < _utc(wfe.metadata.creation_timestamp) <= now
    ]
    reasons: list[str] = []
    untils: list[datetime] = []
    if active >= policy.max_concurrent_executions:
        reasons.append(
            f"{active} executions are running cluster-wide (limits.maxConcurrentExecutions "
            f"{policy.max_concurrent_executions}); waiting for one to end"
        )
    if len(recent) >= policy.max_executions_per_hour:
        untils.append(_slot_frees(recent, policy.max_executions_per_hour))
        # "at least": the orchestrator reads only as many of the hour's executions as the limit counts
        reasons.append(
            f"at least {policy.max_executions_per_hour} executions started cluster-wide in the last hour "
            f"(limits.maxExecutionsPerHour {policy.max_executions_per_hour})"
        )
    if len(in_namespace) >= policy.max_executions_per_namespace_per_hour:
        untils.append(_slot_frees(in_namespace, policy.max_executions_per_namespace_per_hour))
        reasons.append(
            f"at least {policy.max_executions_per_namespace_per_hour} executions started in namespace "
            f"{namespace} in the last hour "
            f"(limits.perNamespace.maxExecutionsPerHour {policy.max_executions_per_namespace_per_hour})"
        )
    if not reasons:
        return None
    until = max(untils) if untils else None
    suffix = f". Next slot: {until.isoformat()}" if until is not None else ""
    return GateBlock(message="Rate limited: " + "; ".join(reasons) + suffix, blocked_until=until)


# -- CircuitOpen ----------------------------------------------------------------------------------


@dataclass(frozen=True)
class BreakerState:
    open: bool
    opened_at: datetime | None
    failures_in_window: int
    reset: BreakerReset | None
    failures: tuple[str, ...] = field(default=())  # the executions whose failures opened it


def _execution_failures(
    executions: Sequence[WorkflowExecution], reset: BreakerReset | None
) -> list[tuple[datetime, str]]:
    since = _utc(reset.at) if reset is not None else None
    failures = []
    for wfe in executions:
        details = wfe.status.failure_details
        completed = wfe.status.completion_time
        if (
            wfe.phase == WorkflowExecutionPhase.FAILED
            and details is not None
            and details.was_execution_failure is True
            and completed is not None
            and (since is None or _utc(completed) > since)
        ):
            failures.append((_utc(completed), f"{wfe.metadata.namespace}/{wfe.metadata.name}"))
    return sorted(failures)


def compute_breaker(
    executions: Sequence[WorkflowExecution], reset: BreakerReset | None, now: datetime, policy: GatePolicy
) -> BreakerState:
    """Open from the first moment since the latest reset at which `failureThreshold` execution
    failures fall within `window`, until the next reset; the same history gives the same answer."""
    failures = _execution_failures(executions, reset)
    threshold, window = policy.breaker_failure_threshold, policy.breaker_window
    opened_at: datetime | None = None
    opened_by: tuple[str, ...] = ()
    for first in range(len(failures) - threshold + 1):
        last = first + threshold - 1
        if failures[last][0] - failures[first][0] < window:
            opened_at = failures[last][0]
            opened_by = tuple(name for _, name in failures[first : last + 1])
            break
    in_window = sum(1 for completed, _ in failures if now - window < completed <= now)
    return BreakerState(
        open=opened_at is not None, opened_at=opened_at, failures_in_window=in_window, reset=reset, failures=opened_by
    )


def check_breaker(gates: Gates, now: datetime) -> tuple[GateBlock, BreakerState] | None:
    state = compute_breaker(gates.executions, gates.reset, now, gates.policy)
    if not state.open or state.opened_at is None:
        return None
    policy = gates.policy
    message = (
        f"Circuit breaker open since {state.opened_at.isoformat()}: {policy.breaker_failure_threshold} executions "
        f"failed during execution within {_format(policy.breaker_window)} ({', '.join(state.failures)}). "
        "No execution starts until a person runs `kubernaut breaker reset --reason <text>`"
    )
    return GateBlock(message=message), state


def build_breaker_notice_name(state: BreakerState) -> str:
    """One name per opening, the same after a restart: the notification is created once."""
    opened = state.opened_at.isoformat() if state.opened_at else ""
    return "breaker-open-" + hashlib.sha256(opened.encode()).hexdigest()[:16]


def build_breaker_notification(state: BreakerState, namespace: str, channels: list[str]) -> dict[str, Any]:
    """The one `critical` notification of an opening (created by name: once, also after a restart)."""
    opened = state.opened_at.isoformat() if state.opened_at else ""
    body = (
        f"**Circuit breaker open** since {opened}: {len(state.failures)} executions failed during execution "
        f"within the breaker window ({', '.join(state.failures)}).\n\n"
        "No workflow execution starts until a person checks the cluster and runs "
        "`kubernaut breaker reset --reason <text>`.\n"
    )
    return {
        "apiVersion": "kubernaut.ai/v1alpha1",
        "kind": "NotificationRequest",
        "metadata": {
            "name": build_breaker_notice_name(state),
            "namespace": namespace,
            "labels": {
                "kubernaut.ai/component": "remediation-orchestrator",
                "kubernaut.ai/notification-type": "circuit-breaker",
            },
        },
        "spec": {
            "type": "escalation",
            "priority": "critical",
            "subject": "Circuit breaker open: no remediation runs until it is reset",
            "body": body,
            "channels": channels,
            "metadata": {"openedAt": opened, "failures": ",".join(state.failures)},
        },
    }


def build_reset_event(reset: BreakerReset, namespace: str) -> AuditEvent:
    """The one audit event of a reset: its id is the reset's, however often it is seen."""
    at = reset.at.isoformat()
    return AuditEvent(
        event_id=build_event_id("breaker.reset", at, reset.by, reset.reason),
        event_type="orchestrator.breaker.reset",
        event_category="orchestration",
        event_action="reset",
        event_outcome="success",
        actor_type="user",
        actor_id=reset.by,
        resource_type="ConfigMap",
        resource_id=BREAKER_CONFIGMAP,
        correlation_id=build_event_id("breaker.reset", at),
        namespace=namespace,
        event_time=reset.at,
        event_data={"reason": reset.reason, "reset_at": at, "reset_by": reset.by},
    )


def parse_reset(annotations: dict[str, str] | None) -> BreakerReset | None:
    """The reset recorded on the breaker ConfigMap (only a stamped one counts)."""
    annotations = annotations or {}
    by, at = annotations.get(ANNOTATION_RESET_BY), annotations.get(ANNOTATION_RESET_AT)
    if not by or not at:
        return None
    try:
        moment = _utc(datetime.fromisoformat(at))
    except ValueError:
        return None
    return BreakerReset(at=moment, by=by, reason=annotations.get(ANNOTATION_RESET_REASON, ""))


def _format(span: timedelta) -> str:
    seconds = int(span.total_seconds())
    if seconds % 3600 == 0:
        return f"{seconds // 3600}h"
    if seconds % 60 == 0:
        return f"{seconds // 60}m"
    return f"{seconds}s"
