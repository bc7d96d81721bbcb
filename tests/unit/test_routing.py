"""Routing checks one by one, their boundaries and their order, and the Blocked phase."""

from collections.abc import Sequence
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from kubernaut.api.v1alpha1 import RemediationRequest, WorkflowExecution
from kubernaut.domain.routing import (
    BlockedAction,
    BlockedDecision,
    DecisionKind,
    LockHolder,
    RoutingDecision,
    RoutingPolicy,
    RoutingStage,
    compute_target_backoff,
    decide_blocked,
    decide_routing,
)

T0 = datetime(2025, 12, 15, 10, 0, tzinfo=UTC)
FP = "a" * 64
OTHER_FP = "b" * 64
TARGET = "prod/Deployment/api"
NO_JITTER = RoutingPolicy(backoff_jitter_percent=0)
US = timedelta(microseconds=1)


def make_rr(
    name: str = "rr-new",
    *,
    ns: str = "prod",
    created: datetime = T0,
    phase: str | None = None,
    fingerprint: str = FP,
    target: tuple[str, str, str | None] = ("Deployment", "api", "prod"),
    failure_phase: str | None = None,
    completed_at: datetime | None = None,
    status: dict[str, Any] | None = None,
) -> RemediationRequest:
    kind, target_name, target_ns = target
    body: dict[str, Any] = {
        "metadata": {"name": name, "namespace": ns, "uid": f"uid-{ns}-{name}", "creationTimestamp": created},
        "spec": {
            "signalFingerprint": fingerprint,
            "signalName": "HighMemory",
            "severity": "critical",
            "targetResource": {"kind": kind, "name": target_name, "namespace": target_ns},
        },
        "status": {
            "overallPhase": phase,
            "failurePhase": failure_phase,
            "completedAt": completed_at,
            **(status or {}),
        },
    }
    return RemediationRequest.model_validate(body)


def make_wfe(
    name: str,
    *,
    ns: str = "prod",
    target: str = TARGET,
    phase: str | None = None,
    workflow_id: str = "wf-1",
    completed: datetime | None = None,
    execution_failure: bool | None = None,
    reason: str = "TaskFailed",
    owner_uid: str | None = None,
    created: datetime = T0 - timedelta(hours=2),
    cleared: bool = False,
) -> WorkflowExecution:
    status: dict[str, Any] = {"phase": phase, "completionTime": completed}
    if phase == "Failed":
        status["failureDetails"] = {
            "failedTaskIndex": 0,
            "failedTaskName": "",
            "reason": reason,
            "message": "boom",
            "failedAt": completed or T0,
            "executionTimeBeforeFailure": "",
            "naturalLanguageSummary": "boom",
            "wasExecutionFailure": execution_failure,
        }
    if cleared:
        status["blockClearance"] = {
            "clearedAt": T0,
            "clearedBy": "bob",
            "clearReason": "checked",
            "clearMethod": "Annotation",
        }
    owners = (
        [
            {
                "apiVersion": "kubernaut.ai/v1alpha1",
                "kind": "RemediationRequest",
                "name": "x",
                "uid": owner_uid,
                "controller": True,
            }
        ]
        if owner_uid
        else []
    )
    return WorkflowExecution.model_validate(
        {
            "metadata": {"name": name, "namespace": ns, "creationTimestamp": created, "ownerReferences": owners},
            "spec": {
                "remediationRequestRef": {"name": "x", "namespace": ns},
                "workflowRef": {"workflowId": workflow_id, "version": "1.0.0", "containerImage": "reg/wf:1"},
                "targetResource": target,
            },
            "status": status,
        }
    )


def route(
    rr: RemediationRequest | None = None,
    *,
    workflow_id: str = "",
    stage: RoutingStage = RoutingStage.PENDING,
    rrs: Sequence[RemediationRequest] = (),
    wfes: Sequence[WorkflowExecution] = (),
    lock: LockHolder | None = None,
    now: datetime = T0,
    config: RoutingPolicy = NO_JITTER,
) -> RoutingDecision:
    return decide_routing(
        rr if rr is not None else make_rr(),
        workflow_id=workflow_id,
        stage=stage,
        same_fingerprint=rrs,
        same_target=wfes,
        lock=lock,
        now=now,
        config=config,
    )


