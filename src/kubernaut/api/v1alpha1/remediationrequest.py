"""RemediationRequest: a problem on a target resource, and the orchestrator's answer to it."""

from enum import StrEnum
from typing import ClassVar

from pydantic import Field

from kubernaut.api.v1alpha1.common import (
    Condition,
    CustomResource,
    KubeModel,
    ObjectReference,
    PrinterColumn,
    Time,
    age_column,
)


class RemediationPhase(StrEnum):
    PENDING = "Pending"
    PROCESSING = "Processing"
    ANALYZING = "Analyzing"
    AWAITING_APPROVAL = "AwaitingApproval"
    EXECUTING = "Executing"
    VERIFYING = "Verifying"
    BLOCKED = "Blocked"
    COMPLETED = "Completed"
    FAILED = "Failed"
    TIMED_OUT = "TimedOut"
    SKIPPED = "Skipped"
    CANCELLED = "Cancelled"


TERMINAL_PHASES = frozenset(
    {
        RemediationPhase.COMPLETED,
        RemediationPhase.FAILED,
        RemediationPhase.TIMED_OUT,
        RemediationPhase.SKIPPED,
        RemediationPhase.CANCELLED,
    }
)


class Severity(StrEnum):
    CRITICAL = "critical"
    WARNING = "warning"
    INFO = "info"


class BlockReason(StrEnum):
    UNMANAGED_RESOURCE = "UnmanagedResource"
    CONSECUTIVE_FAILURES = "ConsecutiveFailures"
    DUPLICATE_IN_PROGRESS = "DuplicateInProgress"
    RESOURCE_BUSY = "ResourceBusy"
    RECENTLY_REMEDIATED = "RecentlyRemediated"
    EXPONENTIAL_BACKOFF = "ExponentialBackoff"
    INEFFECTIVE_CHAIN = "IneffectiveChain"
    RATE_LIMITED = "RateLimited"
    CIRCUIT_OPEN = "CircuitOpen"


class SkipReason(StrEnum):
    PREVIOUS_EXECUTION_FAILED = "PreviousExecutionFailed"
    EXHAUSTED_RETRIES = "ExhaustedRetries"


class Outcome(StrEnum):
    REMEDIATED = "Remediated"
    NO_ACTION_REQUIRED = "NoActionRequired"
    MANUAL_REVIEW_REQUIRED = "ManualReviewRequired"
    DRY_RUN = "DryRun"
    INEFFECTIVE = "Ineffective"


class Assessment(StrEnum):
    """Whether the remediation fixed the problem, as the Verifying phase found."""

    EFFECTIVE = "Effective"
    INEFFECTIVE = "Ineffective"
    INCONCLUSIVE = "Inconclusive"
    NOT_ASSESSED = "NotAssessed"


class NotificationStatus(StrEnum):
    PENDING = "Pending"
    IN_PROGRESS = "InProgress"
    SENT = "Sent"
    FAILED = "Failed"
    CANCELLED = "Cancelled"


class TargetResource(KubeModel):
    """The resource to remediate."""

    kind: str = Field(min_length=1, description="Kind of the target, e.g. Deployment or Node (kept verbatim).")
    name: str = Field(min_length=1, description="Name of the target.")
    namespace: str | None = Field(
        default=None, description="Namespace of the target; empty for cluster-scoped kinds such as Node."
    )


class TimeoutConfig(KubeModel):
    """Per-request overrides of the orchestrator's timeouts (Go durations)."""

    global_: str | None = Field(default=None, alias="global", description="Whole-remediation timeout.")
    processing: str | None = Field(default=None, description="Processing phase timeout (unused).")
    analyzing: str | None = Field(default=None, description="Analyzing (workflow selection) phase timeout.")
    executing: str | None = Field(
        default=None, description="Executing phase timeout; also carried into the WorkflowExecution."
    )


