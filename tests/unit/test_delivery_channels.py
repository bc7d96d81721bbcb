"""Notifier settings and the pure parts of the channels: payloads, signatures, configured set."""

import hashlib
import hmac
import io
import json
from datetime import timedelta

import pytest

from kubernaut.config import parse_settings
from kubernaut.errors import ConfigError
from kubernaut.notify.channels import ConsoleChannel, Message, build_channels, build_signature, build_slack_payload

MESSAGE = Message(
    name="nr-1",
    namespace="ns",
    uid="uid-1",
    type="manual-review",
    priority="high",
    subject="Manual review needed",
    body="The workflow *restart-pod* failed.",
    metadata={"rr": "rr-1"},
)


def test_notifier_defaults_and_keys() -> None:
    notifier = parse_settings(None).notifier
    assert (notifier.max_attempts, notifier.backoff_base, notifier.backoff_max) == (
        5,
        timedelta(seconds=1),
        timedelta(minutes=1),
    )
    notifier = parse_settings(
        {
            "notifier": {
                "maxAttempts": 3,
                "backoffBase": "250ms",
                "webhook": {"urlSecret": "a/b:url", "signingSecret": "a/b:key", "timeout": "5s"},
                "slack": {"webhookUrlSecret": "a/b:slack"},
                "email": {"smtpHost": "smtp", "from": "k@example.com", "to": ["x@example.com"], "starttls": False},
            }
        }
    ).notifier
    assert notifier.backoff_base == timedelta(milliseconds=250)
    assert notifier.email.sender == "k@example.com"
    assert (notifier.webhook.configured, notifier.slack.configured, notifier.email.configured) == (True, True, True)


@pytest.mark.parametrize(
    ("notifier", "message"),
    [
        ({"maxAttempts": 0}, "'notifier.maxAttempts'"),
        ({"backoffBase": "0s"}, "'notifier.backoffBase'"),
        ({"webhook": {"url": "ftp://x"}}, "'notifier.webhook.url'"),
        ({"slack": {"webhookUrlSecret": "https://hooks.slack.com/x"}}, "'notifier.slack.webhookUrlSecret'"),
        ({"email": {"smtpPort": 0}}, "'notifier.email.smtpPort'"),
    ],
)
def test_bad_notifier_values_name_the_key(notifier: dict[str, object], message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        parse_settings({"notifier": notifier})


def test_configured_channels_follow_the_settings() -> None:
    def factory() -> object:
        raise AssertionError("no HTTP session is opened while building channels")

    bare = build_channels(parse_settings(None).notifier, client=None, session=factory)  # type: ignore[arg-type]
    assert set(bare) == {"console", "log"}
    full = parse_settings(
        {"notifier": {"webhook": {"url": "http://127.0.0.1:1/h"}, "slack": {"webhookUrlSecret": "a/b:c"}}}
    ).notifier
    assert set(build_channels(full, client=None, session=factory)) == {"console", "log", "webhook", "slack"}  # type: ignore[arg-type]


def test_signature_is_hmac_sha256_of_the_body() -> None:
    body = json.dumps(MESSAGE.to_json("webhook")).encode()
    expected = hmac.new(b"key", body, hashlib.sha256).hexdigest()
    assert build_signature("key", body) == f"sha256={expected}"
    assert build_signature("other", body) != build_signature("key", body)


def test_webhook_payload_and_idempotency_key() -> None:
    payload = MESSAGE.to_json("webhook")
    assert payload["uid"] == "uid-1"
    assert payload["channel"] == "webhook"
    assert payload["metadata"] == {"rr": "rr-1"}
    assert MESSAGE.idempotency_key("webhook") == "uid-1:webhook"


def test_slack_blocks_respect_slack_limits() -> None:
    long = Message(**{**MESSAGE.__dict__, "subject": "s" * 400, "body": "b" * 5000})
    payload = build_slack_payload(long)
    header, section, context = payload["blocks"]
    assert header["type"] == "header"
    assert len(header["text"]["text"]) == 150
    assert len(section["text"]["text"]) == 2900
    assert "`ns/nr-1`" in context["elements"][0]["text"]
    assert payload["text"].startswith("[high] sss")


async def test_console_channel_writes_the_message() -> None:
    stream = io.StringIO()
    await ConsoleChannel(stream).send(MESSAGE)
    text = stream.getvalue()
    assert "[high] Manual review needed" in text
    assert "ns/nr-1" in text
