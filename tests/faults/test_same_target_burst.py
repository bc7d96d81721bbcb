"""Requests for one target arriving together: the orchestrator lets exactly one through and blocks
the others (ResourceBusy), instead of creating several executions that then race for the lock."""

import asyncio
from pathlib import Path
from typing import Any

from lightkube import AsyncClient

from kubernaut.devcluster.tekton_standin import TektonStandIn
from kubernaut.kube.resources import RemediationRequestResource
from tests.faults.support import background, deadline, take_snapshot
from tests.integration.harness import create_namespace, eventually, running, settings_for
from tests.integration.rr import rr_manifest


@deadline()
async def test_burst_on_one_target_runs_one_and_blocks_the_rest(
    kube: AsyncClient, kubeconfig: Path, namespace: str
) -> None:
    exec_ns = await create_namespace(kube, "exec")
    settings = settings_for(exec_ns, execution={"cooldown": "1s"}, routing={"recentlyRemediatedCooldown": "0s"})
    async with background(TektonStandIn(kube, exec_ns)), running(kubeconfig, settings, ("orchestrator", "executor")):
        manifests = [
            rr_manifest(
                f"rr-{t}-{i}",
                namespace,
                target={"kind": "Deployment", "name": f"app-{t}", "namespace": namespace},
                bundle="kubernaut.local/standin/succeed:1tasks-500ms",
            )
            for t in range(4)
            for i in range(3)
        ]
        await asyncio.gather(*(kube.create(RemediationRequestResource(m)) for m in manifests))

        async def all_done() -> list[dict[str, Any]] | None:
            snapshot = await take_snapshot(kube, namespace, exec_ns)
            phases = [(rr.get("status") or {}).get("overallPhase") for rr in snapshot.rrs]
            return snapshot.rrs if all(p in ("Completed", "Failed") for p in phases) else None

        rrs = await eventually(all_done, timeout=60, what="every request finished")
    failed = {
        rr["metadata"]["name"]: rr["status"].get("message") for rr in rrs if rr["status"]["overallPhase"] != "Completed"
    }
    assert failed == {}
