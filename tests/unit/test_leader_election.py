"""The Lease decisions of leader election, table-driven (the I/O is tested against the API server)."""

from datetime import UTC, datetime, timedelta

import pytest

from kubernaut.controllers.manager import compute_drain_timeout
from kubernaut.kube.leader import (
    LeaseAction,
    LeaseRecord,
    build_lease_name,
    build_lease_spec,
    build_released_record,
    decide_lease,
    parse_lease_record,
)

NOW = datetime(2026, 1, 2, 3, 4, 5, 678901, tzinfo=UTC)
EARLIER = NOW - timedelta(seconds=30)
HELD_BY_B = LeaseRecord(holder="b", lease_duration_seconds=15, acquire_time=EARLIER, renew_time=EARLIER, transitions=4)


@pytest.mark.parametrize(
    ("current", "unchanged_for", "action", "holder", "transitions"),
    [
        pytest.param(LeaseRecord(), 0.0, LeaseAction.ACQUIRE, "a", 0, id="never held: take it"),
        pytest.param(HELD_BY_B, 0.0, LeaseAction.WAIT, None, None, id="held by another, just seen: wait"),
        pytest.param(HELD_BY_B, 14.9, LeaseAction.WAIT, None, None, id="held by another, not yet expired: wait"),
        pytest.param(HELD_BY_B, 15.0, LeaseAction.ACQUIRE, "a", 5, id="unchanged for its duration: take over"),
        pytest.param(
            LeaseRecord(holder="b", lease_duration_seconds=60, renew_time=EARLIER, transitions=1),
            30.0,
            LeaseAction.WAIT,
            None,
            None,
            id="the record's own duration counts, not ours",
        ),
        pytest.param(
            build_released_record(HELD_BY_B, EARLIER),
            0.0,
            LeaseAction.ACQUIRE,
            "a",
            5,
            id="released: take it at once",
        ),
        pytest.param(
            LeaseRecord(holder="a", lease_duration_seconds=15, acquire_time=EARLIER, renew_time=EARLIER, transitions=2),
            100.0,
            LeaseAction.RENEW,
            "a",
            2,
            id="ours: renew, same transitions",
        ),
    ],
)
def test_decide_lease(
    current: LeaseRecord, unchanged_for: float, action: LeaseAction, holder: str | None, transitions: int | None
) -> None:
    decision = decide_lease(current, identity="a", now=NOW, unchanged_for=unchanged_for, lease_duration=15.0)
    assert decision.action == action
    if action == LeaseAction.WAIT:
        assert decision.record is None
        return
    assert decision.record is not None
    assert decision.record.holder == holder
    assert decision.record.transitions == transitions
    assert decision.record.renew_time == NOW
    assert decision.record.lease_duration_seconds == 15
    expected_acquired = current.acquire_time if action == LeaseAction.RENEW else NOW
    assert decision.record.acquire_time == expected_acquired


def test_release_clears_the_holder_and_keeps_history() -> None:
    released = build_released_record(HELD_BY_B, NOW)
    assert released.holder == ""
    assert released.lease_duration_seconds == 1
    assert released.transitions == HELD_BY_B.transitions
    assert released.renew_time == NOW


def test_spec_round_trip_keeps_microseconds() -> None:
    record = LeaseRecord(holder="a", lease_duration_seconds=15, acquire_time=EARLIER, renew_time=NOW, transitions=3)
    spec = build_lease_spec(record)
    assert spec["renewTime"] == "2026-01-02T03:04:05.678901Z"
    assert parse_lease_record(spec) == record
    assert build_lease_spec(build_released_record(record, NOW))["holderIdentity"] is None
    assert parse_lease_record(None) == LeaseRecord()


@pytest.mark.parametrize(
    ("controllers", "name"),
    [
        (("executor",), "kubernaut-executor"),
        (("orchestrator", "executor", "notifier"), "kubernaut-orchestrator-executor-notifier"),
        ((), "kubernaut-manager"),
    ],
)
def test_lease_name_follows_the_controllers(controllers: tuple[str, ...], name: str) -> None:
    assert build_lease_name(controllers) == name


@pytest.mark.parametrize(
    ("grace", "audit_close", "drain"),
    [(25.0, 10.0, 10.0), (10.0, 2.0, 3.0), (5.0, 10.0, 0.0)],
)
def test_drain_leaves_room_for_the_audit_flush_and_the_lease(grace: float, audit_close: float, drain: float) -> None:
    assert compute_drain_timeout(grace, audit_close) == drain
