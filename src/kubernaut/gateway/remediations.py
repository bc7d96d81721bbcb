"""Signals into RemediationRequests: create one per firing episode, fold repeats into it.

Correctness does not rest on this process's memory: the request name is derived from the
fingerprint and the alert's start (a second creation is AlreadyExists), and every count update is
a status patch with a resourceVersion precondition (a stale view is a 409, re-read, re-applied).
The per-fingerprint lock and the small cache of the latest body only save round-trips.
"""

import asyncio
import contextlib
import logging
from collections import OrderedDict
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from lightkube import AsyncClient

from kubernaut.api.v1alpha1.remediationrequest import TERMINAL_PHASES
from kubernaut.domain.dryrun import HOLD_PERIOD, is_held
from kubernaut.domain.signals import (
    Signal,
    build_deduplication_status,
    build_first_deduplication,
    build_remediation_name,
    build_remediation_request,
    build_resolved_patch,
    decide_deduplication,
    is_late_notice,
    parse_time,
)
from kubernaut.kube.api import create_idempotent, get_object, kube_errors, patch_if_current, patch_status_if_current
from kubernaut.kube.errors import Conflict, NotFound
from kubernaut.kube.resources import RemediationRequestResource

log = logging.getLogger(__name__)

Body = dict[str, Any]
MAX_CONFLICT_RETRIES = 10
MAX_GENERATIONS = 50
CACHE_SIZE = 10_000
_TERMINAL = frozenset(str(phase) for phase in TERMINAL_PHASES)


@dataclass(frozen=True)
class IntakeOutcome:
    action: str  # "created" | "deduplicated" | "resolved" | "ignored"
    name: str = ""


def _to_dict(obj: Any) -> Body:
    return obj.to_dict() if hasattr(obj, "to_dict") else dict(obj)


def is_active(body: Body) -> bool:
    """Non-terminal and not being deleted: repeats of its signal are folded into it."""
    if body.get("metadata", {}).get("deletionTimestamp"):
        return False
    return (body.get("status") or {}).get("overallPhase") not in _TERMINAL


def _created_at(body: Body) -> datetime | None:
    value = body.get("metadata", {}).get("creationTimestamp")
    if isinstance(value, str):
        with contextlib.suppress(ValueError):
            return parse_time(value)
    return None