def failed_rr(name: str, minutes_ago: int, failure_phase: str = "workflow_execution") -> RemediationRequest:
    at = T0 - timedelta(minutes=minutes_ago)
    return make_rr(
        name, created=at - timedelta(minutes=1), phase="Failed", failure_phase=failure_phase, completed_at=at
    )


def completed_rr(name: str, minutes_ago: int) -> RemediationRequest:
    at = T0 - timedelta(minutes=minutes_ago)
    return make_rr(name, created=at - timedelta(minutes=1), phase="Completed", completed_at=at)


def test_nothing_in_the_way_proceeds() -> None:
    assert route(stage=RoutingStage.ANALYZING, workflow_id="wf-1") == RoutingDecision(kind=DecisionKind.PROCEED)


# --- check 1: ConsecutiveFailures ---------------------------------------------------------------


def test_three_workflow_failures_block_until_newest_failure_plus_cooldown() -> None:
    rrs = [failed_rr("f1", 30), failed_rr("f2", 20), failed_rr("f3", 10)]
    decision = route(rrs=rrs)
    until = T0 - timedelta(minutes=10) + timedelta(hours=1)
    assert decision.kind == DecisionKind.BLOCK
    assert decision.reason == "ConsecutiveFailures"
    assert decision.blocked_until == until
    assert decision.requeue_after == timedelta(minutes=50)
    assert decision.message == "3 consecutive failures. Cooldown expires: 2025-12-15T10:50:00Z"
    assert (decision.duplicate_of, decision.blocking_workflow_execution) == ("", "")


@pytest.mark.parametrize(
    ("after_newest", "blocked"),
    [
        (timedelta(hours=1) - US, True),
        (timedelta(hours=1), False),
        (timedelta(hours=1) + US, False),
    ],
)
def test_consecutive_failure_cooldown_boundary(after_newest: timedelta, blocked: bool) -> None:
    rrs = [failed_rr("f1", 30), failed_rr("f2", 20), failed_rr("f3", 10)]
    now = T0 - timedelta(minutes=10) + after_newest
    assert (route(rrs=rrs, now=now).reason == "ConsecutiveFailures") is blocked


@pytest.mark.parametrize(
    ("history", "count"),
    [
        # newest first; each entry: (phase, failurePhase)
        ([("Failed", "workflow_execution")] * 2, None),
        ([("Failed", "workflow_execution")] * 3, 3),
        ([("Failed", "workflow_execution")] * 5, 5),
        # SYSTEM §8 item 30: a success in between resets the chain.
        ([("Failed", "workflow_execution")] * 2 + [("Completed", None)] + [("Failed", "workflow_execution")] * 2, None),
        # Failures outside the workflow (no workflow, blocked, deduplicated) are transparent.
        ([("Failed", "workflow_execution"), ("Failed", "analysis"), ("Failed", "blocked")] * 1
         + [("Failed", "workflow_execution"), ("Failed", "deduplicated"), ("Failed", "workflow_execution")], 3),
        # Blocked, TimedOut, Skipped, Cancelled and active phases neither count nor break the chain.
        ([("Failed", "workflow_execution"), ("Blocked", None), ("TimedOut", None), ("Skipped", None),
          ("Cancelled", None), ("Executing", None), ("Failed", "workflow_execution"),
          ("Failed", "workflow_execution")], 3),
        ([("Blocked", None)] * 4, None),
        ([("Completed", None)] + [("Failed", "workflow_execution")] * 3, None),
    ],
)  # fmt: skip
def test_consecutive_failure_walk(history: list[tuple[str, str | None]], count: int | None) -> None:
    rrs = [
        make_rr(
            f"h{i}",
            created=T0 - timedelta(minutes=i + 1),
            phase=phase,
            failure_phase=failure_phase,
            completed_at=T0 - timedelta(minutes=i + 1) if phase in ("Failed", "Completed") else None,
        )
        for i, (phase, failure_phase) in enumerate(history)
    ]
    decision = route(rrs=list(reversed(rrs)), config=RoutingPolicy(backoff_jitter_percent=0))
    if count is None:
        assert decision.reason != "ConsecutiveFailures"
    else:
        assert decision.reason == "ConsecutiveFailures"
        assert decision.message.startswith(f"{count} consecutive failures.")
        # The newest counted failure is h0 (created and completed 1 minute before now).
        assert decision.blocked_until == T0 - timedelta(minutes=1) + timedelta(hours=1)


