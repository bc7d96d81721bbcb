"""WorkflowExecution: one approved run of a workflow against one target."""

from enum import StrEnum
from typing import ClassVar

from pydantic import Field

from kubernaut.api.v1alpha1.common import (
    GO_DURATION_PATTERN,
    Condition,
    CustomResource,
    ExecutionEngine,
    KubeModel,
    ObjectReference,
    PrinterColumn,
    Time,
    age_column,
)


class WorkflowExecutionPhase(StrEnum):
    PENDING = "Pending"
    RUNNING = "Running"
    COMPLETED = "Completed"
    FAILED = "Failed"


class FailureReason(StrEnum):
    OOM_KILLED = "OOMKilled"
    DEADLINE_EXCEEDED = "DeadlineExceeded"
    FORBIDDEN = "Forbidden"
    RESOURCE_EXHAUSTED = "ResourceExhausted"
    CONFIGURATION_ERROR = "ConfigurationError"
    IMAGE_PULL_BACK_OFF = "ImagePullBackOff"
    TASK_FAILED = "TaskFailed"
    EXECUTION_RACE_CONDITION = "ExecutionRaceCondition"
    UNKNOWN = "Unknown"


class ClearMethod(StrEnum):
    ANNOTATION = "Annotation"
    API_ENDPOINT = "APIEndpoint"
    STATUS_FIELD = "StatusField"


class WorkflowRef(KubeModel):
    """Which workflow to run: a catalog key and the Tekton bundle (or Job image) that holds it."""

    workflow_id: str = Field(description="Catalog key of the workflow (RemediationWorkflow workflowId).")
    version: str = Field(description="Version of the workflow.")
    container_image: str = Field(
        description="Engine tekton: OCI bundle reference handed to Tekton's bundles resolver; it must "
        "contain a Pipeline named 'workflow' with a TARGET_RESOURCE string parameter. Engine job: the "
        "image of the Job's container 'workflow'."
    )
    container_digest: str | None = Field(default=None, description="Digest of the bundle, for audit only.")
    command: list[str] | None = Field(
        default=None,
        description="Engine job: the container's command and arguments, copied from the catalog entry.",
    )
    active_deadline: str | None = Field(
        default=None,
        pattern=GO_DURATION_PATTERN,
        description="Engine job: the Job's activeDeadlineSeconds as a Go duration, copied from the catalog entry.",
    )


class ExecutionConfig(KubeModel):
    """Execution settings carried for audit; the executor applies neither."""

    timeout: str | None = Field(default=None, description="Requested timeout (Go duration); carried, not applied.")
    service_account_name: str | None = Field(
        default=None,
        description="Ignored: the controller's configured service account always runs workflows.",
    )


class WorkflowExecutionSpec(KubeModel):
    """What to run and where. Written by the Remediation Orchestrator; never changed by the executor."""

    remediation_request_ref: ObjectReference = Field(description="The RemediationRequest this execution serves.")
    workflow_ref: WorkflowRef = Field(description="The workflow to run.")
    execution_engine: ExecutionEngine = Field(
        default=ExecutionEngine.TEKTON,
        description="What runs it, copied from the catalog entry: tekton (a PipelineRun) or job (a "
        "Kubernetes Job). Either is named by the target's lock.",
    )
    target_resource: str = Field(
        description="The resource the workflow acts on: 'namespace/kind/name', or 'kind/name' "
        "when cluster-scoped. It is the lock key: one running workflow per target."
    )
    parameters: dict[str, str] | None = Field(
        default=None,
        description="UPPER_SNAKE_CASE parameters passed to the PipelineRun (params) or Job (env vars), "
        "in key order, followed by TARGET_RESOURCE.",
    )
    confidence: float | None = Field(default=None, description="Selection confidence, for audit only.")
    rationale: str | None = Field(default=None, description="Why this workflow was chosen, for audit only.")
    execution_config: ExecutionConfig | None = Field(
        default=None, description="Execution settings carried for audit; not applied."
    )


class PipelineRunRef(KubeModel):
    name: str = Field(description="Name of the PipelineRun (or Job, by engine) in the execution namespace.")


class PipelineRunStatusSummary(KubeModel):
    """The last observed state of the PipelineRun's Succeeded condition (a Job's: its final condition)."""

    status: str = Field(description="True, False or Unknown.")
    reason: str | None = Field(default=None, description="Reason of the Succeeded condition.")
    message: str | None = Field(default=None, description="Message of the Succeeded condition.")
    completed_tasks: int | None = Field(default=None, description="Child TaskRuns that succeeded.")
    total_tasks: int | None = Field(default=None, description="Child references of the PipelineRun.")


