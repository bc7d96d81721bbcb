"""The Verifying phase and the IneffectiveChain check: decisions from what the gateway recorded."""

from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from kubernaut.api.v1alpha1.remediationrequest import Assessment, Effectiveness, RemediationPhase, RemediationRequest
from kubernaut.api.v1alpha1.remediationworkflow import RemediationWorkflow
from kubernaut.domain import transitions as tr
from kubernaut.domain.effectiveness import (
    EffectivenessPolicy,
    MetricCheck,
    decide_verifying,
    find_resolution,
    find_verification,
    pending_metric_query,
    verification_window,
)
from kubernaut.domain.routing import (
    BlockedAction,
    DecisionKind,
    RoutingPolicy,
    RoutingStage,
    check_ineffective_chain,
    decide_blocked,
    decide_routing,
)
from kubernaut.domain.signals import RESOLVED_ANNOTATION
from kubernaut.web.views import build_row, build_timeline
from tests.unit.test_transitions import POLICY, History, event_types, make_wfe

NOW = datetime(2026, 5, 1, 12, 0, tzinfo=UTC)
FP = "a" * 64
WINDOW = timedelta(minutes=10)
STARTED = NOW - timedelta(minutes=4)


def _ts(moment: datetime) -> str:
    return moment.strftime("%Y-%m-%dT%H:%M:%SZ")


def make_rr(
    name: str = "rr-1",
    *,
    phase: str = "Verifying",
    resolved: datetime | None = None,
    last_seen: datetime | None = None,
    created: datetime = NOW - timedelta(minutes=10),
    assessment: str | None = None,
    workflow: str = "restart",
    cleared: str = "",
    completed: datetime | None = None,
    block_reason: str | None = None,
    source: str | None = "alertmanager",
) -> RemediationRequest:
    annotations: dict[str, str] = {}
    if resolved is not None:
        annotations[RESOLVED_ANNOTATION] = _ts(resolved)
    if cleared:
        annotations["kubernaut.ai/clear-execution-block"] = cleared
    status: dict[str, Any] = {
        "overallPhase": phase,
        "verifyingStartTime": _ts(STARTED),
        "selectedWorkflow": {"workflowId": workflow, "version": "1", "containerImage": "reg/restart:1"},
        "transitionCount": 5,
    }
    if last_seen is not None:
        status["deduplication"] = {"occurrenceCount": 2, "lastSeenAt": _ts(last_seen)}
    if assessment is not None:
        status["effectiveness"] = {"assessment": assessment}
    if completed is not None:
        status["completedAt"] = _ts(completed)
    if block_reason is not None:
        status["blockReason"] = block_reason
    spec: dict[str, Any] = {
        "signalFingerprint": FP,
        "signalName": "HighMemory",
        "severity": "critical",
        "targetResource": {"kind": "Deployment", "name": "api", "namespace": "prod"},
    }
    if source:
        spec["source"] = source
    return RemediationRequest.model_validate(
        {
            "metadata": {
                "name": name,
                "namespace": "team",
                "uid": f"uid-{name}",
                "creationTimestamp": _ts(created),
                "annotations": annotations,
            },
            "spec": spec,
            "status": status,
        }
    )


# -- the alert's state ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("resolved", "last_seen", "expected"),
    [
        (None, None, None),
        (NOW - timedelta(minutes=1), None, NOW - timedelta(minutes=1)),
        (NOW - timedelta(minutes=1), NOW - timedelta(minutes=2), NOW - timedelta(minutes=1)),
        (NOW - timedelta(minutes=1), NOW - timedelta(minutes=1), NOW - timedelta(minutes=1)),  # same second
        (NOW - timedelta(minutes=1), NOW - timedelta(seconds=59), None),  # fired again after it resolved
        (None, NOW, None),
    ],
)
def test_the_alert_is_resolved_when_no_repeat_came_after_its_resolution(
    resolved: datetime | None, last_seen: datetime | None, expected: datetime | None
) -> None:
    assert find_resolution(make_rr(resolved=resolved, last_seen=last_seen)) == expected


