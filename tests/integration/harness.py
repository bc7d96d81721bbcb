"""Running the controllers in-process against the real API server, and waiting on outcomes."""

import asyncio
import contextlib
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any, TypeVar

from lightkube import AsyncClient
from lightkube.core.exceptions import ApiError
from lightkube.models.meta_v1 import ObjectMeta
from lightkube.resources.core_v1 import Event, Namespace, Node, ServiceAccount

from kubernaut.audit.memory import MemoryAuditSink
from kubernaut.audit.store import AuditSink
from kubernaut.config import Settings, parse_settings
from kubernaut.controllers.manager import Manager, build_manager, utc_now
from kubernaut.devcluster.controlplane import ControlPlane
from kubernaut.domain.gates import MANAGED_LABEL
from kubernaut.kube.client import install_crds, make_client
from kubernaut.paths import crd_paths

T = TypeVar("T")


async def eventually(
    probe: Callable[[], Awaitable[T | None]], *, timeout: float = 20.0, interval: float = 0.05, what: str = ""
) -> T:
    """Poll until `probe` returns something truthy; after `timeout` seconds fail naming `what`, with
    the state of every kubernaut and Tekton object in the test's namespaces (what it was waiting on)."""
    deadline = time.monotonic() + timeout
    last: Any = None
    while time.monotonic() < deadline:
        last = await probe()
        if last:
            return last
        await asyncio.sleep(interval)
    raise AssertionError(
        f"timed out after {timeout}s waiting for {what or probe}; last value: {last!r}\n{await describe_state()}"
    )


STATE_KUBECONFIG: list[Path] = []
"""The kubeconfig of the control plane the current tests use (set by the `kubeconfig` fixtures)."""

_STATE_ROWS = 60  # per kind: enough to see a stuck queue, short enough to read


async def describe_state(namespaces: list[str] | None = None) -> str:
    """One line per RemediationRequest, WorkflowExecution, PipelineRun, TaskRun and Job in `namespaces`
    (default: the test's): phases, block reasons, conditions. Read with a client of its own, so that a
    wedged shared client cannot hide the state."""
    if not STATE_KUBECONFIG:
        return "(no control plane to describe)"
    from kubernaut.kube.resources import (
        JobResource,
        PipelineRunResource,
        RemediationRequestResource,
        TaskRunResource,
        WorkflowExecutionResource,
    )

    kinds = [
        ("RemediationRequest", RemediationRequestResource, _describe_rr),
        ("WorkflowExecution", WorkflowExecutionResource, _describe_wfe),
        ("PipelineRun", PipelineRunResource, _describe_run),
        ("TaskRun", TaskRunResource, _describe_run),
        ("Job", JobResource, _describe_job),
    ]
    client = make_client(STATE_KUBECONFIG[-1], timeout=5.0)
    lines = ["state at timeout:"]
    try:
        for namespace in namespaces if namespaces is not None else list(TEST_NAMESPACES):
            for kind, resource, describe in kinds:
                try:
                    found = [dict(obj) async for obj in client.list(resource, namespace=namespace)]
                except Exception as exc:  # the report must not hide the timeout
                    lines.append(f"  {kind}s in {namespace}: cannot list ({exc})")
                    continue
                found.sort(key=lambda body: body["metadata"].get("creationTimestamp") or "")
                for body in found[:_STATE_ROWS]:
                    lines.append(f"  {kind} {namespace}/{body['metadata']['name']}: {describe(body)}")
                if len(found) > _STATE_ROWS:
                    lines.append(f"  ... and {len(found) - _STATE_ROWS} more {kind}s in {namespace}")
    finally:
        await client.close()
    return "\n".join(lines)


def _describe_rr(body: dict[str, Any]) -> str:
    status = body.get("status") or {}
    parts = [f"phase={status.get('overallPhase')}"]
    for key in ("blockReason", "blockedUntil", "outcome", "message"):
        if status.get(key):
            parts.append(f"{key}={str(status[key])[:120]}")
    return " ".join(parts)


def _describe_wfe(body: dict[str, Any]) -> str:
    status = body.get("status") or {}
    parts = [f"phase={status.get('phase')}"]
    failure = status.get("failureDetails") or {}
    if failure:
        parts.append(f"failure={failure.get('reason')}: {str(failure.get('message', ''))[:120]}")
    return " ".join(parts)


