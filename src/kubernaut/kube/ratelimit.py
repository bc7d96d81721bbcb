"""Client-side rate limiting of API requests: a token bucket, as client-go's flowcontrol limiter.

The bucket holds up to `burst` tokens and gains `qps` tokens a second; every request takes one.
A request that finds the bucket empty takes its token ahead of time and waits until that token
has accrued, so waiters leave in the order they came, `1 / qps` seconds apart.
"""

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable
from typing import Any

from lightkube import AsyncClient

from kubernaut.metrics import CLIENT_THROTTLE_SECONDS, CLIENT_THROTTLED_REQUESTS

log = logging.getLogger(__name__)

Clock = Callable[[], float]
"""Monotonic seconds (time.monotonic, or a fake one in tests)."""
Sleep = Callable[[float], Awaitable[None]]

# Leases are renewed every retryPeriod (2 s) and must be within renewDeadline (10 s): behind a queue
# of throttled requests a renewal could miss it and cost the leadership. Their own rate is bounded
# by the elector (controller-runtime gives leader election a client, and a bucket, of its own).
_EXEMPT_PATH = "/apis/coordination.k8s.io/"
_LONG_WAIT_SECONDS = 1.0


class TokenBucket:
    def __init__(self, qps: float, burst: int, *, clock: Clock = time.monotonic, sleep: Sleep = asyncio.sleep) -> None:
        if not qps > 0 or burst < 1:
            raise ValueError("a token bucket needs qps > 0 and burst >= 1")
        self.qps = float(qps)
        self.burst = int(burst)
        self._clock = clock
        self._sleep = sleep
        self._tokens = float(self.burst)  # negative: tokens already promised to waiters
        self._last = clock()

    @property
    def tokens(self) -> float:
        """Tokens available now (negative: owed to waiters)."""
        self._refill()
        return self._tokens

    def _refill(self) -> None:
        now = self._clock()
        self._tokens = min(float(self.burst), self._tokens + max(0.0, now - self._last) * self.qps)
        self._last = now

    def reserve(self) -> float:
        """Take a token; returns the seconds until it may be used (0: at once)."""
        self._refill()
        self._tokens -= 1.0
        return 0.0 if self._tokens >= 0 else -self._tokens / self.qps

    async def acquire(self) -> float:
        """Wait for a token; returns the seconds waited. A cancelled wait gives its token back."""
        wait = self.reserve()
        if wait > 0:
            try:
                await self._sleep(wait)
            except asyncio.CancelledError:
                self._refill()
                self._tokens = min(float(self.burst), self._tokens + 1.0)
                raise
        return wait


def limit_requests(client: AsyncClient, bucket: TokenBucket) -> None:
    """Every request `client` sends takes a token first: a request hook on the httpx client under
    lightkube's, so it runs once per request sent (each page of a LIST, the opening of a WATCH, a
    retry after a refreshed token), never per line a watch streams. Lease requests are exempt."""
    http = client._client._client  # the httpx client under lightkube's

    async def take_token(request: Any) -> None:
        if _EXEMPT_PATH in request.url.path:  # also behind a proxy that prefixes the path
            return
        waited = await bucket.acquire()
        if waited > 0:
            CLIENT_THROTTLED_REQUESTS.inc()
            CLIENT_THROTTLE_SECONDS.inc(waited)
            if waited >= _LONG_WAIT_SECONDS:
                log.debug("%s %s waited %.2fs for client-side throttling", request.method, request.url.path, waited)

    hooks = http.event_hooks
    http.event_hooks = {"request": [*hooks["request"], take_token], "response": hooks["response"]}
