"""Leader election on a coordination.k8s.io/v1 Lease, with client-go's algorithm.

Every replica tries to acquire the Lease every `retry_period`. The holder renews it at the same
interval; a standby takes it over only when it has seen no change of the Lease for the lease
duration (measured on its own monotonic clock, so clock skew between nodes does not matter). A
leader that cannot renew within `renew_deadline` stops reconciling before any standby may take
over (`renew_deadline < lease_duration`). On a graceful stop the holder clears `holderIdentity`
so that a standby takes over at its next try instead of after the lease duration.

Every write carries the resourceVersion it was decided on: two replicas deciding at once cannot
both win, the second gets 409 Conflict and tries again later.
"""

import asyncio
import contextlib
import logging
import os
import random
import socket
import time
import uuid
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from enum import StrEnum
from typing import Any

from lightkube import AsyncClient
from lightkube.core.exceptions import ApiError
from lightkube.models.meta_v1 import ObjectMeta
from lightkube.resources.coordination_v1 import Lease
from prometheus_client import Gauge

from kubernaut.config import LeaderElectionConfig
from kubernaut.errors import KubernautError

log = logging.getLogger(__name__)

LEADER_GAUGE = Gauge("kubernaut_leader_election_is_leader", "1 while this replica holds the Lease.", ["lease"])
LEADER_TRANSITIONS = Gauge(
    "kubernaut_leader_election_transitions", "leaseTransitions of the Lease as last seen.", ["lease"]
)

# Added to each retry wait (as a fraction of the retry period) so that replicas do not try in lockstep.
JITTER = 0.2
# A release that takes longer is given up: the Lease then expires by itself.
RELEASE_SECONDS = 2.0


@dataclass(frozen=True)
class LeaseRecord:
    """The fields of a Lease spec that leader election reads and writes."""

    holder: str = ""
    lease_duration_seconds: int = 0
    acquire_time: datetime | None = None
    renew_time: datetime | None = None
    transitions: int = 0


class LeaseAction(StrEnum):
    WAIT = "wait"  # someone else holds an unexpired lease
    ACQUIRE = "acquire"  # free or expired: take it (a new transition)
    RENEW = "renew"  # ours: extend it


@dataclass(frozen=True)
class LeaseDecision:
    action: LeaseAction
    record: LeaseRecord | None = None  # what to write, unless WAIT


def parse_lease_record(spec: dict[str, Any] | None) -> LeaseRecord:
    spec = spec or {}
    return LeaseRecord(
        holder=str(spec.get("holderIdentity") or ""),
        lease_duration_seconds=int(spec.get("leaseDurationSeconds") or 0),
        acquire_time=_parse_time(spec.get("acquireTime")),
        renew_time=_parse_time(spec.get("renewTime")),
        transitions=int(spec.get("leaseTransitions") or 0),
    )


def build_lease_spec(record: LeaseRecord) -> dict[str, Any]:
    spec: dict[str, Any] = {
        "holderIdentity": record.holder or None,
        "leaseDurationSeconds": record.lease_duration_seconds,
        "leaseTransitions": record.transitions,
    }
    if record.acquire_time is not None:
        spec["acquireTime"] = _format_micro_time(record.acquire_time)
    if record.renew_time is not None:
        spec["renewTime"] = _format_micro_time(record.renew_time)
    return spec


def decide_lease(
    current: LeaseRecord,
    *,
    identity: str,
    now: datetime,
    unchanged_for: float,
    lease_duration: float,
) -> LeaseDecision:
    """What to do with the Lease as read now.

    `unchanged_for` is how long (seconds, local monotonic clock) this replica has seen exactly this
    record; a foreign holder's lease counts as expired once that reaches the record's duration.
    """
    duration = current.lease_duration_seconds or lease_duration
    ours = current.holder == identity
    if current.holder and not ours and unchanged_for < duration:
        return LeaseDecision(LeaseAction.WAIT)
    seconds = max(1, round(lease_duration))
    if ours:
        return LeaseDecision(LeaseAction.RENEW, replace(current, lease_duration_seconds=seconds, renew_time=now))
    record = LeaseRecord(
        holder=identity,
        lease_duration_seconds=seconds,
        acquire_time=now,
        renew_time=now,
        transitions=current.transitions + 1 if current.holder or current.acquire_time else current.transitions,
    )
    return LeaseDecision(LeaseAction.ACQUIRE, record)


