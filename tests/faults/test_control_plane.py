"""The API server, and separately etcd, restart while remediations run: the operator reconnects on its
own (a request created after the restart completes) and nothing runs twice or goes unaudited."""

import asyncio
import time
from collections.abc import Awaitable, Callable
from pathlib import Path

import pytest
from lightkube import AsyncClient

from kubernaut.devcluster.controlplane import ControlPlane
from kubernaut.kube.resources import RemediationRequestResource
from tests.faults.conftest import Scale
from tests.faults.support import (
    Operator,
    PipelineRunLedger,
    Workload,
    background,
    check_invariants,
    deadline,
    restart_etcd,
    wait_locks_released,
    wait_settled,
    write_operator_config,
)
from tests.integration.harness import create_execution_namespace, eventually
from tests.integration.rr import rr_manifest, rr_status
from tests.integration.tekton_support import played

pytestmark = [pytest.mark.tekton, pytest.mark.usefixtures("clean_cluster")]


async def restart_apiserver(plane: ControlPlane) -> None:
    await asyncio.to_thread(plane.restart_apiserver, 1.0)


async def run_through_restart(
    kube: AsyncClient,
    kubeconfig: Path,
    namespace: str,
    tmp_path: Path,
    scale: Scale,
    restart: Callable[[], Awaitable[None]],
) -> dict[str, object]:
    exec_ns = await create_execution_namespace(kube)
    audit_db = tmp_path / "audit.db"
    config = write_operator_config(tmp_path / "operator.yaml", exec_ns, audit_db, execution={"cooldown": "3s"})
    operator = Operator(kubeconfig, tmp_path)
    ledger = PipelineRunLedger(kube, exec_ns)
    workload = Workload(kube, namespace, seed=3)
    restarts = 2 if scale.long else 1
    started = time.monotonic()
    try:
        # One stand-in throughout: like Tekton's controller, it carries its runs on across the restart.
        async with background(ledger):
            operator.start(config)
            await operator.wait_ready()
            per_round = scale.batch_remediations // restarts
            for _ in range(restarts):
                await workload.create(per_round)
                await asyncio.sleep(1.0)  # some are running, some are blocked, some cooling down
                await restart()
            restarted = time.monotonic()
            # Created after the restart: only a resumed watch can bring it to the operator.
            after = rr_manifest(
                "rr-after-restart",
                namespace,
                target={"kind": "Deployment", "name": "fresh", "namespace": namespace},
                bundle=played("succeed:1tasks-500ms"),
            )
            await eventually(lambda: _create(kube, after), timeout=30, what="API server accepting writes again")

            async def completed() -> bool:
                status = await rr_status(kube, "rr-after-restart", namespace)
                return status.get("overallPhase") == "Completed"

            await eventually(completed, timeout=60, what="a request created after the restart completes")
            recovered = round(time.monotonic() - restarted, 1)
            await wait_settled(kube, namespace, exec_ns, timeout=120)
            await wait_locks_released(kube, exec_ns, 3.0, timeout=30)
            assert operator.running, operator.tail()
            assert await operator.stop() == 0, operator.tail()
        verdict = await check_invariants(kube, namespace, exec_ns, audit_db, ledger)
        seconds = round(time.monotonic() - started, 1)
        verdict.figures.update(restarts=restarts, recovered_after=recovered, seconds=seconds)
        assert verdict.problems == [], verdict.problems
        return verdict.figures
    finally:
        operator.cleanup()


async def _create(kube: AsyncClient, manifest: dict[str, object]) -> bool:
    try:
        await kube.create(RemediationRequestResource(manifest))
    except Exception:
        return False
    return True


@deadline()
async def test_apiserver_restart_during_remediations(
    kube: AsyncClient,
    kubeconfig: Path,
    namespace: str,
    tmp_path: Path,
    scale: Scale,
    fault_plane_of_module: ControlPlane,
) -> None:
    figures = await run_through_restart(
        kube, kubeconfig, namespace, tmp_path, scale, lambda: restart_apiserver(fault_plane_of_module)
    )
    print("apiserver restart:", figures)


@deadline()
async def test_etcd_restart_during_remediations(
    kube: AsyncClient,
    kubeconfig: Path,
    namespace: str,
    tmp_path: Path,
    scale: Scale,
    fault_plane_of_module: ControlPlane,
) -> None:
    figures = await run_through_restart(
        kube, kubeconfig, namespace, tmp_path, scale, lambda: restart_etcd(fault_plane_of_module, down_for=1.0)
    )
    print("etcd restart:", figures)
