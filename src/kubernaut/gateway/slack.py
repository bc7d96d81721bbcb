"""`POST /api/v1/slack/interactions`: an Approve or Reject click in Slack decides an approval request.

Only a request Slack signed (with the app's signing secret) less than 5 minutes ago, seen for the
first time, from a Slack user listed in `approval.slackApprovers`, changes anything; everything else
is refused (401 unsigned, stale or replayed; 403 an unlisted user) and changes nothing. The decision
is written as the decision annotations with `kubernaut.ai/decided-by: slack:<name>` (the gateway is
a kubernaut controller: the admission webhook does not stamp its writes); the orchestrator records
it with `decidedVia: slack`. The Slack message is then replaced through the click's `response_url`.
"""

import json
import logging
from collections.abc import Callable, Mapping
from datetime import datetime

import aiohttp
from aiohttp import web
from lightkube import AsyncClient

from kubernaut.domain.approval import (
    ANNOTATION_DECIDED_BY,
    ANNOTATION_DECISION,
    ANNOTATION_DECISION_REASON,
    SLACK_ACTOR_PREFIX,
    decide_approval,
)
from kubernaut.domain.slack import MAX_AGE, SlackClick, build_decision_reply, parse_click, verify_signature
from kubernaut.kube.api import get_object, patch_if_current
from kubernaut.kube.errors import Conflict, NotFound
from kubernaut.kube.resources import RemediationApprovalRequestResource
from kubernaut.notify.secrets import SecretUnavailableError, fetch_secret_value

log = logging.getLogger(__name__)

SLACK_INTERACTIONS_PATH = "/api/v1/slack/interactions"
MAX_BODY_BYTES = 64 * 1024
REPLY_TIMEOUT_SECONDS = 10.0


class SlackInteractions:
    def __init__(
        self,
        client: AsyncClient,
        signing_secret_ref: str,
        approvers: Mapping[str, str],
        clock: Callable[[], datetime],
    ) -> None:
        self._client = client
        self._secret_ref = signing_secret_ref
        self._approvers = dict(approvers)
        self._clock = clock
        self._seen: dict[str, float] = {}  # signature -> its timestamp, kept while it could be replayed

    def _replayed(self, signature: str, timestamp: str, now: datetime) -> bool:
        """Whether this signed request was seen before (a signature is seen once within its 5 minutes)."""
        horizon = now.timestamp() - 2 * MAX_AGE.total_seconds()
        self._seen = {sig: ts for sig, ts in self._seen.items() if ts > horizon}
        if signature in self._seen:
            return True
        self._seen[signature] = float(timestamp)
        return False

    async def handle(self, request: web.Request) -> web.Response:
        body = await request.content.read(MAX_BODY_BYTES + 1)
        if len(body) > MAX_BODY_BYTES:
            return _refused(413, "body too large")
        try:
            secret = await fetch_secret_value(self._client, self._secret_ref)
        except SecretUnavailableError as exc:
            log.error("Slack interaction refused: notifier.slack.signingSecretRef: %s", exc)
            return _refused(503, "the signing secret is unavailable")
        timestamp = request.headers.get("X-Slack-Request-Timestamp", "")
        signature = request.headers.get("X-Slack-Signature", "")
        now = self._clock()
        problem = verify_signature(secret, timestamp, signature, body, now)
        if problem:
            log.warning("Slack interaction refused: %s", problem)
            return _refused(401, problem)
        if self._replayed(signature, timestamp, now):
            log.warning("Slack interaction refused: a replay of a request already seen")
            return _refused(401, "this request was already received")
        click = parse_click(body)
        if isinstance(click, str):
            return _refused(400, click)
        approver = self._approvers.get(click.user_id)
        if approver is None:
            log.warning("Slack user %s (%s) is not in approval.slackApprovers", click.user_id, click.user_name)
            return _refused(403, f"Slack user {click.user_id} may not decide approvals")
        outcome = await self._decide(click, approver, now)
        await self._reply(click, approver, outcome)
        return web.json_response({"text": outcome})

    async def _decide(self, click: SlackClick, approver: str, now: datetime) -> str:
        """Set the decision once, with the approval request's resourceVersion as precondition."""
        for _ in range(3):
            body = await get_object(self._client, RemediationApprovalRequestResource, click.name, click.namespace)
            if body is None:
                return "no such approval request"
            state = decide_approval(body, now)
            if state.decided:
                return f"already {state.phase.value.lower()} by {state.decided_by}; nothing changed"
            annotations = {
                ANNOTATION_DECISION: click.decision.value,
                ANNOTATION_DECISION_REASON: f"from Slack by {approver}",
                ANNOTATION_DECIDED_BY: SLACK_ACTOR_PREFIX + approver,
            }
            try:
                await patch_if_current(
                    self._client,
                    RemediationApprovalRequestResource,
                    click.name,
                    click.namespace,
                    {"metadata": {"annotations": annotations}},
                    resource_version=body["metadata"]["resourceVersion"],
                )
            except Conflict:
                continue
            except NotFound:
                return "no such approval request"
            log.info("%s %s/%s from Slack by %s", click.decision.value, click.namespace, click.name, approver)
            return f"{click.decision.value.lower()} by {SLACK_ACTOR_PREFIX}{approver}"
        return "changed while deciding; try again"

    async def _reply(self, click: SlackClick, approver: str, outcome: str) -> None:
        """Replace the Slack message with the decision; a failure here changes no decision."""
        if not click.response_url:
            return
        reply = json.dumps(build_decision_reply(click, approver, outcome)).encode()
        timeout = aiohttp.ClientTimeout(total=REPLY_TIMEOUT_SECONDS)
        try:
            async with (
                aiohttp.ClientSession(timeout=timeout) as session,
                session.post(click.response_url, data=reply, headers={"Content-Type": "application/json"}) as resp,
            ):
                if resp.status != 200:
                    log.warning("Slack message not updated: response_url answered %s", resp.status)
        except (aiohttp.ClientError, TimeoutError) as exc:
            log.warning("Slack message not updated: %s", exc)


def _refused(status: int, error: str) -> web.Response:
    return web.json_response({"error": error}, status=status)
