"""Approval, decided purely: who needs it, the approval request, what its annotations, status and
deadline say, the webhook's stamp, and the orchestrator's passes through AwaitingApproval."""

from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from datetime import timedelta
from typing import Any

import pytest

from kubernaut.api.v1alpha1.remediationapprovalrequest import ApprovalPhase, DecidedVia
from kubernaut.api.v1alpha1.remediationrequest import RemediationPhase
from kubernaut.domain import transitions as tr
from kubernaut.domain.admission import decide_decision_identity, decide_decision_stamp
from kubernaut.domain.approval import (
    ANNOTATION_DECIDED_BY,
    ANNOTATION_DECIDED_VIA,
    ANNOTATION_DECISION,
    ANNOTATION_DECISION_REASON,
    CLI_FIELD_MANAGER,
    ApprovalPolicy,
    build_approval_request,
    build_approval_status,
    decide_approval,
    decide_approval_required,
)
from kubernaut.domain.selection import SelectedWorkflow
from tests.unit.test_transitions import NOW, POLICY, WORKFLOW_REF, History, event_types, make_rr

SELECTED = SelectedWorkflow(
    workflow_id="restart", version="1.0.0", container_image="reg/restart:1", container_digest=None
)
RISKY = replace(SELECTED, requires_approval=True)


@pytest.mark.parametrize(
    ("selected", "policy", "wanted"),
    [
        (SELECTED, ApprovalPolicy(), ""),
        (RISKY, ApprovalPolicy(), "workflow restart requires approval"),
        (SELECTED, ApprovalPolicy(severities=frozenset({"critical"})), "severity critical requires approval"),
        (SELECTED, ApprovalPolicy(severities=frozenset({"warning"})), ""),
        (SELECTED, ApprovalPolicy(target_kinds=frozenset({"Deployment"})), "target kind Deployment requires approval"),
        (SELECTED, ApprovalPolicy(target_kinds=frozenset({"Node"})), ""),
        (SELECTED, ApprovalPolicy(namespaces=frozenset({"team"})), "namespace team requires approval"),
        (
            RISKY,
            ApprovalPolicy(namespaces=frozenset({"team"})),
            "workflow restart requires approval; namespace team requires approval",
        ),
    ],
)
def test_who_needs_approval_any_match(selected: SelectedWorkflow, policy: ApprovalPolicy, wanted: str) -> None:
    assert decide_approval_required(make_rr(), selected, policy) == wanted


def test_the_approval_request_is_owned_by_the_request_and_names_what_would_run() -> None:
    manifest = build_approval_request(make_rr(), RISKY, "why", NOW, ApprovalPolicy(timeout=timedelta(minutes=15)))
    assert manifest["metadata"]["name"] == "rar-rr-1"
    assert manifest["metadata"]["ownerReferences"][0]["uid"] == "uid-rr-1"
    assert manifest["metadata"]["ownerReferences"][0]["controller"] is True
    spec = manifest["spec"]
    assert spec["remediationRequestRef"]["name"] == "rr-1"
    assert spec["workflow"]["workflowId"] == "restart"
    assert spec["targetResource"] == "prod/Deployment/api"
    assert spec["reason"] == "why"
    assert spec["requiredBy"] == "2026-05-01T12:15:00Z"


def rar(
    annotations: dict[str, str] | None = None,
    status: dict[str, Any] | None = None,
    *,
    required_by: str = "2026-05-01T12:15:00Z",
) -> dict[str, Any]:
    meta: dict[str, Any] = {"name": "rar-rr-1", "namespace": "team", "annotations": annotations or {}}
    spec = {"requiredBy": required_by, "remediationRequestRef": {"name": "rr-1", "uid": "uid-rr-1"}}
    return {"metadata": meta, "spec": spec, "status": status or {}}


APPROVED = {ANNOTATION_DECISION: "Approved", ANNOTATION_DECISION_REASON: "ok", ANNOTATION_DECIDED_BY: "alice"}
REJECTED = {ANNOTATION_DECISION: "Rejected", ANNOTATION_DECISION_REASON: "not now", ANNOTATION_DECIDED_BY: "bob"}


