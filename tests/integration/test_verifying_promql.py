"""A workflow's `spec.verification.promql` checked against a real Prometheus once the alert resolved.

Prometheus (Debian's `prometheus` package) scrapes a test target on loopback that reports the api
healthy. The requests come from an alert whose resolution the gateway has already recorded (the
annotation it writes); the test plays the executor.
"""

import uuid
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest_asyncio
from aiohttp import web
from lightkube import AsyncClient

from kubernaut.domain.signals import RESOLVED_ANNOTATION
from tests.integration.harness import create_execution_namespace, eventually, running, settings_for
from tests.integration.orchestrator_support import (
    completed_wfe_status,
    create_rr,
    rfc3339,
    set_wfe_status,
    wait_phase,
)
from tests.integration.rr import rr_manifest
from tests.integration.tekton_support import UNRESOLVED_BUNDLE
from tests.integration.test_orchestrator_bad_input import catalog, entry
from tests.integration.test_prometheus_dashboard import Prometheus

METRICS = '# TYPE api_healthy gauge\napi_healthy{app="api"} 1\n'


@pytest_asyncio.fixture(loop_scope="session")
async def scrape_target() -> AsyncIterator[str]:
    """host:port of a loopback /metrics reporting the api healthy."""

    async def metrics(_request: web.Request) -> web.Response:
        return web.Response(text=METRICS, content_type="text/plain")

    app = web.Application()
    app.router.add_get("/metrics", metrics)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", 0).start()
    yield f"127.0.0.1:{runner.addresses[0][1]}"
    await runner.cleanup()


def resolved_alert(name: str, namespace: str, signal: str, deployment: str) -> dict[str, Any]:
    body = rr_manifest(
        name,
        namespace,
        target={"kind": "Deployment", "name": deployment, "namespace": namespace},
        bundle=None,
        signal_name=signal,
        source="alertmanager",
    )
    body["metadata"]["annotations"] = {RESOLVED_ANNOTATION: rfc3339(datetime.now(UTC))}
    return body


async def assess(kube: AsyncClient, name: str, namespace: str) -> dict[str, Any]:
    await wait_phase(kube, name, namespace, "Executing")
    await set_wfe_status(kube, f"we-{name}", namespace, completed_wfe_status(datetime.now(UTC)))
    return await wait_phase(kube, name, namespace, "Completed")


async def test_the_metric_check_holds_fails_and_is_inconclusive_without_prometheus(
    kube: AsyncClient, kubeconfig: Path, namespace: str, scrape_target: str, tmp_path: Path
) -> None:
    exec_ns = await create_execution_namespace(kube)
    server = Prometheus(tmp_path, [scrape_target])
    server.start()
    try:

        async def scraped() -> bool:
            answer = await server.query('api_healthy{app="api"}')
            return answer.get("status") == "success" and bool(answer["data"]["result"])

        await eventually(scraped, timeout=30, what=f"Prometheus to scrape the test target; log: {server.log()}")
        holds, fails = f"Holds{uuid.uuid4().hex[:8]}", f"Fails{uuid.uuid4().hex[:8]}"
        settings = settings_for(
            exec_ns,
            effectiveness={"prometheusUrl": server.url, "window": "60s"},
            routing={"recentlyRemediatedCooldown": "0s"},
        )
        async with (
            catalog(
                kube,
                entry(
                    "check-holds",
                    holds,
                    UNRESOLVED_BUNDLE,
                    verification={"promql": "api_healthy == 1"},
                ),
                entry(
                    "check-fails",
                    fails,
                    UNRESOLVED_BUNDLE,
                    verification={"promql": "api_healthy == 0"},
                ),
            ),
            running(kubeconfig, settings, ("orchestrator",)),
        ):
            await create_rr(kube, resolved_alert("rr-holds", namespace, holds, "api"))
            await create_rr(kube, resolved_alert("rr-fails", namespace, fails, "worker"))
            held = await assess(kube, "rr-holds", namespace)
            failed = await assess(kube, "rr-fails", namespace)

            server.stop()
            await create_rr(kube, resolved_alert("rr-down", namespace, holds, "cart"))
            down = await assess(kube, "rr-down", namespace)  # completes: an unanswered check never holds it
    finally:
        server.stop()

    assert (held["effectiveness"]["assessment"], held["outcome"]) == ("Effective", "Remediated")
    assert (failed["effectiveness"]["assessment"], failed["outcome"]) == ("Ineffective", "Ineffective")
    assert "api_healthy == 0" in failed["effectiveness"]["message"]
    assert (down["effectiveness"]["assessment"], down["outcome"]) == ("Inconclusive", "Remediated")
