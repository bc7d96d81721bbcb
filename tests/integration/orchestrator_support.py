"""Shared pieces of the orchestrator integration tests: objects in given states, watchers, metrics.

No tests live here; the module name only keeps it beside the tests that use it.
"""

import asyncio
import contextlib
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from lightkube import AsyncClient
from lightkube.core.exceptions import ApiError
from prometheus_client import REGISTRY

from kubernaut.audit.memory import MemoryAuditSink
from kubernaut.domain.duration import format_rfc3339
from kubernaut.kube.client import patch_object, patch_status
from kubernaut.kube.resources import (
    NotificationRequestResource,
    PipelineRunResource,
    RemediationRequestResource,
    WorkflowExecutionResource,
)
from tests.integration.harness import eventually
from tests.integration.rr import rr_status
from tests.integration.tekton_support import default_bundle

RO = "kubernaut_remediationorchestrator_"


def metric(name: str, labels: dict[str, str] | None = None) -> float:
    return REGISTRY.get_sample_value(name, labels or {}) or 0.0


def blocked_total(namespace: str, reason: str) -> float:
    return metric(f"{RO}blocked_total", {"namespace": namespace, "reason": reason})


def transitions(namespace: str, from_phase: str, to_phase: str) -> float:
    return metric(
        f"{RO}phase_transitions_total", {"namespace": namespace, "from_phase": from_phase, "to_phase": to_phase}
    )


def reconciles(namespace: str) -> float:
    """Every orchestrator reconcile of requests in `namespace`, whatever their phase."""
    total = 0.0
    for family in REGISTRY.collect():
        if family.name != f"{RO}reconcile":
            continue
        for sample in family.samples:
            if sample.name.endswith("_total") and sample.labels.get("namespace") == namespace:
                total += sample.value
    return total


def rfc3339(moment: datetime) -> str:
    return format_rfc3339(moment)


def parse_time(value: str) -> datetime:
    return datetime.fromisoformat(value.replace("Z", "+00:00"))


def condition(status: dict[str, Any], type_: str) -> dict[str, Any]:
    return next((c for c in status.get("conditions") or [] if c["type"] == type_), {})


# -- objects in given states ----------------------------------------------------------------------


async def create_rr(kube: AsyncClient, manifest: dict[str, Any]) -> dict[str, Any]:
    created = await kube.create(RemediationRequestResource(manifest))
    body: dict[str, Any] = created.to_dict()
    return body


async def set_rr_status(kube: AsyncClient, name: str, namespace: str, status: dict[str, Any]) -> dict[str, Any]:
    updated = await patch_status(kube, RemediationRequestResource, name, namespace, status)
    body: dict[str, Any] = updated.to_dict()
    return body


def wfe_body(
    name: str,
    namespace: str,
    target: str,
    *,
    owner: dict[str, Any] | None = None,
    workflow_id: str = "restart-deployment",
    bundle: str = "",
) -> dict[str, Any]:
    """A WorkflowExecution as the orchestrator creates it; `owner` is the request body it serves."""
    meta: dict[str, Any] = {"name": name, "namespace": namespace}
    rr_ref: dict[str, Any] = {"apiVersion": "kubernaut.ai/v1alpha1", "kind": "RemediationRequest", "name": "rr-x"}
    if owner is not None:
        owner_meta = owner["metadata"]
        rr_ref = {**rr_ref, "name": owner_meta["name"], "namespace": namespace, "uid": owner_meta["uid"]}
        meta["ownerReferences"] = [
            {
                "apiVersion": "kubernaut.ai/v1alpha1",
                "kind": "RemediationRequest",
                "name": owner_meta["name"],
                "uid": owner_meta["uid"],
                "controller": True,
                "blockOwnerDeletion": True,
            }
        ]
    return {
        "apiVersion": "kubernaut.ai/v1alpha1",
        "kind": "WorkflowExecution",
        "metadata": meta,
        "spec": {
            "remediationRequestRef": rr_ref,
            "workflowRef": {
                "workflowId": workflow_id,
                "version": "1.0.0",
                "containerImage": bundle or default_bundle(),
            },
            "targetResource": target,
        },
    }


async def create_wfe(kube: AsyncClient, body: dict[str, Any], status: dict[str, Any] | None = None) -> dict[str, Any]:
    created = await kube.create(WorkflowExecutionResource(body))
    result: dict[str, Any] = created.to_dict()
    if status is not None:
        result = await set_wfe_status(kube, body["metadata"]["name"], body["metadata"]["namespace"], status)
    return result


async def set_wfe_status(kube: AsyncClient, name: str, namespace: str, status: dict[str, Any]) -> dict[str, Any]:
    updated = await patch_status(kube, WorkflowExecutionResource, name, namespace, status)
    body: dict[str, Any] = updated.to_dict()
    return body


