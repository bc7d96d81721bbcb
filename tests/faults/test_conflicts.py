"""Write conflicts, lost responses and late watch events on every write path of both controllers:
requests still settle, nothing runs twice and the audit trail keeps exactly one event per transition.

The controllers run in this process against the real API server, with their client wrapped: a share
of patches and creates fail with a 409 as the API server sends it, a share of every write takes
effect but its response is lost (a timeout), and every watch stream is delivered late."""

import asyncio
import json
import random
import time
from collections import Counter
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import httpx2
import pytest
from lightkube import AsyncClient
from lightkube.core.exceptions import ApiError

from kubernaut.audit.factory import open_audit_sink
from kubernaut.controllers.manager import Manager
from tests.faults.conftest import Scale
from tests.faults.support import (
    PipelineRunLedger,
    Workload,
    background,
    check_invariants,
    deadline,
    wait_locks_released,
    wait_settled,
)
from tests.integration.harness import create_execution_namespace, running, settings_for

pytestmark = pytest.mark.tekton


def build_api_error(code: int, reason: str, message: str, method: str = "PATCH") -> ApiError:
    """An ApiError exactly as lightkube raises it for an API server Status response."""
    request = httpx2.Request(method, "https://127.0.0.1/apis/kubernaut.ai/v1alpha1")
    status = {"kind": "Status", "apiVersion": "v1", "status": "Failure", "message": message, "reason": reason}
    response = httpx2.Response(code, content=json.dumps({**status, "code": code}).encode(), request=request)
    return ApiError(request=request, response=response)


class FlakyWrites:
    """Wraps the write calls of one client: injected 409s before, lost responses after the write."""

    def __init__(self, client: AsyncClient, rng: random.Random, *, conflicts: float, lost: float) -> None:
        self.rng = rng
        self.conflicts = conflicts
        self.lost = lost
        self.injected: Counter[str] = Counter()
        self.calls: Counter[str] = Counter()
        for name in ("patch", "create"):
            setattr(client, name, self._wrap(name, getattr(client, name)))
        # Deletes with a precondition are sent below lightkube's `delete`: lose their answers there.
        send = client._client.send

        async def send_flaky(request: httpx2.Request, stream: bool = False) -> Any:
            if request.method != "DELETE":
                return await send(request, stream=stream)
            return await self._wrap("delete", send)(request, stream=stream)

        client._client.send = send_flaky  # type: ignore[method-assign]

    def _wrap(self, name: str, call: Callable[..., Awaitable[Any]]) -> Callable[..., Awaitable[Any]]:
        async def flaky(*args: Any, **kwargs: Any) -> Any:
            self.calls[name] += 1
            if name == "patch" and self.rng.random() < self.conflicts:
                self.injected["patch 409 Conflict"] += 1
                raise build_api_error(
                    409,
                    "Conflict",
                    "Operation cannot be fulfilled: the object has been modified; "
                    "please apply your changes to the latest version and try again",
                )
            if name == "create" and self.rng.random() < self.conflicts / 2:
                self.injected["create 409 AlreadyExists"] += 1
                raise build_api_error(409, "AlreadyExists", "object already exists", "POST")
            result = await call(*args, **kwargs)
            if self.rng.random() < self.lost:
                self.injected[f"{name} response lost"] += 1
                raise httpx2.ReadTimeout("injected: the response was lost")
            return result

        return flaky


class LateEvents:
    """Delivers every watch stream late (each event up to `max_delay` after it arrived), keeping the
    order within a stream as a real watch does; streams of different kinds drift apart."""

    def __init__(self, manager: Manager, rng: random.Random, max_delay: float) -> None:
        self.rng = rng
        self.max_delay = max_delay
        self.delayed = 0
        self._deliver = manager.dispatch
        self._last: dict[str, float] = {}
        manager.dispatch = self.dispatch  # type: ignore[method-assign]

    def dispatch(self, plural: str, event_type: str | None, body: dict[str, Any]) -> None:
        if event_type is None:  # the priming LIST: the caches must be full before workers start
            self._deliver(plural, event_type, body)
            return
        loop = asyncio.get_running_loop()
        at = max(loop.time() + self.rng.uniform(0, self.max_delay), self._last.get(plural, 0.0))
        self._last[plural] = at
        self.delayed += 1
        loop.call_at(at, self._deliver, plural, event_type, body)


@deadline()
async def test_conflicts_lost_responses_and_late_events(
    kube: AsyncClient, kubeconfig: Path, namespace: str, tmp_path: Path, scale: Scale
) -> None:
    exec_ns = await create_execution_namespace(kube)
    audit_db = tmp_path / "audit.db"
    settings = settings_for(
        exec_ns,
        execution={"cooldown": "2s"},
        routing={"recentlyRemediatedCooldown": "1s", "backoffBase": "1s", "backoffMax": "2s"},
        audit={"url": f"sqlite:///{audit_db}", "flushInterval": "200ms"},
    )
    ledger = PipelineRunLedger(kube, exec_ns)
    workload = Workload(kube, namespace, seed=21)
    rng = random.Random(13)
    started = time.monotonic()
    async with (
        open_audit_sink(settings.audit) as audit,
        background(ledger),
        running(kubeconfig, settings, ("orchestrator", "executor"), audit=audit) as manager,
    ):
        flaky = FlakyWrites(manager.client, rng, conflicts=0.3, lost=0.1)
        late = LateEvents(manager, rng, max_delay=0.3)
        await workload.create(scale.batch_remediations * 2)
        await wait_settled(kube, namespace, exec_ns, timeout=180)
        await wait_locks_released(kube, exec_ns, 2.0, timeout=30)
    verdict = await check_invariants(kube, namespace, exec_ns, audit_db, ledger)
    verdict.figures.update(
        injected=dict(flaky.injected),
        write_calls=dict(flaky.calls),
        late_events=late.delayed,
        seconds=round(time.monotonic() - started, 1),
    )
    print("conflicts:", verdict.figures)
    assert verdict.problems == [], verdict.problems
    assert flaky.injected["patch 409 Conflict"] > 0
    assert flaky.injected["create response lost"] > 0
    assert flaky.calls["delete"] > 0  # the lock releases went through the flaky path
