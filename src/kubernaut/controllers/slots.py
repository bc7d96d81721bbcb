"""Slots under the cluster-wide rate limits, without one decision at a time when there is room."""

import asyncio
import contextlib
from collections.abc import AsyncIterator, Callable


class CreationSlots:
    """The right to decide on, and create, one execution under the cluster-wide limits.

    A decision counts the executions in the cache, where a created one lands at once; the ones being
    created right now are not there yet. So a decision goes ahead at once only while every limit
    leaves room for all the creations in flight and its own. Otherwise it waits its turn alone, until
    those in flight have landed, and decides from a cache that holds every one of them: two
    decisions never both take the last free slot.
    """

    def __init__(self, headroom: Callable[[str], int]) -> None:
        self._headroom = headroom  # how many more executions the limits let start (for a namespace)
        self._in_flight = 0
        self._alone = asyncio.Lock()
        self._landed = asyncio.Event()
        self._landed.set()

    @property
    def in_flight(self) -> int:
        return self._in_flight

    @contextlib.asynccontextmanager
    async def taken(self, namespace: str) -> AsyncIterator[None]:
        # No await between the check and the count: no other decision can come between them.
        if not self._alone.locked() and self._headroom(namespace) > self._in_flight:
            self._in_flight += 1
            self._landed.clear()
            try:
                yield
            finally:
                self._in_flight -= 1
                if self._in_flight == 0:
                    self._landed.set()
            return
        async with self._alone:
            await self._landed.wait()
            yield
