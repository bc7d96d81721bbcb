"""Delivery policy of a NotificationRequest: what to send now, when to retry, how it ended.

Pure and derived from the recorded attempts alone (no counter kept elsewhere), so a restarted
notifier reaches the same decision: a channel with a recorded success is never sent again.
"""

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from kubernaut.api.audit import AuditEvent, build_event_id
from kubernaut.api.v1alpha1.notificationrequest import NotificationPhase, NotificationRequest

SUCCESS = "success"
FAILED = "failed"


Phase = NotificationPhase


FINAL_PHASES = frozenset({Phase.SENT, Phase.PARTIALLY_SENT, Phase.FAILED})
# Attempt times are stored to the second; a retry is due one resolution later than the stored
# time plus the back-off, so it never comes early however the stored time was truncated.
TIMESTAMP_RESOLUTION = timedelta(seconds=1)


@dataclass(frozen=True)
class RetryPolicy:
    max_attempts: int = 5
    backoff_base: timedelta = timedelta(seconds=1)
    backoff_max: timedelta = timedelta(minutes=1)


@dataclass(frozen=True)
class Attempt:
    channel: str
    attempt: int
    timestamp: datetime
    succeeded: bool
    error: str = ""


@dataclass(frozen=True)
class ChannelState:
    channel: str
    attempts: int
    succeeded: bool
    given_up: bool
    next_attempt_at: datetime | None  # when a retry is due (None: due now, or nothing more to do)


@dataclass(frozen=True)
class DeliveryPlan:
    """What one pass should do. `send` channels are tried now, `unconfigured` are recorded as
    failed without trying; when `phase` is final nothing is left to do."""

    phase: Phase
    send: tuple[str, ...]
    unconfigured: tuple[str, ...]
    wake_at: datetime | None
    channels: tuple[ChannelState, ...]
    reason: str = ""
    message: str = ""

    @property
    def is_final(self) -> bool:
        return self.phase in FINAL_PHASES

    @property
    def successful(self) -> int:
        return sum(1 for c in self.channels if c.succeeded)

    @property
    def failed(self) -> int:
        return sum(1 for c in self.channels if c.given_up)


def compute_backoff(failures: int, policy: RetryPolicy) -> timedelta:
    """Wait before the next try after `failures` failed tries: base * 2^(failures-1), capped."""
    if failures <= 0:
        return timedelta(0)
    exponent = min(failures - 1, 60)  # in float seconds: no timedelta overflow before the cap
    seconds = policy.backoff_base.total_seconds() * 2.0**exponent
    return timedelta(seconds=min(policy.backoff_max.total_seconds(), seconds))


def _unique(channels: Iterable[str]) -> tuple[str, ...]:
    return tuple(dict.fromkeys(channels))


def decide_channel(
    channel: str, attempts: Sequence[Attempt], *, configured: bool, policy: RetryPolicy, now: datetime
) -> ChannelState:
    mine = [a for a in attempts if a.channel == channel]
    if any(a.succeeded for a in mine):
        return ChannelState(channel, len(mine), succeeded=True, given_up=False, next_attempt_at=None)
    if (not configured and mine) or len(mine) >= policy.max_attempts:
        return ChannelState(channel, len(mine), succeeded=False, given_up=True, next_attempt_at=None)
    if not mine:
        return ChannelState(channel, 0, succeeded=False, given_up=False, next_attempt_at=None)
    last = max(mine, key=lambda a: (a.timestamp, a.attempt))
    due = last.timestamp.replace(microsecond=0) + TIMESTAMP_RESOLUTION + compute_backoff(len(mine), policy)
    return ChannelState(channel, len(mine), succeeded=False, given_up=False, next_attempt_at=due if due > now else None)


def decide_delivery(
    channels: Sequence[str],
    attempts: Sequence[Attempt],
    *,
    configured: frozenset[str],
    policy: RetryPolicy,
    now: datetime,
) -> DeliveryPlan:
    """The next step for a notification with these channels and recorded attempts."""
    states = tuple(
        decide_channel(ch, attempts, configured=ch in configured, policy=policy, now=now) for ch in _unique(channels)
    )
    open_states = [s for s in states if not (s.succeeded or s.given_up)]
    if not open_states:
        return _final(states)
    due = [s for s in open_states if s.next_attempt_at is None]
    send = tuple(s.channel for s in due if s.channel in configured)
    unconfigured = tuple(s.channel for s in due if s.channel not in configured)
    waiting = [s.next_attempt_at for s in open_states if s.next_attempt_at is not None]
    if due:
        phase = Phase.SENDING
    elif any(not a.succeeded for a in attempts):
        phase = Phase.RETRYING
    else:
        phase = Phase.PENDING
    return DeliveryPlan(
        phase=phase,
        send=send,
        unconfigured=unconfigured,
        wake_at=min(waiting) if waiting else None,
        channels=states,
    )


