"""Controller plumbing: an informer cache and a keyed work queue.

Reflectors (`kube/reflector.py`) deliver every listed object and watch event into the cache, which
keeps the latest body per object with secondary indexes; each controller reconciles keys from its
own queue with controller-runtime semantics: one worker per key at a time, coalesced triggers,
`requeue after`, and per-key exponential back-off on errors.
"""

import asyncio
import bisect
import contextlib
import heapq
import itertools
import logging
import time
from collections import defaultdict, deque
from collections.abc import Awaitable, Callable, Iterable, Iterator
from dataclasses import dataclass, field
from typing import Any, TypeVar

from kubernaut.kube.errors import Conflict, to_kube_error
from kubernaut.metrics import RECONCILE_CONFLICTS, RECONCILE_ERRORS

log = logging.getLogger(__name__)

Body = dict[str, Any]
IndexFn = Callable[[Body], Iterable[str]]
OrderFn = Callable[[Body], Any]
"""A sort key of an object within an ordered index (values must compare with each other)."""
Listener = Callable[[str, Body, Body | None], None]
"""Called with (event type, new body, previous body) after the cache changed."""
T = TypeVar("T")


def object_key(body: Body) -> str:
    meta = body.get("metadata", {})
    namespace = meta.get("namespace") or ""
    return f"{namespace}/{meta.get('name', '')}" if namespace else str(meta.get("name", ""))


def split_key(key: str) -> tuple[str, str]:
    namespace, _, name = key.rpartition("/")
    return namespace, name