@pytest.mark.parametrize(
    ("body", "now", "phase", "by", "via", "recorded"),
    [
        (rar(), NOW, ApprovalPhase.PENDING, "", None, False),
        (rar({ANNOTATION_DECISION: "Approved"}), NOW, ApprovalPhase.PENDING, "", None, False),  # not stamped
        (rar({**APPROVED, ANNOTATION_DECIDED_VIA: "cli"}), NOW, ApprovalPhase.APPROVED, "alice", DecidedVia.CLI, False),
        (
            rar({**REJECTED, ANNOTATION_DECIDED_VIA: "kubectl"}),
            NOW,
            ApprovalPhase.REJECTED,
            "bob",
            DecidedVia.KUBECTL,
            False,
        ),
        (
            rar({**APPROVED, ANNOTATION_DECIDED_BY: "slack:carol"}),
            NOW,
            ApprovalPhase.APPROVED,
            "slack:carol",
            DecidedVia.SLACK,
            False,
        ),
        # a decision admitted before the deadline holds after it
        (rar(APPROVED), NOW + timedelta(hours=1), ApprovalPhase.APPROVED, "alice", DecidedVia.KUBECTL, False),
        (rar(), NOW + timedelta(minutes=15), ApprovalPhase.EXPIRED, "kubernaut", None, False),
        (rar(), NOW + timedelta(minutes=14, seconds=59), ApprovalPhase.PENDING, "", None, False),
        (
            rar(status={"phase": "Rejected", "decision": "Rejected", "decidedBy": "bob", "decidedVia": "cli"}),
            NOW,
            ApprovalPhase.REJECTED,
            "bob",
            DecidedVia.CLI,
            True,
        ),
        (rar(status={"phase": "Pending"}), NOW, ApprovalPhase.PENDING, "", None, False),
    ],
)
def test_what_the_approval_request_says(
    body: dict[str, Any], now: Any, phase: ApprovalPhase, by: str, via: DecidedVia | None, recorded: bool
) -> None:
    state = decide_approval(body, now)
    assert (state.phase, state.decided_by, state.decided_via, state.recorded) == (phase, by, via, recorded)
    if phase == ApprovalPhase.PENDING:
        assert state.requeue_after == parse_left(body, now)


def parse_left(body: dict[str, Any], now: Any) -> timedelta:
    from kubernaut.domain.approval import parse_required_by

    required_by = parse_required_by(body)
    assert required_by is not None
    return required_by - now


def test_the_recorded_status_of_a_decision() -> None:
    state = decide_approval(rar({**APPROVED, ANNOTATION_DECIDED_VIA: "cli"}), NOW)
    assert build_approval_status(state) == {
        "phase": "Approved",
        "decision": "Approved",
        "decidedBy": "alice",
        "decidedVia": "cli",
        "decidedAt": "2026-05-01T12:00:00Z",
        "message": "ok",
    }
    expired = build_approval_status(decide_approval(rar(), NOW + timedelta(hours=1)))
    assert expired["phase"] == "Expired"
    assert "decision" not in expired
    assert expired["message"] == "no decision by 2026-05-01T12:15:00Z"


# -- the webhook's stamp ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("manager", "via"), [(CLI_FIELD_MANAGER, "cli"), ("kubectl-annotate", "kubectl"), ("", "kubectl")]
)
def test_a_decision_is_stamped_with_the_requester_and_its_client(manager: str, via: str) -> None:
    verdict = decide_decision_stamp(rar({ANNOTATION_DECISION: "Approved"}), rar(), "alice", NOW, manager)
    assert verdict.allowed
    assert verdict.patch == (
        {"op": "add", "path": "/metadata/annotations/kubernaut.ai~1decided-by", "value": "alice"},
        {"op": "add", "path": "/metadata/annotations/kubernaut.ai~1decided-via", "value": via},
    )
    stamped = rar({ANNOTATION_DECISION: "Approved", ANNOTATION_DECIDED_BY: "alice"})
    assert decide_decision_identity(stamped, rar(), "alice").allowed
    assert not decide_decision_identity(stamped, rar(), "bob").allowed


