"""Kubernetes Events (core/v1), best effort: a failed Event never fails a reconcile."""

import logging
import uuid
from datetime import datetime
from typing import Any

from lightkube import AsyncClient
from lightkube.core.exceptions import ApiError
from lightkube.models.core_v1 import EventSource, ObjectReference
from lightkube.models.meta_v1 import ObjectMeta
from lightkube.resources.core_v1 import Event

log = logging.getLogger(__name__)


class EventRecorder:
    def __init__(self, client: AsyncClient, component: str) -> None:
        self._client = client
        self._component = component

    async def emit(self, body: dict[str, Any], type_: str, reason: str, message: str, now: datetime) -> None:
        meta = body.get("metadata", {})
        namespace = meta.get("namespace") or "default"
        event = Event(
            metadata=ObjectMeta(name=f"{meta.get('name')}.{uuid.uuid4().hex[:12]}", namespace=namespace),
            involvedObject=ObjectReference(
                apiVersion=body.get("apiVersion"),
                kind=body.get("kind"),
                name=meta.get("name"),
                namespace=meta.get("namespace"),
                uid=meta.get("uid"),
                resourceVersion=meta.get("resourceVersion"),
            ),
            reason=reason,
            message=message[:1024],
            type=type_,
            source=EventSource(component=self._component),
            firstTimestamp=now,
            lastTimestamp=now,
            count=1,
        )
        try:
            await self._client.create(event)
        except ApiError as exc:
            log.debug("Event %s for %s/%s not recorded: %s", reason, namespace, meta.get("name"), exc)
