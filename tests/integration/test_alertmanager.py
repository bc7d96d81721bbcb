"""A real Alertmanager delivering to the gateway: alerts in, one RemediationRequest per alert out.

Alertmanager also sends a copy of every notification to a capture receiver; the captured
payloads are checked against the shape of the unit-test fixtures (set KUBERNAUT_UPDATE_FIXTURES=1
to rewrite those fixtures from a fresh capture).
"""

import contextlib
import json
import os
import shutil
import socket
import subprocess
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, TypeVar

import aiohttp
import pytest
import pytest_asyncio
from aiohttp import web
from lightkube import AsyncClient

from kubernaut.config import GatewayConfig
from kubernaut.domain.signals import RESOLVED_ANNOTATION, compute_fingerprint, parse_alertmanager_payload
from kubernaut.gateway import GatewayServer, write_token_file
from kubernaut.kube.resources import RemediationRequestResource
from tests.integration.harness import eventually as wait_for

FIXTURES = Path(__file__).parents[1] / "unit" / "fixtures"
T = TypeVar("T")


def alertmanager_binary() -> str:
    found = shutil.which("alertmanager") or shutil.which("prometheus-alertmanager")
    if not found:
        pytest.fail("Alertmanager is not installed: apt-get install -y prometheus-alertmanager")
    return found


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


async def eventually(probe: Callable[[], Awaitable[T | None]], what: str, timeout: float = 30.0) -> T:
    return await wait_for(probe, timeout=timeout, interval=0.1, what=what)


@dataclass
class Capture:
    url: str = ""
    payloads: list[dict[str, Any]] = field(default_factory=list)
    authorizations: list[str] = field(default_factory=list)


@pytest_asyncio.fixture(loop_scope="session")
async def capture() -> AsyncIterator[Capture]:
    state = Capture()

    async def receive(request: web.Request) -> web.Response:
        state.payloads.append(await request.json())
        state.authorizations.append(request.headers.get("Authorization", ""))
        return web.Response(text="ok")

    app = web.Application()
    app.router.add_post("/capture", receive)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", 0).start()
    state.url = f"http://127.0.0.1:{runner.addresses[0][1]}/capture"
    yield state
    await runner.cleanup()


@pytest_asyncio.fixture(loop_scope="session")
async def gateway(kube: AsyncClient, namespace: str, tmp_path: Path) -> AsyncIterator[tuple[GatewayServer, str]]:
    token = write_token_file(tmp_path / "gateway-token")
    config = GatewayConfig(listen="127.0.0.1:0", namespace=namespace, bearer_token_file=str(tmp_path / "gateway-token"))
    server = GatewayServer(kube, config)
    await server.start()
    yield server, token
    await server.stop()


