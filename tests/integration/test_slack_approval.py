"""Approval from Slack end to end: the controllers and the gateway as their ServiceAccounts with the
shipped RBAC, a real HTTP server standing in for Slack (the incoming webhook and the response_url),
and clicks signed exactly as Slack signs them. The notifier posts the approval message with Approve
and Reject buttons; a correctly signed click from a listed user approves (decidedBy slack:<name>,
decidedVia slack) and replaces the message; a wrong signature, a stale timestamp, a replay and an
unlisted user each get 401/403 and change nothing."""

import asyncio
import base64
import json
import time
import urllib.parse
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp
import pytest
import pytest_asyncio
from aiohttp import web
from lightkube.models.meta_v1 import ObjectMeta
from lightkube.resources.core_v1 import Secret

from kubernaut.config import GatewayConfig
from kubernaut.domain.slack import build_signature
from kubernaut.gateway.server import GatewayServer
from kubernaut.kube.client import make_client
from kubernaut.kube.resources import RemediationApprovalRequestResource, RemediationRequestResource
from tests.integration.audit_e2e_support import list_audit_events
from tests.integration.harness import eventually
from tests.integration.operator_process import (
    SYSTEM_NAMESPACE,
    OperatorProcess,
    ProductionCluster,
    production_cluster,
    write_config,
)
from tests.integration.rr import rr_manifest, rr_status
from tests.integration.tekton_support import played

SIGNING_SECRET = "8f742231b10e8888abcd99yyyzzz85a5"
SIGNING_REF = f"{SYSTEM_NAMESPACE}/kubernaut-slack-signing-secret:signing-secret"
APPROVER = ("U0CAROL", "carol")


@dataclass
class SlackStandIn:
    """Slack's side: the incoming webhook the notifier posts to, and the response_url of clicks."""

    messages: list[dict[str, Any]] = field(default_factory=list)
    replies: list[dict[str, Any]] = field(default_factory=list)
    url: str = ""

    def app(self) -> web.Application:
        app = web.Application()

        async def webhook(request: web.Request) -> web.Response:
            self.messages.append(await request.json())
            return web.Response(text="ok")

        async def respond(request: web.Request) -> web.Response:
            self.replies.append(await request.json())
            return web.Response(text="ok")

        app.router.add_post("/webhook", webhook)
        app.router.add_post("/respond", respond)
        return app


@dataclass
class Running:
    cluster: ProductionCluster
    namespace: str
    slack: SlackStandIn
    gateway_url: str
    audit_db: Path


async def secret(cluster: ProductionCluster, name: str, values: dict[str, str]) -> None:
    data = {k: base64.b64encode(v.encode()).decode() for k, v in values.items()}
    await cluster.admin.create(Secret(metadata=ObjectMeta(name=name, namespace=SYSTEM_NAMESPACE), data=data))


@pytest_asyncio.fixture(loop_scope="session", scope="module")
async def running(tmp_path_factory: pytest.TempPathFactory, bundle_registry: str) -> AsyncIterator[Running]:
    directory = tmp_path_factory.mktemp("slack")
    slack = SlackStandIn()
    runner = web.AppRunner(slack.app())
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    slack.url = f"http://127.0.0.1:{runner.addresses[0][1]}"
    async with production_cluster(directory, registry=bundle_registry) as cluster:
        namespace = await cluster.namespace("slack")
        await secret(cluster, "kubernaut-slack-signing-secret", {"signing-secret": SIGNING_SECRET})
        await secret(cluster, "kubernaut-notification-channels", {"slack-url": f"{slack.url}/webhook"})
        extra = {
            "notifications": {"critical": ["slack"], "high": ["slack"], "medium": ["slack"], "low": ["slack"]},
            "notifier": {
                "slack": {
                    "webhookUrlSecret": f"{SYSTEM_NAMESPACE}/kubernaut-notification-channels:slack-url",
                    "signingSecretRef": SIGNING_REF,
                }
            },
            "approval": {"requiredFor": {"namespaces": [namespace]}, "slackApprovers": dict([APPROVER])},
        }
        procs = []
        gateway_client = make_client(await cluster.kubeconfig_for("gateway"))
        gateway = GatewayServer(
            gateway_client,
            GatewayConfig.model_validate(
                {"listen": "127.0.0.1:0", "namespace": SYSTEM_NAMESPACE, "authDisabled": True}
            ),
            slack_signing_secret_ref=SIGNING_REF,
            slack_approvers=dict([APPROVER]),
        )
        try:
            for component in ("orchestrator", "executor", "notifier"):
                config = write_config(
                    directory / f"{component}.yaml", audit_db=directory / f"{component}.db", extra=extra
                )
                kubeconfig = await cluster.kubeconfig_for(component)
                procs.append(
                    OperatorProcess(component, kubeconfig, config, component, directory / f"{component}.log").start()
                )
            for proc in procs:
                await proc.wait_ready()
            url = await gateway.start()
            yield Running(cluster, namespace, slack, url, directory / "orchestrator.db")
            for proc in procs:
                assert "forbidden" not in proc.log().lower(), f"{proc.name} was refused:\n{proc.log()[-3000:]}"
        finally:
            await gateway.stop()
            await gateway_client.close()
            for proc in procs:
                proc.stop_now()
            await runner.cleanup()