def test_completion_falls_back_to_creation_time() -> None:
    rrs = [
        make_rr(f"f{i}", created=T0 - timedelta(minutes=10 * i), phase="Failed", failure_phase="workflow_execution")
        for i in (1, 2, 3)
    ]
    assert route(rrs=rrs).blocked_until == T0 - timedelta(minutes=10) + timedelta(hours=1)


def test_threshold_and_cooldown_are_configurable() -> None:
    rrs = [failed_rr("f1", 20), failed_rr("f2", 10)]
    config = RoutingPolicy(
        consecutive_failure_threshold=2, consecutive_failure_cooldown=timedelta(minutes=15), backoff_jitter_percent=0
    )
    decision = route(rrs=rrs, config=config)
    assert decision.reason == "ConsecutiveFailures"
    assert decision.blocked_until == T0 + timedelta(minutes=5)
    assert route(rrs=rrs, config=config, now=T0 + timedelta(minutes=5)).kind == DecisionKind.PROCEED


def test_other_fingerprints_and_the_request_itself_do_not_count() -> None:
    rr = make_rr("rr-new", phase="Failed", failure_phase="workflow_execution", completed_at=T0)
    others = [
        make_rr(f"o{i}", created=T0 - timedelta(minutes=i), fingerprint=OTHER_FP, phase="Failed",
                failure_phase="workflow_execution", completed_at=T0)
        for i in (1, 2, 3)
    ]  # fmt: skip
    rrs = [rr, failed_rr("f1", 20), failed_rr("f2", 10), *others]
    assert route(rr, rrs=rrs).kind == DecisionKind.PROCEED


# --- check 2: DuplicateInProgress ---------------------------------------------------------------


@pytest.mark.parametrize("phase", [None, "Pending", "Processing", "Analyzing", "Executing", "Blocked"])
def test_older_active_request_makes_this_a_duplicate(phase: str | None) -> None:
    original = make_rr("rr-1", created=T0 - timedelta(minutes=1), phase=phase)
    rr = make_rr("rr-2")
    decision = route(rr, rrs=[original, rr])
    assert decision.kind == DecisionKind.BLOCK
    assert decision.reason == "DuplicateInProgress"
    assert decision.duplicate_of == "rr-1"
    assert "Duplicate of active remediation rr-1" in decision.message
    assert decision.blocked_until is None
    assert decision.requeue_after == timedelta(seconds=30)


@pytest.mark.parametrize("phase", ["Completed", "Failed", "TimedOut", "Skipped", "Cancelled"])
def test_terminal_requests_are_not_originals(phase: str) -> None:
    other = make_rr("rr-1", created=T0 - timedelta(minutes=1), phase=phase)
    assert route(make_rr("rr-2"), rrs=[other]).kind == DecisionKind.PROCEED


@pytest.mark.parametrize(
    ("other_name", "other_created", "duplicate"),
    [
        ("rr-a", T0 - US, True),
        ("rr-z", T0 - US, True),
        ("rr-a", T0, True),  # same instant, name sorts first: it is the original
        ("rr-c", T0, False),  # same instant, name sorts after: this one is the original
        ("rr-a", T0 + US, False),  # newer requests never are originals
    ],
)
def test_duplicate_tie_breaker(other_name: str, other_created: datetime, duplicate: bool) -> None:
    other = make_rr(other_name, created=other_created, phase="Analyzing")
    rr = make_rr("rr-b", created=T0, phase="Pending")
    decision = route(rr, rrs=[other, rr])
    assert (decision.reason == "DuplicateInProgress") is duplicate
    assert decision.duplicate_of == (other_name if duplicate else "")


def test_the_oldest_active_request_is_the_original() -> None:
    rrs = [
        make_rr("rr-2", created=T0 - timedelta(minutes=2), phase="Blocked"),
        make_rr("rr-1", created=T0 - timedelta(minutes=3), phase="Executing"),
        make_rr("rr-0", created=T0 - timedelta(minutes=4), phase="Completed"),
    ]
    assert route(rrs=rrs).duplicate_of == "rr-1"


