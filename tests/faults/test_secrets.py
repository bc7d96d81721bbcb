"""No secret leaks: after deliveries and failures that involve them, no Slack webhook URL, webhook
HMAC key, gateway token or database password appears in the operator's logs (at debug level), in
Kubernetes Events, in audit events or in any object the controllers wrote.

The whole system runs as `kubernaut run --verbose` (orchestrator, executor, notifier and gateway)
with a PostgreSQL audit store whose URL carries a password. An alert comes in through the gateway
(once with a wrong token), the workflow fails while executing, the manual-review notification meets
failing receivers and a database outage before everything is delivered."""

import asyncio
import base64
import json
import secrets
import uuid
from collections import Counter
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import aiohttp
import pytest
import pytest_asyncio
from aiohttp import web
from lightkube import AsyncClient
from lightkube.models.meta_v1 import ObjectMeta
from lightkube.resources.core_v1 import Event, Secret

from kubernaut.audit.factory import open_audit_store
from kubernaut.kube.resources import (
    NotificationRequestResource,
    RemediationRequestResource,
    RemediationWorkflowResource,
    WorkflowExecutionResource,
)
from tests.conftest_postgres import PostgresServer, running_postgres
from tests.faults.support import Operator, deadline, free_port, write_operator_config
from tests.integration.harness import create_execution_namespace, create_namespace, eventually
from tests.integration.tekton_support import played

pytestmark = [pytest.mark.tekton, pytest.mark.usefixtures("clean_cluster")]

ALERT = "SecretsLeakProbe"


class Receiver:
    """Webhook and Slack endpoints on loopback that refuse the first tries of each delivery."""

    def __init__(self, failures: int) -> None:
        self.failures = failures
        self.seen: Counter[str] = Counter()
        self.delivered: list[dict[str, Any]] = []
        self.url = ""

    async def handle(self, request: web.Request) -> web.Response:
        raw = await request.read()
        key = f"{request.path}|{request.headers.get('Idempotency-Key', '')}"
        self.seen[key] += 1
        if self.seen[key] <= self.failures:
            return web.Response(status=503, text="try later")
        self.delivered.append({"path": request.path, "headers": dict(request.headers), "body": raw.decode()})
        return web.Response(text="ok")


@pytest_asyncio.fixture(loop_scope="session")
async def receiver() -> AsyncIterator[Receiver]:
    state = Receiver(failures=2)
    app = web.Application()
    app.router.add_post("/{tail:.*}", state.handle)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    state.url = f"http://127.0.0.1:{runner.addresses[0][1]}"
    yield state
    await runner.cleanup()


@pytest.fixture
def postgres() -> Any:
    with running_postgres() as server:
        yield server


