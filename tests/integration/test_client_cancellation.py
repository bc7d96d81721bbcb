"""A shared API client stays usable after many of its requests are cancelled mid-flight.

The controllers and the Tekton stand-in cancel work on one shared lightkube client (a deleted
object's task, a stopping watch). Cancelled at any moment - while connecting, sending or reading -
a request must leave the client's connection pool consistent: later requests are answered, none
waits without end.
"""

import asyncio
import gc
import random

import pytest
from lightkube import AsyncClient
from lightkube.core.exceptions import ApiError
from lightkube.models.meta_v1 import ObjectMeta
from lightkube.resources.core_v1 import ConfigMap

CANCELLED = 400


async def _work(kube: AsyncClient, namespace: str, index: int) -> None:
    name = f"cm-{index % 7}"
    try:
        match index % 4:
            case 0:
                await kube.create(
                    ConfigMap(metadata=ObjectMeta(name=name, namespace=namespace), data={"k": "v" * 5000})
                )
            case 1:
                await kube.get(ConfigMap, name, namespace=namespace)
            case 2:
                await kube.delete(ConfigMap, name, namespace=namespace)
            case _:
                async for _ in kube.list(ConfigMap, namespace=namespace):
                    pass
    except ApiError:
        pass  # 404 and 409 are expected; only the client's health is under test


# A request cancelled during its TLS handshake leaves its half-open socket to the garbage collector,
# which closes it (httpcore2 drops such a connection from the pool without closing it): a
# ResourceWarning, not a leak that lasts. What matters here is the pool.
@pytest.mark.filterwarnings("ignore::pytest.PytestUnraisableExceptionWarning")
async def test_cancelled_requests_leave_the_shared_client_usable(kube: AsyncClient, namespace: str) -> None:
    rng = random.Random(7)
    for index in range(CANCELLED):
        task = asyncio.create_task(_work(kube, namespace, index))
        # Cancel at a random moment: before it starts, mid-connect, mid-request, or after it finished.
        await asyncio.sleep(rng.random() * 0.01)
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
    # Every later request is answered within its own timeout (30 s), never left waiting on the pool.
    async with asyncio.timeout(60):
        answered = await asyncio.gather(
            *(kube.get(ConfigMap, "kube-root-ca.crt-missing", namespace=namespace) for _ in range(20)),
            return_exceptions=True,
        )
    assert all(isinstance(result, ApiError) and result.status.code == 404 for result in answered), answered
    pool = kube._client._client._transport._pool  # type: ignore[attr-defined]
    assert pool._requests == [], pool
    gc.collect()  # the dropped half-open sockets are closed now, under this test's warning filter