def build_released_record(current: LeaseRecord, now: datetime) -> LeaseRecord:
    """What the holder writes on a graceful stop: no holder, so a standby takes over at its next try."""
    return replace(current, holder="", lease_duration_seconds=1, renew_time=now)


def build_identity(prefix: str | None = None) -> str:
    """`<pod name>_<random>`: unique per process even when a pod restarts with the same name."""
    base = prefix or os.environ.get("POD_NAME") or socket.gethostname()
    return f"{base}_{uuid.uuid4().hex[:8]}"


def build_lease_name(controllers: tuple[str, ...]) -> str:
    return "kubernaut-" + "-".join(controllers or ("manager",))


class LeaderElector:
    """Acquires and renews one Lease; `leading` is set while this replica may reconcile."""

    def __init__(
        self,
        client: AsyncClient,
        *,
        namespace: str,
        name: str,
        identity: str,
        lease_duration: float,
        renew_deadline: float,
        retry_period: float,
    ) -> None:
        if not 0 < retry_period < renew_deadline < lease_duration:
            raise ValueError("need 0 < retry_period < renew_deadline < lease_duration")
        self.client = client
        self.namespace = namespace
        self.name = name
        self.identity = identity
        self.lease_duration = lease_duration
        self.renew_deadline = renew_deadline
        self.retry_period = retry_period
        self.leading = asyncio.Event()
        self.lost = asyncio.Event()
        self._observed: LeaseRecord | None = None
        self._observed_at = 0.0
        self._resource_version: str | None = None
        self._lock = asyncio.Lock()
        LEADER_GAUGE.labels(lease=name).set(0)

    @classmethod
    def from_config(
        cls, client: AsyncClient, config: LeaderElectionConfig, controllers: tuple[str, ...], identity: str
    ) -> "LeaderElector":
        return cls(
            client,
            namespace=config.namespace,
            name=config.lease_name or build_lease_name(controllers),
            identity=identity,
            lease_duration=config.lease_duration.total_seconds(),
            renew_deadline=config.renew_deadline.total_seconds(),
            retry_period=config.retry_period.total_seconds(),
        )

    @property
    def is_leader(self) -> bool:
        return self.leading.is_set()

    async def run(self, stop: asyncio.Event) -> None:
        """Acquire, then renew until `stop` or until leadership is lost (then `lost` is set)."""
        log.info("Waiting to acquire Lease %s/%s as %s", self.namespace, self.name, self.identity)
        while not stop.is_set():
            if await self._attempt(within=self.retry_period + self.renew_deadline):
                break
            await _wait(stop, self.retry_period * (1 + random.uniform(0, JITTER)))
        if stop.is_set():
            return
        self.leading.set()
        LEADER_GAUGE.labels(lease=self.name).set(1)
        log.info("Became leader: Lease %s/%s held by %s", self.namespace, self.name, self.identity)
        renewed_at = time.monotonic()
        while not stop.is_set():
            await _wait(stop, self.retry_period)
            if stop.is_set():
                return
            remaining = self.renew_deadline - (time.monotonic() - renewed_at)
            if remaining > 0 and await self._attempt(within=remaining):
                renewed_at = time.monotonic()
                continue
            if time.monotonic() - renewed_at >= self.renew_deadline:
                self.leading.clear()
                LEADER_GAUGE.labels(lease=self.name).set(0)
                self.lost.set()
                log.error(
                    "Lost leadership: Lease %s/%s not renewed within %.1fs",
                    self.namespace,
                    self.name,
                    self.renew_deadline,
                )
                return

    async def release(self) -> bool:
        """Clear holderIdentity if we still hold the Lease; True when released. Never raises."""
        if not self.leading.is_set():
            return False
        self.leading.clear()
        LEADER_GAUGE.labels(lease=self.name).set(0)
        async with self._lock:
            if self._observed is None or self._observed.holder != self.identity:
                return False
            record = build_released_record(self._observed, _utc_now())
            try:
                await asyncio.wait_for(self._write(record), min(self.renew_deadline, RELEASE_SECONDS))
            except Exception as exc:  # expiry is the fallback
                log.warning("Lease %s/%s not released (it expires by itself): %s", self.namespace, self.name, exc)
                return False
        log.info("Released Lease %s/%s", self.namespace, self.name)
        return True

    async def _attempt(self, within: float) -> bool:
        try:
            return await asyncio.wait_for(self._try_acquire_or_renew(), within)
        except ApiError as exc:
            log.warning("Lease %s/%s: %s", self.namespace, self.name, exc.status.message or exc.status.code)
        except (TimeoutError, OSError) as exc:
            log.warning("Lease %s/%s: API server unreachable: %s", self.namespace, self.name, exc or "timeout")
        except Exception as exc:  # a failed try is a lost try, never a crash
            log.warning("Lease %s/%s: %s", self.namespace, self.name, exc)
        return False

    async def _try_acquire_or_renew(self) -> bool:
        async with self._lock:
            now = _utc_now()
            try:
                lease = await self.client.get(Lease, self.name, namespace=self.namespace)
            except ApiError as exc:
                if exc.status.code != 404:
                    raise
                return await self._create(now)
            current = parse_lease_record(lease.to_dict().get("spec"))
            self._resource_version = lease.metadata.resourceVersion
            if current != self._observed:
                self._observed, self._observed_at = current, time.monotonic()
            LEADER_TRANSITIONS.labels(lease=self.name).set(current.transitions)
            decision = decide_lease(
                current,
                identity=self.identity,
                now=now,
                unchanged_for=time.monotonic() - self._observed_at,
                lease_duration=self.lease_duration,
            )
            if decision.action == LeaseAction.WAIT or decision.record is None:
                return False
            try:
                await self._write(decision.record)
            except ApiError as exc:
                if exc.status.code == 409:
                    return False  # someone else wrote first; decide again on the next try
                raise
            if decision.action == LeaseAction.ACQUIRE:
                previous = current.holder or "none"
                log.info("Acquired Lease %s/%s (previous holder: %s)", self.namespace, self.name, previous)
            return True

    async def _create(self, now: datetime) -> bool:
        record = decide_lease(
            LeaseRecord(), identity=self.identity, now=now, unchanged_for=0.0, lease_duration=self.lease_duration
        ).record
        assert record is not None
        lease = Lease.from_dict(
            {
                "metadata": {"name": self.name, "namespace": self.namespace},
                "spec": build_lease_spec(record),
            }
        )
        try:
            created = await self.client.create(lease)
        except ApiError as exc:
            if exc.status.code == 409:
                return False  # created by another replica a moment ago
            raise
        self._remember(created, record)
        return True

    async def _write(self, record: LeaseRecord) -> None:
        """Replace the Lease spec; the resourceVersion read before deciding is the precondition."""
        lease = Lease.from_dict(
            {
                "metadata": {"name": self.name, "namespace": self.namespace, "resourceVersion": self._resource_version},
                "spec": build_lease_spec(record),
            }
        )
        updated = await self.client.replace(lease)
        self._remember(updated, record)

    def _remember(self, lease: Lease, record: LeaseRecord) -> None:
        meta: ObjectMeta = lease.metadata
        self._resource_version = meta.resourceVersion
        self._observed, self._observed_at = record, time.monotonic()


async def _wait(stop: asyncio.Event, seconds: float) -> None:
    with contextlib.suppress(TimeoutError):
        await asyncio.wait_for(stop.wait(), seconds)


def _utc_now() -> datetime:
    return datetime.now(UTC)


def _parse_time(value: Any) -> datetime | None:
    if isinstance(value, datetime):
        return value
    if not value:
        return None
    try:
        return datetime.fromisoformat(str(value).replace("Z", "+00:00"))
    except ValueError:
        return None


def _format_micro_time(value: datetime) -> str:
    return value.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


class LeadershipLostError(KubernautError):
    """The Lease could not be renewed in time; the process stops so that it restarts as a standby."""
