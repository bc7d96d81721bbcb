"""A reflector against the real API server: a deletion while its watch was down is not lost, even when
the server no longer has the events since the reflector's version (410 Gone on resume)."""

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from lightkube import AsyncClient

from kubernaut.devcluster.controlplane import ControlPlane, free_port
from kubernaut.kube.client import make_client
from kubernaut.kube.reflector import Reflector
from kubernaut.kube.resources import RemediationRequestResource
from kubernaut.kube.runtime import Cache
from tests.integration.harness import eventually
from tests.integration.rr import rr_manifest


class CuttableProxy:
    """A TCP proxy to the API server whose connections the test can cut (and refuse) at will."""

    def __init__(self, upstream_port: int) -> None:
        self.upstream_port = upstream_port
        self.port = free_port()
        self.open = True
        self._writers: set[asyncio.StreamWriter] = set()
        self._server: asyncio.Server | None = None

    async def __aenter__(self) -> "CuttableProxy":
        self._server = await asyncio.start_server(self._serve, "127.0.0.1", self.port)
        return self

    async def __aexit__(self, *_: object) -> None:
        self.cut()
        assert self._server is not None
        self._server.close()
        await self._server.wait_closed()

    def cut(self) -> None:
        self.open = False
        for writer in list(self._writers):
            writer.transport.abort()
        self._writers.clear()

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        if not self.open:
            writer.transport.abort()
            return
        up_reader, up_writer = await asyncio.open_connection("127.0.0.1", self.upstream_port)
        self._writers |= {writer, up_writer}

        async def pipe(src: asyncio.StreamReader, dst: asyncio.StreamWriter) -> None:
            with contextlib.suppress(OSError, ConnectionError):
                while data := await src.read(65536):
                    dst.write(data)
                    await dst.drain()
            dst.transport.abort()

        await asyncio.gather(pipe(reader, up_writer), pipe(up_reader, writer))
        self._writers -= {writer, up_writer}


def kubeconfig_via(plane: ControlPlane, port: int, path: Path) -> Path:
    assert plane.pki is not None
    config = plane.kubeconfig_dict(
        "kubernaut-admin", plane.pki.admin_cert.read_bytes(), plane.pki.admin_key.read_bytes()
    )
    config["clusters"][0]["cluster"]["server"] = f"https://127.0.0.1:{port}"
    path.write_text(yaml.safe_dump(config))
    return path


@contextlib.asynccontextmanager
async def reflecting(client: AsyncClient, cache: Cache, namespace: str) -> AsyncIterator[Reflector]:
    reflector = Reflector(client, RemediationRequestResource, cache, namespace=namespace)
    task = asyncio.create_task(reflector.run())
    try:
        await asyncio.wait_for(reflector.synced.wait(), 20)
        yield reflector
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
        await client.close()


def request(name: str, namespace: str) -> Any:
    target = {"kind": "Deployment", "name": name, "namespace": namespace}
    return RemediationRequestResource(rr_manifest(name, namespace, target=target))


async def test_a_deletion_during_a_watch_gap_is_not_lost(
    kube: AsyncClient, control_plane: ControlPlane, namespace: str, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    for name in ("kept", "deleted"):
        await kube.create(request(name, namespace))
    cache = Cache()
    heard: list[str] = []
    cache.listen(lambda kind, body, _old: heard.append(f"{kind} {body['metadata']['name']}"))
    caplog.set_level(logging.WARNING, logger="kubernaut.kube.reflector")

    async with CuttableProxy(control_plane.api_port) as proxy:
        client = make_client(kubeconfig_via(control_plane, proxy.port, tmp_path / "kubeconfig"))
        async with reflecting(client, cache, namespace) as reflector:
            assert sorted(heard) == ["ADDED deleted", "ADDED kept"]
            await kube.create(request("while-watching", namespace))

            async def watched() -> bool:
                return cache.get(f"{namespace}/while-watching") is not None

            await eventually(watched, what="an object created while watching in the cache")

            proxy.cut()

            async def watch_failed() -> bool:
                return any("failed" in record.getMessage() for record in caplog.records)

            await eventually(watch_failed, what="the reflector to notice the cut")
            await kube.delete(RemediationRequestResource, "deleted", namespace=namespace)
            for name in ("created-1", "created-2"):
                await kube.create(request(name, namespace))
            # As if the server's history no longer reached back to the reflector's version (compacted):
            # its watch cache of this kind starts later than "1", so resuming is refused with 410 Gone.
            reflector.version = "1"
            proxy.open = True

            async def replaced() -> list[str] | None:
                names = sorted(body["metadata"]["name"] for body in cache.all())
                return names if "deleted" not in names and len(names) == 4 else None

            assert await eventually(replaced, what="the cache to match the server again") == [
                "created-1",
                "created-2",
                "kept",
                "while-watching",
            ]
            assert "DELETED deleted" in heard
            assert {"ADDED created-1", "ADDED created-2"} <= set(heard)
            assert reflector.lists == 2  # the resume was refused and answered by a new LIST