# -- the Verifying decision -------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("resolved", "now", "assessment", "requeue"),
    [
        (None, STARTED, None, WINDOW),
        (None, STARTED + WINDOW - timedelta(seconds=1), None, timedelta(seconds=1)),
        (None, STARTED + WINDOW, Assessment.INEFFECTIVE, None),  # the window's end is inclusive
        (None, STARTED + 2 * WINDOW, Assessment.INEFFECTIVE, None),
        (STARTED - timedelta(minutes=1), STARTED, Assessment.EFFECTIVE, None),  # resolved before the run ended
        (STARTED + timedelta(minutes=3), STARTED + timedelta(minutes=3), Assessment.EFFECTIVE, None),
        (STARTED + WINDOW, STARTED + 2 * WINDOW, Assessment.EFFECTIVE, None),  # looked at late: the time counts
        (STARTED + WINDOW + timedelta(seconds=1), STARTED + 2 * WINDOW, Assessment.INEFFECTIVE, None),
    ],
)
def test_verifying_waits_for_the_resolution_until_the_window_ends(
    resolved: datetime | None, now: datetime, assessment: Assessment | None, requeue: timedelta | None
) -> None:
    decision = decide_verifying(make_rr(resolved=resolved), window=WINDOW, promql="", metric=None, now=now)
    assert (decision.effectiveness.assessment if decision.effectiveness else None) == assessment
    assert decision.requeue_after == requeue
    if decision.effectiveness is not None:
        assert decision.effectiveness.checked_at == now
        assert decision.effectiveness.resolved_at == (resolved if assessment == Assessment.EFFECTIVE else None)


@pytest.mark.parametrize(
    ("metric", "assessment"),
    [
        (MetricCheck.HOLDS, Assessment.EFFECTIVE),
        (MetricCheck.FAILS, Assessment.INEFFECTIVE),
        (MetricCheck.UNREACHABLE, Assessment.INCONCLUSIVE),
        (None, Assessment.INCONCLUSIVE),
    ],
)
def test_the_metric_check_decides_once_the_alert_resolved(metric: MetricCheck | None, assessment: Assessment) -> None:
    rr = make_rr(resolved=NOW - timedelta(minutes=1))
    decision = decide_verifying(rr, window=WINDOW, promql="up == 1", metric=metric, now=NOW)
    assert decision.effectiveness is not None
    assert decision.effectiveness.assessment == assessment
    assert decision.effectiveness.resolved_at == NOW - timedelta(minutes=1)


def _workflow(verification: dict[str, str] | None) -> RemediationWorkflow:
    spec: dict[str, Any] = {"workflowId": "restart", "version": "1", "containerImage": "reg/restart:1"}
    if verification is not None:
        spec["verification"] = verification
    return RemediationWorkflow.model_validate({"metadata": {"name": "restart"}, "spec": spec})


def test_the_workflow_sets_its_window_and_query() -> None:
    policy = EffectivenessPolicy(window=WINDOW)
    found = find_verification(make_rr(), [_workflow({"window": "30s", "promql": "up"})])
    assert verification_window(found, policy) == timedelta(seconds=30)
    assert verification_window(find_verification(make_rr(), [_workflow(None)]), policy) == WINDOW
    assert verification_window(find_verification(make_rr(), [_workflow({"window": "bad"})]), policy) == WINDOW
    assert pending_metric_query(make_rr(), found) == ""  # not before the alert resolved
    assert pending_metric_query(make_rr(resolved=NOW), found) == "up"


# -- the plans --------------------------------------------------------------------------------------


def test_a_completed_execution_of_an_alert_goes_to_verifying() -> None:
    rr = make_rr(phase="Executing", source="alertmanager")
    rr.status.workflow_execution_ref = None
    transition = tr.plan(rr, History(executions=[make_wfe("we-rr-1", "Completed")]), NOW, POLICY)
    assert transition.status is not None
    assert transition.status.overall_phase == RemediationPhase.VERIFYING
    assert transition.status.verifying_start_time == NOW
    assert transition.terminal is False
    assert transition.requeue == timedelta(0)


