"""The kinds the controllers watch, and the cache indexes they share."""

from kubernaut.config import Settings
from kubernaut.controllers.manager import Kind
from kubernaut.domain.gates import BREAKER_LABEL, BREAKER_NAMESPACE
from kubernaut.domain.pipelinerun import LABEL_WORKFLOW_EXECUTION
from kubernaut.domain.target import build_target_string
from kubernaut.kube.resources import (
    ConfigMapResource,
    JobResource,
    NamespaceResource,
    NodeResource,
    NotificationRequestResource,
    PipelineRunResource,
    RemediationApprovalRequestResource,
    RemediationRequestResource,
    RemediationWorkflowResource,
    WorkflowExecutionResource,
)
from kubernaut.kube.runtime import Body

RR_KIND = Kind("kubernaut.ai", "v1alpha1", "remediationrequests", RemediationRequestResource)
WFE_KIND = Kind("kubernaut.ai", "v1alpha1", "workflowexecutions", WorkflowExecutionResource)
NR_KIND = Kind("kubernaut.ai", "v1alpha1", "notificationrequests", NotificationRequestResource)
RAR_KIND = Kind("kubernaut.ai", "v1alpha1", "remediationapprovalrequests", RemediationApprovalRequestResource)
WORKFLOW_KIND = Kind("kubernaut.ai", "v1alpha1", "remediationworkflows", RemediationWorkflowResource, namespaced=False)


def _execution_namespace(settings: Settings) -> str:
    return settings.execution.namespace


# PipelineRuns matter only in the execution namespace, and only those the executor made (they carry
# the execution's label): the cache holds no one else's. A cluster without Tekton has none (and runs
# the Job engine only).
PIPELINERUN_KIND = Kind(
    "tekton.dev",
    "v1",
    "pipelineruns",
    PipelineRunResource,
    namespace_of=_execution_namespace,
    label_selector=LABEL_WORKFLOW_EXECUTION,
    optional=True,
)

# The Job engine's runs, seen the same way: the same namespace, the same label.
JOB_KIND = Kind(
    "batch",
    "v1",
    "jobs",
    JobResource,
    namespace_of=_execution_namespace,
    label_selector=LABEL_WORKFLOW_EXECUTION,
)

# Opt-in scope: the labels of namespaces and of Node targets (the cluster-scoped kind that is read).
NAMESPACE_KIND = Kind("", "v1", "namespaces", NamespaceResource, namespaced=False)
NODE_KIND = Kind("", "v1", "nodes", NodeResource, namespaced=False)

# The circuit breaker's recorded reset: the one labelled ConfigMap in the operator's namespace.
BREAKER_KIND = Kind(
    "",
    "v1",
    "configmaps",
    ConfigMapResource,
    namespace_of=lambda _settings: BREAKER_NAMESPACE,
    label_selector=BREAKER_LABEL,
)

TARGET_INDEX = "target"
FINGERPRINT_INDEX = "fingerprint"
DUPLICATE_OF_INDEX = "duplicateOf"
BLOCKED_INDEX = "blocked"


def index_wfe_by_target(body: Body) -> list[str]:
    target = (body.get("spec") or {}).get("targetResource")
    return [target] if isinstance(target, str) and target else []


def index_rr_by_target(body: Body) -> list[str]:
    target = (body.get("spec") or {}).get("targetResource") or {}
    if not isinstance(target, dict) or not target.get("kind") or not target.get("name"):
        return []
    return [build_target_string(str(target["kind"]), str(target["name"]), str(target.get("namespace") or ""))]


def index_rr_by_fingerprint(body: Body) -> list[str]:
    fingerprint = (body.get("spec") or {}).get("signalFingerprint")
    return [fingerprint] if isinstance(fingerprint, str) and fingerprint else []


def index_rr_by_duplicate_of(body: Body) -> list[str]:
    original = (body.get("status") or {}).get("duplicateOf")
    namespace = (body.get("metadata") or {}).get("namespace", "")
    return [f"{namespace}/{original}"] if original else []


def index_rr_blocked(body: Body) -> list[str]:
    """Blocked requests by namespace (the current_blocked gauge is read off this index)."""
    if (body.get("status") or {}).get("overallPhase") != "Blocked":
        return []
    return [(body.get("metadata") or {}).get("namespace", "")]
