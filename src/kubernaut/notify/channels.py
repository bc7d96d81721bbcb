"""Delivery channels: console, log, webhook, Slack and email.

A channel either returns (delivered) or raises DeliveryError with a message that is safe to put
in status, logs and Events: it names the channel and the kind of failure, never a URL, token,
key or password (a Slack webhook URL *is* the credential).
"""

import asyncio
import hashlib
import hmac
import json
import logging
import re
import smtplib
import ssl
import sys
from collections.abc import Callable
from dataclasses import dataclass, field
from email.message import EmailMessage
from typing import Any, Protocol, TextIO

import aiohttp
from lightkube import AsyncClient

from kubernaut.config import EmailChannelConfig, NotifierConfig, SlackChannelConfig, WebhookChannelConfig
from kubernaut.domain.slack import build_approval_actions
from kubernaut.errors import KubernautError
from kubernaut.notify.secrets import SecretUnavailableError, fetch_secret_value

log = logging.getLogger(__name__)
notifications_log = logging.getLogger("kubernaut.notifications")

SIGNATURE_HEADER = "X-Kubernaut-Signature"
IDEMPOTENCY_HEADER = "Idempotency-Key"
_SLACK_ERROR = re.compile(r"^[a-z_]{1,60}$")
_SLACK_SECTION_LIMIT = 2900
_SLACK_HEADER_LIMIT = 150


class DeliveryError(KubernautError):
    """One delivery attempt failed; the message is safe to record."""


@dataclass(frozen=True)
class Message:
    """A NotificationRequest as channels see it."""

    name: str
    namespace: str
    uid: str
    type: str
    priority: str
    subject: str
    body: str
    metadata: dict[str, str] = field(default_factory=dict)

    def idempotency_key(self, channel: str) -> str:
        return f"{self.uid}:{channel}"

    def to_json(self, channel: str) -> dict[str, Any]:
        return {
            "apiVersion": "kubernaut.ai/v1alpha1",
            "kind": "NotificationRequest",
            "name": self.name,
            "namespace": self.namespace,
            "uid": self.uid,
            "channel": channel,
            "type": self.type,
            "priority": self.priority,
            "subject": self.subject,
            "body": self.body,
            "metadata": dict(self.metadata),
        }


class Channel(Protocol):
    name: str

    async def send(self, message: Message) -> None: ...


def build_signature(key: str, body: bytes) -> str:
    """`sha256=<hex HMAC-SHA256 of the exact request body>`, what receivers recompute."""
    return "sha256=" + hmac.new(key.encode(), body, hashlib.sha256).hexdigest()


def _render_text(message: Message) -> str:
    return f"[{message.priority}] {message.subject}\n\n{message.body}\n\n({message.namespace}/{message.name})"


class ConsoleChannel:
    name = "console"

    def __init__(self, stream: TextIO | None = None) -> None:
        self._stream = stream

    async def send(self, message: Message) -> None:
        stream = self._stream or sys.stdout
        stream.write(f"--- notification ---\n{_render_text(message)}\n")
        stream.flush()


class LogChannel:
    name = "log"

    async def send(self, message: Message) -> None:
        notifications_log.info(
            "Notification %s/%s [%s/%s]: %s\n%s",
            message.namespace,
            message.name,
            message.type,
            message.priority,
            message.subject,
            message.body,
        )


SessionFactory = Callable[[], aiohttp.ClientSession]


async def _post_json(
    channel: str, session: aiohttp.ClientSession, url: str, body: bytes, headers: dict[str, str], seconds: float
) -> tuple[int, str]:
    try:
        async with session.post(
            url, data=body, headers=headers, timeout=aiohttp.ClientTimeout(total=seconds), allow_redirects=False
        ) as response:
            text = await response.text(errors="replace")
            return response.status, text[:200]
    except TimeoutError:
        raise DeliveryError(f"{channel} request timed out after {seconds:g}s") from None
    except (aiohttp.ClientError, ValueError) as exc:  # str(exc) may hold the URL: keep only the kind
        raise DeliveryError(f"{channel} request failed: {type(exc).__name__}") from None


class WebhookChannel:
    """JSON POST; `Idempotency-Key: <uid>:webhook` lets the receiver drop a re-delivery after a
    crash between sending and recording; the HMAC signature proves the sender."""

    name = "webhook"

    def __init__(self, config: WebhookChannelConfig, client: AsyncClient, session: SessionFactory) -> None:
        self._config = config
        self._client = client
        self._session = session

    async def send(self, message: Message) -> None:
        url = self._config.url or await _secret(self._client, self._config.url_secret, "webhook URL")
        body = json.dumps(message.to_json(self.name), separators=(",", ":")).encode()
        headers = {"Content-Type": "application/json", IDEMPOTENCY_HEADER: message.idempotency_key(self.name)}
        if self._config.signing_secret:
            key = await _secret(self._client, self._config.signing_secret, "webhook signing key")
            headers[SIGNATURE_HEADER] = build_signature(key, body)
        status, _ = await _post_json(
            self.name, self._session(), url, body, headers, self._config.timeout.total_seconds()
        )
        if not 200 <= status < 300:
            raise DeliveryError(f"webhook responded {status}")