def test_duplicate_in_another_namespace_is_named_with_its_namespace() -> None:
    original = make_rr("rr-1", ns="team-a", created=T0 - timedelta(minutes=1), phase="Executing")
    decision = route(make_rr("rr-2", ns="team-b"), rrs=[original])
    assert decision.duplicate_of == "rr-1"
    assert "rr-1 in namespace team-a" in decision.message


def test_consecutive_failures_outrank_duplicates() -> None:
    # SYSTEM §8 item 31.
    rrs = [failed_rr("f1", 30), failed_rr("f2", 20), failed_rr("f3", 10), make_rr("rr-1", created=T0 - US)]
    assert route(rrs=rrs).reason == "ConsecutiveFailures"


# --- check 3: ResourceBusy ----------------------------------------------------------------------


@pytest.mark.parametrize("phase", [None, "Pending", "Running"])
@pytest.mark.parametrize("stage", list(RoutingStage))
def test_active_execution_on_the_target_blocks(phase: str | None, stage: RoutingStage) -> None:
    decision = route(make_rr("rr-y"), stage=stage, workflow_id="wf-1", wfes=[make_wfe("we-x", phase=phase)])
    assert decision.kind == DecisionKind.BLOCK
    assert decision.reason == "ResourceBusy"
    assert decision.blocking_workflow_execution == "we-x"
    assert decision.blocked_until is None
    assert decision.requeue_after == timedelta(seconds=30)
    assert "we-x" in decision.message
    assert "running on the same target prod/Deployment/api" in decision.message


def test_own_execution_is_not_a_conflict() -> None:
    rr = make_rr("rr-y")
    own = make_wfe("we-rr-y", phase="Running", owner_uid=rr.metadata.uid)
    assert route(rr, wfes=[own]).kind == DecisionKind.PROCEED


def test_executions_on_other_targets_are_ignored() -> None:
    other = make_wfe("we-b", target="prod/Deployment/other", phase="Running")
    assert route(wfes=[other]).kind == DecisionKind.PROCEED


def test_cluster_scoped_target() -> None:
    rr = make_rr(target=("Node", "worker-1", None))
    assert route(rr, wfes=[make_wfe("we-n", target="Node/worker-1", phase="Running")]).reason == "ResourceBusy"
    assert route(rr, wfes=[make_wfe("we-n", target="node/worker-1", phase="Running")]).kind == DecisionKind.PROCEED


@pytest.mark.parametrize(
    ("lock", "blocking"),
    [
        (LockHolder("wfe-0123456789abcdef", "we-x", "prod"), "we-x"),
        (LockHolder("wfe-0123456789abcdef", "we-rr-new", "other-ns"), "we-rr-new"),
        (LockHolder("wfe-0123456789abcdef", "", ""), "wfe-0123456789abcdef"),
    ],
)
def test_a_foreign_lock_blocks(lock: LockHolder, blocking: str) -> None:
    decision = route(make_rr("rr-new"), lock=lock)
    assert decision.reason == "ResourceBusy"
    assert decision.blocking_workflow_execution == blocking
    assert lock.pipeline_run in decision.message
    assert decision.requeue_after == timedelta(seconds=30)


def test_own_lock_does_not_block() -> None:
    rr = make_rr("rr-new")
    assert route(rr, lock=LockHolder("wfe-0123456789abcdef", "we-rr-new", "prod")).kind == DecisionKind.PROCEED
    owned = make_wfe("custom-name", phase="Running", owner_uid=rr.metadata.uid)
    lock = LockHolder("wfe-0123456789abcdef", "custom-name", "prod")
    assert route(rr, wfes=[owned], lock=lock).kind == DecisionKind.PROCEED


def test_active_execution_is_named_over_the_lock() -> None:
    decision = route(wfes=[make_wfe("we-x", phase="Running")], lock=LockHolder("wfe-1", "we-other", "prod"))
    assert decision.blocking_workflow_execution == "we-x"


def test_duplicates_outrank_resource_busy() -> None:
    decision = route(rrs=[make_rr("rr-1", created=T0 - US)], wfes=[make_wfe("we-x", phase="Running")])
    assert decision.reason == "DuplicateInProgress"


# --- check 4: RecentlyRemediated ----------------------------------------------------------------