def _describe_run(body: dict[str, Any]) -> str:
    """A PipelineRun's or TaskRun's Succeeded condition, start time and children."""
    status = body.get("status") or {}
    conditions = status.get("conditions") or []
    succeeded = next((c for c in conditions if c.get("type") == "Succeeded"), None)
    condition = (
        f"Succeeded={succeeded.get('status')}/{succeeded.get('reason')} {str(succeeded.get('message', ''))[:120]!r}"
        if succeeded
        else "no Succeeded condition"
    )
    parts = [condition, f"startTime={status.get('startTime')}"]
    if "childReferences" in status:
        parts.append(f"children={[child.get('name') for child in status['childReferences'] or []]}")
    if (body["metadata"].get("deletionTimestamp")) is not None:
        parts.append("deleting")
    return " ".join(parts)


class OffsetClock:
    """Real time plus an offset the test can advance (the controllers take it as their clock)."""

    def __init__(self) -> None:
        self.offset = timedelta(0)

    def __call__(self) -> datetime:
        return utc_now() + self.offset

    def advance(self, seconds: float) -> None:
        self.offset += timedelta(seconds=seconds)


TEST_NAMESPACES: list[str] = []
"""Namespaces made by the current test. Controllers started by `running` watch only these: the local
control plane has no namespace controller, so objects of earlier tests live on and must stay unseen."""


def track_namespace(name: str) -> str:
    TEST_NAMESPACES.append(name)
    return name


MANAGED = {MANAGED_LABEL: "true"}
"""The opt-in label: a test's namespaces are managed, as a person would label theirs."""

TEST_THROUGHPUT: dict[str, Any] = {
    "limits": {
        "maxConcurrentExecutions": 1000,
        "maxExecutionsPerHour": 100_000,
        "perNamespace": {"maxExecutionsPerHour": 100_000},
    },
    "breaker": {"failureThreshold": 1000},
}
"""Tests run hundreds of executions, many failing on purpose, within minutes: the rate limits and the
breaker are raised out of their way; their own tests set them."""


async def create_namespace(client: AsyncClient, prefix: str = "x", *, managed: bool = True) -> str:
    name = f"{prefix}-{uuid.uuid4().hex[:10]}"
    await client.create(Namespace(metadata=ObjectMeta(name=name, labels=MANAGED if managed else None)))
    return track_namespace(name)


async def install_kinds(client: AsyncClient, plane: ControlPlane, paths: list[Path]) -> None:
    """Install CRDs, then restart the controller manager: its garbage collector watches their kinds
    at once (a PipelineRun released in the foreground goes), not from its next discovery in 30 s."""
    await install_crds(client, paths)
    await asyncio.to_thread(plane.restart_controller_manager)


@contextlib.asynccontextmanager
async def admin_client(plane: ControlPlane, *, tekton_runs: bool) -> AsyncIterator[AsyncClient]:
    """An admin client of `plane` with our kinds installed, and Tekton's unless Tekton runs there
    (it installs its own)."""
    client = make_client(plane.kubeconfig)
    try:
        await install_kinds(client, plane, crd_paths(tekton_crds=not tekton_runs))
        yield client
    finally:
        await client.close()


RUNNER_SERVICE_ACCOUNT = "kubernaut-workflow-runner"


async def create_execution_namespace(client: AsyncClient) -> str:
    """A namespace for the runs, with the ServiceAccount their pods run as (Tekton cannot create a pod
    for a ServiceAccount that does not exist)."""
    name = await create_namespace(client, "exec")
    await client.create(ServiceAccount(metadata=ObjectMeta(name=RUNNER_SERVICE_ACCOUNT, namespace=name)))
    return name


async def create_node(client: AsyncClient, prefix: str = "node") -> str:
    """A Node object (no kubelet behind it) carrying the opt-in label, for cluster-scoped targets."""
    name = f"{prefix}-{uuid.uuid4().hex[:10]}"
    await client.create(Node(metadata=ObjectMeta(name=name, labels=MANAGED)))
    return name


