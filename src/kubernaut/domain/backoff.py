"""Exponential back-off between attempts on one target, computed in integer nanoseconds.

The delay doubles from `base` per failure up to `maximum`; optional jitter spreads it by up to
`jitter_percent` either way and is clamped back into [base, maximum]. Jitter is injected so that
routing can derive it from the history it decides on (same history, same instant).
"""

import hashlib
from collections.abc import Callable
from datetime import timedelta

_NS_PER_MICROSECOND = 1_000
_MULTIPLIER = 2

Jitter = Callable[[int], int]
"""`jitter(r)` returns an integer offset in [-r, r) nanoseconds."""


def _to_ns(delta: timedelta) -> int:
    return (delta // timedelta(microseconds=1)) * _NS_PER_MICROSECOND


def _from_ns(ns: int) -> timedelta:
    # timedelta holds microseconds: drop the sub-microsecond rest (floor keeps results >= base).
    return timedelta(microseconds=ns // _NS_PER_MICROSECOND)


def compute_backoff(
    n: int,
    *,
    base: timedelta,
    maximum: timedelta,
    jitter_percent: int,
    jitter: Jitter | None = None,
) -> timedelta:
    """The delay after the n-th consecutive failure; 0 for n <= 0; no jitter when `jitter` is None."""
    if n <= 0:
        return timedelta(0)
    base_ns = _to_ns(base)
    max_ns = _to_ns(maximum)
    delay = base_ns
    for _ in range(n - 1):
        delay *= _MULTIPLIER
        if delay > max_ns:
            delay = max_ns
            break
    delay = min(delay, max_ns)
    if jitter_percent > 0 and jitter is not None:
        spread = delay * jitter_percent // 100
        if spread > 0:
            delay += jitter(spread)
            if delay < base_ns:
                delay = base_ns
            if delay > max_ns:
                delay = max_ns
    return _from_ns(delay)


def build_deterministic_jitter(key: str) -> Jitter:
    """A jitter source fixed by `key`: the same key always gives the same offset for a given r."""
    seed = int.from_bytes(hashlib.sha256(key.encode("utf-8")).digest(), "big")

    def jitter(spread: int) -> int:
        if spread <= 0:
            return 0
        return seed % (2 * spread) - spread

    return jitter
