"""One process, several controllers: kopf watches feed informer caches and work queues.

With a leader elector the caches are filled and kept on every replica, but the controllers' workers
run only while this replica holds the Lease. A graceful stop takes no new work, gives reconciles in
flight `drain_timeout` seconds, releases the Lease and only then stops the watches.
"""

import asyncio
import contextlib
import importlib
import logging
import os
import signal
import ssl
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import kopf
from lightkube import AsyncClient
from lightkube.core.exceptions import ApiError

from kubernaut.audit.store import AuditSink
from kubernaut.config import Settings
from kubernaut.controllers.leader import RELEASE_SECONDS, LeaderElector, LeadershipLostError, build_identity
from kubernaut.errors import ConfigError
from kubernaut.kube.client import make_client
from kubernaut.kube.kubeconfig import read_connection
from kubernaut.kube.runtime import Body, Cache, Controller, IndexFn, Reconciler, Result, object_key

log = logging.getLogger(__name__)

Clock = Callable[[], datetime]
EventHandler = Callable[[str, Body, Body | None], None]


def utc_now() -> datetime:
    return datetime.now(UTC)


@dataclass(frozen=True)
class Kind:
    group: str
    version: str
    plural: str
    resource: Any  # the lightkube resource class, for the initial list
    namespaced: bool = True
    # The one namespace this kind is watched in, from the settings (None: the manager's namespaces).
    # kopf watches every kind in the same namespaces, so such a kind has a watch of its own.
    namespace_of: Callable[[Settings], str] | None = None


class InFlight:
    """Counts reconciles in progress; once closed, new ones are skipped (the process is stopping)."""

    def __init__(self) -> None:
        self.open = True
        self.count = 0
        self._idle = asyncio.Event()
        self._idle.set()

    def guard(self, reconcile: Reconciler) -> Reconciler:
        async def guarded(key: str) -> Result:
            if not self.open:
                return Result.done()  # stopping: the next start lists every object again
            self.count += 1
            self._idle.clear()
            try:
                return await reconcile(key)
            finally:
                self.count -= 1
                if self.count == 0:
                    self._idle.set()

        return guarded

    async def drain(self, within: float) -> int:
        """Close, then wait up to `within` seconds for the reconciles in flight; returns how many remain."""
        self.open = False
        if self.count and within > 0:
            log.info("Stopping: waiting up to %.1fs for %d reconcile(s) in flight", within, self.count)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._idle.wait(), within)
        if self.count:
            log.warning("Stopping: abandoning %d reconcile(s) in flight; they are picked up again at start", self.count)
        return self.count


class NoDiffBase(kopf.DiffBaseStorage):
    """kopf builds a deep copy of every body on every event to diff it for change handlers; the
    controllers only watch events (decision 0001), so that diff is never used: build nothing."""

    def build(self, *, body: Any, extra_fields: Any = None) -> Any:
        return {}

    def fetch(self, *, body: Any) -> Any:
        return None

    def store(self, *, body: Any, patch: Any, essence: Any) -> None:
        return None


