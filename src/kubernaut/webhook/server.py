"""The admission webhook: an HTTPS server answering AdmissionReview v1 requests for our kinds.

- `POST /mutate-workflowexecution` stamps the authenticated user who sets
  `kubernaut.ai/clear-execution-block` into `kubernaut.ai/execution-block-cleared-by`, and refuses a
  hand-written one.
- `POST /validate-clearance` checks, after every mutation, that the stamp names exactly that user.
- `POST /mutate-approval` stamps the authenticated user who sets `kubernaut.ai/decision` on a
  RemediationApprovalRequest into `kubernaut.ai/decided-by` (and the client, from its field manager,
  into `kubernaut.ai/decided-via`), and refuses a hand-written one, a
  second decision and one after the deadline; `POST /validate-approval` checks the stamp afterwards.
- `POST /mutate-breaker-reset` and `/validate-breaker-reset` do the same for the circuit breaker's
  reset on the ConfigMap kubernaut-breaker (who, and when it was admitted).
- `POST /validate` refuses RemediationRequests, WorkflowExecutions and RemediationWorkflows whose
  spec has problems the CRD schema cannot express (target format, parameter names, bundle references).

It needs no API access of its own: everything it decides on is in the review. It is served by
every replica, leader or not, because the API server may call any of them.
"""

import asyncio
import base64
import contextlib
import json
import logging
import ssl
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from aiohttp import web

from kubernaut.config import AdmissionWebhookConfig
from kubernaut.domain.admission import (
    AdmissionVerdict,
    decide_clearance_identity,
    decide_clearance_stamp,
    decide_decision_identity,
    decide_decision_stamp,
    decide_reset_identity,
    decide_reset_stamp,
    decide_validation,
)

log = logging.getLogger(__name__)

MAX_REVIEW_BYTES = 8 * 1024 * 1024  # an object and its old version, both up to etcd's 1.5 MiB, with room
CERT_RELOAD_SECONDS = 30.0
MUTATE_PATH = "/mutate-workflowexecution"
VALIDATE_CLEARANCE_PATH = "/validate-clearance"
MUTATE_BREAKER_PATH = "/mutate-breaker-reset"
VALIDATE_BREAKER_PATH = "/validate-breaker-reset"
VALIDATE_PATH = "/validate"
MUTATE_APPROVAL_PATH = "/mutate-approval"
VALIDATE_APPROVAL_PATH = "/validate-approval"
APPROVAL_KIND = "RemediationApprovalRequest"


class BadReviewError(Exception):
    """The request body is not an AdmissionReview v1 we can answer."""


def parse_admission_request(payload: Any) -> dict[str, Any]:
    if not isinstance(payload, dict) or payload.get("kind") != "AdmissionReview":
        raise BadReviewError("expected an AdmissionReview")
    request = payload.get("request")
    if not isinstance(request, dict) or not request.get("uid"):
        raise BadReviewError("the AdmissionReview has no request.uid")
    return request


def build_admission_review(request: dict[str, Any], verdict: AdmissionVerdict, *, denied_code: int) -> dict[str, Any]:
    response: dict[str, Any] = {"uid": request["uid"], "allowed": verdict.allowed}
    if not verdict.allowed:
        reason = "Forbidden" if denied_code == 403 else "Invalid"
        response["status"] = {"code": denied_code, "reason": reason, "message": verdict.message}
    if verdict.patch:
        response["patchType"] = "JSONPatch"
        response["patch"] = base64.b64encode(json.dumps(list(verdict.patch)).encode()).decode()
    if verdict.warnings:
        response["warnings"] = list(verdict.warnings)
    return {"apiVersion": "admission.k8s.io/v1", "kind": "AdmissionReview", "response": response}


def decide_review(
    path: str, request: dict[str, Any], now: Callable[[], datetime] = lambda: datetime.now(UTC)
) -> tuple[AdmissionVerdict, int]:
    """The verdict for one review on one endpoint, and the HTTP code a denial carries."""
    operation = str(request.get("operation") or "")
    obj = request.get("object") or {}
    old = request.get("oldObject")
    kind = str((request.get("kind") or {}).get("kind") or "")
    username = str((request.get("userInfo") or {}).get("username") or "")
    field_manager = str((request.get("options") or {}).get("fieldManager") or "")
    if operation not in ("CREATE", "UPDATE") or not isinstance(obj, dict):
        return AdmissionVerdict(allowed=True), 0
    if path == MUTATE_PATH:
        return (decide_clearance_stamp(obj, old, username) if kind in _CLEARABLE else _allowed()), 403
    if path == VALIDATE_CLEARANCE_PATH:
        return (decide_clearance_identity(obj, old, username) if kind in _CLEARABLE else _allowed()), 403
    if path == MUTATE_APPROVAL_PATH:
        if kind != APPROVAL_KIND:
            return _allowed(), 403
        return decide_decision_stamp(obj, old, username, now(), field_manager), 403
    if path == VALIDATE_APPROVAL_PATH:
        return (decide_decision_identity(obj, old, username) if kind == APPROVAL_KIND else _allowed()), 403
    if path == MUTATE_BREAKER_PATH:
        admitted = now().replace(microsecond=0).isoformat()
        return (decide_reset_stamp(obj, old, username, admitted) if kind == "ConfigMap" else _allowed()), 403
    if path == VALIDATE_BREAKER_PATH:
        return (decide_reset_identity(obj, old, username) if kind == "ConfigMap" else _allowed()), 403
    return decide_validation(kind, operation, obj, old), 422


