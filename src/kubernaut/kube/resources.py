"""lightkube resource classes for our kinds and for Tekton's."""

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
RemediationWorkflowResource: Any = create_global_resource(GROUP, VERSION, "RemediationWorkflow", "remediationworkflows")
PipelineRunResource: Any = create_namespaced_resource("tekton.dev", "v1", "PipelineRun", "pipelineruns")
TaskRunResource: Any = create_namespaced_resource("tekton.dev", "v1", "TaskRun", "taskruns")