@pytest.mark.parametrize(
    ("new", "old", "now", "message"),
    [
        (
            rar({ANNOTATION_DECISION: "Approved", ANNOTATION_DECIDED_BY: "alice"}),
            rar(),
            NOW,
            "the annotation kubernaut.ai/decided-by cannot be set or changed by hand",
        ),
        (
            rar({ANNOTATION_DECISION: "Approved", ANNOTATION_DECIDED_VIA: "slack"}),
            rar(),
            NOW,
            "the annotation kubernaut.ai/decided-via cannot be set or changed by hand",
        ),
        (
            rar({**APPROVED, ANNOTATION_DECISION: "Rejected"}),
            rar(APPROVED),
            NOW,
            "RemediationApprovalRequest rar-rr-1 was already approved by alice",
        ),
        (
            rar({**APPROVED, ANNOTATION_DECISION_REASON: "changed my mind"}),
            rar(APPROVED),
            NOW,
            "was already approved by alice",
        ),
        (
            rar({ANNOTATION_DECISION: "Approved"}),
            rar(status={"phase": "Rejected", "decidedBy": "bob"}),
            NOW,
            "was already rejected by bob",
        ),
        (
            rar({ANNOTATION_DECISION: "Approved"}),
            rar(),
            NOW + timedelta(minutes=16),
            "RemediationApprovalRequest rar-rr-1 has expired (no decision by 2026-05-01T12:15:00Z)",
        ),
        (rar({ANNOTATION_DECISION: "yes"}), rar(), NOW, "kubernaut.ai/decision must be Approved or Rejected"),
    ],
)
def test_refused_decisions(new: dict[str, Any], old: dict[str, Any], now: Any, message: str) -> None:
    verdict = decide_decision_stamp(new, old, "mallory", now)
    assert not verdict.allowed
    assert message in verdict.message


def test_other_writes_to_a_decided_request_pass_untouched() -> None:
    labelled = rar(APPROVED)
    labelled["metadata"]["labels"] = {"team": "a"}
    assert decide_decision_stamp(labelled, rar(APPROVED), "bob", NOW) == decide_decision_stamp(
        rar(APPROVED), rar(APPROVED), "bob", NOW
    )
    assert decide_decision_stamp(labelled, rar(APPROVED), "bob", NOW).allowed
    assert decide_decision_identity(labelled, rar(APPROVED), "bob").allowed


# -- the orchestrator's passes ------------------------------------------------------------------------


@dataclass
class ApprovalHistory(History):
    approvals: dict[str, Mapping[str, Any]] = field(default_factory=dict)

    def approval(self, name: str) -> Mapping[str, Any] | None:
        return self.approvals.get(name)


NEEDS = replace(POLICY, approval=ApprovalPolicy(severities=frozenset({"critical"})))
ANALYZING = {"overallPhase": "Analyzing", "transitionCount": 2, "analyzingStartTime": NOW}
AWAITING = {"overallPhase": "AwaitingApproval", "transitionCount": 3, "startTime": NOW}


def test_routing_passed_and_approval_needed_asks_a_person() -> None:
    rr = make_rr(status=ANALYZING, workflow_ref=WORKFLOW_REF)
    transition = tr.plan_analyzing(rr, ApprovalHistory(), NOW, NEEDS)
    assert transition.execution is None
    assert transition.status is not None
    assert transition.status.overall_phase == RemediationPhase.AWAITING_APPROVAL
    assert transition.status.selected_workflow is not None
    assert "kubernaut approve|reject rr-1 -n team" in (transition.status.message or "")
    assert transition.approval is not None
    assert transition.approval.manifest["metadata"]["name"] == "rar-rr-1"
    assert transition.notification is not None
    notice = transition.notification.manifest
    assert (notice["metadata"]["name"], notice["spec"]["type"], notice["spec"]["priority"]) == (
        "nr-approval-rr-1",
        "approval",
        "critical",
    )
    assert notice["spec"]["channels"] == ["critical"]  # the channels of the request's priority
    assert transition.requeue == timedelta(minutes=15)