@deadline()
async def test_no_secret_appears_anywhere(
    kube: AsyncClient, kubeconfig: Path, tmp_path: Path, receiver: Receiver, postgres: PostgresServer
) -> None:
    slack_token = f"XOXB{secrets.token_hex(12)}"
    hmac_key = f"hmac-{secrets.token_hex(16)}"
    gateway_token = secrets.token_urlsafe(32)
    db_password = f"pw-{secrets.token_hex(12)}"
    slack_url = f"{receiver.url}/services/T0001/B0001/{slack_token}"
    database = postgres.create_database().rsplit("/", 1)[1]
    audit_url = f"postgresql://kubernaut:{db_password}@127.0.0.1:{postgres.port}/{database}"
    leaks = {"slack URL": slack_url, "slack token": slack_token, "HMAC key": hmac_key}
    leaks |= {"gateway token": gateway_token, "database password": db_password}

    system = await create_namespace(kube, "system")
    target_ns = await create_namespace(kube, "shop")
    exec_ns = await create_execution_namespace(kube)
    data = {"slack-url": slack_url, "hmac": hmac_key, "gateway-token": gateway_token}
    await kube.create(
        Secret(
            metadata=ObjectMeta(name="kubernaut", namespace=system),
            data={k: base64.b64encode(v.encode()).decode() for k, v in data.items()},
        )
    )
    catalog_name = f"leak-probe-{uuid.uuid4().hex[:6]}"
    await kube.create(
        RemediationWorkflowResource(
            {
                "apiVersion": "kubernaut.ai/v1alpha1",
                "kind": "RemediationWorkflow",
                "metadata": {"name": catalog_name},
                "spec": {
                    "workflowId": "leak-probe",
                    "version": "1",
                    "containerImage": played("fail:task1of1-exit2-0s"),
                    "match": {"signalNames": [ALERT]},
                },
            }
        )
    )
    gateway_port = free_port()
    config = write_operator_config(
        tmp_path / "operator.yaml",
        exec_ns,
        tmp_path / "unused.db",
        audit={"url": audit_url, "bufferPath": str(tmp_path / "outbox.db"), "flushInterval": "100ms"},
        gateway={
            "listen": f"127.0.0.1:{gateway_port}",
            "namespace": system,
            "bearerTokenSecret": f"{system}/kubernaut:gateway-token",
        },
        notifier={
            "backoffBase": "200ms",
            "backoffMax": "1s",
            "webhook": {"url": f"{receiver.url}/hook", "signingSecret": f"{system}/kubernaut:hmac"},
            "slack": {"webhookUrlSecret": f"{system}/kubernaut:slack-url"},
        },
        notifications={"critical": ["webhook", "slack"], "high": ["webhook", "slack"]},
    )
    operator = Operator(kubeconfig, tmp_path, controllers="orchestrator,executor,notifier,gateway")
    try:
        operator.start(config, extra_env={"NO_COLOR": "1"}, verbose=True)
        await operator.wait_ready()
        alert = {
            "version": "4",
            "status": "firing",
            "receiver": "kubernaut",
            "alerts": [
                {
                    "status": "firing",
                    "labels": {
                        "alertname": ALERT,
                        "namespace": target_ns,
                        "deployment": "api",
                        "severity": "critical",
                    },
                    "annotations": {"summary": "probe"},
                    "startsAt": datetime.now(UTC).isoformat(),
                    "endsAt": "0001-01-01T00:00:00Z",
                }
            ],
        }
        url = f"http://127.0.0.1:{gateway_port}/api/v1/signals/alertmanager"
        async with aiohttp.ClientSession() as session:
            async with session.post(url, json=alert, headers={"Authorization": "Bearer wrong"}) as refused:
                assert refused.status == 401
                assert gateway_token not in await refused.text()
            async with session.post(url, json=alert, headers={"Authorization": f"Bearer {gateway_token}"}) as ok:
                assert ok.status == 200, await ok.text()

        # The audit database goes away while the remediation fails and its notification is sent.
        await asyncio.to_thread(postgres.stop)

        async def failed() -> bool:
            async for rr in kube.list(RemediationRequestResource, namespace=system):
                if (rr.to_dict().get("status") or {}).get("overallPhase") == "Failed":
                    return True
            return False

        await eventually(failed, timeout=60, what="the remediation failed while executing")
        await asyncio.sleep(2)  # the audit writer retries against the stopped database meanwhile
        await asyncio.to_thread(postgres.start)

        async def notified() -> bool:
            async for nr in kube.list(NotificationRequestResource, namespace=system):
                if (nr.to_dict().get("status") or {}).get("phase") == "Sent":
                    return True
            return False

        await eventually(notified, timeout=60, what="the manual-review notification sent on every channel")
        assert await operator.stop() == 0, operator.tail()
    finally:
        operator.cleanup()
        await kube.delete(RemediationWorkflowResource, catalog_name)

    # The secrets were used: the webhook was signed with the key, Slack got its URL, the store filled.
    signed = [d for d in receiver.delivered if d["path"] == "/hook"]
    assert signed
    assert all(d["headers"].get("X-Kubernaut-Signature", "").startswith("sha256=") for d in signed)
    assert any(d["path"].endswith(slack_token) for d in receiver.delivered)
    logs = operator.all_logs()
    assert "Audit store unavailable" in logs, "the outage was noticed (and logged without the password)"
    async with open_audit_store(audit_url) as store:
        audit = [event.model_dump_json() for event in await store.list_events()]
    assert any("notification" in event for event in audit)

    where: dict[str, str] = {"operator log": logs, "audit events": "\n".join(audit)}
    events = [e.to_dict() async for e in kube.list(Event, namespace="*")]
    where["Kubernetes Events"] = json.dumps(events)
    for resource in (
        RemediationRequestResource,
        WorkflowExecutionResource,
        NotificationRequestResource,
    ):
        for namespace in (system, target_ns):
            bodies = [o.to_dict() async for o in kube.list(resource, namespace=namespace)]
            where[f"{resource.__name__} objects"] = where.get(f"{resource.__name__} objects", "") + json.dumps(bodies)
    found = [
        f"{secret} in {place}" for secret, value in leaks.items() for place, text in where.items() if value in text
    ]
    print("secrets:", {place: len(text) for place, text in where.items()}, "deliveries:", len(receiver.delivered))
    assert found == []
