"""The HTTP server: Alertmanager webhooks in, RemediationRequests out.

Routes: `POST /api/v1/signals/alertmanager` (bearer token), `POST /api/v1/slack/interactions` (signed by
Slack; only with `notifier.slack.signingSecretRef`), `GET /healthz`, `GET /metrics`.
A request is validated whole before anything is written: one bad alert rejects the request
with 400 and a list of every problem, so Alertmanager's log says exactly what to fix.
"""

import asyncio
import hmac
import json
import logging
import ssl
import time
from collections.abc import Awaitable, Callable, Mapping
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from aiohttp import web
from lightkube import AsyncClient
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from kubernaut.config import GatewayConfig
from kubernaut.domain.dryrun import HOLD_PERIOD
from kubernaut.domain.signals import SignalValidationError, parse_alertmanager_payload
from kubernaut.errors import ConfigError
from kubernaut.gateway import metrics
from kubernaut.gateway.remediations import IntakeOutcome, RemediationIntake
from kubernaut.gateway.slack import SLACK_INTERACTIONS_PATH, SlackInteractions
from kubernaut.kube.errors import KubeError, NotFound, Refused
from kubernaut.notify.secrets import SecretUnavailableError, fetch_secret_value

log = logging.getLogger(__name__)

ALERTMANAGER_PATH = "/api/v1/signals/alertmanager"
Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


def _utc_now() -> datetime:
    return datetime.now(UTC)


def error_response(status: int, reason: str, error: str, details: list[str] | None = None) -> web.Response:
    metrics.REQUESTS_REJECTED.labels(reason=reason).inc()
    return web.json_response({"error": error, "details": details or []}, status=status)