class Cache:
    """Latest known body of every object of one kind, with exact-match secondary indexes."""

    def __init__(self) -> None:
        self._objects: dict[str, Body] = {}
        self._index_fns: dict[str, IndexFn] = {}
        self._indexes: dict[str, dict[str, set[str]]] = {}
        self._index_values: dict[str, dict[str, list[str]]] = {}
        self._models: dict[str, tuple[str, Any, Any]] = {}
        self._listeners: list[Listener] = []
        self._order_fns: dict[str, OrderFn] = {}
        self._ordered: dict[str, dict[str, list[tuple[Any, str]]]] = {}
        self._order_values: dict[str, dict[str, tuple[Any, str]]] = {}
        self._gone: dict[str, None] = {}  # uids of deleted objects, oldest first (bounded)
        self.synced = asyncio.Event()

    def listen(self, listener: Listener) -> None:
        self._listeners.append(listener)

    def apply(self, event_type: str | None, body: Body) -> None:
        """A watch event, or an object we just wrote: update the cache and tell the listeners.

        A version the cache already holds (our own write coming back through the watch, or the
        watch's initial listing after the priming LIST) changes nothing and wakes nobody."""
        if event_type == "DELETED":
            old = self.delete(body)
            if old is None:
                return
            kind = "DELETED"
        else:
            old, applied = self.upsert(body)
            if not applied:
                return
            kind = event_type or "ADDED"
        for listener in self._listeners:
            listener(kind, body, old)

    def __len__(self) -> int:
        return len(self._objects)

    def add_index(self, name: str, fn: IndexFn, order: OrderFn | None = None) -> None:
        """An exact-match index; with `order`, each value's objects are also kept sorted by `order(body)`
        so that `newest_first` walks them without sorting (a lookup stays cheap however long the history)."""
        if name in self._index_fns:
            return
        self._index_fns[name] = fn
        self._indexes[name] = defaultdict(set)
        self._index_values[name] = {}
        if order is not None:
            self._order_fns[name] = order
            self._ordered[name] = defaultdict(list)
            self._order_values[name] = {}
        for key, body in self._objects.items():
            self._index_one(name, key, body)

    def _index_one(self, name: str, key: str, body: Body) -> None:
        values = list(self._index_fns[name](body))
        self._index_values[name][key] = values
        for value in values:
            self._indexes[name][value].add(key)
        order = self._order_fns.get(name)
        if order is not None and values:
            entry = (order(body), key)
            self._order_values[name][key] = entry
            for value in values:
                bisect.insort(self._ordered[name][value], entry)

    def upsert(self, body: Body) -> tuple[Body | None, bool]:
        """Store a body unless the cache holds the same or a newer version, or the object is known to be
        deleted (a late event of it must not bring it back); returns (previous, applied)."""
        key = object_key(body)
        old = self._objects.get(key)
        if old is not None and not _newer(body, old):
            return old, False
        if _uid(body) in self._gone:
            return old, False
        meta = body.get("metadata")
        if isinstance(meta, dict) and "managedFields" in meta:
            # Server-side-apply bookkeeping: often the largest part of a body, and never read here.
            body = {**body, "metadata": {k: v for k, v in meta.items() if k != "managedFields"}}
        self._unindex(key)
        self._objects[key] = body
        for name in self._index_fns:
            self._index_one(name, key, body)
        return old, True

    def delete(self, body: Body) -> Body | None:
        """Forget an object; a deletion of an earlier object of the same name leaves the current one."""
        key = object_key(body)
        uid = _uid(body)
        if uid:
            self._gone[uid] = None
            if len(self._gone) > _GONE_REMEMBERED:
                del self._gone[next(iter(self._gone))]
        current = self._objects.get(key)
        if current is not None and uid and _uid(current) and _uid(current) != uid:
            return None
        self._unindex(key)
        self._models.pop(key, None)
        return self._objects.pop(key, None)

    def _unindex(self, key: str) -> None:
        for name in self._index_fns:
            values = self._index_values[name].pop(key, [])
            for value in values:
                keys = self._indexes[name].get(value)
                if keys is not None:
                    keys.discard(key)
                    if not keys:
                        del self._indexes[name][value]
            entry = self._order_values[name].pop(key, None) if name in self._order_fns else None
            if entry is not None:
                for value in values:
                    ordered = self._ordered[name][value]
                    at = bisect.bisect_left(ordered, entry)
                    if at < len(ordered) and ordered[at] == entry:
                        del ordered[at]
                    if not ordered:
                        del self._ordered[name][value]

    def get(self, key: str) -> Body | None:
        return self._objects.get(key)

    def parsed(self, body: Body, parse: Callable[[Body], T]) -> T:
        """`parse(body)`, memoised per object and resourceVersion (models are immutable in use)."""
        key = object_key(body)
        version = str((body.get("metadata") or {}).get("resourceVersion", ""))
        memo = self._models.get(key)
        if memo is not None and memo[0] == version and memo[1] is parse:
            return memo[2]  # type: ignore[no-any-return]
        model = parse(body)
        if version:
            self._models[key] = (version, parse, model)
        return model

    def by_index(self, index: str, value: str) -> list[Body]:
        return [self._objects[key] for key in sorted(self._indexes[index].get(value, ()))]

    def keys_by_index(self, index: str, value: str) -> list[str]:
        return sorted(self._indexes[index].get(value, ()))

    def count_by_index(self, index: str, value: str) -> int:
        return len(self._indexes[index].get(value, ()))

    def newest_first(self, index: str, value: str) -> Iterator[Body]:
        """The objects of an ordered index value, greatest `order` first, lazily."""
        for _, key in reversed(self._ordered[index].get(value, [])):
            body = self._objects.get(key)
            if body is not None:
                yield body

    def all(self) -> list[Body]:
        return list(self._objects.values())


_GONE_REMEMBERED = 10_000


def _uid(body: Body) -> str:
    return str((body.get("metadata") or {}).get("uid") or "")


def _newer(new: Body, old: Body) -> bool:
    try:
        return int(new["metadata"]["resourceVersion"]) > int(old["metadata"]["resourceVersion"])
    except (KeyError, ValueError, TypeError):
        return True


@dataclass(frozen=True)
class Result:
    """What a reconcile wants next: nothing, or another pass after `requeue_after` seconds."""

    requeue_after: float | None = None

    @classmethod
    def done(cls) -> "Result":
        return cls(None)

    @classmethod
    def after(cls, seconds: float) -> "Result":
        return cls(max(0.0, seconds))


Reconciler = Callable[[str], Awaitable[Result]]


