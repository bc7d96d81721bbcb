"""What `kubernaut breaker status` prints for each state of the breaker."""

from datetime import UTC, datetime

from kubernaut.cli.breaker import format_status
from kubernaut.domain.gates import BreakerReset, BreakerState, GatePolicy

T0 = datetime(2026, 3, 1, 12, 0, tzinfo=UTC)


def test_open_names_the_opening_and_its_failures() -> None:
    state = BreakerState(open=True, opened_at=T0, failures_in_window=5, reset=None, failures=("team/we-a", "team/we-b"))
    assert format_status(state, GatePolicy()) == [
        "State:               Open (since 2026-03-01T12:00:00Z)",
        "Opened by failures:  team/we-a, team/we-b",
        "Failures in window:  5 of 5 (600s)",
        "Last reset:          never",
    ]


def test_closed_after_a_reset_names_who_when_and_why() -> None:
    reset = BreakerReset(at=T0, by="alice", reason="registry fixed")
    state = BreakerState(open=False, opened_at=None, failures_in_window=1, reset=reset)
    assert format_status(state, GatePolicy()) == [
        "State:               Closed",
        "Failures in window:  1 of 5 (600s)",
        "Last reset:          2026-03-01T12:00:00Z by alice",
        "Reset reason:        registry fixed",
    ]