def test_verifying_completes_with_one_assessment_event_and_its_metrics() -> None:
    rr = make_rr(resolved=NOW - timedelta(minutes=1))
    transition = tr.plan(rr, History(), NOW, POLICY)
    assert transition.status is not None
    assert transition.status.overall_phase == RemediationPhase.COMPLETED
    assert transition.status.outcome == "Remediated"
    assert event_types(transition) == ["orchestrator.effectiveness.assessed", "orchestrator.lifecycle.completed"]
    assert transition.events[0].event_data["assessment"] == "Effective"
    metrics = [c.metric for c in transition.counts_before_write]
    assert metrics == [tr.Metric.ASSESSMENTS, tr.Metric.TIME_TO_RESOLUTION]


def test_verifying_without_resolution_waits_then_ends_ineffective() -> None:
    waiting = tr.plan(make_rr(), History(), NOW, POLICY)
    assert waiting.status is None
    assert waiting.requeue == STARTED + POLICY.effectiveness.window - NOW
    ended = tr.plan(make_rr(), History(), STARTED + POLICY.effectiveness.window, POLICY)
    assert ended.status is not None
    assert ended.status.outcome == "Ineffective"
    assert ended.status.effectiveness is not None
    assert ended.status.effectiveness.assessment == Assessment.INEFFECTIVE


# -- IneffectiveChain -------------------------------------------------------------------------------


def _chain(*assessments: str, workflow: str = "restart", cleared: int = -1) -> list[RemediationRequest]:
    """Completed requests, oldest first, one minute apart; the newest completed a minute before NOW."""
    n = len(assessments)
    return [
        make_rr(
            f"rr-old-{i}",
            phase="Completed",
            assessment=assessment,
            workflow=workflow,
            created=NOW - timedelta(minutes=2 * (n - i) + 1),
            completed=NOW - timedelta(minutes=2 * (n - i) - 1),
            cleared="checked by hand" if i == cleared else "",
        )
        for i, assessment in enumerate(assessments)
    ]


CHAIN_POLICY = RoutingPolicy(ineffective_chain_threshold=3, ineffective_chain_cooldown=timedelta(hours=4))
INEF, EFF = "Ineffective", "Effective"


@pytest.mark.parametrize(
    ("history", "blocks"),
    [
        ([], False),
        ([INEF, INEF], False),  # one short of the threshold
        ([INEF, INEF, INEF], True),  # exactly the threshold
        ([INEF, INEF, INEF, INEF], True),
        ([EFF, INEF, INEF, INEF], True),
        ([INEF, INEF, EFF, INEF, INEF], False),  # an Effective in between
        ([INEF, INEF, INEF, EFF], False),  # the newest was Effective
        ([INEF, INEF, INEF, "Inconclusive"], False),
        ([INEF, INEF, INEF, "NotAssessed"], False),
    ],
)
def test_the_chain_blocks_at_the_threshold_of_ineffective_outcomes_in_a_row(history: list[str], blocks: bool) -> None:
    decision = check_ineffective_chain(
        make_rr("rr-new", phase="Pending"), "restart", _chain(*history), NOW, CHAIN_POLICY
    )
    assert (decision is not None) == blocks
    if decision is not None:
        assert decision.reason == "IneffectiveChain"
        assert decision.blocked_until == NOW - timedelta(minutes=1) + timedelta(hours=4)
        assert "rr-old-" + str(len(history) - 1) in decision.message


def test_the_chain_counts_only_the_same_workflow_and_a_clearance_breaks_it() -> None:
    new = make_rr("rr-new", phase="Pending")
    assert check_ineffective_chain(new, "scale", _chain(INEF, INEF, INEF), NOW, CHAIN_POLICY) is None
    assert check_ineffective_chain(new, "", _chain(INEF, INEF, INEF), NOW, CHAIN_POLICY) is None
    assert check_ineffective_chain(new, "restart", _chain(INEF, INEF, INEF, cleared=2), NOW, CHAIN_POLICY) is None
    older_cleared = _chain(INEF, INEF, INEF, INEF, cleared=0)
    assert check_ineffective_chain(new, "restart", older_cleared, NOW, CHAIN_POLICY) is not None