@dataclass
class Manager:
    """Owns the API client, the kopf registry, the caches and the controllers of one process."""

    client: AsyncClient
    settings: Settings
    audit: AuditSink
    clock: Clock = utc_now
    namespaces: tuple[str, ...] = ()  # empty: every namespace
    registry: kopf.OperatorRegistry = field(default_factory=kopf.OperatorRegistry)
    caches: dict[str, Cache] = field(default_factory=dict)
    controllers: list[Controller] = field(default_factory=list)
    _kinds: dict[str, Kind] = field(default_factory=dict)
    _extra_tasks: list[Callable[[asyncio.Event], Any]] = field(default_factory=list)
    _scoped: dict[str, str] = field(default_factory=dict)  # plural -> the one namespace it is watched in
    _listed: dict[str, str | None] = field(default_factory=dict)  # plural -> resourceVersion of its last LIST
    leader: LeaderElector | None = None
    drain_timeout: float = 0.0
    lost_leadership: bool = False
    watch_stop_timeout: float = 10.0
    in_flight: InFlight = field(default_factory=InFlight)

    def cache(self, kind: Kind, indexes: dict[str, IndexFn] | None = None) -> Cache:
        """The shared cache of a kind (created, watched and listed once per process)."""
        if kind.plural not in self.caches:
            self.caches[kind.plural] = Cache()
            self._kinds[kind.plural] = kind
            self._register_watch(kind)
        cache = self.caches[kind.plural]
        for name, fn in (indexes or {}).items():
            cache.add_index(name, fn)
        return cache

    def on_event(self, kind: Kind, handler: EventHandler) -> None:
        """Called with (event type, new body, old body) after the cache is updated."""
        self.cache(kind)
        self.cache(kind).listen(handler)

    def add_controller(self, controller: Controller) -> Controller:
        controller.reconcile = self.in_flight.guard(controller.reconcile)
        self.controllers.append(controller)
        return controller

    @property
    def leading(self) -> bool:
        return self.leader is None or self.leader.is_leader

    def add_task(self, task: Callable[[asyncio.Event], Any]) -> None:
        self._extra_tasks.append(task)

    def _register_watch(self, kind: Kind) -> None:
        if kind.namespace_of is not None:
            self._scoped[kind.plural] = kind.namespace_of(self.settings)
            return  # watched by _watch_scoped, not by kopf

        async def on_event(event: kopf.RawEvent, **_: Any) -> None:
            self.dispatch(kind.plural, event.get("type"), dict(event["object"]))

        kopf.on.event(kind.group, kind.version, kind.plural, registry=self.registry)(on_event)

    def dispatch(self, plural: str, event_type: str | None, body: Body) -> None:
        self.caches[plural].apply(event_type, body)

    async def prime(self) -> None:
        """Fill every cache with a LIST before workers start, so no decision sees a cold cache."""
        for plural, kind in self._kinds.items():
            if plural in self._scoped:
                self._listed[plural] = await self._list_scoped(kind, self._scoped[plural])
                self.caches[plural].synced.set()
                continue
            for namespace in self.namespaces if kind.namespaced and self.namespaces else ("*",):
                async for obj in self.client.list(
                    kind.resource, **({"namespace": namespace} if kind.namespaced else {})
                ):
                    self.dispatch(plural, None, _to_dict(obj))
            self.caches[plural].synced.set()

    async def _list_scoped(self, kind: Kind, namespace: str) -> str | None:
        """LIST a kind in its namespace into the cache, forgetting cached objects the list no longer
        has; returns the list's resourceVersion (None if the server gave none)."""
        listing = self.client.list(kind.resource, namespace=namespace)
        listed: set[str] = set()
        async for obj in listing:
            body = _to_dict(obj)
            listed.add(object_key(body))
            self.dispatch(kind.plural, None, body)
        try:
            version: str | None = str(listing.resourceVersion)
        except Exception:  # lightkube's NotReadyError: no page was read
            version = None
        for body in self.caches[kind.plural].all():
            meta = body.get("metadata") or {}
            # Only what the list must have seen: a newer object (our own create) is not gone.
            if meta.get("namespace") == namespace and object_key(body) not in listed and _not_after(body, version):
                self.dispatch(kind.plural, "DELETED", body)
        return version

    async def _watch_scoped(self, kind: Kind, namespace: str) -> None:
        """Watch one kind in its one namespace from the priming LIST on; after a watch error it
        resumes from the last version seen, and lists again when that version is too old."""
        version = self._listed.get(kind.plural)
        failures = 0
        while True:
            try:
                if version is None:
                    version = await self._list_scoped(kind, namespace)
                async for event_type, obj in self.client.watch(
                    kind.resource, namespace=namespace, resource_version=version
                ):
                    body = _to_dict(obj)
                    version = str((body.get("metadata") or {}).get("resourceVersion") or version)
                    failures = 0
                    self.dispatch(kind.plural, event_type, body)
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                if isinstance(exc, ApiError) and exc.status.code == 410:
                    log.debug("Watch of %s in %s expired; listing again", kind.plural, namespace)
                    version = None
                    continue
                failures += 1
                delay = WATCH_BACKOFFS[min(failures, len(WATCH_BACKOFFS)) - 1]
                log.warning("Watch of %s in %s failed (retry in %.1fs): %s", kind.plural, namespace, delay, exc)
                await asyncio.sleep(delay)

    async def run(self, stop: asyncio.Event, ready: asyncio.Event | None = None) -> None:
        """Watch and reconcile until `stop` (or lost leadership). Cancelling this task instead
        abandons everything at once, as a crash would, and leaves the Lease to expire."""
        await self.prime()
        kopf_stop, kopf_ready = asyncio.Event(), asyncio.Event()
        settings = kopf.OperatorSettings()
        settings.posting.enabled = False
        settings.peering.standalone = True
        settings.scanning.disabled = True
        settings.watching.reconnect_backoff = 0.5
        settings.persistence.diffbase_storage = NoDiffBase()
        # kopf keeps a worker (and the last event's body) per object until it has been idle this long;
        # its initial listing of a long history would otherwise hold a second copy of every object.
        settings.queueing.idle_timeout = 0.5
        settings.networking.error_backoffs = [0.5, 1, 2, 5]
        # kopf gets its own stop flag, raised last: when kopf stops it cancels every task started after
        # it, so it must not stop before the workers have drained and the Lease is released.
        operator = asyncio.create_task(
            kopf.operator(
                registry=self.registry,
                settings=settings,
                clusterwide=not self.namespaces,
                namespaces=self.namespaces,
                stop_flag=kopf_stop,
                ready_flag=kopf_ready,
                standalone=True,
            ),
            name="kopf",
        )
        watches = [
            asyncio.create_task(self._watch_scoped(self._kinds[plural], namespace), name=f"watch-{plural}")
            for plural, namespace in self._scoped.items()
        ]
        extra = [asyncio.create_task(t(stop)) for t in self._extra_tasks]
        elector_stop, workers_stop = asyncio.Event(), asyncio.Event()
        elector = asyncio.create_task(self.leader.run(elector_stop), name="leader-election") if self.leader else None
        workers: list[asyncio.Task[None]] = []
        graceful = False
        try:
            await _first(operator, kopf_ready.wait())
            if ready is not None:
                ready.set()
            if self.leader is not None and elector is not None:
                await _first(operator, elector, stop.wait(), self.leader.leading.wait())
            if self.leading and not stop.is_set() and not operator.done():
                workers = [
                    asyncio.create_task(c.run(workers_stop), name=f"controller-{c.name}") for c in self.controllers
                ]
            leadership = [elector, self.leader.lost.wait()] if elector and self.leader else []
            await _first(operator, stop.wait(), *leadership)
            graceful = True
        finally:
            # An elector that ended before being told to is as good as a lost Lease.
            self.lost_leadership = self.leader is not None and (
                self.leader.lost.is_set() or (elector is not None and elector.done() and not elector_stop.is_set())
            )
            stop.set()
            if graceful and not self.lost_leadership:
                await self.in_flight.drain(self.drain_timeout)
            self.in_flight.open = False
            workers_stop.set()
            for task in workers:
                task.cancel()
            await asyncio.gather(*workers, return_exceptions=True)
            elector_stop.set()
            if elector is not None:
                if not graceful:
                    elector.cancel()
                await asyncio.gather(elector, return_exceptions=True)
            log.debug("Stopping: workers stopped")
            if self.leader is not None and graceful:
                await self.leader.release()
            for task in extra:
                task.cancel()
            await asyncio.gather(*extra, return_exceptions=True)
            kopf_stop.set()
            for task in watches:
                task.cancel()
            await asyncio.gather(*watches, return_exceptions=True)
            await _stop_operator(operator, self.watch_stop_timeout)


