"""The admission webhook on a real API server, registered with the shipped configurations: bad objects
are refused with a message a person understands, the clearance annotation names whoever set it and
cannot be written by hand, kubernaut's own controllers are never sent, and the failure policies hold
when the webhook is down."""

import copy
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
import pytest_asyncio
from lightkube import AsyncClient
from lightkube.core.exceptions import ApiError
from lightkube.generic_resource import GenericGlobalResource, GenericNamespacedResource
from lightkube.types import PatchType

from kubernaut.devcluster.webhook import DevWebhook, start_dev_webhook
from kubernaut.kube.client import make_client
from kubernaut.kube.resources import (
    RemediationRequestResource,
    RemediationWorkflowResource,
    WorkflowExecutionResource,
)
from tests.integration.operator_process import ProductionCluster, cluster
from tests.integration.rr import rr_manifest

__all__ = ["cluster"]  # the fixture, imported for pytest

CLEAR = "kubernaut.ai/clear-execution-block"
BY = "kubernaut.ai/execution-block-cleared-by"
ADMIN = "kubernaut-admin"  # the user of the control plane's admin kubeconfig
BUNDLE = "ghcr.io/acme/workflows/restart-pod:v1.2.0"


@pytest_asyncio.fixture(loop_scope="session")
async def webhook(cluster: ProductionCluster, tmp_path: Path) -> AsyncIterator[DevWebhook]:
    served = await start_dev_webhook(cluster.admin, tmp_path)
    try:
        yield served
    finally:
        await served.stop(cluster.admin)


def rr(name: str, namespace: str, **spec: Any) -> dict[str, Any]:
    body = rr_manifest(name, namespace, target={"kind": "Deployment", "name": "api", "namespace": namespace})
    body["spec"].update(spec)
    return body


def wfe(name: str, namespace: str, annotations: dict[str, str] | None = None, **spec: Any) -> dict[str, Any]:
    body: dict[str, Any] = {
        "apiVersion": "kubernaut.ai/v1alpha1",
        "kind": "WorkflowExecution",
        "metadata": {"name": name, "namespace": namespace, "annotations": annotations or {}},
        "spec": {
            "remediationRequestRef": {"kind": "RemediationRequest", "name": "rr-x", "namespace": namespace},
            "workflowRef": {"workflowId": "restart", "version": "1", "containerImage": BUNDLE},
            "targetResource": f"{namespace}/Deployment/api",
        },
    }
    body["spec"].update(spec)
    return body


def workflow(name: str, **spec: Any) -> dict[str, Any]:
    body: dict[str, Any] = {
        "apiVersion": "kubernaut.ai/v1alpha1",
        "kind": "RemediationWorkflow",
        "metadata": {"name": name},
        "spec": {"workflowId": name, "version": "1.0.0", "containerImage": BUNDLE},
    }
    body["spec"].update(spec)
    return body


def resource_of(body: dict[str, Any]) -> Any:
    return {
        "RemediationRequest": RemediationRequestResource,
        "WorkflowExecution": WorkflowExecutionResource,
        "RemediationWorkflow": RemediationWorkflowResource,
    }[body["kind"]]


async def create(client: AsyncClient, body: dict[str, Any]) -> GenericNamespacedResource | GenericGlobalResource:
    return await client.create(resource_of(body)(body))


