"""The gateway against the real API server: creation, deduplication, resolution, rejections."""

import asyncio
import base64
import copy
import json
from collections.abc import AsyncIterator, Awaitable, Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import aiohttp
import pytest
import pytest_asyncio
from lightkube import AsyncClient, KubeConfig
from lightkube.models.meta_v1 import ObjectMeta
from lightkube.resources.core_v1 import Secret
from prometheus_client import REGISTRY

from kubernaut.config import GatewayConfig
from kubernaut.domain.dryrun import HOLD_PERIOD
from kubernaut.domain.signals import RESOLVED_ANNOTATION, build_remediation_name, parse_alertmanager_payload
from kubernaut.errors import ConfigError
from kubernaut.gateway import GatewayServer, write_token_file
from kubernaut.kube.client import patch_status
from kubernaut.kube.resources import RemediationRequestResource

FIXTURES = Path(__file__).parents[1] / "unit" / "fixtures"
TOKEN = "test-token-0123456789"
StartGateway = Callable[..., Awaitable[GatewayServer]]


def firing_payload() -> dict[str, Any]:
    return dict(json.loads((FIXTURES / "alertmanager_firing.json").read_text()))


def resolved_payload() -> dict[str, Any]:
    return dict(json.loads((FIXTURES / "alertmanager_resolved.json").read_text()))


def one_alert(
    labels: dict[str, str], starts_at: str = "2026-03-01T10:00:00Z", status: str = "firing"
) -> dict[str, Any]:
    return {
        "version": "4",
        "status": status,
        "alerts": [{"status": status, "labels": labels, "annotations": {}, "startsAt": starts_at}],
    }


@pytest_asyncio.fixture(loop_scope="session")
async def start_gateway(kube: AsyncClient, namespace: str, tmp_path: Path) -> AsyncIterator[StartGateway]:
    servers: list[GatewayServer] = []
    token_file = tmp_path / "token"
    write_token_file(token_file, TOKEN)

    async def start(
        client: AsyncClient | None = None, *, dry_run_hold: timedelta = HOLD_PERIOD, **overrides: Any
    ) -> GatewayServer:
        values: dict[str, Any] = {"listen": "127.0.0.1:0", "namespace": namespace, "bearerTokenFile": str(token_file)}
        values.update(overrides)
        server = GatewayServer(client or kube, GatewayConfig.model_validate(values), dry_run_hold=dry_run_hold)
        await server.start()
        servers.append(server)
        return server

    yield start
    for server in servers:
        await server.stop()


@pytest_asyncio.fixture(loop_scope="session")
async def http() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession(headers={"Authorization": f"Bearer {TOKEN}"}) as session:
        yield session


async def post(
    session: aiohttp.ClientSession, server: GatewayServer, payload: Any, **kwargs: Any
) -> tuple[int, dict[str, Any]]:
    data = payload if isinstance(payload, bytes | str) else json.dumps(payload)
    async with session.post(server.webhook_url, data=data, **kwargs) as response:
        return response.status, await response.json()


async def list_rrs(kube: AsyncClient, namespace: str) -> list[dict[str, Any]]:
    return sorted(
        [obj.to_dict() async for obj in kube.list(RemediationRequestResource, namespace=namespace)],
        key=lambda b: b["metadata"]["name"],
    )


def counter(name: str, **labels: str) -> float:
    return REGISTRY.get_sample_value(name, labels) or 0.0


