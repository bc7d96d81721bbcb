"""Prometheus metrics of the controllers, and the HTTP endpoint serving them with health probes."""

import logging
from collections.abc import Callable

from aiohttp import web
from prometheus_client import CONTENT_TYPE_LATEST, Counter, Gauge, Histogram, generate_latest

log = logging.getLogger(__name__)

# Every controller
WATCH_LISTS = Counter(
    "kubernaut_watch_lists_total",
    "LISTs that replaced a cache: at start (reason start) or after a watch expired (410 Gone, reason expired).",
    ["resource", "reason"],
)
RECONCILE_ERRORS = Counter(
    "kubernaut_reconcile_errors_total",
    "Reconciles that failed (other than write conflicts) and were retried with back-off.",
    ["controller"],
)
RECONCILE_CONFLICTS = Counter(
    "kubernaut_reconcile_conflicts_total",
    "Reconciles that met a write conflict (409) and were retried.",
    ["controller"],
)

# The API client
CLIENT_THROTTLED_REQUESTS = Counter(
    "kubernaut_client_throttled_requests_total", "API requests that waited for the client-side rate limiter."
)
CLIENT_THROTTLE_SECONDS = Counter(
    "kubernaut_client_throttle_seconds_total", "Seconds API requests waited for the client-side rate limiter."
)

# Executor
WE_RECONCILER_TOTAL = Counter(
    "workflowexecution_reconciler_total", "Terminal WorkflowExecution transitions.", ["outcome"]
)
WE_DURATION_SECONDS = Histogram(
    "workflowexecution_reconciler_duration_seconds",
    "Duration of workflow runs (0 for failures before execution).",
    ["outcome"],
    buckets=(5, 10, 20, 40, 80, 160, 320),
)
# Locks are held for the run plus the cooldown; blocks can delay an execution for an hour.
_LONG_BUCKETS = (0.1, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0, 300.0, 600.0, 1800.0, 3600.0)
WE_LOCK_HOLD_SECONDS = Histogram(
    "workflowexecution_lock_hold_seconds",
    "From a run's start (its lock taken) to the lock's release after the cooldown.",
    buckets=_LONG_BUCKETS,
)
WE_PIPELINERUN_CREATIONS = Counter(
    "workflowexecution_reconciler_pipelinerun_creations_total", "Runs created (not adopted): PipelineRuns and Jobs."
)

# Orchestrator
_RO = "kubernaut_remediationorchestrator_"
RO_BLOCKED_TOTAL = Counter(f"{_RO}blocked_total", "Routing blocks.", ["namespace", "reason"])
RO_CURRENT_BLOCKED = Gauge(f"{_RO}current_blocked", "RemediationRequests currently Blocked.", ["namespace"])
RO_BLOCKED_COOLDOWN_EXPIRED = Counter(
    f"{_RO}blocked_cooldown_expired_total", "Blocks that ended in failure when their cooldown expired."
)
RO_DUPLICATES_SKIPPED = Counter(
    f"{_RO}duplicates_skipped_total", "Requests blocked as duplicates.", ["skip_reason", "namespace"]
)
RO_PHASE_TRANSITIONS = Counter(
    f"{_RO}phase_transitions_total", "Phase transitions.", ["from_phase", "to_phase", "namespace"]
)
RO_CHILD_CREATIONS = Counter(f"{_RO}child_crd_creations_total", "Children created.", ["child_type", "namespace"])
RO_MANUAL_REVIEW = Counter(
    f"{_RO}manual_review_notifications_total",
    "Manual-review notifications created.",
    ["source", "reason", "sub_reason", "namespace"],
)
RO_TIMEOUTS = Counter(f"{_RO}timeouts_total", "Timeouts.", ["phase", "namespace"])
RO_RECONCILE_TOTAL = Counter(f"{_RO}reconcile_total", "Reconciles.", ["namespace", "phase"])
RO_TIME_TO_EXECUTION = Histogram(
    f"{_RO}time_to_execution_seconds",
    "From a RemediationRequest's creation to the creation of its WorkflowExecution (routing and blocks included).",
    ["namespace"],
    buckets=_LONG_BUCKETS,
)
RO_ASSESSMENTS = Counter(
    f"{_RO}effectiveness_assessments_total",
    "Effectiveness assessments of completed workflows, by result.",
    ["assessment", "namespace"],
)
RO_TIME_TO_RESOLUTION = Histogram(
    f"{_RO}time_to_resolution_seconds",
    "From a signal's start (its request's creation when unknown) to its alert resolving, for assessed requests.",
    ["namespace"],
    buckets=_LONG_BUCKETS,
)
RO_RECONCILE_DURATION = Histogram(f"{_RO}reconcile_duration_seconds", "Reconcile duration.", ["namespace", "phase"])


def build_metrics_app(ready: Callable[[], bool]) -> web.Application:
    async def metrics(_: web.Request) -> web.Response:
        return web.Response(body=generate_latest(), headers={"Content-Type": CONTENT_TYPE_LATEST})

    async def healthz(_: web.Request) -> web.Response:
        return web.Response(text="ok")

    async def readyz(_: web.Request) -> web.Response:
        return web.Response(text="ok") if ready() else web.Response(status=503, text="not ready")

    app = web.Application()
    app.router.add_get("/metrics", metrics)
    app.router.add_get("/healthz", healthz)
    app.router.add_get("/readyz", readyz)
    return app


async def start_metrics_server(host: str, port: int, ready: Callable[[], bool]) -> tuple[web.AppRunner, str]:
    """Serve /metrics, /healthz and /readyz; returns the runner (to clean up) and the base URL."""
    runner = web.AppRunner(build_metrics_app(ready), access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, host, port)
    await site.start()
    server = site._server
    sockets = getattr(server, "sockets", None) or []
    bound = sockets[0].getsockname()[1] if sockets else port
    url = f"http://{host}:{bound}"
    log.info("Serving metrics and health probes at %s", url)
    return runner, url
