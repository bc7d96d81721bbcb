"""Slack's request signing, the click payload, and the buttons of approval messages."""

import json
import urllib.parse
from datetime import UTC, datetime

import pytest

from kubernaut.api.v1alpha1.remediationapprovalrequest import ApprovalDecision
from kubernaut.domain.slack import SlackClick, build_signature, parse_click, verify_signature
from kubernaut.notify.channels import Message, build_slack_payload

SECRET = "8f742231b10e8888abcd99yyyzzz85a5"
NOW = datetime(2026, 5, 1, 12, 0, tzinfo=UTC)
STAMP = str(int(NOW.timestamp()))
BODY = b"payload=%7B%7D"


def test_the_signature_is_slacks_v0() -> None:
    # Slack's documented example (secret, timestamp, body and signature of its request-verification guide)
    body = (
        b"token=xyzz0WbapA4vBCDEFasx0q6G&team_id=T1DC2JH3J&team_domain=testteamnow&channel_id=G8PSS9T3V&"
        b"channel_name=foobar&user_id=U2CERLKJA&user_name=roadrunner&command=%2Fwebhook-collect&text=&"
        b"response_url=https%3A%2F%2Fhooks.slack.com%2Fcommands%2FT1DC2JH3J%2F397700885554%2F96rGlfmibIGlgcZRskXaIFfN&"
        b"trigger_id=398738663015.47445629121.803a0bc887a14d10d2c447fce8b6703c"
    )
    assert (
        build_signature(SECRET, "1531420618", body)
        == "v0=a2114d57b48eac39b9ad189dd8316235a7b4a8d21a10bd27519666489c69b503"
    )


@pytest.mark.parametrize(
    ("timestamp", "signature", "problem"),
    [
        (STAMP, build_signature(SECRET, STAMP, BODY), ""),
        (STAMP, build_signature("other", STAMP, BODY), "X-Slack-Signature does not match"),
        (STAMP, "", "X-Slack-Signature does not match"),
        (str(int(NOW.timestamp()) - 301), None, "more than 5 minutes from now"),
        (str(int(NOW.timestamp()) - 300), None, ""),
        (str(int(NOW.timestamp()) + 301), None, "more than 5 minutes from now"),
        ("", None, "missing or not a number"),
        ("soon", None, "missing or not a number"),
    ],
)
def test_verification(timestamp: str, signature: str | None, problem: str) -> None:
    signed = signature if signature is not None else build_signature(SECRET, timestamp, BODY)
    found = verify_signature(SECRET, timestamp, signed, BODY, NOW)
    assert (problem in found) if problem else found == ""
    assert bool(found) == bool(problem)


def form(payload: object) -> bytes:
    return urllib.parse.urlencode({"payload": json.dumps(payload)}).encode()


CLICK = {
    "type": "block_actions",
    "user": {"id": "U1", "username": "carol"},
    "actions": [{"action_id": "kubernaut_reject", "value": "team/rar-rr-1"}],
    "response_url": "https://hooks.slack.com/actions/x",
}


def test_a_click() -> None:
    assert parse_click(form(CLICK)) == SlackClick(
        user_id="U1",
        user_name="carol",
        decision=ApprovalDecision.REJECTED,
        namespace="team",
        name="rar-rr-1",
        response_url="https://hooks.slack.com/actions/x",
    )


@pytest.mark.parametrize(
    "body",
    [
        b"not a form",
        b"payload=not-json",
        form({**CLICK, "type": "view_submission"}),
        form({**CLICK, "actions": [{"action_id": "something_else", "value": "team/rar-rr-1"}]}),
        form({**CLICK, "actions": [{"action_id": "kubernaut_approve", "value": "no-namespace"}]}),
        form({**CLICK, "user": {}}),
    ],
)
def test_not_a_click(body: bytes) -> None:
    assert isinstance(parse_click(body), str)


def message(type_: str) -> Message:
    return Message(
        name="nr-approval-rr-1",
        namespace="team",
        uid="u",
        type=type_,
        priority="critical",
        subject="Approval required",
        body="b",
        metadata={"approvalRequest": "rar-rr-1", "namespace": "team"},
    )


def test_approval_messages_carry_buttons_only_with_a_signing_secret() -> None:
    with_buttons = build_slack_payload(message("approval"), approval_buttons=True)["blocks"][-1]
    assert with_buttons["type"] == "actions"
    assert [(e["action_id"], e["value"]) for e in with_buttons["elements"]] == [
        ("kubernaut_approve", "team/rar-rr-1"),
        ("kubernaut_reject", "team/rar-rr-1"),
    ]
    assert all(b["type"] != "actions" for b in build_slack_payload(message("approval"))["blocks"])
    assert all(
        b["type"] != "actions" for b in build_slack_payload(message("manual-review"), approval_buttons=True)["blocks"]
    )
