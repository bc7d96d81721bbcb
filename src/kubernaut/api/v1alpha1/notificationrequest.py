"""NotificationRequest: a message that must reach people, and how its delivery went."""

from enum import StrEnum
from typing import ClassVar

from pydantic import Field

from kubernaut.api.v1alpha1.common import (
    Condition,
    CustomResource,
    KubeModel,
    PrinterColumn,
    Time,
    age_column,
)


class NotificationType(StrEnum):
    ESCALATION = "escalation"
    SIMPLE = "simple"
    STATUS_UPDATE = "status-update"
    APPROVAL = "approval"
    MANUAL_REVIEW = "manual-review"


class NotificationPriority(StrEnum):
    CRITICAL = "critical"
    HIGH = "high"
    MEDIUM = "medium"
    LOW = "low"


class Channel(StrEnum):
    EMAIL = "email"
    SLACK = "slack"
    TEAMS = "teams"
    SMS = "sms"
    WEBHOOK = "webhook"
    CONSOLE = "console"
    FILE = "file"
    LOG = "log"


class NotificationPhase(StrEnum):
    PENDING = "Pending"
    SENDING = "Sending"
    RETRYING = "Retrying"
    SENT = "Sent"
    PARTIALLY_SENT = "PartiallySent"
    FAILED = "Failed"


class NotificationRequestSpec(KubeModel):
    """The message; immutable after creation."""

    type: NotificationType = Field(description="escalation, simple, status-update, approval or manual-review.")
    priority: NotificationPriority = Field(description="critical, high, medium or low.")
    subject: str = Field(min_length=1, max_length=500, description="One-line subject (1-500 characters).")
    body: str = Field(min_length=1, description="Markdown body.")
    channels: list[Channel] = Field(min_length=1, description="Channels to deliver on.")
    metadata: dict[str, str] | None = Field(default=None, description="Machine-readable context.")


class DeliveryAttempt(KubeModel):
    """One try on one channel."""

    channel: Channel = Field(description="Channel tried.")
    attempt: int = Field(description="1-based attempt number on this channel.")
    timestamp: Time = Field(description="When the attempt ended.")
    status: str = Field(description="success or failed.")
    error: str | None = Field(default=None, description="Why it failed.")


class NotificationRequestStatus(KubeModel):
    """Delivery progress, owned by the notifier."""

    phase: NotificationPhase | None = Field(default=None, description="Delivery phase.")
    total_attempts: int | None = Field(default=None, description="Attempts over all channels.")
    successful_deliveries: int | None = Field(default=None, description="Channels delivered.")
    failed_deliveries: int | None = Field(default=None, description="Channels given up on.")
    delivery_attempts: list[DeliveryAttempt] | None = Field(default=None, description="Every attempt.")
    completion_time: Time | None = Field(default=None, description="When delivery ended.")
    reason: str | None = Field(default=None, description="Why delivery ended as it did.")
    message: str | None = Field(default=None, description="Human explanation.")
    conditions: list[Condition] | None = Field(default=None, description="Standard conditions.")


class NotificationRequest(CustomResource):
    """A notification to people, delivered once per channel."""

    KIND: ClassVar[str] = "NotificationRequest"
    PLURAL: ClassVar[str] = "notificationrequests"
    SINGULAR: ClassVar[str] = "notificationrequest"
    SHORT_NAMES: ClassVar[tuple[str, ...]] = ("notif", "notifs")
    PRINTER_COLUMNS: ClassVar[tuple[PrinterColumn, ...]] = (
        PrinterColumn(name="Type", type="string", json_path=".spec.type"),
        PrinterColumn(name="Priority", type="string", json_path=".spec.priority"),
        PrinterColumn(name="Phase", type="string", json_path=".status.phase"),
        PrinterColumn(name="Attempts", type="integer", json_path=".status.totalAttempts"),
        age_column(),
    )
    DESCRIPTION: ClassVar[str] = (
        "NotificationRequest is a message that must reach people (for example a manual review "
        "after a failed remediation); the notifier delivers it once per channel."
    )

    kind: str = "NotificationRequest"
    spec: NotificationRequestSpec = Field(description="The message and where to send it.")
    status: NotificationRequestStatus = Field(
        default_factory=NotificationRequestStatus, description="Delivery progress."
    )