def _final(states: tuple[ChannelState, ...]) -> DeliveryPlan:
    succeeded = [s.channel for s in states if s.succeeded]
    failed = [s.channel for s in states if s.given_up]
    if not failed:
        phase, reason = Phase.SENT, "AllDeliveriesSucceeded"
        message = f"Delivered on {', '.join(succeeded)}"
    elif succeeded:
        phase, reason = Phase.PARTIALLY_SENT, "PartialDeliveryFailure"
        message = f"Delivered on {', '.join(succeeded)}; gave up on {', '.join(failed)}"
    else:
        phase, reason = Phase.FAILED, "AllDeliveriesFailed"
        message = f"Gave up on {', '.join(failed)}"
    return DeliveryPlan(
        phase=phase, send=(), unconfigured=(), wake_at=None, channels=states, reason=reason, message=message
    )


def build_not_configured_error(channel: str) -> str:
    return f"channel {channel} is not configured on this notifier"


NOTIFIER_ACTOR = "notification-controller"
_FINAL_EVENT = {
    Phase.SENT: ("notification.sent", "success"),
    Phase.PARTIALLY_SENT: ("notification.partially_sent", "failure"),
    Phase.FAILED: ("notification.failed", "failure"),
}


def build_correlation_id(notification: NotificationRequest) -> str:
    """The owning RemediationRequest's uid (the remediation's audit trail), else the notification's."""
    for owner in notification.metadata.owner_references:
        if owner.kind == "RemediationRequest":
            return owner.uid
    return notification.metadata.uid


def build_attempt_event(notification: NotificationRequest, attempt: Attempt) -> AuditEvent:
    """notification.delivery.attempted: once per channel attempt."""
    meta = notification.metadata
    event_type = "notification.delivery.attempted"
    data: dict[str, Any] = {"channel": attempt.channel, "attempt": attempt.attempt}
    if attempt.error:
        data["error"] = attempt.error
    return AuditEvent(
        event_id=build_event_id(meta.uid, event_type, attempt.channel, str(attempt.attempt)),
        event_type=event_type,
        event_category="notification",
        event_action="delivery.attempted",
        event_outcome="success" if attempt.succeeded else "failure",
        actor_type="service",
        actor_id=NOTIFIER_ACTOR,
        resource_type="NotificationRequest",
        resource_id=meta.name,
        correlation_id=build_correlation_id(notification),
        namespace=meta.namespace,
        event_time=attempt.timestamp,
        event_data=data,
    )


def build_final_event(notification: NotificationRequest, plan: DeliveryPlan, now: datetime) -> AuditEvent:
    """notification.sent / .partially_sent / .failed: once per notification."""
    meta = notification.metadata
    event_type, outcome = _FINAL_EVENT[plan.phase]
    return AuditEvent(
        event_id=build_event_id(meta.uid, event_type),
        event_type=event_type,
        event_category="notification",
        event_action=event_type.split(".", 1)[1],
        event_outcome=outcome,
        actor_type="service",
        actor_id=NOTIFIER_ACTOR,
        resource_type="NotificationRequest",
        resource_id=meta.name,
        correlation_id=build_correlation_id(notification),
        namespace=meta.namespace,
        event_time=now,
        event_data={
            "phase": plan.phase.value,
            "reason": plan.reason,
            "delivered": [c.channel for c in plan.channels if c.succeeded],
            "failed": [c.channel for c in plan.channels if c.given_up],
            "type": notification.spec.type.value,
            "priority": notification.spec.priority.value,
        },
    )


def parse_attempts(notification: NotificationRequest) -> list[Attempt]:
    return [
        Attempt(
            channel=a.channel.value,
            attempt=a.attempt,
            timestamp=a.timestamp,
            succeeded=a.status == SUCCESS,
            error=a.error or "",
        )
        for a in notification.status.delivery_attempts or []
    ]


def build_attempts_wire(attempts: Sequence[Attempt]) -> list[dict[str, Any]]:
    out = []
    for a in attempts:
        item: dict[str, Any] = {
            "channel": a.channel,
            "attempt": a.attempt,
            "timestamp": _wire(a.timestamp),
            "status": SUCCESS if a.succeeded else FAILED,
        }
        if a.error:
            item["error"] = a.error
        out.append(item)
    return out


def build_progress_status(phase: Phase, attempts: Sequence[Attempt], plan: DeliveryPlan) -> dict[str, Any]:
    """Status while delivering: the attempts so far and the per-channel counts."""
    return {
        "phase": phase.value,
        "deliveryAttempts": build_attempts_wire(attempts),
        "totalAttempts": len(attempts),
        "successfulDeliveries": plan.successful,
        "failedDeliveries": plan.failed,
    }


def build_final_status(attempts: Sequence[Attempt], plan: DeliveryPlan, now: datetime) -> dict[str, Any]:
    status = build_progress_status(plan.phase, attempts, plan)
    status.update({"completionTime": _wire(now), "reason": plan.reason, "message": plan.message})
    return status


INVALID_REASON = "InvalidNotificationRequest"


def build_invalid_status(problem: str, now: datetime) -> dict[str, Any]:
    """Status of a request that cannot be read: Failed at once, nothing sent (retrying cannot help)."""
    return {
        "phase": Phase.FAILED.value,
        "completionTime": _wire(now),
        "reason": INVALID_REASON,
        "message": f"NotificationRequest cannot be read: {problem}"[:1000],
    }


def _wire(value: datetime) -> str:
    return value.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