class GatewayServer:
    """`await start()` binds and returns the base URL; `await stop()` closes it."""

    def __init__(
        self,
        client: AsyncClient,
        config: GatewayConfig,
        *,
        clock: Callable[[], datetime] = _utc_now,
        dry_run_hold: timedelta = HOLD_PERIOD,
        slack_signing_secret_ref: str = "",
        slack_approvers: Mapping[str, str] | None = None,
    ) -> None:
        self._client = client
        self._config = config
        self._slack = (
            SlackInteractions(client, slack_signing_secret_ref, slack_approvers or {}, clock)
            if slack_signing_secret_ref
            else None
        )
        self._intake = RemediationIntake(client, config.namespace, clock, dry_run_hold)
        self._token: str | None = None
        self._runner: web.AppRunner | None = None
        self._url = ""

    @property
    def url(self) -> str:
        return self._url

    @property
    def webhook_url(self) -> str:
        return self._url + ALERTMANAGER_PATH

    async def start(self) -> str:
        self._token = await self._load_token()
        app = web.Application(client_max_size=self._config.max_body_bytes + 1, middlewares=[self._measure])
        app.router.add_post(ALERTMANAGER_PATH, self._alertmanager)
        if self._slack is not None:  # Slack signs its requests: no bearer token there
            app.router.add_post(SLACK_INTERACTIONS_PATH, self._slack.handle)
        app.router.add_get("/healthz", self._healthz)
        app.router.add_get("/metrics", self._metrics)
        runner = web.AppRunner(app, access_log=None, handle_signals=False)
        await runner.setup()
        host, port = self._split_listen()
        site = web.TCPSite(runner, host, port, ssl_context=self._ssl_context(), reuse_address=True)
        try:
            await site.start()
        except BaseException:
            await runner.cleanup()
            raise
        self._runner = runner
        bound_port = runner.addresses[0][1] if runner.addresses else port  # the real port when 0 was asked for
        scheme = "https" if self._config.tls_cert_file else "http"
        shown = f"[{host}]" if ":" in host else host
        self._url = f"{scheme}://{shown}:{bound_port}"
        log.info(
            "Gateway listening on %s (RemediationRequests in namespace %s%s)",
            self._url,
            self._config.namespace,
            ", authentication disabled" if self._token is None else "",
        )
        return self._url

    async def stop(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None

    def _split_listen(self) -> tuple[str, int]:
        host, _, port = self._config.listen.rpartition(":")
        return host.strip("[]") or "0.0.0.0", int(port)  # empty host: all interfaces

    def _ssl_context(self) -> ssl.SSLContext | None:
        if not self._config.tls_cert_file:
            return None
        context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        try:
            context.load_cert_chain(self._config.tls_cert_file, self._config.tls_key_file)
        except (OSError, ssl.SSLError) as exc:
            raise ConfigError(f"gateway.tlsCertFile/tlsKeyFile cannot be loaded: {exc}") from None
        return context

    async def _load_token(self) -> str | None:
        config = self._config
        if config.auth_disabled:
            log.warning("Gateway authentication is disabled (gateway.authDisabled): any caller may post alerts")
            return None
        if config.bearer_token_file:
            try:
                token = (await asyncio.to_thread(Path(config.bearer_token_file).read_text)).strip()
            except OSError as exc:
                raise ConfigError(f"gateway.bearerTokenFile cannot be read: {exc.strerror}") from None
            if not token:
                raise ConfigError("gateway.bearerTokenFile is empty")
            return token
        if config.bearer_token_secret:
            try:
                token = await fetch_secret_value(self._client, config.bearer_token_secret)
            except SecretUnavailableError as exc:
                raise ConfigError(f"gateway.bearerTokenSecret: {exc}") from None
            if not token:
                raise ConfigError("gateway.bearerTokenSecret holds an empty token")
            return token
        raise ConfigError("gateway needs bearerTokenFile or bearerTokenSecret (or authDisabled: true for local use)")

    @web.middleware
    async def _measure(self, request: web.Request, handler: Handler) -> web.StreamResponse:
        if request.path != ALERTMANAGER_PATH:
            return await handler(request)
        started = time.perf_counter()
        code = 500
        try:
            response = await handler(request)
            code = response.status
            return response
        except web.HTTPException as exc:
            code = exc.status
            raise
        finally:
            metrics.REQUEST_LATENCY.labels(code=str(code)).observe(time.perf_counter() - started)

    def _authorized(self, request: web.Request) -> bool:
        if self._token is None:
            return True
        scheme, _, presented = request.headers.get("Authorization", "").partition(" ")
        if scheme.lower() != "bearer" or not presented:
            return False
        return hmac.compare_digest(presented.strip().encode(), self._token.encode())

    async def _read_body(self, request: web.Request) -> bytes | None:
        """The body, or None when it exceeds the limit (checked before and while reading)."""
        limit = self._config.max_body_bytes
        if request.content_length is not None and request.content_length > limit:
            return None
        data = bytearray()
        async for chunk in request.content.iter_any():
            data += chunk
            if len(data) > limit:
                return None
        return bytes(data)

    async def _alertmanager(self, request: web.Request) -> web.Response:
        if not self._authorized(request):
            return error_response(401, "unauthorized", "missing or wrong bearer token")
        raw = await self._read_body(request)
        if raw is None:
            return error_response(
                413, "too_large", "request body too large", [f"at most {self._config.max_body_bytes} bytes accepted"]
            )
        try:
            data = json.loads(raw)
        except (ValueError, RecursionError) as exc:
            return error_response(400, "invalid_json", "request body is not valid JSON", [str(exc)[:200]])
        try:
            payload = parse_alertmanager_payload(data, max_alerts=self._config.max_alerts)
        except SignalValidationError as exc:
            reason = "too_many_alerts" if exc.error.startswith("too many") else "invalid_payload"
            return error_response(400, reason, exc.error, exc.details)
        for signal in payload.signals:
            metrics.ALERTS_RECEIVED.labels(status="firing" if signal.firing else "resolved").inc()
        outcomes = await self._record(payload.signals)
        failures = [o for o in outcomes if isinstance(o, BaseException)]
        if failures:
            return self._failure_response(failures, len(outcomes))
        summary: dict[str, Any] = {"created": [], "deduplicated": [], "resolved": [], "ignored": 0}
        for outcome in outcomes:
            assert isinstance(outcome, IntakeOutcome)
            if outcome.action == "ignored":
                summary["ignored"] += 1
            else:
                summary[outcome.action].append(outcome.name)
        return web.json_response(summary)

    async def _record(self, signals: Any) -> list[IntakeOutcome | BaseException]:
        semaphore = asyncio.Semaphore(self._config.concurrency)

        async def one(signal: Any) -> IntakeOutcome:
            async with semaphore:
                if signal.firing:
                    outcome = await self._intake.record_firing(signal)
                    if outcome.action == "created":
                        metrics.REMEDIATIONS_CREATED.inc()
                    else:
                        metrics.ALERTS_DEDUPLICATED.inc()
                    return outcome
                outcome = await self._intake.record_resolved(signal)
                if outcome.action == "resolved":
                    metrics.ALERTS_RESOLVED_RECORDED.inc()
                return outcome

        return list(await asyncio.gather(*(one(s) for s in signals), return_exceptions=True))

    def _failure_response(self, failures: list[BaseException], total: int) -> web.Response:
        details = [_describe(exc) for exc in failures[:10]]
        # Answers that will not change on a retry: the request itself (or its namespace) is wrong.
        rejected = [exc for exc in failures if isinstance(exc, Refused | NotFound)]
        log.warning("Could not record %d of %d alerts: %s", len(failures), total, "; ".join(details))
        if len(rejected) == len(failures):
            return error_response(400, "invalid_payload", "the API server rejected the RemediationRequest", details)
        # Alertmanager retries on 5xx; repeats of what did get recorded are counted as occurrences
        return error_response(503, "unavailable", f"could not record {len(failures)} of {total} alerts", details)

    async def _healthz(self, _: web.Request) -> web.Response:
        return web.Response(text="ok")

    async def _metrics(self, _: web.Request) -> web.Response:
        return web.Response(body=generate_latest(), headers={"Content-Type": CONTENT_TYPE_LATEST})


def _describe(exc: BaseException) -> str:
    if isinstance(exc, KubeError) and exc.code:
        return f"API server answered {exc.code}: {exc.message[:200]}"
    return f"{type(exc).__name__}: {str(exc)[:200]}"
