"""The API verbs controllers use: each raises the tree of `kubernaut.kube.errors`, never lightkube's
`ApiError` or an httpx error, and hands back plain bodies (and, with `into`, applies them to an
informer cache so that the next pass reads what was just written or read).

- `get_object`: a GET; None when the object does not exist.
- `list_objects`: a LIST of one namespace by label selector.
- `create_idempotent`: a create; a taken name reads the object there instead (`created` False).
- `patch_status_if_current` / `patch_if_current`: merge patches with `metadata.resourceVersion` as
  precondition (`Conflict` when the object changed since it was read).
- `delete_if_ours`: a delete with a UID precondition, so that a newer object of the same name is
  never deleted; an object already gone counts as deleted; optionally with a propagation policy.
- `kube_errors()`: the same translation around any other call.
"""

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from lightkube import AsyncClient

from kubernaut.kube.client import patch_object
from kubernaut.kube.errors import AlreadyExists, Conflict, NotFound, to_kube_error
from kubernaut.kube.runtime import Body, Cache

CREATE_ATTEMPTS = 3  # a taken name released before it could be read is created again


@contextmanager
def kube_errors() -> Iterator[None]:
    """Re-raise a failed request as the error of the tree it is (anything else as it is)."""
    try:
        yield
    except Exception as exc:
        mapped = to_kube_error(exc)
        if mapped is None or mapped is exc:
            raise
        raise mapped from exc


def _to_dict(obj: Any) -> Body:
    return obj.to_dict() if hasattr(obj, "to_dict") else dict(obj)


def _into(cache: Cache | None, obj: Any, event_type: str = "MODIFIED") -> Body:
    body = _to_dict(obj)
    if cache is not None:
        cache.apply(event_type, body)
    return body


async def get_object(
    client: AsyncClient, resource: Any, name: str, namespace: str | None, *, into: Cache | None = None
) -> Body | None:
    try:
        with kube_errors():
            found = await client.get(resource, name, namespace=namespace)
    except NotFound:
        return None
    return _into(into, found)


async def list_objects(client: AsyncClient, resource: Any, namespace: str, *, labels: dict[str, str]) -> list[Body]:
    with kube_errors():
        return [_to_dict(obj) async for obj in client.list(resource, namespace=namespace, labels=labels)]


async def create_idempotent(client: AsyncClient, obj: Any, *, into: Cache | None = None) -> tuple[Body, bool]:
    """(the object, True) when this call created it; (the object holding the name, False) when the
    name was taken. Whose the existing object is, the caller decides."""
    meta = obj.metadata
    for _ in range(CREATE_ATTEMPTS):
        try:
            with kube_errors():
                created = await client.create(obj)
        except AlreadyExists:
            existing = await get_object(client, type(obj), meta.name, meta.namespace, into=into)
            if existing is not None:
                return existing, False
            continue
        return _into(into, created, "ADDED"), True
    raise Conflict(f"{meta.name}: taken and released again {CREATE_ATTEMPTS} times", code=409, reason="Conflict")


async def patch_status_if_current(
    client: AsyncClient,
    resource: Any,
    name: str,
    namespace: str | None,
    status: dict[str, Any],
    *,
    resource_version: str | None,
    into: Cache | None = None,
) -> Body:
    """Merge patch of the status subresource; `resource_version` (when set) is the precondition."""
    patch = {"status": status}
    return await patch_if_current(
        client, resource.Status, name, namespace, patch, resource_version=resource_version, into=into
    )


async def patch_if_current(
    client: AsyncClient,
    resource: Any,
    name: str,
    namespace: str | None,
    patch: dict[str, Any],
    *,
    resource_version: str | None,
    into: Cache | None = None,
) -> Body:
    """Merge patch of the main resource (metadata, spec); `resource_version` (when set) is the precondition."""
    with kube_errors():
        updated = await patch_object(client, resource, name, namespace, patch, resource_version=resource_version)
    return _into(into, updated)


async def delete_if_ours(
    client: AsyncClient, resource: Any, name: str, namespace: str | None, *, uid: str, propagation: str | None = None
) -> bool:
    """Delete the object of that name only if it still is the one with `uid`. True: it is gone
    (deleted now, or already) or, with `propagation` Foreground, going once its dependents are;
    False: the name belongs to another object, which is left alone.

    lightkube's `delete` sends no body, and preconditions travel only in the DeleteOptions body:
    the request is built and sent through lightkube's own client (hooks, auth and all)."""
    generic = client._client
    request = generic.prepare_request("delete", res=resource, name=name, namespace=namespace)
    request.data = {"apiVersion": "v1", "kind": "DeleteOptions", "preconditions": {"uid": uid}}
    if propagation:
        request.data["propagationPolicy"] = propagation
    try:
        with kube_errors():
            generic.handle_response("delete", await generic.send(generic.build_adapter_request(request)), request)
    except NotFound:
        return True
    except Conflict:
        return False
    return True
