"""The email channel against a real SMTP server on 127.0.0.1 (aiosmtpd)."""

import asyncio
import socket
import time
from collections.abc import Iterator
from email import message_from_bytes
from email.message import Message
from pathlib import Path
from typing import Any

import pytest
from aiosmtpd.controller import Controller
from aiosmtpd.smtp import SMTP, Envelope, Session
from lightkube import AsyncClient

from kubernaut.config import parse_settings
from kubernaut.kube.resources import NotificationRequestResource
from tests.integration.harness import running


class Mailbox:
    """Accepts every message, except one whose subject says `reject`."""

    def __init__(self) -> None:
        self.messages: list[Message] = []
        self.recipients: list[list[str]] = []

    async def handle_DATA(self, server: SMTP, session: Session, envelope: Envelope) -> str:
        message = message_from_bytes(envelope.original_content or b"")
        if "reject" in str(message["Subject"]):
            return "554 5.7.1 message refused"
        self.messages.append(message)
        self.recipients.append(list(envelope.rcpt_tos))
        return "250 OK"


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@pytest.fixture
def smtp_server() -> Iterator[tuple[Mailbox, int]]:
    mailbox = Mailbox()
    port = free_port()
    controller = Controller(mailbox, hostname="127.0.0.1", port=port)
    controller.start()
    try:
        yield mailbox, port
    finally:
        controller.stop()


def nr(name: str, namespace: str, subject: str) -> Any:
    return NotificationRequestResource(
        {
            "apiVersion": "kubernaut.ai/v1alpha1",
            "kind": "NotificationRequest",
            "metadata": {"name": name, "namespace": namespace},
            "spec": {
                "type": "escalation",
                "priority": "critical",
                "subject": subject,
                "body": "The remediation timed out.",
                "channels": ["email"],
            },
        }
    )


async def final_status(kube: AsyncClient, name: str, namespace: str, timeout: float = 30) -> dict[str, Any]:
    deadline = time.monotonic() + timeout
    while True:
        status = (await kube.get(NotificationRequestResource, name, namespace=namespace)).to_dict().get("status") or {}
        if status.get("phase") in ("Sent", "PartiallySent", "Failed"):
            return dict(status)
        assert time.monotonic() < deadline, f"{name} did not finish: {status}"
        await asyncio.sleep(0.05)


async def test_email_is_delivered_and_a_refusal_is_retried_then_given_up(
    smtp_server: tuple[Mailbox, int], kubeconfig: Path, kube: AsyncClient, namespace: str
) -> None:
    mailbox, port = smtp_server
    settings = parse_settings(
        {
            "notifier": {
                "maxAttempts": 2,
                "backoffBase": "100ms",
                "email": {
                    "smtpHost": "127.0.0.1",
                    "smtpPort": port,
                    "starttls": False,
                    "from": "kubernaut@example.com",
                    "to": ["oncall@example.com", "sre@example.com"],
                },
            }
        }
    )
    async with running(kubeconfig, settings, ("notifier",)):
        created = await kube.create(nr("mail", namespace, "Remediation timed out"))
        refused = await kube.create(nr("refused", namespace, "please reject this"))
        status = await final_status(kube, "mail", namespace)
        refused_status = await final_status(kube, "refused", namespace)

    assert status["phase"] == "Sent"
    assert len(mailbox.messages) == 1
    message = mailbox.messages[0]
    assert message["Subject"] == "[critical] Remediation timed out"
    assert message["From"] == "kubernaut@example.com"
    assert mailbox.recipients == [["oncall@example.com", "sre@example.com"]]
    assert created.metadata.uid in message["Message-ID"]
    assert "The remediation timed out." in message.get_payload()

    assert refused_status["phase"] == "Failed"
    assert [a["error"] for a in refused_status["deliveryAttempts"]] == ["email rejected by the SMTP server (554)"] * 2
    assert refused.metadata.uid
