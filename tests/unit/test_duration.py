from datetime import UTC, datetime, timedelta

import pytest

from kubernaut.domain.duration import format_go_duration, format_rfc3339, parse_go_duration


@pytest.mark.parametrize(
    ("seconds", "text"),
    [
        (0, "0s"),
        (0.4, "0s"),
        (0.5, "1s"),
        (45, "45s"),
        (90, "1m30s"),
        (120, "2m0s"),
        (3600, "1h0m0s"),
        (3723, "1h2m3s"),
        (3605, "1h0m5s"),
        (150, "2m30s"),
        (-90, "-1m30s"),
        (89.5, "1m30s"),
    ],
)
def test_format_go_duration(seconds: float, text: str) -> None:
    assert format_go_duration(timedelta(seconds=seconds)) == text


@pytest.mark.parametrize(
    ("text", "seconds"),
    [("90s", 90), ("5m", 300), ("1h30m", 5400), ("1.5h", 5400), ("250ms", 0.25), ("0", 0), ("2h0m0s", 7200)],
)
def test_parse_go_duration(text: str, seconds: float) -> None:
    assert parse_go_duration(text) == timedelta(seconds=seconds)


@pytest.mark.parametrize("text", ["banana", "", "5", "1x", "m5", "5m banana", "1h-5m"])
def test_parse_go_duration_rejects(text: str) -> None:
    with pytest.raises(ValueError, match="invalid duration"):
        parse_go_duration(text)


def test_rfc3339_is_utc_seconds() -> None:
    assert format_rfc3339(datetime(2025, 12, 15, 10, 30, 0, 999, tzinfo=UTC)) == "2025-12-15T10:30:00Z"
