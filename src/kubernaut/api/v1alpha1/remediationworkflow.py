"""RemediationWorkflow: a catalog entry saying which Tekton bundle remediates which signals."""

from typing import ClassVar

from pydantic import Field

from kubernaut.api.v1alpha1.common import CustomResource, KubeModel, PrinterColumn, age_column


class WorkflowMatch(KubeModel):
    """Which requests this workflow fits; every given criterion must hold, an empty one matches all."""

    signal_names: list[str] | None = Field(default=None, description="Signal names it remediates.")
    severities: list[str] | None = Field(default=None, description="Severities it accepts.")
    target_kinds: list[str] | None = Field(default=None, description="Target kinds it acts on.")
    labels: dict[str, str] | None = Field(
        default=None, description="Signal labels that must be present with these values."
    )


class RemediationWorkflowSpec(KubeModel):
    """A workflow in the catalog."""

    workflow_id: str = Field(min_length=1, description="Catalog key, copied into WorkflowExecutions.")
    version: str = Field(min_length=1, description="Workflow version.")
    container_image: str = Field(description="Tekton bundle holding a Pipeline named 'workflow' (required, non-empty).")
    container_digest: str | None = Field(default=None, description="Bundle digest, for audit.")
    description: str | None = Field(default=None, description="What the workflow does.")
    parameters: dict[str, str] | None = Field(default=None, description="Default parameters (UPPER_SNAKE_CASE keys).")
    match: WorkflowMatch | None = Field(default=None, description="Which requests it fits.")
    priority: int = Field(default=0, description="Among matching workflows the highest wins; ties by name.")


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
        "RemediationWorkflow is an entry of the cluster-wide workflow catalog: a Tekton bundle "
        "and the signals, severities and target kinds it remediates."
    )

    kind: str = "RemediationWorkflow"
    spec: RemediationWorkflowSpec = Field(description="The workflow and what it matches.")
