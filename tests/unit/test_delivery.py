"""Delivery policy: what to send, when to retry, how a notification ends."""

from datetime import UTC, datetime, timedelta

import pytest

from kubernaut.api.v1alpha1 import NotificationRequest
from kubernaut.domain.delivery import (
    Attempt,
    Phase,
    RetryPolicy,
    build_attempt_event,
    build_attempts_wire,
    build_correlation_id,
    build_final_event,
    build_final_status,
    build_not_configured_error,
    build_progress_status,
    compute_backoff,
    decide_delivery,
    parse_attempts,
)

T0 = datetime(2026, 1, 2, 3, 4, 5, tzinfo=UTC)
POLICY = RetryPolicy(max_attempts=3, backoff_base=timedelta(seconds=1), backoff_max=timedelta(seconds=10))
ALL = frozenset({"console", "log", "webhook", "slack"})


def ok(channel: str, n: int = 1, at: datetime = T0) -> Attempt:
    return Attempt(channel, n, at, True)


def fail(channel: str, n: int = 1, at: datetime = T0, error: str = "boom") -> Attempt:
    return Attempt(channel, n, at, False, error)


@pytest.mark.parametrize(
    ("failures", "expected"),
    [(0, 0), (1, 1), (2, 2), (3, 4), (4, 8), (5, 10), (60, 10), (1000, 10)],
)
def test_backoff_doubles_up_to_the_cap(failures: int, expected: int) -> None:
    assert compute_backoff(failures, POLICY) == timedelta(seconds=expected)


def test_backoff_never_overflows_with_huge_settings() -> None:
    policy = RetryPolicy(max_attempts=100, backoff_base=timedelta(days=1), backoff_max=timedelta(days=3650))
    assert compute_backoff(99, policy) == timedelta(days=3650)


@pytest.mark.parametrize(
    ("channels", "attempts", "now", "phase", "send", "unconfigured", "wake"),
    [
        # nothing tried yet: everything due
        (["webhook", "slack"], [], T0, Phase.SENDING, ("webhook", "slack"), (), None),
        # duplicates in the spec are delivered once
        (["log", "log"], [], T0, Phase.SENDING, ("log",), (), None),
        # an unconfigured channel is recorded as failed, not tried
        (["teams", "log"], [], T0, Phase.SENDING, ("log",), ("teams",), None),
        # failed once: retry due at stored second + 1s resolution + 1s back-off
        (["webhook"], [fail("webhook")], T0 + timedelta(seconds=1), Phase.RETRYING, (), (), T0 + timedelta(seconds=2)),
        (["webhook"], [fail("webhook")], T0 + timedelta(seconds=2), Phase.SENDING, ("webhook",), (), None),
        # two failures: 2s back-off
        (
            ["webhook"],
            [fail("webhook", 1), fail("webhook", 2, T0 + timedelta(seconds=2))],
            T0 + timedelta(seconds=4),
            Phase.RETRYING,
            (),
            (),
            T0 + timedelta(seconds=5),
        ),
        # a success elsewhere does not resend; the failed channel waits
        (
            ["slack", "webhook"],
            [ok("slack"), fail("webhook")],
            T0,
            Phase.RETRYING,
            (),
            (),
            T0 + timedelta(seconds=2),
        ),
        # the earliest waiting channel sets the wake-up
        (
            ["slack", "webhook"],
            [fail("slack", 1), fail("slack", 2), fail("webhook", 1)],
            T0,
            Phase.RETRYING,
            (),
            (),
            T0 + timedelta(seconds=2),
        ),
    ],
)
def test_decide_delivery(
    channels: list[str],
    attempts: list[Attempt],
    now: datetime,
    phase: Phase,
    send: tuple[str, ...],
    unconfigured: tuple[str, ...],
    wake: datetime | None,
) -> None:
    plan = decide_delivery(channels, attempts, configured=ALL, policy=POLICY, now=now)
    assert (plan.phase, plan.send, plan.unconfigured, plan.wake_at) == (phase, send, unconfigured, wake)
    assert not plan.is_final


def test_sub_second_attempt_times_never_retry_early() -> None:
    # stored with second precision: 03:04:05.900 is recorded as 03:04:05
    attempts = [fail("webhook", 1, T0.replace(microsecond=900000))]
    plan = decide_delivery(["webhook"], attempts, configured=ALL, policy=POLICY, now=T0 + timedelta(seconds=1.5))
    assert plan.send == ()
    assert plan.wake_at == T0 + timedelta(seconds=2)


