"""lightkube resource classes for our kinds, Tekton's and the Job engine's (generic: bodies stay whole
dicts, whatever fields the cluster's version adds)."""

from typing import Any

from lightkube.generic_resource import create_global_resource, create_namespaced_resource

from kubernaut.api.v1alpha1 import GROUP, VERSION

RemediationRequestResource: Any = create_namespaced_resource(
    GROUP, VERSION, "RemediationRequest", "remediationrequests"
)
WorkflowExecutionResource: Any = create_namespaced_resource(GROUP, VERSION, "WorkflowExecution", "workflowexecutions")
NotificationRequestResource: Any = create_namespaced_resource(
    GROUP, VERSION, "NotificationRequest", "notificationrequests"
)
RemediationApprovalRequestResource: Any = create_namespaced_resource(
    GROUP, VERSION, "RemediationApprovalRequest", "remediationapprovalrequests"
)
RemediationWorkflowResource: Any = create_global_resource(GROUP, VERSION, "RemediationWorkflow", "remediationworkflows")
PipelineRunResource: Any = create_namespaced_resource("tekton.dev", "v1", "PipelineRun", "pipelineruns")
TaskRunResource: Any = create_namespaced_resource("tekton.dev", "v1", "TaskRun", "taskruns")
JobResource: Any = create_namespaced_resource("batch", "v1", "Job", "jobs")
PodResource: Any = create_namespaced_resource("", "v1", "Pod", "pods")
NamespaceResource: Any = create_global_resource("", "v1", "Namespace", "namespaces")
NodeResource: Any = create_global_resource("", "v1", "Node", "nodes")
ConfigMapResource: Any = create_namespaced_resource("", "v1", "ConfigMap", "configmaps")
