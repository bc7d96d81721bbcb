"""Invariants of routing and back-off over generated histories."""

from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from hypothesis import event, given, settings
from hypothesis import strategies as st

from kubernaut.api.v1alpha1 import RemediationRequest, WorkflowExecution
from kubernaut.api.v1alpha1.remediationrequest import BlockReason, RemediationPhase
from kubernaut.domain.backoff import build_deterministic_jitter, compute_backoff
from kubernaut.domain.routing import (
    BlockedAction,
    DecisionKind,
    LockHolder,
    RoutingDecision,
    RoutingPolicy,
    RoutingStage,
    decide_blocked,
    decide_routing,
)
from tests.unit.test_routing import FP, OTHER_FP, T0, TARGET, make_rr, make_wfe

OTHER_TARGET = "prod/Deployment/other"
TIME_BASED = {"ConsecutiveFailures", "RecentlyRemediated", "ExponentialBackoff", "IneffectiveChain"}

# No deadline: a test asserts outcomes, never speed.
PROFILE = settings(deadline=None, max_examples=200)

minutes = st.integers(min_value=-45, max_value=5).map(lambda m: T0 + timedelta(minutes=m))
optional_time = st.one_of(st.none(), minutes, minutes, minutes)


@dataclass(frozen=True)
class World:
    rr: RemediationRequest
    rrs: list[RemediationRequest]
    wfes: list[WorkflowExecution]
    lock: LockHolder | None
    now: datetime
    stage: RoutingStage
    workflow_id: str
    config: RoutingPolicy


@st.composite
def request_lists(draw: st.DrawFn) -> list[RemediationRequest]:
    count = draw(st.integers(min_value=0, max_value=7))
    rrs = []
    for i in range(count):
        # Mostly finished requests, so that the checks after DuplicateInProgress get their turn.
        phase = draw(
            st.sampled_from(
                [*([None] * 2), *(p.value for p in RemediationPhase), *(["Failed"] * 16), *(["Completed"] * 24)]
            )
        )
        # Completed ones mostly Ineffective, so that IneffectiveChain gets its turn.
        assessment = draw(st.sampled_from([None, "Effective", "NotAssessed", *(["Ineffective"] * 12)]))
        status: dict[str, Any] = {
            "selectedWorkflow": {
                "workflowId": draw(st.sampled_from(["wf-1", "wf-2"])),
                "version": "1",
                "containerImage": "b",
            }
        }
        if assessment:
            status["effectiveness"] = {"assessment": assessment}
        rrs.append(
            make_rr(
                # The letter varies the name order against the creation order; the index keeps names unique.
                f"rr-{draw(st.sampled_from('abc'))}{i}",
                ns=draw(st.sampled_from(["prod", "team"])),
                created=draw(minutes),
                phase=phase,
                fingerprint=draw(st.sampled_from([FP, FP, OTHER_FP])),
                failure_phase=draw(st.sampled_from([None, "workflow_execution", "workflow_execution", "analysis"])),
                completed_at=draw(optional_time),
                status=status,
            )
        )
    return rrs


@st.composite
def execution_lists(draw: st.DrawFn, owner_uids: list[str], min_count: int) -> list[WorkflowExecution]:
    count = draw(st.integers(min_value=min_count, max_value=6))
    return [
        make_wfe(
            f"we-{i}",
            ns=draw(st.sampled_from(["prod", "team"])),
            target=draw(st.sampled_from([TARGET, TARGET, OTHER_TARGET])),
            phase=draw(st.sampled_from([None, "Pending", "Running", *(["Completed"] * 16), *(["Failed"] * 24)])),
            workflow_id=draw(st.sampled_from(["wf-1", "wf-2"])),
            completed=draw(optional_time),
            execution_failure=draw(st.sampled_from([None, False, True])),
            reason=draw(st.sampled_from(["TaskFailed", "ExecutionRaceCondition"])),
            owner_uid=draw(st.sampled_from([None, None, *owner_uids])),
            created=draw(minutes),
            cleared=draw(st.booleans()),
        )
        for i in range(count)
    ]


