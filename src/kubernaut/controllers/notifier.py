"""The notifier: delivers each NotificationRequest once per channel, with retries and back-off.

One pass: decide from the recorded attempts (pure), claim the request with a status write whose
resourceVersion precondition fails on a stale cache, then send channel by channel, recording
each outcome in status right after the send. A channel recorded successful is never sent again,
across restarts too; the only window for a repeat is a crash between a send and its record, and
the webhook and Slack requests carry `Idempotency-Key: <uid>:<channel>` for receivers to drop it.
"""

import asyncio
import logging
import time
from datetime import datetime
from typing import Any

import aiohttp
from pydantic import ValidationError

from kubernaut.api.audit import AuditEvent
from kubernaut.api.v1alpha1.notificationrequest import NotificationRequest
from kubernaut.controllers.kinds import NR_KIND
from kubernaut.controllers.manager import Manager
from kubernaut.domain.delivery import (
    FINAL_PHASES,
    Attempt,
    DeliveryPlan,
    Phase,
    RetryPolicy,
    build_attempt_event,
    build_final_event,
    build_final_status,
    build_invalid_status,
    build_not_configured_error,
    build_progress_status,
    decide_delivery,
    parse_attempts,
)
from kubernaut.kube.api import get_object, patch_status_if_current
from kubernaut.kube.errors import Conflict, NotFound
from kubernaut.kube.resources import NotificationRequestResource
from kubernaut.kube.runtime import Body, Controller, Result, object_key, split_key
from kubernaut.notify import metrics
from kubernaut.notify.channels import Channel, DeliveryError, Message, build_channels

log = logging.getLogger(__name__)

CONFLICT_REQUEUE_SECONDS = 0.2
MAX_RECORD_RETRIES = 5


def _message(nr: NotificationRequest) -> Message:
    return Message(
        name=nr.metadata.name,
        namespace=nr.metadata.namespace,
        uid=nr.metadata.uid,
        type=nr.spec.type.value,
        priority=nr.spec.priority.value,
        subject=nr.spec.subject,
        body=nr.spec.body,
        metadata=dict(nr.spec.metadata or {}),
    )


class StaleViewError(Exception):
    """The cached object is older than the API server's: this pass must not act on it."""


