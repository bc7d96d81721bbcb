"""The CRDs generated from the models, served by a real kube-apiserver."""

import subprocess
from pathlib import Path
from typing import Any

import pytest
from lightkube import AsyncClient
from lightkube.core.exceptions import ApiError
from lightkube.resources.apiextensions_v1 import CustomResourceDefinition

from kubernaut.kube.client import patch_status
from kubernaut.kube.resources import (
    NotificationRequestResource,
    PipelineRunResource,
    RemediationRequestResource,
    RemediationWorkflowResource,
    TaskRunResource,
    WorkflowExecutionResource,
)


def wfe_body(name: str, namespace: str, **spec_overrides: Any) -> dict[str, Any]:
    spec: dict[str, Any] = {
        "remediationRequestRef": {
            "apiVersion": "kubernaut.ai/v1alpha1",
            "kind": "RemediationRequest",
            "name": "rr-1",
            "namespace": namespace,
        },
        "workflowRef": {
            "workflowId": "restart-pod",
            "version": "1.0.0",
            "containerImage": "kubernaut.local/samples/succeed:1tasks-1s",
        },
        "targetResource": f"{namespace}/Deployment/api",
    }
    spec.update(spec_overrides)
    return {
        "apiVersion": "kubernaut.ai/v1alpha1",
        "kind": "WorkflowExecution",
        "metadata": {"name": name, "namespace": namespace},
        "spec": spec,
    }


async def test_every_crd_is_established_and_served(kube: AsyncClient, namespace: str) -> None:
    names = {crd.metadata.name async for crd in kube.list(CustomResourceDefinition)}
    assert {
        "remediationrequests.kubernaut.ai",
        "workflowexecutions.kubernaut.ai",
        "notificationrequests.kubernaut.ai",
        "remediationworkflows.kubernaut.ai",
        "pipelineruns.tekton.dev",
        "taskruns.tekton.dev",
    } <= names
    for resource in (
        RemediationRequestResource,
        WorkflowExecutionResource,
        NotificationRequestResource,
        PipelineRunResource,
        TaskRunResource,
    ):
        assert [obj async for obj in kube.list(resource, namespace=namespace)] == []
    # The catalog is cluster-scoped (other tests' entries live on): one written is read back.
    name = f"served-{namespace}"
    workflow = {
        "apiVersion": "kubernaut.ai/v1alpha1",
        "kind": "RemediationWorkflow",
        "metadata": {"name": name},
        "spec": {"workflowId": name, "version": "1.0.0", "containerImage": "kubernaut.local/samples/succeed"},
    }
    await kube.create(RemediationWorkflowResource(workflow))
    try:
        assert name in {obj.metadata.name async for obj in kube.list(RemediationWorkflowResource)}
    finally:
        await kube.delete(RemediationWorkflowResource, name)


async def test_valid_wfe_is_accepted(kube: AsyncClient, namespace: str) -> None:
    created = await kube.create(WorkflowExecutionResource(wfe_body("wfe-ok", namespace)))
    assert created.metadata.uid
    assert created["spec"]["targetResource"] == f"{namespace}/Deployment/api"


async def test_api_server_rejects_skipped_phase(kube: AsyncClient, namespace: str) -> None:
    await kube.create(WorkflowExecutionResource(wfe_body("wfe-skip", namespace)))
    with pytest.raises(ApiError) as err:
        await patch_status(kube, WorkflowExecutionResource, "wfe-skip", namespace, {"phase": "Skipped"})
    assert err.value.status.code == 422
    assert "Skipped" in err.value.status.message


async def test_api_server_rejects_failure_reason_outside_enum(kube: AsyncClient, namespace: str) -> None:
    await kube.create(WorkflowExecutionResource(wfe_body("wfe-bad", namespace)))
    details = {
        "failedTaskIndex": 0,
        "failedTaskName": "",
        "reason": "RaceConditionError",
        "message": "x",
        "failedAt": "2026-01-01T00:00:00Z",
        "executionTimeBeforeFailure": "",
        "naturalLanguageSummary": "x",
    }
    with pytest.raises(ApiError) as err:
        await patch_status(
            kube,
            WorkflowExecutionResource,
            "wfe-bad",
            namespace,
            {"phase": "Failed", "failureDetails": details},
        )
    assert err.value.status.code == 422
    assert "failureDetails.reason" in err.value.status.message


async def test_api_server_rejects_missing_required_spec(kube: AsyncClient, namespace: str) -> None:
    body = wfe_body("wfe-noref", namespace)
    del body["spec"]["workflowRef"]
    with pytest.raises(ApiError) as err:
        await kube.create(WorkflowExecutionResource(body))
    assert err.value.status.code == 422


@pytest.mark.parametrize(
    ("execution", "accepted"),
    [
        ({"engine": "job", "command": ["/bin/restart"], "activeDeadline": "10m"}, True),
        ({"engine": "tekton"}, True),
        ({"engine": "job"}, False),
        ({"engine": "job", "command": []}, False),
        ({"command": ["/bin/restart"]}, False),
        ({"engine": "tekton", "activeDeadline": "10m"}, False),
        ({"engine": "job", "command": ["/bin/restart"], "activeDeadline": "ten minutes"}, False),
    ],
)
async def test_api_server_refuses_a_catalog_entry_its_engine_cannot_run(
    kube: AsyncClient, namespace: str, execution: dict[str, Any], accepted: bool
) -> None:
    name = f"engine-{namespace}"
    workflow = {
        "apiVersion": "kubernaut.ai/v1alpha1",
        "kind": "RemediationWorkflow",
        "metadata": {"name": name},
        "spec": {"workflowId": name, "version": "1", "containerImage": "registry.example/w:1", "execution": execution},
    }
    if accepted:
        await kube.create(RemediationWorkflowResource(workflow))
        await kube.delete(RemediationWorkflowResource, name)
        return
    with pytest.raises(ApiError) as err:
        await kube.create(RemediationWorkflowResource(workflow))
    assert err.value.status.code == 422
    assert "spec.execution" in err.value.status.message


async def test_kubectl_prints_wfe_columns(kube: AsyncClient, kubeconfig: Path, namespace: str) -> None:
    await kube.create(WorkflowExecutionResource(wfe_body("wfe-cols", namespace, executionEngine="job")))
    await patch_status(kube, WorkflowExecutionResource, "wfe-cols", namespace, {"phase": "Running"})
    out = subprocess.run(
        ["kubectl", "--kubeconfig", str(kubeconfig), "get", "wfe", "-n", namespace],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    header, row = out.splitlines()[:2]
    assert header.split() == ["NAME", "PHASE", "WORKFLOWID", "TARGET", "ENGINE", "DURATION", "AGE"]
    assert row.split()[:5] == ["wfe-cols", "Running", "restart-pod", f"{namespace}/Deployment/api", "job"]


def test_kubectl_explain_shows_our_description(kubeconfig: Path, kube: AsyncClient) -> None:
    out = subprocess.run(
        ["kubectl", "--kubeconfig", str(kubeconfig), "explain", "workflowexecution.spec.targetResource"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    assert "It is the lock key" in out
    assert "namespace/kind/name" in out