@pytest.mark.parametrize(
    ("elapsed", "blocks"),
    [(timedelta(hours=4) - timedelta(seconds=1), True), (timedelta(hours=4), False), (timedelta(hours=5), False)],
)
def test_the_chain_block_lasts_its_cooldown_from_the_newest_completion(elapsed: timedelta, blocks: bool) -> None:
    now = NOW - timedelta(minutes=1) + elapsed
    decision = check_ineffective_chain(
        make_rr("rr-new", phase="Pending"), "restart", _chain(INEF, INEF, INEF), now, CHAIN_POLICY
    )
    assert (decision is not None) == blocks


def test_routing_places_the_chain_after_the_backoff_and_the_blocked_request_follows_it() -> None:
    new = make_rr("rr-new", phase="Pending")
    decision = decide_routing(
        new,
        workflow_id="restart",
        stage=RoutingStage.PENDING,
        same_fingerprint=_chain(INEF, INEF, INEF),
        same_target=[],
        lock=None,
        now=NOW,
        config=CHAIN_POLICY,
    )
    assert decision.kind == DecisionKind.BLOCK
    assert decision.reason == "IneffectiveChain"
    blocked = make_rr("rr-new", phase="Blocked", block_reason="IneffectiveChain")
    stays = decide_blocked(
        blocked, original=None, original_exists=True, same_target=[], lock=None, now=NOW, ineffective_chain=decision
    )
    assert stays.action == BlockedAction.STAY
    assert stays.requeue_after == decision.requeue_after
    cleared = decide_blocked(
        blocked, original=None, original_exists=True, same_target=[], lock=None, now=NOW, ineffective_chain=None
    )
    assert cleared.action == BlockedAction.RESUME


def test_one_manual_review_per_chain_block() -> None:
    rr = make_rr("rr-new", phase="Pending", source="alertmanager")
    rr.spec.workflow_ref = None
    history = History(requests=_chain(INEF, INEF, INEF))
    catalog = [_workflow(None)]
    history.workflows = catalog
    first = tr.plan(rr, history, NOW, tr.PlanPolicy(CHAIN_POLICY, POLICY.timeouts, POLICY.channels))
    assert first.status is not None
    assert first.status.block_reason == "IneffectiveChain"
    assert first.notification is not None
    assert first.notification.manifest["spec"]["priority"] == "high"
    assert first.notification.manifest["spec"]["metadata"]["reason"] == "IneffectiveChain"
    other = make_rr("rr-other", phase="Blocked", block_reason="IneffectiveChain")
    history.requests = [*history.requests, other]
    again = tr.plan(rr, history, NOW, tr.PlanPolicy(CHAIN_POLICY, POLICY.timeouts, POLICY.channels))
    assert again.notification is None


# -- how it shows -----------------------------------------------------------------------------------


def test_the_timeline_and_the_row_show_the_verification() -> None:
    rr = make_rr(phase="Completed", resolved=STARTED + timedelta(minutes=1), completed=NOW)
    rr.status.effectiveness = Effectiveness(
        assessment=Assessment.EFFECTIVE, resolved_at=STARTED + timedelta(minutes=1), checked_at=NOW, message="ok"
    )
    texts = [text for _, text in build_timeline(rr, None)]
    assert texts.index("Verifying: waiting for the alert to resolve") < texts.index("Alert resolved")
    assert texts.index("Alert resolved") < texts.index("Assessed Effective: ok")
    assert build_row(rr, NOW)["assessment"] == "Effective"
    waiting = make_rr()
    assert [text for _, text in build_timeline(waiting, None)][-1] == "Verifying: the alert has not resolved yet"
    assert build_row(waiting, NOW)["assessment"] == ""