class Notifier:
    def __init__(self, manager: Manager) -> None:
        self.manager = manager
        self.client = manager.client
        config = manager.settings.notifier
        self.policy = RetryPolicy(
            max_attempts=config.max_attempts, backoff_base=config.backoff_base, backoff_max=config.backoff_max
        )
        self._session: aiohttp.ClientSession | None = None
        self.channels: dict[str, Channel] = build_channels(config, manager.client, self._http)
        self.configured = frozenset(self.channels)
        self.cache = manager.cache(NR_KIND)
        self.controller = manager.add_controller(Controller("notifier", self.reconcile, finished=self.finished))
        manager.on_event(NR_KIND, self._on_event)
        manager.add_task(self._close_session_on_stop)

    def _http(self) -> aiohttp.ClientSession:
        if self._session is None or self._session.closed:
            self._session = aiohttp.ClientSession()
        return self._session

    async def _close_session_on_stop(self, stop: asyncio.Event) -> None:
        try:
            await stop.wait()
        finally:
            if self._session is not None:
                await self._session.close()

    def _on_event(self, event_type: str, body: Body, _old: Body | None) -> None:
        if event_type == "DELETED":
            return
        phase = (body.get("status") or {}).get("phase")
        if phase not in FINAL_PHASES:
            self.controller.enqueue(object_key(body))

    def finished(self, key: str) -> bool:
        """Gone, being deleted, or Sent, PartiallySent or Failed: nothing more is sent."""
        body = self.cache.get(key)
        if body is None or (body.get("metadata") or {}).get("deletionTimestamp"):
            return True
        return (body.get("status") or {}).get("phase") in FINAL_PHASES

    async def reconcile(self, key: str) -> Result:
        body = self.cache.get(key)
        if body is None or body.get("metadata", {}).get("deletionTimestamp"):
            return Result.done()
        # Read off the raw body: a request marked Failed because it cannot be parsed stays done.
        if (body.get("status") or {}).get("phase") in FINAL_PHASES:
            return Result.done()
        try:
            nr = NotificationRequest.from_wire(body)
        except ValidationError as exc:
            return await self._reject(key, body, exc)
        try:
            return await self._deliver(nr)
        except StaleViewError:
            return Result.after(CONFLICT_REQUEUE_SECONDS)  # the watch brings the newer version

    async def _reject(self, key: str, body: Body, exc: ValidationError) -> Result:
        """A body that does not parse can never be delivered: Failed, saying why, instead of a pass
        that fails and is retried forever."""
        problem = "; ".join(
            f"{'.'.join(str(part) for part in error['loc']) or 'body'}: {error['msg']}" for error in exc.errors()[:3]
        )
        log.error("NotificationRequest %s cannot be read: %s", key, problem)
        version = str((body.get("metadata") or {}).get("resourceVersion") or "")
        try:
            await self._patch(key, build_invalid_status(problem, self.manager.clock()), version)
        except StaleViewError:
            return Result.after(CONFLICT_REQUEUE_SECONDS)  # changed meanwhile: decide from the new version
        metrics.NOTIFICATIONS_COMPLETED.labels(phase=Phase.FAILED.value).inc()
        return Result.done()

    async def _audit(self, nr: NotificationRequest, event: AuditEvent) -> None:
        """An attempt's audit event, after its outcome is in status: a failure here is logged and must
        not fail the pass, or the next one would send again what was already delivered."""
        try:
            await self.manager.audit.record(event)
        except Exception as exc:
            log.warning("Audit event %s for NotificationRequest %s not recorded: %s", event.event_type, nr.key, exc)

    def _decide(self, nr: NotificationRequest, attempts: list[Attempt], now: datetime) -> DeliveryPlan:
        return decide_delivery(
            [c.value for c in nr.spec.channels], attempts, configured=self.configured, policy=self.policy, now=now
        )

    async def _deliver(self, nr: NotificationRequest) -> Result:
        now = self.manager.clock()
        attempts = parse_attempts(nr)
        plan = self._decide(nr, attempts, now)
        version = nr.metadata.resource_version
        if plan.is_final:
            await self._finish(nr, attempts, plan, version, now)
            return Result.done()
        if not plan.send and not plan.unconfigured:
            if nr.status.phase != Phase.RETRYING:
                await self._write(nr, build_progress_status(Phase.RETRYING, attempts, plan), version)
            assert plan.wake_at is not None
            return Result.after((plan.wake_at - now).total_seconds())

        # Claim: succeeds only if our view is current, so nothing is sent twice off a stale cache.
        now_s = now.replace(microsecond=0)
        for channel in plan.unconfigured:
            attempt = Attempt(
                channel, _next_number(attempts, channel), now_s, False, build_not_configured_error(channel)
            )
            await self.manager.audit.record(build_attempt_event(nr, attempt))
            attempts.append(attempt)
            metrics.DELIVERY_ATTEMPTS.labels(channel=channel, outcome="not_configured").inc()
            log.warning("NotificationRequest %s: channel %s is not configured", nr.key, channel)
        claim = build_progress_status(Phase.SENDING, attempts, self._decide(nr, attempts, now))
        version = await self._write(nr, claim, version)

        for channel in plan.send:
            attempt = await self._send(nr, channel, _next_number(attempts, channel))
            attempts.append(attempt)
            progress = build_progress_status(Phase.SENDING, attempts, self._decide(nr, attempts, now))
            # The outcome goes to status first: a recorded success is never sent again.
            version, attempts = await self._record(nr, progress, version, attempts)
            await self._audit(nr, build_attempt_event(nr, attempt))

        now = self.manager.clock()
        plan = self._decide(nr, attempts, now)
        if plan.is_final:
            await self._finish(nr, attempts, plan, version, now)
            return Result.done()
        await self._write(nr, build_progress_status(Phase.RETRYING, attempts, plan), version)
        wait = (plan.wake_at - now).total_seconds() if plan.wake_at else 0.0
        return Result.after(wait)

    async def _send(self, nr: NotificationRequest, channel: str, number: int) -> Attempt:
        started = time.perf_counter()
        try:
            await self.channels[channel].send(_message(nr))
        except DeliveryError as exc:
            error = str(exc)
        except Exception as exc:  # a channel bug must not lose the attempt record
            error = f"{channel} delivery failed: {type(exc).__name__}"
        else:
            error = ""
        finally:
            metrics.DELIVERY_DURATION.labels(channel=channel).observe(time.perf_counter() - started)
        finished = self.manager.clock().replace(microsecond=0)
        metrics.DELIVERY_ATTEMPTS.labels(channel=channel, outcome="failure" if error else "success").inc()
        if error:
            log.warning("NotificationRequest %s: %s attempt %d failed: %s", nr.key, channel, number, error)
        else:
            log.info("Delivered NotificationRequest %s on %s", nr.key, channel)
        return Attempt(channel, number, finished, not error, error)

    async def _finish(
        self, nr: NotificationRequest, attempts: list[Attempt], plan: DeliveryPlan, version: str, now: datetime
    ) -> None:
        await self.manager.audit.record(build_final_event(nr, plan, now))
        await self._write(nr, build_final_status(attempts, plan, now), version)
        metrics.NOTIFICATIONS_COMPLETED.labels(phase=plan.phase.value).inc()
        log.info("NotificationRequest %s is %s: %s", nr.key, plan.phase.value, plan.message)

    async def _write(self, nr: NotificationRequest, status: dict[str, Any], version: str) -> str:
        return await self._patch(nr.key, status, version)

    async def _patch(self, key: str, status: dict[str, Any], version: str) -> str:
        namespace, name = split_key(key)
        try:
            updated = await patch_status_if_current(
                self.client, NotificationRequestResource, name, namespace, status, resource_version=version
            )
        except (NotFound, Conflict):
            raise StaleViewError from None
        return str(updated["metadata"]["resourceVersion"])

    async def _record(
        self, nr: NotificationRequest, status: dict[str, Any], version: str, attempts: list[Attempt]
    ) -> tuple[str, list[Attempt]]:
        """Record an attempt that already happened (the last of `attempts`): on a conflict, re-read
        and add it to what is there. Returns the new resourceVersion and the recorded attempts."""
        namespace, name = split_key(nr.key)
        attempt = attempts[-1]
        for _ in range(MAX_RECORD_RETRIES):
            try:
                return await self._write(nr, status, version), attempts
            except StaleViewError:
                found = await get_object(self.client, NotificationRequestResource, name, namespace)
                if found is None:
                    raise StaleViewError from None
                fresh = NotificationRequest.from_wire(found)
                attempts = parse_attempts(fresh)
                if not any(a.channel == attempt.channel and a.attempt == attempt.attempt for a in attempts):
                    attempts.append(attempt)
                plan = self._decide(fresh, attempts, self.manager.clock())
                status = build_progress_status(Phase.SENDING, attempts, plan)
                version = fresh.metadata.resource_version
        raise StaleViewError


def _next_number(attempts: list[Attempt], channel: str) -> int:
    return 1 + max((a.attempt for a in attempts if a.channel == channel), default=0)


def setup(manager: Manager) -> None:
    Notifier(manager)