# A failed execution clears PreviousExecutionFailed; an ineffective request clears IneffectiveChain.
_CLEARABLE = frozenset({"WorkflowExecution", "RemediationRequest"})


def _allowed() -> AdmissionVerdict:
    return AdmissionVerdict(allowed=True)


def build_ssl_context(cert_file: Path, key_file: Path) -> ssl.SSLContext:
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    context.load_cert_chain(str(cert_file), str(key_file))
    return context


class AdmissionServer:
    """aiohttp over TLS; the certificate is reloaded when its files change (cert-manager renews it)."""

    def __init__(self, host: str, port: int, cert_file: Path, key_file: Path) -> None:
        self.host = host
        self.port = port
        self.cert_file = cert_file
        self.key_file = key_file
        self._runner: web.AppRunner | None = None
        self._reloader: asyncio.Task[None] | None = None
        self._context: ssl.SSLContext | None = None
        self.url = ""

    @classmethod
    def from_config(cls, config: AdmissionWebhookConfig) -> "AdmissionServer":
        host, _, port = config.address.rpartition(":")
        cert_dir = Path(config.cert_dir)
        return cls(host.strip("[]") or "0.0.0.0", int(port), cert_dir / "tls.crt", cert_dir / "tls.key")

    def build_app(self) -> web.Application:
        app = web.Application(client_max_size=MAX_REVIEW_BYTES)
        for path in (
            MUTATE_PATH,
            VALIDATE_CLEARANCE_PATH,
            MUTATE_APPROVAL_PATH,
            VALIDATE_APPROVAL_PATH,
            MUTATE_BREAKER_PATH,
            VALIDATE_BREAKER_PATH,
            VALIDATE_PATH,
        ):
            app.router.add_post(path, self._review)
        app.router.add_get("/healthz", self._healthz)
        return app

    async def start(self) -> str:
        self._context = build_ssl_context(self.cert_file, self.key_file)
        self._runner = web.AppRunner(self.build_app(), access_log=None)
        await self._runner.setup()
        site = web.TCPSite(self._runner, self.host, self.port, ssl_context=self._context)
        await site.start()
        sockets = getattr(site._server, "sockets", None) or []
        port = sockets[0].getsockname()[1] if sockets else self.port
        self.url = f"https://{self.host}:{port}"
        self._reloader = asyncio.create_task(self._reload_certificates(), name="webhook-cert-reload")
        log.info("Serving the admission webhook at %s", self.url)
        return self.url

    async def stop(self) -> None:
        if self._reloader is not None:
            self._reloader.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._reloader
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None

    async def _reload_certificates(self) -> None:
        seen = _mtimes(self.cert_file, self.key_file)
        while True:
            await asyncio.sleep(CERT_RELOAD_SECONDS)
            now = _mtimes(self.cert_file, self.key_file)
            if now == seen or self._context is None:
                continue
            try:
                self._context.load_cert_chain(str(self.cert_file), str(self.key_file))
            except (OSError, ssl.SSLError) as exc:
                log.warning("Webhook certificate not reloaded (keeping the previous one): %s", exc)
                continue
            seen = now
            log.info("Reloaded the webhook certificate from %s", self.cert_file)

    async def _healthz(self, _: web.Request) -> web.Response:
        return web.Response(text="ok")

    async def _review(self, request: web.Request) -> web.Response:
        try:
            review = parse_admission_request(await request.json())
        except (json.JSONDecodeError, UnicodeDecodeError, BadReviewError) as exc:
            return web.json_response({"error": str(exc) or "body is not JSON"}, status=400)
        verdict, code = decide_review(request.path, review)
        if not verdict.allowed:
            log.info(
                "Denied %s %s %s/%s for %s: %s",
                review.get("operation"),
                (review.get("kind") or {}).get("kind"),
                review.get("namespace") or "",
                review.get("name") or "",
                (review.get("userInfo") or {}).get("username"),
                verdict.message,
            )
        return web.json_response(build_admission_review(review, verdict, denied_code=code))


def _mtimes(*paths: Path) -> tuple[float, ...]:
    return tuple(path.stat().st_mtime if path.exists() else 0.0 for path in paths)
