"""The AuditSink of a running process: record into a durable outbox, deliver to the store behind.

`record` returns once the event is committed to the local outbox (that is what "recorded" means),
so the reconcile path never waits for the store. A background task moves events from the outbox to
the store in batches and deletes them only after the store accepted them. While the store is
unreachable the events wait in the outbox, also across restarts; the store ignores an id it
already has, so a batch delivered twice is still stored once.
"""

import asyncio
import contextlib
import logging
import sqlite3
import time
from pathlib import Path

from kubernaut.api.audit import AuditEvent
from kubernaut.audit import metrics
from kubernaut.audit.chain import find_unstorable_field
from kubernaut.audit.outbox import Outbox
from kubernaut.audit.store import AuditError, AuditStore

log = logging.getLogger(__name__)


class AuditWriter:
    def __init__(
        self,
        store: AuditStore,
        outbox_path: Path,
        *,
        batch_size: int = 100,
        flush_interval: float = 0.2,
        max_buffered: int = 100_000,
        close_timeout: float = 10.0,
        retry_initial: float = 0.1,
        retry_max: float = 2.0,
        outbox_busy_timeout: float = 1.0,
    ) -> None:
        self.store = store
        self.outbox_path = outbox_path
        self._outbox = Outbox(outbox_path, max_events=max_buffered, busy_timeout=outbox_busy_timeout)
        self._batch_size = batch_size
        self._flush_interval = flush_interval
        self._close_timeout = close_timeout
        self._retry_initial = retry_initial
        self._retry_max = retry_max
        self._pending: list[tuple[AuditEvent, asyncio.Future[None]]] = []
        self._committer: asyncio.Task[None] | None = None
        self._flusher: asyncio.Task[None] | None = None
        self._wake = asyncio.Event()
        self._closing = asyncio.Event()
        self._started = False
        self._store_down = False
        self._full_reported = False

    @property
    def buffered(self) -> int:
        """Events in the outbox that the store has not accepted yet."""
        return self._outbox.count

    async def start(self) -> None:
        """Open the outbox and start delivering; events left by an earlier run are delivered first."""
        try:
            waiting = await asyncio.to_thread(self._outbox.open)
        except (sqlite3.Error, OSError) as exc:
            raise AuditError(f"cannot open the audit outbox {self.outbox_path}: {exc}") from exc
        metrics.EVENTS_BUFFERED.set(waiting)
        if waiting:
            log.info("Delivering %d audit events left in the outbox %s", waiting, self.outbox_path)
        self._started = True
        self._flusher = asyncio.create_task(self._deliver(), name="audit-writer")

    async def record(self, event: AuditEvent) -> None:
        """Durably record one event; AuditError when it cannot be (never a silent drop)."""
        if not self._started or self._closing.is_set():
            raise AuditError("the audit writer is not running")
        bad_field = find_unstorable_field(event)
        if bad_field is not None:
            raise AuditError(f"audit event {event.event_id}: field {bad_field} cannot be stored")
        done = asyncio.get_running_loop().create_future()
        self._pending.append((event, done))
        if self._committer is None or self._committer.done():
            self._committer = asyncio.create_task(self._commit_pending())
        await done

    async def _commit_pending(self) -> None:
        # Group commit: events recorded while one outbox transaction runs share the next one (and its fsync).
        while self._pending:
            batch, self._pending = self._pending, []
            try:
                accepted = await asyncio.to_thread(self._outbox.put, [event for event, _ in batch])
            except Exception as exc:  # whatever it is, every waiting record() must hear of it
                if not isinstance(exc, sqlite3.Error | OSError):
                    log.exception("Unexpected error writing the audit outbox %s", self.outbox_path)
                error = AuditError(f"cannot write the audit outbox {self.outbox_path}: {exc}")
                for _, done in batch:
                    if not done.done():
                        done.set_exception(error)
                continue
            for (event, done), ok in zip(batch, accepted, strict=True):
                if done.done():
                    continue
                if ok:
                    done.set_result(None)
                else:
                    metrics.BUFFER_FULL.inc()
                    done.set_exception(
                        AuditError(
                            f"audit outbox {self.outbox_path} is full ({self._outbox.max_events} events);"
                            f" event {event.event_id} was not recorded"
                        )
                    )
            if not all(accepted) and not self._full_reported:
                self._full_reported = True
                log.error(
                    "Audit outbox %s is full (%d events): refusing new audit events until the store accepts them",
                    self.outbox_path,
                    self._outbox.max_events,
                )
            metrics.EVENTS_BUFFERED.set(self._outbox.count)
            if self._outbox.count >= self._batch_size:
                self._wake.set()

    async def _deliver(self) -> None:
        retry = self._retry_initial
        while True:
            if not self._closing.is_set() and self._outbox.count < self._batch_size:
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._wake.wait(), self._flush_interval)
                self._wake.clear()
            if self._outbox.count == 0:
                if self._closing.is_set():
                    return
                continue
            try:
                delivered = await self._deliver_batch()
            except Exception:  # delivery must outlive any single failure
                log.exception("Unexpected error delivering audit events from %s", self.outbox_path)
                delivered = False
            if delivered:
                retry = self._retry_initial
                continue
            # Exponential back-off, capped so that delivery resumes within seconds of the store's return.
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._closing.wait(), retry)
            retry = min(retry * 2, self._retry_max)

    async def _deliver_batch(self) -> bool:
        """Move the oldest batch to the store; False when the store did not accept it."""
        try:
            rows = await asyncio.to_thread(self._outbox.take, self._batch_size)
        except Exception as exc:  # an unreadable outbox must not end delivery; it is retried
            log.error("Cannot read the audit outbox %s: %s", self.outbox_path, exc)
            return False
        if not rows:
            return True
        started = time.perf_counter()
        try:
            new = await self.store.append([event for _, event in rows])
        except Exception as exc:  # any failure keeps the batch in the outbox for the next try
            metrics.WRITE_FAILURES.inc()
            if not self._store_down:
                self._store_down = True
                log.warning("Audit store unavailable, keeping %d events in the outbox: %s", self._outbox.count, exc)
            else:
                log.debug("Audit store still unavailable: %s", exc)
            return False
        metrics.WRITE_LATENCY.observe(time.perf_counter() - started)
        metrics.EVENTS_WRITTEN.inc(new)
        if self._store_down:
            self._store_down = False
            log.info("Audit store available again; delivering %d buffered events", self._outbox.count)
        try:
            await asyncio.to_thread(self._outbox.remove_through, rows[-1][0])
        except (sqlite3.Error, OSError) as exc:
            # Harmless: the batch is offered again and the store ignores ids it already has.
            log.error("Cannot remove delivered events from the audit outbox %s: %s", self.outbox_path, exc)
            return False
        if self._outbox.count < self._outbox.max_events:
            self._full_reported = False
        metrics.EVENTS_BUFFERED.set(self._outbox.count)
        return True

    async def close(self) -> None:
        """Stop accepting events, deliver what the store takes within the close timeout, close the outbox."""
        if not self._started or self._closing.is_set():
            return
        self._closing.set()
        if self._committer is not None:
            await self._committer
        self._wake.set()
        if self._flusher is not None:
            try:
                await asyncio.wait_for(asyncio.shield(self._flusher), self._close_timeout)
            except TimeoutError:
                self._flusher.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await self._flusher
        if self._outbox.count:
            log.warning(
                "%d audit events remain in the outbox %s; they are delivered on the next start",
                self._outbox.count,
                self.outbox_path,
            )
        await asyncio.to_thread(self._outbox.close)