class SlackChannel:
    """Slack incoming webhook; the URL comes from a Secret and appears nowhere else."""

    name = "slack"

    def __init__(self, config: SlackChannelConfig, client: AsyncClient, session: SessionFactory) -> None:
        self._config = config
        self._client = client
        self._session = session

    async def send(self, message: Message) -> None:
        url = await _secret(self._client, self._config.webhook_url_secret, "Slack webhook URL")
        buttons = bool(self._config.signing_secret_ref)  # only when the gateway can verify the clicks
        body = json.dumps(build_slack_payload(message, approval_buttons=buttons)).encode()
        headers = {"Content-Type": "application/json", IDEMPOTENCY_HEADER: message.idempotency_key(self.name)}
        status, text = await _post_json(
            self.name, self._session(), url, body, headers, self._config.timeout.total_seconds()
        )
        if status != 200:
            detail = f" ({text.strip()})" if _SLACK_ERROR.match(text.strip()) else ""
            raise DeliveryError(f"slack responded {status}{detail}")


def build_slack_payload(message: Message, *, approval_buttons: bool = False) -> dict[str, Any]:
    """Slack blocks: a header with the subject, the body, a context line, and for an approval
    (with `approval_buttons`) Approve and Reject buttons."""
    body = message.body
    if len(body) > _SLACK_SECTION_LIMIT:
        body = body[: _SLACK_SECTION_LIMIT - 1] + "…"
    subject = message.subject
    if len(subject) > _SLACK_HEADER_LIMIT:
        subject = subject[: _SLACK_HEADER_LIMIT - 1] + "…"
    blocks: list[dict[str, Any]] = [
        {"type": "header", "text": {"type": "plain_text", "text": subject}},
        {"type": "section", "text": {"type": "mrkdwn", "text": body}},
        {
            "type": "context",
            "elements": [
                {
                    "type": "mrkdwn",
                    "text": f"*{message.priority}* {message.type} · `{message.namespace}/{message.name}`",
                }
            ],
        },
    ]
    approval = message.metadata.get("approvalRequest")
    if approval_buttons and message.type == "approval" and approval:
        blocks.append(build_approval_actions(message.metadata.get("namespace") or message.namespace, approval))
    return {"text": f"[{message.priority}] {message.subject}", "blocks": blocks}


class EmailChannel:
    """Plain-text mail over SMTP (STARTTLS and login when configured)."""

    name = "email"

    def __init__(self, config: EmailChannelConfig, client: AsyncClient) -> None:
        self._config = config
        self._client = client

    async def send(self, message: Message) -> None:
        password = ""
        if self._config.username and self._config.password_secret:
            password = await _secret(self._client, self._config.password_secret, "SMTP password")
        mail = EmailMessage()
        mail["Subject"] = f"[{message.priority}] {message.subject}"
        mail["From"] = self._config.sender
        mail["To"] = ", ".join(self._config.to)
        mail["Message-ID"] = f"<{message.uid}.email@kubernaut.ai>"  # receivers can drop a re-delivery
        mail.set_content(_render_text(message))
        await asyncio.to_thread(self._send_blocking, mail, password)

    def _send_blocking(self, mail: EmailMessage, password: str) -> None:
        config = self._config
        try:
            with smtplib.SMTP(config.smtp_host, config.smtp_port, timeout=config.timeout.total_seconds()) as smtp:
                if config.starttls:
                    smtp.starttls(context=ssl.create_default_context())
                if config.username:
                    smtp.login(config.username, password)
                smtp.send_message(mail)
        except smtplib.SMTPResponseException as exc:
            raise DeliveryError(f"email rejected by the SMTP server ({exc.smtp_code})") from None
        except (smtplib.SMTPException, OSError) as exc:
            raise DeliveryError(f"email delivery failed: {type(exc).__name__}") from None


async def _secret(client: AsyncClient, ref: str, what: str) -> str:
    try:
        value = await fetch_secret_value(client, ref)
    except SecretUnavailableError as exc:
        raise DeliveryError(f"{what} unavailable: {exc}") from None
    if not value:
        raise DeliveryError(f"{what} is empty")
    return value


def build_channels(config: NotifierConfig, client: AsyncClient, session: SessionFactory) -> dict[str, Channel]:
    """The channels this notifier can deliver on; any other channel fails as not configured."""
    channels: dict[str, Channel] = {"console": ConsoleChannel(), "log": LogChannel()}
    if config.webhook.configured:
        channels["webhook"] = WebhookChannel(config.webhook, client, session)
    if config.slack.configured:
        channels["slack"] = SlackChannel(config.slack, client, session)
    if config.email.configured:
        channels["email"] = EmailChannel(config.email, client)
    return channels
