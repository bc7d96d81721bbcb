"""Audit events of the executor and the orchestrator, built from the objects (ids are deterministic)."""

from datetime import datetime
from typing import Any

from kubernaut.api.audit import AuditEvent, build_event_id
from kubernaut.api.v1alpha1.workflowexecution import WorkflowExecution, WorkflowExecutionStatus
from kubernaut.domain.duration import format_rfc3339
from kubernaut.domain.execution import correlation_id

EXECUTOR_ACTOR = "workflowexecution-controller"
ORCHESTRATOR_ACTOR = "remediation-orchestrator"

_WORKFLOW_OUTCOME = {"started": "success", "completed": "success", "failed": "failure"}


def build_workflow_event(
    wfe: WorkflowExecution, status: WorkflowExecutionStatus, action: str, now: datetime
) -> AuditEvent:
    """workflow.started / workflow.completed / workflow.failed: once per WFE each."""
    event_type = f"workflow.{action}"
    data: dict[str, Any] = {
        "workflow_id": wfe.spec.workflow_ref.workflow_id,
        "workflow_version": wfe.spec.workflow_ref.version,
        "target_resource": wfe.spec.target_resource,
        "phase": status.phase.value if status.phase else "Pending",
        "container_image": wfe.spec.workflow_ref.container_image,
        "execution_name": wfe.metadata.name,
    }
    if status.start_time:
        data["started_at"] = format_rfc3339(status.start_time)
    if status.completion_time:
        data["completed_at"] = format_rfc3339(status.completion_time)
    if status.duration:
        data["duration"] = status.duration
    if status.failure_details:
        data["failure_reason"] = status.failure_details.reason.value
        data["failure_message"] = status.failure_details.message
        if status.failure_details.failed_task_name:
            data["failed_task_name"] = status.failure_details.failed_task_name
    if status.pipeline_run_ref:
        data["pipelinerun_name"] = status.pipeline_run_ref.name
    return AuditEvent(
        event_id=build_event_id(wfe.metadata.uid, event_type),
        event_type=event_type,
        event_category="workflow",
        event_action=action,
        event_outcome=_WORKFLOW_OUTCOME[action],
        actor_type="service",
        actor_id=EXECUTOR_ACTOR,
        resource_type="WorkflowExecution",
        resource_id=wfe.metadata.name,
        correlation_id=correlation_id(wfe),
        namespace=wfe.metadata.namespace,
        event_time=now,
        event_data=data,
    )


def build_block_cleared_event(wfe: WorkflowExecution, status: WorkflowExecutionStatus, now: datetime) -> AuditEvent:
    clearance = status.block_clearance
    assert clearance is not None
    event_type = "workflowexecution.block.cleared"
    return AuditEvent(
        event_id=build_event_id(wfe.metadata.uid, event_type),
        event_type=event_type,
        event_category="workflow",
        event_action="block.cleared",
        event_outcome="success",
        actor_type="user",
        actor_id=clearance.cleared_by,
        resource_type="WorkflowExecution",
        resource_id=wfe.metadata.name,
        correlation_id=correlation_id(wfe),
        namespace=wfe.metadata.namespace,
        event_time=now,
        event_data={
            "cleared_by": clearance.cleared_by,
            "clear_reason": clearance.clear_reason,
            "clear_method": clearance.clear_method.value,
        },
    )
