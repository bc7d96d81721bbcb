"""The API verbs against a fake API server behind lightkube's real client: what each sends, what it
hands back, what it puts in the cache, and the errors of the tree it raises instead of ApiError."""

import json
from pathlib import Path
from typing import Any

import httpx2
import pytest
from lightkube import AsyncClient

from kubernaut.kube.api import (
    create_idempotent,
    delete_if_ours,
    get_object,
    patch_if_current,
    patch_status_if_current,
)
from kubernaut.kube.client import make_client
from kubernaut.kube.errors import Conflict, NotFound, Refused, Transient
from kubernaut.kube.resources import PipelineRunResource
from kubernaut.kube.runtime import Cache
from tests.unit.fake_api import merge

PATH = "/apis/tekton.dev/v1/namespaces/exec/pipelineruns"


def status(code: int, reason: str, message: str) -> httpx2.Response:
    body = {"kind": "Status", "apiVersion": "v1", "status": "Failure", "code": code, "reason": reason}
    return httpx2.Response(code, json={**body, "message": message})


class FakeServer:
    """PipelineRuns by name, with resourceVersion and UID preconditions as the API server checks them."""

    def __init__(self) -> None:
        self.objects: dict[str, dict[str, Any]] = {}
        self.requests: list[tuple[str, str, Any]] = []
        self.answer: httpx2.Response | Exception | None = None  # the next request's answer, once
        self._version = 0

    def put(self, name: str, uid: str) -> dict[str, Any]:
        self._version += 1
        body = {
            "apiVersion": "tekton.dev/v1",
            "kind": "PipelineRun",
            "metadata": {"name": name, "namespace": "exec", "uid": uid, "resourceVersion": str(self._version)},
        }
        self.objects[name] = body
        return body

    def __call__(self, request: httpx2.Request) -> httpx2.Response:
        sent = json.loads(request.content) if request.content else None
        self.requests.append((request.method, request.url.path, sent))
        if self.answer is not None:
            answer, self.answer = self.answer, None
            if isinstance(answer, Exception):
                raise answer
            return answer
        name = request.url.path.removeprefix(PATH).strip("/").removesuffix("/status")
        if request.method == "POST":
            name = sent["metadata"]["name"]
            if name in self.objects:
                return status(409, "AlreadyExists", f'pipelineruns.tekton.dev "{name}" already exists')
            return httpx2.Response(201, json=self.put(name, f"uid-{name}"))
        current = self.objects.get(name)
        if current is None:
            return status(404, "NotFound", f'pipelineruns.tekton.dev "{name}" not found')
        if request.method == "GET":
            return httpx2.Response(200, json=current)
        if request.method == "DELETE":
            uid = ((sent or {}).get("preconditions") or {}).get("uid")
            if uid is not None and uid != current["metadata"]["uid"]:
                return status(409, "Conflict", f"Precondition failed: UID in precondition: {uid}")
            del self.objects[name]
            return httpx2.Response(200, json={"kind": "Status", "apiVersion": "v1", "status": "Success"})
        expected = (sent.get("metadata") or {}).get("resourceVersion")
        if expected and expected != current["metadata"]["resourceVersion"]:
            return status(409, "Conflict", "the object has been modified")
        updated = merge(current, sent)
        self._version += 1
        updated["metadata"]["resourceVersion"] = str(self._version)
        self.objects[name] = updated
        return httpx2.Response(200, json=updated)


@pytest.fixture
def server() -> FakeServer:
    return FakeServer()


@pytest.fixture
def client(kubeconfig: Path, server: FakeServer) -> AsyncClient:
    client = make_client(kubeconfig)
    client._client._client._transport = httpx2.MockTransport(server)
    return client


def manifest(name: str) -> Any:
    return PipelineRunResource(
        {"apiVersion": "tekton.dev/v1", "kind": "PipelineRun", "metadata": {"name": name, "namespace": "exec"}}
    )


async def test_get_puts_what_it_read_in_the_cache_and_a_missing_object_is_none(
    client: AsyncClient, server: FakeServer
) -> None:
    server.put("a", "uid-a")
    cache = Cache()

    found = await get_object(client, PipelineRunResource, "a", "exec", into=cache)

    assert found is not None
    assert found["metadata"]["uid"] == "uid-a"
    assert cache.get("exec/a") == found
    assert await get_object(client, PipelineRunResource, "b", "exec", into=cache) is None
    assert cache.get("exec/b") is None