def click_body(button: dict[str, Any], user: str, response_url: str) -> bytes:
    payload = {
        "type": "block_actions",
        "user": {"id": user, "username": user.lower()},
        "actions": [{"action_id": button["action_id"], "value": button["value"], "type": "button"}],
        "response_url": response_url,
    }
    return urllib.parse.urlencode({"payload": json.dumps(payload)}).encode()


async def post(run: Running, body: bytes, *, timestamp: int | None = None, secret: str = SIGNING_SECRET) -> int:
    stamp = str(timestamp if timestamp is not None else int(time.time()))
    headers = {
        "X-Slack-Request-Timestamp": stamp,
        "X-Slack-Signature": build_signature(secret, stamp, body),
        "Content-Type": "application/x-www-form-urlencoded",
    }
    return await post_signed(run, body, headers)


async def post_signed(run: Running, body: bytes, headers: dict[str, str]) -> int:
    async with (
        aiohttp.ClientSession() as session,
        session.post(f"{run.gateway_url}/api/v1/slack/interactions", data=body, headers=headers) as response,
    ):
        return response.status


async def approval(run: Running, name: str) -> dict[str, Any]:
    return dict(
        (await run.cluster.admin.get(RemediationApprovalRequestResource, name, namespace=run.namespace)).to_dict()
    )


async def test_a_signed_click_approves_and_everything_else_changes_nothing(running: Running) -> None:
    where = {"kind": "Deployment", "name": "web", "namespace": running.namespace}
    body = rr_manifest("rr-slack", running.namespace, target=where, bundle=played("succeed:1tasks-1s"))
    await running.cluster.admin.create(RemediationRequestResource(body))

    async def posted() -> dict[str, Any] | None:  # the approval message, with its buttons, from the notifier
        for message in running.slack.messages:
            actions = [b for b in message["blocks"] if b["type"] == "actions"]
            if actions:
                return {e["action_id"]: e for e in actions[0]["elements"]}
        return None

    buttons = await eventually(posted, timeout=60, interval=0.1, what="the approval message in Slack")
    approve = buttons["kubernaut_approve"]
    assert approve["value"] == f"{running.namespace}/rar-rr-slack"
    assert set(buttons) == {"kubernaut_approve", "kubernaut_reject"}
    respond = f"{running.slack.url}/respond"
    good = click_body(approve, APPROVER[0], respond)

    # Refused, each changing nothing: a wrong signature, a stale timestamp, an unlisted user.
    assert await post(running, good, secret="not-the-secret") == 401
    assert await post(running, good, timestamp=int(time.time()) - 6 * 60) == 401
    assert await post(running, click_body(approve, "U0MALLORY", respond)) == 403
    unsigned = {"X-Slack-Request-Timestamp": str(int(time.time())), "Content-Type": "application/x-www-form-urlencoded"}
    assert await post_signed(running, good, unsigned) == 401
    rar = await approval(running, "rar-rr-slack")
    assert "kubernaut.ai/decision" not in (rar["metadata"].get("annotations") or {})
    assert (await rr_status(running.cluster.admin, "rr-slack", running.namespace))["overallPhase"] == "AwaitingApproval"
    assert running.slack.replies == []

    # The good click approves; its replay is refused.
    stamp = int(time.time())
    headers = {
        "X-Slack-Request-Timestamp": str(stamp),
        "X-Slack-Signature": build_signature(SIGNING_SECRET, str(stamp), good),
        "Content-Type": "application/x-www-form-urlencoded",
    }
    assert await post_signed(running, good, headers) == 200
    assert await post_signed(running, good, headers) == 401

    async def completed() -> dict[str, Any] | None:
        status = await rr_status(running.cluster.admin, "rr-slack", running.namespace)
        return status if status.get("overallPhase") in ("Completed", "Failed") else None

    done = await eventually(completed, timeout=60, interval=0.1, what="rr-slack finished")
    assert done["overallPhase"] == "Completed", done
    status = (await approval(running, "rar-rr-slack"))["status"]
    assert (status["decision"], status["decidedBy"], status["decidedVia"]) == ("Approved", "slack:carol", "slack")
    assert len(running.slack.replies) == 1
    reply = running.slack.replies[0]
    assert reply["replace_original"] is True
    assert reply["text"] == f"{running.namespace}/rar-rr-slack: approved by slack:carol"

    async def audited() -> list[dict[str, Any]]:
        events = await asyncio.to_thread(list_audit_events, f"sqlite:///{running.audit_db}")
        return [e for e in events if e["event_type"] == "orchestrator.approval.decided"]

    events = await eventually(audited, timeout=30, interval=0.2, what="the decision event")
    assert [(e["actor_id"], e["event_data"]["decided_via"]) for e in events] == [("slack:carol", "slack")]