def test_recent_success_of_the_same_workflow_blocks() -> None:
    # SYSTEM §8 item 34.
    done = T0 - timedelta(minutes=2)
    wfe = make_wfe("we-done", phase="Completed", completed=done)
    decision = route(stage=RoutingStage.ANALYZING, workflow_id="wf-1", wfes=[wfe])
    assert decision.kind == DecisionKind.BLOCK
    assert decision.reason == "RecentlyRemediated"
    assert decision.blocked_until == done + timedelta(minutes=5)
    assert decision.requeue_after == timedelta(minutes=3)
    assert decision.blocking_workflow_execution == ""
    assert "we-done" in decision.message
    assert "Cooldown expires: 2025-12-15T10:03:00Z" in decision.message


def test_recent_success_of_another_workflow_does_not_block() -> None:
    # SYSTEM §8 item 35.
    wfe = make_wfe("we-done", phase="Completed", completed=T0 - timedelta(minutes=2))
    assert route(stage=RoutingStage.ANALYZING, workflow_id="wf-2", wfes=[wfe]).kind == DecisionKind.PROCEED


def test_any_workflow_counts_when_none_is_selected_yet() -> None:
    wfe = make_wfe("we-done", phase="Completed", workflow_id="wf-9", completed=T0 - timedelta(minutes=2))
    assert route(workflow_id="", wfes=[wfe]).reason == "RecentlyRemediated"


def test_a_recent_failure_is_not_a_recent_remediation() -> None:
    # SYSTEM §8 item 36 (an execution failure, so the per-target backoff does not apply either).
    wfe = make_wfe("we-f", phase="Failed", completed=T0 - timedelta(minutes=1), execution_failure=True)
    assert route(workflow_id="wf-1", wfes=[wfe]).kind == DecisionKind.PROCEED


@pytest.mark.parametrize(
    ("elapsed", "blocked"),
    [(timedelta(minutes=5) - US, True), (timedelta(minutes=5), False), (timedelta(minutes=6), False)],
)
def test_recently_remediated_boundary(elapsed: timedelta, blocked: bool) -> None:
    wfe = make_wfe("we-done", phase="Completed", completed=T0 - elapsed)
    assert (route(wfes=[wfe]).reason == "RecentlyRemediated") is blocked


def test_latest_success_decides() -> None:
    old = make_wfe("we-old", phase="Completed", completed=T0 - timedelta(minutes=4))
    new = make_wfe("we-new", phase="Completed", completed=T0 - timedelta(minutes=1))
    decision = route(wfes=[new, old])
    assert "we-new" in decision.message
    assert decision.blocked_until == T0 + timedelta(minutes=4)


def test_zero_cooldown_never_blocks() -> None:
    wfe = make_wfe("we-done", phase="Completed", completed=T0)
    config = RoutingPolicy(recently_remediated_cooldown=timedelta(0), backoff_jitter_percent=0)
    assert route(wfes=[wfe], config=config).kind == DecisionKind.PROCEED


def test_resource_busy_outranks_recently_remediated() -> None:
    wfes = [make_wfe("we-done", phase="Completed", completed=T0), make_wfe("we-x", phase="Running")]
    assert route(wfes=wfes).reason == "ResourceBusy"


# --- check 5: ExponentialBackoff ----------------------------------------------------------------


def pre_exec_failure(name: str, at: datetime, **kwargs: Any) -> WorkflowExecution:
    return make_wfe(name, phase="Failed", completed=at, execution_failure=False, **kwargs)


def test_failure_before_execution_starts_a_backoff() -> None:
    failed_at = T0 - timedelta(seconds=30)
    decision = route(wfes=[pre_exec_failure("we-f", failed_at)])
    assert decision.kind == DecisionKind.BLOCK
    assert decision.reason == "ExponentialBackoff"
    assert decision.blocked_until == failed_at + timedelta(seconds=60)
    assert decision.next_allowed_execution == decision.blocked_until
    assert decision.consecutive_failure_count == 1
    assert decision.requeue_after == timedelta(seconds=30)
    assert "Exponential backoff active. Next execution allowed at 2025-12-15T10:00:30Z" in decision.message
    assert decision.blocking_workflow_execution == ""


