"""Go's time.Duration notation: parsing config values and formatting durations for humans."""

import re
from datetime import UTC, datetime, timedelta

_UNIT_SECONDS = {"ns": 1e-9, "us": 1e-6, "µs": 1e-6, "ms": 1e-3, "s": 1.0, "m": 60.0, "h": 3600.0}
_PART = re.compile(r"(\d+(?:\.\d*)?|\.\d+)(ns|us|µs|ms|s|m|h)")


def parse_go_duration(text: str) -> timedelta:
    """Parse `90s`, `5m`, `1h30m`, `1.5h`, `250ms` (Go's syntax); raise ValueError otherwise."""
    value = text.strip()
    if value in ("0", "+0", "-0"):
        return timedelta(0)
    sign = 1.0
    if value[:1] in "+-" and value:
        sign = -1.0 if value[0] == "-" else 1.0
        value = value[1:]
    if not value:
        raise ValueError(f"invalid duration {text!r}")
    pos = 0
    total = 0.0
    for match in _PART.finditer(value):
        if match.start() != pos:
            raise ValueError(f"invalid duration {text!r}")
        total += float(match.group(1)) * _UNIT_SECONDS[match.group(2)]
        pos = match.end()
    if pos != len(value) or pos == 0:
        raise ValueError(f"invalid duration {text!r}: use Go notation such as 90s, 5m or 1h30m")
    return timedelta(seconds=sign * total)


def round_seconds(delta: timedelta) -> int:
    """Whole seconds, rounding half away from zero."""
    micros = delta // timedelta(microseconds=1)
    sign = -1 if micros < 0 else 1
    return sign * ((abs(micros) + 500_000) // 1_000_000)


def format_go_duration(delta: timedelta) -> str:
    """Go's Duration.String() after rounding to seconds: `0s`, `45s`, `1m30s`, `1h0m5s`."""
    seconds = round_seconds(delta)
    if seconds == 0:
        return "0s"
    sign = "-" if seconds < 0 else ""
    seconds = abs(seconds)
    hours, rest = divmod(seconds, 3600)
    minutes, secs = divmod(rest, 60)
    if hours:
        return f"{sign}{hours}h{minutes}m{secs}s"
    if minutes:
        return f"{sign}{minutes}m{secs}s"
    return f"{sign}{secs}s"


def format_rfc3339(moment: datetime) -> str:
    """UTC, second precision: `2025-12-15T10:30:00Z`."""
    return moment.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