async def test_create_idempotent_creates_or_hands_back_the_object_holding_the_name(
    client: AsyncClient, server: FakeServer
) -> None:
    cache = Cache()

    created, fresh = await create_idempotent(client, manifest("a"), into=cache)
    again, fresh_again = await create_idempotent(client, manifest("a"), into=cache)

    assert fresh
    assert not fresh_again
    assert created["metadata"]["uid"] == again["metadata"]["uid"] == "uid-a"
    assert cache.get("exec/a") == again
    assert [(m, p) for m, p, _ in server.requests] == [("POST", PATH), ("POST", PATH), ("GET", f"{PATH}/a")]


async def test_create_idempotent_creates_again_a_name_released_before_it_was_read(
    client: AsyncClient, server: FakeServer
) -> None:
    server.answer = status(409, "AlreadyExists", "already exists")  # the holder is deleted before the read

    body, created = await create_idempotent(client, manifest("a"))

    assert created
    assert body["metadata"]["name"] == "a"
    assert [m for m, _, _ in server.requests] == ["POST", "GET", "POST"]


async def test_patch_status_sends_the_resource_version_precondition_and_a_stale_one_conflicts(
    client: AsyncClient, server: FakeServer
) -> None:
    version = server.put("a", "uid-a")["metadata"]["resourceVersion"]
    cache = Cache()

    updated = await patch_status_if_current(
        client, PipelineRunResource, "a", "exec", {"phase": "x"}, resource_version=version, into=cache
    )
    with pytest.raises(Conflict) as stale:
        await patch_status_if_current(
            client, PipelineRunResource, "a", "exec", {"phase": "y"}, resource_version=version
        )

    assert server.requests[0] == (
        "PATCH",
        f"{PATH}/a/status",
        {"status": {"phase": "x"}, "metadata": {"resourceVersion": version}},
    )
    assert updated["status"] == {"phase": "x"}
    assert cache.get("exec/a") == updated
    assert (stale.value.code, stale.value.reason) == (409, "Conflict")
    assert server.objects["a"]["status"] == {"phase": "x"}


async def test_patch_of_a_missing_object_is_not_found(client: AsyncClient) -> None:
    with pytest.raises(NotFound):
        await patch_if_current(
            client, PipelineRunResource, "a", "exec", {"metadata": {"labels": {}}}, resource_version="1"
        )


async def test_delete_if_ours_deletes_only_the_object_with_our_uid(client: AsyncClient, server: FakeServer) -> None:
    server.put("a", "uid-new")  # ours (uid-old) was replaced by another of the same name

    assert await delete_if_ours(client, PipelineRunResource, "a", "exec", uid="uid-old") is False
    assert "a" in server.objects
    assert await delete_if_ours(client, PipelineRunResource, "a", "exec", uid="uid-new") is True
    assert "a" not in server.objects
    assert await delete_if_ours(client, PipelineRunResource, "a", "exec", uid="uid-new") is True  # already gone
    assert server.requests[0] == (
        "DELETE",
        f"{PATH}/a",
        {"apiVersion": "v1", "kind": "DeleteOptions", "preconditions": {"uid": "uid-old"}},
    )


@pytest.mark.parametrize(
    ("answer", "kind"),
    [
        pytest.param(status(422, "Invalid", "spec.params: Invalid value"), Refused, id="refused"),
        pytest.param(status(503, "ServiceUnavailable", "etcd is down"), Transient, id="unavailable"),
        pytest.param(httpx2.ConnectError("connection refused"), Transient, id="unreachable"),
    ],
)
async def test_every_verb_raises_the_tree_never_the_raw_error(
    client: AsyncClient, server: FakeServer, answer: httpx2.Response | Exception, kind: type[Exception]
) -> None:
    server.put("a", "uid-a")
    calls = [
        lambda: get_object(client, PipelineRunResource, "a", "exec"),
        lambda: create_idempotent(client, manifest("b")),
        lambda: patch_status_if_current(client, PipelineRunResource, "a", "exec", {}, resource_version="1"),
        lambda: patch_if_current(client, PipelineRunResource, "a", "exec", {}, resource_version="1"),
        lambda: delete_if_ours(client, PipelineRunResource, "a", "exec", uid="uid-a"),
    ]
    for call in calls:
        server.answer = answer
        with pytest.raises(kind) as raised:
            await call()
        assert type(raised.value) is kind
