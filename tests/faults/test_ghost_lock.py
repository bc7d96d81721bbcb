"""A lock released while the orchestrator cannot see it: the orchestrator and the executor run as two
`kubernaut run` processes, the orchestrator reaching the API server through a proxy the test cuts.
While it is cut off the executor deletes the PipelineRun (the lock) and etcd is compacted past the
orchestrator's watch, so its resumed watch gets 410 Gone and only its re-LIST can show the lock gone.
A request waiting ResourceBusy behind that lock must then run; a cache that kept the deleted
PipelineRun (a ghost lock) would block it for good."""

import base64
import json
import time
import urllib.request
from collections.abc import AsyncIterator, Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
import pytest_asyncio
import yaml
from lightkube import AsyncClient

from kubernaut.devcluster.controlplane import ControlPlane
from kubernaut.kube.client import patch_status
from kubernaut.kube.resources import PipelineRunResource, RemediationRequestResource, WorkflowExecutionResource
from tests.faults.support import Operator, deadline, write_operator_config
from tests.faults.tcp_proxy import TcpProxy
from tests.integration.harness import STATE_KUBECONFIG, admin_client, create_namespace, eventually, get_or_none
from tests.integration.rr import fingerprint, rr_manifest, rr_status

# PipelineRuns bypass the API server's watch cache, so a watch of them resumes from etcd, and etcd
# answers a version older than its compaction with 410 Gone (the watch cache would keep serving the
# old version for minutes). Every other kind is served as usual.
WATCH_CACHE_OFF_FOR_PIPELINERUNS = "--watch-cache-sizes=pipelineruns.tekton.dev#0"
RELIST_LOG = "Watch of pipelineruns in {namespace} expired"
COOLDOWN = "2s"


@pytest.fixture(scope="module")
def plane(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ControlPlane]:
    started = ControlPlane(
        tmp_path_factory.mktemp("ghost-plane"), extra_apiserver_args=[WATCH_CACHE_OFF_FOR_PIPELINERUNS]
    )
    started.start()
    STATE_KUBECONFIG.append(started.kubeconfig)
    try:
        yield started
    finally:
        STATE_KUBECONFIG.remove(started.kubeconfig)
        started.stop()


@pytest_asyncio.fixture(scope="module", loop_scope="session")
async def admin(plane: ControlPlane) -> AsyncIterator[AsyncClient]:
    async with admin_client(plane, tekton_runs=False) as client:
        yield client


@pytest_asyncio.fixture(loop_scope="session")
async def proxy(plane: ControlPlane) -> AsyncIterator[TcpProxy]:
    forwarder = await TcpProxy("127.0.0.1", plane.api_port).start()
    yield forwarder
    await forwarder.close()


def kubeconfig_through(plane: ControlPlane, proxy: TcpProxy, path: Path) -> Path:
    """The admin kubeconfig, dialling the proxy (the serving certificate names 127.0.0.1)."""
    config = yaml.safe_load(plane.kubeconfig.read_text())
    config["clusters"][0]["cluster"]["server"] = proxy.url
    path.write_text(yaml.safe_dump(config))
    path.chmod(0o600)
    return path


def _etcd(plane: ControlPlane, path: str, body: dict[str, Any]) -> dict[str, Any]:
    request = urllib.request.Request(
        f"http://127.0.0.1:{plane.etcd_port}{path}", data=json.dumps(body).encode(), method="POST"
    )
    with urllib.request.urlopen(request, timeout=5) as response:
        found: dict[str, Any] = json.loads(response.read())
        return found


def compact_etcd(plane: ControlPlane) -> None:
    """Drop etcd's history up to its current revision (etcd's v3 JSON gateway): a watch from any
    version seen before now is answered 410 Gone."""
    revision = int(_etcd(plane, "/v3/kv/range", {"key": base64.b64encode(b"\0").decode()})["header"]["revision"])
    _etcd(plane, "/v3/kv/compaction", {"revision": str(revision), "physical": True})


