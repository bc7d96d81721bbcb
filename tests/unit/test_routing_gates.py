"""The gates of routing: opt-in scope (first), rate limits and the circuit breaker (after the
back-off), their boundaries, and how a request they blocked moves on by itself."""

from collections.abc import Sequence
from datetime import timedelta

import pytest

from kubernaut.api.v1alpha1 import RemediationRequest, WorkflowExecution
from kubernaut.domain.gates import (
    BreakerReset,
    GatePolicy,
    Gates,
    Scope,
    build_breaker_notice_name,
    compute_breaker,
    is_managed,
    parse_reset,
)
from kubernaut.domain.routing import (
    BlockedAction,
    DecisionKind,
    RoutingDecision,
    RoutingStage,
    decide_blocked,
    decide_routing,
)
from tests.unit.test_routing import NO_JITTER, T0, failed_rr, make_rr, make_wfe, route

MANAGED = Scope(managed=True, where="Namespace prod")
UNMANAGED = Scope(managed=False, where="Namespace prod")
POLICY = GatePolicy(
    max_concurrent_executions=3,
    max_executions_per_hour=5,
    max_executions_per_namespace_per_hour=4,
    breaker_failure_threshold=3,
    breaker_window=timedelta(minutes=10),
)


def gates(
    *,
    scope: Scope = MANAGED,
    executions: Sequence[WorkflowExecution] = (),
    reset: BreakerReset | None = None,
    policy: GatePolicy = POLICY,
) -> Gates:
    return Gates(policy=policy, scope=scope, executions=executions, reset=reset)


def gated(
    g: Gates,
    *,
    rr: RemediationRequest | None = None,
    rrs: Sequence[RemediationRequest] = (),
    wfes: Sequence[WorkflowExecution] = (),
    stage: RoutingStage = RoutingStage.ANALYZING,
) -> RoutingDecision:
    return decide_routing(
        rr if rr is not None else make_rr(),
        workflow_id="wf-1",
        stage=stage,
        same_fingerprint=rrs,
        same_target=wfes,
        lock=None,
        now=T0,
        config=NO_JITTER,
        gates=g,
    )


def running(name: str, *, ns: str = "other", created_ago: timedelta = timedelta(minutes=1)) -> WorkflowExecution:
    return make_wfe(name, ns=ns, target=f"{ns}/Deployment/{name}", phase="Running", created=T0 - created_ago)


def finished(name: str, *, ns: str = "other", created_ago: timedelta) -> WorkflowExecution:
    return make_wfe(
        name, ns=ns, target=f"{ns}/Deployment/{name}", phase="Completed", created=T0 - created_ago, completed=T0
    )


def execution_failure(name: str, ago: timedelta) -> WorkflowExecution:
    return make_wfe(
        name,
        ns="other",
        target=f"other/Deployment/{name}",
        phase="Failed",
        execution_failure=True,
        completed=T0 - ago,
        created=T0 - ago - timedelta(minutes=1),
    )


def blocked_rr(reason: str, until: object = None) -> RemediationRequest:
    return make_rr(
        created=T0 - timedelta(minutes=30),
        phase="Blocked",
        status={"blockReason": reason, "blockedUntil": until},
    )


# --- without gates, and with every gate open --------------------------------------------------------


def test_without_gates_nothing_changes() -> None:
    assert route(stage=RoutingStage.ANALYZING, workflow_id="wf-1").kind == DecisionKind.PROCEED


def test_every_gate_open_proceeds() -> None:
    assert gated(gates()).kind == DecisionKind.PROCEED


# --- UnmanagedResource ---------------------------------------------------------------------------------


def test_unmanaged_namespace_blocks_until_the_timeout_from_creation() -> None:
    rr = make_rr(created=T0 - timedelta(minutes=10))
    decision = gated(gates(scope=UNMANAGED), rr=rr)
    assert (decision.kind, decision.reason) == (DecisionKind.BLOCK, "UnmanagedResource")
    assert decision.blocked_until == T0 + timedelta(minutes=50)
    assert "Namespace prod does not carry the label kubernaut.ai/managed=true" in decision.message
    assert decision.requeue_after == timedelta(seconds=30)


def test_scope_off_lets_an_unmanaged_namespace_run() -> None:
    policy = GatePolicy(require_managed_label=False)
    assert gated(gates(scope=UNMANAGED, policy=policy)).kind == DecisionKind.PROCEED


@pytest.mark.parametrize("stage", list(RoutingStage))
def test_unmanaged_is_the_first_check(stage: RoutingStage) -> None:
    # every later check would block too: consecutive failures, a busy target, an open breaker
    rrs = [failed_rr("f1", 30), failed_rr("f2", 20), failed_rr("f3", 10)]
    busy = make_wfe("we-busy", phase="Running")
    failures = [execution_failure(f"x{i}", timedelta(minutes=i)) for i in range(3)]
    decision = gated(gates(scope=UNMANAGED, executions=failures), rrs=rrs, wfes=[busy], stage=stage)
    assert decision.reason == "UnmanagedResource"


