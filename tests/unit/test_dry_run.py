"""Dry run, decided purely: the three levels, its outcome, the gateway's hold, and that no routing
history counts it as a success or a failure."""

from dataclasses import replace
from datetime import timedelta
from typing import Any

import pytest

from kubernaut.api.v1alpha1.remediationrequest import RemediationPhase
from kubernaut.domain import transitions as tr
from kubernaut.domain.dryrun import decide_dry_run, is_held
from kubernaut.domain.remediation import decide_exhausted_retries_notice
from kubernaut.domain.routing import RoutingPolicy, compute_consecutive_failures
from kubernaut.domain.selection import SelectedWorkflow
from tests.unit.test_approval import ApprovalHistory
from tests.unit.test_routing import T0, make_rr
from tests.unit.test_transitions import NOW, POLICY, WORKFLOW_REF, History, blocked, event_types
from tests.unit.test_transitions import make_rr as make_request

SELECTED = SelectedWorkflow(workflow_id="restart", version="1", container_image="reg/restart:1", container_digest=None)


def annotated(value: str) -> Any:
    rr = make_request()
    rr.metadata.annotations = {"kubernaut.ai/dry-run": value}
    return rr


@pytest.mark.parametrize(
    ("rr", "selected", "globally", "reason"),
    [
        (make_request(), SELECTED, False, ""),
        (make_request(), SELECTED, True, "dryRun is set globally"),
        (make_request(), replace(SELECTED, dry_run=True), False, "workflow restart sets dryRun"),
        (annotated("true"), SELECTED, False, "the request is annotated kubernaut.ai/dry-run=true"),
        (annotated("True"), SELECTED, False, "the request is annotated kubernaut.ai/dry-run=true"),
        (annotated("false"), SELECTED, False, ""),
        (annotated("yes"), SELECTED, False, ""),
    ],
)
def test_three_levels(rr: Any, selected: SelectedWorkflow, globally: bool, reason: str) -> None:
    assert decide_dry_run(rr, selected, globally) == reason


def test_routing_passed_a_dry_run_asks_for_validation_instead_of_the_execution() -> None:
    rr = make_request(status={"overallPhase": "Analyzing", "transitionCount": 2}, workflow_ref=WORKFLOW_REF)
    rr.metadata.annotations = {"kubernaut.ai/dry-run": "true"}
    planned = tr.plan_analyzing(rr, ApprovalHistory(), NOW, POLICY)
    assert planned.execution is None
    assert planned.status is None
    assert planned.dry_run is not None
    assert planned.dry_run.execution["metadata"]["name"] == "we-rr-1"
    assert planned.dry_run.execution["kind"] == "WorkflowExecution"
    globally = tr.plan_analyzing(
        make_request(status=rr.status.to_wire(), workflow_ref=WORKFLOW_REF),
        ApprovalHistory(),
        NOW,
        replace(POLICY, dry_run=True),
    )
    assert globally.dry_run is not None


@pytest.mark.parametrize(
    ("refusal", "validated", "message"),
    [(None, True, "would run (why)"), ("PipelineRun x: no", False, "PipelineRun x: no")],
)
def test_a_dry_run_ends_completed_with_its_result(refusal: str | None, validated: bool, message: str) -> None:
    rr = make_request(status={"overallPhase": "Analyzing", "transitionCount": 2}, workflow_ref=WORKFLOW_REF)
    check = tr.DryRunCheck({"metadata": {"name": "we-rr-1"}}, "restart", "why")
    done = tr.plan_dry_run_validated(rr, check, "wfe-0123", refusal, NOW)
    assert done.status is not None
    assert (done.status.overall_phase, done.status.outcome) == (RemediationPhase.COMPLETED, "DryRun")
    assert done.status.dry_run is not None
    assert done.status.dry_run.to_wire() == {
        "workflowId": "restart",
        "executionName": "we-rr-1",
        "lockName": "wfe-0123",
        "validated": validated,
        "message": message,
    }
    assert done.execution is None
    assert event_types(done) == ["orchestrator.lifecycle.completed"]
    assert done.events[0].event_data["outcome"] == "DryRun"


def dry_run(name: str, minutes_ago: int) -> Any:
    moment = T0 - timedelta(minutes=minutes_ago)
    return make_rr(name, created=moment, phase="Completed", completed_at=moment, status={"outcome": "DryRun"})


def failed(name: str, minutes_ago: int) -> Any:
    moment = T0 - timedelta(minutes=minutes_ago)
    return make_rr(name, created=moment, phase="Failed", failure_phase="workflow_execution", completed_at=moment)


def test_a_dry_run_does_not_end_a_failure_streak() -> None:
    history = [failed("f3", 5), dry_run("d2", 4), failed("f1", 3), dry_run("d0", 2), failed("f0", 1)]
    count, _ = compute_consecutive_failures(make_rr(), history)
    assert count == 3
    real = make_rr("ok", created=T0 - timedelta(minutes=4), phase="Completed", status={"outcome": "Remediated"})
    assert compute_consecutive_failures(make_rr(), [failed("f3", 5), real, failed("f1", 3)])[0] == 1
    assert RoutingPolicy().consecutive_failure_threshold == 3


def test_a_dry_run_does_not_start_a_new_streak_notice() -> None:
    blocked = make_rr(
        "b", created=T0 - timedelta(minutes=3), phase="Failed", status={"blockReason": "ConsecutiveFailures"}
    )
    assert not decide_exhausted_retries_notice(make_rr(), [blocked, dry_run("d", 1)])


@pytest.mark.parametrize(
    ("status", "after", "held"),
    [
        ({"overallPhase": "Completed", "outcome": "DryRun"}, timedelta(minutes=59), True),
        ({"overallPhase": "Completed", "outcome": "DryRun"}, timedelta(hours=1), False),
        ({"overallPhase": "Completed", "outcome": "Remediated"}, timedelta(minutes=1), False),
        ({"overallPhase": "Failed", "outcome": "DryRun"}, timedelta(minutes=1), False),
    ],
)
def test_the_gateway_holds_a_dry_runs_fingerprint(status: dict[str, str], after: timedelta, held: bool) -> None:
    body = {"status": {**status, "completedAt": "2026-05-01T12:00:00Z"}}
    assert is_held(body, NOW + after, timedelta(hours=1)) is held


@pytest.mark.parametrize(("original_outcome", "outcome"), [("DryRun", "DryRun"), ("Remediated", "Remediated")])
def test_a_duplicate_of_a_dry_run_is_a_dry_run(original_outcome: str, outcome: str) -> None:
    original = make_request("rr-0", status={"overallPhase": "Completed", "outcome": original_outcome})
    rr = blocked("DuplicateInProgress", duplicateOf="rr-0")
    transition = tr.plan_blocked(rr, History(requests=[original]), NOW, POLICY)
    assert transition.status is not None
    assert (transition.status.overall_phase, transition.status.outcome) == (RemediationPhase.COMPLETED, outcome)
