"""Requests for one target arriving together: the orchestrator lets exactly one through and blocks
the others (ResourceBusy), instead of creating several executions that then race for the lock."""

import asyncio
from collections import Counter
from pathlib import Path
from typing import Any

import pytest
from lightkube import AsyncClient

from kubernaut.kube.resources import RemediationRequestResource, WorkflowExecutionResource
from tests.faults.support import deadline, take_snapshot
from tests.integration.harness import create_execution_namespace, eventually, running, settings_for
from tests.integration.orchestrator_support import Recorded, recording
from tests.integration.rr import rr_manifest
from tests.integration.tekton_support import played

pytestmark = pytest.mark.tekton


def most_active_at_once(executions: Recorded) -> Counter[str]:
    """Per target, the most executions that were not yet Completed or Failed at the same moment."""
    active: dict[str, set[str]] = {}
    most: Counter[str] = Counter()
    for type_, name, _, body in executions.events:
        target = body["spec"]["targetResource"]
        phase = (body.get("status") or {}).get("phase")
        names = active.setdefault(target, set())
        if type_ == "DELETED" or phase in ("Completed", "Failed"):
            names.discard(name)
        else:
            names.add(name)
        most[target] = max(most[target], len(names))
    return most


@deadline()
async def test_burst_on_one_target_runs_one_and_blocks_the_rest(
    kube: AsyncClient, kubeconfig: Path, namespace: str
) -> None:
    exec_ns = await create_execution_namespace(kube)
    settings = settings_for(exec_ns, execution={"cooldown": "1s"}, routing={"recentlyRemediatedCooldown": "0s"})
    async with (
        recording(kube, WorkflowExecutionResource, namespace) as executions,
        recording(kube, RemediationRequestResource, namespace) as requests,
        running(kubeconfig, settings, ("orchestrator", "executor")),
    ):
        manifests = [
            rr_manifest(
                f"rr-{t}-{i}",
                namespace,
                target={"kind": "Deployment", "name": f"app-{t}", "namespace": namespace},
                bundle=played("succeed:1tasks-500ms"),
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
    # One execution per request, and per target only one at a time: the others waited as ResourceBusy.
    assert sorted(executions.created()) == sorted(f"we-{m['metadata']['name']}" for m in manifests)
    assert set(most_active_at_once(executions).values()) == {1}
    blocked = {
        name for _, name, _, body in requests.events if (body.get("status") or {}).get("blockReason") == "ResourceBusy"
    }
    assert len(blocked) >= 4 * 2, blocked  # all but the first of each target's three
