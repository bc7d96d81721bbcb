"""The reflector's replace logic, and its LIST/WATCH cycle against a scripted API."""

import asyncio
import json
from collections.abc import AsyncIterator
from typing import Any

import httpx2
import pytest
from lightkube.core.exceptions import ApiError
from prometheus_client import REGISTRY

from kubernaut.config import parse_settings
from kubernaut.controllers.kinds import PIPELINERUN_KIND, RR_KIND, WORKFLOW_KIND
from kubernaut.controllers.manager import Manager
from kubernaut.kube import reflector as reflector_module
from kubernaut.kube.reflector import Reflector, next_backoff, stale_objects
from kubernaut.kube.resources import PipelineRunResource
from kubernaut.kube.runtime import Body, Cache


def obj(name: str, version: int, namespace: str = "ns", uid: str = "") -> Body:
    return {"metadata": {"name": name, "namespace": namespace, "resourceVersion": str(version), "uid": uid or name}}


def api_error(code: int, reason: str) -> ApiError:
    request = httpx2.Request("GET", "https://127.0.0.1/apis/tekton.dev/v1/pipelineruns")
    status = {"kind": "Status", "apiVersion": "v1", "status": "Failure", "reason": reason, "code": code}
    return ApiError(request=request, response=httpx2.Response(code, content=json.dumps(status).encode()))


def test_a_listing_removes_the_cached_objects_it_does_not_have() -> None:
    cached = [obj("kept", 3), obj("gone", 4), obj("also-gone", 9)]
    assert [b["metadata"]["name"] for b in stale_objects(cached, {"ns/kept"}, "10")] == ["gone", "also-gone"]


def test_an_object_newer_than_the_listing_is_kept() -> None:
    # Written by us after the LIST was taken: the watch from the list's version will tell its fate.
    assert stale_objects([obj("ours", 11), obj("at-list", 10)], set(), "10") == [obj("at-list", 10)]


def test_an_object_of_unknown_version_or_a_listing_without_one_removes_nothing() -> None:
    unknown = {"metadata": {"name": "x", "namespace": "ns"}}
    assert stale_objects([unknown], set(), "10") == []
    assert stale_objects([obj("x", 1)], set(), None) == []


def test_a_namespaced_listing_leaves_other_namespaces_alone() -> None:
    cached = [obj("a", 1, "one"), obj("a", 1, "two")]
    assert stale_objects(cached, set(), "10", namespace="one") == [obj("a", 1, "one")]
    assert len(stale_objects(cached, set(), "10")) == 2  # all namespaces, or a cluster-scoped kind


def test_back_off_doubles_from_half_a_second_to_five() -> None:
    delays = [next_backoff(0.0)]
    for _ in range(5):
        delays.append(next_backoff(delays[-1]))
    assert delays == [0.5, 1.0, 2.0, 4.0, 5.0, 5.0]


class Listing:
    def __init__(self, items: list[Body], version: str) -> None:
        self.items, self.resourceVersion = items, version

    async def __aiter__(self) -> AsyncIterator[Body]:
        for item in self.items:
            yield item


class ScriptedApi:
    """lightkube's generic client as the reflector uses it: each LIST and WATCH plays the next script;
    a watch whose script is played out stays open and quiet."""

    def __init__(self, lists: list[Listing], watches: list[list[Any]]) -> None:
        self.lists, self.watches = lists, watches
        self.requests: list[tuple[str, str | None, dict[str, Any]]] = []
        self.idle = asyncio.Event()

    def prepare_request(self, method: str, **kwargs: Any) -> dict[str, Any]:
        return {"watch": kwargs.get("watch", False), "namespace": kwargs.get("namespace"), **kwargs["params"]}

    def list(self, br: dict[str, Any]) -> Listing:
        self.requests.append(("LIST", br["namespace"], br))
        return self.lists.pop(0)

    async def watch(self, br: dict[str, Any]) -> AsyncIterator[tuple[str, Body]]:
        self.requests.append(("WATCH", br["namespace"], br))
        for step in self.watches.pop(0) if self.watches else []:
            if isinstance(step, Exception):
                raise step
            yield step
        self.idle.set()
        await asyncio.Event().wait()


