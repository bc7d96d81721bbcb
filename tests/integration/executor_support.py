"""Shared pieces of the executor integration tests: manifests, probes, a stepped clock, fault hooks.

No tests live here; the module name only keeps it beside the tests that use it.
"""

import asyncio
import contextlib
import gc
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx2 as httpx
import pytest_asyncio
from lightkube import AsyncClient
from lightkube.core.exceptions import ApiError
from lightkube.types import PatchType
from prometheus_client import REGISTRY

from kubernaut.audit.memory import MemoryAuditSink
from kubernaut.config import Settings
from kubernaut.controllers.executor import Executor
from kubernaut.controllers.manager import Manager, build_manager
from kubernaut.kube.client import patch_status
from kubernaut.kube.resources import PipelineRunResource, TaskRunResource, WorkflowExecutionResource
from tests.integration.harness import events_for, eventually, get_or_none

FINALIZER = "workflowexecution.kubernaut.ai/workflowexecution-cleanup"
CREATIONS = "workflowexecution_reconciler_pipelinerun_creations_total"
OUTCOMES = "workflowexecution_reconciler_total"
DURATIONS = "workflowexecution_reconciler_duration_seconds"


def wfe_manifest(name: str, namespace: str, target: str, **spec: Any) -> dict[str, Any]:
    """A WorkflowExecution as the orchestrator would create it; `spec` keys override or add."""
    labels = spec.pop("labels", None)
    annotations = spec.pop("annotations", None)
    workflow = {
        "workflowId": spec.pop("workflowId", "restart-pod"),
        "version": "1.0.0",
        "containerImage": spec.pop("containerImage", "registry.example/workflows/restart-pod:1.0.0"),
    }
    body: dict[str, Any] = {
        "apiVersion": "kubernaut.ai/v1alpha1",
        "kind": "WorkflowExecution",
        "metadata": {"name": name, "namespace": namespace},
        "spec": {
            "remediationRequestRef": {
                "apiVersion": "kubernaut.ai/v1alpha1",
                "kind": "RemediationRequest",
                "name": "rr-x",
                "namespace": namespace,
            },
            "workflowRef": workflow,
            "targetResource": target,
            **spec,
        },
    }
    if labels:
        body["metadata"]["labels"] = labels
    if annotations:
        body["metadata"]["annotations"] = annotations
    return body


async def create_wfe(kube: AsyncClient, name: str, namespace: str, target: str, **spec: Any) -> dict[str, Any]:
    created = await kube.create(WorkflowExecutionResource(wfe_manifest(name, namespace, target, **spec)))
    body: dict[str, Any] = created.to_dict()
    return body


def metric(name: str, labels: dict[str, str] | None = None) -> float:
    return REGISTRY.get_sample_value(name, labels or {}) or 0.0


class Metrics:
    """A snapshot of the executor's metrics; `delta` says what changed since."""

    SAMPLES = (
        (CREATIONS, {}),
        (OUTCOMES, {"outcome": "Completed"}),
        (OUTCOMES, {"outcome": "Failed"}),
        (f"{DURATIONS}_count", {"outcome": "Completed"}),
        (f"{DURATIONS}_sum", {"outcome": "Completed"}),
        (f"{DURATIONS}_count", {"outcome": "Failed"}),
        (f"{DURATIONS}_sum", {"outcome": "Failed"}),
        (f"{DURATIONS}_bucket", {"outcome": "Completed", "le": "80.0"}),
        (f"{DURATIONS}_bucket", {"outcome": "Completed", "le": "160.0"}),
        (f"{DURATIONS}_bucket", {"outcome": "Failed", "le": "5.0"}),
    )

    def __init__(self) -> None:
        self.before = self._read()

    @classmethod
    def _read(cls) -> dict[str, float]:
        return {cls.key(name, labels): metric(name, labels) for name, labels in cls.SAMPLES}

    @staticmethod
    def key(name: str, labels: dict[str, str]) -> str:
        inner = ",".join(f"{k}={v}" for k, v in sorted(labels.items()))
        return f"{name}{{{inner}}}"

    def delta(self) -> dict[str, float]:
        """Only the samples that changed (rounded: a histogram sum accumulates floating-point noise)."""
        now = self._read()
        return {k: round(now[k] - self.before[k], 6) for k in now if now[k] != self.before[k]}


def sample(name: str, **labels: str) -> str:
    return Metrics.key(name, labels)


async def wfe_body(kube: AsyncClient, name: str, namespace: str) -> dict[str, Any]:
    obj = await kube.get(WorkflowExecutionResource, name, namespace=namespace)
    body: dict[str, Any] = obj.to_dict()
    return body


