"""Running the controllers in-process against the real API server, and waiting on outcomes."""

import asyncio
import contextlib
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any, TypeVar

from lightkube import AsyncClient
from lightkube.core.exceptions import ApiError
from lightkube.models.meta_v1 import ObjectMeta
from lightkube.resources.core_v1 import Event, Namespace

from kubernaut.audit.memory import MemoryAuditSink
from kubernaut.audit.store import AuditSink
from kubernaut.config import Settings, parse_settings
from kubernaut.controllers.manager import Manager, build_manager, utc_now

T = TypeVar("T")


async def eventually(
    probe: Callable[[], Awaitable[T | None]], *, timeout: float = 20.0, interval: float = 0.05, what: str = ""
) -> T:
    """Poll until `probe` returns something truthy; fail with `what` after `timeout` seconds."""
    deadline = time.monotonic() + timeout
    last: Any = None
    while time.monotonic() < deadline:
        last = await probe()
        if last:
            return last
        await asyncio.sleep(interval)
    raise AssertionError(f"timed out after {timeout}s waiting for {what or probe}; last value: {last!r}")


class OffsetClock:
    """Real time plus an offset the test can advance (the controllers take it as their clock)."""

    def __init__(self) -> None:
        self.offset = timedelta(0)

    def __call__(self) -> datetime:
        return utc_now() + self.offset

    def advance(self, seconds: float) -> None:
        self.offset += timedelta(seconds=seconds)


TEST_NAMESPACES: list[str] = []
"""Namespaces made by the current test. Controllers started by `running` watch only these: the local
control plane has no namespace controller, so objects of earlier tests live on and must stay unseen."""


def track_namespace(name: str) -> str:
    TEST_NAMESPACES.append(name)
    return name


async def create_namespace(client: AsyncClient, prefix: str = "x") -> str:
    name = f"{prefix}-{uuid.uuid4().hex[:10]}"
    await client.create(Namespace(metadata=ObjectMeta(name=name)))
    return track_namespace(name)


def settings_for(execution_namespace: str, **sections: dict[str, Any]) -> Settings:
    data: dict[str, Any] = {"execution": {"namespace": execution_namespace}, "audit": {"url": "memory://"}}
    for key, value in sections.items():
        data[key] = {**data.get(key, {}), **value}
    return parse_settings(data)


@contextlib.asynccontextmanager
async def running(
    kubeconfig: Path,
    settings: Settings,
    controllers: tuple[str, ...],
    *,
    audit: AuditSink | None = None,
    clock: Callable[[], datetime] = utc_now,
    namespaces: tuple[str, ...] | None = None,
) -> AsyncIterator[Manager]:
    """The controllers of one process, started in this event loop and stopped afterwards; they watch
    `namespaces` (default: the namespaces this test made) plus cluster-scoped kinds."""
    manager = build_manager(
        settings, kubeconfig=kubeconfig, controllers=controllers, audit=audit or MemoryAuditSink(), clock=clock
    )
    manager.namespaces = tuple(TEST_NAMESPACES if namespaces is None else namespaces)
    stop, ready = asyncio.Event(), asyncio.Event()
    task = asyncio.create_task(manager.run(stop, ready))
    waiter = asyncio.ensure_future(ready.wait())
    await asyncio.wait([task, waiter], return_when=asyncio.FIRST_COMPLETED, timeout=30)
    if task.done():
        task.result()
    try:
        yield manager
    finally:
        stop.set()
        waiter.cancel()
        await asyncio.wait_for(task, 30)
        await manager.client.close()


async def events_for(client: AsyncClient, namespace: str, name: str) -> list[tuple[str, str, str]]:
    """(type, reason, message) of the Kubernetes Events about one object."""
    found = []
    async for event in client.list(Event, namespace=namespace):
        if event.involvedObject.name == name:
            found.append((event.type or "", event.reason or "", event.message or ""))
    return found


async def get_or_none(client: AsyncClient, resource: Any, name: str, namespace: str | None) -> Any:
    try:
        return await client.get(resource, name, namespace=namespace)
    except ApiError as exc:
        if exc.status.code == 404:
            return None
        raise