async def _stop_operator(operator: "asyncio.Task[Any]", within: float) -> None:
    """kopf stops its watches on its stop flag; one that hangs (say, on a dead API server) is abandoned."""
    done, _ = await asyncio.wait({operator}, timeout=within)
    if not done:
        log.warning("Stopping: the watches did not stop within %.1fs; abandoning them", within)
        operator.cancel()
        done, _ = await asyncio.wait({operator}, timeout=1.0)
    if done and not operator.cancelled() and operator.exception() is not None:
        log.debug("Stopping: kopf ended with %r", operator.exception())
    log.debug("Stopping: watches stopped")


async def _first(*waitables: "asyncio.Task[Any] | Awaitable[Any]") -> None:
    """Wait until the first of these is done; waiters made here are cancelled, given tasks are not."""
    own = [asyncio.ensure_future(w) for w in waitables if not isinstance(w, asyncio.Task)]
    given = [w for w in waitables if isinstance(w, asyncio.Task)]
    try:
        await asyncio.wait([*own, *given], return_when=asyncio.FIRST_COMPLETED)
    finally:
        for future in own:
            future.cancel()


def _to_dict(obj: Any) -> Body:
    return obj.to_dict() if hasattr(obj, "to_dict") else dict(obj)


WATCH_BACKOFFS = (0.5, 1.0, 2.0, 5.0)  # as kopf's networking.error_backoffs