# Each case: a bad object and what the refusal must say (after the API server's own prefix).
BAD = [
    (
        "target kind",
        lambda ns: rr("bad-kind", ns, targetResource={"kind": "deploy ment", "name": "api", "namespace": ns}),
        "RemediationRequest bad-kind is not valid: spec.targetResource: targetResource kind 'deploy ment' is not a "
        "valid kind (letters and digits, at most 63 characters)",
    ),
    (
        "target namespace",
        lambda ns: rr("bad-ns", ns, targetResource={"kind": "Deployment", "name": "api", "namespace": "Prod_1"}),
        "targetResource namespace 'Prod_1' is not a valid namespace name",
    ),
    (
        "request bundle",
        lambda ns: rr("bad-bundle", ns, workflowRef={"workflowId": "w", "containerImage": "https://ghcr.io/a/b:1"}),
        "spec.workflowRef.containerImage 'https://ghcr.io/a/b:1' must not start with a scheme such as https://",
    ),
    (
        "request parameter",
        lambda ns: rr("bad-param", ns, workflowRef={"workflowId": "w", "parameters": {"replicas": "3"}}),
        "spec.workflowRef.parameters: parameter name 'replicas' must be UPPER_SNAKE_CASE",
    ),
    (
        "request timeout",
        lambda ns: rr("bad-timeout", ns, timeoutConfig={"executing": "ten minutes"}),
        "spec.timeoutConfig.executing 'ten minutes' is not a duration; use Go notation such as 90s, 5m or 1h30m",
    ),
    (
        "execution target",
        lambda ns: wfe("we-bad-target", ns, targetResource="Deployment"),
        "WorkflowExecution we-bad-target is not valid: spec.targetResource: targetResource must have the format "
        "{namespace}/{kind}/{name} or {kind}/{name}, got 1 parts",
    ),
    (
        "execution parameter",
        lambda ns: wfe("we-bad-param", ns, parameters={"memory-limit": "1Gi"}),
        "spec.parameters: parameter name 'memory-limit' must be UPPER_SNAKE_CASE (A-Z, 0-9 and _, starting with a "
        "letter), e.g. MEMORY_LIMIT",
    ),
    (
        "execution reserved parameter",
        lambda ns: wfe("we-reserved", ns, parameters={"TARGET_RESOURCE": "x"}),
        "spec.parameters: parameter TARGET_RESOURCE is set by kubernaut from the target; remove it",
    ),
    (
        "execution empty bundle",
        lambda ns: wfe("we-no-bundle", ns, workflowRef={"workflowId": "w", "version": "1", "containerImage": " "}),
        "spec.workflowRef.containerImage is required: the OCI reference of the Tekton bundle, e.g. "
        "ghcr.io/acme/workflows/restart-pod:v1.2.0",
    ),
    (
        "workflow bundle case",
        lambda ns: workflow(f"{ns}-upper", containerImage="ghcr.io/Acme/restart:v1"),
        "spec.containerImage repository path component 'Acme' must be lower-case letters and digits",
    ),
    (
        "workflow digest",
        lambda ns: workflow(f"{ns}-digest", containerImage="ghcr.io/acme/restart@sha256:1234"),
        "spec.containerImage digest 'sha256:1234' must be sha256: followed by 64 lower-case hex digits",
    ),
    (
        "workflow parameter",
        lambda ns: workflow(f"{ns}-param", parameters={"restartReason": "x"}),
        "spec.parameters: parameter name 'restartReason' must be UPPER_SNAKE_CASE",
    ),
    (
        "workflow target kind",
        lambda ns: workflow(f"{ns}-kinds", match={"targetKinds": ["apps/v1 Deployment"]}),
        "spec.match.targetKinds[0] 'apps/v1 Deployment' is not a kind name",
    ),
    (
        "workflow severity",
        lambda ns: workflow(f"{ns}-sev", match={"severities": ["high"]}),
        "spec.match.severities[0] 'high' is not one of critical, warning, info",
    ),
]


async def test_each_bad_object_is_refused_with_a_clear_message(cluster: ProductionCluster, webhook: DevWebhook) -> None:
    namespace = await cluster.namespace("hook")
    for case, build, says in BAD:
        body = build(namespace)
        with pytest.raises(ApiError) as refused:
            await create(cluster.admin, body)
        status = refused.value.status
        assert status.code == 422, case
        assert 'admission webhook "validation.kubernaut.ai" denied the request: ' in status.message, case
        assert says in status.message, f"{case}: {status.message}"
    # The good twins pass.
    for body in (rr("good", namespace), wfe("we-good", namespace), workflow(f"{namespace}-good")):
        await create(cluster.admin, body)
    # An update that leaves the spec alone is not judged again; one that breaks it is.
    await cluster.admin.patch(
        WorkflowExecutionResource,
        "we-good",
        {"metadata": {"labels": {"x": "y"}}},
        namespace=namespace,
        patch_type=PatchType.MERGE,
    )
    with pytest.raises(ApiError, match=r"not valid: spec\.targetResource"):
        await cluster.admin.patch(
            WorkflowExecutionResource,
            "we-good",
            {"spec": {"targetResource": "a/b/c/d"}},
            namespace=namespace,
            patch_type=PatchType.MERGE,
        )


