"""The Verifying phase against a real Alertmanager: did the alert resolve after the workflow ran?

The alert is posted to Alertmanager every half second while it fires, as Prometheus re-sends a
firing alert; once the posts stop, Alertmanager's short resolve_timeout resolves it and it tells
the gateway. The orchestrator runs alone; the test plays the executor by writing the
WorkflowExecution's status.
"""

import asyncio
import contextlib
import time
import uuid
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import aiohttp
from lightkube import AsyncClient
from typer.testing import CliRunner

from kubernaut.audit.memory import MemoryAuditSink
from kubernaut.cli import app
from kubernaut.domain.signals import RESOLVED_ANNOTATION
from kubernaut.gateway import GatewayServer
from kubernaut.kube.resources import RemediationRequestResource
from tests.integration.harness import create_execution_namespace, create_namespace, eventually, running, settings_for
from tests.integration.orchestrator_support import (
    completed_wfe_status,
    notifications,
    parse_time,
    set_wfe_status,
    wait_phase,
)
from tests.integration.tekton_support import UNRESOLVED_BUNDLE
from tests.integration.test_alertmanager import (  # noqa: F401  (fixtures)
    Capture,
    capture,
    gateway,
    post_alerts,
    run_alertmanager,
    wait_ready,
)
from tests.integration.test_orchestrator_bad_input import catalog, entry

RESOLVE_TIMEOUT = "2s"


@contextlib.asynccontextmanager
async def firing(session: aiohttp.ClientSession, url: str, signal: str, namespace: str) -> AsyncIterator[asyncio.Event]:
    """Post the alert (on Deployment api in `namespace`) every half second until the yielded event is set."""
    stop = asyncio.Event()
    body = {
        "labels": {"alertname": signal, "namespace": namespace, "deployment": "api", "severity": "critical"},
        "annotations": {"summary": "api is down"},
        "startsAt": datetime.now(UTC).isoformat(),
    }

    async def post() -> None:
        while not stop.is_set():
            await post_alerts(session, url, [body])
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), 0.5)

    task = asyncio.create_task(post())
    try:
        yield stop
    finally:
        stop.set()
        await task


async def requests(kube: AsyncClient, namespace: str) -> list[dict[str, Any]]:
    found = [o.to_dict() async for o in kube.list(RemediationRequestResource, namespace=namespace)]
    return sorted(found, key=lambda rr: (rr["metadata"]["creationTimestamp"], rr["metadata"]["name"]))


async def next_request(kube: AsyncClient, namespace: str, seen: list[str]) -> str:
    """The name of the first request the gateway creates beyond `seen`."""

    async def probe() -> str | None:
        names = [rr["metadata"]["name"] for rr in await requests(kube, namespace)]
        new = [name for name in names if name not in seen]
        return new[0] if new else None

    name = await eventually(probe, timeout=30, what=f"a request beyond {seen}")
    seen.append(name)
    return name


async def resolution(kube: AsyncClient, name: str, namespace: str) -> str:
    async def probe() -> str | None:
        rr = await kube.get(RemediationRequestResource, name, namespace=namespace)
        return (rr.metadata.annotations or {}).get(RESOLVED_ANNOTATION)

    return await eventually(probe, timeout=30, what=f"the resolution of {name}'s alert recorded")


async def run_workflow(kube: AsyncClient, name: str, namespace: str) -> None:
    """Play the executor: the request's execution completes."""
    await wait_phase(kube, name, namespace, "Executing")
    await set_wfe_status(kube, f"we-{name}", namespace, completed_wfe_status(datetime.now(UTC)))


def assessed(audit: MemoryAuditSink, name: str) -> list[dict[str, Any]]:
    return [event.event_data for event in audit.of_type("orchestrator.effectiveness.assessed", name)]


@contextlib.asynccontextmanager
async def system(
    kube: AsyncClient,
    kubeconfig: Path,
    gateway: tuple[GatewayServer, str],  # noqa: F811
    capture: Capture,  # noqa: F811
    tmp_path: Path,
    window: str,
) -> AsyncIterator[tuple[str, aiohttp.ClientSession, MemoryAuditSink, str, str]]:
    """Catalog entry, orchestrator, Alertmanager: (signal name, session, audit, Alertmanager URL, the
    target's namespace)."""
    server, token = gateway
    exec_ns = await create_execution_namespace(kube)
    signal = f"ApiDown{uuid.uuid4().hex[:8]}"
    shop = await create_namespace(kube, "shop")  # where the alert's Deployment lives, opted in
    audit = MemoryAuditSink()
    settings = settings_for(exec_ns, effectiveness={"window": window}, routing={"recentlyRemediatedCooldown": "0s"})
    async with (
        catalog(kube, entry("restart-api", signal, UNRESOLVED_BUNDLE)),
        running(kubeconfig, settings, ("orchestrator",), audit=audit),
        aiohttp.ClientSession() as session,
    ):
        with run_alertmanager(
            tmp_path, server.webhook_url, token, capture.url, resolve_timeout=RESOLVE_TIMEOUT
        ) as am_url:
            await wait_ready(session, am_url, tmp_path)
            yield signal, session, audit, am_url, shop