async def test_firing_alerts_become_remediation_requests(
    start_gateway: StartGateway, http: aiohttp.ClientSession, kube: AsyncClient, namespace: str
) -> None:
    server = await start_gateway()
    created_before = counter("kubernaut_gateway_remediations_created_total")
    status, body = await post(http, server, firing_payload())
    assert status == 200, body
    assert len(body["created"]) == 2
    assert body["deduplicated"] == []
    assert counter("kubernaut_gateway_remediations_created_total") - created_before == 2

    signals = parse_alertmanager_payload(firing_payload(), max_alerts=10).signals
    rrs = await list_rrs(kube, namespace)
    by_fp = {rr["spec"]["signalFingerprint"]: rr for rr in rrs}
    assert set(by_fp) == {s.fingerprint for s in signals}
    for signal in signals:
        rr = by_fp[signal.fingerprint]
        assert rr["metadata"]["name"] == build_remediation_name(signal.fingerprint, signal.starts_at)
        assert rr["spec"]["signalName"] == "KubePodCrashLooping"
        assert rr["spec"]["severity"] == "critical"
        assert rr["spec"]["targetResource"] == {"kind": "Pod", "name": signal.labels["pod"], "namespace": "payments"}
        assert rr["spec"]["source"] == "alertmanager"
        assert rr["spec"]["signalLabels"] == dict(signal.labels)
        assert rr["spec"]["signalAnnotations"] == dict(signal.annotations)
        assert rr["spec"]["firingTime"] == signal.starts_at.strftime("%Y-%m-%dT%H:%M:%SZ")
        assert rr["status"]["deduplication"]["occurrenceCount"] == 1


async def test_repeats_are_counted_on_the_same_request(
    start_gateway: StartGateway, http: aiohttp.ClientSession, kube: AsyncClient, namespace: str
) -> None:
    server = await start_gateway()
    dedup_before = counter("kubernaut_gateway_alerts_deduplicated_total")
    await post(http, server, firing_payload())
    for _ in range(3):
        status, body = await post(http, server, firing_payload())
        assert status == 200
        assert len(body["deduplicated"]) == 2
        assert body["created"] == []
    assert counter("kubernaut_gateway_alerts_deduplicated_total") - dedup_before == 6
    rrs = await list_rrs(kube, namespace)
    assert len(rrs) == 2
    for rr in rrs:
        dedup = rr["status"]["deduplication"]
        assert dedup["occurrenceCount"] == 4
        assert dedup["firstSeenAt"] <= dedup["lastSeenAt"]


async def test_a_new_firing_episode_folds_into_the_active_request(
    start_gateway: StartGateway, http: aiohttp.ClientSession, kube: AsyncClient, namespace: str
) -> None:
    server = await start_gateway()
    labels = {"alertname": "Disk", "node": "worker-1"}
    await post(http, server, one_alert(labels, "2026-03-01T10:00:00Z"))
    status, body = await post(http, server, one_alert(labels, "2026-03-01T11:00:00Z"))
    assert status == 200
    assert len(body["deduplicated"]) == 1
    rrs = await list_rrs(kube, namespace)
    assert len(rrs) == 1
    assert rrs[0]["spec"]["targetResource"] == {"kind": "Node", "name": "worker-1"}
    assert rrs[0]["status"]["deduplication"]["occurrenceCount"] == 2


async def test_a_resolution_after_its_last_repeat_resolves_whatever_the_order_of_arrival(
    start_gateway: StartGateway, http: aiohttp.ClientSession, kube: AsyncClient, namespace: str
) -> None:
    """Alertmanager's last firing notice can reach the gateway after the alert's endsAt, and a
    firing notice can be delivered again after the resolution: neither means it fired again."""
    server = await start_gateway()
    labels = {"alertname": "Disk", "node": "worker-2"}
    now = datetime.now(UTC)
    began = rfc3339(now - timedelta(minutes=1))
    await post(http, server, one_alert(labels, began))
    await post(http, server, one_alert(labels, began))  # heard after the endsAt below
    resolved = one_alert(labels, began, status="resolved")
    resolved["alerts"][0]["endsAt"] = rfc3339(now - timedelta(seconds=5))
    assert len((await post(http, server, resolved))[1]["resolved"]) == 1
    [rr] = await list_rrs(kube, namespace)
    dedup = rr["status"]["deduplication"]
    assert dedup["occurrenceCount"] == 2
    assert rr["metadata"]["annotations"][RESOLVED_ANNOTATION] == dedup["lastSeenAt"]

    status, _ = await post(http, server, one_alert(labels, began))  # delivered again after the resolution
    assert status == 200
    [after] = await list_rrs(kube, namespace)
    assert after["status"]["deduplication"] == dedup

    await post(http, server, one_alert(labels, rfc3339(now + timedelta(seconds=2))))  # fired again
    [refired] = await list_rrs(kube, namespace)
    assert refired["status"]["deduplication"]["occurrenceCount"] == 3