async def annotations(
    client: AsyncClient, name: str, namespace: str, resource: Any = WorkflowExecutionResource
) -> dict[str, str]:
    found = await client.get(resource, name, namespace=namespace)
    return dict(found.to_dict()["metadata"].get("annotations") or {})


async def annotate(
    client: AsyncClient,
    name: str,
    namespace: str,
    values: dict[str, str | None],
    resource: Any = WorkflowExecutionResource,
) -> None:
    await client.patch(
        resource,
        name,
        {"metadata": {"annotations": values}},
        namespace=namespace,
        patch_type=PatchType.MERGE,
    )


async def test_the_clearance_names_its_author_and_cannot_be_forged(
    cluster: ProductionCluster, webhook: DevWebhook
) -> None:
    namespace = await cluster.namespace("clear")
    await create(cluster.admin, wfe("we-1", namespace))

    await annotate(cluster.admin, "we-1", namespace, {CLEAR: "checked the rollout"})
    assert (await annotations(cluster.admin, "we-1", namespace))[BY] == ADMIN

    for forged in ({BY: "alice"}, {CLEAR: "again", BY: "alice"}, {BY: None}):
        with pytest.raises(ApiError) as refused:
            await annotate(cluster.admin, "we-1", namespace, forged)
        assert refused.value.status.code == 403
        assert f"the annotation {BY} cannot be set or changed by hand" in refused.value.status.message
    assert (await annotations(cluster.admin, "we-1", namespace))[BY] == ADMIN

    # Withdrawing the reason takes the name with it; a create carrying a reason is stamped too.
    await annotate(cluster.admin, "we-1", namespace, {CLEAR: None})
    assert BY not in await annotations(cluster.admin, "we-1", namespace)
    await create(cluster.admin, wfe("we-2", namespace, annotations={CLEAR: "known flaky"}))
    assert (await annotations(cluster.admin, "we-2", namespace))[BY] == ADMIN
    with pytest.raises(ApiError, match="cannot be set or changed by hand"):
        await create(cluster.admin, wfe("we-3", namespace, annotations={CLEAR: "x", BY: "alice"}))

    # An ineffective request is cleared the same way (it ends an IneffectiveChain block).
    await create(cluster.admin, rr("rr-1", namespace))
    await annotate(cluster.admin, "rr-1", namespace, {CLEAR: "the fix works now"}, RemediationRequestResource)
    assert (await annotations(cluster.admin, "rr-1", namespace, RemediationRequestResource))[BY] == ADMIN
    with pytest.raises(ApiError, match="cannot be set or changed by hand"):
        await annotate(cluster.admin, "rr-1", namespace, {BY: "alice"}, RemediationRequestResource)


async def test_kubernaut_controllers_are_not_sent_to_the_webhook(
    cluster: ProductionCluster, webhook: DevWebhook
) -> None:
    """The orchestrator's own writes never wait on the webhook: a bad execution it creates is failed by
    the executor with a reason instead of being refused at the door."""
    namespace = await cluster.namespace("ctl")
    orchestrator = make_client(await cluster.kubeconfig_for("orchestrator"))
    try:
        created = await create(orchestrator, wfe("we-from-ro", namespace, targetResource="Deployment"))
        assert created.metadata.name == "we-from-ro"
    finally:
        await orchestrator.close()


async def test_failure_policies_when_the_webhook_is_down(cluster: ProductionCluster, tmp_path: Path) -> None:
    """Down: a clearance is refused (its author could not be recorded); everything else goes on."""
    namespace = await cluster.namespace("down")
    served = await start_dev_webhook(cluster.admin, tmp_path)
    try:
        await create(cluster.admin, wfe("we-1", namespace))
        await served.server.stop()  # registered, but nobody answers

        with pytest.raises(ApiError) as refused:
            await annotate(cluster.admin, "we-1", namespace, {CLEAR: "ack"})
        assert 'failed calling webhook "clearance.workflowexecutions.kubernaut.ai"' in refused.value.status.message
        assert CLEAR not in await annotations(cluster.admin, "we-1", namespace)

        # Validation is Ignore: a write without clearance annotations goes through, even a bad one.
        await annotate(cluster.admin, "we-1", namespace, {"team": "payments"})
        bad = copy.deepcopy(rr("bad-while-down", namespace, workflowRef={"workflowId": "w", "parameters": {"x": "1"}}))
        await create(cluster.admin, bad)
    finally:
        await served.stop(cluster.admin)