@pytest.mark.parametrize(
    ("labels", "managed"),
    [
        ({"kubernaut.ai/managed": "true"}, True),
        ({"kubernaut.ai/managed": "True"}, False),
        ({"kubernaut.ai/managed": "false"}, False),
        ({}, False),
        (None, False),
    ],
)
def test_only_the_exact_label_opts_in(labels: dict[str, str] | None, managed: bool) -> None:
    assert is_managed(labels) is managed


@pytest.mark.parametrize(
    ("scope", "after", "action"),
    [
        (MANAGED, timedelta(0), BlockedAction.RESUME),
        (UNMANAGED, -timedelta(seconds=1), BlockedAction.STAY),
        (UNMANAGED, timedelta(0), BlockedAction.FAIL),
    ],
)
def test_blocked_unmanaged_resumes_on_the_label_and_fails_at_the_timeout(
    scope: Scope, after: timedelta, action: BlockedAction
) -> None:
    rr = blocked_rr("UnmanagedResource", T0 - after)
    decision = decide_blocked(
        rr, original=None, original_exists=True, same_target=[], lock=None, now=T0, gates=gates(scope=scope)
    )
    assert decision.action == action
    if action == BlockedAction.FAIL:
        assert decision.failure_phase == "blocked"
        assert "scope.unmanagedTimeout" in decision.failure_reason


# --- RateLimited -----------------------------------------------------------------------------------------


@pytest.mark.parametrize(("active", "blocked"), [(2, False), (3, True)])
def test_concurrency_limit_boundary(active: int, blocked: bool) -> None:
    executions = [running(f"r{i}") for i in range(active)]
    decision = gated(gates(executions=executions))
    assert decision.reason == ("RateLimited" if blocked else "")
    if blocked:
        assert decision.blocked_until is None  # the next execution to end frees the slot
        assert "3 executions are running cluster-wide (limits.maxConcurrentExecutions 3)" in decision.message
        assert decision.requeue_after == timedelta(seconds=30)


def test_hourly_limit_blocks_until_the_oldest_counted_start_is_an_hour_old() -> None:
    ages = [50, 40, 30, 20, 10]  # minutes ago, in another namespace
    executions = [finished(f"c{i}", created_ago=timedelta(minutes=age)) for i, age in enumerate(ages)]
    decision = gated(gates(executions=executions))
    assert decision.reason == "RateLimited"
    assert decision.blocked_until == T0 + timedelta(minutes=10)
    assert decision.requeue_after == timedelta(minutes=10)
    assert "limits.maxExecutionsPerHour 5" in decision.message


@pytest.mark.parametrize(("oldest_ago", "blocked"), [(timedelta(minutes=60), False), (timedelta(minutes=59), True)])
def test_hourly_window_boundary(oldest_ago: timedelta, blocked: bool) -> None:
    ages = [oldest_ago, *(timedelta(minutes=m) for m in (40, 30, 20, 10))]
    executions = [finished(f"c{i}", created_ago=age) for i, age in enumerate(ages)]
    assert (gated(gates(executions=executions)).reason == "RateLimited") is blocked


def test_per_namespace_limit_counts_only_the_requests_namespace() -> None:
    same = [finished(f"p{i}", ns="prod", created_ago=timedelta(minutes=10 * (i + 1))) for i in range(4)]
    decision = gated(gates(executions=same))
    assert decision.reason == "RateLimited"
    assert "namespace prod" in decision.message
    assert decision.blocked_until == T0 + timedelta(minutes=20)  # the oldest of the 4 started 40m ago
    elsewhere = gated(gates(executions=same), rr=make_rr(ns="dev", target=("Deployment", "api", "dev")))
    assert elsewhere.kind == DecisionKind.PROCEED


def test_the_requests_own_execution_is_not_counted() -> None:
    own = [running(f"r{i}") for i in range(2)] + [
        make_wfe("we-rr-new", phase="Running", owner_uid="uid-prod-rr-new", created=T0)
    ]
    assert gated(gates(executions=own)).kind == DecisionKind.PROCEED


def test_rate_limit_comes_after_backoff_and_before_the_breaker() -> None:
    backoff = make_wfe("we-b", phase="Failed", execution_failure=False, completed=T0 - timedelta(seconds=10))
    executions = [running(f"r{i}") for i in range(3)]
    failures = [execution_failure(f"x{i}", timedelta(minutes=i)) for i in range(3)]
    assert gated(gates(executions=executions), wfes=[backoff]).reason == "ExponentialBackoff"
    assert gated(gates(executions=[*executions, *failures])).reason == "RateLimited"


