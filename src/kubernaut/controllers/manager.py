"""One process, several controllers: reflectors (LIST, then WATCH) feed informer caches and work queues.

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

from lightkube import AsyncClient

from kubernaut.audit.store import AuditSink
from kubernaut.config import Settings
from kubernaut.errors import ConfigError
from kubernaut.kube.client import make_client
from kubernaut.kube.leader import RELEASE_SECONDS, LeaderElector, LeadershipLostError, build_identity
from kubernaut.kube.ratelimit import TokenBucket
from kubernaut.kube.reflector import Deliver, Reflector
from kubernaut.kube.runtime import Body, Cache, Controller, IndexFn, Reconciler, Result

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
    resource: Any  # the lightkube resource class
    namespaced: bool = True  # False: one cluster-wide watch
    # The one namespace this kind is watched in, from the settings (None: the manager's namespaces).
    namespace_of: Callable[[Settings], str] | None = None
    label_selector: str | None = None  # only objects matching it are listed and watched
    optional: bool = False  # True: a cluster that does not serve the kind has none of it (no Tekton)

    def scopes(self, settings: Settings, namespaces: tuple[str, ...]) -> tuple[str | None, ...]:
        """The namespaces to watch, one reflector each (None: cluster-scoped, or every namespace)."""
        if not self.namespaced:
            return (None,)
        if self.namespace_of is not None:
            return (self.namespace_of(settings),)
        return namespaces or (None,)


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


@dataclass
class Manager:
    """Owns the API client, the caches with their reflectors and the controllers of one process."""

    client: AsyncClient
    settings: Settings
    audit: AuditSink
    clock: Clock = utc_now
    namespaces: tuple[str, ...] = ()  # empty: every namespace
    caches: dict[str, Cache] = field(default_factory=dict)
    controllers: list[Controller] = field(default_factory=list)
    reflectors: list[Reflector] = field(default_factory=list)  # made by the first `prime`
    _kinds: dict[str, Kind] = field(default_factory=dict)
    _extra_tasks: list[Callable[[asyncio.Event], Any]] = field(default_factory=list)
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
        cache = self.caches[kind.plural]
        for name, fn in (indexes or {}).items():
            cache.add_index(name, fn)
        return cache

    def on_event(self, kind: Kind, handler: EventHandler) -> None:
        """Called with (event type, new body, old body) after the cache is updated."""
        self.cache(kind)
        self.cache(kind).listen(handler)

    def add_controller(self, controller: Controller) -> Controller:
        """Register a controller; one that says which objects are `finished` resyncs the others every
        `manager.resyncPeriod` (unless it set a period of its own)."""
        controller.reconcile = self.in_flight.guard(controller.reconcile)
        if controller.resync_period is None:
            controller.resync_period = self.settings.manager.resync_period.total_seconds()
        self.controllers.append(controller)
        return controller

    @property
    def leading(self) -> bool:
        return self.leader is None or self.leader.is_leader

    def add_task(self, task: Callable[[asyncio.Event], Any]) -> None:
        self._extra_tasks.append(task)

    def dispatch(self, plural: str, event_type: str | None, body: Body) -> None:
        self.caches[plural].apply(event_type, body)

    def _deliver_to(self, plural: str) -> Deliver:
        # `dispatch` is looked up at each event, so that tests can wrap it.
        def deliver(event_type: str | None, body: Body) -> None:
            self.dispatch(plural, event_type, body)

        return deliver

    def _reflectors(self) -> list[Reflector]:
        if not self.reflectors:
            for plural, kind in self._kinds.items():
                for namespace in kind.scopes(self.settings, self.namespaces):
                    self.reflectors.append(
                        Reflector(
                            self.client,
                            kind.resource,
                            self.caches[plural],
                            namespace=namespace,
                            label_selector=kind.label_selector,
                            deliver=self._deliver_to(plural),
                            name=f"{plural} in {namespace or 'all namespaces'}" if kind.namespaced else plural,
                            plural=plural,
                            optional=kind.optional,
                        )
                    )
        return self.reflectors

    async def prime(self) -> None:
        """LIST every kind into its cache (replacing what it held) before workers start, so that no
        decision sees a cold cache; the watches then start from these lists' versions."""
        for reflector in self._reflectors():
            await reflector.prime()
        for cache in self.caches.values():
            cache.synced.set()

    async def run(self, stop: asyncio.Event, ready: asyncio.Event | None = None) -> None:
        """Watch and reconcile until `stop` (or lost leadership). Cancelling this task instead
        abandons everything at once, as a crash would, and leaves the Lease to expire."""
        priming = asyncio.create_task(self.prime(), name="prime")
        await _first(priming, stop.wait())
        if not priming.done():  # stopped while the API server could not list yet
            priming.cancel()
            await asyncio.gather(priming, return_exceptions=True)
            return
        priming.result()
        watches = [asyncio.create_task(r.run(), name=f"watch-{r.name}") for r in self.reflectors]
        extra = [asyncio.create_task(t(stop)) for t in self._extra_tasks]
        elector_stop, workers_stop = asyncio.Event(), asyncio.Event()
        elector = asyncio.create_task(self.leader.run(elector_stop), name="leader-election") if self.leader else None
        workers: list[asyncio.Task[None]] = []
        graceful = False
        try:
            if ready is not None:
                ready.set()
            if self.leader is not None and elector is not None:
                await _first(*watches, elector, stop.wait(), self.leader.leading.wait())
            if self.leading and not stop.is_set() and not any(w.done() for w in watches):
                workers = [
                    asyncio.create_task(c.run(workers_stop), name=f"controller-{c.name}") for c in self.controllers
                ]
            leadership = [elector, self.leader.lost.wait()] if elector and self.leader else []
            # A watch ends only on a bug: better to stop than to reconcile on a cache that no longer follows.
            await _first(*watches, stop.wait(), *leadership)
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
            await _stop_watches(watches, self.watch_stop_timeout)