def rfc3339(moment: datetime) -> str:
    return moment.astimezone(UTC).isoformat().replace("+00:00", "Z")


async def test_concurrent_deliveries_to_two_replicas_never_double(
    start_gateway: StartGateway, kube: AsyncClient, namespace: str
) -> None:
    replicas = [await start_gateway(), await start_gateway()]
    deliveries = 24
    async with aiohttp.ClientSession(headers={"Authorization": f"Bearer {TOKEN}"}) as session:
        results = await asyncio.gather(*(post(session, replicas[i % 2], firing_payload()) for i in range(deliveries)))
    assert all(status == 200 for status, _ in results), results
    created = [name for _, body in results for name in body["created"]]
    assert len(created) == 2
    rrs = await list_rrs(kube, namespace)
    assert len(rrs) == 2
    assert sorted(rr["metadata"]["name"] for rr in rrs) == sorted(created)
    assert [rr["status"]["deduplication"]["occurrenceCount"] for rr in rrs] == [deliveries, deliveries]


async def test_an_ended_request_is_not_reused(
    start_gateway: StartGateway, http: aiohttp.ClientSession, kube: AsyncClient, namespace: str
) -> None:
    server = await start_gateway()
    payload = one_alert({"alertname": "CrashLoop", "namespace": "shop", "deployment": "cart"})
    _, first = await post(http, server, payload)
    (name,) = first["created"]
    await patch_status(kube, RemediationRequestResource, name, namespace, {"overallPhase": "Completed"})
    status, second = await post(http, server, payload)
    assert status == 200
    assert second["created"] == [f"{name}-2"]
    _, third = await post(http, server, payload)
    assert third["deduplicated"] == [f"{name}-2"]
    rrs = {rr["metadata"]["name"]: rr for rr in await list_rrs(kube, namespace)}
    assert rrs[name]["status"]["deduplication"]["occurrenceCount"] == 1
    assert rrs[f"{name}-2"]["status"]["deduplication"]["occurrenceCount"] == 2


@pytest.mark.parametrize(("ended_ago", "held"), [(timedelta(minutes=59), True), (timedelta(minutes=61), False)])
async def test_a_dry_run_holds_its_fingerprint_for_the_hold_period(
    start_gateway: StartGateway,
    http: aiohttp.ClientSession,
    kube: AsyncClient,
    namespace: str,
    ended_ago: timedelta,
    held: bool,
) -> None:
    server = await start_gateway(dry_run_hold=timedelta(hours=1))
    payload = one_alert({"alertname": "DryLoop", "namespace": "shop", "deployment": f"cart-{held}"})
    _, first = await post(http, server, payload)
    (name,) = first["created"]
    ended = (datetime.now(UTC) - ended_ago).strftime("%Y-%m-%dT%H:%M:%SZ")
    done = {"overallPhase": "Completed", "outcome": "DryRun", "completedAt": ended}
    await patch_status(kube, RemediationRequestResource, name, namespace, done)
    status, second = await post(http, server, payload)
    assert status == 200
    if held:  # folded into the dry run: no new request that would only dry-run again
        assert second["deduplicated"] == [name]
        assert second["created"] == []
    else:
        assert second["created"] == [f"{name}-2"]


async def test_resolved_alert_is_recorded_never_created(
    start_gateway: StartGateway, http: aiohttp.ClientSession, kube: AsyncClient, namespace: str
) -> None:
    server = await start_gateway()
    status, body = await post(http, server, resolved_payload())
    assert status == 200
    assert body["ignored"] == 1  # nothing to mark: the resolved alert never fired here
    assert len(body["created"]) == 1  # the other alert of the group is still firing
    await post(http, server, firing_payload())
    status, body = await post(http, server, resolved_payload())
    assert status == 200
    assert len(body["resolved"]) == 1
    resolved_signal = parse_alertmanager_payload(resolved_payload(), max_alerts=10).signals[0]
    rrs = await list_rrs(kube, namespace)
    assert len(rrs) == 2
    marked = [rr for rr in rrs if RESOLVED_ANNOTATION in rr["metadata"].get("annotations", {})]
    assert [rr["spec"]["signalFingerprint"] for rr in marked] == [resolved_signal.fingerprint]
    # the fixture's endsAt is long past: the resolution is not older than the repeat heard before it
    ends_at = resolved_signal.ends_at.strftime("%Y-%m-%dT%H:%M:%SZ")  # type: ignore[union-attr]
    last_seen = marked[0]["status"]["deduplication"]["lastSeenAt"]
    assert marked[0]["metadata"]["annotations"][RESOLVED_ANNOTATION] == max(ends_at, last_seen)