@pytest.mark.parametrize(("active", "action"), [(3, BlockedAction.STAY), (2, BlockedAction.RESUME)])
def test_blocked_rate_limited_resumes_when_a_slot_frees(active: int, action: BlockedAction) -> None:
    executions = [running(f"r{i}") for i in range(active)]
    decision = decide_blocked(
        blocked_rr("RateLimited"),
        original=None,
        original_exists=True,
        same_target=[],
        lock=None,
        now=T0,
        gates=gates(executions=executions),
    )
    assert decision.action == action


# --- CircuitOpen -----------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("span", "opens"), [(timedelta(minutes=10) - timedelta(seconds=1), True), (timedelta(minutes=10), False)]
)
def test_breaker_window_boundary(span: timedelta, opens: bool) -> None:
    failures = [execution_failure("x0", span), execution_failure("x1", span / 2), execution_failure("x2", timedelta(0))]
    decision = gated(gates(executions=failures))
    assert (decision.reason == "CircuitOpen") is opens


def test_breaker_needs_the_threshold_of_execution_failures() -> None:
    two = [execution_failure("x0", timedelta(minutes=2)), execution_failure("x1", timedelta(minutes=1))]
    not_execution = make_wfe(
        "pre", ns="other", target="other/Deployment/pre", phase="Failed", execution_failure=False, completed=T0
    )
    assert gated(gates(executions=[*two, not_execution])).kind == DecisionKind.PROCEED
    decision = gated(gates(executions=[*two, execution_failure("x2", timedelta(0))]))
    assert decision.reason == "CircuitOpen"
    assert decision.breaker is not None
    assert decision.breaker.opened_at == T0
    assert "kubernaut breaker reset" in decision.message
    assert "other/x0" in decision.message


def test_breaker_stays_open_after_the_failures_leave_the_window() -> None:
    failures = [execution_failure(f"x{i}", timedelta(hours=3, minutes=i)) for i in range(3)]
    state = compute_breaker(failures, None, T0, POLICY)
    assert state.open
    assert state.failures_in_window == 0
    assert gated(gates(executions=failures)).reason == "CircuitOpen"


def test_a_reset_counts_only_later_failures() -> None:
    failures = [execution_failure(f"x{i}", timedelta(minutes=i)) for i in range(3)]
    reset = BreakerReset(at=T0 - timedelta(minutes=1, seconds=30), by="alice", reason="fixed the registry")
    state = compute_breaker(failures, reset, T0, POLICY)
    assert not state.open
    assert state.failures_in_window == 2
    assert gated(gates(executions=failures, reset=reset)).kind == DecisionKind.PROCEED


def test_breaker_comes_after_backoff_and_before_previous_execution_failed() -> None:
    failures = [execution_failure(f"x{i}", timedelta(minutes=i)) for i in range(3)]
    previous = make_wfe("we-prev", phase="Failed", execution_failure=True, completed=T0 - timedelta(hours=1))
    recent = make_wfe("we-ok", phase="Completed", completed=T0 - timedelta(minutes=1))
    assert gated(gates(executions=failures), wfes=[recent]).reason == "RecentlyRemediated"
    assert gated(gates(executions=failures), wfes=[previous]).reason == "CircuitOpen"


def test_the_opening_is_named_the_same_from_the_same_history() -> None:
    failures = [execution_failure(f"x{i}", timedelta(minutes=i)) for i in range(4)]
    first = compute_breaker(failures, None, T0, POLICY)
    later = compute_breaker(list(reversed(failures)), None, T0 + timedelta(hours=2), POLICY)
    assert build_breaker_notice_name(first) == build_breaker_notice_name(later)


@pytest.mark.parametrize(("reset", "action"), [(False, BlockedAction.STAY), (True, BlockedAction.RESUME)])
def test_blocked_circuit_open_resumes_on_a_reset(reset: bool, action: BlockedAction) -> None:
    failures = [execution_failure(f"x{i}", timedelta(minutes=i)) for i in range(3)]
    recorded = BreakerReset(at=T0 - timedelta(seconds=1), by="alice", reason="ok") if reset else None
    decision = decide_blocked(
        blocked_rr("CircuitOpen"),
        original=None,
        original_exists=True,
        same_target=[],
        lock=None,
        now=T0,
        gates=gates(executions=failures, reset=recorded),
    )
    assert decision.action == action


@pytest.mark.parametrize(
    ("annotations", "found"),
    [
        (
            {"kubernaut.ai/breaker-reset-by": "alice", "kubernaut.ai/breaker-reset-at": "2025-12-15T10:00:00+00:00"},
            True,
        ),
        (
            {
                "kubernaut.ai/breaker-reset-reason": "x",
                "kubernaut.ai/breaker-reset-requested-at": "2025-12-15T10:00:00Z",
            },
            False,
        ),
        ({"kubernaut.ai/breaker-reset-by": "alice", "kubernaut.ai/breaker-reset-at": "yesterday"}, False),
    ],
)
def test_only_a_stamped_reset_counts(annotations: dict[str, str], found: bool) -> None:
    assert (parse_reset(annotations) is not None) is found
