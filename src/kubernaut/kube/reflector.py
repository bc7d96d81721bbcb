"""A reflector keeps a Cache equal to what the API server holds, for one kind in one scope.

It LISTs, makes the cache hold exactly what the list holds (objects the list no longer has are
deleted through the cache, so listeners hear of them), then WATCHes from the list's resourceVersion.
A watch that expires (410 Gone: the server no longer has the events since our version) is replaced
by a new LIST, so a deletion that happened while no watch was open is never lost. Other stream
errors are retried from the last version seen, with back-off.
"""

import asyncio
import logging
from collections.abc import Callable, Iterable
from typing import Any

import httpx2 as httpx
from lightkube import AsyncClient
from lightkube.core.exceptions import ApiError
from lightkube.core.resource import NamespacedResource

from kubernaut.kube.errors import Transient, to_kube_error
from kubernaut.kube.runtime import Body, Cache, object_key
from kubernaut.metrics import WATCH_LISTS

log = logging.getLogger(__name__)

Deliver = Callable[[str | None, Body], None]
"""Receives (event type, body): None for an object of a LIST, else ADDED, MODIFIED or DELETED."""

BACKOFF_FIRST = 0.5
BACKOFF_MAX = 5.0
ABSENT_RECHECK_SECONDS = 60.0  # an optional kind not served (its CRD may be installed later)
# The API server ends each watch after this long, just before that a bookmark carries the newest
# version; it must stay below the client's read timeout (30 s in make_client), or a quiet watch
# would end in a read error instead.
WATCH_SERVER_TIMEOUT = 20


def stale_objects(
    cached: Iterable[Body], listed: set[str], list_version: str | None, namespace: str | None = None
) -> list[Body]:
    """The cached objects a LIST at `list_version` shows to be gone: in the listed namespace (None: any),
    not listed, and not newer than the list (an object we wrote after the list was taken is kept)."""
    return [
        body
        for body in cached
        if (namespace is None or (body.get("metadata") or {}).get("namespace") == namespace)
        and object_key(body) not in listed
        and not_after(body, list_version)
    ]


def not_after(body: Body, version: str | None) -> bool:
    """Whether the object's resourceVersion is not newer than `version` (unknown: assume newer)."""
    try:
        return int((body.get("metadata") or {})["resourceVersion"]) <= int(version or "")
    except (KeyError, ValueError, TypeError):
        return False


def next_backoff(delay: float) -> float:
    return BACKOFF_FIRST if delay <= 0 else min(BACKOFF_MAX, delay * 2)


def is_not_served(exc: BaseException) -> bool:
    """404 to a LIST: the API server does not serve the kind (its CRD is not installed)."""
    if isinstance(exc, ApiError):
        return bool(exc.status.code == 404)
    return isinstance(exc, httpx.HTTPStatusError) and exc.response.status_code == 404


def is_gone(exc: BaseException) -> bool:
    """410 Gone, as a watch ERROR event (ApiError) or as the response to the watch request."""
    if isinstance(exc, ApiError):
        return bool(exc.status.code == 410)
    return isinstance(exc, httpx.HTTPStatusError) and exc.response.status_code == 410