Clock = Callable[[], float]
"""Monotonic seconds (time.monotonic, or a fake one in tests)."""


@dataclass
class WorkQueue:
    """A keyed, delaying, de-duplicating queue with per-key back-off (client-go's workqueue, for asyncio).

    A key waits at most once: a later `add_after` with an earlier deadline moves it forward, one with
    a later deadline changes nothing. A key added while it is processed runs once more after `done`.
    Keys added as `background` (objects with nothing left to do, met at start-up or on a re-list) are
    handed out only when no other key is ready, so that a long history never delays live work; a
    background key added again normally moves up."""

    name: str
    clock: Clock = time.monotonic
    base_delay: float = 0.05
    max_delay: float = 30.0
    _urgent: deque[str] = field(default_factory=deque)
    _background: deque[str] = field(default_factory=deque)  # entries of keys moved up since are stale
    _queued: dict[str, bool] = field(default_factory=dict)  # key -> whether it waits in the background
    _available: asyncio.Event = field(default_factory=asyncio.Event)
    _processing: set[str] = field(default_factory=set)
    _dirty: dict[str, bool] = field(default_factory=dict)  # added while processed -> background
    _deadlines: dict[str, float] = field(default_factory=dict)  # the one pending deadline of each waiting key
    _delayed: list[tuple[float, int, str]] = field(default_factory=list)  # heap; entries not in _deadlines are stale
    _counter: Iterator[int] = field(default_factory=itertools.count)
    _wakeup: asyncio.Event = field(default_factory=asyncio.Event)
    _failures: dict[str, int] = field(default_factory=dict)

    def add(self, key: str, *, background: bool = False) -> None:
        if key in self._processing:
            self._dirty[key] = self._dirty.get(key, True) and background
            return
        queued = self._queued.get(key)
        if queued is None:
            self._queued[key] = background
            (self._background if background else self._urgent).append(key)
        elif queued and not background:
            self._queued[key] = False
            self._urgent.append(key)
        self._available.set()

    def add_after(self, key: str, delay: float) -> None:
        if delay <= 0:
            self.add(key)
            return
        deadline = self.clock() + delay
        pending = self._deadlines.get(key)
        if pending is not None and pending <= deadline:
            return
        self._deadlines[key] = deadline
        heapq.heappush(self._delayed, (deadline, next(self._counter), key))
        if len(self._delayed) > 2 * len(self._deadlines) + 16:
            # Moved-forward keys leave stale entries behind; keep the heap proportional to the keys.
            self._delayed = [(d, n, k) for d, n, k in self._delayed if self._deadlines.get(k) == d]
            heapq.heapify(self._delayed)
        self._wakeup.set()

    def add_rate_limited(self, key: str) -> float:
        """Retry a failed key after its back-off (base * 2^(failures-1), capped); returns the delay."""
        failures = self._failures.get(key, 0) + 1
        self._failures[key] = failures
        delay = min(self.max_delay, self.base_delay * 2.0 ** min(failures - 1, 64))
        self.add_after(key, delay)
        return delay

    def forget(self, key: str) -> None:
        """The key succeeded: its next failure starts the back-off afresh."""
        self._failures.pop(key, None)

    def num_requeues(self, key: str) -> int:
        return self._failures.get(key, 0)

    async def get(self) -> str:
        while (key := self._take()) is None:
            self._available.clear()
            await self._available.wait()
        self._processing.add(key)
        return key

    def _take(self) -> str | None:
        """The next ready key, urgent ones first (None: nothing is ready)."""
        while self._urgent:
            key = self._urgent.popleft()
            if self._queued.get(key) is False:
                del self._queued[key]
                return key
        while self._background:
            key = self._background.popleft()
            if self._queued.get(key):  # else moved up, and taken from the urgent lane already
                del self._queued[key]
                return key
        return None

    def done(self, key: str) -> None:
        self._processing.discard(key)
        background = self._dirty.pop(key, None)
        if background is not None:
            self.add(key, background=background)

    def __len__(self) -> int:
        return len(self._queued) + len(self._deadlines)

    def busy(self) -> bool:
        """Whether a key is ready or being processed (keys waiting for a deadline do not count)."""
        return bool(self._queued or self._processing)

    def release_due(self) -> float | None:
        """Move the keys whose deadline has passed to the ready queue; returns the seconds until the
        next deadline (None: nothing waits)."""
        now = self.clock()
        while self._delayed:
            deadline, _, key = self._delayed[0]
            if self._deadlines.get(key) != deadline:
                heapq.heappop(self._delayed)  # superseded by an earlier deadline, or already released
                continue
            if deadline > now:
                return deadline - now
            heapq.heappop(self._delayed)
            del self._deadlines[key]
            self.add(key)
        return None

    async def run_timer(self) -> None:
        """Moves delayed keys to the ready queue when due."""
        while True:
            self._wakeup.clear()
            timeout = self.release_due()
            # asyncio.timeout, not wait_for: on 3.11 wait_for can swallow a cancellation that races the wakeup
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(timeout):
                    await self._wakeup.wait()