def _not_after(body: Body, version: str | None) -> bool:
    """Whether the object's resourceVersion is not newer than `version` (unknown: assume newer)."""
    try:
        return int((body.get("metadata") or {})["resourceVersion"]) <= int(version or "")
    except (KeyError, ValueError, TypeError):
        return False


def register_login(registry: kopf.OperatorRegistry, kubeconfig: Path | None) -> None:
    """kopf authenticates with the same kubeconfig as our own client (or in-cluster)."""

    @kopf.on.login(registry=registry)
    def login(**kwargs: Any) -> kopf.ConnectionInfo | None:
        if kubeconfig is None:
            return kopf.login_with_service_account(**kwargs) or kopf.login_with_kubeconfig(**kwargs)
        conn = read_connection(kubeconfig)
        return kopf.ConnectionInfo(
            server=conn.server,
            ca_data=conn.ca_data,
            certificate_data=conn.certificate_data,
            private_key_data=conn.private_key_data,
            token=conn.token,
            insecure=conn.insecure,
            scheme="Bearer" if conn.token else None,
            default_namespace=conn.namespace,
        )


def build_manager(
    settings: Settings,
    *,
    kubeconfig: Path | None,
    controllers: tuple[str, ...],
    audit: AuditSink,
    clock: Clock = utc_now,
) -> Manager:
    manager = Manager(client=make_client(kubeconfig), settings=settings, audit=audit, clock=clock)
    register_login(manager.registry, kubeconfig)
    for name in controllers:
        try:
            module = importlib.import_module(f"kubernaut.controllers.{name}")
        except ModuleNotFoundError:
            log.warning("Controller %s is not part of this build yet; skipping it", name)
            continue
        module.setup(manager)
    return manager


# After the drain, a stop spends at most RELEASE_SECONDS on the Lease and WATCH_STOP_SECONDS on the
# watches, then the audit close timeout on the flush; the reserve keeps a second to spare.
WATCH_STOP_SECONDS = 2.0
SHUTDOWN_RESERVE_SECONDS = RELEASE_SECONDS + WATCH_STOP_SECONDS + 1.0


def compute_drain_timeout(grace: float, audit_close: float) -> float:
    """How long reconciles in flight may finish: the grace period minus the audit flush and the reserve
    for releasing the Lease and stopping the watches."""
    return max(0.0, grace - audit_close - SHUTDOWN_RESERVE_SECONDS)