@contextlib.contextmanager
def run_alertmanager(
    workdir: Path, webhook_url: str, token: str, capture_url: str, *, resolve_timeout: str = ""
) -> Iterator[str]:
    """Alertmanager on a free loopback port, grouping and repeating every second; `resolve_timeout`
    resolves an alert that many seconds after it was last posted (as when Prometheus stops sending it)."""
    port = free_port()
    config: dict[str, Any] = {
        "route": {
            "receiver": "kubernaut",
            "group_by": ["alertname", "namespace"],
            "group_wait": "1s",
            "group_interval": "1s",
            "repeat_interval": "1s",
            "routes": [{"receiver": "capture", "continue": True}, {"receiver": "kubernaut"}],
        },
        "receivers": [
            {
                "name": "kubernaut",
                "webhook_configs": [
                    {
                        "url": webhook_url,
                        "send_resolved": True,
                        "http_config": {"authorization": {"type": "Bearer", "credentials": token}},
                    }
                ],
            },
            {"name": "capture", "webhook_configs": [{"url": capture_url, "send_resolved": True}]},
        ],
    }
    if resolve_timeout:
        config["global"] = {"resolve_timeout": resolve_timeout}
    config_file = workdir / "alertmanager.yml"
    config_file.write_text(json.dumps(config))  # JSON is YAML
    log_file = (workdir / "alertmanager.log").open("w")
    process = subprocess.Popen(
        [
            alertmanager_binary(),
            f"--config.file={config_file}",
            f"--storage.path={workdir / 'data'}",
            f"--web.listen-address=127.0.0.1:{port}",
            "--cluster.listen-address=",
        ],
        stdout=log_file,
        stderr=subprocess.STDOUT,
    )
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        process.terminate()
        try:
            process.wait(10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
        log_file.close()


async def wait_ready(session: aiohttp.ClientSession, url: str, workdir: Path) -> None:
    async def ready() -> bool:
        try:
            async with session.get(f"{url}/-/ready") as response:
                return response.status == 200
        except aiohttp.ClientError:
            return False

    try:
        await eventually(ready, "Alertmanager to be ready", timeout=20)
    except AssertionError:
        raise AssertionError((workdir / "alertmanager.log").read_text()[-2000:]) from None


def alert(pod: str, starts_at: datetime, ends_at: datetime | None = None) -> dict[str, Any]:
    item: dict[str, Any] = {
        "labels": {
            "alertname": "KubePodCrashLooping",
            "namespace": "payments",
            "pod": pod,
            "container": "api",
            "severity": "critical",
            "job": "kube-state-metrics",
        },
        "annotations": {"summary": f"Pod payments/{pod} is crash looping"},
        "startsAt": starts_at.isoformat(),
        "generatorURL": "http://prometheus.local/graph?g0.expr=kube_pod_container_status_restarts_total",
    }
    if ends_at is not None:
        item["endsAt"] = ends_at.isoformat()
    return item


async def post_alerts(session: aiohttp.ClientSession, url: str, alerts: list[dict[str, Any]]) -> None:
    async with session.post(f"{url}/api/v2/alerts", json=alerts) as response:
        assert response.status == 200, await response.text()


def _shape(payload: dict[str, Any]) -> tuple[list[str], list[str]]:
    return sorted(payload), sorted(payload["alerts"][0])


async def test_alertmanager_to_remediation_requests(
    gateway: tuple[GatewayServer, str], capture: Capture, kube: AsyncClient, namespace: str, tmp_path: Path
) -> None:
    server, token = gateway
    started = datetime.now(UTC).replace(microsecond=0) - timedelta(minutes=1)
    pods = ["api-7d9f-abcde", "api-7d9f-fghij"]

    async def rrs() -> list[dict[str, Any]]:
        return [o.to_dict() async for o in kube.list(RemediationRequestResource, namespace=namespace)]

    with run_alertmanager(tmp_path, server.webhook_url, token, capture.url) as am_url:
        async with aiohttp.ClientSession() as session:
            await wait_ready(session, am_url, tmp_path)
            await post_alerts(session, am_url, [alert(pod, started) for pod in pods])

            created = await eventually(lambda: _when(rrs(), lambda items: len(items) == 2), "two RemediationRequests")
            fingerprints = {rr["spec"]["signalFingerprint"] for rr in created}
            assert fingerprints == {compute_fingerprint(alert(pod, started)["labels"]) for pod in pods}

            # Alertmanager re-sends the group every second while the alerts fire; repeats are
            # posted too. Every delivery is counted on the same two requests.
            for _ in range(3):
                await post_alerts(session, am_url, [alert(pod, started) for pod in pods])
            counted = await eventually(
                lambda: _when(rrs(), lambda items: all(_count(i) >= 3 for i in items)),
                "repeat deliveries to be counted",
            )
            assert len(counted) == 2

            resolved_at = datetime.now(UTC) - timedelta(seconds=1)
            await post_alerts(session, am_url, [alert(pods[0], started, ends_at=resolved_at)])
            marked = await eventually(
                lambda: _when(
                    rrs(),
                    lambda items: [i for i in items if RESOLVED_ANNOTATION in i["metadata"].get("annotations", {})],
                ),
                "the resolution to be recorded",
            )

    assert [m["spec"]["signalLabels"]["pod"] for m in marked] == [pods[0]]
    final = await rrs()
    assert len(final) == 2, "repeats and resolutions never create requests"
    for rr in final:
        assert rr["spec"]["source"] == "alertmanager"
        assert rr["spec"]["targetResource"]["kind"] == "Pod"
        assert rr["spec"]["firingTime"] == started.strftime("%Y-%m-%dT%H:%M:%SZ")

    # the captured payloads are what the unit tests parse
    firing = next(p for p in capture.payloads if all(a["status"] == "firing" for a in p["alerts"]))
    resolved = next(p for p in capture.payloads if any(a["status"] == "resolved" for a in p["alerts"]))
    assert parse_alertmanager_payload(firing, max_alerts=10).signals
    assert capture.authorizations[0] == ""  # the capture receiver has no token configured
    if os.environ.get("KUBERNAUT_UPDATE_FIXTURES"):
        (FIXTURES / "alertmanager_firing.json").write_text(json.dumps(firing, indent=2) + "\n")
        (FIXTURES / "alertmanager_resolved.json").write_text(json.dumps(resolved, indent=2) + "\n")
    fixture = json.loads((FIXTURES / "alertmanager_firing.json").read_text())
    assert _shape(firing) == _shape(fixture), "the unit-test fixture no longer matches Alertmanager's payload"


async def _when(items: Awaitable[list[dict[str, Any]]], condition: Callable[[list[dict[str, Any]]], Any]) -> Any:
    values = await items
    result = condition(values)
    if result is True:
        return values
    return result


def _count(rr: dict[str, Any]) -> int:
    return int(((rr.get("status") or {}).get("deduplication") or {}).get("occurrenceCount", 0))