Finished = Callable[[str], bool]
"""Whether the object of a key needs no more passes (gone, or in a final phase)."""


@dataclass
class Controller:
    """Reconciles keys from its queue with `workers` concurrent workers.

    With `resync_period` and `finished`, a pass that returns for a key whose object is not finished
    requeues it no later than `resync_period` (an earlier `Result.after` wins): every unfinished
    object is looked at again, whatever events arrive or get lost. A failed pass is retried by its
    back-off instead (capped at `max_delay`)."""

    name: str
    reconcile: Reconciler
    workers: int = 4
    queue: WorkQueue = field(init=False)
    base_delay: float = 0.05
    max_delay: float = 30.0
    clock: Clock = time.monotonic
    finished: Finished | None = None
    resync_period: float | None = None

    def __post_init__(self) -> None:
        self.queue = WorkQueue(self.name, clock=self.clock, base_delay=self.base_delay, max_delay=self.max_delay)

    def enqueue(self, key: str) -> None:
        """A pass for `key`; one whose object is finished waits behind every other ready key."""
        self.queue.add(key, background=self.finished is not None and self.finished(key))

    async def run(self, stop: asyncio.Event) -> None:
        tasks = [asyncio.create_task(self.queue.run_timer(), name=f"{self.name}-timer")]
        tasks += [asyncio.create_task(self._worker(), name=f"{self.name}-worker-{i}") for i in range(self.workers)]
        try:
            await stop.wait()
        finally:
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)

    async def _worker(self) -> None:
        while True:
            key = await self.queue.get()
            try:
                result = await self.reconcile(key)
            except asyncio.CancelledError:
                self.queue.done(key)
                raise
            except Exception as exc:  # a failed pass is retried with back-off, never fatal
                self.queue.done(key)
                delay = self.queue.add_rate_limited(key)
                if _is_conflict(exc):
                    RECONCILE_CONFLICTS.labels(controller=self.name).inc()
                    log.debug("Reconcile of %s %s met a write conflict (retry in %.2fs)", self.name, key, delay)
                    continue
                RECONCILE_ERRORS.labels(controller=self.name).inc()
                log.warning(
                    "Reconcile of %s %s failed (retry in %.2fs): %s",
                    self.name,
                    key,
                    delay,
                    exc,
                    exc_info=log.isEnabledFor(logging.DEBUG),
                )
                continue
            self.queue.forget(key)
            self.queue.done(key)
            after = self.next_pass(key, result)
            if after is not None:
                self.queue.add_after(key, after)

    def next_pass(self, key: str, result: Result) -> float | None:
        """Seconds until the key's next pass after one that returned `result` (None: only on an event)."""
        delay = result.requeue_after
        if self.resync_period is None or self.finished is None or self.finished(key):
            return delay
        return self.resync_period if delay is None else min(delay, self.resync_period)


def _is_conflict(exc: Exception) -> bool:
    """A failed precondition on an optimistic-concurrency write: normal under contention, retried
    quietly. (A create's AlreadyExists is a 409 too, but no race the next pass resolves by itself.)"""
    return isinstance(to_kube_error(exc), Conflict)