class RequestedWorkflowRef(KubeModel):
    """An explicit workflow choice that bypasses catalog matching."""

    workflow_id: str = Field(min_length=1, description="Catalog key of the workflow.")
    version: str | None = Field(default=None, description="Workflow version; the catalog's when empty.")
    container_image: str | None = Field(default=None, description="Tekton bundle; the catalog entry's when empty.")
    parameters: dict[str, str] | None = Field(
        default=None, description="Parameters overriding the catalog defaults (UPPER_SNAKE_CASE)."
    )


class RemediationRequestSpec(KubeModel):
    """The problem: which signal fired and on which resource."""

    signal_fingerprint: str = Field(
        pattern=r"^[a-f0-9]{64}$",
        description="SHA-256 (64 lower-case hex) identifying the signal; repeats of one alert share it.",
    )
    signal_name: str = Field(min_length=1, description="Human name of the alert, used in notifications.")
    severity: Severity = Field(description="critical, warning or info.")
    target_resource: TargetResource = Field(description="The resource to remediate.")
    timeout_config: TimeoutConfig | None = Field(default=None, description="Per-request timeout overrides.")
    signal_labels: dict[str, str] | None = Field(default=None, description="Labels of the signal.")
    signal_annotations: dict[str, str] | None = Field(default=None, description="Annotations of the signal.")
    source: str | None = Field(default=None, description="Where the signal came from, e.g. alertmanager.")
    firing_time: Time | None = Field(default=None, description="When the signal started firing.")
    workflow_ref: RequestedWorkflowRef | None = Field(
        default=None, description="Run this workflow instead of selecting one from the catalog."
    )


class Deduplication(KubeModel):
    """How often the signal was seen; kept by the gateway."""

    occurrence_count: int = Field(default=1, description="How many times the signal arrived.")
    first_seen_at: Time | None = Field(default=None, description="First arrival.")
    last_seen_at: Time | None = Field(default=None, description="Latest arrival.")


class SelectedWorkflow(KubeModel):
    """The workflow the orchestrator selected for this request."""

    workflow_id: str = Field(description="Catalog key of the workflow.")
    version: str = Field(description="Workflow version.")
    container_image: str = Field(description="Tekton bundle reference.")
    container_digest: str | None = Field(default=None, description="Bundle digest.")
    parameters: dict[str, str] | None = Field(default=None, description="Resolved parameters.")
    source: str | None = Field(default=None, description="'catalog:<name>' or 'spec.workflowRef'.")


class DryRunResult(KubeModel):
    """What a dry run would have done, and whether the API server accepted it."""

    workflow_id: str = Field(description="The workflow that would have run.")
    execution_name: str = Field(description="The WorkflowExecution that would have been created.")
    lock_name: str = Field(description="The PipelineRun or Job (the lock on the target) that would have run it.")
    validated: bool = Field(description="The API server accepted both in a server-side dry-run create.")
    message: str = Field(default="", description="The API server's answer, or why it was a dry run.")


class Effectiveness(KubeModel):
    """The assessment of a completed workflow: did the alert resolve (and the metric check hold)."""

    assessment: Assessment = Field(description="Effective, Ineffective, Inconclusive or NotAssessed.")
    resolved_at: Time | None = Field(default=None, description="When the alert resolved; absent when it did not.")
    checked_at: Time | None = Field(default=None, description="When the assessment was made.")
    message: str | None = Field(default=None, description="Why, in words.")