async def pipelineruns(admin: AsyncClient, namespace: str) -> list[dict[str, Any]]:
    return [obj.to_dict() async for obj in admin.list(PipelineRunResource, namespace=namespace)]


async def finish_run(admin: AsyncClient, name: str, namespace: str) -> None:
    """Play Tekton: the run succeeded just now."""
    now = datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
    condition = {"type": "Succeeded", "status": "True", "reason": "Succeeded", "message": "", "lastTransitionTime": now}
    status = {"conditions": [condition], "startTime": now, "completionTime": now}
    await patch_status(admin, PipelineRunResource, name, namespace, status)


@deadline(150)
async def test_lock_released_while_cut_off_frees_the_waiting_request(
    plane: ControlPlane, admin: AsyncClient, proxy: TcpProxy, tmp_path: Path
) -> None:
    namespace = await create_namespace(admin, "ghost")
    exec_ns = await create_namespace(admin, "ghost-exec")
    target = {"kind": "Deployment", "name": "app", "namespace": namespace}
    for name in ("orchestrator", "executor"):
        (tmp_path / name).mkdir()
    through_proxy = kubeconfig_through(plane, proxy, tmp_path / "orchestrator.kubeconfig")
    orchestrator = Operator(through_proxy, tmp_path / "orchestrator", "orchestrator")
    executor = Operator(plane.kubeconfig, tmp_path / "executor", "executor")
    sections = {"execution": {"cooldown": COOLDOWN}}
    try:
        orchestrator.start(
            write_operator_config(tmp_path / "ro.yaml", exec_ns, tmp_path / "ro.db", **sections), verbose=True
        )
        executor.start(write_operator_config(tmp_path / "we.yaml", exec_ns, tmp_path / "we.db", **sections))
        await orchestrator.wait_ready()
        await executor.wait_ready()

        # The target is busy: the first request's execution runs and holds the lock.
        await admin.create(
            RemediationRequestResource(rr_manifest("rr-first", namespace, target=target, fp=fingerprint("first")))
        )
        found = await eventually(lambda: pipelineruns(admin, exec_ns), timeout=30, what="the first run's PipelineRun")
        lock = found[0]["metadata"]["name"]
        await admin.create(
            RemediationRequestResource(rr_manifest("rr-second", namespace, target=target, fp=fingerprint("second")))
        )

        async def blocked_busy() -> bool:
            status = await rr_status(admin, "rr-second", namespace)
            return status.get("overallPhase") == "Blocked" and status.get("blockReason") == "ResourceBusy"

        await eventually(blocked_busy, timeout=30, what="rr-second Blocked ResourceBusy")

        # Cut off, the orchestrator misses the run's end and the lock's release.
        await proxy.cut()
        await finish_run(admin, lock, exec_ns)

        async def released() -> bool:
            return not await pipelineruns(admin, exec_ns)

        await eventually(released, timeout=30, what="the executor releasing the lock")
        compact_etcd(plane)
        relist = RELIST_LOG.format(namespace=exec_ns)
        assert relist not in orchestrator.all_logs()

        await proxy.restore()
        restored = time.monotonic()

        async def second_executing() -> bool:
            status = await rr_status(admin, "rr-second", namespace)
            wfe = await get_or_none(admin, WorkflowExecutionResource, "we-rr-second", namespace)
            return status.get("overallPhase") == "Executing" and wfe is not None

        await eventually(second_executing, timeout=40, interval=0.2, what="rr-second Executing with its WFE")
        print(f"rr-second executing {time.monotonic() - restored:.1f}s after the orchestrator was reconnected")
        # Its watch resumed from a compacted version: the server said 410 Gone and it listed again.
        assert relist in orchestrator.all_logs(), orchestrator.tail()
        assert orchestrator.running, orchestrator.tail()
        assert executor.running, executor.tail()
    finally:
        orchestrator.cleanup()
        executor.cleanup()