def settings_for(execution_namespace: str, **sections: dict[str, Any]) -> Settings:
    data: dict[str, Any] = {
        "execution": {"namespace": execution_namespace},
        "audit": {"url": "memory://"},
        **TEST_THROUGHPUT,
    }
    for key, value in sections.items():
        data[key] = {**data.get(key, {}), **value}
    return parse_settings(data)


@contextlib.asynccontextmanager
async def running(
    kubeconfig: Path,
    settings: Settings,
    controllers: tuple[str, ...],
    *,
    audit: AuditSink | None = None,
    clock: Callable[[], datetime] = utc_now,
    namespaces: tuple[str, ...] | None = None,
) -> AsyncIterator[Manager]:
    """The controllers of one process, started in this event loop and stopped afterwards; they watch
    `namespaces` (default: the namespaces this test made) plus cluster-scoped kinds."""
    manager = build_manager(
        settings, kubeconfig=kubeconfig, controllers=controllers, audit=audit or MemoryAuditSink(), clock=clock
    )
    manager.namespaces = tuple(TEST_NAMESPACES if namespaces is None else namespaces)
    # Leaving the block stops gracefully, as `kubernaut run` does: a pass that has written a status
    # also counts its metrics before the workers stop.
    manager.drain_timeout = 10.0
    stop, ready = asyncio.Event(), asyncio.Event()
    task = asyncio.create_task(manager.run(stop, ready))
    waiter = asyncio.ensure_future(ready.wait())
    await asyncio.wait([task, waiter], return_when=asyncio.FIRST_COMPLETED, timeout=30)
    if task.done():
        task.result()
    try:
        yield manager
    finally:
        stop.set()
        waiter.cancel()
        await asyncio.wait_for(task, 30)
        await manager.client.close()


async def settled(manager: Manager, *, timeout: float = 10.0) -> None:
    """Wait until no controller of `manager` has a pass ready or running. A pass counts its metrics
    after its status write, so a test that has seen the status calls this before reading them."""

    async def quiet() -> bool:
        return not any(c.queue.busy() for c in manager.controllers)

    names = [c.name for c in manager.controllers]
    await eventually(quiet, timeout=timeout, what=f"no pass ready or running in {names}")


async def events_for(client: AsyncClient, namespace: str, name: str) -> list[tuple[str, str, str]]:
    """(type, reason, message) of the Kubernetes Events about one object."""
    found = []
    async for event in client.list(Event, namespace=namespace):
        if event.involvedObject.name == name:
            found.append((event.type or "", event.reason or "", event.message or ""))
    return found


async def get_or_none(client: AsyncClient, resource: Any, name: str, namespace: str | None) -> Any:
    try:
        return await client.get(resource, name, namespace=namespace)
    except ApiError as exc:
        if exc.status.code == 404:
            return None
        raise


def _describe_job(body: dict[str, Any]) -> str:
    """A Job's True conditions, pod counts and whether it is being deleted."""
    status = body.get("status") or {}
    true = [f"{c.get('type')}/{c.get('reason')}" for c in status.get("conditions") or [] if c.get("status") == "True"]
    parts = [f"conditions={true}"]
    parts += [f"{key}={status[key]}" for key in ("active", "succeeded", "failed", "terminating") if status.get(key)]
    if body["metadata"].get("deletionTimestamp") is not None:
        parts.append(f"deleting finalizers={body['metadata'].get('finalizers')}")
    return " ".join(parts)


async def hold_lock(
    client: AsyncClient, lock: str, exec_ns: str, *, holder: str, source_namespace: str, target: str | None = None
) -> Any:
    """A PipelineRun named `lock` of another execution (`holder` in `source_namespace`): the target's
    lock, held by somebody else. Nothing runs it."""
    from kubernaut.kube.resources import PipelineRunResource

    metadata: dict[str, Any] = {
        "name": lock,
        "namespace": exec_ns,
        "labels": {"kubernaut.ai/workflow-execution": holder, "kubernaut.ai/source-namespace": source_namespace},
    }
    if target is not None:
        metadata["annotations"] = {"kubernaut.ai/target-resource": target}
    body = {
        "apiVersion": "tekton.dev/v1",
        "kind": "PipelineRun",
        "metadata": metadata,
        "spec": {"pipelineRef": {"resolver": "bundles", "params": []}},
    }
    return await client.create(PipelineRunResource(body))
