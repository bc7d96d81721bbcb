"""What an operator sees of remediations, read from the API server and the audit store.

Both `kubernaut get/describe remediation(s)` and the web UI show these; the reading lives here, the
printing and the HTML with their callers.
"""

from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from lightkube import AsyncClient
from lightkube.core.exceptions import ApiError

from kubernaut.api.audit import StoredAuditEvent
from kubernaut.api.v1alpha1 import RemediationRequest, WorkflowExecution
from kubernaut.audit.chain import VerifyResult
from kubernaut.domain.duration import format_go_duration, format_rfc3339
from kubernaut.domain.pipelinerun import ANNOTATION_TARGET_RESOURCE, parse_owner
from kubernaut.domain.routing import build_rr_target
from kubernaut.domain.target import build_lock_name
from kubernaut.kube.resources import (
    NotificationRequestResource,
    PipelineRunResource,
    RemediationRequestResource,
    WorkflowExecutionResource,
)

# -- pure presentation ------------------------------------------------------------------------------


def build_row(rr: RemediationRequest, now: datetime) -> dict[str, str]:
    """One line of `get remediations`: what it is, where it stands, and why."""
    status = rr.status
    left = ""
    if status.blocked_until and status.overall_phase == "Blocked":
        left = format_go_duration(max(status.blocked_until - now, now - now))
    why = status.block_reason or status.skip_reason or status.failure_reason or ""
    if status.block_reason and left:
        why = f"{status.block_reason} ({left} left)"
    return {
        "namespace": rr.metadata.namespace,
        "name": rr.metadata.name,
        "phase": str(status.overall_phase or "New"),
        "target": build_rr_target(rr),
        "why": why,
        "workflowExecution": status.workflow_execution_ref.name if status.workflow_execution_ref else "",
        "outcome": str(status.outcome or ""),
        "assessment": str(status.effectiveness.assessment) if status.effectiveness else "",
        "age": format_go_duration(now - rr.metadata.creation_timestamp) if rr.metadata.creation_timestamp else "",
        "signal": rr.spec.signal_name,
        "severity": rr.spec.severity.value,
        "blockedUntil": format_rfc3339(status.blocked_until) if status.blocked_until else "",
        "message": status.block_message or status.skip_message or status.message or "",
    }


def build_timeline(rr: RemediationRequest, wfe: WorkflowExecution | None) -> list[tuple[datetime, str]]:
    """The moments of one remediation, in order."""
    status = rr.status
    moments: list[tuple[datetime | None, str]] = [
        (rr.metadata.creation_timestamp, "Created"),
        (status.start_time, "Pending: seen by the orchestrator"),
        (status.analyzing_start_time, "Analyzing: selecting a workflow"),
        (
            status.executing_start_time,
            f"Executing: {status.workflow_execution_ref.name}" if status.workflow_execution_ref else "Executing",
        ),
    ]
    if wfe is not None:
        moments.append(
            (
                wfe.status.start_time,
                f"PipelineRun {wfe.status.pipeline_run_ref.name if wfe.status.pipeline_run_ref else ''} started",
            )
        )
        if wfe.status.completion_time:
            moments.append(
                (
                    wfe.status.completion_time,
                    f"Workflow {wfe.phase.value}" + (f" ({wfe.status.duration})" if wfe.status.duration else ""),
                )
            )
    if status.verifying_start_time:
        moments.append((status.verifying_start_time, "Verifying: waiting for the alert to resolve"))
    effectiveness = status.effectiveness
    if effectiveness is not None:
        if effectiveness.resolved_at:
            moments.append((effectiveness.resolved_at, "Alert resolved"))
        if effectiveness.checked_at:
            moments.append(
                (
                    effectiveness.checked_at,
                    f"Assessed {effectiveness.assessment}"
                    + (f": {effectiveness.message}" if effectiveness.message else ""),
                )
            )
    elif status.overall_phase == "Verifying":
        moments.append((None, "Verifying: the alert has not resolved yet"))
    if status.overall_phase == "Blocked":
        until = f" until {format_rfc3339(status.blocked_until)}" if status.blocked_until else ""
        moments.append((None, f"Blocked: {status.block_reason}{until} - {status.block_message}"))
    if status.completed_at:
        moments.append(
            (
                status.completed_at,
                f"{status.overall_phase}" + (f": {status.failure_reason}" if status.failure_reason else ""),
            )
        )
    timed = [(m, text) for m, text in moments if m is not None]
    timed.sort(key=lambda item: item[0])
    untimed = [(datetime.max.replace(tzinfo=UTC), text) for m, text in moments if m is None]
    return timed + untimed


def build_pipelinerun_state(pipelinerun: dict[str, Any]) -> str:
    """The Succeeded condition of a PipelineRun as `True Succeeded`, or `not started`."""
    conditions = (pipelinerun.get("status") or {}).get("conditions") or []
    return next(
        (f"{c.get('status')} {c.get('reason', '')}" for c in conditions if c.get("type") == "Succeeded"),
        "not started",
    )


@dataclass
class TargetView:
    """One target: who holds its lock, what runs on it, and which requests wait for it."""

    target: str
    lock: str
    pipelinerun: dict[str, Any] | None = None
    running: list[WorkflowExecution] = field(default_factory=list)
    waiting: list[RemediationRequest] = field(default_factory=list)

    @property
    def holder(self) -> str:
        """`namespace/name` of the WorkflowExecution whose PipelineRun holds the lock."""
        if self.pipelinerun is None:
            return ""
        namespace, name = parse_owner(self.pipelinerun)
        return f"{namespace}/{name}" if name else ""


