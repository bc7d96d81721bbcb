"""Clock edges: instants that the API server stores to the second, and blocks that expire exactly
when their decision said. The domain tests already cover each check at its exact boundary (cooldown,
recent remediation, back-off, failure streak, block expiry); these cover what a round trip through
the API server does to those boundaries, in the domain and end to end with short real durations."""

from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from lightkube import AsyncClient

from kubernaut.api.audit import build_event_id
from kubernaut.api.v1alpha1.remediationrequest import RemediationRequest
from kubernaut.api.v1alpha1.workflowexecution import WorkflowExecution
from kubernaut.audit.factory import open_audit_sink
from kubernaut.domain import remediation as rem
from kubernaut.domain.routing import (
    BlockedAction,
    DecisionKind,
    RoutingPolicy,
    RoutingStage,
    decide_blocked,
    decide_routing,
)
from kubernaut.kube.resources import RemediationRequestResource
from tests.faults.support import deadline, read_audit, wait_locks_released
from tests.integration.harness import create_execution_namespace, eventually, running, settings_for
from tests.integration.rr import fingerprint, rr_manifest, rr_status
from tests.integration.tekton_support import played

pytestmark = pytest.mark.tekton

T0 = datetime(2025, 12, 15, 10, 0, 0, tzinfo=UTC)


def _rr(target: str = "Deployment/api") -> RemediationRequest:
    return RemediationRequest.from_wire(
        {
            "apiVersion": "kubernaut.ai/v1alpha1",
            "kind": "RemediationRequest",
            "metadata": {"name": "rr-1", "namespace": "ns", "uid": "u-1", "resourceVersion": "1"},
            "spec": {
                "signalFingerprint": fingerprint("clock"),
                "signalName": "Alert",
                "severity": "warning",
                "targetResource": {"kind": "Deployment", "name": "api", "namespace": "ns"},
            },
            "status": {"overallPhase": "Pending", "transitionCount": 1, "startTime": "2025-12-15T09:59:00Z"},
        }
    )


def _execution(phase: str, completed: datetime) -> WorkflowExecution:
    """A finished run on the target: Completed, or Failed before executing (an image pull)."""
    at = completed.strftime("%Y-%m-%dT%H:%M:%SZ")
    status: dict[str, Any] = {"phase": phase, "startTime": at, "completionTime": at}
    if phase == "Failed":
        status["failureDetails"] = {
            "failedTaskIndex": 0,
            "failedTaskName": "",
            "reason": "ImagePullBackOff",
            "message": "image pull failed",
            "failedAt": at,
            "executionTimeBeforeFailure": "",
            "naturalLanguageSummary": "failed before executing",
        }
    return WorkflowExecution.from_wire(
        {
            "apiVersion": "kubernaut.ai/v1alpha1",
            "kind": "WorkflowExecution",
            "metadata": {"name": "we-old", "namespace": "ns", "uid": "u-w", "creationTimestamp": at},
            "spec": {
                "remediationRequestRef": {"name": "rr-old", "namespace": "ns"},
                "workflowRef": {"workflowId": "wf", "version": "1", "containerImage": "img"},
                "targetResource": "ns/Deployment/api",
            },
            "status": status,
        }
    )


def _stored(rr: RemediationRequest, status: Any) -> RemediationRequest:
    """The request as the next pass reads it: written to the API server and read back (seconds)."""
    wire = rr.to_wire()
    wire["status"] = status.to_wire()
    return RemediationRequest.from_wire(wire)