class RemediationRequestStatus(KubeModel):
    """The orchestrator's progress and routing decisions."""

    overall_phase: RemediationPhase | None = Field(default=None, description="Lifecycle phase.")
    message: str | None = Field(default=None, description="Human text about the current state.")
    start_time: Time | None = Field(default=None, description="When the orchestrator first saw the request.")
    completed_at: Time | None = Field(default=None, description="When the request ended.")
    processing_start_time: Time | None = Field(default=None, description="Entered Processing (unused).")
    analyzing_start_time: Time | None = Field(default=None, description="Entered Analyzing.")
    executing_start_time: Time | None = Field(default=None, description="Entered Executing.")
    verifying_start_time: Time | None = Field(
        default=None, description="Entered Verifying: the effectiveness window starts here."
    )
    effectiveness: Effectiveness | None = Field(default=None, description="Whether the remediation worked.")
    selected_workflow: SelectedWorkflow | None = Field(default=None, description="The selected workflow.")
    workflow_execution_ref: ObjectReference | None = Field(default=None, description="The WorkflowExecution.")
    notification_request_refs: list[ObjectReference] | None = Field(
        default=None, description="Every NotificationRequest created for this request."
    )
    block_reason: str | None = Field(default=None, description="Why the request is Blocked.")
    block_message: str | None = Field(default=None, description="Human explanation of the block.")
    blocked_until: Time | None = Field(default=None, description="When a time-based block expires.")
    blocked_from_phase: RemediationPhase | None = Field(
        default=None, description="The phase routing resumes from when the block clears."
    )
    blocking_workflow_execution: str | None = Field(
        default=None, description="The WorkflowExecution that blocks this request."
    )
    duplicate_of: str | None = Field(default=None, description="The original request this one duplicates.")
    skip_reason: SkipReason | None = Field(default=None, description="Permanent routing outcome.")
    skip_message: str | None = Field(default=None, description="Explanation of the permanent outcome.")
    next_allowed_execution: Time | None = Field(
        default=None, description="Earliest time the target may be tried again (backoff)."
    )
    consecutive_failure_count: int | None = Field(
        default=None, description="Failures on the target since its last success."
    )
    failure_phase: str | None = Field(default=None, description="Phase in which the request failed.")
    failure_reason: str | None = Field(default=None, description="Why the request failed.")
    requires_manual_review: bool | None = Field(default=None, description="A person must act.")
    outcome: Outcome | None = Field(default=None, description="Result when Completed.")
    dry_run: DryRunResult | None = Field(default=None, description="The validated execution of a dry run.")
    timeout_phase: str | None = Field(default=None, description="Phase that timed out.")
    timeout_time: Time | None = Field(default=None, description="When the timeout fired.")
    notification_status: NotificationStatus | None = Field(
        default=None, description="Phase of the tracked notification."
    )
    deduplication: Deduplication | None = Field(default=None, description="Repeat counts, kept by the gateway.")
    transition_count: int | None = Field(
        default=None,
        description="Phase transitions so far; each audit event id includes it, so a transition retried "
        "after a crash or conflict is recorded once.",
    )
    conditions: list[Condition] | None = Field(default=None, description="Standard conditions.")


class RemediationRequest(CustomResource):
    """A request to remediate one problem on one target resource."""

    KIND: ClassVar[str] = "RemediationRequest"
    PLURAL: ClassVar[str] = "remediationrequests"
    SINGULAR: ClassVar[str] = "remediationrequest"
    SHORT_NAMES: ClassVar[tuple[str, ...]] = ("rr",)
    PRINTER_COLUMNS: ClassVar[tuple[PrinterColumn, ...]] = (
        PrinterColumn(name="Phase", type="string", json_path=".status.overallPhase"),
        PrinterColumn(name="Kind", type="string", json_path=".spec.targetResource.kind"),
        PrinterColumn(name="Target", type="string", json_path=".spec.targetResource.name"),
        PrinterColumn(name="Block", type="string", json_path=".status.blockReason"),
        PrinterColumn(name="Outcome", type="string", json_path=".status.outcome"),
        PrinterColumn(name="Assessment", type="string", json_path=".status.effectiveness.assessment"),
        age_column(),
    )
    SELECTABLE_FIELDS: ClassVar[tuple[str, ...]] = (".spec.signalFingerprint",)
    DESCRIPTION: ClassVar[str] = (
        "RemediationRequest names a problem (a firing signal) on a target resource. The "
        "orchestrator selects a workflow, decides whether it may run now, and records why not "
        "when it may not."
    )

    kind: str = "RemediationRequest"
    spec: RemediationRequestSpec = Field(description="The signal and its target.")
    status: RemediationRequestStatus = Field(
        default_factory=RemediationRequestStatus, description="Orchestrator progress."
    )

    @property
    def phase(self) -> RemediationPhase | None:
        return self.status.overall_phase

    @property
    def is_terminal(self) -> bool:
        return self.status.overall_phase in TERMINAL_PHASES