class FailureDetails(KubeModel):
    """Structured facts about a failure: what failed, why, and whether the workflow had started."""

    failed_task_index: int = Field(
        description="0-based index into the PipelineRun's childReferences of the first failed TaskRun; 0 when "
        "unknown, and for a Job.",
    )
    failed_task_name: str = Field(description="Name of the failed TaskRun (the Job's name); empty when unknown.")
    failed_step_name: str | None = Field(default=None, description="Reserved; never populated.")
    reason: FailureReason = Field(description="Classified failure reason.")
    message: str = Field(description="Human message describing the failure.")
    exit_code: int | None = Field(
        default=None,
        description="First non-zero exit code among the failed TaskRun's steps (the Job's container 'workflow').",
    )
    failed_at: Time = Field(description="When the executor recorded the failure.")
    execution_time_before_failure: str = Field(
        description="Go duration from start to failure; empty when the run never started.",
    )
    natural_language_summary: str = Field(description="Multi-line explanation for people and language models.")
    was_execution_failure: bool | None = Field(
        default=None,
        description="True when the workflow ran and may have changed the cluster (a person must "
        "review before another run); absent/false when it failed before executing.",
    )


class BlockClearanceDetails(KubeModel):
    """Who cleared an execution block on this failed WFE, when and why."""

    cleared_at: Time = Field(description="When the block was cleared.")
    cleared_by: str = Field(
        description="Authenticated user who cleared it, or 'unverified:<reason>' when no "
        "admission webhook vouched for the identity."
    )
    clear_reason: str = Field(description="Reason given by the operator.")
    clear_method: ClearMethod = Field(description="How the block was cleared.")


class WorkflowExecutionStatus(KubeModel):
    """Observed state, owned by the executor."""

    phase: WorkflowExecutionPhase | None = Field(
        default=None, description="Pending, Running, Completed or Failed; empty means Pending."
    )
    start_time: Time | None = Field(default=None, description="When the PipelineRun was created or adopted.")
    completion_time: Time | None = Field(default=None, description="When the run reached Completed or Failed.")
    duration: str | None = Field(default=None, description="Go duration from start to completion.")
    pipeline_run_ref: PipelineRunRef | None = Field(
        default=None, description="The PipelineRun (or Job, by engine) of this run."
    )
    pipeline_run_status: PipelineRunStatusSummary | None = Field(
        default=None, description="Last observed PipelineRun (or Job) status."
    )
    failure_details: FailureDetails | None = Field(default=None, description="Set when Failed.")
    block_clearance: BlockClearanceDetails | None = Field(
        default=None, description="Set when an operator cleared the execution block of this failure."
    )
    conditions: list[Condition] | None = Field(default=None, description="Standard conditions.")


class WorkflowExecution(CustomResource):
    """A single execution of a remediation workflow on one target, as a Tekton PipelineRun or a Job."""

    KIND: ClassVar[str] = "WorkflowExecution"
    PLURAL: ClassVar[str] = "workflowexecutions"
    SINGULAR: ClassVar[str] = "workflowexecution"
    SHORT_NAMES: ClassVar[tuple[str, ...]] = ("wfe",)
    PRINTER_COLUMNS: ClassVar[tuple[PrinterColumn, ...]] = (
        PrinterColumn(name="Phase", type="string", json_path=".status.phase"),
        PrinterColumn(name="WorkflowID", type="string", json_path=".spec.workflowRef.workflowId"),
        PrinterColumn(name="Target", type="string", json_path=".spec.targetResource"),
        PrinterColumn(name="Engine", type="string", json_path=".spec.executionEngine"),
        PrinterColumn(name="Duration", type="string", json_path=".status.duration"),
        age_column(),
    )
    DESCRIPTION: ClassVar[str] = (
        "WorkflowExecution is one approved run of a remediation workflow on one target "
        "resource. The executor turns it into a Tekton PipelineRun or a Kubernetes Job (by engine) "
        "whose name is the lock on the target, mirrors its progress and records structured failure details."
    )

    kind: str = "WorkflowExecution"
    spec: WorkflowExecutionSpec = Field(description="What to run and where.")
    status: WorkflowExecutionStatus = Field(
        default_factory=WorkflowExecutionStatus, description="Observed state of the run."
    )

    @property
    def phase(self) -> WorkflowExecutionPhase:
        return self.status.phase or WorkflowExecutionPhase.PENDING

    @property
    def is_terminal(self) -> bool:
        return self.phase in (WorkflowExecutionPhase.COMPLETED, WorkflowExecutionPhase.FAILED)
