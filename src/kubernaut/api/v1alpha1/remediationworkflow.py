"""RemediationWorkflow: a catalog entry saying which workflow (Tekton bundle or Job image) remediates
which signals."""

from typing import ClassVar, Self

from pydantic import ConfigDict, Field, model_validator

from kubernaut.api.v1alpha1.common import (
    GO_DURATION_PATTERN,
    CustomResource,
    ExecutionEngine,
    KubeModel,
    PrinterColumn,
    age_column,
)


class WorkflowMatch(KubeModel):
    """Which requests this workflow fits; every given criterion must hold, an empty one matches all."""

    signal_names: list[str] | None = Field(default=None, description="Signal names it remediates.")
    severities: list[str] | None = Field(default=None, description="Severities it accepts.")
    target_kinds: list[str] | None = Field(default=None, description="Target kinds it acts on.")
    labels: dict[str, str] | None = Field(
        default=None, description="Signal labels that must be present with these values."
    )


class WorkflowExecutionSettings(KubeModel):
    """How the workflow runs: its engine and, for a Job, the container's command and deadline."""

    # The API server refuses what the model refuses, before a bad entry reaches the catalog.
    model_config = ConfigDict(
        json_schema_extra={
            "x-kubernetes-validations": [
                {
                    "rule": "has(self.engine) && self.engine == 'job' ? has(self.command) && size(self.command) > 0 "
                    ": !has(self.command) && !has(self.activeDeadline)",
                    "message": "engine job needs a command; command and activeDeadline apply only to engine job",
                }
            ]
        }
    )

    engine: ExecutionEngine = Field(
        default=ExecutionEngine.TEKTON,
        description="tekton (default): containerImage is a Tekton bundle run as a PipelineRun; job: "
        "containerImage is a container image run as a Kubernetes Job.",
    )
    command: list[str] | None = Field(
        default=None,
        min_length=1,
        description="Job only (required there): the workflow container's command and arguments.",
    )
    active_deadline: str | None = Field(
        default=None,
        pattern=GO_DURATION_PATTERN,
        description="Job only: the Job's activeDeadlineSeconds as a Go duration (e.g. 10m); none by default.",
    )

    @model_validator(mode="after")
    def _command_fits_engine(self) -> Self:
        if self.engine == ExecutionEngine.JOB and not self.command:
            raise ValueError("execution.command is required when execution.engine is job (the container's command)")
        if self.engine == ExecutionEngine.TEKTON and (self.command or self.active_deadline):
            raise ValueError("execution.command and execution.activeDeadline apply only to execution.engine job")
        return self


class WorkflowVerification(KubeModel):
    """How to tell that a run of this workflow fixed the problem."""

    window: str | None = Field(
        default=None,
        description="How long to wait for the alert to resolve after the run (Go duration); "
        "the orchestrator's effectiveness.window when empty.",
    )
    promql: str | None = Field(
        default=None,
        description="A PromQL query that must return a non-empty result once the alert resolved, "
        "evaluated against the orchestrator's effectiveness.prometheusUrl.",
    )


class RemediationWorkflowSpec(KubeModel):
    """A workflow in the catalog."""

    workflow_id: str = Field(min_length=1, description="Catalog key, copied into WorkflowExecutions.")
    version: str = Field(min_length=1, description="Workflow version.")
    container_image: str = Field(
        description="Required, non-empty. Engine tekton: the Tekton bundle holding a Pipeline named "
        "'workflow'; engine job: the container image of the Job."
    )
    container_digest: str | None = Field(default=None, description="Bundle digest, for audit.")
    description: str | None = Field(default=None, description="What the workflow does.")
    parameters: dict[str, str] | None = Field(default=None, description="Default parameters (UPPER_SNAKE_CASE keys).")
    match: WorkflowMatch | None = Field(default=None, description="Which requests it fits.")
    priority: int = Field(default=0, description="Among matching workflows the highest wins; ties by name.")
    verification: WorkflowVerification | None = Field(
        default=None, description="How the Verifying phase assesses a run of this workflow."
    )
    execution: WorkflowExecutionSettings | None = Field(
        default=None, description="The engine that runs the workflow (default tekton)."
    )
    requires_approval: bool = Field(
        default=False, description="A person must approve each run (a RemediationApprovalRequest) first."
    )
    dry_run: bool = Field(
        default=False, description="Validate what would run (server-side dry-run) instead of running it."
    )


class RemediationWorkflow(CustomResource):
    """A remediation workflow in the cluster-wide catalog."""

    KIND: ClassVar[str] = "RemediationWorkflow"
    PLURAL: ClassVar[str] = "remediationworkflows"
    SINGULAR: ClassVar[str] = "remediationworkflow"
    SHORT_NAMES: ClassVar[tuple[str, ...]] = ("rw",)
    NAMESPACED: ClassVar[bool] = False
    HAS_STATUS: ClassVar[bool] = False
    PRINTER_COLUMNS: ClassVar[tuple[PrinterColumn, ...]] = (
        PrinterColumn(name="WorkflowID", type="string", json_path=".spec.workflowId"),
        PrinterColumn(name="Version", type="string", json_path=".spec.version"),
        PrinterColumn(name="Priority", type="integer", json_path=".spec.priority"),
        age_column(),
    )
    DESCRIPTION: ClassVar[str] = (
        "RemediationWorkflow is an entry of the cluster-wide workflow catalog: a Tekton bundle or a "
        "Job's container image, and the signals, severities and target kinds it remediates."
    )

    kind: str = "RemediationWorkflow"
    spec: RemediationWorkflowSpec = Field(description="The workflow and what it matches.")
