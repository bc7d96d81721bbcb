"""The back-off series, its cap, and jitter (injected and hash-derived)."""

from collections.abc import Callable
from datetime import timedelta

import pytest

from kubernaut.domain.backoff import build_deterministic_jitter, compute_backoff

BASE = timedelta(seconds=60)
MAX = timedelta(seconds=600)


def backoff(
    n: int,
    jitter_percent: int = 0,
    jitter: Callable[[int], int] | None = None,
    *,
    base: timedelta = BASE,
    maximum: timedelta = MAX,
) -> timedelta:
    return compute_backoff(n, base=base, maximum=maximum, jitter_percent=jitter_percent, jitter=jitter)


@pytest.mark.parametrize(
    ("n", "seconds"),
    [(-1, 0), (0, 0), (1, 60), (2, 120), (3, 240), (4, 480), (5, 600), (6, 600), (64, 600), (10**9, 600)],
)
def test_series_without_jitter(n: int, seconds: int) -> None:
    # SYSTEM §8 item 49, first half.
    assert backoff(n) == timedelta(seconds=seconds)


def test_cap_stops_doubling_at_the_maximum() -> None:
    assert backoff(2, base=timedelta(seconds=60), maximum=timedelta(seconds=100)) == timedelta(seconds=100)
    assert backoff(1, base=timedelta(seconds=60), maximum=timedelta(seconds=30)) == timedelta(seconds=30)


def test_sub_second_durations_are_exact() -> None:
    base = timedelta(milliseconds=1, microseconds=500)
    assert backoff(3, base=base, maximum=timedelta(seconds=1)) == timedelta(milliseconds=6)


@pytest.mark.parametrize(
    ("n", "offset", "seconds"),
    [
        # r = 10 % of the un-jittered delay, in nanoseconds; the offset is in [-r, r).
        (2, lambda r: -r, 108),
        (2, lambda r: 0, 120),
        (2, lambda r: r - 1, 132 - 1e-6),  # 132 s - 1 ns, floored to whole microseconds
        (1, lambda r: -r, 60),  # 54 s clamped up to the base
        (1, lambda r: r - 1, 66 - 1e-6),
        (4, lambda r: -r, 432),
        (4, lambda r: r - 1, 528 - 1e-6),
        (5, lambda r: r - 1, 600),  # 660 s clamped down to the maximum
        (5, lambda r: -r, 540),
    ],
)
def test_jitter_is_applied_within_ten_percent_and_clamped(n: int, offset: Callable[[int], int], seconds: float) -> None:
    # SYSTEM §8 item 49, second half: with 10 % jitter backoff(2) lies in [108 s, 132 s).
    assert backoff(n, 10, offset) == timedelta(seconds=seconds)


def test_jitter_receives_the_spread_in_nanoseconds() -> None:
    seen: list[int] = []

    def record(spread: int) -> int:
        seen.append(spread)
        return 0

    backoff(2, 10, record)
    assert seen == [12 * 10**9]


def test_no_jitter_source_or_zero_percent_means_no_jitter() -> None:
    assert backoff(2, 10, None) == timedelta(seconds=120)
    assert backoff(2, 0, lambda r: -r) == timedelta(seconds=120)


def test_zero_spread_skips_the_jitter_source() -> None:
    def fail(spread: int) -> int:
        raise AssertionError("called")

    assert backoff(1, 1, fail, base=timedelta(microseconds=0), maximum=timedelta(0)) == timedelta(0)


def test_deterministic_jitter_depends_only_on_its_key() -> None:
    spread = 12 * 10**9
    first = build_deterministic_jitter("prod/Deployment/api|2")
    again = build_deterministic_jitter("prod/Deployment/api|2")
    assert first(spread) == again(spread) == first(spread)
    offsets = {build_deterministic_jitter(f"prod/Deployment/api|{n}")(spread) for n in range(1, 20)}
    assert len(offsets) > 15
    for key in ("a", "b", "prod/Deployment/api|1", "Node/worker-1|7"):
        for r in (1, 2, 3, 1000, spread):
            assert -r <= build_deterministic_jitter(key)(r) < r
    assert build_deterministic_jitter("a")(0) == 0


def test_deterministic_jitter_spreads_over_the_whole_window() -> None:
    spread = 12 * 10**9
    offsets = [build_deterministic_jitter(f"t|{i}")(spread) for i in range(400)]
    assert min(offsets) < -spread // 2
    assert max(offsets) > spread // 2
    delays = [backoff(2, 10, build_deterministic_jitter(f"t|{i}")) for i in range(400)]
    assert all(timedelta(seconds=108) <= d < timedelta(seconds=132) for d in delays)