def _wrong_type_payload() -> dict[str, Any]:
    payload = firing_payload()
    payload["alerts"][1]["labels"]["pod"] = 42
    return payload


def _no_target_payload() -> dict[str, Any]:
    payload = firing_payload()
    payload["alerts"][1]["labels"] = {"alertname": "Watchdog", "severity": "none"}
    return payload


@pytest.mark.parametrize(
    ("payload", "error", "detail"),
    [
        (b"{not json", "request body is not valid JSON", "Expecting property name"),
        (b"\xff\xfe", "request body is not valid JSON", ""),
        ({**firing_payload(), "version": "3"}, "invalid Alertmanager payload", "version: expected '4', got '3'"),
        (_no_target_payload(), "invalid Alertmanager payload", "alerts[1].labels: labels name no target resource"),
        (_wrong_type_payload(), "invalid Alertmanager payload", "alerts[1].labels: values must be strings (pod)"),
        ({"version": "4", "alerts": "x"}, "invalid Alertmanager payload", "alerts: expected an array, got string"),
    ],
)
async def test_bad_input_is_rejected_and_nothing_is_created(
    start_gateway: StartGateway,
    http: aiohttp.ClientSession,
    kube: AsyncClient,
    namespace: str,
    payload: Any,
    error: str,
    detail: str,
) -> None:
    server = await start_gateway()
    before = counter(
        "kubernaut_gateway_rejected_total", reason="invalid_json" if isinstance(payload, bytes) else "invalid_payload"
    )
    status, body = await post(http, server, payload)
    assert status == 400
    assert body["error"] == error
    assert any(detail in line for line in body["details"]), body
    assert await list_rrs(kube, namespace) == []
    reason = "invalid_json" if isinstance(payload, bytes) else "invalid_payload"
    assert counter("kubernaut_gateway_rejected_total", reason=reason) == before + 1


async def test_too_many_alerts_and_too_large_bodies(
    start_gateway: StartGateway, http: aiohttp.ClientSession, kube: AsyncClient, namespace: str
) -> None:
    server = await start_gateway(maxAlerts=1, maxBodyBytes=4096)
    status, body = await post(http, server, firing_payload())
    assert status == 400
    assert body == {"error": "too many alerts in one request", "details": ["alerts: 2 given, at most 1 accepted"]}

    big = firing_payload()
    big["alerts"][0]["annotations"]["description"] = "x" * 5000
    status, body = await post(http, server, big)
    assert status == 413
    assert body["error"] == "request body too large"

    async def chunks() -> AsyncIterator[bytes]:  # no Content-Length: the limit holds while reading
        for _ in range(10):
            yield b" " * 1000

    async with http.post(server.webhook_url, data=chunks()) as response:
        assert response.status == 413
    assert await list_rrs(kube, namespace) == []


@pytest.mark.parametrize("authorization", [None, "Bearer wrong", f"Basic {TOKEN}", "Bearer", f"bearer {TOKEN}x"])
async def test_missing_or_wrong_token_is_401(
    start_gateway: StartGateway, kube: AsyncClient, namespace: str, authorization: str | None
) -> None:
    server = await start_gateway()
    headers = {"Authorization": authorization} if authorization else {}
    async with aiohttp.ClientSession() as session:
        status, body = await post(session, server, firing_payload(), headers=headers)
    assert status == 401
    assert body["error"] == "missing or wrong bearer token"
    assert await list_rrs(kube, namespace) == []