async def test_an_alert_resolving_after_the_workflow_makes_it_effective(
    kube: AsyncClient,
    kubeconfig: Path,
    namespace: str,
    gateway: tuple[GatewayServer, str],  # noqa: F811
    capture: Capture,  # noqa: F811
    tmp_path: Path,
) -> None:
    async with system(kube, kubeconfig, gateway, capture, tmp_path, "60s") as (signal, session, audit, am_url, shop):
        async with firing(session, am_url, signal, shop) as stop:
            name = await next_request(kube, namespace, [])
            await run_workflow(kube, name, namespace)
            verifying = await wait_phase(kube, name, namespace, "Verifying")
            # still Verifying while Alertmanager repeats the alert (each repeat wakes the request)
            await eventually(
                lambda: _repeated_since(kube, name, namespace, verifying["verifyingStartTime"]),
                timeout=10,
                what="a repeat of the alert during Verifying",
            )
            assert (await wait_phase(kube, name, namespace, "Verifying"))["overallPhase"] == "Verifying"
            stop.set()
        await resolution(kube, name, namespace)
        recorded = time.monotonic()
        status = await wait_phase(kube, name, namespace, "Completed")
        woke = time.monotonic() - recorded

    assert status["outcome"] == "Remediated"
    effectiveness = status["effectiveness"]
    assert effectiveness["assessment"] == "Effective"
    assert parse_time(effectiveness["resolvedAt"]) >= parse_time(status["verifyingStartTime"])
    assert parse_time(effectiveness["checkedAt"]) >= parse_time(effectiveness["resolvedAt"])
    assert woke < 2.0, f"the recorded resolution took {woke:.2f}s to complete the request"
    [event] = assessed(audit, name)
    assert event["assessment"] == "Effective"
    print(f"resolution recorded -> Completed in {woke:.2f}s")


async def _repeated_since(kube: AsyncClient, name: str, namespace: str, since: str) -> bool:
    rr = await kube.get(RemediationRequestResource, name, namespace=namespace)
    dedup = (rr.to_dict().get("status") or {}).get("deduplication") or {}
    return bool(dedup.get("lastSeenAt")) and parse_time(dedup["lastSeenAt"]) > parse_time(since)


async def test_an_alert_resolved_before_the_workflow_finished_counts_as_resolved(
    kube: AsyncClient,
    kubeconfig: Path,
    namespace: str,
    gateway: tuple[GatewayServer, str],  # noqa: F811
    capture: Capture,  # noqa: F811
    tmp_path: Path,
) -> None:
    async with system(kube, kubeconfig, gateway, capture, tmp_path, "60s") as (signal, session, audit, am_url, shop):
        async with firing(session, am_url, signal, shop) as stop:
            name = await next_request(kube, namespace, [])
            await wait_phase(kube, name, namespace, "Executing")
            stop.set()
        await resolution(kube, name, namespace)
        await run_workflow(kube, name, namespace)
        status = await wait_phase(kube, name, namespace, "Completed")

    assert status["outcome"] == "Remediated"
    assert status["effectiveness"]["assessment"] == "Effective"
    assert parse_time(status["effectiveness"]["resolvedAt"]) <= parse_time(status["verifyingStartTime"])
    assert len(assessed(audit, name)) == 1


async def test_an_alert_that_keeps_firing_is_ineffective_and_three_in_a_row_block_until_cleared(
    kube: AsyncClient,
    kubeconfig: Path,
    namespace: str,
    gateway: tuple[GatewayServer, str],  # noqa: F811
    capture: Capture,  # noqa: F811
    tmp_path: Path,
) -> None:
    seen: list[str] = []
    async with (
        system(kube, kubeconfig, gateway, capture, tmp_path, "2s") as (signal, session, audit, am_url, shop),
        firing(session, am_url, signal, shop),
    ):
        for _ in range(3):
            name = await next_request(kube, namespace, seen)
            await run_workflow(kube, name, namespace)
            status = await wait_phase(kube, name, namespace, "Completed")
            assert status["outcome"] == "Ineffective", status
            assert status["effectiveness"]["assessment"] == "Ineffective"
            assert "resolvedAt" not in status["effectiveness"]
            assert [e["assessment"] for e in assessed(audit, name)] == ["Ineffective"]

        blocked_name = await next_request(kube, namespace, seen)
        blocked = await wait_phase(kube, blocked_name, namespace, "Blocked", blockReason="IneffectiveChain")
        assert seen[2] in blocked["blockMessage"]
        reviews = await notifications(kube, namespace)
        assert [(n["spec"]["metadata"]["reason"], n["spec"]["priority"]) for n in reviews] == [
            ("IneffectiveChain", "high")
        ]

        cleared = await asyncio.to_thread(
            CliRunner().invoke,
            app,
            [
                "clear-block",
                seen[2],
                "-n",
                namespace,
                "--reason",
                "checked the api",
                "--kubeconfig",
                str(kubeconfig),
            ],
        )
        assert cleared.exit_code == 0, cleared.output
        assert "RemediationRequest" in cleared.output
        await wait_phase(kube, blocked_name, namespace, "Executing")

    assert len(await notifications(kube, namespace)) == 1
