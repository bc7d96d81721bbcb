"""The notifier in-process against the real API server and real HTTP receivers on 127.0.0.1."""

import asyncio
import base64
import contextlib
import hashlib
import hmac
import json
import logging
import time
import uuid
from collections import Counter, defaultdict
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
import pytest_asyncio
from aiohttp import web
from lightkube import AsyncClient
from lightkube.models.meta_v1 import ObjectMeta
from lightkube.resources.core_v1 import Namespace, Secret

from kubernaut.audit.memory import MemoryAuditSink
from kubernaut.config import Settings, parse_settings
from kubernaut.kube.client import patch_status
from kubernaut.kube.resources import NotificationRequestResource
from tests.integration.harness import running

HMAC_KEY = "hmac-key-" + uuid.uuid4().hex
SLACK_PATH = "/services/T000/B000/" + uuid.uuid4().hex  # the secret part of a Slack webhook URL


@dataclass
class Receiver:
    """Records every request; `fail-first: N` in a notification's metadata fails its first N."""

    url: str = ""
    requests: list[dict[str, Any]] = field(default_factory=list)
    delivered: Counter[str] = field(default_factory=Counter)  # 2xx answers per idempotency key
    seen: defaultdict[str, int] = field(default_factory=lambda: defaultdict(int))

    def for_notification(self, name: str) -> list[dict[str, Any]]:
        return [r for r in self.requests if r["json"].get("name") == name or name in json.dumps(r["json"])]


@pytest_asyncio.fixture(scope="module", loop_scope="session")
async def receiver() -> AsyncIterator[Receiver]:
    state = Receiver()

    async def handle(request: web.Request, kind: str) -> web.Response:
        raw = await request.read()
        body = json.loads(raw)
        key = request.headers.get("Idempotency-Key", "")
        signature = request.headers.get("X-Kubernaut-Signature", "")
        expected = "sha256=" + hmac.new(HMAC_KEY.encode(), raw, hashlib.sha256).hexdigest()
        state.requests.append(
            {"kind": kind, "key": key, "json": body, "signature_ok": hmac.compare_digest(signature, expected)}
        )
        state.seen[key] += 1
        metadata = body.get("metadata") or {}
        if kind == "slack":
            if "no_service" in json.dumps(body):
                return web.Response(status=404, text="no_service")
        elif state.seen[key] <= int(metadata.get("fail-first", "0")):
            return web.Response(status=503, text="try later")
        state.delivered[key] += 1
        return web.Response(text="ok")

    async def webhook(request: web.Request) -> web.Response:
        return await handle(request, "webhook")

    async def slack(request: web.Request) -> web.Response:
        return await handle(request, "slack")

    app = web.Application()
    app.router.add_post("/hook", webhook)
    app.router.add_post(SLACK_PATH, slack)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    state.url = f"http://127.0.0.1:{runner.addresses[0][1]}"
    yield state
    await runner.cleanup()


@pytest_asyncio.fixture(scope="module", loop_scope="session")
async def secrets_namespace(kube: AsyncClient, receiver: Receiver) -> AsyncIterator[str]:
    name = f"t-notify-{uuid.uuid4().hex[:8]}"
    await kube.create(Namespace(metadata=ObjectMeta(name=name)))

    def b64(text: str) -> str:
        return base64.b64encode(text.encode()).decode()

    await kube.create(
        Secret(
            metadata=ObjectMeta(name="notifier", namespace=name),
            data={"slack-url": b64(receiver.url + SLACK_PATH), "hmac": b64(HMAC_KEY)},
        )
    )
    yield name
    await kube.delete(Namespace, name)


def notifier_settings(receiver: Receiver, secrets_namespace: str) -> Settings:
    return parse_settings(
        {
            "notifier": {
                "maxAttempts": 3,
                "backoffBase": "100ms",
                "backoffMax": "1s",
                "webhook": {"url": f"{receiver.url}/hook", "signingSecret": f"{secrets_namespace}/notifier:hmac"},
                "slack": {"webhookUrlSecret": f"{secrets_namespace}/notifier:slack-url"},
            }
        }
    )


@contextlib.asynccontextmanager
async def notifier_running(
    receiver: Receiver, secrets_namespace: str, kubeconfig: Path
) -> AsyncIterator[MemoryAuditSink]:
    """The notifier, running in this test's task."""
    audit = MemoryAuditSink()
    async with running(kubeconfig, notifier_settings(receiver, secrets_namespace), ("notifier",), audit=audit):
        yield audit