class Client:
    def __init__(self, api: ScriptedApi) -> None:
        self._client = api


async def run_until_idle(reflector: Reflector, api: ScriptedApi) -> None:
    task = asyncio.create_task(reflector.run())
    try:
        await asyncio.wait_for(api.idle.wait(), 5)
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)


async def test_a_relist_after_an_expired_watch_deletes_what_vanished_in_between(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(reflector_module, "BACKOFF_FIRST", 0.01)
    api = ScriptedApi(
        lists=[Listing([obj("a", 1), obj("b", 2)], "5"), Listing([obj("a", 8), obj("c", 9)], "10")],
        watches=[
            # A quiet stream may end in a read timeout: resumed at once, from the last version seen.
            [("BOOKMARK", {"metadata": {"resourceVersion": "7"}}), ("MODIFIED", obj("a", 8)), httpx2.ReadTimeout("")],
            [api_error(410, "Expired")],
            [httpx2.ReadError("connection reset")],
        ],
    )
    cache = Cache()
    heard: list[str] = []
    cache.listen(lambda kind, body, _old: heard.append(f"{kind} {body['metadata']['name']}"))
    plural = f"pipelineruns-{id(cache)}"
    reflector = Reflector(Client(api), PipelineRunResource, cache, namespace="ns", label_selector="x", plural=plural)  # type: ignore[arg-type]
    assert not reflector.synced.is_set()
    await run_until_idle(reflector, api)
    lists = {
        r: REGISTRY.get_sample_value("kubernaut_watch_lists_total", {"resource": plural, "reason": r})
        for r in ("start", "expired")
    }
    assert lists == {"start": 1, "expired": 1}

    assert reflector.synced.is_set()
    assert heard == ["ADDED a", "ADDED b", "MODIFIED a", "ADDED c", "DELETED b"]
    assert sorted(b["metadata"]["name"] for b in cache.all()) == ["a", "c"]
    versions = [(kind, br.get("resourceVersion")) for kind, _, br in api.requests]
    assert versions == [
        ("LIST", None),
        ("WATCH", "5"),
        ("WATCH", "8"),  # expired: list again
        ("LIST", None),
        ("WATCH", "10"),
        ("WATCH", "10"),  # after the stream error, from the same version
    ]
    assert all(br["labelSelector"] == "x" and br["namespace"] == "ns" for _, _, br in api.requests)
    assert all(br.get("allowWatchBookmarks") == "true" for kind, _, br in api.requests if kind == "WATCH")


async def test_a_replace_keeps_our_own_newer_write_and_spares_other_namespaces() -> None:
    api = ScriptedApi(lists=[Listing([], "10")], watches=[])
    cache = Cache()
    for body in (obj("ours", 12), obj("old", 4), obj("old", 4, namespace="elsewhere")):
        cache.apply("ADDED", body)
    reflector = Reflector(Client(api), PipelineRunResource, cache, namespace="ns")  # type: ignore[arg-type]
    await reflector.replace()
    assert sorted(f"{b['metadata']['namespace']}/{b['metadata']['name']}" for b in cache.all()) == [
        "elsewhere/old",
        "ns/ours",
    ]
    assert reflector.version == "10"


async def test_a_failing_listener_does_not_stop_the_reflector() -> None:
    api = ScriptedApi(lists=[Listing([obj("a", 1)], "5")], watches=[[("ADDED", obj("b", 6))]])
    cache = Cache()

    def broken(_kind: str, _body: Body, _old: Body | None) -> None:
        raise RuntimeError("listener bug")

    cache.listen(broken)
    reflector = Reflector(Client(api), PipelineRunResource, cache)  # type: ignore[arg-type]
    await run_until_idle(reflector, api)
    assert sorted(b["metadata"]["name"] for b in cache.all()) == ["a", "b"]
    assert [ns for _, ns, _ in api.requests] == ["*", "*"]  # every namespace


def test_each_kind_is_watched_as_narrowly_as_it_is_read() -> None:
    settings = parse_settings({"execution": {"namespace": "runs"}, "audit": {"url": "memory://"}})
    manager = Manager(client=None, settings=settings, audit=None, namespaces=("a", "b"))  # type: ignore[arg-type]
    for kind in (RR_KIND, WORKFLOW_KIND, PIPELINERUN_KIND):
        manager.cache(kind)
    scopes = {(r.name, r._ns(), r.label_selector) for r in manager._reflectors()}
    assert scopes == {
        ("remediationrequests in a", "a", None),
        ("remediationrequests in b", "b", None),
        ("remediationworkflows", None, None),  # cluster-scoped
        ("pipelineruns in runs", "runs", "kubernaut.ai/workflow-execution"),
    }
    assert RR_KIND.scopes(settings, ()) == (None,)  # no namespace list: every namespace


class NotServed(Listing):
    """The LIST of a kind whose CRD is not installed: 404."""

    def __init__(self) -> None:
        super().__init__([], "")

    async def __aiter__(self) -> AsyncIterator[Body]:
        raise api_error(404, "NotFound")
        yield {}  # pragma: no cover - makes this an async generator


async def test_an_optional_kind_not_served_is_empty_until_it_is(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(reflector_module, "ABSENT_RECHECK_SECONDS", 0.01)
    api = ScriptedApi(lists=[NotServed(), NotServed(), Listing([obj("a", 3)], "5")], watches=[])
    cache = Cache()
    reflector = Reflector(Client(api), PipelineRunResource, cache, namespace="ns", optional=True)  # type: ignore[arg-type]
    await reflector.replace()  # what the manager's start does: no error, an empty synced cache
    assert (reflector.synced.is_set(), reflector.absent, cache.all()) == (True, True, [])
    await run_until_idle(reflector, api)  # Tekton installed meanwhile: listed, then watched
    assert [b["metadata"]["name"] for b in cache.all()] == ["a"]
    assert not reflector.absent
    assert [kind for kind, _, _ in api.requests] == ["LIST", "LIST", "LIST", "WATCH"]


async def test_a_kind_that_must_be_served_stops_the_start() -> None:
    api = ScriptedApi(lists=[NotServed()], watches=[])
    reflector = Reflector(Client(api), PipelineRunResource, Cache(), namespace="ns")  # type: ignore[arg-type]
    with pytest.raises(ApiError):
        await reflector.replace()
    assert not reflector.synced.is_set()


class Failing(Listing):
    """The LIST answered with an error status."""

    def __init__(self, code: int, reason: str) -> None:
        super().__init__([], "")
        self.code, self.reason = code, reason

    async def __aiter__(self) -> AsyncIterator[Body]:
        raise api_error(self.code, self.reason)
        yield {}  # pragma: no cover - makes this an async generator


async def test_the_first_listing_is_retried_while_the_server_is_not_ready(monkeypatch: pytest.MonkeyPatch) -> None:
    # Just after a CRD is created the server answers 429 "storage is (re)initializing" for a while.
    monkeypatch.setattr(reflector_module, "next_backoff", lambda _delay: 0.0)
    api = ScriptedApi(
        lists=[Failing(429, "TooManyRequests"), Failing(503, ""), Listing([obj("a", 3)], "5")], watches=[]
    )
    cache = Cache()
    reflector = Reflector(Client(api), PipelineRunResource, cache, namespace="ns")  # type: ignore[arg-type]
    await reflector.prime()
    assert [b["metadata"]["name"] for b in cache.all()] == ["a"]
    assert (reflector.synced.is_set(), reflector.version) == (True, "5")
    assert [kind for kind, _, _ in api.requests] == ["LIST", "LIST", "LIST"]


async def test_a_refused_first_listing_stops_the_start() -> None:
    api = ScriptedApi(lists=[Failing(403, "Forbidden"), Listing([obj("a", 3)], "5")], watches=[])
    reflector = Reflector(Client(api), PipelineRunResource, Cache(), namespace="ns")  # type: ignore[arg-type]
    with pytest.raises(ApiError):
        await reflector.prime()
    assert [kind for kind, _, _ in api.requests] == ["LIST"]
