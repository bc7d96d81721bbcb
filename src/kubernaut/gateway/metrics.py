"""Prometheus metrics of the gateway (registered once per process, on the default registry)."""

from prometheus_client import Counter, Histogram

ALERTS_RECEIVED = Counter(
    "kubernaut_gateway_alerts_received_total", "Alerts in accepted requests (firing and resolved).", ["status"]
)
ALERTS_DEDUPLICATED = Counter(
    "kubernaut_gateway_alerts_deduplicated_total", "Firing alerts folded into an existing RemediationRequest."
)
REMEDIATIONS_CREATED = Counter(
    "kubernaut_gateway_remediations_created_total", "RemediationRequests created from alerts."
)
ALERTS_RESOLVED_RECORDED = Counter(
    "kubernaut_gateway_alerts_resolved_recorded_total", "Resolved alerts recorded on a RemediationRequest."
)
REQUESTS_REJECTED = Counter(
    "kubernaut_gateway_rejected_total",
    "Requests refused: unauthorized, too_large, invalid_json, invalid_payload, too_many_alerts, unavailable.",
    ["reason"],
)
REQUEST_LATENCY = Histogram(
    "kubernaut_gateway_request_duration_seconds",
    "Time to answer a webhook request.",
    ["code"],
    buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30),
)