def build_targets(
    pipelineruns: list[dict[str, Any]], wfes: list[WorkflowExecution], rrs: list[RemediationRequest]
) -> list[TargetView]:
    """Every target that is locked (a `wfe-<hash>` PipelineRun), run on (a Running WFE) or waited for
    (a request Blocked with ResourceBusy), sorted by target."""
    views: dict[str, TargetView] = {}

    def view(target: str) -> TargetView:
        return views.setdefault(target, TargetView(target=target, lock=build_lock_name(target)))

    for pipelinerun in pipelineruns:
        target = (pipelinerun["metadata"].get("annotations") or {}).get(ANNOTATION_TARGET_RESOURCE)
        if target and pipelinerun["metadata"]["name"] == build_lock_name(target):
            view(target).pipelinerun = pipelinerun
    for wfe in wfes:
        if wfe.status.phase == "Running":
            view(wfe.spec.target_resource).running.append(wfe)
    for rr in rrs:
        if rr.status.overall_phase == "Blocked" and rr.status.block_reason == "ResourceBusy":
            view(build_rr_target(rr)).waiting.append(rr)
    return [views[target] for target in sorted(views)]


# -- reading ----------------------------------------------------------------------------------------


async def get_or_none(client: AsyncClient, resource: Any, name: str, namespace: str | None) -> dict[str, Any] | None:
    try:
        obj = await client.get(resource, name, namespace=namespace)
    except ApiError as exc:
        if exc.status.code == 404:
            return None
        raise
    body: dict[str, Any] = obj.to_dict()
    return body


async def list_remediations(client: AsyncClient, namespace: str | None) -> list[RemediationRequest]:
    """The requests in `namespace` (None: all), by namespace, creation time and name."""
    found = [
        RemediationRequest.from_wire(obj.to_dict())
        async for obj in client.list(RemediationRequestResource, namespace=namespace or "*")
    ]
    return sorted(
        found, key=lambda rr: (rr.metadata.namespace, rr.metadata.creation_timestamp or datetime.min, rr.metadata.name)
    )


@dataclass
class RemediationDetails:
    """One request with its execution, the PipelineRun holding its target's lock and its notifications."""

    rr: RemediationRequest
    wfe: WorkflowExecution | None
    pipelinerun: dict[str, Any] | None
    notes: list[dict[str, Any]]


async def read_remediation(client: AsyncClient, name: str, namespace: str) -> RemediationDetails:
    """LookupError when the request does not exist."""
    body = await get_or_none(client, RemediationRequestResource, name, namespace)
    if body is None:
        raise LookupError(f"RemediationRequest {namespace}/{name} not found")
    rr = RemediationRequest.from_wire(body)
    wfe = None
    pipelinerun = None
    if ref := rr.status.workflow_execution_ref:
        wfe_body = await get_or_none(client, WorkflowExecutionResource, ref.name, namespace)
        wfe = WorkflowExecution.from_wire(wfe_body) if wfe_body else None
    if wfe is not None:
        lock = build_lock_name(wfe.spec.target_resource)
        async for pr in client.list(PipelineRunResource, namespace="*"):
            if pr.metadata.name == lock:
                pipelinerun = pr.to_dict()
    notes = []
    for ref in rr.status.notification_request_refs or []:
        note = await get_or_none(client, NotificationRequestResource, ref.name, ref.namespace or namespace)
        if note:
            notes.append(note)
    return RemediationDetails(rr, wfe, pipelinerun, notes)


async def list_targets(client: AsyncClient, execution_namespace: str) -> list[TargetView]:
    """The targets with their locks (PipelineRuns in the execution namespace) and who waits for them."""
    pipelineruns = [pr.to_dict() async for pr in client.list(PipelineRunResource, namespace=execution_namespace)]
    listing = client.list(WorkflowExecutionResource, namespace="*")
    wfes = [WorkflowExecution.from_wire(obj.to_dict()) async for obj in listing]
    return build_targets(pipelineruns, wfes, await list_remediations(client, None))


@dataclass
class AuditTrail:
    """The audit events of one request, and the chain check of the whole store when it was asked for;
    `error` says why the store could not be read."""

    events: list[StoredAuditEvent] = field(default_factory=list)
    chain: VerifyResult | None = None
    error: str = ""


async def read_audit_trail(url: str, details: RemediationDetails, *, verify: bool = False) -> AuditTrail:
    """The request's events (its own and its WorkflowExecution's correlation), in time order."""
    from kubernaut.audit.factory import open_audit_store

    trail = AuditTrail()
    rr, wfe = details.rr, details.wfe
    try:
        async with open_audit_store(url, create=False) as store:
            trail.events = list(await store.list_events(correlation_id=rr.metadata.uid))
            if wfe is not None:
                trail.events += list(
                    await store.list_events(
                        correlation_id=wfe.metadata.labels.get("kubernaut.ai/correlation-id", wfe.metadata.name)
                    )
                )
            if verify:
                trail.chain = await store.verify()
    except Exception as exc:  # the timeline is still useful without the audit trail
        trail.error = str(exc) or type(exc).__name__
    trail.events.sort(key=lambda e: e.event_time)
    return trail