def _exit_after_grace(grace: float) -> None:
    """The last resort of a graceful stop that did not finish in time: whatever is left is abandoned."""
    log.error("Shutdown did not finish within the %.0fs grace period; exiting now", grace)
    logging.shutdown()
    os._exit(1)


async def run_manager(
    settings: Settings,
    *,
    kubeconfig: Path | None,
    controllers: tuple[str, ...],
    stop: asyncio.Event | None = None,
    identity: str | None = None,
) -> None:
    """The controllers of `kubernaut run`, with probes and metrics, leader election, the admission
    webhook and a graceful stop on SIGTERM/SIGINT bounded by the shutdown grace period.

    `gateway` among the controllers serves the Alertmanager intake; like the webhook it serves on
    every replica, leader or not."""
    from kubernaut.audit.factory import open_audit_sink
    from kubernaut.controllers.webhook import AdmissionServer
    from kubernaut.gateway.server import GatewayServer
    from kubernaut.metrics import start_metrics_server

    gateway = "gateway" in controllers
    controllers = tuple(name for name in controllers if name != "gateway")
    config = settings.manager
    grace = config.shutdown_grace_period.total_seconds()
    stop = stop or asyncio.Event()
    loop = asyncio.get_running_loop()

    def on_signal(signum: int) -> None:
        if not stop.is_set():
            log.info("Received %s: stopping within %.0fs", signal.Signals(signum).name, grace)
            loop.call_later(grace, _exit_after_grace, grace)
        stop.set()

    def install_signal_handlers() -> None:
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, on_signal, sig)

    async def reclaim_signals(ready: asyncio.Event) -> None:
        # kopf installs its own handlers when it starts; ours must win so that a signal drains first.
        await ready.wait()
        install_signal_handlers()

    install_signal_handlers()
    async with open_audit_sink(settings.audit) as audit:
        manager = build_manager(settings, kubeconfig=kubeconfig, controllers=controllers, audit=audit)
        manager.drain_timeout = compute_drain_timeout(grace, settings.audit.close_timeout.total_seconds())
        manager.watch_stop_timeout = WATCH_STOP_SECONDS
        if config.leader_election.enabled and controllers:  # the gateway alone serves on every replica
            manager.leader = LeaderElector.from_config(
                manager.client, config.leader_election, controllers, identity or build_identity()
            )
        ready = asyncio.Event()
        async with contextlib.AsyncExitStack() as stack:
            stack.push_async_callback(manager.client.close)
            if config.metrics_address:
                host, port = _split_address(config.metrics_address)
                try:
                    runner, _ = await start_metrics_server(host, port, ready.is_set)
                except OSError as exc:
                    raise ConfigError(f"manager.metricsAddress {config.metrics_address}: {exc.strerror}") from None
                stack.push_async_callback(runner.cleanup)
            if config.admission_webhook.address:
                webhook = AdmissionServer.from_config(config.admission_webhook)
                try:
                    await webhook.start()
                except (OSError, ssl.SSLError) as exc:
                    where = (
                        f"{config.admission_webhook.address} with certificates from {config.admission_webhook.cert_dir}"
                    )
                    raise ConfigError(f"cannot serve the admission webhook on {where}: {exc}") from None
                stack.push_async_callback(webhook.stop)
            if gateway:
                intake = GatewayServer(manager.client, settings.gateway)
                await intake.start()
                stack.push_async_callback(intake.stop)
            reclaim = asyncio.create_task(reclaim_signals(ready), name="reclaim-signals")
            log.info("Starting controllers: %s", ", ".join(controllers) or "none")
            try:
                await manager.run(stop, ready)
            finally:
                reclaim.cancel()
    if manager.lost_leadership:
        raise LeadershipLostError(f"lost the Lease {manager.leader.name if manager.leader else ''}; exiting")


def _split_address(address: str) -> tuple[str, int]:
    host, _, port = address.rpartition(":")
    return host.strip("[]") or "0.0.0.0", int(port)