async def wfe_status(kube: AsyncClient, name: str, namespace: str) -> dict[str, Any]:
    status: dict[str, Any] = (await wfe_body(kube, name, namespace)).get("status") or {}
    return status


async def wait_phase(
    kube: AsyncClient, name: str, namespace: str, phase: str, *, timeout: float = 15.0
) -> dict[str, Any]:
    async def probe() -> dict[str, Any] | None:
        status = await wfe_status(kube, name, namespace)
        return status if status.get("phase") == phase else None

    return await eventually(probe, timeout=timeout, what=f"{namespace}/{name} {phase}")


async def wait_status(
    kube: AsyncClient,
    name: str,
    namespace: str,
    predicate: Callable[[dict[str, Any]], bool],
    what: str,
    *,
    timeout: float = 15.0,
) -> dict[str, Any]:
    async def probe() -> dict[str, Any] | None:
        status = await wfe_status(kube, name, namespace)
        return status if predicate(status) else None

    return await eventually(probe, timeout=timeout, what=what)


def condition(status: dict[str, Any], type_: str) -> dict[str, Any]:
    found: dict[str, Any] = next((c for c in status.get("conditions", []) if c["type"] == type_), {})
    return found


async def pipelineruns(kube: AsyncClient, namespace: str) -> list[dict[str, Any]]:
    return [obj.to_dict() async for obj in kube.list(PipelineRunResource, namespace=namespace)]


async def patch_pipelinerun_status(kube: AsyncClient, name: str, namespace: str, status: dict[str, Any]) -> None:
    """The test plays Tekton: it writes the PipelineRun status as Tekton's controller would."""
    await patch_status(kube, PipelineRunResource, name, namespace, status)


def succeeded(status: str, reason: str, message: str = "") -> dict[str, Any]:
    return {"conditions": [{"type": "Succeeded", "status": status, "reason": reason, "message": message}]}


async def create_taskrun(kube: AsyncClient, name: str, namespace: str, status: dict[str, Any]) -> None:
    await kube.create(
        TaskRunResource(
            {
                "apiVersion": "tekton.dev/v1",
                "kind": "TaskRun",
                "metadata": {"name": name, "namespace": namespace},
                "spec": {"taskRef": {"name": name}},
            }
        )
    )
    await patch_status(kube, TaskRunResource, name, namespace, status)


def rfc3339(moment: datetime) -> str:
    return moment.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def parse_time(text: str) -> datetime:
    return datetime.fromisoformat(text.replace("Z", "+00:00"))


class SteppedClock:
    """A clock that stands still until the test moves it (starts on a whole second)."""

    def __init__(self, start: datetime | None = None) -> None:
        self.now = (start or datetime.now(UTC)).replace(microsecond=0)

    def __call__(self) -> datetime:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += timedelta(seconds=seconds)

    def set(self, moment: datetime) -> None:
        self.now = moment


def executor_of(manager: Manager) -> Executor:
    """The Executor a manager built: the one whose controller the manager runs."""
    for obj in gc.get_objects():
        if isinstance(obj, Executor) and any(obj.controller is c for c in manager.controllers):
            return obj
    raise AssertionError("the manager runs no executor")


@contextlib.asynccontextmanager
async def idle_executor(
    kubeconfig: Path, settings: Settings, *, clock: Callable[[], datetime], audit: Any = None
) -> AsyncIterator[tuple[Manager, Executor]]:
    """An executor whose caches are filled by LIST but whose workers do not run: the test drives
    each reconcile pass itself and sees its result (`manager.prime()` again to refresh)."""
    manager = build_manager(
        settings, kubeconfig=kubeconfig, controllers=("executor",), audit=audit or MemoryAuditSink(), clock=clock
    )
    try:
        await manager.prime()
        yield manager, executor_of(manager)
    finally:
        await manager.client.close()


@dataclass
class PipelineRunWatch:
    """Every PipelineRun event in one namespace from the moment `start` returns."""

    client: AsyncClient
    namespace: str
    events: list[tuple[str, str, str]] = field(default_factory=list)  # (type, name, uid)
    _task: asyncio.Task[None] | None = None

    async def start(self) -> None:
        listing = self.client.list(PipelineRunResource, namespace=self.namespace)
        async for obj in listing:
            self.events.append(("EXISTING", obj.metadata.name, obj.metadata.uid))
        self._task = asyncio.create_task(self._watch(str(listing.resourceVersion)))

    async def _watch(self, resource_version: str) -> None:
        async for kind, obj in self.client.watch(
            PipelineRunResource, namespace=self.namespace, resource_version=resource_version
        ):
            self.events.append((kind, obj.metadata.name, obj.metadata.uid))

    async def stop(self) -> None:
        if self._task:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task

    @property
    def created(self) -> list[tuple[str, str]]:
        """(name, uid) of every PipelineRun that came into existence."""
        return [(name, uid) for kind, name, uid in self.events if kind == "ADDED"]

    def max_alive(self) -> int:
        """The most PipelineRuns that existed at the same time."""
        alive: set[str] = set()
        most = 0
        for kind, _name, uid in self.events:
            if kind in ("ADDED", "EXISTING"):
                alive.add(uid)
            elif kind == "DELETED":
                alive.discard(uid)
            most = max(most, len(alive))
        return most


