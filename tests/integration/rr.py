"""Building RemediationRequests and reading outcomes in integration tests."""

import hashlib
import uuid
from typing import Any

from lightkube import AsyncClient

from kubernaut.kube.resources import RemediationRequestResource, WorkflowExecutionResource
from tests.integration.tekton_support import default_bundle


def fingerprint(seed: str | None = None) -> str:
    return hashlib.sha256((seed or uuid.uuid4().hex).encode()).hexdigest()


def rr_manifest(
    name: str,
    namespace: str,
    *,
    target: dict[str, str],
    fp: str | None = None,
    bundle: str | None = "",
    workflow_id: str = "restart-deployment",
    signal_name: str = "KubePodCrashLooping",
    **spec: Any,
) -> dict[str, Any]:
    body: dict[str, Any] = {
        "apiVersion": "kubernaut.ai/v1alpha1",
        "kind": "RemediationRequest",
        "metadata": {"name": name, "namespace": namespace},
        "spec": {
            "signalFingerprint": fp or fingerprint(name + namespace),
            "signalName": signal_name,
            "severity": "critical",
            "targetResource": target,
        },
    }
    if bundle is not None:  # "": a workflow that succeeds in a second; None: no workflowRef (the catalog picks)
        ref = {"workflowId": workflow_id, "version": "1.0.0", "containerImage": bundle or default_bundle()}
        body["spec"]["workflowRef"] = ref
    body["spec"].update(spec)
    return body


async def rr_status(kube: AsyncClient, name: str, namespace: str) -> dict[str, Any]:
    obj = await kube.get(RemediationRequestResource, name, namespace=namespace)
    return obj.to_dict().get("status") or {}


async def wfe_names(kube: AsyncClient, namespace: str) -> list[str]:
    return [w.metadata.name async for w in kube.list(WorkflowExecutionResource, namespace=namespace)]
