"""Standard Kubernetes conditions: set one, keeping lastTransitionTime unless the status changes."""

from collections.abc import Sequence
from datetime import datetime

from kubernaut.api.v1alpha1.common import Condition, ConditionStatus


def set_condition(
    conditions: Sequence[Condition] | None,
    type_: str,
    status: ConditionStatus | bool,
    reason: str,
    message: str,
    now: datetime,
) -> list[Condition]:
    """A new list with `type_` set; other conditions are kept in order."""
    if isinstance(status, bool):
        status = ConditionStatus.TRUE if status else ConditionStatus.FALSE
    current = list(conditions or [])
    for index, existing in enumerate(current):
        if existing.type == type_:
            changed = existing.status != status
            current[index] = Condition(
                type=type_,
                status=status,
                reason=reason,
                message=message,
                last_transition_time=now if changed else existing.last_transition_time,
            )
            return current
    current.append(Condition(type=type_, status=status, reason=reason, message=message, last_transition_time=now))
    return current


def find_condition(conditions: Sequence[Condition] | None, type_: str) -> Condition | None:
    return next((c for c in conditions or [] if c.type == type_), None)
