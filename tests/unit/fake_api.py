"""A fake API server holding one object: merge patches with the resourceVersion precondition (409 on
a stale one) and reads, as lightkube's AsyncClient answers them; other objects are created and kept."""

import copy
import json
from typing import Any

import httpx2
from lightkube.core.exceptions import ApiError


def build_conflict() -> ApiError:
    request = httpx2.Request("PATCH", "https://127.0.0.1/apis/kubernaut.ai/v1alpha1")
    status = {"kind": "Status", "apiVersion": "v1", "status": "Failure", "reason": "Conflict", "code": 409}
    response = httpx2.Response(409, content=json.dumps(status).encode(), request=request)
    return ApiError(request=request, response=response)


def build_unavailable() -> ApiError:
    request = httpx2.Request("PATCH", "https://127.0.0.1/apis/kubernaut.ai/v1alpha1")
    status = {"kind": "Status", "apiVersion": "v1", "status": "Failure", "reason": "ServiceUnavailable", "code": 503}
    response = httpx2.Response(503, content=json.dumps(status).encode(), request=request)
    return ApiError(request=request, response=response)


def merge(target: Any, patch: Any) -> Any:
    """RFC 7386."""
    if not isinstance(patch, dict):
        return patch
    result = dict(target) if isinstance(target, dict) else {}
    for key, value in patch.items():
        if value is None:
            result.pop(key, None)
        else:
            result[key] = merge(result.get(key), value)
    return result


class Wire:
    def __init__(self, body: dict[str, Any]) -> None:
        self._body = copy.deepcopy(body)

    def to_dict(self) -> dict[str, Any]:
        return copy.deepcopy(self._body)


class FakeApi:
    def __init__(self, body: dict[str, Any]) -> None:
        self.body = copy.deepcopy(body)
        self.status_patches: list[dict[str, Any]] = []
        self.created: list[dict[str, Any]] = []

    def bump(self) -> None:
        meta = self.body["metadata"]
        meta["resourceVersion"] = str(int(meta["resourceVersion"]) + 1)

    async def patch(self, _resource: Any, _name: str, body: dict[str, Any], **_: Any) -> Wire:
        self.status_patches.append(body["status"])
        expected = (body.get("metadata") or {}).get("resourceVersion")
        if expected and expected != self.body["metadata"]["resourceVersion"]:
            raise build_conflict()
        self.body["status"] = merge(self.body.get("status") or {}, body["status"])
        self.bump()
        return Wire(self.body)

    async def create(self, obj: Any) -> Wire:
        body = copy.deepcopy(obj.to_dict())
        body["metadata"] = {**body["metadata"], "uid": f"uid-{len(self.created)}", "resourceVersion": "1"}
        self.created.append(body)
        return Wire(body)

    async def get(self, _resource: Any, _name: str, **_: Any) -> Wire:
        return Wire(self.body)