class RemediationIntake:
    """Records signals as RemediationRequests in one namespace."""

    def __init__(
        self,
        client: AsyncClient,
        namespace: str,
        clock: Callable[[], datetime],
        dry_run_hold: timedelta = HOLD_PERIOD,
    ) -> None:
        self._client = client
        self._namespace = namespace
        self._clock = clock
        self._dry_run_hold = dry_run_hold
        self._locks: dict[str, tuple[asyncio.Lock, list[int]]] = {}
        self._latest: OrderedDict[str, Body] = OrderedDict()

    @contextlib.asynccontextmanager
    async def _locked(self, fingerprint: str) -> AsyncIterator[None]:
        lock, users = self._locks.setdefault(fingerprint, (asyncio.Lock(), [0]))
        users[0] += 1
        try:
            async with lock:
                yield
        finally:
            users[0] -= 1
            if users[0] == 0:
                self._locks.pop(fingerprint, None)

    def _remember(self, fingerprint: str, body: Body) -> None:
        self._latest[fingerprint] = body
        self._latest.move_to_end(fingerprint)
        while len(self._latest) > CACHE_SIZE:
            self._latest.popitem(last=False)

    async def record_firing(self, signal: Signal) -> IntakeOutcome:
        async with self._locked(signal.fingerprint):
            for _ in range(MAX_CONFLICT_RETRIES):
                active = await self._find_active(signal.fingerprint)
                if active is not None:
                    if await self._deduplicate(signal, active):
                        return IntakeOutcome("deduplicated", active["metadata"]["name"])
                    self._latest.pop(signal.fingerprint, None)
                    continue
                outcome = await self._create(signal)
                if outcome is not None:
                    return outcome
            raise RuntimeError(f"signal {signal.fingerprint[:16]}: gave up after {MAX_CONFLICT_RETRIES} conflicts")

    async def record_resolved(self, signal: Signal) -> IntakeOutcome:
        """Annotate the signal's request (the active one, else the newest); never create one."""
        async with self._locked(signal.fingerprint):
            bodies = await self._list(signal.fingerprint)
            if not bodies:
                return IntakeOutcome("ignored")
            active = [b for b in bodies if is_active(b)]
            chosen = active[0] if active else bodies[-1]
            name = chosen["metadata"]["name"]
            try:
                await patch_if_current(
                    self._client,
                    RemediationRequestResource,
                    name,
                    self._namespace,
                    build_resolved_patch(signal, self._clock(), (chosen.get("status") or {}).get("deduplication")),
                    resource_version=None,  # an annotation of its own: whatever changed meanwhile does not matter
                )
            except NotFound:
                return IntakeOutcome("ignored")
            self._latest.pop(signal.fingerprint, None)  # its resourceVersion moved on
            log.info("Recorded resolution of signal %s on RemediationRequest %s/%s", signal.name, self._namespace, name)
            return IntakeOutcome("resolved", name)

    async def _list(self, fingerprint: str) -> list[Body]:
        """Every request of the fingerprint, oldest first (a LIST by the selectable field)."""
        with kube_errors():
            bodies = [
                _to_dict(obj)
                async for obj in self._client.list(
                    RemediationRequestResource,
                    namespace=self._namespace,
                    fields={"spec.signalFingerprint": fingerprint},
                )
            ]
        bodies.sort(key=lambda b: (b["metadata"].get("creationTimestamp") or "", b["metadata"]["name"]))
        return bodies

    def _folds(self, body: Body) -> bool:
        """Repeats fold into an active request, and into a dry run within its hold period."""
        return is_active(body) or (
            not body.get("metadata", {}).get("deletionTimestamp") and is_held(body, self._clock(), self._dry_run_hold)
        )

    async def _find_active(self, fingerprint: str) -> Body | None:
        cached = self._latest.get(fingerprint)
        if cached is not None:
            return cached
        active = [b for b in await self._list(fingerprint) if self._folds(b)]
        return active[0] if active else None

    async def _deduplicate(self, signal: Signal, body: Body) -> bool:
        """One more occurrence on `body`; False when it is gone or no longer active."""
        name = body["metadata"]["name"]
        for _ in range(MAX_CONFLICT_RETRIES):
            if not self._folds(body):
                return False
            if is_late_notice(body["metadata"].get("annotations") or {}, signal.starts_at):
                log.debug("Late firing notice of a resolved alert on RemediationRequest %s/%s", self._namespace, name)
                return True
            status = body.get("status") or {}
            dedup = decide_deduplication(status.get("deduplication"), _created_at(body), self._clock())
            try:
                updated = await patch_status_if_current(
                    self._client,
                    RemediationRequestResource,
                    name,
                    self._namespace,
                    build_deduplication_status(dedup),
                    resource_version=body["metadata"]["resourceVersion"],
                )
            except NotFound:
                return False
            except Conflict:
                fresh = await self._get(name)
                if fresh is None:
                    return False
                body = fresh
                continue
            self._remember(signal.fingerprint, updated)
            log.debug("Deduplicated signal into RemediationRequest %s/%s", self._namespace, name)
            return True
        raise RuntimeError(f"RemediationRequest {name}: gave up after {MAX_CONFLICT_RETRIES} conflicts")

    async def _get(self, name: str) -> Body | None:
        return await get_object(self._client, RemediationRequestResource, name, self._namespace)

    async def _create(self, signal: Signal) -> IntakeOutcome | None:
        """Create the episode's request; a taken name is a concurrent delivery (fold into it) or
        an ended request of the same episode (try the next generation). None: start over."""
        for generation in range(1, MAX_GENERATIONS + 1):
            name = build_remediation_name(signal.fingerprint, signal.starts_at, generation)
            body = build_remediation_request(signal, name=name, namespace=self._namespace)
            created, new = await create_idempotent(self._client, RemediationRequestResource(body))
            if not new:  # taken: `created` is the request holding the name
                if self._folds(created):
                    if await self._deduplicate(signal, created):
                        return IntakeOutcome("deduplicated", name)
                    return None
                continue
            await self._write_first_count(signal.fingerprint, created)
            log.info(
                "Created RemediationRequest %s/%s for signal %s on %s/%s",
                self._namespace,
                name,
                signal.name,
                signal.target.kind,
                signal.target.name,
            )
            return IntakeOutcome("created", name)
        raise RuntimeError(f"signal {signal.fingerprint[:16]}: {MAX_GENERATIONS} ended requests share its episode")

    async def _write_first_count(self, fingerprint: str, body: Body) -> None:
        """occurrenceCount 1 on a new request, unless a concurrent arrival has already counted."""
        name = body["metadata"]["name"]
        for _ in range(MAX_CONFLICT_RETRIES):
            if (body.get("status") or {}).get("deduplication"):
                self._remember(fingerprint, body)
                return
            try:
                updated = await patch_status_if_current(
                    self._client,
                    RemediationRequestResource,
                    name,
                    self._namespace,
                    build_deduplication_status(build_first_deduplication(self._clock())),
                    resource_version=body["metadata"]["resourceVersion"],
                )
            except (NotFound, Conflict):
                fresh = await self._get(name)
                if fresh is None:
                    return
                body = fresh
                continue
            self._remember(fingerprint, updated)
            return
