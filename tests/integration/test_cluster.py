"""The local control plane acts like a cluster: real built-in controllers and scheduler, pods played
by kwok on the fake node (only the kubelet is fake)."""

import uuid
from collections.abc import Awaitable, Callable
from typing import Any

from lightkube import AsyncClient
from lightkube.models.batch_v1 import JobSpec
from lightkube.models.core_v1 import Container, PodSpec, PodTemplateSpec
from lightkube.models.meta_v1 import ObjectMeta
from lightkube.resources.batch_v1 import Job
from lightkube.resources.core_v1 import ConfigMap, Namespace, Node, Pod, ServiceAccount

from kubernaut.devcluster.binaries import kube_version
from kubernaut.devcluster.controlplane import NODE_NAME, ControlPlane
from kubernaut.kube.resources import RemediationRequestResource, WorkflowExecutionResource
from tests.integration.harness import eventually, get_or_none
from tests.integration.orchestrator_support import create_rr, create_wfe, wfe_body
from tests.integration.rr import rr_manifest

# The garbage collector rediscovers served kinds every 30 s, so it may start watching our CRDs
# (installed after the control plane started) only that long after the first test.
_GC_DISCOVERY = 30.0


async def _wait_for(read: Callable[[], Awaitable[Any]], done: Callable[[Any], bool], what: str, timeout: float) -> Any:
    """`eventually`, failing with the last state read."""
    seen: list[Any] = [None]

    async def probe() -> tuple[Any] | None:
        seen[0] = await read()
        return (seen[0],) if done(seen[0]) else None  # a tuple: the awaited state may be None

    try:
        return (await eventually(probe, timeout=timeout, what=what))[0]
    except AssertionError as exc:
        raise AssertionError(f"{exc}\nlast state read: {seen[0]}") from None


def _job(name: str, namespace: str, annotations: dict[str, str] | None = None) -> Job:
    container = Container(name="main", image="fake.local/busybox", command=["true"])
    return Job(
        metadata=ObjectMeta(name=name, namespace=namespace),
        spec=JobSpec(
            backoffLimit=0,
            template=PodTemplateSpec(
                metadata=ObjectMeta(annotations=annotations),
                spec=PodSpec(restartPolicy="Never", containers=[container]),
            ),
        ),
    )


async def _job_state(kube: AsyncClient, name: str, namespace: str) -> dict[str, Any]:
    job = await kube.get(Job, name, namespace=namespace)
    pods = [pod async for pod in kube.list(Pod, namespace=namespace, labels={"job-name": name})]
    status = job.status
    return {
        "conditions": {c.type: (c.status, c.reason) for c in (status.conditions if status else None) or []},
        "pods": [(p.metadata.name, p.spec.nodeName, p.status.phase if p.status else None) for p in pods],
    }


def _condition(state: dict[str, Any], type_: str) -> bool:
    return bool(state["conditions"].get(type_, ("",))[0] == "True")


def test_version_is_the_pinned_release(control_plane: ControlPlane) -> None:
    assert control_plane.get_json("/version")["gitVersion"] == kube_version()


async def test_the_fake_node_is_ready(kube: AsyncClient) -> None:
    node = await kube.get(Node, NODE_NAME)
    assert node.status is not None
    assert {c.type: c.status for c in node.status.conditions or []}["Ready"] == "True"


async def test_a_job_runs_to_complete(kube: AsyncClient, namespace: str) -> None:
    await kube.create(_job("ok", namespace))
    state = await _wait_for(
        lambda: _job_state(kube, "ok", namespace),
        lambda s: _condition(s, "Complete"),
        "Job ok Complete",
        timeout=30,
    )
    [(_, node, phase)] = state["pods"]
    assert (node, phase) == (NODE_NAME, "Succeeded")


async def test_a_job_whose_pod_fails_ends_failed(kube: AsyncClient, namespace: str) -> None:
    await kube.create(_job("broken", namespace, {"fake.kubelet/fail": "main", "fake.kubelet/exit-code": "3"}))
    state = await _wait_for(
        lambda: _job_state(kube, "broken", namespace),
        lambda s: _condition(s, "Failed"),
        "Job broken Failed",
        timeout=30,
    )
    assert state["conditions"]["Failed"] == ("True", "BackoffLimitExceeded")
    [pod] = [pod async for pod in kube.list(Pod, namespace=namespace, labels={"job-name": "broken"})]
    assert pod.status is not None
    assert pod.status.phase == "Failed"
    [container] = pod.status.containerStatuses or []
    terminated = container.state.terminated if container.state else None
    assert terminated is not None
    assert (terminated.exitCode, terminated.reason) == (3, "Error")


async def test_deleting_a_request_deletes_its_executions(kube: AsyncClient, namespace: str) -> None:
    target = {"kind": "Deployment", "name": "api", "namespace": namespace}
    rr = await create_rr(kube, rr_manifest("rr-gc", namespace, target=target))
    await create_wfe(kube, wfe_body("we-gc", namespace, f"{namespace}/Deployment/api", owner=rr))
    await kube.delete(RemediationRequestResource, "rr-gc", namespace=namespace)
    await _wait_for(
        lambda: get_or_none(kube, WorkflowExecutionResource, "we-gc", namespace),
        lambda wfe: wfe is None,
        "the garbage collector to delete WorkflowExecution we-gc",
        timeout=_GC_DISCOVERY + 20,
    )


async def test_a_new_namespace_gets_its_default_service_account(kube: AsyncClient, namespace: str) -> None:
    account = await _wait_for(
        lambda: get_or_none(kube, ServiceAccount, "default", namespace),
        lambda sa: sa is not None,
        "ServiceAccount default",
        timeout=20,
    )
    assert account.metadata.name == "default"
    ca = await _wait_for(
        lambda: get_or_none(kube, ConfigMap, "kube-root-ca.crt", namespace),
        lambda cm: cm is not None,
        "ConfigMap kube-root-ca.crt",
        timeout=20,
    )
    assert "BEGIN CERTIFICATE" in ca.data["ca.crt"]


async def test_a_deleted_namespace_is_removed_with_its_contents(kube: AsyncClient) -> None:
    name = f"gone-{uuid.uuid4().hex[:10]}"  # not the `namespace` fixture: this test deletes it itself
    await kube.create(Namespace(metadata=ObjectMeta(name=name)))
    await kube.create(ConfigMap(metadata=ObjectMeta(name="data", namespace=name), data={"k": "v"}))
    await kube.delete(Namespace, name)

    await _wait_for(
        lambda: get_or_none(kube, Namespace, name, None),
        lambda ns: ns is None,
        f"namespace {name} to be removed",
        timeout=30,
    )
