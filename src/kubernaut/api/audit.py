"""The audit event: one schema for every event the controllers emit."""

import hashlib
from datetime import datetime
from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from kubernaut.api.v1alpha1.common import Time


def build_event_id(*parts: str) -> str:
    """A deterministic id: the same object transition always yields the same id (dedupe key)."""
    return hashlib.sha256("\x1f".join(parts).encode()).hexdigest()[:32]


class AuditEvent(BaseModel):
    """An immutable record of one transition; the store adds the hash chain."""

    model_config = ConfigDict(frozen=True)

    event_id: str = Field(description="Deterministic id derived from the object's uid and the transition.")
    version: str = Field(default="1.0", description="Schema version.")
    event_type: str = Field(description="e.g. workflow.started, orchestrator.routing.blocked.")
    event_category: str = Field(description="workflow or orchestration.")
    event_action: str = Field(description="Last dot-segment(s) of the type, e.g. started.")
    event_outcome: str = Field(description="success, failure or pending.")
    actor_type: str = Field(description="service or user.")
    actor_id: str = Field(description="Controller name or user name.")
    resource_type: str = Field(description="Kind of the object.")
    resource_id: str = Field(description="Name of the object.")
    correlation_id: str = Field(description="Groups the events of one remediation.")
    namespace: str = Field(default="", description="Namespace of the object.")
    event_time: Time = Field(description="When the transition happened.")
    event_data: dict[str, Any] = Field(default_factory=dict, description="Type-specific details.")


class StoredAuditEvent(AuditEvent):
    """An event as read back from a store, with its place in the hash chain."""

    sequence: int = Field(description="Position in the store's chain, from 1.")
    prev_hash: str = Field(description="Hash of the previous event ('' for the first).")
    hash: str = Field(description="SHA-256 over prev_hash and this event's canonical JSON.")
    recorded_at: datetime | None = Field(default=None, description="When the store accepted it.")