def test_backoff_grows_with_failures_since_the_last_success() -> None:
    # SYSTEM §8 item 37 under per-target history: two failures -> 120 s after the newest one.
    wfes = [
        make_wfe("we-ok", phase="Completed", completed=T0 - timedelta(hours=1)),
        pre_exec_failure("we-f1", T0 - timedelta(minutes=10)),
        pre_exec_failure("we-f2", T0 - timedelta(seconds=30)),
    ]
    decision = route(wfes=wfes)
    assert decision.reason == "ExponentialBackoff"
    assert decision.consecutive_failure_count == 2
    assert decision.requeue_after == timedelta(seconds=90)


@pytest.mark.parametrize(
    ("since_failure", "blocked"),
    [(timedelta(seconds=60) - US, True), (timedelta(seconds=60), False), (timedelta(seconds=61), False)],
)
def test_backoff_boundary(since_failure: timedelta, blocked: bool) -> None:
    wfes = [pre_exec_failure("we-f", T0)]
    assert (route(wfes=wfes, now=T0 + since_failure).reason == "ExponentialBackoff") is blocked


def test_success_resets_the_backoff() -> None:
    wfes = [
        pre_exec_failure("we-f1", T0 - timedelta(minutes=20)),
        pre_exec_failure("we-f2", T0 - timedelta(minutes=19)),
        make_wfe("we-ok", phase="Completed", completed=T0 - timedelta(minutes=10)),
    ]
    assert compute_target_backoff(wfes, TARGET, T0, NO_JITTER) == (0, None)
    assert route(wfes=wfes).kind == DecisionKind.PROCEED


@pytest.mark.parametrize(
    "excluded",
    [
        make_wfe("we-x", phase="Failed", completed=T0, execution_failure=True),
        make_wfe("we-x", phase="Failed", completed=T0, execution_failure=False, reason="ExecutionRaceCondition"),
        make_wfe("we-x", phase="Failed", completed=None, execution_failure=False),
        make_wfe("we-x", target="prod/Deployment/other", phase="Failed", completed=T0, execution_failure=False),
    ],
)
def test_backoff_counts_only_failures_before_execution_on_the_target(excluded: WorkflowExecution) -> None:
    counted = pre_exec_failure("we-f", T0 - timedelta(minutes=30))
    assert compute_target_backoff([counted, excluded], TARGET, T0, NO_JITTER) == (
        1,
        T0 - timedelta(minutes=30) + timedelta(seconds=60),
    )


def test_compute_target_backoff_follows_the_backoff_series() -> None:
    wfes = [pre_exec_failure(f"we-f{i}", T0 - timedelta(hours=10 - i)) for i in range(5)]
    newest = T0 - timedelta(hours=6)
    assert compute_target_backoff(wfes, TARGET, T0, NO_JITTER) == (5, newest + timedelta(seconds=600))
    assert compute_target_backoff(wfes[:3], TARGET, T0, NO_JITTER) == (
        3,
        T0 - timedelta(hours=8) + timedelta(minutes=4),
    )


def test_jittered_backoff_is_stable_and_within_ten_percent() -> None:
    config = RoutingPolicy(backoff_jitter_percent=10)
    wfes = [pre_exec_failure("we-f1", T0 - timedelta(seconds=200)), pre_exec_failure("we-f2", T0)]
    n, gate = compute_target_backoff(wfes, TARGET, T0, config)
    assert n == 2
    assert gate is not None
    assert timedelta(seconds=108) <= gate - T0 < timedelta(seconds=132)
    assert compute_target_backoff(list(reversed(wfes)), TARGET, T0 + timedelta(hours=1), config) == (n, gate)
    assert route(wfes=wfes, config=config, now=T0 + US).blocked_until == gate


def test_recently_remediated_outranks_backoff() -> None:
    wfes = [
        make_wfe("we-ok", phase="Completed", completed=T0 - timedelta(minutes=2)),
        pre_exec_failure("we-f", T0 - timedelta(minutes=3)),
    ]
    assert route(wfes=wfes).reason == "RecentlyRemediated"


# --- check 6: PreviousExecutionFailed ------------------------------------------------------------