@st.composite
def worlds(draw: st.DrawFn) -> World:
    # Half of the worlds have no other request and no lock, so that the target checks get their turn.
    quiet: bool = draw(st.booleans())
    rrs: list[RemediationRequest] = [] if quiet else draw(request_lists())
    pick_listed: bool = draw(st.booleans())
    if rrs and pick_listed:
        rr = draw(st.sampled_from(rrs))
    else:
        rr = make_rr("rr-new", created=draw(minutes), phase=draw(st.sampled_from([None, "Pending", "Blocked"])))
    wfes = draw(execution_lists([rr.metadata.uid, "uid-someone-else"], min_count=2 if quiet else 0))
    lock = draw(
        st.none()
        | st.builds(
            LockHolder,
            pipeline_run=st.just("wfe-0123456789abcdef"),
            workflow_execution=st.sampled_from(["", "we-0", "we-1", f"we-{rr.metadata.name}", "we-other"]),
            namespace=st.sampled_from(["", "prod", "team"]),
        )
    )
    if quiet:
        lock = None
    config = RoutingPolicy(
        consecutive_failure_threshold=draw(st.integers(min_value=1, max_value=4)),
        consecutive_failure_cooldown=timedelta(minutes=draw(st.integers(min_value=1, max_value=120))),
        recently_remediated_cooldown=timedelta(minutes=draw(st.integers(min_value=0, max_value=30) | st.just(15))),
        backoff_base=timedelta(seconds=draw(st.integers(min_value=1, max_value=600))),
        backoff_max=timedelta(seconds=draw(st.integers(min_value=1, max_value=3600))),
        backoff_jitter_percent=draw(st.sampled_from([0, 10, 100])),
        ineffective_chain_threshold=draw(st.integers(min_value=1, max_value=3)),
        ineffective_chain_cooldown=timedelta(minutes=draw(st.integers(min_value=1, max_value=120) | st.just(240))),
    )
    return World(
        rr=rr,
        rrs=rrs,
        wfes=wfes,
        lock=lock,
        now=T0 + timedelta(seconds=draw(st.integers(min_value=-60, max_value=600))),
        stage=draw(st.sampled_from(list(RoutingStage))),
        workflow_id=draw(st.sampled_from(["", "wf-1", "wf-2"])),
        config=config,
    )


def decide(world: World, rr: RemediationRequest | None = None, reverse: bool = False) -> RoutingDecision:
    rrs = list(reversed(world.rrs)) if reverse else world.rrs
    wfes = list(reversed(world.wfes)) if reverse else world.wfes
    return decide_routing(
        rr if rr is not None else world.rr,
        workflow_id=world.workflow_id,
        stage=world.stage,
        same_fingerprint=rrs,
        same_target=wfes,
        lock=world.lock,
        now=world.now,
        config=world.config,
    )


@settings(PROFILE)
@given(worlds())
def test_routing_is_a_pure_function_of_its_inputs(world: World) -> None:
    first = decide(world)
    assert decide(world) == first
    # The order in which the cache lists objects does not matter either.
    assert decide(world, reverse=True) == first


@settings(PROFILE)
@given(worlds())
def test_decision_fields_follow_the_reason(world: World) -> None:
    decision = decide(world)
    event(f"{decision.kind.value} {decision.reason}")
    if decision.kind == DecisionKind.PROCEED:
        assert decision == RoutingDecision(kind=DecisionKind.PROCEED)
        return
    if decision.kind == DecisionKind.FAIL:
        assert world.stage == RoutingStage.ANALYZING
        assert decision.reason == "PreviousExecutionFailed"
        assert decision.blocking_workflow_execution
        assert decision.blocked_until is None
        assert decision.requeue_after is None
        assert decision.message
        return
    assert decision.reason in {reason.value for reason in BlockReason}
    assert decision.message
    assert (decision.blocked_until is not None) == (decision.reason in TIME_BASED)
    assert bool(decision.duplicate_of) == (decision.reason == "DuplicateInProgress")
    assert bool(decision.blocking_workflow_execution) == (decision.reason == "ResourceBusy")
    if decision.blocked_until is not None:
        assert decision.blocked_until > world.now
        assert decision.requeue_after == decision.blocked_until - world.now
    else:
        assert decision.requeue_after == timedelta(seconds=30)
    is_backoff = decision.reason == "ExponentialBackoff"
    assert (decision.consecutive_failure_count >= 1) == is_backoff
    assert (decision.next_allowed_execution == decision.blocked_until) if is_backoff else True
    assert (decision.next_allowed_execution is not None) == is_backoff


@settings(PROFILE)
@given(worlds())
def test_two_requests_never_wait_for_each_other(world: World) -> None:
    decisions = {rr.metadata.uid: decide(world, rr) for rr in world.rrs}
    for a in world.rrs:
        for b in world.rrs:
            da, db = decisions[a.metadata.uid], decisions[b.metadata.uid]
            assert not (da.duplicate_of == b.metadata.name and db.duplicate_of == a.metadata.name)
            if da.duplicate_of:
                assert da.duplicate_of != a.metadata.name