@contextlib.asynccontextmanager
async def watching_pipelineruns(client: AsyncClient, namespace: str) -> AsyncIterator[PipelineRunWatch]:
    watch = PipelineRunWatch(client, namespace)
    await watch.start()
    try:
        yield watch
    finally:
        await watch.stop()


def api_error(code: int, reason: str, message: str) -> ApiError:
    """An ApiError exactly as lightkube raises it: from the API server's Status response."""
    request = httpx.Request("POST", "https://127.0.0.1/apis/tekton.dev/v1/namespaces/x/pipelineruns")
    response = httpx.Response(
        code,
        json={
            "kind": "Status",
            "apiVersion": "v1",
            "metadata": {},
            "status": "Failure",
            "message": message,
            "reason": reason,
            "code": code,
        },
        request=request,
    )
    return ApiError(request=request, response=response)


def fail_pipelinerun_creates(manager: Manager, errors: list[ApiError]) -> list[str]:
    """Make the next PipelineRun creates raise `errors` in order (then behave); returns a log of attempts."""
    real_create = manager.client.create
    attempts: list[str] = []

    async def create(obj: Any, *args: Any, **kwargs: Any) -> Any:
        if isinstance(obj, PipelineRunResource):
            attempts.append(obj.metadata.name)
            if errors:
                raise errors.pop(0)
        return await real_create(obj, *args, **kwargs)

    manager.client.create = create  # type: ignore[method-assign]
    return attempts


def on_wfe_status_patch(manager: Manager, hook: Callable[[str, dict[str, Any]], Awaitable[None]]) -> None:
    """Run `hook(name, patch body)` before every WorkflowExecution status patch the manager sends."""
    real_patch = manager.client.patch

    async def patch(res: Any, name: str, obj: Any, *args: Any, **kwargs: Any) -> Any:
        if res is WorkflowExecutionResource.Status:
            await hook(name, obj)
        return await real_patch(res, name, obj, *args, **kwargs)

    manager.client.patch = patch  # type: ignore[method-assign]


def event_reasons(events: list[tuple[str, str, str]]) -> list[str]:
    return sorted(reason for _type, reason, _message in events)


async def remove_all_wfes(kube: AsyncClient) -> None:
    """Delete every WorkflowExecution in the cluster at once (finalizers dropped).

    Namespaces never finish terminating on a control plane without controllers, so WFEs of earlier
    tests would otherwise be picked up by the next test's executor (cluster-wide watch)."""
    async for obj in kube.list(WorkflowExecutionResource, namespace="*"):
        name, namespace = obj.metadata.name, obj.metadata.namespace
        with contextlib.suppress(ApiError):
            await kube.patch(
                WorkflowExecutionResource,
                name,
                {"metadata": {"finalizers": None}},
                namespace=namespace,
                patch_type=PatchType.MERGE,
            )
        with contextlib.suppress(ApiError):
            await kube.delete(WorkflowExecutionResource, name, namespace=namespace)


@pytest_asyncio.fixture(loop_scope="session")
async def isolated_wfes(kube: AsyncClient) -> AsyncIterator[None]:
    """No WorkflowExecution of another test is around while this one runs."""
    await remove_all_wfes(kube)
    yield
    await remove_all_wfes(kube)


async def wait_events(kube: AsyncClient, namespace: str, name: str, reason: str) -> list[tuple[str, str, str]]:
    """The Events of one reason about an object, once there is at least one (Events follow the
    status write they describe)."""

    async def probe() -> list[tuple[str, str, str]]:
        return [e for e in await events_for(kube, namespace, name) if e[1] == reason]

    return await eventually(probe, what=f"Event {reason} for {namespace}/{name}")


async def wait_run_gone(kube: AsyncClient, name: str, namespace: str, timeout: float = 40.0) -> None:
    """Until the PipelineRun `name` is gone: released in the foreground, it goes once the garbage
    collector has deleted its TaskRuns (it finds new kinds by discovery every 30 s)."""

    async def gone() -> bool:
        return await get_or_none(kube, PipelineRunResource, name, namespace) is None

    await eventually(gone, timeout=timeout, what=f"PipelineRun {namespace}/{name} gone")