@pytest.mark.parametrize(
    ("config", "previous"),
    [
        # The back-off delay carries jitter in nanoseconds: its end is almost never a whole second.
        (RoutingPolicy(backoff_base=timedelta(seconds=60), backoff_jitter_percent=10), "Failed"),
        (
            RoutingPolicy(recently_remediated_cooldown=timedelta(milliseconds=1500), backoff_jitter_percent=0),
            "Completed",
        ),
    ],
    ids=["jittered-backoff", "sub-second-cooldown"],
)
def test_a_stored_block_never_ends_before_its_decision(config: RoutingPolicy, previous: str) -> None:
    """A block ending at a fraction of a second is stored to the second. When the stored block lets
    the request go, routing must let it through: resuming into the same block again would cost two
    transitions, two audit events and a wasted pass."""
    history = [_execution(previous, T0 - timedelta(seconds=1))]
    rr = _rr()

    def route(request: RemediationRequest, now: datetime) -> Any:
        return decide_routing(
            request,
            workflow_id="wf",
            stage=RoutingStage.PENDING,
            same_fingerprint=[request],
            same_target=history,
            lock=None,
            now=now,
            config=config,
        )

    def expiry(request: RemediationRequest, now: datetime) -> BlockedAction:
        return decide_blocked(
            request, original=None, original_exists=True, same_target=history, lock=None, now=now
        ).action

    decision = route(rr, T0)
    assert decision.kind == DecisionKind.BLOCK
    assert decision.blocked_until is not None
    blocked = _stored(rr, rem.build_blocked_status(rr, decision, rr.status.overall_phase))
    until = blocked.status.blocked_until
    assert until is not None
    assert until >= decision.blocked_until, f"stored {until}, decided {decision.blocked_until}"
    assert until - decision.blocked_until < timedelta(seconds=1)
    assert expiry(blocked, until - timedelta(microseconds=1)) == BlockedAction.STAY
    assert expiry(blocked, until) == BlockedAction.RESUME
    assert route(blocked, until).kind == DecisionKind.PROCEED


@pytest.mark.integration
@deadline()
async def test_backoff_with_jitter_blocks_once_and_resumes_once(
    kube: AsyncClient, kubeconfig: Path, namespace: str, tmp_path: Path
) -> None:
    """End to end with real short durations: a pre-execution failure puts the target in a jittered
    back-off; the next request is Blocked exactly once and runs when the back-off ends."""
    exec_ns = await create_execution_namespace(kube)
    audit_db = tmp_path / "audit.db"
    settings = settings_for(
        exec_ns,
        execution={"cooldown": "1s"},
        routing={"backoffBase": "4s", "backoffMax": "8s", "backoffJitterPercent": 10},
        audit={"url": f"sqlite:///{audit_db}", "flushInterval": "100ms"},
    )
    target = {"kind": "Deployment", "name": "api", "namespace": namespace}
    async with (
        open_audit_sink(settings.audit) as audit,
        running(kubeconfig, settings, ("orchestrator", "executor"), audit=audit),
    ):
        await kube.create(
            RemediationRequestResource(rr_manifest("rr-pull", namespace, target=target, bundle=played("imagepull:0s")))
        )

        async def failed() -> bool:
            return (await rr_status(kube, "rr-pull", namespace)).get("overallPhase") == "Failed"

        await eventually(failed, timeout=30, what="rr-pull Failed before executing")
        await wait_locks_released(kube, exec_ns, 1.0, timeout=10)  # so that only the back-off holds rr-next
        await kube.create(
            RemediationRequestResource(
                rr_manifest("rr-next", namespace, target=target, bundle=played("succeed:1tasks-0s"))
            )
        )

        async def done() -> dict[str, Any] | None:
            status = await rr_status(kube, "rr-next", namespace)
            return status if status.get("overallPhase") == "Completed" else None

        status = await eventually(done, timeout=40, what="rr-next Completed after the back-off")
    uid = (await kube.get(RemediationRequestResource, "rr-next", namespace=namespace)).metadata.uid
    events = [e for e in await read_audit(audit_db) if e.resource_id == "rr-next"]
    blocks = [e for e in events if e.event_type == "orchestrator.routing.blocked"]
    assert [b.event_data["block_reason"] for b in blocks] == ["ExponentialBackoff"], [
        (e.event_type, e.event_data.get("to_phase")) for e in events
    ]
    # Pending, Blocked, Pending (resumed), Analyzing, Executing, Completed.
    assert status["transitionCount"] == 6
    assert build_event_id(uid, "orchestrator.lifecycle.completed", "6") in {e.event_id for e in events}
