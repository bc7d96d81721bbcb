"""RemediationApprovalRequest: a person must say yes before a remediation runs."""

from enum import StrEnum
from typing import ClassVar

from pydantic import Field

from kubernaut.api.v1alpha1.common import CustomResource, KubeModel, ObjectReference, PrinterColumn, Time, age_column
from kubernaut.api.v1alpha1.remediationrequest import SelectedWorkflow


class ApprovalPhase(StrEnum):
    PENDING = "Pending"
    APPROVED = "Approved"
    REJECTED = "Rejected"
    EXPIRED = "Expired"


class ApprovalDecision(StrEnum):
    APPROVED = "Approved"
    REJECTED = "Rejected"


class DecidedVia(StrEnum):
    CLI = "cli"
    SLACK = "slack"
    KUBECTL = "kubectl"


class RemediationApprovalRequestSpec(KubeModel):
    """What would run, and until when a person may decide; written once by the orchestrator."""

    remediation_request_ref: ObjectReference = Field(description="The request waiting for this decision.")
    workflow: SelectedWorkflow = Field(description="The selected workflow and its parameters.")
    target_resource: str = Field(description="The target, as namespace/Kind/name (Kind/name when cluster-scoped).")
    reason: str = Field(description="Why approval is required.")
    required_by: Time = Field(description="Without a decision by then the request fails as expired.")


class RemediationApprovalRequestStatus(KubeModel):
    """The decision, copied by the orchestrator from the decision annotations (or expiry)."""

    phase: ApprovalPhase | None = Field(default=None, description="Pending, Approved, Rejected or Expired.")
    decision: ApprovalDecision | None = Field(default=None, description="Approved or Rejected.")
    decided_by: str | None = Field(default=None, description="Who decided (the authenticated user, or slack:<name>).")
    decided_at: Time | None = Field(default=None, description="When the decision was recorded.")
    decided_via: DecidedVia | None = Field(default=None, description="cli, slack or kubectl.")
    message: str | None = Field(default=None, description="The reason given, or why it expired.")


class RemediationApprovalRequest(CustomResource):
    """A request for a person's approval of one remediation."""

    KIND: ClassVar[str] = "RemediationApprovalRequest"
    PLURAL: ClassVar[str] = "remediationapprovalrequests"
    SINGULAR: ClassVar[str] = "remediationapprovalrequest"
    SHORT_NAMES: ClassVar[tuple[str, ...]] = ("rar",)
    PRINTER_COLUMNS: ClassVar[tuple[PrinterColumn, ...]] = (
        PrinterColumn(name="Phase", type="string", json_path=".status.phase"),
        PrinterColumn(name="Request", type="string", json_path=".spec.remediationRequestRef.name"),
        PrinterColumn(name="Workflow", type="string", json_path=".spec.workflow.workflowId"),
        PrinterColumn(name="RequiredBy", type="date", json_path=".spec.requiredBy"),
        PrinterColumn(name="DecidedBy", type="string", json_path=".status.decidedBy"),
        age_column(),
    )
    DESCRIPTION: ClassVar[str] = (
        "RemediationApprovalRequest asks a person to approve or reject one remediation before it "
        "runs (`kubernaut approve|reject`); without a decision by requiredBy it expires."
    )

    kind: str = "RemediationApprovalRequest"
    spec: RemediationApprovalRequestSpec = Field(description="What would run and the deadline.")
    status: RemediationApprovalRequestStatus = Field(
        default_factory=RemediationApprovalRequestStatus, description="The decision."
    )
