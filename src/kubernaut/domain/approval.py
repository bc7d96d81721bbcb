"""Approval: which remediations need a person's yes, the RemediationApprovalRequest that asks for it,
and what its annotations, status and deadline say now.

Pure: functions of the request, the selected workflow, the approval request's body (a plain dict, as
the caches and admission reviews hold it), `now` and the approval policy.

A decision is made by setting `kubernaut.ai/decision` (and `kubernaut.ai/decision-reason`) on the
approval request; the admission webhook stamps the authenticated user into `kubernaut.ai/decided-by`
(the gateway, trusted and not sent to the webhook, writes `slack:<name>` for a Slack click). The
orchestrator copies the decision into the status, once.
"""

from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from kubernaut.api.v1alpha1.common import API_VERSION
from kubernaut.api.v1alpha1.remediationapprovalrequest import ApprovalDecision, ApprovalPhase, DecidedVia
from kubernaut.api.v1alpha1.remediationrequest import RemediationRequest
from kubernaut.domain.duration import format_go_duration, format_rfc3339
from kubernaut.domain.remediation import build_child_name
from kubernaut.domain.routing import build_rr_target
from kubernaut.domain.selection import SelectedWorkflow

Body = Mapping[str, Any]

ANNOTATION_DECISION = "kubernaut.ai/decision"
ANNOTATION_DECISION_REASON = "kubernaut.ai/decision-reason"
ANNOTATION_DECIDED_BY = "kubernaut.ai/decided-by"
ANNOTATION_DECIDED_VIA = "kubernaut.ai/decided-via"
CLI_FIELD_MANAGER = "kubernaut-cli"
"""The field manager of `kubernaut approve|reject`: how the webhook tells a decision made with the CLI
from one made with kubectl (or any other client)."""
SLACK_ACTOR_PREFIX = "slack:"
EXPIRED_BY = "kubernaut"
FAILURE_PHASE_APPROVAL = "approval"
DECISIONS = tuple(decision.value for decision in ApprovalDecision)


@dataclass(frozen=True)
class ApprovalPolicy:
    """Requests matching any of these need approval whatever their workflow says (settings' `approval`)."""

    severities: frozenset[str] = frozenset()
    target_kinds: frozenset[str] = frozenset()
    namespaces: frozenset[str] = frozenset()
    timeout: timedelta = timedelta(minutes=15)


def decide_approval_required(rr: RemediationRequest, selected: SelectedWorkflow, policy: ApprovalPolicy) -> str:
    """Why rr needs approval before it runs `selected`; "" when it does not."""
    reasons = []
    if selected.requires_approval:
        reasons.append(f"workflow {selected.workflow_id} requires approval")
    spec = rr.spec
    if spec.severity.value in policy.severities:
        reasons.append(f"severity {spec.severity.value} requires approval")
    if spec.target_resource.kind in policy.target_kinds:
        reasons.append(f"target kind {spec.target_resource.kind} requires approval")
    if rr.metadata.namespace in policy.namespaces:
        reasons.append(f"namespace {rr.metadata.namespace} requires approval")
    return "; ".join(reasons)


def build_approval_name(rr_name: str) -> str:
    return build_child_name("rar-", rr_name)


def build_approval_request(
    rr: RemediationRequest, selected: SelectedWorkflow, reason: str, now: datetime, policy: ApprovalPolicy
) -> dict[str, Any]:
    """`rar-<rr>`, owned by the request: what would run, why it needs approval, and the deadline."""
    meta = rr.metadata
    return {
        "apiVersion": API_VERSION,
        "kind": "RemediationApprovalRequest",
        "metadata": {
            "name": build_approval_name(meta.name),
            "namespace": meta.namespace,
            "labels": {"kubernaut.ai/remediation-request": meta.name[:63]},
            "ownerReferences": [
                {
                    "apiVersion": API_VERSION,
                    "kind": "RemediationRequest",
                    "name": meta.name,
                    "uid": meta.uid,
                    "controller": True,
                    "blockOwnerDeletion": True,
                }
            ],
        },
        "spec": {
            "remediationRequestRef": {
                "apiVersion": API_VERSION,
                "kind": "RemediationRequest",
                "name": meta.name,
                "namespace": meta.namespace,
                "uid": meta.uid,
            },
            "workflow": selected.to_status().to_wire(),
            "targetResource": build_rr_target(rr),
            "reason": reason,
            "requiredBy": format_rfc3339(now + policy.timeout),
        },
    }


# -- what the approval request says now ----------------------------------------------------------------


@dataclass(frozen=True)
class ApprovalState:
    """The approval request's state: a recorded or newly seen decision, expiry, or still waiting."""

    phase: ApprovalPhase
    decided_by: str = ""
    decided_via: DecidedVia | None = None
    decided_at: datetime | None = None
    message: str = ""
    recorded: bool = False  # already in the status: nothing to copy
    requeue_after: timedelta | None = None  # Pending: until requiredBy

    @property
    def decided(self) -> bool:
        return self.phase != ApprovalPhase.PENDING


