"""Rendering the Tekton PipelineRun that runs a WorkflowExecution (and is the lock on its target), and
the lock metadata every engine shares."""

import hashlib
import re
from typing import Any

from kubernaut.api.v1alpha1.workflowexecution import WorkflowExecution
from kubernaut.domain.target import build_lock_name, build_target_label

LABEL_WORKFLOW_EXECUTION = "kubernaut.ai/workflow-execution"
LABEL_WORKFLOW_ID = "kubernaut.ai/workflow-id"
LABEL_TARGET_RESOURCE = "kubernaut.ai/target-resource"
LABEL_SOURCE_NAMESPACE = "kubernaut.ai/source-namespace"
ANNOTATION_TARGET_RESOURCE = "kubernaut.ai/target-resource"
ANNOTATION_WORKFLOW_EXECUTION = "kubernaut.ai/workflow-execution"
TEKTON_API_VERSION = "tekton.dev/v1"
_LABEL_UNSAFE = re.compile(r"[^A-Za-z0-9._-]")


def build_pipelinerun(wfe: WorkflowExecution, *, namespace: str, service_account: str) -> dict[str, Any]:
    """The PipelineRun for a WFE: bundles resolver, params sorted by key then TARGET_RESOURCE."""
    spec = wfe.spec
    target = spec.target_resource
    params: list[dict[str, str]] = [
        {"name": key, "value": value} for key, value in sorted((spec.parameters or {}).items())
    ]
    params.append({"name": "TARGET_RESOURCE", "value": target})
    return {
        "apiVersion": TEKTON_API_VERSION,
        "kind": "PipelineRun",
        "metadata": build_lock_metadata(wfe, namespace),
        "spec": {
            "pipelineRef": {
                "resolver": "bundles",
                "params": [
                    {"name": "bundle", "value": spec.workflow_ref.container_image},
                    {"name": "name", "value": "workflow"},
                    {"name": "kind", "value": "pipeline"},
                ],
            },
            "params": params,
            "taskRunTemplate": {"serviceAccountName": service_account},
        },
    }


def build_lock_metadata(wfe: WorkflowExecution, namespace: str) -> dict[str, Any]:
    """Name, labels and annotations of the object that is the lock on the WFE's target, whatever its
    engine (PipelineRun or Job): the watches select by these labels, owners are read back from them."""
    target = wfe.spec.target_resource
    return {
        "name": build_lock_name(target),
        "namespace": namespace,
        "labels": {
            LABEL_WORKFLOW_EXECUTION: build_name_label(wfe.metadata.name),
            LABEL_WORKFLOW_ID: build_label_value(wfe.spec.workflow_ref.workflow_id),
            LABEL_TARGET_RESOURCE: build_target_label(target),
            LABEL_SOURCE_NAMESPACE: wfe.metadata.namespace,
        },
        "annotations": {
            ANNOTATION_TARGET_RESOURCE: target,
            # A WFE name may be longer than a label value can be; the annotation keeps it whole.
            **({ANNOTATION_WORKFLOW_EXECUTION: wfe.metadata.name} if len(wfe.metadata.name) > 63 else {}),
        },
    }


def build_label_value(value: str) -> str:
    """A valid label value: unsafe characters become `_`, at most 63 characters, alphanumeric at both
    ends (an invalid label would make the API server reject the PipelineRun and fail the run)."""
    return _LABEL_UNSAFE.sub("_", value).lstrip("-_.")[:63].rstrip("-_.")


def build_name_label(name: str) -> str:
    """An object name as a label value: itself up to 63 characters, else a prefix and a hash."""
    if len(name) <= 63:
        return name
    return f"{name[:52].rstrip('-.')}-{hashlib.sha256(name.encode()).hexdigest()[:10]}"


def parse_owner(pipelinerun: dict[str, Any]) -> tuple[str, str]:
    """(source namespace, WFE name) from a lock's labels (a long name: its annotation)."""
    meta = pipelinerun.get("metadata") or {}
    labels = meta.get("labels") or {}
    name = (meta.get("annotations") or {}).get(ANNOTATION_WORKFLOW_EXECUTION) or labels.get(
        LABEL_WORKFLOW_EXECUTION, ""
    )
    return labels.get(LABEL_SOURCE_NAMESPACE, ""), name


def is_owned_by(pipelinerun: dict[str, Any], wfe: WorkflowExecution) -> bool:
    return parse_owner(pipelinerun) == (wfe.metadata.namespace, wfe.metadata.name)