async def _stop_watches(watches: "list[asyncio.Task[None]]", within: float) -> None:
    """The caches follow the API server until the workers and the Lease are done with; a watch that
    does not end on cancellation (say, stuck on a dead connection) is abandoned."""
    for task in watches:
        task.cancel()
    if watches:
        _, pending = await asyncio.wait(watches, timeout=within)
        if pending:
            log.warning("Stopping: %d watch(es) did not stop within %.1fs; abandoning them", len(pending), within)
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


def build_manager(
    settings: Settings,
    *,
    kubeconfig: Path | None,
    controllers: tuple[str, ...],
    audit: AuditSink,
    clock: Clock = utc_now,
) -> Manager:
    bucket = TokenBucket(settings.client.qps, settings.client.burst)
    manager = Manager(client=make_client(kubeconfig, rate_limit=bucket), settings=settings, audit=audit, clock=clock)
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
    from kubernaut.gateway.server import GatewayServer
    from kubernaut.metrics import start_metrics_server
    from kubernaut.webhook.server import AdmissionServer

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

    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, on_signal, sig)
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
                intake = GatewayServer(
                    manager.client,
                    settings.gateway,
                    dry_run_hold=settings.dry_run.hold_period,
                    slack_signing_secret_ref=settings.notifier.slack.signing_secret_ref,
                    slack_approvers=settings.approval.slack_approvers,
                )
                await intake.start()
                stack.push_async_callback(intake.stop)
            log.info("Starting controllers: %s", ", ".join(controllers) or "none")
            await manager.run(stop, ready)
    if manager.lost_leadership:
        raise LeadershipLostError(f"lost the Lease {manager.leader.name if manager.leader else ''}; exiting")


def _split_address(address: str) -> tuple[str, int]:
    host, _, port = address.rpartition(":")
    return host.strip("[]") or "0.0.0.0", int(port)
