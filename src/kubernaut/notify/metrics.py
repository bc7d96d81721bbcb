"""Prometheus metrics of notification delivery (default registry)."""

from prometheus_client import Counter, Histogram

DELIVERY_ATTEMPTS = Counter(
    "kubernaut_notification_delivery_attempts_total",
    "Delivery attempts by channel and outcome.",
    ["channel", "outcome"],
)
NOTIFICATIONS_COMPLETED = Counter(
    "kubernaut_notification_completed_total", "NotificationRequests that reached a final phase.", ["phase"]
)
DELIVERY_DURATION = Histogram(
    "kubernaut_notification_delivery_duration_seconds",
    "Time of one delivery attempt.",
    ["channel"],
    buckets=(0.01, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30),
)