def nr_body(name: str, namespace: str, channels: list[str], subject: str = "", **metadata: str) -> dict[str, Any]:
    return {
        "apiVersion": "kubernaut.ai/v1alpha1",
        "kind": "NotificationRequest",
        "metadata": {"name": name, "namespace": namespace},
        "spec": {
            "type": "manual-review",
            "priority": "high",
            "subject": subject or f"Manual review needed: {name}",
            "body": "The workflow *restart-pod* failed on `payments/Deployment/api`.",
            "channels": channels,
            "metadata": {"remediationRequest": "rr-1", **metadata},
        },
    }


async def create_nr(kube: AsyncClient, body: dict[str, Any]) -> dict[str, Any]:
    created = await kube.create(NotificationRequestResource(body))
    return dict(created.to_dict())


async def wait_for_phase(
    kube: AsyncClient, name: str, namespace: str, phases: set[str], timeout: float = 30
) -> dict[str, Any]:
    deadline = time.monotonic() + timeout
    while True:
        body = (await kube.get(NotificationRequestResource, name, namespace=namespace)).to_dict()
        if (body.get("status") or {}).get("phase") in phases:
            return dict(body)
        if time.monotonic() > deadline:
            raise AssertionError(f"{name} not in {phases} within {timeout}s: {body.get('status')}")
        await asyncio.sleep(0.05)


async def test_delivers_on_every_configured_channel_once(
    secrets_namespace: str, kubeconfig: Path, receiver: Receiver, kube: AsyncClient, namespace: str
) -> None:
    async with notifier_running(receiver, secrets_namespace, kubeconfig) as audit:
        created = await create_nr(kube, nr_body("all", namespace, ["webhook", "slack", "console", "log"]))
        uid = created["metadata"]["uid"]
        body = await wait_for_phase(kube, "all", namespace, {"Sent", "PartiallySent", "Failed"})
        status = body["status"]
        assert status["phase"] == "Sent"
        assert (status["totalAttempts"], status["successfulDeliveries"], status["failedDeliveries"]) == (4, 4, 0)
        assert status["reason"] == "AllDeliveriesSucceeded"
        assert status["completionTime"]
        assert sorted(a["channel"] for a in status["deliveryAttempts"]) == ["console", "log", "slack", "webhook"]
        assert all(a["status"] == "success" and a["attempt"] == 1 for a in status["deliveryAttempts"])

        assert receiver.delivered[f"{uid}:webhook"] == 1
        assert receiver.delivered[f"{uid}:slack"] == 1
        hook = next(r for r in receiver.requests if r["key"] == f"{uid}:webhook")
        assert hook["signature_ok"], "the receiver recomputes the HMAC over the exact body"
        assert hook["json"]["subject"] == "Manual review needed: all"
        assert hook["json"]["metadata"] == {"remediationRequest": "rr-1"}
        slack = next(r for r in receiver.requests if r["key"] == f"{uid}:slack")
        assert slack["json"]["text"] == "[high] Manual review needed: all"
        assert [b["type"] for b in slack["json"]["blocks"]] == ["header", "section", "context"]

        events = audit.of_type("notification.sent", "all")
        assert len(events) == 1
        assert len(audit.of_type("notification.delivery.attempted", "all")) == 4


async def test_retries_with_backoff_until_the_receiver_accepts(
    secrets_namespace: str, kubeconfig: Path, receiver: Receiver, kube: AsyncClient, namespace: str
) -> None:
    async with notifier_running(receiver, secrets_namespace, kubeconfig):
        created = await create_nr(kube, nr_body("flaky", namespace, ["webhook"], **{"fail-first": "2"}))
        uid = created["metadata"]["uid"]
        body = await wait_for_phase(kube, "flaky", namespace, {"Sent", "PartiallySent", "Failed"})
        attempts = body["status"]["deliveryAttempts"]
        assert [(a["attempt"], a["status"]) for a in attempts] == [(1, "failed"), (2, "failed"), (3, "success")]
        assert attempts[0]["error"] == "webhook responded 503"
        assert attempts[1]["timestamp"] > attempts[0]["timestamp"], "the retry waited for its back-off"
        assert body["status"]["phase"] == "Sent"
        assert receiver.seen[f"{uid}:webhook"] == 3
        assert receiver.delivered[f"{uid}:webhook"] == 1