class Reflector:
    """LIST-then-replace, then WATCH with bookmarks, for one kind in one namespace (None: all, or a
    cluster-scoped kind), optionally narrowed by a label selector."""

    def __init__(
        self,
        client: AsyncClient,
        resource: Any,
        cache: Cache,
        *,
        namespace: str | None = None,
        label_selector: str | None = None,
        deliver: Deliver | None = None,
        name: str = "",
        plural: str = "",
        optional: bool = False,
    ) -> None:
        self.client = client
        self.resource = resource
        self.cache = cache
        self.namespace = namespace
        self.label_selector = label_selector
        self.deliver: Deliver = deliver or cache.apply
        self.name = name or f"{getattr(resource, '__name__', resource)} in {namespace or 'all namespaces'}"
        self.version: str | None = None  # of the last LIST or event; None: list first
        self.synced = asyncio.Event()  # set after the first replace
        self.lists = 0
        self._lists = WATCH_LISTS.labels(resource=plural or self.name, reason="start")
        self._relists = WATCH_LISTS.labels(resource=plural or self.name, reason="expired")
        self._delay = 0.0
        # An optional kind the API server does not serve (Tekton not installed) is empty, and asked
        # about again every ABSENT_RECHECK_SECONDS; any other kind not served stops the start.
        self.optional = optional
        self.absent = False

    async def replace(self) -> None:
        """LIST, then make the cache hold what the list holds (in this reflector's namespace)."""
        try:
            await self._replace()
        except Exception as exc:
            if not (self.optional and is_not_served(exc)):
                raise
            if not self.absent:
                log.warning(
                    "%s are not served by the API server: none, asked again every %ss",
                    self.name,
                    ABSENT_RECHECK_SECONDS,
                )
            self.absent = True
            self.synced.set()
            return
        if self.absent:
            log.info("%s are served now", self.name)
        self.absent = False

    async def prime(self) -> None:
        """The first LIST, retried with back-off while the server answers that it cannot yet (a
        server that has just created a CRD says 429 "storage is (re)initializing"); a refusal ends it."""
        while True:
            try:
                await self.replace()
                return
            except Exception as exc:
                if not isinstance(to_kube_error(exc), Transient):
                    raise
                self._delay = next_backoff(self._delay)
                log.warning("Listing %s failed (retry in %.1fs): %s", self.name, self._delay, str(exc) or repr(exc))
                await asyncio.sleep(self._delay)

    async def _replace(self) -> None:
        params = {"labelSelector": self.label_selector}
        br = self.client._client.prepare_request("list", res=self.resource, namespace=self._ns(), params=params)
        listing = self.client._client.list(br)
        listed: set[str] = set()
        async for obj in listing:
            body = _to_dict(obj)
            listed.add(object_key(body))
            self._deliver(None, body)
        try:
            version: str | None = str(listing.resourceVersion)
        except Exception:  # lightkube's NotReadyError: no page was read
            version = None
        for body in stale_objects(self.cache.all(), listed, version, self.namespace):
            self._deliver("DELETED", body)
        (self._relists if self.lists else self._lists).inc()
        self.version = version
        self.lists += 1
        self._delay = 0.0
        self.synced.set()

    async def run(self) -> None:
        """Keep the cache in step until cancelled (listing first unless `replace` just ran)."""
        while True:
            try:
                if self.version is None:
                    await self.replace()
                if self.absent:
                    await asyncio.sleep(ABSENT_RECHECK_SECONDS)
                    self.version = None
                    continue
                await self._watch()
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                if is_gone(exc):
                    log.info("Watch of %s expired at version %s; listing again", self.name, self.version)
                    self.version = None
                    continue
                if isinstance(exc, httpx.ReadTimeout):
                    continue  # a quiet stream the server did not end in time: resume at once
                self._delay = next_backoff(self._delay)
                log.warning("Watch of %s failed (retry in %.1fs): %s", self.name, self._delay, str(exc) or repr(exc))
                await asyncio.sleep(self._delay)

    async def _watch(self) -> None:
        params = {
            "resourceVersion": self.version,
            "allowWatchBookmarks": "true",
            "timeoutSeconds": WATCH_SERVER_TIMEOUT,
            "labelSelector": self.label_selector,
        }
        br = self.client._client.prepare_request(
            "list", res=self.resource, namespace=self._ns(), watch=True, params=params
        )
        # lightkube's watch reopens a stream the server ended, from the last version it saw.
        async for event_type, obj in self.client._client.watch(br):
            body = _to_dict(obj)
            self.version = str((body.get("metadata") or {}).get("resourceVersion") or self.version)
            self._delay = 0.0
            if event_type != "BOOKMARK":
                self._deliver(event_type, body)

    def _ns(self) -> str | None:
        if not issubclass(self.resource, NamespacedResource):
            return None
        return self.namespace or "*"  # lightkube's "all namespaces"

    def _deliver(self, event_type: str | None, body: Body) -> None:
        try:
            self.deliver(event_type, body)
        except Exception:  # a listener's bug must not stop the watch, nor replay the event forever
            log.exception("Handling a %s event of %s failed", event_type or "LIST", self.name)


def _to_dict(obj: Any) -> Body:
    return obj.to_dict() if hasattr(obj, "to_dict") else dict(obj)