@settings(PROFILE)
@given(worlds())
def test_routing_never_proceeds_while_the_target_is_busy(world: World) -> None:
    rr = world.rr
    foreign_active = [
        wfe
        for wfe in world.wfes
        if wfe.spec.target_resource == TARGET
        and not wfe.is_terminal
        and not any(ref.controller and ref.uid == rr.metadata.uid for ref in wfe.metadata.owner_references)
    ]
    lock = world.lock
    foreign_lock = lock is not None and not (
        lock.workflow_execution == f"we-{rr.metadata.name}" and lock.namespace == rr.metadata.namespace
    )
    owned_by_lock = lock is not None and any(
        wfe.metadata.name == lock.workflow_execution
        and wfe.metadata.namespace == lock.namespace
        and any(ref.controller and ref.uid == rr.metadata.uid for ref in wfe.metadata.owner_references)
        for wfe in world.wfes
        if wfe.spec.target_resource == TARGET
    )
    decision = decide(world)
    if foreign_active or (foreign_lock and not owned_by_lock):
        assert decision.kind != DecisionKind.PROCEED
        blocked = decide_blocked(
            rr.model_copy(update={"status": rr.status.model_copy(update={"block_reason": "ResourceBusy"})}),
            original=None,
            original_exists=False,
            same_target=world.wfes,
            lock=lock,
            now=world.now,
        )
        assert blocked.action == BlockedAction.STAY


@settings(PROFILE)
@given(
    # IneffectiveChain follows the chain as it is now (a clearance ends it early), not only its instant.
    reason=st.sampled_from(sorted(TIME_BASED - {"IneffectiveChain"})),
    until_offset=st.integers(min_value=-(10**9), max_value=10**9),
    now_offset=st.integers(min_value=-(10**9), max_value=10**9),
)
def test_time_based_blocks_hold_exactly_until_their_instant(reason: str, until_offset: int, now_offset: int) -> None:
    until = T0 + timedelta(microseconds=until_offset)
    now = T0 + timedelta(microseconds=now_offset)
    rr = make_rr("rr-b", phase="Blocked", status={"blockReason": reason, "blockedUntil": until})
    decision = decide_blocked(rr, original=None, original_exists=False, same_target=[], lock=None, now=now)
    if now < until:
        assert decision.action == BlockedAction.STAY
        assert decision.requeue_after == until - now
    else:
        expected = BlockedAction.FAIL if reason == "ConsecutiveFailures" else BlockedAction.RESUME
        assert decision.action == expected


durations = st.integers(min_value=1, max_value=10**12).map(lambda us: timedelta(microseconds=us))


@settings(PROFILE)
@given(
    n=st.integers(min_value=1, max_value=200),
    base=durations,
    maximum=durations,
    jitter_percent=st.integers(min_value=0, max_value=100),
    key=st.text(max_size=40),
)
def test_backoff_stays_within_base_and_max(
    n: int, base: timedelta, maximum: timedelta, jitter_percent: int, key: str
) -> None:
    jitter = build_deterministic_jitter(key)
    delay = compute_backoff(n, base=base, maximum=maximum, jitter_percent=jitter_percent, jitter=jitter)
    assert delay <= maximum
    if base <= maximum:
        assert base <= delay
    assert delay == compute_backoff(
        n, base=base, maximum=maximum, jitter_percent=jitter_percent, jitter=build_deterministic_jitter(key)
    )


@settings(PROFILE)
@given(n=st.integers(min_value=0, max_value=200), base=durations, maximum=durations)
def test_backoff_without_jitter_never_shrinks_as_failures_grow(n: int, base: timedelta, maximum: timedelta) -> None:
    now = compute_backoff(n, base=base, maximum=maximum, jitter_percent=0)
    after = compute_backoff(n + 1, base=base, maximum=maximum, jitter_percent=0)
    assert now <= after
    if n >= 1 and base <= maximum:
        assert after <= 2 * now or after == maximum


@settings(PROFILE)
@given(key=st.text(max_size=40), spread=st.integers(min_value=1, max_value=10**15))
def test_deterministic_jitter_is_in_its_window(key: str, spread: int) -> None:
    offset = build_deterministic_jitter(key)(spread)
    assert -spread <= offset < spread
    assert build_deterministic_jitter(key)(spread) == offset