async def test_gives_up_after_max_attempts(
    secrets_namespace: str, kubeconfig: Path, receiver: Receiver, kube: AsyncClient, namespace: str
) -> None:
    async with notifier_running(receiver, secrets_namespace, kubeconfig) as audit:
        created = await create_nr(kube, nr_body("down", namespace, ["webhook", "log"], **{"fail-first": "99"}))
        uid = created["metadata"]["uid"]
        body = await wait_for_phase(kube, "down", namespace, {"Sent", "PartiallySent", "Failed"})
        status = body["status"]
        assert status["phase"] == "PartiallySent"
        assert (status["successfulDeliveries"], status["failedDeliveries"], status["totalAttempts"]) == (1, 1, 4)
        assert status["message"] == "Delivered on log; gave up on webhook"
        assert receiver.seen[f"{uid}:webhook"] == 3
        assert len(audit.of_type("notification.partially_sent", "down")) == 1


async def test_an_unconfigured_channel_fails_at_once_without_retries(
    receiver: Receiver, secrets_namespace: str, kubeconfig: Path, kube: AsyncClient, namespace: str
) -> None:
    async with notifier_running(receiver, secrets_namespace, kubeconfig):
        await create_nr(kube, nr_body("nowhere", namespace, ["email", "teams"]))
        body = await wait_for_phase(kube, "nowhere", namespace, {"Sent", "PartiallySent", "Failed"})
        status = body["status"]
        assert status["phase"] == "Failed"
        assert status["reason"] == "AllDeliveriesFailed"
        assert [(a["channel"], a["attempt"], a["error"]) for a in status["deliveryAttempts"]] == [
            ("email", 1, "channel email is not configured on this notifier"),
            ("teams", 1, "channel teams is not configured on this notifier"),
        ]


async def test_no_secret_in_status_or_logs(
    secrets_namespace: str,
    kubeconfig: Path,
    receiver: Receiver,
    kube: AsyncClient,
    namespace: str,
    caplog: pytest.LogCaptureFixture,
) -> None:
    async with notifier_running(receiver, secrets_namespace, kubeconfig):
        caplog.set_level(logging.DEBUG)
        await create_nr(kube, nr_body("secretive", namespace, ["slack", "webhook"], subject="Slack answers no_service"))
        body = await wait_for_phase(kube, "secretive", namespace, {"Sent", "PartiallySent", "Failed"})
        assert body["status"]["phase"] == "PartiallySent"
        errors = [a.get("error") for a in body["status"]["deliveryAttempts"] if a["channel"] == "slack"]
        assert errors == ["slack responded 404 (no_service)"] * 3
        everything = json.dumps(body) + "\n".join(r.getMessage() for r in caplog.records)
        for secret in (SLACK_PATH, HMAC_KEY, receiver.url + SLACK_PATH):
            assert secret not in everything


async def test_a_channel_recorded_successful_is_not_sent_again_after_a_restart(
    receiver: Receiver, secrets_namespace: str, kubeconfig: Path, kube: AsyncClient, namespace: str
) -> None:
    # a notifier stopped after delivering on webhook and recording it, before slack
    created = await create_nr(kube, nr_body("resumed", namespace, ["webhook", "slack"]))
    uid = created["metadata"]["uid"]
    now = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
    await patch_status(
        kube,
        NotificationRequestResource,
        "resumed",
        namespace,
        {
            "phase": "Sending",
            "totalAttempts": 1,
            "successfulDeliveries": 1,
            "deliveryAttempts": [{"channel": "webhook", "attempt": 1, "timestamp": now, "status": "success"}],
        },
    )
    async with notifier_running(receiver, secrets_namespace, kubeconfig):
        body = await wait_for_phase(kube, "resumed", namespace, {"Sent", "PartiallySent", "Failed"})
    assert body["status"]["phase"] == "Sent"
    assert receiver.seen[f"{uid}:webhook"] == 0
    assert receiver.delivered[f"{uid}:slack"] == 1
    assert [(a["channel"], a["attempt"]) for a in body["status"]["deliveryAttempts"]] == [("webhook", 1), ("slack", 1)]
