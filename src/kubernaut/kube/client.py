"""Creating API clients and installing CRDs."""

import asyncio
import time
from pathlib import Path
from typing import Any

import httpx2 as httpx
from lightkube import AsyncClient, KubeConfig
from lightkube.codecs import load_all_yaml
from lightkube.config.client_adapter import verify_cluster
from lightkube.core.exceptions import ApiError
from lightkube.generic_resource import create_global_resource, create_namespaced_resource
from lightkube.resources.apiextensions_v1 import CustomResourceDefinition
from lightkube.types import PatchType

from kubernaut.kube.credentials import resolve_exec
from kubernaut.kube.ratelimit import TokenBucket, limit_requests

FIELD_MANAGER = "kubernaut"
# One pool for the requests and the watch streams, every connection of it kept open. httpx keeps
# only 20 idle of its 100 by default: under load every connection above 20 was closed after its
# request and the next one paid a new TLS handshake (on both sides), and each request scans the
# whole pool, a readability check per idle connection. 48 holds every watch stream of a process
# (about a dozen) and three dozen requests in flight; a request beyond that waits for a connection.
POOL = httpx.Limits(max_connections=48, max_keepalive_connections=48)


def make_client(
    kubeconfig: Path | None = None, *, timeout: float = 30.0, rate_limit: TokenBucket | None = None
) -> AsyncClient:
    """An async client for the given kubeconfig, or the usual kubeconfig / in-cluster resolution
    (lightkube's: certificates, tokens, token files, in-cluster), with exec plugins run by us.
    With `rate_limit`, every request it sends takes a token of that bucket first."""
    config = KubeConfig.from_file(str(kubeconfig)) if kubeconfig else KubeConfig.from_env()
    config, token_auth = resolve_exec(config)
    single = config.get()
    transport = httpx.AsyncHTTPTransport(
        verify=verify_cluster(single.cluster, single.user, single.abs_file), limits=POOL
    )
    client = AsyncClient(config=config, field_manager=FIELD_MANAGER, timeout=timeout, transport=transport)
    if token_auth is not None:
        client._client._client.auth = token_auth  # the httpx client under lightkube's
    if rate_limit is not None:
        limit_requests(client, rate_limit)
    return client


def load_manifests(paths: list[Path]) -> list[Any]:
    objects: list[Any] = []
    for path in paths:
        files = sorted(path.glob("*.yaml")) if path.is_dir() else [path]
        for file in files:
            with file.open() as handle:
                objects.extend(load_all_yaml(handle))
    return objects


async def apply_objects(client: AsyncClient, objects: list[Any]) -> None:
    """Server-side apply, so that re-running is idempotent."""
    for obj in objects:
        await client.apply(obj, force=True)


async def install_crds(client: AsyncClient, paths: list[Path], wait_seconds: float = 30.0) -> list[str]:
    """Apply CRD manifests and wait until each is Established and served."""
    crds = [obj for obj in load_manifests(paths) if isinstance(obj, CustomResourceDefinition)]
    await apply_objects(client, crds)
    names = [crd.metadata.name for crd in crds]
    deadline = time.monotonic() + wait_seconds
    for name in names:
        while True:
            crd = await client.get(CustomResourceDefinition, name)
            conditions = (crd.status.conditions if crd.status else None) or []
            if any(c.type == "Established" and c.status == "True" for c in conditions) and await _serves(client, crd):
                break
            if time.monotonic() > deadline:
                raise TimeoutError(f"CRD {name} not established within {wait_seconds:.0f}s")
            await asyncio.sleep(0.1)
    return names


async def _serves(client: AsyncClient, crd: CustomResourceDefinition) -> bool:
    """True once the new kind answers a LIST (its storage initialises after Established)."""
    spec = crd.spec
    version = next(v.name for v in spec.versions if v.storage)
    factory = create_namespaced_resource if spec.scope == "Namespaced" else create_global_resource
    resource = factory(spec.group, version, spec.names.kind, spec.names.plural)
    try:
        if spec.scope == "Namespaced":
            await client.get(resource, "kubernaut-probe", namespace="default")
        else:
            await client.get(resource, "kubernaut-probe")
    except ApiError as exc:
        return bool(exc.status.code == 404)
    return True


def is_status(error: ApiError, *codes: int) -> bool:
    return error.status.code in codes


async def patch_status(
    client: AsyncClient,
    resource: Any,
    name: str,
    namespace: str | None,
    status: dict[str, Any],
    *,
    resource_version: str | None = None,
) -> Any:
    """JSON merge patch of the status subresource; with `resource_version` it is a precondition
    (409 Conflict if the object changed since it was read)."""
    return await patch_object(
        client, resource.Status, name, namespace, {"status": status}, resource_version=resource_version
    )


async def patch_object(
    client: AsyncClient,
    resource: Any,
    name: str,
    namespace: str | None,
    patch: dict[str, Any],
    *,
    resource_version: str | None = None,
) -> Any:
    """JSON merge patch of the main resource (metadata, spec)."""
    if resource_version:
        patch = {**patch, "metadata": {**patch.get("metadata", {}), "resourceVersion": resource_version}}
    return await client.patch(resource, name, patch, namespace=namespace, patch_type=PatchType.MERGE)