@pytest.mark.parametrize(
    ("channels", "attempts", "phase", "reason", "successful", "failed"),
    [
        (["slack", "log"], [ok("slack"), ok("log")], Phase.SENT, "AllDeliveriesSucceeded", 1 + 1, 0),
        (
            ["slack", "webhook"],
            [ok("slack"), fail("webhook", 1), fail("webhook", 2), fail("webhook", 3)],
            Phase.PARTIALLY_SENT,
            "PartialDeliveryFailure",
            1,
            1,
        ),
        (
            ["teams"],
            [fail("teams", 1, error=build_not_configured_error("teams"))],
            Phase.FAILED,
            "AllDeliveriesFailed",
            0,
            1,
        ),
        (["webhook"], [fail("webhook", n) for n in (1, 2, 3)], Phase.FAILED, "AllDeliveriesFailed", 0, 1),
        # a success after failures counts as delivered
        (
            ["webhook"],
            [fail("webhook", 1), fail("webhook", 2), ok("webhook", 3)],
            Phase.SENT,
            "AllDeliveriesSucceeded",
            1,
            0,
        ),
    ],
)
def test_final_outcomes(
    channels: list[str], attempts: list[Attempt], phase: Phase, reason: str, successful: int, failed: int
) -> None:
    plan = decide_delivery(channels, attempts, configured=ALL, policy=POLICY, now=T0 + timedelta(hours=1))
    assert plan.is_final
    assert (plan.phase, plan.reason, plan.successful, plan.failed) == (phase, reason, successful, failed)
    assert (plan.send, plan.unconfigured) == ((), ())


def test_a_channel_that_becomes_configured_is_tried_again_only_while_attempts_remain() -> None:
    attempts = [fail("teams", 1, error=build_not_configured_error("teams"))]
    plan = decide_delivery(
        ["teams"], attempts, configured=ALL | {"teams"}, policy=POLICY, now=T0 + timedelta(minutes=1)
    )
    assert plan.send == ("teams",)


def test_a_recorded_success_is_never_sent_again_whatever_the_time() -> None:
    for minutes in (0, 1, 60 * 24):
        plan = decide_delivery(
            ["webhook", "slack"],
            [ok("webhook"), fail("slack")],
            configured=ALL,
            policy=POLICY,
            now=T0 + timedelta(minutes=minutes),
        )
        assert "webhook" not in plan.send


def _nr(status: dict[str, object] | None = None) -> NotificationRequest:
    return NotificationRequest.from_wire(
        {
            "metadata": {
                "name": "n1",
                "namespace": "ns",
                "uid": "uid-1",
                "ownerReferences": [
                    {"apiVersion": "kubernaut.ai/v1alpha1", "kind": "RemediationRequest", "name": "rr", "uid": "rr-uid"}
                ],
            },
            "spec": {
                "type": "manual-review",
                "priority": "high",
                "subject": "s",
                "body": "b",
                "channels": ["webhook", "slack"],
            },
            "status": status or {},
        }
    )


def test_attempts_round_trip_through_status() -> None:
    attempts = [fail("webhook", 1, error="webhook responded 503"), ok("webhook", 2, T0 + timedelta(seconds=3))]
    wire = build_attempts_wire(attempts)
    assert wire[0] == {
        "channel": "webhook",
        "attempt": 1,
        "timestamp": "2026-01-02T03:04:05Z",
        "status": "failed",
        "error": "webhook responded 503",
    }
    assert parse_attempts(_nr({"deliveryAttempts": wire})) == attempts


def test_status_bodies() -> None:
    attempts = [ok("webhook"), fail("slack", 1), fail("slack", 2), fail("slack", 3)]
    plan = decide_delivery(["webhook", "slack"], attempts, configured=ALL, policy=POLICY, now=T0)
    progress = build_progress_status(Phase.RETRYING, attempts[:2], plan)
    assert progress["phase"] == "Retrying"
    assert progress["totalAttempts"] == 2
    final = build_final_status(attempts, plan, T0)
    assert final["phase"] == "PartiallySent"
    assert (final["totalAttempts"], final["successfulDeliveries"], final["failedDeliveries"]) == (4, 1, 1)
    assert final["completionTime"] == "2026-01-02T03:04:05Z"
    assert final["message"] == "Delivered on webhook; gave up on slack"
    NotificationRequest.from_wire({**_nr().to_wire(), "status": final})  # the model accepts it


def test_audit_events_have_deterministic_ids_and_the_remediation_as_correlation() -> None:
    nr = _nr()
    assert build_correlation_id(nr) == "rr-uid"
    first = build_attempt_event(nr, fail("webhook", 1))
    assert first.event_id == build_attempt_event(nr, fail("webhook", 1, T0 + timedelta(hours=1))).event_id
    assert first.event_id != build_attempt_event(nr, fail("webhook", 2)).event_id
    assert first.event_outcome == "failure"
    assert first.event_data == {"channel": "webhook", "attempt": 1, "error": "boom"}
    plan = decide_delivery(["webhook"], [ok("webhook")], configured=ALL, policy=POLICY, now=T0)
    final = build_final_event(nr, plan, T0)
    assert (final.event_type, final.event_outcome) == ("notification.sent", "success")
    assert final.event_id == build_final_event(nr, plan, T0 + timedelta(days=1)).event_id