def test_execution_failure_needs_a_person_before_the_next_run() -> None:
    # SYSTEM §8 item 51.
    wfe = make_wfe("we-broke", phase="Failed", completed=T0 - timedelta(hours=3), execution_failure=True)
    decision = route(stage=RoutingStage.ANALYZING, workflow_id="wf-1", wfes=[wfe])
    assert decision.kind == DecisionKind.FAIL
    assert decision.reason == "PreviousExecutionFailed"
    assert decision.blocking_workflow_execution == "we-broke"
    assert "we-broke" in decision.message
    assert TARGET in decision.message
    assert "Manual intervention is required" in decision.message
    assert "kubernaut clear-block we-broke" in decision.message
    assert decision.blocked_until is None
    assert decision.requeue_after is None


def test_previous_execution_failure_is_checked_only_before_creating_an_execution() -> None:
    wfe = make_wfe("we-broke", phase="Failed", completed=T0 - timedelta(hours=3), execution_failure=True)
    assert route(stage=RoutingStage.PENDING, wfes=[wfe]).kind == DecisionKind.PROCEED


@pytest.mark.parametrize(
    "wfes",
    [
        # cleared by an operator
        [make_wfe("we-broke", phase="Failed", completed=T0 - timedelta(hours=3), execution_failure=True, cleared=True)],
        # a later success
        [
            make_wfe("we-broke", phase="Failed", completed=T0 - timedelta(hours=3), execution_failure=True),
            make_wfe("we-ok", phase="Completed", completed=T0 - timedelta(hours=2)),
        ],
        # a later failure before execution (its backoff long over)
        [
            make_wfe("we-broke", phase="Failed", completed=T0 - timedelta(hours=3), execution_failure=True),
            pre_exec_failure("we-pre", T0 - timedelta(hours=2)),
        ],
        # the failed run never recorded a completion time
        [make_wfe("we-broke", phase="Failed", completed=None, execution_failure=True)],
    ],
)
def test_previous_execution_failure_does_not_apply(wfes: list[WorkflowExecution]) -> None:
    assert route(stage=RoutingStage.ANALYZING, workflow_id="wf-1", wfes=wfes).kind == DecisionKind.PROCEED


def test_every_block_outranks_previous_execution_failure() -> None:
    broke = make_wfe("we-broke", phase="Failed", completed=T0 - timedelta(hours=3), execution_failure=True)
    running = make_wfe("we-x", phase="Running")
    assert route(stage=RoutingStage.ANALYZING, wfes=[broke, running]).reason == "ResourceBusy"
    rrs = [failed_rr("f1", 30), failed_rr("f2", 20), failed_rr("f3", 10)]
    assert route(stage=RoutingStage.ANALYZING, wfes=[broke], rrs=rrs).reason == "ConsecutiveFailures"


# --- the Blocked phase ---------------------------------------------------------------------------


def blocked_rr(reason: str, until: datetime | None = None, **status: Any) -> RemediationRequest:
    return make_rr(
        "rr-b",
        phase="Blocked",
        status={"blockReason": reason, "blockedUntil": until, **status},
    )


def blocked(
    rr: RemediationRequest,
    *,
    original: RemediationRequest | None = None,
    original_exists: bool = True,
    wfes: Sequence[WorkflowExecution] = (),
    lock: LockHolder | None = None,
    now: datetime = T0,
) -> BlockedDecision:
    return decide_blocked(rr, original=original, original_exists=original_exists, same_target=wfes, lock=lock, now=now)


@pytest.mark.parametrize("reason", ["RecentlyRemediated", "ExponentialBackoff"])
@pytest.mark.parametrize(
    ("until", "expected"),
    [
        (T0 - timedelta(seconds=1), BlockedDecision(BlockedAction.RESUME)),  # SYSTEM §8 item 46 under P4
        (T0, BlockedDecision(BlockedAction.RESUME)),
        (T0 + US, BlockedDecision(BlockedAction.STAY, requeue_after=US)),
        (T0 + timedelta(minutes=3), BlockedDecision(BlockedAction.STAY, requeue_after=timedelta(minutes=3))),
    ],
)
def test_time_based_blocks_resume_when_they_expire(reason: str, until: datetime, expected: BlockedDecision) -> None:
    assert blocked(blocked_rr(reason, until)) == expected


def test_consecutive_failures_end_the_request_when_the_cooldown_expires() -> None:
    rr = blocked_rr("ConsecutiveFailures", T0)
    assert blocked(rr) == BlockedDecision(
        BlockedAction.FAIL,
        failure_phase="blocked",
        failure_reason="Cooldown expired after blocking due to ConsecutiveFailures",
    )
    assert blocked(rr, now=T0 - US) == BlockedDecision(BlockedAction.STAY, requeue_after=US)


