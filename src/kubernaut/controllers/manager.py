"""One process, several controllers: kopf watches feed informer caches and work queues."""

import asyncio
import contextlib
import importlib
import logging
import signal
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import kopf
from lightkube import AsyncClient

from kubernaut.audit.store import AuditSink
from kubernaut.config import Settings
from kubernaut.kube.client import make_client
from kubernaut.kube.kubeconfig import read_connection
from kubernaut.kube.runtime import Body, Cache, Controller, IndexFn

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
        self.controllers.append(controller)
        return controller

    def add_task(self, task: Callable[[asyncio.Event], Any]) -> None:
        self._extra_tasks.append(task)

    def _register_watch(self, kind: Kind) -> None:
        async def on_event(event: kopf.RawEvent, **_: Any) -> None:
            self.dispatch(kind.plural, event.get("type"), dict(event["object"]))

        kopf.on.event(kind.group, kind.version, kind.plural, registry=self.registry)(on_event)

    def dispatch(self, plural: str, event_type: str | None, body: Body) -> None:
        self.caches[plural].apply(event_type, body)

    async def prime(self) -> None:
        """Fill every cache with a LIST before workers start, so no decision sees a cold cache."""
        for plural, kind in self._kinds.items():
            for namespace in self.namespaces if kind.namespaced and self.namespaces else ("*",):
                async for obj in self.client.list(
                    kind.resource, **({"namespace": namespace} if kind.namespaced else {})
                ):
                    self.dispatch(plural, None, _to_dict(obj))
            self.caches[plural].synced.set()

    async def run(self, stop: asyncio.Event, ready: asyncio.Event | None = None) -> None:
        await self.prime()
        kopf_ready = asyncio.Event()
        settings = kopf.OperatorSettings()
        settings.posting.enabled = False
        settings.peering.standalone = True
        settings.scanning.disabled = True
        settings.watching.reconnect_backoff = 0.5
        settings.networking.error_backoffs = [0.5, 1, 2, 5]
        operator = asyncio.create_task(
            kopf.operator(
                registry=self.registry,
                settings=settings,
                clusterwide=not self.namespaces,
                namespaces=self.namespaces,
                stop_flag=stop,
                ready_flag=kopf_ready,
                standalone=True,
            ),
            name="kopf",
        )
        tasks = [asyncio.create_task(c.run(stop), name=f"controller-{c.name}") for c in self.controllers]
        tasks += [asyncio.create_task(t(stop)) for t in self._extra_tasks]
        try:
            await asyncio.wait(
                [operator, asyncio.ensure_future(kopf_ready.wait())], return_when=asyncio.FIRST_COMPLETED
            )
            if ready is not None:
                ready.set()
            # kopf takes over SIGINT/SIGTERM once it runs: when it stops on a signal, so does everything.
            await asyncio.wait([operator, asyncio.ensure_future(stop.wait())], return_when=asyncio.FIRST_COMPLETED)
        finally:
            stop.set()
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await asyncio.wait_for(operator, 10)


def _to_dict(obj: Any) -> Body:
    return obj.to_dict() if hasattr(obj, "to_dict") else dict(obj)


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


async def run_manager(
    settings: Settings,
    *,
    kubeconfig: Path | None,
    controllers: tuple[str, ...],
    stop: asyncio.Event | None = None,
) -> None:
    from kubernaut.audit.factory import open_audit_sink

    stop = stop or asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    async with open_audit_sink(settings.audit) as audit:
        manager = build_manager(settings, kubeconfig=kubeconfig, controllers=controllers, audit=audit)
        log.info("Starting controllers: %s", ", ".join(controllers) or "none")
        await manager.run(stop)
