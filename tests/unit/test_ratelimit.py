"""The client-side token bucket and the client it is put in front of.

Time is a fake clock; the bucket's sleep advances it, so nothing waits for real."""

import asyncio
import json
from pathlib import Path

import httpx2
import pytest
from lightkube import AsyncClient
from lightkube.resources.coordination_v1 import Lease
from lightkube.resources.core_v1 import ConfigMap

from kubernaut.kube.client import make_client
from kubernaut.kube.ratelimit import TokenBucket


class FakeClock:
    def __init__(self) -> None:
        self.now = 1000.0
        self.sleeps: list[float] = []

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds

    async def sleep(self, seconds: float) -> None:
        self.sleeps.append(seconds)
        self.advance(seconds)


def bucket(qps: float, burst: int, clock: FakeClock) -> TokenBucket:
    return TokenBucket(qps, burst, clock=clock, sleep=clock.sleep)


def test_a_full_bucket_lets_a_burst_through_at_once_then_paces_at_qps() -> None:
    clock = FakeClock()
    limiter = bucket(10, 5, clock)
    assert [limiter.reserve() for _ in range(5)] == [0, 0, 0, 0, 0]
    assert [limiter.reserve() for _ in range(3)] == pytest.approx([0.1, 0.2, 0.3])  # in order, 1/qps apart


async def test_waiters_are_paced_at_qps() -> None:
    clock = FakeClock()
    limiter = bucket(10, 5, clock)
    start = clock()
    waits = [await limiter.acquire() for _ in range(25)]
    assert waits[:5] == [0] * 5
    assert waits[5:] == pytest.approx([0.1] * 20)  # each sleeps until its token has accrued
    assert clock() - start == pytest.approx(2.0)  # 20 beyond the burst at 10 a second


def test_tokens_refill_with_the_clock_up_to_the_burst() -> None:
    clock = FakeClock()
    limiter = bucket(10, 5, clock)
    for _ in range(5):
        limiter.reserve()
    assert limiter.tokens == pytest.approx(0)
    clock.advance(0.3)
    assert limiter.tokens == pytest.approx(3)
    clock.advance(3600)
    assert limiter.tokens == 5  # never more than the burst
    assert [limiter.reserve() for _ in range(6)] == pytest.approx([0, 0, 0, 0, 0, 0.1])


async def test_a_cancelled_wait_gives_its_token_back() -> None:
    clock = FakeClock()
    limiter = TokenBucket(1, 1, clock=clock)  # a real sleep, so the wait can be cancelled
    limiter.reserve()
    waiter = asyncio.create_task(limiter.acquire())
    await asyncio.sleep(0)
    assert limiter.tokens == pytest.approx(-1)
    waiter.cancel()
    with pytest.raises(asyncio.CancelledError):
        await waiter
    assert limiter.tokens == pytest.approx(0)


@pytest.mark.parametrize(("qps", "burst"), [(0, 1), (-1, 1), (1, 0), (float("nan"), 1)])
def test_a_bucket_needs_positive_qps_and_burst(qps: float, burst: int) -> None:
    with pytest.raises(ValueError, match="qps > 0 and burst >= 1"):
        TokenBucket(qps, burst)


# -- the operator's client -------------------------------------------------------------------------


def _configmap(name: str) -> dict[str, object]:
    return {"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": name, "namespace": "ns"}}


def _lease() -> dict[str, object]:
    return {"apiVersion": "coordination.k8s.io/v1", "kind": "Lease", "metadata": {"name": "l", "namespace": "ns"}}


WATCH_EVENTS = 5


def _answer(request: httpx2.Request) -> httpx2.Response:
    if request.url.params.get("watch") == "true":
        lines = (json.dumps({"type": "ADDED", "object": _configmap(f"cm-{i}")}) for i in range(WATCH_EVENTS))
        return httpx2.Response(200, content=("\n".join(lines) + "\n").encode())
    if "/leases/" in request.url.path:
        return httpx2.Response(200, json=_lease())
    return httpx2.Response(200, json=_configmap("cm"))


def _client_on_fake_transport(kubeconfig: Path, limiter: TokenBucket | None) -> tuple[AsyncClient, list[str]]:
    sent: list[str] = []

    def handler(request: httpx2.Request) -> httpx2.Response:
        sent.append(request.url.path)
        return _answer(request)

    client = make_client(kubeconfig, rate_limit=limiter)
    client._client._client._transport = httpx2.MockTransport(handler)
    return client, sent


async def test_every_request_of_the_client_takes_a_token(kubeconfig: Path) -> None:
    clock = FakeClock()
    limiter = bucket(2, 3, clock)
    client, sent = _client_on_fake_transport(kubeconfig, limiter)
    for _ in range(5):
        await client.get(ConfigMap, "cm", namespace="ns")
    assert len(sent) == 5
    assert clock.sleeps == pytest.approx([0.5, 0.5])  # three at once, then paced at 2 a second
    assert limiter.tokens == pytest.approx(-0.0)


async def test_a_watch_takes_one_token_when_opened_none_per_event(kubeconfig: Path) -> None:
    clock = FakeClock()
    limiter = bucket(1, 10, clock)
    client, sent = _client_on_fake_transport(kubeconfig, limiter)
    events = 0
    async for _ in client.watch(ConfigMap, namespace="ns"):
        events += 1
        if events == WATCH_EVENTS:
            break
    assert len(sent) == 1
    assert limiter.tokens == pytest.approx(9)


async def test_lease_requests_take_no_token(kubeconfig: Path) -> None:
    clock = FakeClock()
    limiter = bucket(1, 1, clock)
    client, sent = _client_on_fake_transport(kubeconfig, limiter)
    limiter.reserve()  # empty: any request that took a token would wait
    for _ in range(3):
        await client.get(Lease, "l", namespace="ns")
    assert len(sent) == 3
    assert clock.sleeps == []


async def test_without_a_bucket_the_client_is_not_limited(kubeconfig: Path) -> None:
    client, sent = _client_on_fake_transport(kubeconfig, None)
    for _ in range(3):
        await client.get(ConfigMap, "cm", namespace="ns")
    assert len(sent) == 3
    assert client._client._client.event_hooks["request"] == []


async def test_the_operators_client_is_limited_by_the_client_settings(kubeconfig: Path) -> None:
    from prometheus_client import REGISTRY

    from kubernaut.audit.memory import MemoryAuditSink
    from kubernaut.config import parse_settings
    from kubernaut.controllers.manager import build_manager

    settings = parse_settings({"audit": {"url": "memory://"}, "client": {"qps": 5, "burst": 1}})
    manager = build_manager(settings, kubeconfig=kubeconfig, controllers=(), audit=MemoryAuditSink())
    http = manager.client._client._client
    assert len(http.event_hooks["request"]) == 1
    http._transport = httpx2.MockTransport(_answer)

    def throttled() -> float:
        return REGISTRY.get_sample_value("kubernaut_client_throttled_requests_total") or 0.0

    before = throttled()
    for _ in range(3):  # one at once, then two more 0.2 s apart
        await manager.client.get(ConfigMap, "cm", namespace="ns")
    assert throttled() - before == 2