@pytest.mark.parametrize("reason", ["RecentlyRemediated", "ExponentialBackoff", "ConsecutiveFailures"])
def test_time_based_block_without_its_instant_routes_again(reason: str) -> None:
    assert blocked(blocked_rr(reason, None)).action == BlockedAction.RESUME


@pytest.mark.parametrize("reason", ["ManualHold", ""])
def test_manual_hold_stays_without_requeue(reason: str) -> None:
    # SYSTEM §8 item 47.
    assert blocked(blocked_rr(reason)) == BlockedDecision(BlockedAction.STAY, requeue_after=None)


def test_manual_hold_with_an_instant_lasts_until_then() -> None:
    rr = blocked_rr("ManualHold", T0 + timedelta(minutes=1))
    assert blocked(rr) == BlockedDecision(BlockedAction.STAY, requeue_after=timedelta(minutes=1))
    assert blocked(rr, now=T0 + timedelta(minutes=1)).action == BlockedAction.RESUME


@pytest.mark.parametrize(
    ("wfes", "lock", "action"),
    [
        ([], None, BlockedAction.RESUME),
        ([make_wfe("we-x", phase="Completed", completed=T0)], None, BlockedAction.RESUME),
        ([make_wfe("we-x", phase="Failed", completed=T0)], None, BlockedAction.RESUME),
        ([make_wfe("we-x", phase="Running")], None, BlockedAction.STAY),
        ([make_wfe("we-x", phase=None)], None, BlockedAction.STAY),
        ([make_wfe("we-x", phase="Running", target="prod/Deployment/other")], None, BlockedAction.RESUME),
        ([make_wfe("we-x", phase="Running", owner_uid="uid-prod-rr-b")], None, BlockedAction.RESUME),
        ([], LockHolder("wfe-1", "we-x", "prod"), BlockedAction.STAY),
        ([], LockHolder("wfe-1", "", ""), BlockedAction.STAY),
        ([], LockHolder("wfe-1", "we-rr-b", "prod"), BlockedAction.RESUME),
    ],
)
def test_resource_busy_resumes_when_the_target_is_free(
    wfes: list[WorkflowExecution], lock: LockHolder | None, action: BlockedAction
) -> None:
    decision = blocked(blocked_rr("ResourceBusy", blockingWorkflowExecution="we-x"), wfes=wfes, lock=lock)
    assert decision.action == action
    assert decision.requeue_after == (timedelta(seconds=30) if action == BlockedAction.STAY else None)


def test_duplicate_takes_the_outcome_of_the_original() -> None:
    rr = blocked_rr("DuplicateInProgress", duplicateOf="rr-1")
    active = make_rr("rr-1", phase="Executing")
    assert blocked(rr, original=active) == BlockedDecision(BlockedAction.STAY, requeue_after=timedelta(seconds=30))
    # SYSTEM §8 item 48.
    assert blocked(rr, original=make_rr("rr-1", phase="Completed")) == BlockedDecision(BlockedAction.COMPLETE)
    failed = blocked(rr, original=make_rr("rr-1", phase="Failed"))
    assert failed.action == BlockedAction.FAIL
    assert failed.failure_phase == "deduplicated"
    assert "rr-1" in failed.failure_reason
    assert "Failed" in failed.failure_reason
    timed_out = blocked(rr, original=make_rr("rr-1", phase="TimedOut"))
    assert (timed_out.action, timed_out.failure_phase) == (BlockedAction.FAIL, "deduplicated")
    assert "TimedOut" in timed_out.failure_reason


def test_duplicate_of_a_deleted_original_fails() -> None:
    rr = blocked_rr("DuplicateInProgress", duplicateOf="rr-1")
    decision = blocked(rr, original=None, original_exists=False)
    assert decision.action == BlockedAction.FAIL
    assert decision.failure_phase == "deduplicated"
    assert "rr-1" in decision.failure_reason
    assert "deleted" in decision.failure_reason


def test_duplicate_without_an_original_routes_again() -> None:
    assert blocked(blocked_rr("DuplicateInProgress"), original_exists=False).action == BlockedAction.RESUME
