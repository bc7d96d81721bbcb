"""Notifier passes against a fake API server: a request that cannot be read ends Failed, and an audit
failure after a send never sends again."""

import copy
from datetime import UTC, datetime
from typing import Any

import pytest

from kubernaut.audit.memory import MemoryAuditSink
from kubernaut.audit.store import AuditError
from kubernaut.config import parse_settings
from kubernaut.controllers.kinds import NR_KIND
from kubernaut.controllers.manager import Manager
from kubernaut.controllers.notifier import Notifier
from kubernaut.kube.runtime import Result
from kubernaut.notify.channels import Message
from tests.unit.fake_api import FakeApi

NOW = datetime(2026, 5, 1, 12, 0, tzinfo=UTC)
KEY = "team/nr-1"


class CountingChannel:
    name = "console"

    def __init__(self) -> None:
        self.sent: list[Message] = []

    async def send(self, message: Message) -> None:
        self.sent.append(message)


def build_nr(spec: dict[str, Any]) -> dict[str, Any]:
    return {
        "apiVersion": "kubernaut.ai/v1alpha1",
        "kind": "NotificationRequest",
        "metadata": {"name": "nr-1", "namespace": "team", "uid": "uid-nr-1", "resourceVersion": "3"},
        "spec": {
            "type": "escalation",
            "priority": "high",
            "subject": "Remediation timed out",
            "body": "It timed out.",
            "channels": ["console"],
            **spec,
        },
    }


def build_notifier(body: dict[str, Any]) -> tuple[Notifier, Manager, FakeApi, CountingChannel, MemoryAuditSink]:
    api = FakeApi(body)
    audit = MemoryAuditSink()
    settings = parse_settings({"execution": {"namespace": "exec"}, "audit": {"url": "memory://"}})
    manager = Manager(client=api, settings=settings, audit=audit, clock=lambda: NOW)  # type: ignore[arg-type]
    notifier = Notifier(manager)
    channel = CountingChannel()
    notifier.channels = {"console": channel}
    notifier.configured = frozenset(notifier.channels)
    manager.dispatch(NR_KIND.plural, "ADDED", body)
    return notifier, manager, api, channel, audit


def watch_delivers(manager: Manager, api: FakeApi) -> None:
    manager.dispatch(NR_KIND.plural, "MODIFIED", copy.deepcopy(api.body))


@pytest.mark.parametrize(
    ("spec", "where"),
    [
        pytest.param({"priority": "urgent"}, "spec.priority", id="priority"),
        pytest.param({"channels": ["pigeon"]}, "spec.channels.0", id="channel"),
        pytest.param({"subject": ""}, "spec.subject", id="subject"),
    ],
)
async def test_a_request_that_cannot_be_read_ends_failed_saying_why(spec: dict[str, Any], where: str) -> None:
    notifier, manager, api, channel, _ = build_notifier(build_nr(spec))

    assert await notifier.reconcile(KEY) == Result.done()

    status = api.body["status"]
    assert status["phase"] == "Failed"
    assert status["reason"] == "InvalidNotificationRequest"
    assert where in status["message"]
    assert status["completionTime"] == "2026-05-01T12:00:00Z"
    assert channel.sent == []
    # the Failed phase it wrote ends it: the next pass writes nothing
    watch_delivers(manager, api)
    assert await notifier.reconcile(KEY) == Result.done()
    assert len(api.status_patches) == 1


async def test_an_audit_failure_after_a_send_does_not_send_again() -> None:
    notifier, manager, api, channel, audit = build_notifier(build_nr({}))
    audit.failing = True

    with pytest.raises(AuditError):
        await notifier.reconcile(KEY)  # the final event cannot be recorded: the pass is retried
    assert len(channel.sent) == 1
    [attempt] = api.body["status"]["deliveryAttempts"]
    assert attempt["channel"] == "console"
    assert attempt["status"] == "success"

    for _ in range(2):  # the retries, still without audit
        watch_delivers(manager, api)
        with pytest.raises(AuditError):
            await notifier.reconcile(KEY)
    assert len(channel.sent) == 1

    audit.failing = False
    watch_delivers(manager, api)
    assert await notifier.reconcile(KEY) == Result.done()
    assert api.body["status"]["phase"] == "Sent"
    assert len(channel.sent) == 1
    assert audit.of_type("notification.sent")