def _annotations(body: Body | None) -> Mapping[str, str]:
    return ((body or {}).get("metadata") or {}).get("annotations") or {}


def _instant(value: Any) -> datetime | None:
    if isinstance(value, datetime):
        return value if value.tzinfo else value.replace(tzinfo=UTC)
    if not isinstance(value, str) or not value:
        return None
    try:
        moment = datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        return None
    return moment if moment.tzinfo else moment.replace(tzinfo=UTC)


def is_approval_for(body: Body, rr: RemediationRequest) -> bool:
    """Whether the approval request asks about this very request (by uid): one left behind by a
    deleted request of the same name must never approve its successor."""
    ref = (body.get("spec") or {}).get("remediationRequestRef") or {}
    return bool(rr.metadata.uid) and ref.get("uid") == rr.metadata.uid


def parse_required_by(body: Body) -> datetime | None:
    return _instant((body.get("spec") or {}).get("requiredBy"))


def build_decided_via(field_manager: str) -> DecidedVia:
    """What the webhook stamps from the writer's field manager: cli for `kubernaut approve|reject`."""
    return DecidedVia.CLI if field_manager == CLI_FIELD_MANAGER else DecidedVia.KUBECTL


def parse_decided_via(body: Body) -> DecidedVia:
    """The stamped channel; slack for the gateway's `slack:<name>`; kubectl when none is stamped."""
    annotations = _annotations(body)
    if str(annotations.get(ANNOTATION_DECIDED_BY) or "").startswith(SLACK_ACTOR_PREFIX):
        return DecidedVia.SLACK
    via = annotations.get(ANNOTATION_DECIDED_VIA)
    return DecidedVia(via) if via in {v.value for v in DecidedVia} else DecidedVia.KUBECTL


def decide_approval(body: Body, now: datetime) -> ApprovalState:
    """What the approval request says at `now`: its recorded status first, then a decision in its
    annotations (the webhook admits one only before requiredBy), then expiry, else Pending."""
    status = body.get("status") or {}
    recorded = status.get("phase")
    if recorded in (ApprovalPhase.APPROVED, ApprovalPhase.REJECTED, ApprovalPhase.EXPIRED):
        via = status.get("decidedVia")
        return ApprovalState(
            phase=ApprovalPhase(recorded),
            decided_by=str(status.get("decidedBy") or ""),
            decided_via=DecidedVia(via) if via in {v.value for v in DecidedVia} else None,
            decided_at=_instant(status.get("decidedAt")),
            message=str(status.get("message") or ""),
            recorded=True,
        )
    annotations = _annotations(body)
    decision = annotations.get(ANNOTATION_DECISION)
    decided_by = str(annotations.get(ANNOTATION_DECIDED_BY) or "")
    if decision in DECISIONS and decided_by:
        return ApprovalState(
            phase=ApprovalPhase(decision),
            decided_by=decided_by,
            decided_via=parse_decided_via(body),
            decided_at=now,
            message=str(annotations.get(ANNOTATION_DECISION_REASON) or ""),
        )
    required_by = parse_required_by(body)
    if required_by is None or now >= required_by:
        deadline = format_rfc3339(required_by) if required_by else "its deadline"
        return ApprovalState(
            phase=ApprovalPhase.EXPIRED,
            decided_by=EXPIRED_BY,
            decided_at=now,
            message=f"no decision by {deadline}",
        )
    return ApprovalState(phase=ApprovalPhase.PENDING, requeue_after=required_by - now)


def build_approval_status(state: ApprovalState) -> dict[str, Any]:
    """The status that records a decision or expiry (wire form)."""
    status: dict[str, Any] = {"phase": state.phase.value, "decidedBy": state.decided_by, "message": state.message}
    if state.phase in (ApprovalPhase.APPROVED, ApprovalPhase.REJECTED):
        status["decision"] = state.phase.value
    if state.decided_via is not None:
        status["decidedVia"] = state.decided_via.value
    if state.decided_at is not None:
        status["decidedAt"] = format_rfc3339(state.decided_at)
    return status


PENDING_STATUS = {"phase": ApprovalPhase.PENDING.value}


def describe_decision(state: ApprovalState) -> str:
    """One line for the request's failure reason and the audit trail."""
    if state.phase == ApprovalPhase.EXPIRED:
        return f"Approval expired: {state.message}"
    said = f": {state.message}" if state.message else ""
    return f"{state.phase.value} by {state.decided_by}{said}"


def describe_wait(reason: str, name: str, namespace: str, policy: ApprovalPolicy) -> str:
    return (
        f"Awaiting approval ({reason}); decide within {format_go_duration(policy.timeout)} with "
        f"`kubernaut approve|reject {name} -n {namespace}` (RemediationApprovalRequest {build_approval_name(name)})"
    )