def test_without_approval_needed_it_executes() -> None:
    rr = make_rr(status=ANALYZING, workflow_ref=WORKFLOW_REF)
    assert tr.plan_analyzing(rr, ApprovalHistory(), NOW, POLICY).execution is not None


def test_approved_runs_routing_again_then_executes() -> None:
    history = ApprovalHistory(approvals={"rar-rr-1": rar({**APPROVED, ANNOTATION_DECIDED_VIA: "cli"})})
    waiting = make_rr(status=AWAITING, workflow_ref=WORKFLOW_REF)
    moved = tr.plan_awaiting_approval(waiting, history, NOW, NEEDS)
    assert moved.status is not None
    assert moved.status.overall_phase == RemediationPhase.ANALYZING
    assert moved.requeue == timedelta(0)
    assert moved.approval_record is not None
    assert moved.approval_record.status["decidedBy"] == "alice"
    assert event_types(moved) == ["orchestrator.approval.decided", "orchestrator.phase.transitioned"]
    decided = moved.events[0]
    assert (decided.actor_type, decided.actor_id, decided.event_data["decided_via"]) == ("user", "alice", "cli")
    again = make_rr(status=moved.status.to_wire(), workflow_ref=WORKFLOW_REF)
    assert tr.plan_analyzing(again, history, NOW, NEEDS).execution is not None


@pytest.mark.parametrize(
    ("body", "now", "reason", "actor"),
    [
        (rar(REJECTED), NOW, "Rejected by bob: not now", "bob"),
        (
            rar(),
            NOW + timedelta(minutes=20),
            "Approval expired: no decision by 2026-05-01T12:15:00Z",
            "remediation-orchestrator",
        ),
    ],
)
def test_rejected_or_expired_fails_the_request(body: dict[str, Any], now: Any, reason: str, actor: str) -> None:
    waiting = make_rr(status=AWAITING, workflow_ref=WORKFLOW_REF)
    transition = tr.plan_awaiting_approval(waiting, ApprovalHistory(approvals={"rar-rr-1": body}), now, NEEDS)
    assert transition.status is not None
    assert transition.status.overall_phase == RemediationPhase.FAILED
    assert (transition.status.failure_phase, transition.status.failure_reason) == ("approval", reason)
    assert event_types(transition) == ["orchestrator.approval.decided", "orchestrator.lifecycle.completed"]
    assert transition.events[0].actor_id == actor
    assert transition.approval_record is not None
    assert transition.approval_record.status["phase"] in ("Rejected", "Expired")


def test_waiting_requeues_at_the_deadline_and_a_recorded_decision_is_not_written_again() -> None:
    waiting = make_rr(status=AWAITING, workflow_ref=WORKFLOW_REF)
    pending = tr.plan_awaiting_approval(waiting, ApprovalHistory(approvals={"rar-rr-1": rar()}), NOW, NEEDS)
    assert pending.status is None
    assert pending.requeue == timedelta(minutes=15)
    recorded = rar(REJECTED, {"phase": "Rejected", "decision": "Rejected", "decidedBy": "bob", "message": "no"})
    transition = tr.plan_awaiting_approval(waiting, ApprovalHistory(approvals={"rar-rr-1": recorded}), NOW, NEEDS)
    assert transition.approval_record is None
    assert transition.status is not None
    assert transition.status.overall_phase == RemediationPhase.FAILED


def test_an_approval_left_by_a_deleted_request_of_the_same_name_approves_nothing() -> None:
    stale = rar({**APPROVED, ANNOTATION_DECIDED_VIA: "cli"})
    stale["spec"]["remediationRequestRef"] = {"name": "rr-1", "uid": "uid-of-the-deleted-one"}
    history = ApprovalHistory(approvals={"rar-rr-1": stale})
    rr = make_rr(status=ANALYZING, workflow_ref=WORKFLOW_REF)
    transition = tr.plan_analyzing(rr, history, NOW, NEEDS)
    assert transition.execution is None
    assert transition.status is not None
    assert transition.status.overall_phase == RemediationPhase.AWAITING_APPROVAL
    waiting = make_rr(status=AWAITING, workflow_ref=WORKFLOW_REF)
    assert tr.plan_awaiting_approval(waiting, history, NOW, NEEDS).status is None
