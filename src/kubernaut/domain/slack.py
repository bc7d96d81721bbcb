"""Approval from Slack: verifying a signed interaction, reading the click, the buttons and the reply.

Pure: Slack's v0 request signing (HMAC-SHA256 of `v0:{timestamp}:{body}` with the app's signing
secret, sent as `X-Slack-Signature: v0=<hex>` with `X-Slack-Request-Timestamp`), the
`block_actions` payload of a button click, and the blocks of an approval message.
"""

import hashlib
import hmac
import json
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any
from urllib.parse import parse_qs

from kubernaut.api.v1alpha1.remediationapprovalrequest import ApprovalDecision

MAX_AGE = timedelta(minutes=5)
ACTION_APPROVE = "kubernaut_approve"
ACTION_REJECT = "kubernaut_reject"
_ACTIONS = {ACTION_APPROVE: ApprovalDecision.APPROVED, ACTION_REJECT: ApprovalDecision.REJECTED}


def build_signature(secret: str, timestamp: str, body: bytes) -> str:
    """`v0=<hex>`: what Slack sends for this body at this timestamp."""
    base = b"v0:" + timestamp.encode() + b":" + body
    return "v0=" + hmac.new(secret.encode(), base, hashlib.sha256).hexdigest()


def verify_signature(secret: str, timestamp: str, signature: str, body: bytes, now: datetime) -> str:
    """Why the request is not Slack's, now; "" when it is."""
    try:
        sent = int(timestamp)
    except ValueError:
        return "X-Slack-Request-Timestamp is missing or not a number"
    if abs(now.timestamp() - sent) > MAX_AGE.total_seconds():
        return "X-Slack-Request-Timestamp is more than 5 minutes from now"
    if not hmac.compare_digest(build_signature(secret, timestamp, body).encode(), signature.encode()):
        return "X-Slack-Signature does not match"
    return ""


@dataclass(frozen=True)
class SlackClick:
    """One Approve or Reject click."""

    user_id: str
    user_name: str
    decision: ApprovalDecision
    namespace: str
    name: str  # the RemediationApprovalRequest
    response_url: str


def parse_click(body: bytes) -> SlackClick | str:
    """The click in a `block_actions` interaction (form field `payload`), or why it is not one."""
    try:
        payload = json.loads(parse_qs(body.decode(), strict_parsing=True)["payload"][0])
    except (UnicodeDecodeError, ValueError, KeyError, IndexError):
        return "the body is not a Slack interaction (form field payload with JSON)"
    if not isinstance(payload, Mapping) or payload.get("type") != "block_actions":
        return "not a block_actions interaction"
    actions = payload.get("actions") or []
    action = actions[0] if actions and isinstance(actions[0], Mapping) else {}
    decision = _ACTIONS.get(str(action.get("action_id") or ""))
    namespace, _, name = str(action.get("value") or "").partition("/")
    user = payload.get("user") or {}
    if decision is None or not namespace or not name or not isinstance(user, Mapping) or not user.get("id"):
        return "not a kubernaut approval click"
    return SlackClick(
        user_id=str(user["id"]),
        user_name=str(user.get("username") or user.get("name") or ""),
        decision=decision,
        namespace=namespace,
        name=name,
        response_url=str(payload.get("response_url") or ""),
    )


def build_approval_actions(namespace: str, name: str) -> dict[str, Any]:
    """The Approve and Reject buttons of an approval message; the value names the approval request."""
    value = f"{namespace}/{name}"
    return {
        "type": "actions",
        "block_id": "kubernaut_approval",
        "elements": [
            {
                "type": "button",
                "action_id": ACTION_APPROVE,
                "style": "primary",
                "text": {"type": "plain_text", "text": "Approve"},
                "value": value,
            },
            {
                "type": "button",
                "action_id": ACTION_REJECT,
                "style": "danger",
                "text": {"type": "plain_text", "text": "Reject"},
                "value": value,
            },
        ],
    }


def build_decision_reply(click: SlackClick, approver: str, outcome: str) -> dict[str, Any]:
    """What replaces the approval message once decided (or says why the click changed nothing)."""
    text = f"{click.namespace}/{click.name}: {outcome}"
    return {
        "replace_original": True,
        "text": text,
        "blocks": [{"type": "section", "text": {"type": "mrkdwn", "text": f"*{text}* (slack:{approver})"}}],
    }