def failed_wfe_status(
    completed: datetime, *, execution: bool, reason: str = "TaskFailed", summary: str = "it broke"
) -> dict[str, Any]:
    return {
        "phase": "Failed",
        "startTime": rfc3339(completed),
        "completionTime": rfc3339(completed),
        "failureDetails": {
            "failedTaskIndex": 0,
            "failedTaskName": "task-1" if execution else "",
            "reason": reason,
            "message": f"{reason}: {summary}",
            "exitCode": 3 if execution else None,
            "failedAt": rfc3339(completed),
            "executionTimeBeforeFailure": "5s" if execution else "",
            "naturalLanguageSummary": summary,
            "wasExecutionFailure": execution,
        },
    }


def completed_wfe_status(completed: datetime) -> dict[str, Any]:
    return {"phase": "Completed", "startTime": rfc3339(completed), "completionTime": rfc3339(completed)}


async def annotate_wfe(kube: AsyncClient, name: str, namespace: str, annotations: dict[str, str]) -> None:
    await patch_object(kube, WorkflowExecutionResource, name, namespace, {"metadata": {"annotations": annotations}})


async def notifications(kube: AsyncClient, namespace: str) -> list[dict[str, Any]]:
    return [n.to_dict() async for n in kube.list(NotificationRequestResource, namespace=namespace)]


async def wfes(kube: AsyncClient, namespace: str) -> list[dict[str, Any]]:
    return [w.to_dict() async for w in kube.list(WorkflowExecutionResource, namespace=namespace)]


async def wait_phase(
    kube: AsyncClient, name: str, namespace: str, *phases: str, timeout: float = 20.0, **fields: Any
) -> dict[str, Any]:
    """The request's status once its phase is one of `phases` (and the given fields have those values)."""

    last: dict[str, Any] = {}

    async def probe() -> dict[str, Any] | None:
        nonlocal last
        last = await rr_status(kube, name, namespace)
        if last.get("overallPhase") not in phases:
            return None
        return last if all(last.get(key) == value for key, value in fields.items()) else None

    try:
        return await eventually(probe, timeout=timeout, what=f"{namespace}/{name} in {phases} with {fields}")
    except AssertionError as exc:
        raise AssertionError(f"{exc}; status was {last}") from None


# -- watchers --------------------------------------------------------------------------------------


@dataclass
class Recorded:
    """Every watch event of one kind in one namespace, in order: (type, name, uid, body)."""

    events: list[tuple[str, str, str, dict[str, Any]]] = field(default_factory=list)

    def created(self) -> list[str]:
        return [name for type_, name, _, _ in self.events if type_ == "ADDED"]

    def uids(self) -> set[str]:
        return {uid for _, _, uid, _ in self.events}


@contextlib.asynccontextmanager
async def recording(kube: AsyncClient, resource: Any, namespace: str) -> AsyncIterator[Recorded]:
    """Watch a kind from the current resourceVersion on, so nothing after entry is missed."""
    recorded = Recorded()
    listing = kube.list(resource, namespace=namespace)
    async for obj in listing:
        name, uid = obj.metadata.name, obj.metadata.uid
        recorded.events.append(("EXISTING", name, uid, obj.to_dict()))
    version = listing.resourceVersion  # type: ignore[attr-defined]

    async def watch() -> None:
        async for type_, obj in kube.watch(resource, namespace=namespace, resource_version=version):
            recorded.events.append((type_, obj.metadata.name, obj.metadata.uid, obj.to_dict()))

    task = asyncio.create_task(watch())
    try:
        yield recorded
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError, ApiError):
            await task


async def pipelinerun_names(kube: AsyncClient, exec_ns: str) -> list[str]:
    return [p.metadata.name async for p in kube.list(PipelineRunResource, namespace=exec_ns)]


async def poke(kube: AsyncClient, name: str, namespace: str) -> None:
    """Touch a request's labels: a watch event that makes the orchestrator look at it now."""
    await patch_object(
        kube, RemediationRequestResource, name, namespace, {"metadata": {"labels": {"poked": uuid.uuid4().hex[:8]}}}
    )


def review_notifications(namespace: str, source: str, reason: str) -> float:
    labels = {"source": source, "reason": reason, "sub_reason": "none", "namespace": namespace}
    return metric(f"{RO}manual_review_notifications_total", labels)


def duplicates_skipped(namespace: str) -> float:
    return metric(f"{RO}duplicates_skipped_total", {"skip_reason": "DuplicateInProgress", "namespace": namespace})


def moves_of(audit: MemoryAuditSink, rr: str) -> list[tuple[str, str]]:
    """(from, to) of every phase.transitioned event of a request, in time order."""
    events = sorted(audit.of_type("orchestrator.phase.transitioned", rr), key=lambda e: e.event_time)
    return [(e.event_data["from_phase"], e.event_data["to_phase"]) for e in events]
