"""kubernaut.ai/v1alpha1 resource models."""

from kubernaut.api.v1alpha1.common import API_VERSION, GROUP, VERSION, Condition, CustomResource
from kubernaut.api.v1alpha1.notificationrequest import NotificationRequest
from kubernaut.api.v1alpha1.remediationapprovalrequest import RemediationApprovalRequest
from kubernaut.api.v1alpha1.remediationrequest import RemediationRequest
from kubernaut.api.v1alpha1.remediationworkflow import RemediationWorkflow
from kubernaut.api.v1alpha1.workflowexecution import WorkflowExecution

ALL_KINDS: tuple[type[CustomResource], ...] = (
    RemediationRequest,
    WorkflowExecution,
    NotificationRequest,
    RemediationWorkflow,
    RemediationApprovalRequest,
)

__all__ = [
    "ALL_KINDS",
    "API_VERSION",
    "GROUP",
    "VERSION",
    "Condition",
    "CustomResource",
    "NotificationRequest",
    "RemediationApprovalRequest",
    "RemediationRequest",
    "RemediationWorkflow",
    "WorkflowExecution",
]
