"""Prometheus metrics of the audit trail (process-wide, default registry)."""

from prometheus_client import Counter, Gauge, Histogram

EVENTS_WRITTEN = Counter(
    "kubernaut_audit_events_written_total",
    "Audit events newly stored (a re-delivered id is not counted again).",
)
EVENTS_BUFFERED = Gauge(
    "kubernaut_audit_events_buffered",
    "Audit events recorded in the local outbox and not yet accepted by the store.",
)
WRITE_FAILURES = Counter(
    "kubernaut_audit_write_failures_total",
    "Batches the store did not accept (they stay in the outbox and are retried).",
)
WRITE_LATENCY = Histogram(
    "kubernaut_audit_write_latency_seconds",
    "Time the store took to accept one batch from the outbox.",
    buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0),
)
BUFFER_FULL = Counter(
    "kubernaut_audit_buffer_full_total",
    "Audit events refused because the outbox was full (record raised AuditError).",
)
