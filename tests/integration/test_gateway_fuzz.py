"""Malformed payloads thrown at the real gateway over HTTP: only 2xx or 4xx answers, never 5xx."""

import json
import uuid
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest_asyncio
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from lightkube import AsyncClient
from lightkube.models.meta_v1 import ObjectMeta
from lightkube.resources.core_v1 import Namespace

from kubernaut.config import GatewayConfig
from kubernaut.gateway import GatewayServer

FIXTURE = json.loads((Path(__file__).parents[1] / "unit" / "fixtures" / "alertmanager_firing.json").read_text())

json_scalars = st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=30)
json_values = st.recursive(
    json_scalars,
    lambda children: st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=12), children, max_size=4),
    max_leaves=20,
)
label_keys = st.sampled_from(
    ["alertname", "namespace", "pod", "deployment", "node", "severity", "job", "kubernaut_target_kind", "x"]
)


@st.composite
def mutated_payloads(draw: st.DrawFn) -> Any:
    """The captured payload with one part replaced by something of the wrong shape or value."""
    payload = json.loads(json.dumps(FIXTURE))
    alert = payload["alerts"][draw(st.integers(0, len(payload["alerts"]) - 1))]
    target = draw(st.sampled_from(["top", "alert", "labels", "label", "time", "alerts"]))
    if target == "top":
        payload[draw(st.sampled_from(["version", "alerts", "status", "groupKey"]))] = draw(json_values)
    elif target == "alert":
        alert[draw(st.sampled_from(["status", "labels", "annotations", "startsAt", "endsAt"]))] = draw(json_values)
    elif target == "labels":
        alert["labels"] = draw(st.dictionaries(label_keys, st.text(max_size=70) | json_scalars, max_size=5))
    elif target == "label":
        alert["labels"][draw(label_keys)] = draw(st.text(max_size=300))
    elif target == "time":
        alert["startsAt"] = draw(
            st.text(max_size=40) | st.sampled_from(["0001-01-01T00:00:00+14:00", "9999-12-31T23:59:59-14:00"])
        )
    else:
        payload["alerts"] = draw(st.lists(json_values, max_size=3))
    return payload


def encode(value: Any) -> bytes:
    return json.dumps(value).encode()


bodies = (
    st.binary(max_size=300)
    | st.text(max_size=200).map(str.encode)
    | json_values.map(encode)
    | mutated_payloads().map(encode)
    | st.integers(1, 100_000).map(lambda depth: b"[" * depth + b"]" * depth)
)


@pytest_asyncio.fixture(scope="module", loop_scope="session")
async def fuzz_target(kube: AsyncClient) -> AsyncIterator[tuple[GatewayServer, aiohttp.ClientSession]]:
    namespace = f"t-fuzz-{uuid.uuid4().hex[:8]}"
    await kube.create(Namespace(metadata=ObjectMeta(name=namespace)))
    config = GatewayConfig(listen="127.0.0.1:0", namespace=namespace, max_body_bytes=64 * 1024)
    server = GatewayServer(kube, config.model_copy(update={"auth_disabled": True}))
    await server.start()
    async with aiohttp.ClientSession() as session:
        yield server, session
    await server.stop()
    await kube.delete(Namespace, namespace)


@settings(max_examples=300, deadline=None, suppress_health_check=list(HealthCheck))
@given(body=bodies)
async def test_malformed_payloads_get_4xx_never_5xx(
    fuzz_target: tuple[GatewayServer, aiohttp.ClientSession], body: bytes
) -> None:
    server, session = fuzz_target
    async with session.post(server.webhook_url, data=body, headers={"Content-Type": "application/json"}) as response:
        status = response.status
        answer = await response.json()
    assert status < 500, (status, answer, body[:300])
    if status >= 400:
        assert isinstance(answer["error"], str)
        assert isinstance(answer["details"], list)
    async with session.get(f"{server.url}/healthz") as response:
        assert response.status == 200, "the server survives every request"