async def test_token_from_a_secret(start_gateway: StartGateway, kube: AsyncClient, namespace: str) -> None:
    await kube.create(
        Secret(
            metadata=ObjectMeta(name="gw", namespace=namespace),
            data={"token": base64.b64encode(b"from-secret\n").decode()},
        )
    )
    server = await start_gateway(bearerTokenFile="", bearerTokenSecret=f"{namespace}/gw:token")
    async with aiohttp.ClientSession() as session:
        ok, _ = await post(session, server, firing_payload(), headers={"Authorization": "Bearer from-secret"})
        denied, _ = await post(session, server, firing_payload(), headers={"Authorization": f"Bearer {TOKEN}"})
    assert (ok, denied) == (200, 401)


async def test_auth_disabled_accepts_anyone(start_gateway: StartGateway) -> None:
    server = await start_gateway(bearerTokenFile="", authDisabled=True)
    async with aiohttp.ClientSession() as session:
        status, _ = await post(session, server, firing_payload())
    assert status == 200


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        ({"bearerTokenFile": ""}, "needs bearerTokenFile or bearerTokenSecret"),
        ({"bearerTokenFile": "/nonexistent/token"}, "bearerTokenFile cannot be read"),
        ({"bearerTokenFile": "", "bearerTokenSecret": "nowhere/none:token"}, "bearerTokenSecret: cannot read Secret"),
    ],
)
async def test_refuses_to_start_without_a_usable_token(
    kube: AsyncClient, namespace: str, overrides: dict[str, Any], message: str
) -> None:
    config = GatewayConfig.model_validate({"listen": "127.0.0.1:0", "namespace": namespace, **overrides})
    with pytest.raises(ConfigError, match=message):
        await GatewayServer(kube, config).start()


async def test_api_server_unreachable_is_503_so_alertmanager_retries(
    start_gateway: StartGateway, http: aiohttp.ClientSession
) -> None:
    config = KubeConfig.from_dict(
        {
            "clusters": [{"name": "c", "cluster": {"server": "http://127.0.0.1:9"}}],
            "users": [{"name": "u", "user": {"token": "t"}}],
            "contexts": [{"name": "x", "context": {"cluster": "c", "user": "u"}}],
            "current-context": "x",
        }
    )
    unreachable = AsyncClient(config=config, timeout=5)
    try:
        server = await start_gateway(client=unreachable)
        status, body = await post(http, server, firing_payload())
    finally:
        await unreachable.close()
    assert status == 503
    assert body["error"] == "could not record 2 of 2 alerts"
    assert all("ConnectError" in line for line in body["details"]), body


async def test_health_and_metrics_endpoints(start_gateway: StartGateway, http: aiohttp.ClientSession) -> None:
    server = await start_gateway()
    await post(http, server, firing_payload())
    async with http.get(f"{server.url}/healthz") as response:
        assert (response.status, await response.text()) == (200, "ok")
    async with http.get(f"{server.url}/metrics") as response:
        text = await response.text()
    for name in (
        "kubernaut_gateway_alerts_received_total",
        "kubernaut_gateway_alerts_deduplicated_total",
        "kubernaut_gateway_remediations_created_total",
        "kubernaut_gateway_rejected_total",
        'kubernaut_gateway_request_duration_seconds_bucket{code="200"',
    ):
        assert name in text


async def test_https_when_a_certificate_is_configured(
    start_gateway: StartGateway, tmp_path: Path, namespace: str
) -> None:
    import datetime
    import ssl

    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "127.0.0.1")])
    now = datetime.datetime.now(datetime.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(1)
        .not_valid_before(now - datetime.timedelta(minutes=1))
        .not_valid_after(now + datetime.timedelta(hours=1))
        .add_extension(
            x509.SubjectAlternativeName([x509.IPAddress(__import__("ipaddress").ip_address("127.0.0.1"))]),
            critical=False,
        )
        .sign(key, hashes.SHA256())
    )
    cert_file, key_file = tmp_path / "tls.crt", tmp_path / "tls.key"
    cert_file.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_file.write_bytes(
        key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())
    )
    server = await start_gateway(tlsCertFile=str(cert_file), tlsKeyFile=str(key_file))
    assert server.url.startswith("https://127.0.0.1:")
    context = ssl.create_default_context(cafile=str(cert_file))
    async with aiohttp.ClientSession(headers={"Authorization": f"Bearer {TOKEN}"}) as session:
        status, body = await post(session, server, copy.deepcopy(firing_payload()), ssl=context)
    assert status == 200
    assert len(body["created"]) == 2
